# coding: utf-8
"""Benchmark of the tensorised trie-constrained beam search (``recbole_genrec.generative``).

Two modes:

* default -- our :meth:`T5Backbone.beam_search` against Hugging Face ``generate(num_beams=20,
  prefix_allowed_tokens_fn=<python trie>)`` on the same weights and inputs: users/second of each, the speed-up and
  the fraction of users whose top-20 lists are identical (ordered and as sets) plus the largest score difference.
  HF is configured to search the same space as ours: ``length_penalty=0`` (score = summed log-probabilities),
  ``min_new_tokens = max_new_tokens = L`` (EOS can never end a hypothesis early), ``early_stopping="never"``
  (canonical beam search) and ``num_return_sequences = num_beams``.
* ``--scaling`` -- time per user of our search with synthetic code tables of 10k, 100k and 1M items (TIGER-sized
  model), split into the full model search and the trie/top-k overhead alone (a model-free ``step_fn``), plus the
  table build time and the memory of its buffers.

Residual differences between the two searches can only come from exact score ties (``torch.topk`` may order tied
candidates differently from HF's sort) or from float round-off between batched kernels; HF scores are the same
unrenormalised full-vocabulary log-softmax sums (its constraint masks after ``log_softmax``), so on random and
briefly trained weights both the lists and the scores agree exactly.

The code table is synthetic (default: shaped like amazon-beauty, 12,101 items, 3 levels x 256 codes + a collision
level, codes drawn from a Zipf-like distribution so that prefixes are shared) or loaded from ``--codes codes.npy``
(``[n_items, L]`` aligned with RecBole item ids, row 0 = padding).  The model has random TIGER-sized weights (Rajput
et al., NeurIPS 2023), unless ``--train-steps`` > 0 briefly fits it to a synthetic next-item task.

Example::

    python benchmarks/decoding_bench.py --n-users 64 --batch-size 32 --out bench.json
    python benchmarks/decoding_bench.py --scaling --n-users 32
"""

import argparse
import json
import os
import platform
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole_genrec.generative import EOS_TOKEN_ID, CodeTable, T5Backbone, constrained_beam_search  # noqa: E402


# ------------------------------------------------------------------------------------------------ code tables
def synthetic_codes(
    n_items: int, n_levels: int = 3, codebook_size: int = 256, zipf: float = 0.5, seed: int = 0
) -> Tuple[torch.Tensor, List[int]]:
    """``[n_items + 1, n_levels + 1]`` codes (row 0 = padding) with a TIGER-style collision level appended."""
    gen = torch.Generator().manual_seed(seed)
    probs = 1.0 / torch.arange(1, codebook_size + 1, dtype=torch.float64) ** zipf  # [K]
    codes = torch.stack(
        [probs[torch.randperm(codebook_size, generator=gen)].multinomial(n_items, True, generator=gen)
         for _ in range(n_levels)],
        dim=1,
    )  # [n, L]
    # collision level: rank of the item among the items that share its first n_levels codes
    key = torch.zeros(n_items, dtype=torch.long)
    for level in range(n_levels):
        key = key * codebook_size + codes[:, level]
    order = torch.argsort(key, stable=True)
    _, counts = torch.unique_consecutive(key[order], return_counts=True)
    group_start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)  # [n]
    rank = torch.empty(n_items, dtype=torch.long)
    rank[order] = torch.arange(n_items) - group_start
    codes = torch.cat([codes, rank.unsqueeze(1)], dim=1)  # [n, L+1]
    codes = torch.cat([torch.full((1, n_levels + 1), -1, dtype=torch.long), codes], dim=0)  # [n+1, L+1]
    return codes, [codebook_size] * n_levels + [int(rank.max()) + 1]


def load_codes(path: str) -> Tuple[torch.Tensor, List[int]]:
    codes = torch.from_numpy(np.load(path)).long()
    valid = (codes[1:] >= 0).all(1)
    return codes, (codes[1:][valid].max(0).values + 1).tolist()


def python_trie(code_table: CodeTable) -> Dict[Tuple[int, ...], List[int]]:
    """prefix token tuple -> allowed next tokens (what a ``prefix_allowed_tokens_fn`` typically uses)."""
    trie: Dict[Tuple[int, ...], set] = {}
    for row in code_table.item_tokens(code_table.item_of_leaf).tolist():
        for level in range(len(row)):
            trie.setdefault(tuple(row[:level]), set()).add(row[level])
    return {prefix: sorted(tokens) for prefix, tokens in trie.items()}


# ------------------------------------------------------------------------------------------------ workload
def make_histories(
    code_table: CodeTable, n_users: int, max_len: int, seed: int, device
) -> Tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    real = code_table.item_of_leaf.cpu()
    item_seq = real[torch.randint(0, real.numel(), (n_users, max_len), generator=gen)]  # [U, T]
    item_seq_len = torch.randint(1, max_len + 1, (n_users,), generator=gen)  # [U]
    item_seq[torch.arange(max_len).unsqueeze(0) >= item_seq_len.unsqueeze(1)] = 0
    return item_seq.to(device), item_seq_len.to(device)


def _paper_t5():
    """The TIGER paper's T5 sizes, as TIGER builds its backbone from properties/model/TIGER.yaml."""
    from recbole_genrec.model.sequential_recommender.tiger import TIGER
    from recbole_genrec.safety import read_config_file
    from recbole_genrec.utils import properties_dir

    return TIGER._backbone_kwargs(read_config_file(os.path.join(properties_dir(), "model", "TIGER.yaml")))


PAPER_T5 = _paper_t5()


def build_model(code_table: CodeTable, device, seed: int) -> T5Backbone:
    torch.manual_seed(seed)
    return T5Backbone(code_table.vocab_size, **PAPER_T5).to(device).eval()


def train_briefly(model: T5Backbone, code_table: CodeTable, steps: int, device, seed: int) -> None:
    """A few Adam steps on 'next item = successor of the last item' so the distributions are peaked, not random."""
    if steps <= 0:
        return
    gen = torch.Generator().manual_seed(seed)
    real = code_table.item_of_leaf.sort().values.cpu()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        start = torch.randint(0, real.numel() - 6, (64,), generator=gen)
        pos = start.unsqueeze(1) + torch.arange(6)
        input_ids, mask = code_table.history_tokens(real[pos[:, :5]].to(device), torch.full((64,), 5, device=device))
        loss = model.forward_loss(input_ids, mask, code_table.item_tokens(real[pos[:, 5]].to(device)))[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int = 1):
    """(output, best wall time over ``repeats`` runs) -- the minimum is robust to other load on the machine."""
    best = float("inf")
    for _ in range(max(repeats, 1)):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return out, best


# ------------------------------------------------------------------------------------------------ arithmetic floor
def counted_flops(fn) -> float:
    """Floating-point operations of the matrix products (``mm`` / ``bmm`` / ``addmm``) that ``fn()`` runs, as counted
    by the PyTorch profiler (attention inside ``scaled_dot_product_attention`` is not counted: a lower bound)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        fn()
    return float(sum(event.flops for event in prof.key_averages() if event.flops))


def peak_matmul_flops(device, shapes=((640, 128, 1024), (640, 1024, 128), (640, 128, 1152), (2048, 2048, 2048)),
                      seconds: float = 0.5) -> float:
    """Best measured FLOP/s of float32 matrix products on this device: the decoder's own shapes and a large square."""
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
        for _ in range(3):
            a @ b
        sync(device)
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            runs += 1
        sync(device)
        best = max(best, 2.0 * m * k * n * runs / (time.perf_counter() - start))
    return best


def arithmetic_floor(model, code_table, trie, input_ids, mask, beam, device) -> Dict:
    """Time per user that the matrix products alone of each search need at the device's best measured FLOP rate:
    no implementation of the same exact float32 search can be faster than its floor."""
    n_users = input_ids.size(0)
    peak = peak_matmul_flops(device)
    ours_flops = counted_flops(lambda: ours(model, code_table, input_ids, mask, beam)) / n_users
    hf_flops = counted_flops(lambda: hf_generate(model, code_table, trie, input_ids, mask, beam)) / n_users
    return {
        "peak_matmul_gflops": peak / 1e9,
        "ours_gflop_per_user": ours_flops / 1e9,
        "hf_gflop_per_user": hf_flops / 1e9,
        "ours_floor_ms_per_user": 1e3 * ours_flops / peak,
        "hf_floor_ms_per_user": 1e3 * hf_flops / peak,
    }


# ------------------------------------------------------------------------------------------------ searches
def ours(model, code_table, input_ids, mask, beam):
    return model.beam_search(input_ids, mask, code_table, beam)


def hf_generate(model, code_table, trie, input_ids, mask, beam):
    n_levels = code_table.n_levels

    def allowed(batch_id: int, sent: torch.Tensor) -> List[int]:
        return trie.get(tuple(sent[1:].tolist()), [EOS_TOKEN_ID])  # sent[0] is the decoder start token

    out = model.t5.generate(
        input_ids=input_ids,
        attention_mask=mask,
        num_beams=beam,
        num_return_sequences=beam,
        max_new_tokens=n_levels,
        min_new_tokens=n_levels,
        length_penalty=0.0,
        early_stopping="never",
        do_sample=False,
        prefix_allowed_tokens_fn=allowed,
        return_dict_in_generate=True,
        output_scores=True,
    )
    tokens = out.sequences[:, 1 : 1 + n_levels]  # [B*beam, L]
    items = code_table.lookup(tokens).reshape(-1, beam)
    scores = out.sequences_scores.float().reshape(-1, beam)
    return items, scores


def compare_at(args, model, code_table, trie, item_seq, item_seq_len, batch_size: int) -> Dict:
    """Both searches on the same users, ``batch_size`` users per call; per-batch interleaved timings."""
    device = torch.device(args.device)
    batches = [
        code_table.history_tokens(item_seq[i : i + batch_size], item_seq_len[i : i + batch_size])
        for i in range(0, args.n_users, batch_size)
    ]
    # warm-up (allocator, kernels, lazy init)
    ours(model, code_table, *batches[0], args.beam)
    hf_generate(model, code_table, trie, *batches[0], args.beam)

    ours_time = hf_time = 0.0
    same_list = same_set = 0
    max_score_diff = 0.0
    for input_ids, mask in batches:
        (our_items, our_scores), t = timed(
            lambda: ours(model, code_table, input_ids, mask, args.beam), device, args.repeats
        )
        ours_time += t
        (hf_items, hf_scores), t = timed(
            lambda: hf_generate(model, code_table, trie, input_ids, mask, args.beam), device, args.repeats
        )
        hf_time += t
        assert (our_items > 0).all(), "our search returned a non-item"
        for a, b in zip(our_items.tolist(), hf_items.tolist()):
            same_list += a == b
            same_set += set(a) == set(b)
        max_score_diff = max(max_score_diff, (our_scores - hf_scores).abs().max().item())
    return {
        "batch_size": batch_size,
        "ours_users_per_s": args.n_users / ours_time,
        "hf_users_per_s": args.n_users / hf_time,
        "speedup": hf_time / ours_time,
        "identical_top_lists": same_list / args.n_users,
        "identical_top_sets": same_set / args.n_users,
        "max_abs_score_diff": max_score_diff,
    }


def compare(args) -> Dict:
    device = torch.device(args.device)
    if args.codes:
        codes, sizes = load_codes(args.codes)
        source = args.codes
    else:
        codes, sizes = synthetic_codes(args.n_items, seed=args.seed)
        source = f"synthetic ({args.n_items} items, levels {sizes})"
    code_table = CodeTable(codes, sizes).to(device)
    model = build_model(code_table, device, args.seed)
    train_briefly(model, code_table, args.train_steps, device, args.seed)
    trie = python_trie(code_table)
    item_seq, item_seq_len = make_histories(code_table, args.n_users, args.max_len, args.seed + 1, device)
    rows = [compare_at(args, model, code_table, trie, item_seq, item_seq_len, bs) for bs in args.batch_size]
    best_ours = max(rows, key=lambda r: r["ours_users_per_s"])
    best_hf = max(rows, key=lambda r: r["hf_users_per_s"])
    floor = None
    if args.floor:
        floor_ids, floor_mask = code_table.history_tokens(item_seq[:32], item_seq_len[:32])
        floor = arithmetic_floor(model, code_table, trie, floor_ids, floor_mask, args.beam, device)
        # the largest speed-up over HF's best that any exact float32 search could reach on this device
        floor["max_speedup_over_best_hf"] = 1e3 / best_hf["hf_users_per_s"] / floor["ours_floor_ms_per_user"]
    result = {
        "mode": "compare",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        # glibc malloc settings: with the defaults, large freed blocks go back to the system and every search pays
        # page faults again (HF's per-beam cross-attention cache copies suffer most); MALLOC_MMAP_THRESHOLD_ /
        # MALLOC_TRIM_THRESHOLD_ keep them, as jemalloc or tcmalloc would
        "malloc_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")},
        "codes": source,
        "n_items": code_table.n_real_items,
        "codebook_sizes": code_table.codebook_sizes,
        "n_users": args.n_users,
        "beam": args.beam,
        "train_steps": args.train_steps,
        "repeats": args.repeats,
        "rows": rows,
        # each search at its own best batch size: the fair headline number
        "best_ours_batch": best_ours["batch_size"],
        "best_hf_batch": best_hf["batch_size"],
        "best_vs_best_speedup": best_ours["ours_users_per_s"] / best_hf["hf_users_per_s"],
        "arithmetic_floor": floor,
    }
    for key in ("ours_users_per_s", "hf_users_per_s", "speedup", "identical_top_lists", "identical_top_sets",
                "max_abs_score_diff", "batch_size"):
        result[key] = rows[0][key]  # first batch size: the keys of the single-batch-size format
    print(
        f"\n**Constrained beam search, beam={args.beam}** — {source}; {args.n_users} users, "
        f"device {result['device']} ({result['device_name']}, {result['torch_threads']} threads), "
        f"malloc {result['malloc_env'] or 'glibc defaults'}\n"
    )
    print(f"| users per call | HF generate + prefix_allowed_tokens_fn users/s | ours users/s | speed-up "
          f"| identical top-{args.beam} lists | identical top-{args.beam} sets | max |Δscore| |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['batch_size']} | {r['hf_users_per_s']:.1f} | {r['ours_users_per_s']:.1f} | {r['speedup']:.2f}x "
              f"| {r['identical_top_lists']:.3f} | {r['identical_top_sets']:.3f} | {r['max_abs_score_diff']:.2e} |")
    print(f"\nEach at its best batch size: ours {best_ours['ours_users_per_s']:.1f} users/s (batch "
          f"{best_ours['batch_size']}) vs HF {best_hf['hf_users_per_s']:.1f} users/s (batch {best_hf['batch_size']}): "
          f"**{result['best_vs_best_speedup']:.2f}x**")
    if floor:
        print(f"\nArithmetic floor (matrix products only, at the best measured {floor['peak_matmul_gflops']:.0f} "
              f"GFLOP/s): ours {floor['ours_gflop_per_user']:.3f} GFLOP/user = {floor['ours_floor_ms_per_user']:.2f} "
              f"ms/user (measured {1e3 / best_ours['ours_users_per_s']:.2f}); HF {floor['hf_gflop_per_user']:.3f} "
              f"GFLOP/user = {floor['hf_floor_ms_per_user']:.2f} ms/user (measured "
              f"{1e3 / best_hf['hf_users_per_s']:.2f}). No exact float32 search can beat HF's best here by more than "
              f"**{floor['max_speedup_over_best_hf']:.1f}x**.")
    return result


def scaling(args) -> Dict:
    device = torch.device(args.device)
    batch_size = args.batch_size[0]
    rows = []
    for n_items in args.scaling_sizes:
        codes, sizes = synthetic_codes(n_items, seed=args.seed)
        (code_table, build_s) = timed(lambda: CodeTable(codes, sizes), "cpu")
        code_table = code_table.to(device)
        table_bytes = sum(b.numel() * b.element_size() for b in code_table.buffers())
        trie_bytes = table_bytes - code_table.codes.numel() * code_table.codes.element_size()
        model = build_model(code_table, device, args.seed)
        item_seq, item_seq_len = make_histories(code_table, args.n_users, args.max_len, args.seed + 1, device)
        batches = [
            code_table.history_tokens(item_seq[i : i + batch_size], item_seq_len[i : i + batch_size])
            for i in range(0, args.n_users, batch_size)
        ]
        ours(model, code_table, *batches[0], args.beam)  # warm-up
        total = 0.0
        for input_ids, mask in batches:
            (items, _), t = timed(lambda: ours(model, code_table, input_ids, mask, args.beam), device, args.repeats)
            assert (items > 0).all()
            total += t

        # trie + top-k overhead alone: a model-free step_fn returning fixed log-probabilities
        fixed = torch.log_softmax(torch.randn(batch_size * args.beam, code_table.vocab_size, device=device), -1)
        trie_total = 0.0
        for input_ids, _ in batches:
            n = input_ids.size(0)
            step = lambda last, level, n=n: fixed[: n * args.beam]  # noqa: E731
            _, t = timed(
                lambda: constrained_beam_search(step, code_table, n, args.beam, device), device, args.repeats
            )
            trie_total += t
        rows.append(
            {
                "n_items": code_table.n_real_items,
                "codebook_sizes": code_table.codebook_sizes,
                "build_s": build_s,
                "table_MiB": table_bytes / 2**20,
                "trie_MiB": trie_bytes / 2**20,
                "ms_per_user": 1e3 * total / args.n_users,
                "trie_ms_per_user": 1e3 * trie_total / args.n_users,
            }
        )
        del model, code_table
    print(
        f"\n**Scaling, beam={args.beam}**, {args.n_users} users, batch {batch_size}, device {device} "
        f"({torch.get_num_threads()} threads)\n"
    )
    print(
        "| items | codebook sizes | table build (s) | buffers (MiB) | trie tables (MiB) "
        "| ms/user (model+search) | ms/user (trie+top-k only) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['n_items']:,} | {r['codebook_sizes']} | {r['build_s']:.2f} | {r['table_MiB']:.1f} | "
            f"{r['trie_MiB']:.1f} | {r['ms_per_user']:.2f} | {r['trie_ms_per_user']:.3f} |"
        )
    return {
        "mode": "scaling",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "beam": args.beam,
        "n_users": args.n_users,
        "batch_size": batch_size,
        "repeats": args.repeats,
        "rows": rows,
    }


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32],
                        help="users per beam-search call; several values: one comparison per value, plus each "
                             "search at its own best value")
    parser.add_argument("--n-users", type=int, default=256)
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--max-len", type=int, default=20, help="history length in items (TIGER: 20)")
    parser.add_argument("--codes", default=None, help=".npy of [n_items, L] codes (row 0 = padding)")
    parser.add_argument("--n-items", type=int, default=12101, help="synthetic table size (amazon-beauty: 12,101)")
    parser.add_argument("--train-steps", type=int, default=0, help="fit the random model briefly before timing")
    parser.add_argument("--scaling", action="store_true", help="time per user for 10k / 100k / 1M item tables")
    parser.add_argument("--scaling-sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=1, help="time every batch this often, keep the best")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--floor", action="store_true",
                        help="also count the FLOPs of both searches and report the arithmetic floor per user")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with torch.inference_mode():
        result = scaling(args) if args.scaling else None
    if not args.scaling:
        result = compare(args)  # may train: outside inference_mode
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
