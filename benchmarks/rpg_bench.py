"""RPG on the CPU: training sequences/s, exact full-ranking evaluation users/s, graph decoding against exact scoring.

With the settings of ``properties/model/RPG.yaml`` (and the dataset's yaml; ``--set key=value`` overrides, e.g.
``--set MAX_ITEM_LIST_LENGTH=20 --set sid_levels=16``):

* ``train``: length-bucketed batches of one row per user sequence (what ``GenerativeTrainer`` runs: forward,
  backward, gradient clipping, AdamW step) for ``--train-seconds``, after one untimed batch; sequences/s, trained
  positions/s and the epoch time they imply (all training sequences / sequences per second);
* ``eval``: ``full_sort_predict`` + top 10 of the validation users, batched as RecBole's evaluator batches them,
  for ``--eval-seconds``; users/s and the time they imply for every user;
* ``graph`` (``--graph``): after the training above (a partly trained model; ``--checkpoint`` to load a trained
  run instead), the top 10 of the graph-constrained decoding (``rpg_decoding: graph``, the yaml's beams, edges and
  steps) against the exact top 10 of the same users: recall = mean share of the exact top 10 that the graph returns,
  users/s, and the time to build the item graph.

Run niced, with the threads you want to measure::

    OMP_NUM_THREADS=2 nice -n 10 python benchmarks/rpg_bench.py --dataset amazon-beauty --threads 2 --graph \\
        --out benchmarks/results/rpg-bench-amazon-beauty.json
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's recbole_genrec

import torch  # noqa: E402

import recbole_genrec  # noqa: E402,F401  (compat shims before RecBole)


def build(args):
    """``(config, model, trainer, train_data, valid_data)`` of RPG on ``args.dataset``, built as every entry point
    builds a run (``recbole_genrec.run_builder``)."""
    from recbole.utils import init_logger

    from recbole_genrec import Config, run_builder
    from recbole_genrec.cli import parse_config_overrides
    from recbole_genrec.validation import check_config

    settings = {"show_progress": False, "genrec_count_flops": False, "state": "WARNING"}
    if args.data_path:
        settings["data_path"] = args.data_path
    settings.update(parse_config_overrides([f"--{item}" for item in args.set]))  # as run_recbole_genrec.py reads them
    saved_argv, sys.argv = sys.argv, [sys.argv[0]]
    try:
        config = Config(model="RPG", dataset=args.dataset, config_dict=settings)
    finally:
        sys.argv = saved_argv
    check_config(config)
    init_logger(config)
    data = run_builder.prepare(config)
    model = run_builder.build_model(config, data)
    if args.checkpoint:
        from recbole_genrec.checkpoint import load_checkpoint

        model.load_state_dict(load_checkpoint(args.checkpoint, False)["state_dict"])
    return config, model, run_builder.trainer_class(config)(config, model), data.train, data.valid


def bench_train(model, trainer, train_data, seconds):
    model.train()
    sequences = positions = 0
    timed, epoch, warm = 0.0, 0, False
    while timed < seconds:  # as many epochs as the time asks for (a small dataset has few batches an epoch)
        batches, n_batches = trainer._epoch_batches(train_data, epoch)
        trainer.steps_per_epoch = n_batches
        for interaction in batches:
            start = time.perf_counter()
            trainer._set_lr()
            trainer.optimizer.zero_grad()
            loss = model.calculate_loss(interaction)
            loss.backward()
            if trainer.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), **trainer.max_grad_norm)
            trainer.optimizer.step()
            trainer.global_step += 1
            if not warm:
                warm = True
                continue  # warm-up, untimed
            timed += time.perf_counter() - start
            sequences += len(interaction)
            positions += int(interaction[model.ITEM_SEQ_LEN].sum()) if model.all_positions else len(interaction)
            if timed >= seconds:
                break
        epoch += 1
    total = len(train_data._dataset)
    per_s = sequences / max(timed, 1e-9)
    return {"sequences": sequences, "positions": positions, "seconds": round(timed, 2),
            "sequences_per_s": round(per_s, 1), "positions_per_s": round(positions / max(timed, 1e-9), 1),
            "training_sequences": total, "epoch_s_estimate": round(total / max(per_s, 1e-9), 1),
            "batches_per_epoch": n_batches, "last_loss": loss.item()}


@torch.no_grad()
def top10(model, interaction):
    scores = model.full_sort_predict(interaction)
    scores[:, 0] = float("-inf")  # RecBole's evaluator never ranks the padding item
    return scores.topk(10, dim=1)


@torch.no_grad()
def bench_eval(model, valid_data, seconds):
    model.eval()
    users, timed = 0, 0.0
    for batch in valid_data:
        start = time.perf_counter()
        top10(model, batch[0])
        timed += time.perf_counter() - start
        users += len(batch[0])
        if timed >= seconds:
            break
    n_users = len(valid_data._dataset)
    per_s = users / max(timed, 1e-9)
    return {"users": users, "seconds": round(timed, 2), "users_per_s": round(per_s, 1),
            "all_users": n_users, "all_users_s_estimate": round(n_users / max(per_s, 1e-9), 1),
            "eval_batch_size": valid_data.step}


@torch.no_grad()
def bench_graph(model, valid_data, max_users):
    model.eval()
    start = time.perf_counter()
    model._graph = (model.build_graph(), torch.Generator().manual_seed(model.seed))
    build_s = time.perf_counter() - start
    overlap, users, graph_s = 0.0, 0, 0.0
    for batch in valid_data:
        model.decoding = "exact"
        exact = top10(model, batch[0]).indices
        model.decoding = "graph"
        start = time.perf_counter()
        found = top10(model, batch[0])
        graph_s += time.perf_counter() - start
        hits = (found.indices.unsqueeze(2) == exact.unsqueeze(1)) & torch.isfinite(found.values).unsqueeze(2)
        overlap += float(hits.any(dim=1).float().sum())
        users += len(exact)
        if users >= max_users:
            break
    model.decoding = "exact"
    return {"users": users, "recall_at_10_vs_exact": round(overlap / (10 * users), 4),
            "users_per_s": round(users / max(graph_s, 1e-9), 1), "graph_build_s": round(build_s, 2),
            "num_beams": model.num_beams, "n_edges": model.n_edges, "propagation_steps": model.propagation_steps}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data-path", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, read as run_recbole_genrec.py reads --key=value")
    parser.add_argument("--train-seconds", type=float, default=60.0)
    parser.add_argument("--eval-seconds", type=float, default=60.0)
    parser.add_argument("--graph", action="store_true", help="measure graph-constrained decoding against exact")
    parser.add_argument("--graph-users", type=int, default=2048)
    parser.add_argument("--checkpoint", default=None, help="weights of a trained RPG run (plain-data checkpoint)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    config, model, trainer, train_data, valid_data = build(args)
    n_params = sum(p.numel() for p in model.parameters())
    result = {"dataset": args.dataset, "threads": args.threads, "params": n_params, "overrides": args.set,
              "codebooks": model.n_codes, "codebook_size": model.codebook_size, "history": model.max_seq_length,
              "n_items": model.n_items, "torch": torch.__version__}
    if args.train_seconds > 0:
        result["train"] = bench_train(model, trainer, train_data, args.train_seconds)
        print(f"train: {result['train']}", flush=True)
    result["eval"] = bench_eval(model, valid_data, args.eval_seconds)
    print(f"eval: {result['eval']}", flush=True)
    if args.graph:
        result["graph"] = bench_graph(model, valid_data, args.graph_users)
        print(f"graph: {result['graph']}", flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
