"""The preset's rows after the CLI's filters and overrides, each run in its own subprocess (``run.py _worker``)
under the row timeout and the preset's total budget."""

import concurrent.futures
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from benchmarks.harness.common import PROGRESS, ROOT, RUN_SCRIPT, print_lock, say
from benchmarks.presets import COMMON, PROTOCOLS, protocol_of

# models RecBole trains in one pass (TraditionalTrainer: epochs forced to 1); --epochs must not move their eval_step
# past that one epoch, or no checkpoint is ever saved
ONE_PASS_MODELS = {"Pop", "ItemKNN", "EASE", "SLIMElastic", "ADMMSLIM", "NCEPLRec"}


def select_rows(preset, args, datasets):
    rows = copy.deepcopy(preset["rows"])
    if args.models:
        wanted = args.models.split(",")
        known = {r["model"] for r in rows}
        rows = [r for r in rows if r["model"] in wanted]
        for model in wanted:  # a model outside the preset: add it with default settings
            if model not in known:
                rows += [{"model": model, "dataset": d, "protocol": protocol_of(model), "config": {}}
                         for d in datasets]
    template = [r for r in rows if r["dataset"] == rows[0]["dataset"]] if rows else []
    for name in datasets:  # a dataset outside the preset: the preset's rows of its first dataset
        if not any(r["dataset"] == name for r in rows):
            rows += [dict(copy.deepcopy(r), dataset=name) for r in template]
    rows = [r for r in rows if r["dataset"] in datasets]
    if args.no_ablations:
        rows = [r for r in rows if not r.get("tag")]
    overrides = {}
    if args.set:
        from recbole_genrec.cli import parse_value
    for item in args.set:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key] = parse_value(value, f"--set {key}")  # as run_recbole_genrec.py reads --key=value
    for row in rows:
        if preset.get("resume_rows"):  # every row resumes to the epoch from <cache>/runs/<resume_name>/
            row["config"].update({"resume_training": True, "resume_name": resume_name(args.preset, row, datasets)})
        if args.epochs is not None and row["model"] not in ONE_PASS_MODELS:
            row["config"].update({"epochs": args.epochs, "eval_step": args.epochs})
            for key in ("prorec_stage1_epochs", "collab_teacher_epochs"):
                row["config"][key] = min(row["config"].get(key, args.epochs), max(args.epochs, 1))
        row["config"].update(overrides)
    return rows


def resume_name(preset_name, row, datasets):
    """The folder of a row's resume state: preset, dataset (and its user cut) and row label."""
    users = datasets[row["dataset"]]["max_users"]
    return f"{preset_name}-{row['dataset']}" + (f"-u{users}" if users else "") + f"-{row_label(row)}"


def row_label(row):
    return row["model"] + (f"[{row['tag']}]" if row.get("tag") else "")


def build_config(row, dataset, device, threads):
    config = copy.deepcopy(COMMON)
    config.update(copy.deepcopy(PROTOCOLS[row["protocol"]]))
    config.update(copy.deepcopy(row["config"]))
    config["data_path"] = dataset["data_path"]
    if dataset["cache_dir"]:
        config["genrec_cache_dir"] = dataset["cache_dir"]
    config["use_gpu"] = device.startswith("cuda")
    if config["use_gpu"]:
        config["gpu_id"] = device.split(":", 1)[1] if ":" in device else "0"
    else:
        config["enable_amp"] = False  # autocast on CPU (bf16) is slower than fp32 on most CPUs
        config["enable_scaler"] = False
    config["worker"] = 0
    return config


def run_row(row, dataset, args, timeout_s, log_dir):
    """Run one row in a subprocess; returns the result dict (``status`` ok / error / timeout)."""
    label = f"{row_label(row)} on {row['dataset']}"
    base = {"model": row["model"], "tag": row.get("tag"), "label": row_label(row), "dataset": row["dataset"],
            "protocol": row["protocol"], "max_users": dataset["max_users"], "config": row["config"]}
    work = tempfile.mkdtemp(prefix="bench-row-")
    spec = {"model": row["model"], "dataset": dataset["recbole_name"], "label": label, "threads": args.threads,
            "config_files": dataset["config_files"], "config": build_config(row, dataset, args.device, args.threads)}
    spec["config"]["checkpoint_dir"] = os.path.join(work, "saved")
    spec_path, result_path = os.path.join(work, "spec.json"), os.path.join(work, "result.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    log_path = os.path.join(log_dir, f"{row['dataset']}-{row_label(row)}.log".replace("/", "_"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not args.device.startswith("cuda"):
        env.update({k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
        if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
            env["OMP_WAIT_POLICY"] = "PASSIVE"  # spinning threads stall every op of a row on a shared CPU
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, RUN_SCRIPT, "_worker", spec_path, result_path]
    say(f"start {label} (timeout {timeout_s:.0f}s, log {log_path})")
    start = time.perf_counter()
    status = "ok"
    tail = []
    with open(log_path, "w") as log:
        # cwd: the row's own folder, where RecBole writes log/ (removed with it), not the checkout
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        timer = threading.Timer(timeout_s, lambda: _kill(proc))
        timer.start()
        try:
            for line in proc.stdout:
                log.write(line)
                tail = (tail + [line.rstrip()])[-40:]
                if line.startswith(PROGRESS):
                    with print_lock:
                        print(line.rstrip(), flush=True)
            proc.wait()
        finally:
            timer.cancel()
    wall = time.perf_counter() - start
    result = dict(base)
    if os.path.isfile(result_path):
        with open(result_path) as f:
            result.update(json.load(f))
    if wall >= timeout_s - 1 and proc.returncode != 0:
        status = "timeout"
        result["error"] = f"killed after {timeout_s:.0f}s (row timeout)"
    elif proc.returncode != 0 or result.get("status") != "ok":
        status = "error"
        result.setdefault("error", "worker exited with code %s" % proc.returncode)
        result["log_tail"] = "\n".join(tail[-25:])
    result["status"] = status
    result["row_wall_s"] = round(wall, 2)
    if args.keep_checkpoints and os.path.isdir(os.path.join(work, "saved")):
        os.makedirs(args.keep_checkpoints, exist_ok=True)
        for name in os.listdir(os.path.join(work, "saved")):
            if name.endswith(".pth"):
                kept = os.path.join(args.keep_checkpoints, f"{row['dataset']}-{row_label(row)}.pth")
                shutil.move(os.path.join(work, "saved", name), kept)
                result["checkpoint"] = kept
    shutil.rmtree(work, ignore_errors=True)
    shown = result.get("test_result") or {}
    say(f"done  {label}: {status} in {wall:.0f}s"
        + (f", NDCG@10={shown.get('ndcg@10', float('nan')):.4f}" if shown else "")
        + (f" -- {result.get('error', '')[:200]}" if status != "ok" else ""))
    return result


def _amp_failure(result, row, args):
    """A CUDA row with autocast that failed on a dtype mismatch (worth one retry in fp32)."""
    if result.get("status") != "error" or not row["config"].get("enable_amp") or not args.device.startswith("cuda"):
        return False
    text = f"{result.get('error', '')}\n{result.get('log_tail', '')}"
    return re.search(r"Half|BFloat16|dtype|scalar type|autocast|not implemented for", text) is not None


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def row_key(row):
    """Identity of a row across invocations (``--resume``): label, dataset, its users and its config."""
    return json.dumps([row_label(row) if "label" not in row else row["label"], row["dataset"], row.get("max_users"),
                       row.get("config")], sort_keys=True, default=str)


def run_rows(rows, datasets, args, preset, on_row=None, finished=None):
    """Run the rows (``jobs`` at a time) under the per-row timeout and the preset's total budget.

    ``finished``: ``{row_key: result}`` of an earlier invocation (``--resume``); those rows are not run again."""
    log_dir = tempfile.mkdtemp(prefix="bench-logs-")
    budget = args.total_budget if args.total_budget is not None else preset.get("total_budget_s")
    start = time.perf_counter()
    results = [None] * len(rows)

    def one(i):
        row = rows[i]
        dataset = datasets[row["dataset"]]
        base = {"model": row["model"], "tag": row.get("tag"), "label": row_label(row), "dataset": row["dataset"],
                "protocol": row["protocol"], "max_users": dataset["max_users"], "config": row["config"]}
        if dataset["error"]:
            return dict(base, status="skipped", error=dataset["error"])
        previous = (finished or {}).get(row_key(base))
        if previous is not None:
            say(f"done  {row_label(row)} on {row['dataset']}: finished in an earlier run (--resume), not rerun")
            return dict(previous, resumed=True)
        timeout = args.row_timeout or preset["row_timeout_s"]
        if budget:
            left = budget - (time.perf_counter() - start)
            if left < min(60, timeout):
                say(f"skip  {row_label(row)} on {row['dataset']}: total budget of {budget}s used up")
                return dict(base, status="skipped", error=f"total budget of {budget}s used up before it started")
            timeout = min(timeout, left)
        try:
            result = run_row(row, dataset, args, timeout, log_dir)
            if _amp_failure(result, row, args):  # e.g. a sparse kernel without a half-precision version
                say(f"retry {row_label(row)} on {row['dataset']} without enable_amp: {result['error'][:160]}")
                retry = dict(copy.deepcopy(row), config=dict(row["config"], enable_amp=False, enable_scaler=False))
                left = timeout - result["row_wall_s"]
                if left > 60:
                    first_error = result["error"]
                    result = run_row(retry, dataset, args, left, log_dir)
                    result["amp_fallback"] = first_error
            return result
        except Exception as err:  # the harness itself failed for this row: record it, go on
            return dict(base, status="error", error=f"{type(err).__name__}: {err}", log_tail=traceback.format_exc())

    jobs = max(1, args.jobs or preset.get("jobs", 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(one, i): i for i in range(len(rows))}
        for future in concurrent.futures.as_completed(futures):
            results[futures[future]] = future.result()
            if on_row is not None:  # partial reports: a run killed from outside still leaves its finished rows
                on_row([r for r in results if r is not None])
    say(f"all rows done in {time.perf_counter() - start:.0f}s (logs in {log_dir})")
    return results
