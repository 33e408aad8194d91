"""Time PRORec's stage I (alignment training + unified codes) on a real dataset, on CPU, and print NMI numbers.

Builds the dataset exactly as ``run_recbole_genrec.py --model=PRORec`` does (the preprocessing hook encodes the
item texts once and caches them; the first run on amazon-beauty spends a few minutes there), takes RecBole's
training split and runs stage I from scratch (no stage-I cache), then prints the timings, the alignment statistics
and the normalised mutual information between the first code level of every code source and that of the
text-only / ID-only codes.

    python benchmarks/prorec_stage1_bench.py                                   # amazon-beauty, PRORec.yaml
    python benchmarks/prorec_stage1_bench.py --negatives 0 --epochs 10        # full softmax
    python benchmarks/prorec_stage1_bench.py --dataset ml-100k --epochs 10 --out stage1.json
"""
import argparse
import json
import logging
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import recbole_genrec  # noqa: E402,F401  (compat shims before RecBole)

from recbole_genrec import Config, run_builder  # noqa: E402
from recbole_genrec.prorec.stage1 import build_stage1, stage1_params  # noqa: E402
from recbole_genrec.preprocess.features import item_embeddings  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--data-path", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))
    parser.add_argument("--cache-dir", default=None, help="genrec_cache_dir (default: the usual cache root)")
    parser.add_argument("--epochs", type=int, default=None, help="prorec_stage1_epochs (default: PRORec.yaml)")
    parser.add_argument("--negatives", type=int, default=None,
                        help="prorec_stage1_negatives (default: PRORec.yaml, 1024; 0 = full softmax)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="also write the stage-I report as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    settings = {"data_path": args.data_path, "show_progress": False, "device": "cpu", "use_gpu": False}
    if args.cache_dir:
        settings["genrec_cache_dir"] = args.cache_dir
    if args.negatives is not None:
        settings["prorec_stage1_negatives"] = args.negatives
    if args.epochs is not None:
        settings["prorec_stage1_epochs"] = args.epochs
    sys.argv = sys.argv[:1]
    config = Config(model="PRORec", dataset=args.dataset, config_dict=settings)

    start = time.perf_counter()
    train_data = run_builder.prepare(config).train  # runs the hook: text embeddings (cached after the first run)
    data_s = time.perf_counter() - start
    text = item_embeddings(train_data.dataset)  # [n_items, D]

    start, cpu_start = time.perf_counter(), time.process_time()
    result = build_stage1(train_data.dataset, text, stage1_params(config), int(config["seed"]), device="cpu")
    stage1_s, stage1_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    load = os.getloadavg()[0]

    report = result.report
    print(f"dataset {args.dataset}: {report['n_items']} items, {report['n_sequences']} training sequences, "
          f"{report['n_windows']} windows, text dim {text.shape[1]}")
    print(f"data + text embeddings (hook, cached after first run): {data_s:.1f}s")
    print(f"stage I total {stage1_s:.1f}s wall, {stage1_cpu_s:.1f}s CPU on {args.threads} threads, load average "
          f"{load:.1f} on {os.cpu_count()} cores  (train {report['timings']['train_s']:.1f}s over "
          f"{config['prorec_stage1_epochs']} epochs, quantise 4 sources {report['timings']['quantise_s']:.1f}s)")
    history = report["history"]
    print(f"next-item loss {history['next_item'][0]:.4f} -> {history['next_item'][-1]:.4f}; "
          f"alignment loss {history['align'][0]:.4f} -> {history['align'][-1]:.4f}")
    print(f"cosine(ID, adapted text): matched {report['alignment']['matched']:.4f}, "
          f"unmatched {report['alignment']['unmatched']:.4f}")
    print("| codes | codebook sizes | NMI(first level) vs text | NMI vs id |")
    print("|---|---|---|---|")
    nmi = report["nmi_first_level"]
    for source in ("aligned", "concat"):
        print(f"| {source} | {result.codebook_sizes[source]} | {nmi[source + '~text']:.4f} | {nmi[source + '~id']:.4f} |")
    print(f"| text vs id | | {nmi['text~id']:.4f} | |")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"data_s": data_s, "stage1_s": stage1_s, "stage1_cpu_s": stage1_cpu_s, "load_average": load,
                       **report}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
