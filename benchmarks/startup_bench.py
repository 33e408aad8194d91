"""Start-up time of the command line, old code against new, side by side in one run.

    python benchmarks/startup_bench.py                     # old = git commit 7531567 (before the fast start-up)
    python benchmarks/startup_bench.py --old-commit <sha> --runs 5 --budget-s 600

For each tree (the old commit, exported with ``git archive`` into a temporary folder, and this checkout) and each
command (``--help``, ``--list-models``, a misspelt model name), ``python run_recbole_genrec.py ...`` runs ``--runs``
times in a fresh interpreter, alternating old and new so that both see the same machine load. Wall seconds (median,
min, max) and whether torch was imported go to ``benchmarks/results/startup-<date>.{md,json}``, with the machine's
load average. The target (under 3 s on an idle machine) is about the new tree; on a loaded machine the
ratio old/new is the comparable number. Stops starting new runs once ``--budget-s`` is spent.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import ROOT, cpu_name, git_commit, load_average  # noqa: E402

COMMANDS = {
    "--help": ["--help"],
    "--list-models": ["--list-models"],
    "misspelt model": ["--model=TIGR", "--dataset=ml-100k"],
}
PROBE = ("import runpy, sys, time; sys.argv = ['run_recbole_genrec.py'] + sys.argv[1:]\n"
         "try:\n    runpy.run_path('run_recbole_genrec.py', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "print('TORCH_IMPORTED=%s' % ('torch' in sys.modules), file=sys.stderr)\n")


def export_commit(commit, folder):
    """``git archive <commit>`` of this repository unpacked into ``folder`` (no worktree is created)."""
    archive = os.path.join(folder, "old.tar")
    with open(archive, "wb") as f:
        subprocess.run(["git", "archive", commit], cwd=ROOT, stdout=f, check=True, timeout=120)
    with tarfile.open(archive) as tar:
        tar.extractall(os.path.join(folder, "old"), filter="data")
    return os.path.join(folder, "old")


def time_once(tree, args, timeout):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=tree, capture_output=True, text=True,
                          timeout=timeout, env=env)
    seconds = time.perf_counter() - start
    return seconds, "TORCH_IMPORTED=True" in proc.stderr


def summarize(samples):
    seconds = [s for s, _ in samples]
    return {"runs": len(seconds), "median_s": round(statistics.median(seconds), 3), "min_s": round(min(seconds), 3),
            "max_s": round(max(seconds), 3), "imports_torch": any(t for _, t in samples)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-commit", default="7531567")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=900.0)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_before, new_commit = load_average(), git_commit()  # the code as it was when the runs started
    samples = {(tree, name): [] for tree in ("old", "new") for name in COMMANDS}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"old": export_commit(args.old_commit, tmp), "new": ROOT}
        for run in range(args.runs):
            for name, cmd in COMMANDS.items():
                for tree in ("old", "new"):
                    if time.perf_counter() - started > args.budget_s:
                        break
                    samples[(tree, name)].append(time_once(trees[tree], cmd, timeout=300))
                    print(f"run {run + 1}/{args.runs} {tree:>3} {name}: {samples[(tree, name)][-1][0]:.2f} s",
                          flush=True)
    rows = []
    for name in COMMANDS:
        old, new = samples[("old", name)], samples[("new", name)]
        if not old or not new:
            continue
        o, n = summarize(old), summarize(new)
        rows.append({"command": name, "old": o, "new": n, "speedup": round(o["median_s"] / n["median_s"], 1)})
    stamp = f"{datetime.datetime.now():%Y-%m-%d_%H%M}"
    meta = {"date": stamp, "command": " ".join(["python", "benchmarks/startup_bench.py"] + (argv or sys.argv[1:])),
            "old_commit": args.old_commit, "new_commit": new_commit, "cpu": cpu_name(), "cpus": os.cpu_count(),
            "load_average_before": load_before, "load_average_after": load_average(), "python": sys.version.split()[0]}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"startup-{stamp}")
    with open(path + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    lines = [f"# Start-up time of run_recbole_genrec.py ({stamp})", "",
             f"Command: `{meta['command']}`  ", f"Old: `{args.old_commit}`; new: `{meta['new_commit']}`  ",
             f"Machine: {meta['cpu']}, {meta['cpus']} CPUs, load average {load_before} before, "
             f"{meta['load_average_after']} after (not idle: other jobs were running)", "",
             "| command | old median s (min-max) | old imports torch | new median s (min-max) | new imports torch "
             "| old / new |", "|---|---|---|---|---|---|"]
    for r in rows:
        o, n = r["old"], r["new"]
        lines.append(f"| `{r['command']}` | {o['median_s']} ({o['min_s']}-{o['max_s']}) | {o['imports_torch']} | "
                     f"{n['median_s']} ({n['min_s']}-{n['max_s']}) | {n['imports_torch']} | {r['speedup']}x |")
    lines += ["", f"{rows[0]['new']['runs'] if rows else 0} runs per cell, each a fresh interpreter "
              "(`python run_recbole_genrec.py ...`), old and new alternating."]
    with open(path + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
