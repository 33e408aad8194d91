"""Benchmark CollabEmbed: raw LM item embeddings vs collaboration-enhanced ones.

Per dataset (leave-one-out, time-ordered split for every model, so the enhanced embeddings never saw
a valid/test interaction):

1. train CollabEmbed (SASRec teacher on the training split, then the tower) and export the enhanced
   item embeddings (``item_embedding_source: collab``);
2. item-to-item next-item retrieval on the test transitions (last history item -> test item):
   Recall@10/@20 of the previous item's vector querying all items, for the raw LM embeddings,
   the enhanced ones and, as a reference, the teacher's ID item table;
3. downstream recommenders with ``item_embedding_source: text`` vs ``collab``: AlphaRec and, with
   ``--tiger``, TIGER (semantic IDs built on either embedding).

Prints markdown tables; ``--out results.json`` writes everything as JSON.

    python benchmarks/collab_embed_bench.py --datasets ml-100k --out collab_bench.json
    python benchmarks/collab_embed_bench.py --datasets ml-100k amazon-beauty --tiger
"""
import argparse
import json
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import recbole_genrec  # noqa: E402,F401  (compat shims before RecBole)
from recbole_genrec import load_data_and_model, run_recbole_genrec  # noqa: E402
from recbole_genrec.collabembed.metrics import eval_transitions, next_item_recall  # noqa: E402

LOO = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"}
METRICS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20"]


def base_config(args, cache):
    return {"MAX_ITEM_LIST_LENGTH": args.max_seq_len, "genrec_cache_dir": cache,
            "checkpoint_dir": os.path.join(cache, "saved"), "show_progress": False,
            "genrec_count_flops": False, "eval_args": LOO, "topk": [10, 20], "metrics": ["Recall", "NDCG"],
            "valid_metric": "NDCG@10", "seed": args.seed, "state": "WARNING" if args.quiet else "INFO"}


def run(model, dataset, config, saved=True):
    start = time.perf_counter()
    result = run_recbole_genrec(model=model, dataset=dataset, config_dict=config, saved=saved)
    result["wall_seconds"] = time.perf_counter() - start
    return result


def row_of(result, embeddings):
    row = {"model": result["model"], "embeddings": embeddings, "epochs": result["epochs"],
           "train_s": round(result["train_seconds"], 1)}
    row.update({m: round(float(result["test_result"].get(m, float("nan"))), 4) for m in METRICS})
    return row


def bench_dataset(args, dataset):
    cache = args.cache_dir or tempfile.mkdtemp(prefix="collab_bench_")
    base = base_config(args, cache)
    out = {"dataset": dataset, "cache": cache, "recommenders": [], "item_to_item": []}

    teacher = {"n_layers": args.teacher_layers, "n_heads": 2 if args.teacher_hidden % 2 == 0 else 1,
               "hidden_size": args.teacher_hidden, "inner_size": 4 * args.teacher_hidden,
               "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5}
    collab_cfg = dict(base, epochs=args.epochs, collab_teacher_epochs=args.teacher_epochs,
                      collab_teacher_params=teacher, train_batch_size=args.batch_size)
    collab = run("CollabEmbed", dataset, collab_cfg)
    out["recommenders"].append(row_of(collab, "tower (mean of history)"))

    # item-to-item retrieval with the best checkpoint (the one that was exported)
    _, model, _, _, _, test_data = load_data_and_model(collab["checkpoint"])
    model.eval()
    previous, following = eval_transitions(test_data, model.ITEM_SEQ, model.ITEM_SEQ_LEN, model.ITEM_ID)
    tables = {"raw LM (text)": model.item_lm, "enhanced (collab)": model.item_vectors().detach(),
              f"teacher ID table ({model.teacher_name}, reference)": model.teacher.item_embedding.weight.detach()}
    for name, vectors in tables.items():
        recall = next_item_recall(vectors, previous, following, ks=(10, 20))
        out["item_to_item"].append({"embeddings": name, "dim": int(vectors.shape[1]), "transitions": int(len(previous)),
                                    **{k: round(v, 4) for k, v in recall.items()}})

    for source in ("text", "collab"):
        cfg = dict(base, item_embedding_source=source, epochs=args.alpharec_epochs, stopping_step=10,
                   neg_num=args.alpharec_neg)
        out["recommenders"].append(row_of(run("AlphaRec", dataset, cfg), source))
    if args.tiger:
        for source in ("text", "collab"):
            cfg = dict(base, item_embedding_source=source, epochs=args.tiger_epochs)
            out["recommenders"].append(row_of(run("TIGER", dataset, cfg), source))
    return out


def markdown(rows, columns):
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k"])
    parser.add_argument("--epochs", type=int, default=30, help="CollabEmbed tower epochs (early stopping on valid)")
    parser.add_argument("--teacher-epochs", type=int, default=30, help="SASRec teacher epochs (training split only)")
    parser.add_argument("--max-seq-len", type=int, default=20, help="MAX_ITEM_LIST_LENGTH of every model")
    parser.add_argument("--teacher-hidden", type=int, default=64, help="SASRec teacher width (= exported dim)")
    parser.add_argument("--teacher-layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024, help="CollabEmbed/teacher batch size")
    parser.add_argument("--alpharec-epochs", type=int, default=60)
    parser.add_argument("--alpharec-neg", type=int, default=256, help="AlphaRec neg_num")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch default)")
    parser.add_argument("--tiger", action="store_true", help="also TIGER with text vs collab semantic IDs")
    parser.add_argument("--tiger-epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--cache-dir", default=None, help="cache root (default: a fresh temp folder per dataset)")
    parser.add_argument("--quiet", action="store_true", help="RecBole logging at WARNING")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # keep our flags out of RecBole's command-line parsing
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    results = []
    for dataset in args.datasets:
        results.append(bench_dataset(args, dataset))
    logging.getLogger().handlers.clear()
    for res in results:
        print(f"\n### {res['dataset']}: item-to-item next-item retrieval (test transitions)\n")
        print(markdown(res["item_to_item"], ["embeddings", "dim", "transitions", "recall@10", "recall@20"]))
        print(f"\n### {res['dataset']}: recommenders, leave-one-out full ranking (test)\n")
        print(markdown(res["recommenders"], ["model", "embeddings"] + METRICS + ["epochs", "train_s"]))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
        print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
