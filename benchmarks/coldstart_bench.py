"""Cold-start benchmark: 5% of the items held out of training (TIGER paper, Section 4.3), rows side by side.

Every row uses the same data, split and held-out items (``genrec_coldstart: True``, ``coldstart_ratio``,
``seed``): leave-one-out, full ranking, 20-item histories. After training, generative models get the held-out items
through ``add_items`` (codes from the stored tokenizer, which was fitted without them) and every row is evaluated by
:func:`recbole_genrec.data.coldstart.evaluate`: Recall/NDCG@10 on held-out targets and on the rest, and the share of
held-out items in the top 10. Rows:

* ``TIGER``, ``DiscRec`` (CPU presets ``properties/quick_start/<Model>-ml-100k.yaml``; ``train_time_budget_s``),
  ranked by plain constrained beam search; ``TIGER-eps``, ``DiscRec-eps``: the same training, then new items
  inherit the beam score of a generated item with the same first ``L - 1`` codes, at most ``--epsilon`` x 10 of them
  per top 10 (:func:`recbole_genrec.data.coldstart.prefix_match_score_fn`, the paper's cold-start retrieval),
* ``AlphaRec`` (same leave-one-out split; its text mapping scores the held-out items directly),
* ``RPG`` (``properties/model/RPG.yaml`` with the protocol's 20-item history, ``--rpg-epochs`` and a short warm-up;
  ``train_time_budget_s``): the held-out items get OPQ codes from the stored tokenizer through ``add_items`` and
  are scored exactly like every other item,
* ``KNN-1``, ``KNN-5``: content k-NN, TIGER's Semantic_KNN (mean text-embedding cosine with the last 1 / 5 history
  items, history items excluded),
* ``SASRec``, ``Pop`` (RecBole; they have untrained / zero-count rows for the held-out items),
* ``TIGER-all``: TIGER trained without holding anything out, evaluated on the same warm targets (the reference for
  "warm targets within noise").

Rows are added to ``<out>/coldstart-<dataset>.json`` as they finish (under a file lock, so several processes
with different ``--rows`` can share it); a rerun skips rows already there (``--fresh`` starts over), and ``.md``
is rewritten after each row. Run it niced, one thread::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/coldstart_bench.py --dataset ml-100k --budget-s 600
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import recbole_genrec  # noqa: E402,F401  (compat shims before RecBole)

ALL_ROWS = ("Pop", "KNN-1", "KNN-5", "SASRec", "TIGER", "TIGER-eps", "AlphaRec", "DiscRec", "DiscRec-eps",
            "TIGER-all", "RPG")
LOO = {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
       "MAX_ITEM_LIST_LENGTH": 20, "topk": [10], "metrics": ["Recall", "NDCG"], "valid_metric": "NDCG@10",
       "show_progress": False, "genrec_count_flops": False, "save_dataloaders": False}


def row_settings(row, args):
    """``(model, config_dict)`` of a row."""
    cold = {"genrec_coldstart": row != "TIGER-all", "coldstart_ratio": args.ratio}
    base = dict(LOO, seed=args.seed, checkpoint_dir=os.path.join(args.work, "saved"), **cold)
    if args.cache_dir:
        base["genrec_cache_dir"] = args.cache_dir
    if args.data_path:
        base["data_path"] = args.data_path
    if row in ("TIGER", "DiscRec", "TIGER-all", "TIGER-eps", "DiscRec-eps"):
        return row.split("-")[0], dict(base, epochs=args.gen_epochs, train_time_budget_s=args.budget_s, eval_step=1,
                                       stopping_step=3, topk=[10, 20])
    if row == "RPG":
        return "RPG", dict(base, epochs=args.rpg_epochs, eval_step=1, stopping_step=5,
                           warmup_steps=args.rpg_warmup_steps, train_time_budget_s=args.budget_s)
    if row == "SASRec":
        return "SASRec", dict(base, epochs=args.sasrec_epochs, eval_step=1, stopping_step=3)
    if row == "AlphaRec":
        return "AlphaRec", dict(base, epochs=args.alpharec_epochs, eval_step=5, stopping_step=5)
    if row == "Pop":
        return "Pop", dict(base, epochs=1)
    if row.startswith("KNN"):
        return "SASRec", dict(base, genrec_features=["text_emb"], epochs=0)
    raise ValueError(f"unknown row {row!r}; choose from {ALL_ROWS}")


def like_files(name, model_name):
    """The yaml files RecBole and the plugin load for dataset ``name`` (and the model's preset for it), for a copy
    of it under another name (e.g. ``ml-100k-u200``, the first 200 users, made by ``benchmarks/run.py``)."""
    import recbole

    candidates = [os.path.join(os.path.dirname(recbole.__file__), "properties", "dataset", f"{name}.yaml"),
                  os.path.join(ROOT, "properties", "dataset", f"{name}.yaml"),
                  os.path.join(ROOT, "properties", "quick_start", f"{model_name}-{name}.yaml")]
    return [c for c in candidates if os.path.isfile(c)]


def run_row(row, args):
    from recbole_genrec import Config
    from recbole_genrec.data import coldstart
    from recbole_genrec.run_builder import build, prepare

    model_name, settings = row_settings(row, args)
    files = like_files(args.like, model_name) if args.like else None
    saved_argv, sys.argv = sys.argv, [sys.argv[0]]
    try:
        config = Config(model=model_name, dataset=args.dataset, config_file_list=files, config_dict=settings)
    finally:
        sys.argv = saved_argv
    start = time.perf_counter()
    data = prepare(config)
    dataset, train_data, valid_data, test_data, info = data
    if info is None:  # a row without the protocol is still scored on the items the protocol would hold out
        info = {"held_out": coldstart.held_out_ids(config, dataset)}
    out = {"row": row, "model": model_name, "dataset": args.dataset}
    if row.startswith("KNN"):
        from recbole_genrec.preprocess.features import item_embeddings

        emb = item_embeddings(dataset)
        last_n = int(row.split("-")[1])
        seq, seq_len = dataset.item_id_list_field, dataset.item_list_length_field

        def score_fn(interaction):
            return coldstart.content_knn_scores(emb, interaction[seq], interaction[seq_len], last_n)

        metrics = coldstart.evaluate(score_fn, test_data, info["held_out"])
        out.update(epochs=0, train_s=0.0, add_items={"added": 0, "skipped": 0, "how": "text embeddings"})
    else:
        model, trainer = build(config, data)
        fit_start = time.perf_counter()
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        out["train_s"] = round(time.perf_counter() - fit_start, 1)
        out["epochs"] = len(trainer.train_loss_dict)
        if out["epochs"] > 1:  # load the best checkpoint into `model` (with one epoch it is the model in memory)
            out["recbole_test_before_add_items"] = dict(trainer.evaluate(test_data, load_best_model=True,
                                                                         show_progress=False))
        out["params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        model.eval()
        if coldstart.enabled(config):
            report = coldstart.report(model, dataset, test_data, info)
            metrics, out["add_items"] = report["metrics"], report["add_items"]
            if row.endswith("-eps"):  # the paper's retrieval: new items inherit a generated sibling's score
                with torch.no_grad():
                    score_fn = coldstart.prefix_match_score_fn(model, info["held_out"], args.epsilon, 10)
                    metrics = coldstart.evaluate(score_fn, test_data, info["held_out"])
                out["metrics_plain_beam"], out["epsilon"] = report["metrics"], args.epsilon
        else:
            with torch.no_grad():
                metrics = coldstart.evaluate(model.full_sort_predict, test_data, info["held_out"])
            out["add_items"] = {"added": 0, "skipped": 0, "how": "nothing held out: every item trained"}
    out.update({key: value for key, value in info.items() if key != "held_out"})
    out.update(metrics=metrics, total_s=round(time.perf_counter() - start, 1),
               config={k: settings[k] for k in sorted(settings) if k not in ("checkpoint_dir",)})
    return out


def write_tables(rows, path_md, command):
    rows = [r for r in rows if "error" in r or "metrics" in r]
    lines = [f"# Cold start on {rows[0].get('dataset', '')}: {rows[0].get('n_held_out', '?')} of {rows[0].get('n_items', '?')}"
             " items held out of training", "",
             "Leave-one-out, full ranking over all items, 20-item histories; held-out items removed from training and "
             "validation (targets and histories) and from the tokenizer fit; generative models get them after "
             "training through `add_items`. `held-out` = test targets that are held-out items; `warm` = the rest; "
             "`share` = mean share of held-out items in a user's top 10.", "",
             f"Command: `{command}`", "",
             "| row | epochs | train s | held-out targets | held-out Recall@10 | held-out NDCG@10 | warm Recall@10 | "
             "warm NDCG@10 | all Recall@10 | share of held-out in top 10 | held-out items added / skipped |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['row']} | error: {r['error'][:120]} |")
            continue
        m = r["metrics"]
        lines.append(
            f"| {r['row']} | {r.get('epochs', '')} | {r.get('train_s', '')} | {m['held_out']['targets']} | "
            f"{m['held_out']['Recall@10']:.4f} | {m['held_out']['NDCG@10']:.4f} | {m['warm']['Recall@10']:.4f} | "
            f"{m['warm']['NDCG@10']:.4f} | {m['all']['Recall@10']:.4f} | {m['held_out_share@10']:.4f} | "
            f"{r['add_items']['added']} / {r['add_items']['skipped']} |")
    with open(path_md, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def read_rows(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return json.load(f)["rows"]


def save_row(path, result):
    """Add (or replace) one row in the JSON and rewrite the tables; safe for several processes (file lock)."""
    import fcntl

    with open(path + ".lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        rows = [r for r in read_rows(path) if r["row"] != result["row"]] + [result]
        rows.sort(key=lambda r: ALL_ROWS.index(r["row"]) if r["row"] in ALL_ROWS else len(ALL_ROWS))
        commands = sorted({r.get("command", "") for r in rows})
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"commands": commands, "rows": rows}, f, indent=1, default=str)
        os.replace(tmp, path)
        write_tables(rows, path.replace(".json", ".md"), " ; ".join(commands))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--rows", default=",".join(ALL_ROWS))
    parser.add_argument("--ratio", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--budget-s", type=float, default=600, help="train_time_budget_s of the generative rows")
    parser.add_argument("--gen-epochs", type=int, default=1)
    parser.add_argument("--sasrec-epochs", type=int, default=2)
    parser.add_argument("--alpharec-epochs", type=int, default=10)
    parser.add_argument("--rpg-epochs", type=int, default=50)
    parser.add_argument("--rpg-warmup-steps", type=int, default=50, help="RPG.yaml's 10,000 suit full Beauty only")
    parser.add_argument("--epsilon", type=float, default=0.1, help="-eps rows: max share of new items in the top 10")
    parser.add_argument("--data-path", default=None)
    parser.add_argument("--like", default=None, help="use the yaml files of this dataset (for a truncated copy)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--work", default=os.path.join(ROOT, "benchmarks", "work-coldstart"))
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"coldstart-{args.dataset}.json")
    command = "OMP_NUM_THREADS=1 nice -n 10 python benchmarks/coldstart_bench.py " + " ".join(sys.argv[1:])
    if args.fresh and os.path.exists(path):
        os.remove(path)
    done = {r["row"] for r in read_rows(path) if "error" not in r}
    for row in args.rows.split(","):
        if row in done:
            print(f"{row}: already measured, skipped")
            continue
        print(f"=== {row}", flush=True)
        try:
            result = run_row(row, args)
        except Exception as err:  # recorded, the run goes on
            import traceback

            traceback.print_exc()
            result = {"row": row, "error": f"{type(err).__name__}: {err}"}
        result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        result["command"] = command
        save_row(path, result)
        print(json.dumps(result.get("metrics", result.get("error")), default=str), flush=True)


if __name__ == "__main__":
    main()
