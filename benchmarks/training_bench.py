# coding: utf-8
"""Training throughput of the generative models' T5 on real amazon-beauty histories, loops side by side in one run.

Loops (each its own copy of the same initial weights and its own AdamW, gradient clipping at 1.0 as
``GenerativeTrainer``), one step of each in turn so that they share the machine's load:

* ``today``      -- the earlier training loop: uniform random batches padded to 20 items, Hugging Face's ``T5Stack``
  forward inside :meth:`T5Backbone.forward_loss` (``lean_forward=False``), no trimming;
* ``hf-t5``      -- the official DiscRec code's loop: ``T5ForConditionalGeneration(input_ids, attention_mask,
  labels=...)`` forward + backward on the same padded batches;
* ``bucketed``   -- length-bucketed batches with the common left padding trimmed, still HF's forward;
* ``new``        -- what ``GenerativeTrainer`` runs now: bucketed + trimmed + the lean T5 forward
  (:mod:`recbole_genrec.generative.lean_t5`);
* ``new+bf16``   -- ``new`` under CPU bf16 autocast (``cpu_bf16: True``; off by default).

Model: TIGER's paper size (4+4 layers, d_model 128, d_ff 1024, 6 heads of 64, dropout 0.1, batch 256) with the
user-token block (2000 tokens). Data: the (history, next item) training samples RecBole builds from
``amazon-beauty.inter`` (leave-one-out: every prefix of each user's first n-2 items, the last 20 items of history,
131,413 samples); items get synthetic 3 x 256 semantic IDs plus a collision level (speed does not depend on the code
values, only on the history lengths, which are real).

Which batches are timed: ``today``/``hf-t5`` draw uniform random batches; the bucketed loops take the batches of one
bucketed epoch sorted by length at golden-ratio quantiles (round ``r`` -> quantile ``frac(r * 0.618..)``), so that
any number of rounds covers the length distribution evenly instead of by chance.

Exactness, measured on identical batches with dropout off: the loss of ``new`` on the trimmed batch against
``today`` on the padded batch (and the largest gradient difference).

    nice -n 10 python benchmarks/training_bench.py --threads 1 2 --budget-s 150
"""

import argparse
import copy
import datetime
import json
import math
import os
import shlex
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from decoding_bench import PAPER_T5, synthetic_codes  # noqa: E402
from machine import cpu_name, git_commit, library_versions, load_average  # noqa: E402
from recbole_genrec.generative import CodeTable, T5Backbone  # noqa: E402
from recbole_genrec.generative.batching import LengthBuckets, trim_left_padding  # noqa: E402
from recbole_genrec.model.sequential_recommender.tiger import TIGER  # noqa: E402

LOOPS = ["today", "hf-t5", "bucketed", "new", "new+bf16"]
GOLDEN = (math.sqrt(5) - 1) / 2


def beauty_samples(path, max_len=20):
    """RecBole's leave-one-out training samples of ``path``: `(N, max_len)` right-padded item ids, lengths, targets,
    users (item / user ids = order of first appearance, from 1)."""
    import pandas as pd

    frame = pd.read_csv(path, sep="\t")
    frame.columns = [c.split(":")[0] for c in frame.columns]
    frame = frame.sort_values(["user_id", "timestamp"], kind="stable")
    items = {k: i + 1 for i, k in enumerate(pd.unique(frame["item_id"]))}
    seqs, lens, targets, users = [], [], [], []
    for user, (_, group) in enumerate(frame.groupby("user_id", sort=False)):
        ids = [items[k] for k in group["item_id"]]
        for t in range(1, len(ids) - 2):  # train part = all but the last two items; one sample per target
            history = ids[max(0, t - max_len):t]
            seqs.append(history + [0] * (max_len - len(history)))
            lens.append(len(history))
            targets.append(ids[t])
            users.append(user + 1)
    return (torch.tensor(seqs), torch.tensor(lens), torch.tensor(targets), torch.tensor(users), len(items))


class _Inputs:
    """TIGER's input layout (codes of the history, hashed user token, EOS) without building a RecBole model."""

    encoder_inputs = TIGER.encoder_inputs
    user_tokens = TIGER.user_tokens
    target_tokens = TIGER.target_tokens

    def __init__(self, code_table, buckets=2000):
        self.code_table, self.use_user_token, self.user_token_buckets = code_table, True, buckets
        self.user_token_offset = code_table.vocab_size


def make_batch(inputs, data, index, trim):
    seqs, lens, targets, users = (t[index] for t in data)
    ids, mask = inputs.encoder_inputs(seqs, lens, users)  # [B, 20*L+2]
    if trim:
        ids, mask = trim_left_padding(ids, mask)
    return ids, mask, inputs.target_tokens(targets)


def hf_loss(model, ids, mask, target):
    """The official code's call: HF computes the shifted decoder inputs and the loss from ``labels``."""
    return model.t5(input_ids=ids, attention_mask=mask, labels=target).loss


def own_loss(model, ids, mask, target):
    return model.forward_loss(ids, mask, target)[0]


class Loop:
    def __init__(self, name, base, lr=1e-3):
        self.name = name
        self.model = copy.deepcopy(base).train()
        self.model.lean_forward = name.startswith("new")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01)
        self.loss_fn = hf_loss if name == "hf-t5" else own_loss
        self.bf16 = name.endswith("bf16")
        self.padded = name in ("today", "hf-t5")
        self.seconds, self.cpu_seconds, self.samples, self.steps, self.tokens = 0.0, 0.0, 0, 0, 0

    def step(self, batch, timed=True):
        ids, mask, target = batch
        start, cpu_start = time.perf_counter(), time.process_time()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.loss_fn(self.model, ids, mask, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        if timed:
            self.seconds += time.perf_counter() - start
            self.cpu_seconds += time.process_time() - cpu_start
            self.samples += ids.size(0)
            self.steps += 1
            self.tokens += ids.numel()
        return float(loss.detach())


def exactness(base, inputs, data, n=256, seed=0):
    """Loss and gradients of ``new`` on a trimmed batch vs ``today`` on the same batch padded, dropout off."""
    rng = np.random.default_rng(seed)
    lens = data[1].numpy()
    short = np.flatnonzero(lens <= 8)  # a batch whose padded width is well above its longest history
    index = torch.from_numpy(rng.choice(short, n, replace=False))
    results = {}
    for name, trim in (("today", False), ("new", True)):
        model = copy.deepcopy(base).eval()
        model.lean_forward = name == "new"
        ids, mask, target = make_batch(inputs, data, index, trim)
        loss = own_loss(model, ids, mask, target)
        loss.backward()
        results[name] = (loss.item(), {k: p.grad for k, p in model.named_parameters() if p.grad is not None},
                         ids.size(1))
    (loss_a, grads_a, width_a), (loss_b, grads_b, width_b) = results["today"], results["new"]
    grad_diff = max(float((grads_a[k] - grads_b[k]).abs().max()) for k in grads_a)
    return {"loss_today": loss_a, "loss_new": loss_b, "abs_loss_diff": abs(loss_a - loss_b),
            "max_abs_grad_diff": grad_diff, "width_today": width_a, "width_new": width_b}


def run(threads, budget_s, base, inputs, data, loops, batch_size, seed, min_rounds=2):
    torch.set_num_threads(threads)
    n = data[0].size(0)
    rng = np.random.default_rng(seed)
    buckets = LengthBuckets(data[1].numpy(), batch_size, seed=seed)
    by_length = sorted(buckets.epoch_batches(0), key=lambda b: (int(data[1][b].max()), len(b)))
    by_length = [b for b in by_length if len(b) == batch_size]
    state = [Loop(name, base) for name in loops]
    warm_index = torch.from_numpy(rng.choice(n, batch_size, replace=False))
    for loop in state:  # one untimed warm-up step each
        loop.step(make_batch(inputs, data, warm_index, trim=not loop.padded), timed=False)
    start, rounds = time.perf_counter(), 0
    while time.perf_counter() - start < budget_s or rounds < min_rounds:
        uniform = torch.from_numpy(rng.choice(n, batch_size, replace=False))
        bucket = torch.from_numpy(by_length[int(((rounds + 1) * GOLDEN % 1.0) * len(by_length))])
        padded_batch = make_batch(inputs, data, uniform, trim=False)
        bucketed_batch = make_batch(inputs, data, bucket, trim=True)
        for loop in state:
            loop.step(padded_batch if loop.padded else bucketed_batch)
        rounds += 1
        print(f"  threads={threads} round {rounds}: " + ", ".join(
            f"{l.name} {l.samples / max(l.seconds, 1e-9):.1f}/s" for l in state), flush=True)
    base_rate = next((l.samples / l.seconds for l in state if l.name == "today"), None)
    base_cpu = next((l.samples / l.cpu_seconds for l in state if l.name == "today"), None)
    rows = []
    for loop in state:
        rate = loop.samples / loop.seconds
        cpu_rate = loop.samples / loop.cpu_seconds
        rows.append({"loop": loop.name, "threads": threads, "steps": loop.steps, "samples_per_s": round(rate, 2),
                     "samples_per_cpu_s": round(cpu_rate, 2),
                     "vs_today_cpu": round(cpu_rate / base_cpu, 2) if base_cpu else None,
                     "tokens_per_row": round(loop.tokens / loop.samples, 1),
                     "beauty_epoch_min": round(n / rate / 60, 1),
                     "vs_today": round(rate / base_rate, 2) if base_rate else None})
    return rows, rounds


def markdown(report):
    meta = report["meta"]
    lines = [f"# Training throughput -- {meta['date']}", "",
             f"- command: `{meta['command']}`", f"- git commit: {meta['git_commit']}",
             f"- machine: {meta['cpu']}, {meta['cores']} cores, load average before/after "
             f"{meta['load_before']} / {meta['load_after']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
             f"- model: T5Backbone 4+4 layers, d_model 128, d_ff 1024, 6x64 heads, dropout 0.1, vocabulary "
             f"{meta['vocab']}; batch {meta['batch_size']}; AdamW + clip 1.0",
             f"- data: {meta['samples']} amazon-beauty training samples, mean history {meta['mean_len']:.2f} items "
             f"(4 tokens each + user token + EOS); padding of the encoder slots: {meta['padding_uniform']:.0%} "
             f"uniform batches, {meta['padding_bucketed']:.0%} bucketed",
             f"- budget: {meta['budget_s']} s per thread setting, loops interleaved step by step", "",
             "samples/s = wall clock; samples per CPU-second = process CPU time (all threads, spin-waits included), "
             "less sensitive to other jobs on a shared machine.", "",
             "| loop | threads | steps | samples/s | tokens/row | one Beauty epoch (min) | vs today | "
             "samples per CPU-s | vs today (CPU time) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["rows"]:
        lines.append(f"| {row['loop']} | {row['threads']} | {row['steps']} | {row['samples_per_s']:.1f} | "
                     f"{row['tokens_per_row']} | {row['beauty_epoch_min']} | {row['vs_today']}x | "
                     f"{row.get('samples_per_cpu_s', '')} | {row.get('vs_today_cpu', '')}x |")
    ex = report["exactness"]
    lines += ["", f"Identical batch (256 histories of <= 8 items, dropout off): today (HF forward, padded to "
                  f"{ex['width_today']} tokens) loss {ex['loss_today']:.6f}, new (lean forward, trimmed to "
                  f"{ex['width_new']}) loss {ex['loss_new']:.6f}: |diff| {ex['abs_loss_diff']:.2e}, largest "
                  f"gradient difference {ex['max_abs_grad_diff']:.2e}."]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "amazon-beauty",
                                                  "amazon-beauty.inter"))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--budget-s", type=float, default=150.0, help="timed seconds per thread setting")
    p.add_argument("--loops", default=",".join(LOOPS))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--min-rounds", type=int, default=2, help="rounds even past the budget (bucketed batches are "
                                                             "taken at golden-ratio length quantiles)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    load_before = load_average()
    seqs, lens, targets, users, n_items = beauty_samples(args.data)
    codes, sizes = synthetic_codes(n_items, seed=args.seed)
    code_table = CodeTable(codes, sizes)
    inputs = _Inputs(code_table)
    data = (seqs, lens, targets, users)
    torch.manual_seed(args.seed)
    base = T5Backbone(code_table.vocab_size + inputs.user_token_buckets, **PAPER_T5)
    buckets = LengthBuckets(lens.numpy(), args.batch_size, seed=args.seed)
    padding_bucketed, padding_uniform = buckets.padding_fraction(0, tokens_per_item=code_table.n_levels,
                                                                 extra_tokens=2, max_length=20)
    torch.set_num_threads(1)
    exact = exactness(base, inputs, data)
    print(f"exactness: {exact}", flush=True)
    rows = []
    for threads in args.threads:
        part, _ = run(threads, args.budget_s, base, inputs, data, args.loops.split(","), args.batch_size, args.seed,
                      args.min_rounds)
        rows += part
    now = datetime.datetime.now()
    meta = {"date": now.isoformat(timespec="seconds"),
            "command": " ".join(shlex.quote(a) for a in ["python"] + sys.argv),
            "git_commit": git_commit(), "cpu": cpu_name(), "cores": os.cpu_count(), "load_before": load_before,
            "load_after": load_average(), "versions": library_versions(), "vocab": base.config.vocab_size,
            "batch_size": args.batch_size, "samples": int(lens.numel()), "mean_len": float(lens.float().mean()),
            "padding_uniform": padding_uniform, "padding_bucketed": padding_bucketed, "budget_s": args.budget_s}
    report = {"meta": meta, "rows": rows, "exactness": exact}
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"training-{now:%Y-%m-%d_%H%M}")
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(report) + "\n")
    print(markdown(report))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
