"""Benchmark of the preprocessing hook: raw item text -> text embeddings -> unique semantic IDs.

Every step runs through the public command line of the hook (``recbole_genrec.preprocess.__main__.main``, i.e.
``python -m recbole_genrec.preprocess --model=TIGER --sid_method=...``) in its own worker process, so each row has its
own peak RSS (``resource.getrusage``), against a FRESH cache root (a new temporary folder), so the text encoder
really runs:

1. ``embedding`` -- ``genrec_features: [text_emb]`` only: all-MiniLM-L6-v2 over every item text (timed once);
2. one row per ``--methods`` entry (``rkmeans``, ``hkmeans``, ``rqvae``): the embeddings are a cache hit, the codes
   are fitted (3 levels x 256 codes + TIGER's collision level, the TIGER yaml's settings; rqvae with the tokenizer's
   default parameters because the TIGER yaml sets no ``sid_params``);
3. if RQ-VAE's level-1 usage is below ``--usage-target`` (0.9) with the defaults, one more ``rqvae`` row with the
   parameters of ``--rqvae-epochs`` / ``--rqvae-lr`` / ``--rqvae-batch-size`` (passed as ``--sid_params``);
4. with ``--synthetic N`` (> 0), ``benchmarks/tokenizers_bench.py --n N`` (residual k-means on N synthetic 64-d
   vectors) in a worker too.

"Total from raw text" = embedding seconds + codes seconds (both as the hook records them). The load average
(``os.getloadavg``) is recorded before and after every row: the CPU may be shared.

    python benchmarks/preprocess_bench.py --dataset amazon-beauty --data-path ../shared/data \\
        --methods rkmeans,hkmeans,rqvae --synthetic 1000000 --out benchmarks/results/preprocess-<date>

Writes ``<out>.json`` and ``<out>.md``. The padded code tables (``[n_items + 1, L']``, row 0 = -1, rows aligned
with RecBole's internal item ids) are kept as ``<codes-dir>/codes-<row>.npy`` for ``benchmarks/decoding_bench.py
--codes``. A missing dataset folder prints a message and exits 0.
"""
import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from machine import cpu_name, git_commit, library_versions, load_average  # noqa: E402
TARGETS = {"faiss_tokenizer_s": 180.0, "rqvae_s": 600.0, "rqvae_level1_usage": 0.9}


def peak_rss_mib():
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ============================================================================================ worker
def worker(result_path, hook_argv):
    """Run the hook's command line in this process and write its summary + peak RSS to ``result_path``."""
    sys.path.insert(0, ROOT)
    from recbole_genrec.preprocess.__main__ import main as preprocess_main

    start = time.perf_counter()
    summary = preprocess_main(hook_argv)
    wall = time.perf_counter() - start
    with open(result_path, "w") as f:
        json.dump({"summary": summary, "wall_s": wall, "peak_rss_mib": peak_rss_mib()}, f, default=str)


# ============================================================================================ driver
def run_worker(name, hook_argv, work_dir, log_dir):
    """One worker process; returns its result dict (``error`` set when it failed)."""
    result_path = os.path.join(work_dir, f"result-{name}.json")
    log_path = os.path.join(log_dir, f"log-{name}.txt")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", result_path, "--"] + hook_argv
    load_before = load_average()
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    row = {"name": name, "process_wall_s": round(wall, 2), "load_before": load_before, "load_after": load_average(),
           "hook_command": "python -m recbole_genrec.preprocess " + " ".join(hook_argv), "log": log_path}
    if proc.returncode != 0 or not os.path.isfile(result_path):
        with open(log_path) as f:
            row["error"] = f"exit code {proc.returncode}: " + f.read()[-2000:]
        return row
    with open(result_path) as f:
        row.update(json.load(f))
    return row


def hook_args(args, cache_root, extra):
    return [f"--dataset={args.dataset}", "--model=TIGER", f"--data_path={args.data_path}",
            f"--genrec_cache_dir={cache_root}", "--show_progress=False", f"--seed={args.seed}"] + extra


def method_row(row, codes_dir, method, label):
    """Flatten a method worker's result into a table row and keep its padded codes for the decoding benchmark."""
    import numpy as np

    out = {"row": label, "method": method, "load_before": row["load_before"], "load_after": row["load_after"],
           "hook_command": row["hook_command"]}
    if "error" in row:
        out["error"] = row["error"]
        return out
    summary = row["summary"]
    diag = summary["diagnostics"]
    timings = diag.get("timings", {})
    codes_s = timings.get("codes_s")
    out.update({
        "n_items": summary["n_items"],
        "cache": summary["cache"],
        "codes_s": codes_s,
        "process_wall_s": row["process_wall_s"],
        "peak_rss_mib": round(row["peak_rss_mib"], 1),
        "codebook_sizes_after": diag["codebook_sizes"],
        "usage_per_level": [round(u, 4) for u in diag["usage"]],
        "level1_usage": round(diag["usage"][0], 4),
        "perplexity_per_level": [round(p, 1) for p in diag["perplexity"]],
        "collision_rate_before": round(diag["collision_rate_before"], 5),
        "max_items_per_prefix": diag["max_items_per_prefix"],
        "recon_error": diag.get("recon_error"),
        "n_unique_codes": diag["n_unique_codes"],
    })
    codes = np.load(summary["codes_path"]).astype(np.int64)  # [N, L'], rows in the order of the hook's items.json
    padded = np.concatenate([np.full((1, codes.shape[1]), -1, dtype=np.int64), codes], axis=0)  # [N+1, L']
    path = os.path.join(codes_dir, f"codes-{label}.npy")
    np.save(path, padded)
    out["codes_npy"] = path
    return out


def run_synthetic(args, work_dir):
    raw = os.path.join(work_dir, "tokenizers-synthetic.json")
    cmd = [sys.executable, os.path.join(HERE, "tokenizers_bench.py"), "--n", str(args.synthetic), "--no-progress",
           "--out", raw]
    load_before = load_average()
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    out = {"command": "python benchmarks/tokenizers_bench.py --n %d --no-progress" % args.synthetic,
           "process_wall_s": round(wall, 2), "load_before": load_before, "load_after": load_average(),
           "stdout": proc.stdout[-3000:]}
    if proc.returncode != 0 or not os.path.isfile(raw):
        out["error"] = f"exit code {proc.returncode}: {proc.stderr[-2000:]}"
    else:
        with open(raw) as f:
            out["rows"] = json.load(f)
    return out


def fmt(value, digits=1):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report):
    meta, emb = report["meta"], report["embedding"]
    lines = [f"# Preprocessing benchmark -- {meta['date']}", "",
             f"- command: `{meta['command']}`",
             f"- dataset `{meta['dataset']}` ({meta['data_path']}), fresh cache root `{meta['cache_root']}`",
             f"- machine: {meta['cpu']}, {meta['cores']} cores; load average at start {meta['load_start']}, "
             f"at end {meta['load_end']} (the CPU is shared: times are upper bounds)",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
             f"- git commit: {meta['git_commit']}",
             "- every row runs `python -m recbole_genrec.preprocess` (TIGER's yaml: 3 levels x 256 codes, "
             "collision `extra_level`) in its own process", ""]
    lines += ["## Text embedding (all-MiniLM-L6-v2, once)", ""]
    if "error" in emb:
        lines += [f"**failed**: `{emb['error'][-500:]}`", ""]
    else:
        lines += ["| items | dim | embedding s (hook) | process wall s | peak RSS MiB | load before -> after |",
                  "|---:|---:|---:|---:|---:|---|",
                  f"| {emb['n_items']:,} | {emb['embedding_dim']} | {fmt(emb['embedding_s'])} | "
                  f"{fmt(emb['process_wall_s'])} | {fmt(emb['peak_rss_mib'])} | {emb['load_before']} -> "
                  f"{emb['load_after']} |", ""]
    lines += ["## Semantic IDs per method", "",
              "| row | total s from raw text | codes s | target | level-1 usage | usage/level | perplexity/level "
              "| collisions before | max items/prefix | recon error | final sizes | unique | peak RSS MiB "
              "| load before -> after |",
              "|---|---:|---:|---|---:|---|---|---:|---|---:|---|---|---:|---|"]
    for r in report["methods"]:
        if "error" in r:
            lines.append(f"| {r['row']} | failed: {r['error'][-200:]!r} |" + " |" * 12)
            continue
        target = TARGETS["rqvae_s"] if r["method"] == "rqvae" else TARGETS["faiss_tokenizer_s"]
        total = r.get("total_from_raw_s")
        verdict = "met" if total is not None and total < target else "missed"
        if r["method"] == "rqvae":
            verdict += "; usage " + ("met" if r["level1_usage"] >= TARGETS["rqvae_level1_usage"] else "missed")
        lines.append(
            f"| {r['row']} | {fmt(total)} | {fmt(r['codes_s'], 2)} | < {target:.0f} s: {verdict} | "
            f"{r['level1_usage']:.3f} | {'/'.join(f'{u:.3f}' for u in r['usage_per_level'])} | "
            f"{'/'.join(f'{p:.1f}' for p in r['perplexity_per_level'])} | {r['collision_rate_before']:.4f} | "
            f"{'/'.join(str(m) for m in r['max_items_per_prefix'])} | "
            f"{fmt(r['recon_error'], 5)} | "
            f"{r['codebook_sizes_after']} | {r['n_unique_codes']:,}/{r['n_items']:,} | {fmt(r['peak_rss_mib'])} | "
            f"{r['load_before']} -> {r['load_after']} |")
    lines += ["", "Usage, perplexity, collisions and max items per prefix are measured on the 3 learned levels, "
              "before collision handling (entry l of max items/prefix = most items sharing the first l codes). "
              "Recon error: mean squared error of the reconstruction of the embedding (RQ-VAE: decoder output; "
              "k-means: sum of the chosen centroids). Total from raw text = embedding s + codes s.", ""]
    for r in report["methods"]:
        if r.get("sid_params"):
            lines.append(f"- row `{r['row']}`: `sid_params` {r['sid_params']} ({r.get('why', '')})")
    lines += ["", "Commands of the rows:", ""]
    lines += [f"- `{emb['hook_command']}`"] + [f"- `{r['hook_command']}`" for r in report["methods"]]
    syn = report.get("synthetic")
    if syn:
        lines += ["", "## Residual k-means on synthetic vectors (`benchmarks/tokenizers_bench.py`)", "",
                  f"- command: `{syn['command']}`; process wall {syn['process_wall_s']} s (data generation "
                  f"included); load {syn['load_before']} -> {syn['load_after']}", ""]
        if "error" in syn:
            lines.append(f"**failed**: `{syn['error'][-500:]}`")
        else:
            lines += ["| tokenizer | n | dim | codes | seconds | peak RSS MiB | usage/level | perplexity/level "
                      "| collisions before | recon error | unique after |",
                      "|---|---:|---:|---|---:|---:|---|---|---:|---:|---|"]
            for r in syn["rows"]:
                lines.append(f"| {r['tokenizer']} | {r['n']:,} | {r['dim']} | {r['codes']} | {r['seconds']} | "
                             f"{r['peak_rss_mib']} | {'/'.join(str(u) for u in r['usage_per_level'])} | "
                             f"{'/'.join(str(p) for p in r['perplexity_per_level'])} | {r['collision_rate_before']} "
                             f"| {r['recon_error']} | {r['unique_after']} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="amazon-beauty")
    p.add_argument("--data-path", default=os.path.join(ROOT, "..", "shared", "data"),
                   help="folder holding <dataset>/<dataset>.inter")
    p.add_argument("--methods", default="rkmeans,hkmeans,rqvae", help="comma-separated sid_method values")
    p.add_argument("--usage-target", type=float, default=TARGETS["rqvae_level1_usage"],
                   help="rerun rqvae with the --rqvae-* parameters when its level-1 usage is below this")
    p.add_argument("--rqvae-epochs", type=int, default=None, help="epochs of the tuned rqvae row")
    p.add_argument("--rqvae-lr", type=float, default=None, help="lr of the tuned rqvae row")
    p.add_argument("--rqvae-batch-size", type=int, default=None, help="batch_size of the tuned rqvae row")
    p.add_argument("--synthetic", type=int, default=0, help="also run tokenizers_bench.py --n N (0: skip)")
    p.add_argument("--codes-dir", default=None, help="where to keep codes-<row>.npy (default: the cache root)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--out", default=os.path.join(HERE, "results",
                                                  f"preprocess-{datetime.datetime.now():%Y-%m-%d_%H%M}"),
                   help="output path without extension (.json and .md are written)")
    return p.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:
        return worker(argv[1], argv[3:])
    args = parse_args(argv)
    args.data_path = os.path.abspath(args.data_path)
    folder = os.path.join(args.data_path, args.dataset)
    if not os.path.isfile(os.path.join(folder, f"{args.dataset}.inter")):
        print(f"dataset '{args.dataset}' not found: {folder}/{args.dataset}.inter is missing; nothing benchmarked.")
        return 0
    cache_root = tempfile.mkdtemp(prefix="genrec-prepbench-")
    codes_dir = args.codes_dir or cache_root
    os.makedirs(codes_dir, exist_ok=True)
    meta = {"date": f"{datetime.datetime.now():%Y-%m-%d %H:%M}", "command": " ".join(["python"] + sys.argv),
            "dataset": args.dataset, "data_path": args.data_path, "cache_root": cache_root, "cpu": cpu_name(),
            "cores": os.cpu_count(), "load_start": load_average(), "versions": library_versions(),
            "git_commit": git_commit(), "targets": TARGETS}
    print(f"fresh cache root {cache_root}; load average {meta['load_start']}", flush=True)

    row = run_worker("embedding", hook_args(args, cache_root, ["--genrec_features=['text_emb']"]), cache_root,
                     cache_root)
    embedding = {k: row[k] for k in ("process_wall_s", "load_before", "load_after", "hook_command")}
    if "error" in row:
        embedding["error"] = row["error"]
        embedding_s = None
    else:
        summary = row["summary"]
        embedding_s = summary["timings"]["embedding_s"]
        embedding.update({"n_items": summary["n_items"], "embedding_dim": summary["embedding_dim"],
                          "embedding_s": embedding_s, "cache": summary["cache"],
                          "peak_rss_mib": round(row["peak_rss_mib"], 1)})
    print(f"embedding: {json.dumps(embedding)}", flush=True)

    runs = [(m, m, None, "") for m in args.methods.split(",") if m]
    report = {"meta": meta, "embedding": embedding, "methods": []}
    while runs:
        method, label, params, why = runs.pop(0)
        extra = [f"--sid_method={method}"] + ([f"--sid_params={params!r}"] if params else [])
        result = method_row(run_worker(label, hook_args(args, cache_root, extra), cache_root, cache_root),
                            codes_dir, method, label)
        if params:
            result.update(sid_params=params, why=why)
        if "codes_s" in result and embedding_s is not None:
            result["total_from_raw_s"] = round(embedding_s + result["codes_s"], 2)
        report["methods"].append(result)
        print(f"{label}: {json.dumps({k: v for k, v in result.items() if k != 'hook_command'})}", flush=True)
        tuned = {k: v for k, v in (("epochs", args.rqvae_epochs), ("lr", args.rqvae_lr),
                                   ("batch_size", args.rqvae_batch_size)) if v is not None}
        if (method == "rqvae" and params is None and tuned and "level1_usage" in result
                and result["level1_usage"] < args.usage_target):
            why = (f"defaults gave level-1 usage {result['level1_usage']:.3f} < {args.usage_target}; "
                   f"tweak from --rqvae-* flags")
            runs.insert(0, ("rqvae", "rqvae-tuned", tuned, why))

    if args.synthetic > 0:
        report["synthetic"] = run_synthetic(args, cache_root)
        print(report["synthetic"].get("stdout", "") or report["synthetic"].get("error"), flush=True)
    meta["load_end"] = load_average()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(report, f, indent=1, default=str)
    text = markdown(report)
    with open(args.out + ".md", "w") as f:
        f.write(text)
    print(text)
    print(f"wrote {args.out}.json and {args.out}.md; codes kept in {codes_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
