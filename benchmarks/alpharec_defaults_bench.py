"""AlphaRec's official defaults against the defaults they replaced, and LightGCN, side by side.

Each row trains one model to early stopping on one dataset (per-user random 8:1:1, full ranking,
``properties/protocol/random-8-1-1.yaml``, validation NDCG@20) in its own subprocess, under
``nice -n 10`` with one thread. A row is saved (json + md) as soon as it finishes; a rerun with the
same ``--out`` stem skips the rows already there (resumable). ``--total-budget`` stops starting rows,
``--row-timeout`` kills one, ``--max-epochs`` caps the AlphaRec rows and ``--max-epochs-other``
LightGCN (a row that reaches its cap says so).

    python benchmarks/alpharec_defaults_bench.py --datasets ml-100k --rows all --jobs 2 \\
        --total-budget 3000 --row-timeout 1500 --max-epochs 40 --max-epochs-other 200

Rows (``--rows`` takes a comma list of labels or ``all``):

- ``old``: the plugin's earlier defaults: interaction-uniform positives, MLP width 1024, validation
  every epoch with patience 20 epochs
- ``old+user_uniform``, ``old+width_rule``, ``old+patience``: one official default switched on each
- ``official``: all three (today's defaults, ``properties/model/AlphaRec.yaml``)
- ``official+mpnet``, ``old+mpnet``: with the all-mpnet-base-v2 text encoder (``--mpnet PATH``: its folder)
- ``LightGCN``: RecBole's LightGCN under the official patience (validation every 5 epochs, 20 checks)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # this checkout's recbole_genrec
PROTOCOL = os.path.join(ROOT, "properties", "protocol", "random-8-1-1.yaml")
OLD = {"train_sampling": "interaction", "alpharec_hidden_size": 1024, "eval_step": 1, "stopping_step": 20}
OFFICIAL = {"train_sampling": "user_uniform", "alpharec_hidden_size": "auto", "eval_step": 5, "stopping_step": 20}
ROWS = {
    "old": ("AlphaRec", dict(OLD)),
    "old+user_uniform": ("AlphaRec", dict(OLD, train_sampling="user_uniform")),
    "old+width_rule": ("AlphaRec", dict(OLD, alpharec_hidden_size="auto")),
    "old+patience": ("AlphaRec", dict(OLD, eval_step=5, stopping_step=20)),
    "official": ("AlphaRec", dict(OFFICIAL)),
    "official+mpnet": ("AlphaRec", dict(OFFICIAL, text_encoder="<mpnet>")),
    "old+mpnet": ("AlphaRec", dict(OLD, text_encoder="<mpnet>")),
    "LightGCN": ("LightGCN", {"eval_step": 5, "stopping_step": 20}),
}
METRICS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20"]

WORKER = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from recbole_genrec import run_recbole_genrec
spec = json.load(open(sys.argv[1]))
start = time.perf_counter()
r = run_recbole_genrec(spec["model"], spec["dataset"], config_file_list=[spec["protocol"]],
                       config_dict=spec["config"], saved=True)
keep = {k: r[k] for k in ("model", "dataset", "best_valid_score", "best_valid_result", "test_result", "params",
                          "epochs", "train_seconds", "train_seconds_per_epoch")}
keep["total_seconds"] = time.perf_counter() - start
json.dump(keep, open(sys.argv[2], "w"), default=float)
"""


def say(message):
    print(f"[alpharec-bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_row(label, dataset, args, workdir):
    model, overrides = ROWS[label]
    cap = args.max_epochs if model == "AlphaRec" else args.max_epochs_other
    config = dict(overrides, epochs=cap, show_progress=False, state="INFO", seed=2020,
                  topk=[10, 20], genrec_count_flops=False, data_path=args.data_path,
                  checkpoint_dir=os.path.join(workdir, "saved"), worker=0)
    if config.get("text_encoder") == "<mpnet>":
        if not args.mpnet:
            return {"status": "skipped", "reason": "no --mpnet folder given"}
        config["text_encoder"] = args.mpnet
    if model != "AlphaRec":
        for key in ("train_sampling", "alpharec_hidden_size"):
            config.pop(key, None)
    spec_path = os.path.join(workdir, f"{label}-{dataset}.spec.json")
    out_path = os.path.join(workdir, f"{label}-{dataset}.result.json")
    with open(spec_path, "w") as f:
        json.dump({"model": model, "dataset": dataset, "protocol": PROTOCOL, "config": config}, f)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=ROOT)
    log_path = os.path.join(workdir, f"{label}-{dataset}.log")
    start = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["nice", "-n", "10", sys.executable, "-c", WORKER, spec_path, out_path],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=args.row_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return {"status": "timeout", "wall_s": time.time() - start, "config": config}
    if rc != 0 or not os.path.isfile(out_path):
        with open(log_path) as f:
            tail = f.read()[-2000:]
        return {"status": "error", "rc": rc, "log_tail": tail, "config": config}
    with open(out_path) as f:
        result = json.load(f)
    result.update(status="ok", wall_s=time.time() - start, config=config,
                  hit_epoch_cap=result["epochs"] >= cap)
    return result


def fmt(value, digits=4):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def markdown(report):
    lines = [f"# AlphaRec official defaults vs the old ones -- {report['started']}", "",
             report["description"], "", f"- command: `{report['command']}`",
             f"- git commit: {report['git']}", f"- machine: {report['machine']}", ""]
    for dataset in report["datasets"]:
        lines += [f"## {dataset} -- per-user random 8:1:1, full ranking, test split", "",
                  "| row | model | train_sampling | MLP width | eval_step / stopping_step | encoder | "
                  "R@10 | N@10 | R@20 | N@20 | valid N@20 | epochs | s/epoch | train s | status |",
                  "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for label in ROWS:
            row = report["rows"].get(f"{label}|{dataset}")
            if row is None:
                continue
            model, _ = ROWS[label]
            cfg = row.get("config", {})
            test = row.get("test_result") or {}
            status = row["status"] + (" (epoch cap)" if row.get("hit_epoch_cap") else "")
            width = cfg.get("alpharec_hidden_size", "") if model == "AlphaRec" else ""
            if width == "auto":
                width = f"auto = {row.get('mlp_width', '')}".rstrip(" =")
            encoder = os.path.basename(str(cfg.get("text_encoder", "all-MiniLM-L6-v2"))) if model == "AlphaRec" else ""
            lines.append("| " + " | ".join([
                label, model, cfg.get("train_sampling", "") if model == "AlphaRec" else "interaction", str(width),
                f"{cfg.get('eval_step')} / {cfg.get('stopping_step')}", encoder,
                *[fmt(test.get(m)) for m in METRICS], fmt(row.get("best_valid_score")),
                fmt(row.get("epochs")), fmt(row.get("train_seconds_per_epoch"), 2), fmt(row.get("train_seconds"), 1),
                status]) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="ml-100k")
    parser.add_argument("--rows", default="all")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--max-epochs", type=int, default=300, help="epoch cap of the AlphaRec rows")
    parser.add_argument("--max-epochs-other", type=int, default=500, help="epoch cap of the LightGCN row")
    parser.add_argument("--row-timeout", type=float, default=1800)
    parser.add_argument("--total-budget", type=float, default=3600)
    parser.add_argument("--data-path", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--mpnet", default=None, help="folder of the all-mpnet-base-v2 sentence-transformers model")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "alpharec-defaults"))
    args = parser.parse_args(argv)
    labels = list(ROWS) if args.rows == "all" else args.rows.split(",")
    unknown = [label for label in labels if label not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    datasets = args.datasets.split(",")
    json_path, md_path = args.out + ".json", args.out + ".md"
    if os.path.isfile(json_path):
        with open(json_path) as f:
            report = json.load(f)
    else:
        import platform

        git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        report = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "git": git, "rows": {}, "datasets": [],
                  "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU, "
                             f"1 thread per row, nice -n 10",
                  "description": "Each row trained to early stopping on the validation NDCG@20 (or the epoch "
                                 "cap), then tested with the best checkpoint."}
    report["command"] = "python " + " ".join([os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:]))
    report["datasets"] = list(dict.fromkeys(report["datasets"] + datasets))
    todo = [(label, ds) for ds in datasets for label in labels
            if report["rows"].get(f"{label}|{ds}", {}).get("status") != "ok"]
    deadline = time.time() + args.total_budget
    workdir = tempfile.mkdtemp(prefix="alpharec-bench-")
    say(f"{len(todo)} rows to run, work folder {workdir}")

    def save():
        os.makedirs(os.path.dirname(json_path), exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1, default=float)
        with open(md_path, "w") as f:
            f.write(markdown(report))

    from concurrent.futures import ThreadPoolExecutor

    def one(item):
        label, ds = item
        if time.time() > deadline:
            result = {"status": "skipped", "reason": "total budget spent"}
        else:
            say(f"start {label} on {ds}")
            result = run_row(label, ds, args, workdir)
        if ROWS[label][0] == "AlphaRec" and result.get("config"):
            width = result["config"].get("alpharec_hidden_size")
            result["mlp_width"] = width if width != "auto" else _auto_width(result["config"])
        report["rows"][f"{label}|{ds}"] = result
        save()
        say(f"done {label} on {ds}: {result['status']} {(result.get('test_result') or {})}")

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, todo))
    save()
    say(f"written {json_path} and {md_path}")


def _auto_width(config):
    from recbole_genrec.model.general_recommender.alpharec import official_hidden_size

    dims = {"all-MiniLM-L6-v2": 384}
    encoder = str(config.get("text_encoder", "all-MiniLM-L6-v2"))
    return official_hidden_size(encoder, dims.get(encoder, 768))  # all-mpnet-base-v2: D = 768


if __name__ == "__main__":
    main()
