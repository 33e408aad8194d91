"""One entry point for every benchmark of recbole-genrec: models side by side, decoding, tokenizers.

    python benchmarks/run.py --preset cpu-quick                      # every model, ml-100k + amazon-beauty (< 30 min)
    python benchmarks/run.py --preset cpu-full                       # ~2 hours on 2 cores
    python benchmarks/run.py --preset gpu --device cuda --out $OUT   # one H100, one 10-minute call
    python benchmarks/run.py --preset smoke                          # tiny test data, Pop + BPR, seconds
    python benchmarks/run.py --preset decoding                       # benchmarks/decoding_bench.py
    python benchmarks/run.py --preset tokenizers                     # benchmarks/tokenizers_bench.py
    python benchmarks/run.py --preset gpu --device cpu --max-users 300 --epochs 1   # dry run of the gpu preset

Every model row runs in its own subprocess (``run.py _worker``) through ``recbole_genrec.run_recbole_genrec``, so
peak memory is the row's own and a row that fails or runs past its timeout is recorded and skipped. A worker
records the test metrics, train time per epoch, total time, peak RSS (``resource.getrusage``) and peak CUDA memory
(``torch.cuda.max_memory_allocated``), test-evaluation users per second, parameters, and the preprocessing hook's
summary (embedding / code timings, cache decisions and the semantic-ID diagnostics of ``diagnostics-<key>.json``).
The run writes ``<out>/<preset>-<date>.{json,md,png}`` (at most 3 files: fits the device's $OUT limits).

``--max-users N`` keeps the first N users (in file order) of every dataset: a truncated copy, named
``<dataset>-u<N>`` (RecBole reads ``ml-100k`` from its own folder whatever ``data_path`` says), is written under
``~/.cache/recbole_genrec/bench-data/``; the dataset yaml files that RecBole and the plugin would load for
``<dataset>`` are passed along as config files.
"""

import argparse
import concurrent.futures
import copy
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from machine import cpu_name, git_commit, library_versions, load_average  # noqa: E402
from presets import COMMON, PRESETS, PROTOCOL_NAMES, PROTOCOLS, SCRIPT_PRESETS  # noqa: E402

PROGRESS = "[bench]"
# models RecBole trains in one pass (TraditionalTrainer: epochs forced to 1); --epochs must not move their eval_step
# past that one epoch, or no checkpoint is ever saved
ONE_PASS_MODELS = {"Pop", "ItemKNN", "EASE", "SLIMElastic", "ADMMSLIM", "NCEPLRec"}
SUMMARY_METRICS = ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10", "hit@10",
                   "itemcoverage@10"]
METRIC_LABELS = ["R@5", "N@5", "R@10", "N@10", "R@20", "N@20", "MRR@10", "Hit@10", "Cov@10"]
_print_lock = threading.Lock()


def say(message):
    with _print_lock:
        print(f"{PROGRESS} {message}", flush=True)


# ============================================================================================ environment
def default_cache_root():
    root = os.environ.get("RECBOLE_GENREC_CACHE") or os.path.join("~", ".cache", "recbole_genrec")
    return os.path.abspath(os.path.expanduser(root))


def machine_info(device):
    import torch

    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average": load_average(),
        "device": device,
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return info


# ============================================================================================ data
class DatasetMissing(Exception):
    pass


def find_dataset(name, data_path):
    """Folder holding ``<name>.inter``: ``<data_path>/<name>``, tests/data/<name>, or RecBole's bundled copy."""
    import recbole

    candidates = [os.path.join(data_path, name), os.path.join(ROOT, "tests", "data", name),
                  os.path.join(os.path.dirname(recbole.__file__), "dataset_example", name)]
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, f"{name}.inter")):
            return os.path.abspath(folder)
    raise DatasetMissing(
        f"dataset '{name}' not found (looked for {name}.inter in: {', '.join(os.path.abspath(c) for c in candidates)});"
        f" pass --data-path=<folder containing {name}/>"
    )


def truncate_dataset(name, folder, max_users, work_root):
    """Copy of dataset ``name`` keeping the first ``max_users`` users (file order), as dataset ``<name>-u<N>``.

    The copy gets its own dataset name because RecBole always reads ``ml-100k`` from its bundled folder, whatever
    ``data_path`` says. ``.item`` / ``.user`` keep only the rows of the kept items / users; other files are linked.
    Returns ``(data_path, alias)``.
    """
    alias = f"{name}-u{max_users}"
    target = os.path.join(work_root, alias)
    inter = os.path.join(target, f"{alias}.inter")
    source_inter = os.path.join(folder, f"{name}.inter")
    stamp = f"{os.path.realpath(source_inter)}:{os.path.getsize(source_inter)}:{max_users}"
    stamp_file = os.path.join(target, ".source")
    if os.path.isfile(inter) and os.path.isfile(stamp_file) and open(stamp_file).read() == stamp:
        return work_root, alias
    os.makedirs(target, exist_ok=True)
    kept, n_rows = set(), 0
    tmp = inter + f".{os.getpid()}.tmp"
    with open(source_inter, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
        header = src.readline()
        dst.write(header)
        columns = [c.split(":")[0] for c in header.rstrip("\n").split("\t")]
        uid = columns.index("user_id")
        for line in src:
            user = line.split("\t", uid + 1)[uid]
            if user not in kept:
                if len(kept) >= max_users:
                    continue
                kept.add(user)
            dst.write(line)
            n_rows += 1
    os.replace(tmp, inter)
    items = _kept_items(inter)
    n_items = _filter_rows(os.path.join(folder, f"{name}.item"), os.path.join(target, f"{alias}.item"), "item_id",
                           items)
    _filter_rows(os.path.join(folder, f"{name}.user"), os.path.join(target, f"{alias}.user"), "user_id", kept)
    for entry in os.listdir(folder):
        if entry.startswith(name + ".") and not entry.endswith((".inter", ".item", ".user")):
            link = os.path.join(target, alias + entry[len(name):])
            if not os.path.lexists(link):
                os.symlink(os.path.join(folder, entry), link)
    with open(stamp_file, "w") as f:
        f.write(stamp)
    say(f"{name}: kept the first {len(kept)} users ({n_rows} interactions, {n_items} item rows) as {alias} "
        f"in {target}")
    return work_root, alias


def _kept_items(inter):
    with open(inter, encoding="utf-8") as f:
        columns = [c.split(":")[0] for c in f.readline().rstrip("\n").split("\t")]
        iid = columns.index("item_id")
        return {line.rstrip("\n").split("\t")[iid] for line in f}


def _filter_rows(source, target, field, keep):
    """Copy the lines of ``<dataset>.item`` / ``.user`` whose ``field`` is in ``keep`` (RecBole would otherwise keep
    every user of the user file, and encode the text of every item of the item file).

    Lines are copied byte for byte (the shipped atomic files hold one entity per line)."""
    if not os.path.isfile(source):
        return 0
    n = 0
    tmp = target + f".{os.getpid()}.tmp"
    with open(source, encoding="utf-8", newline="") as src, open(tmp, "w", encoding="utf-8", newline="") as dst:
        header = src.readline()
        dst.write(header)
        iid = [c.split(":")[0] for c in header.rstrip("\r\n").split("\t")].index(field)
        for line in src:
            if line.rstrip("\r\n").split("\t", iid + 1)[iid] in keep:
                dst.write(line)
                n += 1
    os.replace(tmp, target)
    return n


def resolve_datasets(preset, args):
    """``{name: {"data_path", "cache_dir", "max_users", "error"}}`` for the preset's datasets."""
    wanted = preset["datasets"]
    if args.datasets:
        wanted = {name: wanted.get(name, {"max_users": None}) for name in args.datasets.split(",")}
    resolved = {}
    for name, spec in wanted.items():
        max_users = args.max_users if args.max_users is not None else spec.get("max_users")
        entry = {"max_users": max_users, "data_path": None, "cache_dir": None, "error": None, "recbole_name": name,
                 "config_files": []}
        # the dataset yaml files RecBole and the plugin load by dataset name: passed explicitly to a renamed copy
        import recbole

        yaml_files = [os.path.join(os.path.dirname(recbole.__file__), "properties", "dataset", f"{name}.yaml"),
                      os.path.join(ROOT, "properties", "dataset", f"{name}.yaml")]
        try:
            folder = find_dataset(name, args.data_path)
            if max_users:
                entry["data_path"], entry["recbole_name"] = truncate_dataset(
                    name, folder, max_users, os.path.join(default_cache_root(), "bench-data"))
                entry["cache_dir"] = args.cache_dir
                entry["config_files"] = [f for f in yaml_files if os.path.isfile(f)]
            else:
                entry["data_path"] = os.path.dirname(folder)
                entry["cache_dir"] = args.cache_dir
        except DatasetMissing as err:
            entry["error"] = str(err)
            say(f"SKIP {name}: {err}")
        resolved[name] = entry
    return resolved


# ============================================================================================ rows
def parse_value(text):
    import yaml

    return yaml.safe_load(text)


def select_rows(preset, args, datasets):
    rows = copy.deepcopy(preset["rows"])
    if args.models:
        wanted = args.models.split(",")
        known = {r["model"] for r in rows}
        rows = [r for r in rows if r["model"] in wanted]
        for model in wanted:  # a model outside the preset: add it with default settings
            if model not in known:
                from presets import protocol_of

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
    for item in args.set:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key] = parse_value(value)
    for row in rows:
        if args.epochs is not None and row["model"] not in ONE_PASS_MODELS:
            row["config"].update({"epochs": args.epochs, "eval_step": args.epochs})
            for key in ("prorec_stage1_epochs", "collab_teacher_epochs"):
                row["config"][key] = min(row["config"].get(key, args.epochs), max(args.epochs, 1))
        row["config"].update(overrides)
    return rows


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
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "_worker", spec_path, result_path]
    say(f"start {label} (timeout {timeout_s:.0f}s, log {log_path})")
    start = time.perf_counter()
    status = "ok"
    tail = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        timer = threading.Timer(timeout_s, lambda: _kill(proc))
        timer.start()
        try:
            for line in proc.stdout:
                log.write(line)
                tail = (tail + [line.rstrip()])[-40:]
                if line.startswith(PROGRESS):
                    with _print_lock:
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
    import re

    if result.get("status") != "error" or not row["config"].get("enable_amp") or not args.device.startswith("cuda"):
        return False
    text = f"{result.get('error', '')}\n{result.get('log_tail', '')}"
    return re.search(r"Half|BFloat16|dtype|scalar type|autocast|not implemented for", text) is not None


def _kill(proc):
    import signal

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


# ============================================================================================ worker
def _peak_rss_mib():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20


def _summarize_preprocess(summary, wall):
    if summary is None:
        return None
    out = {"wall_s": round(wall, 3), "features": summary.get("features"), "cache": summary.get("cache"),
           "timings": summary.get("timings"), "n_items": summary.get("n_items"),
           "embedding_dim": summary.get("embedding_dim"), "codebook_sizes": summary.get("codebook_sizes")}
    diag = summary.get("diagnostics")
    if diag:
        out["diagnostics"] = {k: diag.get(k) for k in ("method", "collision", "codebook_sizes", "usage", "perplexity",
                                                        "max_items_per_prefix", "collision_rate_before",
                                                        "recon_error", "n_items", "n_unique_codes",
                                                        "levels_after_collision_handling", "timings")}
    return out


def _jsonable(value):
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"array{list(value.shape)}"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def worker(spec_path, result_path):
    """Body of one row: ``run_recbole_genrec`` with timing hooks; writes ``result.json``."""
    t0 = time.perf_counter()
    with open(spec_path) as f:
        spec = json.load(f)
    label = spec["label"]
    out = {"status": "error"}
    try:
        import torch

        if spec["config"].get("use_gpu") is False:
            torch.set_num_threads(int(spec["threads"]))
        import recbole_genrec
        from recbole_genrec import quick_start
        from recbole_genrec.preprocess import hook

        state = {"evals": [], "trained_epoch_s": [], "trainer": None}
        prepare_features = hook.prepare_features

        def timed_prepare(config, *a, **k):
            start = time.perf_counter()
            summary = prepare_features(config, *a, **k)
            state["preprocess"] = _summarize_preprocess(summary, time.perf_counter() - start)
            return summary

        hook.prepare_features = timed_prepare
        timed_epochs = quick_start._timed_epochs

        def instrument(trainer):
            state["trainer"] = trainer
            state["setup_s"] = time.perf_counter() - t0
            train_epoch, evaluate = trainer._train_epoch, trainer.evaluate
            n_epochs = trainer.epochs

            def train(train_data, epoch_idx, *a, **k):
                if getattr(trainer, "skips_epoch", lambda _: False)(epoch_idx):  # over train_time_budget_s
                    return train_epoch(train_data, epoch_idx, *a, **k)
                start = time.perf_counter()
                loss = train_epoch(train_data, epoch_idx, *a, **k)
                seconds = time.perf_counter() - start
                state["trained_epoch_s"].append(seconds)
                shown = loss if not isinstance(loss, tuple) else sum(loss)
                say(f"  {label}: epoch {epoch_idx + 1}/{n_epochs} {seconds:.1f}s loss {float(shown):.4f}")
                return loss

            def timed_evaluate(eval_data, *a, **k):
                start = time.perf_counter()
                result = evaluate(eval_data, *a, **k)
                seconds = time.perf_counter() - start
                users = getattr(eval_data, "sample_size", None)
                ndcg = (result or {}).get("ndcg@10")
                state["evals"].append({"seconds": seconds, "users": users, "epoch": len(state["trained_epoch_s"]),
                                       "ndcg@10": float(ndcg) if ndcg is not None else None})
                say(f"  {label}: evaluated {users} users in {seconds:.1f}s"
                    + (f", NDCG@10 {float(ndcg):.4f}" if ndcg is not None else ""))
                return result

            trainer._train_epoch, trainer.evaluate = train, timed_evaluate
            timed_epochs(trainer)

        quick_start._timed_epochs = instrument
        if spec["config"].get("use_gpu") and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        result = recbole_genrec.run_recbole_genrec(
            model=spec["model"], dataset=spec["dataset"], config_file_list=spec["config_files"] or None,
            config_dict=spec["config"], saved=True
        )
        test_eval = state["evals"][-1] if state["evals"] else {}
        trainer = state["trainer"]
        out.update({
            "status": "ok",
            "test_result": {k: float(v) for k, v in (result.get("test_result") or {}).items()},
            "best_valid_result": {k: float(v) for k, v in (result.get("best_valid_result") or {}).items()},
            "params": result.get("params"),
            "epochs": len(state["trained_epoch_s"]),
            # every validation (the last evaluation is the test): epochs trained so far and NDCG@10
            "valid_curve": [{"epoch": e["epoch"], "ndcg@10": e["ndcg@10"], "seconds": round(e["seconds"], 1)}
                            for e in state["evals"][:-1]],
            "train_s_per_epoch": (sum(state["trained_epoch_s"]) / len(state["trained_epoch_s"])
                                  if state["trained_epoch_s"] else None),
            "train_s": result.get("train_seconds"),
            "setup_s": state.get("setup_s"),
            "eval_s": test_eval.get("seconds"),
            "eval_users": test_eval.get("users"),
            "eval_users_per_s": (test_eval["users"] / test_eval["seconds"]
                                 if test_eval.get("users") and test_eval.get("seconds") else None),
            "preprocess": state.get("preprocess"),
            "device": str(trainer.device) if trainer is not None else None,
            "amp": bool(getattr(trainer, "use_amp", getattr(trainer, "enable_amp", False))),
        })
        stage1 = getattr(getattr(trainer, "model", None), "stage1", None)
        if stage1 is not None:
            report = {k: v for k, v in stage1.report.items() if k != "history"}
            out["stage1"] = {"status": getattr(stage1, "status", None), "report": _jsonable(report)}
    except BaseException as err:  # recorded in the row; the parent moves on
        out["error"] = f"{type(err).__name__}: {err}"
        out["traceback"] = traceback.format_exc()[-4000:]
        print(out["traceback"], flush=True)
    finally:
        out["peak_rss_mib"] = round(_peak_rss_mib(), 1)
        try:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        except Exception:
            pass
        out["total_s"] = round(time.perf_counter() - t0, 2)
        with open(result_path, "w") as f:
            json.dump(_jsonable(out), f, indent=1)
    return 0 if out["status"] == "ok" else 1


# ============================================================================================ reports
def _fmt(value, digits=4):
    if value is None:
        return ""
    if isinstance(value, float):
        if digits == 0 or abs(value) >= 1000:
            return f"{value:,.0f}"
        if digits == 1 and abs(value) < 10:
            digits = 2
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_report(report):
    meta = report["meta"]
    lines = [f"# Benchmark `{meta['preset']}` -- {meta['date']}", "", meta["description"], "",
             f"- command: `{meta['command']}`",
             f"- git commit: {meta['git_commit']}",
             f"- machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores "
             f"(load average at start {meta['machine']['load_average']}), GPU: {meta['machine']['gpu'] or 'none'}; "
             f"device `{meta['device']}`, {meta['threads']} threads per row, {meta['jobs']} row(s) at a time",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
             f"- wall time: {meta.get('wall_s', 0):.0f}s"
             + (f" -- **partial report: {meta['partial']} finished so far**" if meta.get("partial") else ""), ""]
    for name, ds in meta["datasets"].items():
        note = f"first {ds['max_users']} users" if ds["max_users"] else "all users"
        lines.append(f"- dataset `{name}`: {note}" + (f" -- **missing: {ds['error']}**" if ds["error"] else ""))
    lines.append("")
    rows = report["rows"]
    for dataset in meta["datasets"]:
        for protocol in ("loo", "rs"):
            group = [r for r in rows if r["dataset"] == dataset and r["protocol"] == protocol]
            if not group:
                continue
            lines += [f"## {dataset} -- {PROTOCOL_NAMES[protocol]}", ""]
            head = (["model"] + METRIC_LABELS + ["epochs", "s/epoch", "train s", "total s", "eval users/s",
                                                 "peak RSS MiB", "peak GPU MiB", "params", "prep s", "status"])
            lines += ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 2) + "|---|"]
            for r in group:
                test = r.get("test_result") or {}
                prep = (r.get("preprocess") or {}).get("wall_s")
                stage1 = r.get("stage1") or {}
                stage1_s = ((stage1.get("report") or {}).get("timings") or {}).get("total_s")
                if stage1.get("status") == "built" and stage1_s is not None:  # cached: no time spent this run
                    prep = (prep or 0) + stage1_s
                cells = ([r["label"]] + [_fmt(test.get(m)) for m in SUMMARY_METRICS]
                         + [_fmt(r.get("epochs")), _fmt(r.get("train_s_per_epoch"), 1), _fmt(r.get("train_s"), 1),
                            _fmt(r.get("total_s"), 1), _fmt(r.get("eval_users_per_s"), 1),
                            _fmt(r.get("peak_rss_mib"), 0), _fmt(r.get("peak_gpu_mib"), 0), _fmt(r.get("params")),
                            _fmt(prep, 1), r["status"]])
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    code_rows = [r for r in rows if (r.get("preprocess") or {}).get("diagnostics") or r.get("stage1")]
    if code_rows:
        lines += ["## Preprocessing and semantic-ID diagnostics", "",
                  "| model | dataset | items | embedding s | codes s | cache | method | codebook sizes | usage/level "
                  "| perplexity/level | collisions before | unique codes |",
                  "|---|---|---:|---:|---:|---|---|---|---|---|---:|---:|"]
        for r in code_rows:
            prep = r.get("preprocess") or {}
            diag = prep.get("diagnostics") or {}
            timings = prep.get("timings") or {}
            cache = ",".join(f"{k}:{v}" for k, v in (prep.get("cache") or {}).items())
            usage = "/".join(f"{u:.2f}" for u in (diag.get("usage") or []))
            ppl = "/".join(f"{p:.0f}" for p in (diag.get("perplexity") or []))
            lines.append("| " + " | ".join([
                r["label"], r["dataset"], _fmt(prep.get("n_items")), _fmt(timings.get("embedding_s"), 1),
                _fmt(timings.get("codes_s"), 1), cache, str(diag.get("method", "")),
                str(diag.get("codebook_sizes", "")), usage, ppl, _fmt(diag.get("collision_rate_before")),
                f"{_fmt(diag.get('n_unique_codes'))}/{_fmt(diag.get('n_items'))}" if diag else ""]) + " |")
            if r.get("stage1"):
                rep = r["stage1"].get("report") or {}
                diag = (rep.get("diagnostics") or {}).get("aligned") or {}
                timings = rep.get("timings") or {}
                nmi = rep.get("nmi_first_level") or {}
                note = ", ".join(f"NMI {k} {v:.3f}" for k, v in nmi.items() if k.startswith("aligned"))
                lines.append("| " + " | ".join([
                    f"{r['label']} stage I", r["dataset"], _fmt(rep.get("n_items")), _fmt(timings.get("train_s"), 1),
                    _fmt(timings.get("quantise_s"), 1), f"{r['stage1'].get('status')}; {note}",
                    f"{(rep.get('params') or {}).get('prorec_code_method', '')} (aligned)",
                    str((rep.get("codebook_sizes") or {}).get("aligned", "")),
                    "/".join(f"{u:.2f}" for u in (diag.get("usage") or [])),
                    "/".join(f"{p:.0f}" for p in (diag.get("perplexity") or [])),
                    _fmt(diag.get("collision_rate_before")), ""]) + " |")
        lines.append("")
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        lines += ["## Rows that did not finish", ""]
        for r in bad:
            lines.append(f"- **{r['label']} on {r['dataset']}**: {r['status']} -- {str(r.get('error', ''))[:400]}")
        lines.append("")
    return "\n".join(lines)


def write_reports(report, out_dir, stem, plot=True):
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    paths["json"] = os.path.join(out_dir, stem + ".json")
    with open(paths["json"], "w") as f:
        json.dump(_jsonable(report), f, indent=1)
    paths["md"] = os.path.join(out_dir, stem + ".md")
    with open(paths["md"], "w") as f:
        f.write(markdown_report(report) + "\n")
    if not plot:
        return paths
    try:
        from plot import plot_quality_vs_time, plot_valid_curves

        png = os.path.join(out_dir, stem + ".png")
        plot_fn = plot_valid_curves if report["meta"].get("plot") == "valid_curves" else plot_quality_vs_time
        if plot_fn(report, png):
            paths["png"] = png
    except Exception as err:  # the numbers matter more than the picture
        say(f"plot failed: {type(err).__name__}: {err}")
    return paths


def update_readme(report, readme=os.path.join(HERE, "README.md")):
    """Replace the block between ``<!-- results:<preset> -->`` and ``<!-- /results:<preset> -->``."""
    preset = report["meta"]["preset"]
    begin, end = f"<!-- results:{preset} -->", f"<!-- /results:{preset} -->"
    if not os.path.isfile(readme):
        return False
    text = open(readme).read()
    if begin not in text or end not in text:
        return False
    body = markdown_report(report).split("\n", 1)[1]  # without the title line
    body = "\n".join("####" + line[2:] if line.startswith("## ") else line for line in body.splitlines())
    if report["meta"].get("files"):
        body = "Files: " + ", ".join(f"`{f}`" for f in report["meta"]["files"]) + "\n" + body
    new = text[: text.index(begin) + len(begin)] + "\n" + body.strip() + "\n" + text[text.index(end):]
    with open(readme, "w") as f:
        f.write(new)
    return True


# ============================================================================================ GPU bundle
BUNDLE_SOURCE = "minilm"  # item_embedding_source name of the precomputed text embeddings in a bundle
BUNDLE_WHEELS = ["faiss-cpu==1.15.1", "colorlog", "texttable"]  # importable here, absent from the GPU image


def make_bundle(preset, args):
    """Everything the preset needs on a bare GPU machine, in one git-ignored folder to ``carry``.

    ``data/<dataset>/`` copies of the atomic files (``../shared/data`` does not travel); ``cache/<dataset>/`` the
    text embeddings (as item_embedding_source ``minilm``: the MiniLM weights stay here) and the semantic IDs of
    the preset's rows, so the GPU call encodes nothing; ``wheels/`` faiss-cpu, colorlog, texttable;
    ``site/recbole`` (RecBole 1.2.1 is in no local index; pure Python, copied without its example datasets).
    """
    import numpy as np

    import recbole
    import recbole_genrec  # noqa: F401  (compat shims)
    from recbole_genrec import Config
    from recbole_genrec.preprocess import cache as genrec_cache
    from recbole_genrec.preprocess.hook import prepare_features
    from recbole_genrec.data import resolve_data_path

    bundle = os.path.abspath(args.make_bundle)
    data_dir, cache_dir = os.path.join(bundle, "data"), os.path.join(bundle, "cache")
    for name in preset["datasets"]:
        source = find_dataset(name, args.data_path)
        target = os.path.join(data_dir, name)
        os.makedirs(target, exist_ok=True)
        for suffix in ("inter", "item"):
            src = os.path.join(source, f"{name}.{suffix}")
            if os.path.isfile(src):
                shutil.copyfile(src, os.path.join(target, f"{name}.{suffix}"))
        say(f"bundle: copied {name} to {target}")
        base = {"data_path": data_dir, "genrec_cache_dir": cache_dir, "use_gpu": False, "show_progress": False}
        # 1. text embeddings with the real encoder, stored again under the source name the GPU run uses
        config = Config("AlphaRec", name, config_dict=dict(base, item_embedding_source="text"))
        resolve_data_path(config)
        prepare_features(config)
        store = genrec_cache.overlay_dir(config)
        tokens = genrec_cache.load_json(os.path.join(store, "items.json"))["item_tokens"]
        emb = genrec_cache.load_npy(genrec_cache.embeddings_path(store, "text"))
        genrec_cache.save_item_embeddings(config, BUNDLE_SOURCE, tokens, np.asarray(emb),
                                          {"encoder": str(config["text_encoder"]), "copied_from": "text"})
        # 2. semantic IDs of every row that asks for them, with the row's own settings
        for row in preset["rows"]:
            if row["dataset"] != name:
                continue
            row_config = build_config(row, {"data_path": data_dir, "cache_dir": cache_dir}, "cpu", args.threads)
            row_config.update(base, item_embedding_source=BUNDLE_SOURCE)
            config = Config(row["model"], name, config_dict=row_config)
            if "sid" in (config["genrec_features"] or []):
                resolve_data_path(config)
                summary = prepare_features(config)
                say(f"bundle: codes for {row_label(row)}: {summary['cache']}")
        # 3. keep what the GPU run reads (embeddings-<BUNDLE_SOURCE>.npy, codes-*.npy, diagnostics-*.json): drop
        # the views (links to this machine's paths), the text-format feature files, the raw text embeddings and
        # old single-folder leftovers; the GPU run rewrites feature files and views from the kept artifacts
        for entry in os.listdir(store):
            path = os.path.join(store, entry)
            if entry in ("views", "features") and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.islink(path) or entry.startswith((f"{name}.genemb", f"{name}.gensid", "embeddings-text.",
                                                           ".lock", "items.json", "codes.npy", "diagnostics.json")):
                os.remove(path)
    wheels = os.path.join(bundle, "wheels")
    os.makedirs(wheels, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform",
           "manylinux_2_27_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
           "-d", wheels] + BUNDLE_WHEELS
    subprocess.run(cmd, check=True)
    site = os.path.join(bundle, "site", "recbole")
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(os.path.dirname(recbole.__file__), site,
                    ignore=shutil.ignore_patterns("__pycache__", "dataset_example"))
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(bundle) for f in fs)
    say(f"bundle ready: {bundle} ({size / 2**20:.1f} MiB; carry it, with the working tree, under 64 MiB)")
    return 0


# ============================================================================================ scripts
def run_script_preset(name, args, meta, stem):
    script, defaults = SCRIPT_PRESETS[name]
    device = "cuda" if args.device.startswith("cuda") else "cpu"
    extra = shlex.split(args.script_args) if args.script_args else defaults[device]
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, stem + ".json")
    raw = json_path + ".raw"
    cmd = [sys.executable, os.path.join(HERE, script)] + extra + ["--out", raw]
    if name == "decoding":
        cmd += ["--device", args.device]
    else:
        cmd += ["--device", device]
    say("running " + " ".join(shlex.quote(c) for c in cmd))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    meta["wall_s"] = time.perf_counter() - start
    print(proc.stdout[-6000:], proc.stderr[-3000:] if proc.returncode else "", flush=True)
    result = None
    if os.path.isfile(raw):
        with open(raw) as f:
            result = json.load(f)
        os.remove(raw)
    report = {"meta": dict(meta, script=script, script_command=" ".join(cmd), returncode=proc.returncode),
              "result": result}
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1)
    md_path = os.path.join(args.out, stem + ".md")
    tables = "\n".join(line for line in proc.stdout.splitlines() if line.startswith(("|", "**")))
    with open(md_path, "w") as f:
        f.write(f"# Benchmark `{name}` -- {meta['date']}\n\n- command: `{meta['command']}`\n"
                f"- script: `{report['meta']['script_command']}`\n- git commit: {meta['git_commit']}\n"
                f"- machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, GPU: "
                f"{meta['machine']['gpu'] or 'none'}\n"
                "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "\n\n" + tables + "\n"
                + (f"\n**exit code {proc.returncode}**\n```\n{proc.stderr[-2000:]}\n```\n" if proc.returncode else ""))
    say(f"wrote {json_path} and {md_path}")
    return proc.returncode


# ============================================================================================ main
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
                   help="config override for every row (YAML value), repeatable")
    p.add_argument("--no-ablations", action="store_true", help="drop the ablation rows")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="output folder (on the GPU machine: $OUT)")
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
    p.add_argument("--fresh", action="store_true", help="start a resumable preset from scratch")
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


def _latest_report(out, stem, preset):
    """``<out>/<stem>.json`` if it exists, else the newest ``<out>/<preset>-*.json``."""
    exact = os.path.join(out, stem + ".json")
    if os.path.isfile(exact):
        return exact
    if not os.path.isdir(out):
        return None
    candidates = [os.path.join(out, f) for f in os.listdir(out) if f.startswith(preset + "-") and f.endswith(".json")]
    return max(candidates, key=os.path.getmtime) if candidates else None


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_worker":
        return worker(sys.argv[2], sys.argv[3])
    args = parse_args(argv)
    preset = PRESETS.get(args.preset, {"device": "cpu", "threads": 2, "jobs": 1, "description": args.preset})
    args.device = args.device or preset["device"]
    args.threads = args.threads or preset.get("threads", 2)
    import torch

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
    meta = {
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
        args.data_path = os.path.join(args.bundle, "data")
        args.cache_dir = os.path.abspath(os.path.join(args.bundle, "cache"))
        args.set = [f"item_embedding_source={BUNDLE_SOURCE}"] + list(args.set)
    start = time.perf_counter()
    datasets = resolve_datasets(preset, args)
    meta["datasets"] = datasets
    rows = select_rows(preset, args, datasets)
    finished = {}
    if args.resume and not args.fresh:
        path = args.resume if args.resume != "latest" else _latest_report(args.out, stem, args.preset)
        if path and os.path.isfile(path):
            with open(path) as f:
                earlier = json.load(f)
            finished = {row_key(r): r for r in earlier.get("rows", []) if r.get("status") == "ok"}
            stem = os.path.splitext(os.path.basename(path))[0]
            say(f"resume: {len(finished)} finished row(s) in {path}")
        elif args.resume != "latest":
            raise SystemExit(f"--resume {args.resume}: no such report")
    say(f"preset {args.preset}: {len(rows)} rows on {args.device}; writing {os.path.join(args.out, stem)}.*")
    def partial(done):
        meta["wall_s"] = time.perf_counter() - start
        meta["partial"] = f"{len(done)} of {len(rows)} rows"
        write_reports({"meta": meta, "rows": done}, args.out, stem, plot=False)

    results = run_rows(rows, datasets, args, preset, on_row=partial, finished=finished)
    meta.pop("partial", None)
    meta["wall_s"] = time.perf_counter() - start
    report = {"meta": meta, "rows": results}
    paths = write_reports(report, args.out, stem)
    meta["files"] = [os.path.relpath(p, HERE) if p.startswith(HERE) else p for p in paths.values()]
    print(markdown_report(report), flush=True)
    if args.update_readme:
        say("README updated" if update_readme(report) else "README has no results block for this preset")
    say("wrote " + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
