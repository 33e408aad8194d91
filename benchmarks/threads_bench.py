"""The README's first command (NGCF on ml-100k) under CPU contention, with recbole-genrec's threading defaults and
without them (recbole_genrec/threads.py).

    nice -n 10 python benchmarks/threads_bench.py                  # 1 busy process, 1 repeat, 15-minute budget
    nice -n 10 python benchmarks/threads_bench.py --repeats 2 --budget-s 1200

Settings, run one after the other in each repeat (in rotating order, so a change in the machine's load does not
always hit the same one):

* ``defaults off``: what ran before threads.py -- ``GOMP_SPINCOUNT=300000`` (GNU OpenMP's own default spin count,
  set explicitly so that ``import recbole_genrec`` leaves the wait policy alone: threads spin before they sleep)
  and torch's default intra-op thread count;
* ``recbole-genrec defaults``: nothing set: ``OMP_WAIT_POLICY=PASSIVE`` and threads = the CPUs this process may use;
* ``OMP_NUM_THREADS=1``: the manual workaround, for reference.

Contention: ``--stress`` Python busy loops (default 1, i.e. one of two cores taken) run next to every measurement,
at the same niceness.  Each run is the README command with ``--epochs=1`` in a temporary folder (its ``saved/`` and
``log/`` land there), limited by ``--timeout-s``; the epoch's training time is read from RecBole's log line.
Results are appended after every run to ``--out`` (``.json``, ``.md``), and a rerun with the same ``--out`` skips
the runs it already has (resumable).
"""

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import ROOT, cpu_name, git_commit, library_versions, load_average  # noqa: E402

SETTINGS = {
    "defaults off": {"GOMP_SPINCOUNT": "300000"},
    "recbole-genrec defaults": {},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
}
USER_KNOBS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
COMMAND = [sys.executable, os.path.join(ROOT, "run_recbole_genrec.py"), "--model=NGCF", "--dataset=ml-100k"]
EPOCH_LINE = re.compile(r"epoch 0 training \[time: ([0-9.]+)s")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def environment(setting):
    env = {k: v for k, v in os.environ.items() if k not in USER_KNOBS}
    env.update(SETTINGS[setting])
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")  # this checkout's recbole_genrec
    return env


def threads_seen(setting):
    """What ``import recbole_genrec`` leaves: torch's intra-op threads and the OpenMP wait policy."""
    code = "import os, recbole_genrec, torch; print(torch.get_num_threads(), os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run([sys.executable, "-c", code], env=environment(setting), capture_output=True, text=True,
                         timeout=300, cwd=tempfile.gettempdir())
    threads, policy = out.stdout.split()
    return {"threads": int(threads), "OMP_WAIT_POLICY": None if policy == "None" else policy}


def measure(setting, epochs, timeout_s):
    with tempfile.TemporaryDirectory() as folder:
        command = COMMAND + [f"--epochs={epochs}", "--show_progress=False", f"--checkpoint_dir={folder}/saved"]
        start = time.perf_counter()
        try:
            proc = subprocess.run(command, env=environment(setting), capture_output=True, text=True,
                                  timeout=timeout_s, cwd=folder)
        except subprocess.TimeoutExpired as err:  # the epoch may have finished before the evaluation ran out
            partial = "".join(x.decode() if isinstance(x, bytes) else x for x in (err.stdout, err.stderr) if x)
            epoch = EPOCH_LINE.search(ANSI.sub("", partial))
            return {"wall_s": None, "epoch_s": float(epoch.group(1)) if epoch else None,
                    "status": f"timed out after {timeout_s} s"}
        wall = time.perf_counter() - start
    epoch = EPOCH_LINE.search(ANSI.sub("", proc.stdout + proc.stderr))
    status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-300:]}"
    return {"wall_s": round(wall, 1), "epoch_s": float(epoch.group(1)) if epoch else None, "status": status}


def write(results, out):
    with open(out + ".json", "w") as f:
        json.dump(results, f, indent=2)
    rows = ["| setting | torch threads | OMP_WAIT_POLICY | repeat | epoch 0 training (s) | whole command (s) | status |",
            "|---|---|---|---|---|---|---|"]
    for run in results["runs"]:
        seen = results["settings"][run["setting"]]
        rows.append(f"| {run['setting']} | {seen['threads']} | {seen['OMP_WAIT_POLICY'] or 'unset'} | {run['repeat']} "
                    f"| {run['epoch_s'] if run['epoch_s'] is not None else '-'} "
                    f"| {run['wall_s'] if run['wall_s'] is not None else '-'} | {run['status']} |")
    summary = []
    for setting in SETTINGS:
        epochs = [r["epoch_s"] for r in results["runs"] if r["setting"] == setting and r["epoch_s"] is not None]
        if epochs:
            summary.append(f"| {setting} | {min(epochs):.1f} | {statistics.median(epochs):.1f} | {len(epochs)} |")
    text = [
        "# Threads under contention: the README's first command (NGCF, ml-100k, 1 epoch)", "",
        f"Command: `{results['command']}`", "",
        f"Measured: `python {os.path.relpath(COMMAND[1], ROOT)} {' '.join(COMMAND[2:])} --epochs={results['epochs']}` "
        f"with {results['stress']} busy Python "
        f"process(es) beside it; machine: {results['machine']['cpu']}, {results['machine']['cpus']} CPUs, load "
        f"average before {results['machine']['load_before']}, after {results['machine'].get('load_after')} (other "
        "processes share the machine: the busy loop is not the only contention). The settings of one repeat run "
        "one after the other, in an order that rotates between repeats; a run that timed out counts in the summary "
        "only if its epoch had finished.", "",
        "| setting | fastest epoch (s) | median epoch (s) | runs |", "|---|---|---|---|", *summary, "",
        *rows, "",
        f"commit {results['commit']}; {results['versions']}", "",
    ]
    with open(out + ".md", "w") as f:
        f.write("\n".join(text))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stress", type=int, default=1, help="busy Python processes beside each run")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--timeout-s", type=int, default=420, help="limit of one run")
    parser.add_argument("--budget-s", type=int, default=900, help="no new run starts after this")
    parser.add_argument("--out", default=os.path.join(
        ROOT, "benchmarks", "results", f"threads-{datetime.date.today().isoformat()}"))
    args = parser.parse_args()
    began = time.time()
    command = "python " + " ".join(os.path.relpath(a, ROOT) if a.startswith(ROOT) else a for a in sys.argv)
    if os.path.exists(args.out + ".json"):  # resume: keep the runs there, record this command too
        with open(args.out + ".json") as f:
            results = json.load(f)
        if command not in results["command"].split("; then "):
            results["command"] += "; then " + command
    else:
        results = {"command": command,
                   "epochs": args.epochs, "stress": args.stress, "runs": [],
                   "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "load_before": load_average()},
                   "commit": git_commit(), "versions": library_versions(),
                   "settings": {s: threads_seen(s) for s in SETTINGS}}
        write(results, args.out)
    done = {(r["setting"], r["repeat"]) for r in results["runs"]}
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.stress)]
    try:
        names = list(SETTINGS)
        for repeat in range(args.repeats):
            order = names[repeat % len(names):] + names[: repeat % len(names)]
            for setting in order:
                if (setting, repeat) in done:
                    continue
                if time.time() - began > args.budget_s:
                    print(f"budget of {args.budget_s} s spent; rerun the same command to continue")
                    return
                print(f"repeat {repeat}: {setting} ...", flush=True)
                run = dict(setting=setting, repeat=repeat, **measure(setting, args.epochs, args.timeout_s))
                print(f"  {run}", flush=True)
                results["runs"].append(run)
                results["machine"]["load_after"] = load_average()
                write(results, args.out)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    print(f"wrote {args.out}.md / .json")


if __name__ == "__main__":
    main()
