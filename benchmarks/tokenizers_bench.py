"""Benchmark the semantic-ID tokenizers.

(a) Residual k-means (faiss) on N synthetic clustered vectors (default 1,000,000 x 64,
    3 levels x 256 codes): wall time and peak RSS (``resource.getrusage``).
(b) With ``--emb path.npy``: all three tokenizers (rqvae, rkmeans, hkmeans) on the given
    embeddings: time, per-level codebook usage, collision rate before handling.

Prints a markdown table; ``--out results.json`` also writes the rows as JSON.

    python benchmarks/tokenizers_bench.py                      # (a) with N = 1,000,000
    python benchmarks/tokenizers_bench.py --n 0 --emb item_emb.npy --rqvae-epochs 50
"""
import argparse
import json
import logging
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole_genrec.tokenizers import generate_semantic_ids  # noqa: E402

COLUMNS = ["tokenizer", "n", "dim", "codes", "seconds", "peak_rss_mib", "usage_per_level",
           "perplexity_per_level", "collision_rate_before", "recon_error", "unique_after", "error"]


def peak_rss_mib():
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2 ** 20


def synthetic_embeddings(n, dim, n_centers=1024, noise=0.5, seed=0, chunk=262144):
    """Clustered float32 vectors [n, dim]: random centers plus Gaussian noise, built in chunks."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_centers, dim), dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        labels = rng.integers(0, n_centers, stop - start)
        out[start:stop] = centers[labels]
        out[start:stop] += noise * rng.standard_normal((stop - start, dim), dtype=np.float32)
    return out


def run_one(emb, method, args, method_params):
    """Tokenize emb with one method; returns a result row (dict)."""
    start = time.perf_counter()
    try:
        codes, info = generate_semantic_ids(
            emb, method=method, n_levels=args.levels, codebook_size=args.k, collision=args.collision,
            seed=args.seed, device=args.device, show_progress=not args.no_progress, **method_params,
        )
    except ValueError as err:  # e.g. uniqueness impossible for this collision method: report it
        row = {col: "" for col in COLUMNS}
        row.update(tokenizer=method, n=int(emb.shape[0]), dim=int(emb.shape[1]), error=str(err),
                   seconds=round(time.perf_counter() - start, 2), peak_rss_mib=round(peak_rss_mib(), 1))
        return row
    seconds = time.perf_counter() - start
    diag = info["diagnostics"]
    return {
        "tokenizer": method,
        "n": int(emb.shape[0]),
        "dim": int(emb.shape[1]),
        "codes": "x".join(str(k) for k in info["codebook_sizes"]),
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "usage_per_level": [round(u, 4) for u in diag["usage"]],
        "perplexity_per_level": [round(p, 1) for p in diag["perplexity"]],
        "collision_rate_before": round(diag["collision_rate_before"], 5),
        "recon_error": None if info["recon_error"] is None else round(info["recon_error"], 5),
        "unique_after": int(len(np.unique(codes, axis=0))) == len(codes),
        "error": "",
    }


def kmeans_params(args):
    params = {"niter": args.niter}
    if args.threads is not None:
        params["n_threads"] = args.threads
    return params


def rqvae_params(args):
    return {"epochs": args.rqvae_epochs, "batch_size": args.rqvae_batch_size, "lr": args.rqvae_lr}


def markdown_table(rows):
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = []
        for col in COLUMNS:
            value = row[col]
            cells.append(", ".join(str(v) for v in value) if isinstance(value, list) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="synthetic vectors for (a); 0 skips (a)")
    p.add_argument("--dim", type=int, default=64, help="synthetic dimension")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--k", type=int, default=256, help="codes per level")
    p.add_argument("--niter", type=int, default=20, help="k-means iterations")
    p.add_argument("--collision", default="extra_level", choices=["extra_level", "sinkhorn", "none"])
    p.add_argument("--emb", default=None, help="path to a float [N, D] .npy file for (b)")
    p.add_argument("--rqvae-epochs", type=int, default=50)
    p.add_argument("--rqvae-batch-size", type=int, default=1024)
    p.add_argument("--rqvae-lr", type=float, default=1e-3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="faiss.omp_set_num_threads (optional)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default=None, help="write the result rows to this JSON file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rows = []
    if args.n > 0:
        t0 = time.perf_counter()
        emb = synthetic_embeddings(args.n, args.dim, seed=args.seed)
        print(f"synthetic data {emb.shape} built in {time.perf_counter() - t0:.1f}s, "
              f"RSS so far {peak_rss_mib():.0f} MiB ({emb.nbytes / 2 ** 20:.0f} MiB of vectors)")
        rows.append(run_one(emb, "rkmeans", args, kmeans_params(args)))
        del emb
    if args.emb:
        emb = np.load(args.emb).astype(np.float32)
        for method in ("rkmeans", "hkmeans", "rqvae"):
            params = rqvae_params(args) if method == "rqvae" else kmeans_params(args)
            rows.append(run_one(emb, method, args, params))
    if not rows:
        print("nothing to do: give --n > 0 and/or --emb")
        return rows
    print(markdown_table(rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
