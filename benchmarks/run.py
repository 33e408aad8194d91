"""One entry point for every benchmark of recbole-genrec: models side by side, decoding, tokenizers.

    python benchmarks/run.py --preset cpu-quick                      # every model, ml-100k + amazon-beauty (< 30 min)
    python benchmarks/run.py --preset cpu-full                       # ~2 hours on 2 cores
    python benchmarks/run.py --preset gpu --device cuda              # amazon-beauty on one GPU, about 10 minutes
    python benchmarks/run.py --preset smoke                          # tiny test data, Pop + BPR, seconds
    python benchmarks/run.py --preset decoding                       # benchmarks/decoding_bench.py
    python benchmarks/run.py --preset tokenizers                     # benchmarks/tokenizers_bench.py
    python benchmarks/run.py --preset gpu --device cpu --max-users 300 --epochs 1   # dry run of the gpu preset

Every model row runs in its own subprocess (``run.py _worker``) through ``recbole_genrec.run_recbole_genrec``, so
peak memory is the row's own and a row that fails or runs past its timeout is recorded and skipped. A worker
records the test metrics, train time per epoch, total time, peak RSS (``resource.getrusage``) and peak CUDA memory
(``torch.cuda.max_memory_allocated``), test-evaluation users per second, parameters, and the preprocessing hook's
summary (embedding / code timings, cache decisions and the semantic-ID diagnostics of ``diagnostics-<key>.json``).
The run writes ``<out>/<preset>-<date>.{json,md,png}`` (3 files).

The parts live in ``benchmarks/harness/`` (datasets, rows, worker, reports, scripts, bundle); this file is the CLI.

``--max-users N`` keeps the first N users (in file order) of every dataset: a truncated copy, named
``<dataset>-u<N>`` (RecBole reads ``ml-100k`` from its own folder whatever ``data_path`` says), is written under
``~/.cache/recbole_genrec/bench-data/``; the dataset yaml files that RecBole and the plugin would load for
``<dataset>`` are passed along as config files.
"""

import argparse
import datetime
import json
import os
import shlex
import sys
import time

if __package__ in (None, ""):  # run as a script (python benchmarks/run.py): the checkout holds the benchmarks package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.harness.bundle import BUNDLE_SOURCE, make_bundle  # noqa: E402
from benchmarks.harness.common import BENCH_DIR, ROOT, machine_info, say  # noqa: E402
from benchmarks.harness.datasets import resolve_datasets  # noqa: E402
from benchmarks.harness.reports import markdown_report, update_readme, write_reports  # noqa: E402
from benchmarks.harness.rows import row_key, run_rows, select_rows  # noqa: E402
from benchmarks.harness.rows import row_label as bench_row_label  # noqa: E402
from benchmarks.harness.scripts import run_script_preset  # noqa: E402
from benchmarks.harness.worker import best_epoch, worker  # noqa: E402
from benchmarks.machine import git_commit, library_versions  # noqa: E402
from benchmarks.presets import PRESETS, SCRIPT_PRESETS  # noqa: E402


def parse_args(argv=None):
    names = sorted(PRESETS) + sorted(SCRIPT_PRESETS)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="presets: " + ", ".join(names))
    p.add_argument("--preset", required=True, choices=names)
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the preset's)")
    p.add_argument("--models", default=None, help="comma-separated subset (or additions) of the preset's models")
    p.add_argument("--datasets", default=None, help="comma-separated datasets (default: the preset's)")
    p.add_argument("--max-users", type=int, default=None, help="keep the first N users of every dataset")
    p.add_argument("--epochs", type=int, default=None, help="override every row's epochs (validation once, at the end)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every row, read as run_recbole_genrec.py reads --key=value; repeatable")
    p.add_argument("--no-ablations", action="store_true", help="drop the ablation rows")
    p.add_argument("--out", default=os.path.join(BENCH_DIR, "results"), help="output folder")
    p.add_argument("--data-path", default=os.path.join(ROOT, "..", "shared", "data"),
                   help="folder holding <dataset>/<dataset>.inter")
    p.add_argument("--cache-dir", default=None, help="genrec_cache_dir (default: $RECBOLE_GENREC_CACHE or "
                                                     "~/.cache/recbole_genrec)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per row (default: the preset's)")
    p.add_argument("--jobs", type=int, default=None, help="rows at a time (default: the preset's)")
    p.add_argument("--row-timeout", type=float, default=None, help="seconds per row (default: the preset's)")
    p.add_argument("--total-budget", type=float, default=None, help="seconds for all rows (default: the preset's)")
    p.add_argument("--tag", default=None, help="appended to the output file names")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="JSON",
                   help="keep the finished rows of an earlier report (default: the newest <out>/<preset>*.json) and "
                        "run only the others, writing to that report's files; presets with resume=True do this "
                        "by default")
    p.add_argument("--progress", action="store_true",
                   help="write <out>/<preset>-progress.{md,png}: every row's validation curve so far, read from its "
                        "resume state (rows still training included), then exit")
    p.add_argument("--fresh", action="store_true", help="start a resumable preset from scratch (its rows' resume "
                                                            "states are deleted too)")
    p.add_argument("--keep-checkpoints", default=None, metavar="DIR",
                   help="move every row's best checkpoint to DIR/<dataset>-<row>.pth (e.g. for "
                        "python -m recbole_genrec.alpharec.cli zeroshot --checkpoint)")
    p.add_argument("--git-commit", default=None, help="record this commit (a checkout copied without .git)")
    p.add_argument("--update-readme", action="store_true", help="put the tables into benchmarks/README.md")
    p.add_argument("--script-args", default=None, help="arguments for --preset decoding/tokenizers")
    p.add_argument("--make-bundle", default=None, metavar="DIR",
                   help="write data, cached embeddings/codes and wheels for a bare GPU machine into DIR, then exit")
    p.add_argument("--bundle", default=None, metavar="DIR",
                   help="run from a folder made by --make-bundle (its data, cache and precomputed embeddings)")
    return p.parse_args(argv)


def run_meta(args, preset, now):
    """What the reports record about the run: preset, command, commit, machine, versions, device."""
    return {
        "preset": args.preset,
        "description": preset["description"],
        "date": now.isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable)] + sys.argv),
        "git_commit": git_commit(args.git_commit),
        "machine": machine_info(args.device),
        "versions": library_versions(),
        "device": args.device,
        "threads": args.threads,
        "jobs": args.jobs or preset.get("jobs", 1),
        "plot": preset.get("plot", "quality_vs_time"),
    }


def use_bundle(args):
    """Point the run at a ``--make-bundle`` folder: its data, its cache, its precomputed embeddings."""
    args.data_path = os.path.join(args.bundle, "data")
    args.cache_dir = os.path.abspath(os.path.join(args.bundle, "cache"))
    args.set = [f"item_embedding_source={BUNDLE_SOURCE}"] + list(args.set)


def _latest_report(out, stem, preset, exact_only=False):
    """``<out>/<stem>.json`` if it exists, else (unless ``exact_only``) the newest ``<out>/<preset>-*.json``."""
    exact = os.path.join(out, stem + ".json")
    if os.path.isfile(exact):
        return exact
    if exact_only or not os.path.isdir(out):
        return None
    candidates = [os.path.join(out, f) for f in os.listdir(out) if f.startswith(preset + "-") and f.endswith(".json")]
    return max(candidates, key=os.path.getmtime) if candidates else None


def earlier_rows(args, stem, own_report=False):
    """``(finished rows of an earlier report, its stem)`` for ``--resume`` (``([], stem)`` without one).

    ``own_report``: a resumable preset extends its own report, ``<out>/<stem>.json``, never another file."""
    if not args.resume or args.fresh:
        return [], stem
    path = (args.resume if args.resume != "latest"
            else _latest_report(args.out, stem, args.preset, exact_only=own_report))
    if path and os.path.isfile(path):
        with open(path) as f:
            earlier = json.load(f)
        done = [r for r in earlier.get("rows", []) if r.get("status") == "ok"]
        say(f"resume: {len(done)} finished row(s) in {path}")
        return done, os.path.splitext(os.path.basename(path))[0]
    if args.resume != "latest":
        raise SystemExit(f"--resume {args.resume}: no such report")
    return [], stem


def forget_resume_states(rows, datasets):
    """``--fresh``: delete the resume states of the selected rows (``<cache>/<dataset>/runs/<resume_name>/``)."""
    import shutil

    from recbole_genrec.trainer.resume import run_dir

    for row in rows:
        if row["config"].get("resume_training"):
            dataset = datasets[row["dataset"]]
            folder = run_dir({"resume_name": row["config"]["resume_name"], "model": row["model"],
                              "dataset": dataset["recbole_name"], "genrec_cache_dir": dataset["cache_dir"]})
            if os.path.isdir(folder):
                shutil.rmtree(folder)
                say(f"--fresh: removed the resume state {folder}")


def write_progress(preset, args, meta, stem):
    """``--progress``: each resumable row's epochs, validation curve and best validation so far, from its resume
    state (``<cache>/<dataset>/runs/<resume_name>/state.pth``, read as data), as Markdown and a plot."""
    import torch

    from benchmarks.plot import plot_valid_curves
    from recbole_genrec.trainer.resume import run_dir

    datasets = resolve_datasets(preset, args)
    meta["datasets"] = datasets
    rows, lines = [], [f"# `{args.preset}`: progress of every row ({meta['date']})", "",
                       "Read from the rows' resume states; a row still training shows the epochs it has finished.",
                       "", "| row | status | epochs | best valid NDCG@10 (epoch) | last valid NDCG@10 | train s/epoch | "
                       "valid s (all users) |", "|---|---|---:|---|---:|---:|---:|"]
    for row in select_rows(preset, args, datasets):
        if not row["config"].get("resume_training"):
            continue
        dataset = datasets[row["dataset"]]
        path = os.path.join(run_dir({"resume_name": row["config"]["resume_name"], "model": row["model"],
                                     "dataset": dataset["recbole_name"], "genrec_cache_dir": dataset["cache_dir"]}),
                            "state.pth")
        if not os.path.isfile(path):
            lines.append(f"| {bench_row_label(row)} | not started | | | | | |")
            continue
        state = torch.load(path, map_location="cpu", weights_only=True)
        history = state["history"]
        curve = [{"epoch": v["epoch"] + 1, "ndcg@10": v["result"].get("ndcg@10")} for v in history["valid"]]
        epoch = best_epoch(history["valid"], bigger=True)  # the presets select on NDCG@10
        best = next((p for p in curve if p["epoch"] == epoch), None)
        seconds = [e["seconds"] for e in history["train"]]
        valid_s = [v["seconds"] for v in history["valid"]]  # one full-ranking validation each
        lines.append(f"| {bench_row_label(row)} | {'finished' if state['finished'] else 'training'} | "
                     f"{len(seconds)} | " + (f"{best['ndcg@10']:.4f} ({best['epoch']})" if best else "") + " | "
                     + (f"{curve[-1]['ndcg@10']:.4f}" if curve else "") + " | "
                     + (f"{sum(seconds) / len(seconds):.0f}" if seconds else "") + " | "
                     + (f"{sum(valid_s) / len(valid_s):.1f}" if valid_s else "") + " |")
        rows.append({"label": bench_row_label(row), "dataset": row["dataset"], "valid_curve": curve})
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, stem + "-progress")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    plotted = plot_valid_curves({"meta": meta, "rows": rows}, out + ".png")
    say("wrote " + out + ".md" + (", " + out + ".png" if plotted else ""))
    print("\n".join(lines), flush=True)
    return 0


def run_preset(preset, args, meta, stem):
    """Every row of a model preset; the reports are rewritten after each row (a killed run keeps its rows)."""
    start = time.perf_counter()
    datasets = resolve_datasets(preset, args)
    meta["datasets"] = datasets
    rows = select_rows(preset, args, datasets)
    if args.fresh:
        forget_resume_states(rows, datasets)
    earlier, stem = earlier_rows(args, stem, own_report=bool(preset.get("resume")))
    finished = {row_key(r): r for r in earlier}
    say(f"preset {args.preset}: {len(rows)} rows on {args.device}; writing {os.path.join(args.out, stem)}.*")

    def with_earlier(done):
        """Rows of this invocation after the earlier finished rows it did not select (another --models run)."""
        keys = {row_key(d) for d in done}
        return [r for r in earlier if row_key(r) not in keys] + list(done)

    def partial(done):
        meta["wall_s"] = time.perf_counter() - start
        meta["partial"] = f"{len(done)} of {len(rows)} rows"
        write_reports({"meta": meta, "rows": with_earlier(done)}, args.out, stem, plot=False)

    results = run_rows(rows, datasets, args, preset, on_row=partial, finished=finished)
    meta.pop("partial", None)
    meta["wall_s"] = time.perf_counter() - start
    report = {"meta": meta, "rows": with_earlier(results)}
    paths = write_reports(report, args.out, stem)
    meta["files"] = [os.path.relpath(p, BENCH_DIR) if p.startswith(BENCH_DIR) else p for p in paths.values()]
    print(markdown_report(report), flush=True)
    if args.update_readme:
        say("README updated" if update_readme(report) else "README has no results block for this preset")
    say("wrote " + ", ".join(paths.values()))
    return 0


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_worker":
        return worker(sys.argv[2], sys.argv[3])
    args = parse_args(argv)
    preset = PRESETS.get(args.preset, {"device": "cpu", "threads": 2, "jobs": 1, "description": args.preset})
    args.device = args.device or preset["device"]
    args.threads = args.threads or preset.get("threads", 2)
    import torch  # after the flags: --help and the worker's dispatch do not wait for it

    if args.make_bundle:  # built on this machine's CPU, for the GPU machine
        args.device = "cpu"
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device} asked for, but torch {torch.__version__} sees no CUDA device", file=sys.stderr)
        return 2
    now = datetime.datetime.now()
    stem = f"{args.preset}-{now:%Y-%m-%d_%H%M}" + (f"-{args.tag}" if args.tag else "")
    if preset.get("resume") and not args.fresh and args.resume is None:
        args.resume = "latest"
    if preset.get("resume"):  # one report that every invocation extends
        stem = args.preset + (f"-u{args.max_users}" if args.max_users else "") + (f"-{args.tag}" if args.tag else "")
    meta = run_meta(args, preset, now)
    if args.preset in SCRIPT_PRESETS:
        return run_script_preset(args.preset, args, meta, stem)
    if args.make_bundle:
        return make_bundle(preset, args)
    if args.bundle and args.max_users:
        print(f"--bundle {args.bundle} holds the embeddings and codes of the full datasets, so it cannot serve a "
              f"--max-users {args.max_users} run: drop --bundle for a dry run (it builds what it needs here), or "
              "drop --max-users on the GPU machine", file=sys.stderr)
        return 2
    if args.bundle:
        use_bundle(args)
    if args.progress:
        return write_progress(preset, args, meta, stem)
    return run_preset(preset, args, meta, stem)


if __name__ == "__main__":
    sys.exit(main())
