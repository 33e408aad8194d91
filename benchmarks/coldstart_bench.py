"""Cold-start benchmark: 5% of the items held out of training (TIGER paper, Section 4.3), rows side by side.

Every row uses the same data, split and held-out items (``genrec_coldstart: True``, ``coldstart_ratio``, ``seed``):
leave-one-out, full ranking over all items, 20-item histories, Recall@K and NDCG@K for K = 10, 20, 50, reported
separately for held-out targets and the rest (:func:`recbole_genrec.data.coldstart.evaluate`). Held-out items never
train or select a model (targets, histories, tokenizer fit, negatives, a softmax over every item): every trained row
records the counts of :func:`~recbole_genrec.data.coldstart.leak_counts` (all zero under the protocol). Rows:

* ``TIGER``, ``DiscRec``: trained to early stopping (amazon-beauty: the CPU-size T5 of ``benchmarks/presets.py``
  with beam 50, so that 50 items per user exist for Recall@50). After training the held-out items get codes from the
  stored tokenizer (``add_items``) and ONE beam search per user serves every ranking of the row:

  - ``beam``: plain constrained beam search (new items compete with their full code tuples);
  - ``eps=0.05`` / ``0.1`` / ``0.2``: the paper's retrieval (``coldstart_epsilon``): a new item whose codes but the
    collision level match a decoded item is ranked right below it, at most floor(epsilon * K) new items per top K;
  - ``eps*``: epsilon chosen on validation (see below);
  - ``dense-1`` / ``dense-5``: a dense retriever over the trained model's item representation, the mean of the trained
    embeddings of an item's codes (collision code left out; held-out items: the codes the stored tokenizer gives
    them), queried with the mean of the last 1 / 5 history items, cosine over every item. It is a k-NN in the space
    the model learned, not LIGER's jointly trained dense head;
  - ``diagnostics`` (why a row gets 0): whether a held-out target's prefix (TIGER: first three codes) is among the
    decoded items' prefixes, where it ranks when admitted (among all items, and among the admitted new items: rank r
    enters the top K only when floor(epsilon * K) >= r), and the held-out share of the top 10 of every ranking.

* ``RPG``: ``properties/model/RPG.yaml`` (amazon-beauty: the official settings) with the protocol's 20-item history;
  the held-out items get OPQ codes from the stored tokenizer (``add_items``) and are scored exactly like every other
  item (no prefix rule, no epsilon); diagnostics over its top 50. A row whose model this version does not know is
  recorded as skipped, with the lookup error.
* ``KNN-1``, ``KNN-5``: content k-NN, TIGER's Semantic_KNN over the same text embeddings (mean cosine with the last
  1 / 5 history items, history items excluded).
* ``SASRec`` (untrained rows for the held-out items), ``Pop`` (zero counts), ``AlphaRec`` (its text mapping scores
  every item).
* ``TIGER-all``: TIGER trained without holding anything out, evaluated on the same targets: the reference for
  "warm targets no more than 5% below the same model trained without a hold-out".

Choosing epsilon without leaking: the protocol's validation loader has no held-out target (they are dropped), so
epsilon is chosen on RecBole's validation split as built, held-out targets kept
(:func:`~recbole_genrec.data.coldstart.selection_data`): the candidate with the best NDCG@10 over ALL validation
targets (warm and held-out; the held-out Recall alone would always pick the largest epsilon), the smallest on ties.
Those interactions never train a model nor stop its training, and they precede every test interaction.

Every trained row resumes to the epoch (``resume_training: True``, ``resume_name: coldstart-<dataset>-<row>`` under
``<cache>/runs/``): rerun the same command after an interruption. Rows are added to ``<out>/coldstart-<dataset>.json``
as they finish (file lock: several processes with different ``--rows`` can share it); a rerun skips rows already
there (``--fresh`` starts over, resume states included), and ``.md`` is rewritten after each row::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/coldstart_bench.py --dataset amazon-beauty
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/coldstart_bench.py --dataset amazon-beauty --max-users 300 \\
        --epochs 1 --out /tmp/dry        # dry run of the machinery on the first 300 users (results are not results)
"""

import argparse
import copy
import json
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import recbole_genrec  # noqa: E402,F401  (compat shims before RecBole)

ALL_ROWS = ("Pop", "KNN-1", "KNN-5", "SASRec", "AlphaRec", "TIGER", "DiscRec", "RPG", "TIGER-all")
GENERATIVE = ("TIGER", "DiscRec")  # beam search over semantic IDs: epsilon retrieval, dense rows, diagnostics
KS = [10, 20, 50]
LOO = {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
       "MAX_ITEM_LIST_LENGTH": 20, "topk": KS, "metrics": ["Recall", "NDCG"], "valid_metric": "NDCG@10",
       "show_progress": False, "genrec_count_flops": False, "save_dataloaders": False}


def schedules(dataset):
    """``{model: config}`` of the rows on ``dataset`` (its name before any ``-u<N>`` cut)."""
    from benchmarks.presets import ALPHAREC_CPU, BEAUTY_CPU, SASREC_BEAUTY

    if dataset == "amazon-beauty":  # benchmarks/presets.py's beauty-cpu rows, beam 50 for Recall@50
        return {"TIGER": dict(BEAUTY_CPU["TIGER"], beam_size=50),
                "DiscRec": dict(BEAUTY_CPU["DiscRec"], beam_size=50),
                "RPG": {},  # properties/model/RPG.yaml: the official Beauty settings, to early stopping
                "SASRec": dict(SASREC_BEAUTY), "AlphaRec": dict(ALPHAREC_CPU["AlphaRec"]),
                "Pop": {"epochs": 1}}
    # ml-100k and the rest: the CPU presets properties/quick_start/<Model>-ml-100k.yaml, to early stopping
    gen = {"epochs": 100, "eval_step": 2, "stopping_step": 3, "beam_size": 50}
    rpg = {"epochs": 100, "eval_step": 2, "stopping_step": 3, "warmup_steps": 50}  # RPG.yaml's 10,000: full Beauty
    return {"TIGER": dict(gen), "DiscRec": dict(gen), "RPG": rpg,
            "SASRec": {"epochs": 100, "eval_step": 2, "stopping_step": 3},
            "AlphaRec": {"epochs": 100, "eval_step": 5, "stopping_step": 4}, "Pop": {"epochs": 1}}


def row_settings(row, args):
    """``(model, config_dict)`` of a row."""
    if row not in ALL_ROWS:
        raise ValueError(f"unknown row {row!r}; choose from {', '.join(ALL_ROWS)}")
    base = dict(copy.deepcopy(LOO), seed=args.seed, checkpoint_dir=os.path.join(args.work, "saved"),
                genrec_coldstart=row != "TIGER-all", coldstart_ratio=args.ratio)
    if args.cache_dir:
        base["genrec_cache_dir"] = args.cache_dir
    if args.data_path:
        base["data_path"] = args.data_path
    if row.startswith("KNN"):  # text embeddings only, nothing trained
        return "SASRec", dict(base, genrec_features=["text_emb"], epochs=0)
    model = row.split("-")[0]
    settings = dict(base, **copy.deepcopy(schedules(args.like or args.dataset)[model]))
    settings.update(resume_training=True, resume_name=f"coldstart-{args.dataset}-{row}")
    if args.epochs is not None:
        settings.update(epochs=args.epochs, eval_step=min(settings.get("eval_step", 1), args.epochs))
    if args.budget_s is not None and model in GENERATIVE:
        settings["train_time_budget_s"] = args.budget_s
    return model, settings


def like_files(name, model_name):
    """The yaml files RecBole and the plugin load for dataset ``name`` (and the model's preset for it), for a copy
    of it under another name (e.g. ``amazon-beauty-u300``, the first 300 users)."""
    import recbole

    candidates = [os.path.join(os.path.dirname(recbole.__file__), "properties", "dataset", f"{name}.yaml"),
                  os.path.join(ROOT, "properties", "dataset", f"{name}.yaml"),
                  os.path.join(ROOT, "properties", "quick_start", f"{model_name}-{name}.yaml")]
    return [c for c in candidates if os.path.isfile(c)]


def make_config(model_name, settings, args):
    from recbole_genrec import Config
    from recbole_genrec.validation import check_config

    files = like_files(args.like or args.dataset, model_name)
    saved_argv, sys.argv = sys.argv, [sys.argv[0]]
    try:
        config = Config(model=model_name, dataset=args.dataset, config_file_list=files or None,
                        config_dict=settings)
    finally:
        sys.argv = saved_argv
    check_config(config)
    return config


def prepare(config):
    """``(data, info)``: the run builder's prepared data (the protocol's loaders, RecBole's without it) and the
    cold-start info (without the protocol: the items it would hold out, for the same targets)."""
    from recbole_genrec.data import coldstart
    from recbole_genrec.run_builder import prepare as prepare_run

    data = prepare_run(config)
    return data, data.coldstart or {"held_out": coldstart.held_out_ids(config, data.dataset)}


def train(model, trainer, train_data, valid_data):
    """Fit (resuming), then load the best weights; returns what the row reports of the training."""
    from recbole_genrec.checkpoint import load_checkpoint

    start = time.perf_counter()
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    history = getattr(trainer, "genrec_history", None) or {"train": [], "valid": [], "train_seconds": 0.0}
    if os.path.isfile(trainer.saved_model_file):
        checkpoint = load_checkpoint(trainer.saved_model_file)
        model.load_state_dict(checkpoint["state_dict"])
        model.load_other_parameter(checkpoint.get("other_parameter"))
    valid = history["valid"]
    best = max(valid, key=lambda v: v["score"]) if valid else None
    return {"epochs": len(history["train"]), "train_s": round(history["train_seconds"], 1),
            "wall_s_this_process": round(time.perf_counter() - start, 1),
            "best_valid": None if best is None else {"epoch": best["epoch"], "score": best["score"]},
            "params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def history_scores(dataset, score):
    """``interaction -> scores`` of a function of the history (k-NN rows)."""
    seq, seq_len = dataset.item_id_list_field, dataset.item_list_length_field
    return lambda interaction: score(interaction[seq], interaction[seq_len])


def generative_rows(model, config, dataset, test_data, held, args):
    """Every ranking of a trained generative model from one beam search per user (see the module docstring)."""
    from recbole_genrec.data import coldstart

    plain = coldstart.ScoreCache(model.full_sort_predict)
    prefixes = coldstart.prefix_codes(model, dataset, held)
    groups = coldstart.prefix_groups(prefixes)
    variants = {"beam": coldstart.evaluate(plain, test_data, held, KS)}
    for eps in args.epsilons:
        variants[f"eps={eps:g}"] = coldstart.evaluate(coldstart.epsilon_retrieval(plain, groups, held, eps, KS),
                                                     test_data, held, KS)
    selection = coldstart.selection_data(config)
    chosen, table = coldstart.choose_epsilon(coldstart.ScoreCache(model.full_sort_predict), selection, held, groups,
                                             args.select_epsilons, KS, "NDCG@10")
    variants["eps*"] = coldstart.evaluate(coldstart.epsilon_retrieval(plain, groups, held, chosen, KS), test_data,
                                          held, KS)
    vectors, has = coldstart.code_embedding_vectors(model, prefixes)
    for last_n in (1, 5):
        fn = history_scores(dataset, lambda s, n, k=last_n: coldstart.dense_scores(vectors, has, s, n, k))
        variants[f"dense-{last_n}"] = coldstart.evaluate(fn, test_data, held, KS)
    selected = {"epsilon": chosen, "metric": "NDCG@10 over all validation targets (ties: the smaller epsilon)",
                "validation_targets": {"held_out": table[chosen]["held_out"]["targets"],
                                       "warm": table[chosen]["warm"]["targets"]},
                "candidates": {f"{e:g}": {"all NDCG@10": m["all"]["NDCG@10"],
                                          "held-out Recall@10": m["held_out"]["Recall@10"],
                                          "warm Recall@10": m["warm"]["Recall@10"]} for e, m in table.items()}}
    diagnostics = coldstart.prefix_diagnostics(plain, test_data, held, groups, KS)
    diagnostics["held_out_share@10"] = {name: m["held_out_share@10"] for name, m in variants.items()}
    diagnostics["prefix_length"] = int(prefixes.size(1))
    return variants, selected, diagnostics


def run_row(row, args):
    from recbole_genrec.data import coldstart
    from recbole_genrec.utils import get_model

    model_name, settings = row_settings(row, args)
    try:
        get_model(model_name)
    except ValueError as err:  # a model that is not on this branch yet (RPG): the row waits for it
        return {"row": row, "model": model_name, "skipped": f"ValueError: {str(err).splitlines()[0][:300]}"}
    config = make_config(model_name, settings, args)
    start = time.perf_counter()
    data, info = prepare(config)
    dataset, train_data, valid_data, test_data = data.dataset, data.train, data.valid, data.test
    held = info["held_out"]
    out = {"row": row, "model": model_name, "dataset": args.dataset}
    out.update({key: value for key, value in info.items() if key != "held_out"})
    if row.startswith("KNN"):
        from recbole_genrec.preprocess.features import item_embeddings

        emb, last_n = item_embeddings(dataset), int(row.split("-")[1])
        fn = history_scores(dataset, lambda s, n: coldstart.content_knn_scores(emb, s, n, last_n))
        out["leaks"] = coldstart.leak_counts(config, dataset, train_data, valid_data, held)
        out.update(epochs=0, train_s=0.0, metrics=coldstart.evaluate(fn, test_data, held, KS),
                   add_items={"added": 0, "skipped": 0, "how": "text embeddings"})
    else:
        from recbole_genrec.run_builder import build

        model, trainer = build(config, data)  # plain checkpoints, resumable training, the cold-start guards
        protocol = coldstart.enabled(config)
        if protocol:  # before add_items and before training (the check restores the random states it uses)
            out["leaks"] = coldstart.leak_counts(config, dataset, train_data, valid_data, held, model)
        else:
            out["leaks"] = "not applicable: trained on every item (the reference without hold-out)"
        out.update(train(model, trainer, train_data, valid_data))
        model.eval()
        with torch.no_grad():
            out["add_items"] = (coldstart.add_held_out_items(model, dataset, held) if protocol else
                                {"added": 0, "skipped": 0, "how": "nothing held out: every item trained"})
            if protocol and hasattr(model, "code_table"):
                out["variants"], out["epsilon_selection"], out["diagnostics"] = generative_rows(
                    model, config, dataset, test_data, held, args)
                out["metrics"] = out["variants"]["eps*"]
            else:
                out["metrics"] = coldstart.evaluate(model.full_sort_predict, test_data, held, KS)
                if protocol and coldstart.model_codes(model) is not None:  # RPG: every item scored, top 50 decoded
                    groups = coldstart.prefix_groups(coldstart.prefix_codes(model, dataset, held))
                    out["diagnostics"] = coldstart.prefix_diagnostics(model.full_sort_predict, test_data, held,
                                                                      groups, KS, n_decoded=max(KS))
                    out["diagnostics"]["held_out_share@10"] = {"exact": out["metrics"]["held_out_share@10"]}
    out.update(total_s=round(time.perf_counter() - start, 1),
               config={k: settings[k] for k in sorted(settings) if k not in ("checkpoint_dir", "data_path",
                                                                               "genrec_cache_dir")})
    return out


# ============================================================================= reports
def _table_lines(rows):
    """One line per ranking: a generative row's variants, every other row once."""
    for r in rows:
        if "variants" in r:
            for name, m in r["variants"].items():
                label = f"{r['row']} {name}"
                if name == "eps*":
                    label += f" (={r['epsilon_selection']['epsilon']:g})"
                yield label, r, m
        elif "metrics" in r:
            yield r["row"], r, r["metrics"]


def _f(value):
    return "" if value is None else f"{value:.4f}"


def write_tables(rows, path_md, commands, dry_run_note):
    first = next((r for r in rows if "n_items" in r), {})
    lines = [f"# Cold start on {first.get('dataset', '')}: {first.get('n_held_out', '?')} of "
             f"{first.get('n_items', '?')} items held out of training", ""]
    if dry_run_note:
        lines += [f"**{dry_run_note}**", ""]
    lines += ["Leave-one-out, full ranking over all items, 20-item histories. Held-out items are removed from "
              "training and validation (targets and histories), from the tokenizer fit, from the negatives and "
              "from every training softmax over the items (SASRec's CE); "
              "generative models get them after training through `add_items`. `held-out` = test targets that are "
              "held-out items, `warm` = the rest; `share@10` = mean share of held-out items in a user's top 10. "
              "Generative rows: `beam` = plain beam search, `eps=x` = the TIGER paper's retrieval with epsilon x, "
              "`eps*` = epsilon chosen on validation, `dense-n` = the model's mean code embeddings, last n items.",
              "", "Commands: " + " ; ".join(f"`{c}`" for c in commands), "",
              "## Held-out targets", "",
              "| row | epochs | Recall@10 | Recall@20 | Recall@50 | NDCG@10 | NDCG@20 | NDCG@50 | share@10 | "
              "targets |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r, m in _table_lines(rows):
        h = m["held_out"]
        lines.append(f"| {label} | {r.get('epochs', '')} | " + " | ".join(_f(h.get(f"{x}@{k}")) for x in
                     ("Recall", "NDCG") for k in KS) + f" | {_f(m.get('held_out_share@10'))} | {h['targets']} |")
    lines += ["", "## Warm targets (and all)", "",
              "| row | Recall@10 | Recall@20 | Recall@50 | NDCG@10 | NDCG@20 | NDCG@50 | all Recall@10 | all NDCG@10 | "
              "targets |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r, m in _table_lines(rows):
        w = m["warm"]
        lines.append(f"| {label} | " + " | ".join(_f(w.get(f"{x}@{k}")) for x in ("Recall", "NDCG") for k in KS)
                     + f" | {_f(m['all'].get('Recall@10'))} | {_f(m['all'].get('NDCG@10'))} | {w['targets']} |")
    lines += ["", "## Why a generative row gets 0", "",
              "Of the held-out test targets: with a prefix (codes but the collision level), whose prefix some warm "
              "item has (the most the paper's rule can admit), decoded themselves by the plain beam, prefix among the "
              "decoded prefixes (admitted); when admitted, the median rank among all "
              "items (no epsilon cap) and among the admitted new items (epsilon x lets rank r into the top K when "
              "floor(x K) >= r).", "",
              "| row | held-out targets | without prefix | prefix of a warm item | decoded itself | prefix decoded | "
              "rate | median rank | rank <= 10 | median rank among new | first among new | items added / skipped |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        d = r.get("diagnostics")
        if not d:
            continue
        a, n = d["admitted_rank"], d["admitted_rank_among_new"]
        lines.append(f"| {r['row']} | {d['held_out_targets']} | {d['without_prefix']} | "
                     f"{d.get('with_warm_prefix', '')} | "
                     f"{d['target_decoded']} | "
                     f"{d['prefix_decoded']} | {_f(d['prefix_decoded_rate'])} | {a.get('median', '')} | "
                     f"{_f(a.get('within@10'))} | {n.get('median', '')} | {_f(n.get('within@1'))} | "
                     f"{r['add_items']['added']} / {r['add_items']['skipped']} |")
    lines += ["", "## Epsilon chosen on validation", "",
              "| row | chosen | validation held-out / warm targets | candidates: all NDCG@10 |", "|---|---:|---|---|"]
    for r in rows:
        s = r.get("epsilon_selection")
        if s:
            cands = ", ".join(f"{e}: {c['all NDCG@10']:.4f}" for e, c in s["candidates"].items())
            lines.append(f"| {r['row']} | {s['epsilon']:g} | {s['validation_targets']['held_out']} / "
                         f"{s['validation_targets']['warm']} | {cands} |")
    lines += ["", "## Leak checks (counts; all zero means no held-out item reached a fit)", "",
              "| row | train targets | train histories | valid targets | valid histories | tokenizer fit | "
              "model codes | softmax candidates | negatives (drawn) |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        leaks = r.get("leaks")
        if isinstance(leaks, dict):
            neg = leaks["details"]["negatives"]
            lines.append(f"| {r['row']} | {leaks['train_targets']} | {leaks['train_histories']} | "
                         f"{leaks['valid_targets']} | {leaks['valid_histories']} | {leaks['tokenizer_fit']} | "
                         f"{leaks['model_codes']} | {leaks.get('softmax', '-')} | "
                         f"{leaks['negatives']} ({neg['drawn']}: {neg['source']}) |")
        elif leaks:
            lines.append(f"| {r['row']} | {leaks} |")
    other = [r for r in rows if "skipped" in r or "error" in r]
    if other:
        lines += ["", "## Rows without results", ""]
        lines += [f"- {r['row']}: {'skipped' if 'skipped' in r else 'error'}: {r.get('skipped') or r.get('error')}"
                  for r in other]
    with open(path_md, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def leak_totals(rows):
    """Sum of every leak count over the rows that ran under the protocol."""
    totals = {}
    for r in rows:
        if isinstance(r.get("leaks"), dict):
            for key, value in r["leaks"].items():
                if key != "details":
                    totals[key] = totals.get(key, 0) + value
    return totals


def read_rows(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return json.load(f)["rows"]


def save_row(path, result, dry_run_note):
    """Add (or replace) one row in the JSON and rewrite the tables; safe for several processes (file lock)."""
    import fcntl

    with open(path + ".lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        rows = [r for r in read_rows(path) if r["row"] != result["row"]] + [result]
        rows.sort(key=lambda r: ALL_ROWS.index(r["row"]) if r["row"] in ALL_ROWS else len(ALL_ROWS))
        commands = sorted({r.get("command", "") for r in rows})
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"commands": commands, "dry_run": dry_run_note, "leak_totals": leak_totals(rows), "ks": KS,
                       "rows": rows}, f, indent=1, default=str)
        os.replace(tmp, path)
        write_tables(rows, path[: -len(".json")] + ".md", commands, dry_run_note)


def cut_dataset(args):
    """``--max-users``: the first N users as dataset ``<dataset>-u<N>`` (benchmarks/run.py's truncated copy)."""
    from benchmarks.harness.common import default_cache_root
    from benchmarks.harness.datasets import find_dataset, truncate_dataset

    folder = find_dataset(args.dataset, args.data_path)
    root = os.path.join(args.cache_dir or default_cache_root(), "bench-data")
    args.data_path, alias = truncate_dataset(args.dataset, folder, args.max_users, root)
    args.like, args.dataset = args.dataset, alias


def forget_resume_states(args):
    from recbole_genrec.trainer.resume import run_dir

    for row in args.rows.split(","):
        if row.startswith("KNN") or row not in ALL_ROWS:
            continue
        model_name, settings = row_settings(row, args)
        folder = run_dir({"resume_name": settings["resume_name"], "model": model_name, "dataset": args.dataset,
                          "genrec_cache_dir": args.cache_dir})
        if os.path.isdir(folder):
            shutil.rmtree(folder)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--rows", default=",".join(ALL_ROWS))
    parser.add_argument("--ratio", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--epsilons", default="0.05,0.1,0.2", help="epsilon values reported for generative rows")
    parser.add_argument("--select-epsilons", default="0,0.05,0.1,0.2,0.3,0.5",
                        help="candidates of the epsilon chosen on validation")
    parser.add_argument("--epochs", type=int, default=None, help="cap every trained row's epochs (dry runs)")
    parser.add_argument("--budget-s", type=float, default=None, help="train_time_budget_s of the generative rows")
    parser.add_argument("--max-users", type=int, default=None, help="keep the first N users: a dry run")
    parser.add_argument("--data-path", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--like", default=None, help="use the yaml files of this dataset (for a truncated copy)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--work", default=os.path.join(ROOT, "benchmarks", "work-coldstart"))
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    parser.add_argument("--fresh", action="store_true", help="forget the result file and the rows' resume states")
    args = parser.parse_args(argv)
    args.epsilons = [float(e) for e in args.epsilons.split(",")]
    args.select_epsilons = [float(e) for e in args.select_epsilons.split(",")]
    unknown = [r for r in args.rows.split(",") if r not in ALL_ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {','.join(ALL_ROWS)}")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.max_users:
        cut_dataset(args)
    dry_run_note = (f"Dry run: the first {args.max_users} users of {args.like}"
                    + (f", at most {args.epochs} epochs" if args.epochs is not None else "")
                    + ": checks the machinery, these are not results." if args.max_users else None)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"coldstart-{args.dataset}.json")
    command = "OMP_NUM_THREADS=1 nice -n 10 python benchmarks/coldstart_bench.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    if args.fresh:
        if os.path.exists(path):
            os.remove(path)
        forget_resume_states(args)
    done = {r["row"] for r in read_rows(path) if "metrics" in r}
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
        save_row(path, result, dry_run_note)
        print(json.dumps(result.get("metrics", result.get("skipped", result.get("error"))), default=str),
              flush=True)


if __name__ == "__main__":
    main()
