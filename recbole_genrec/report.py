"""Comparison tables for side-by-side runs: one row per model, every metric, cost columns.

Every metric column names its metric (``best valid NDCG@10``, ``test recall@10``), the settings the rows
share (split, history length, metrics, topk, valid metric) are listed under the table, and then every
hyperparameter whose value differs between the rows (a key one model does not have shows as ``-``).
"""

import csv
import json
import os
import time


# Keys of a config that describe where and how a run happens, not the model or its training.
RUN_KEYS = frozenset({
    "model", "dataset", "data_path", "genrec_source_data_path", "checkpoint_dir", "genrec_cache_dir", "results_dir",
    "device", "gpu_id", "use_gpu", "local_rank", "single_spec", "world_size", "nproc", "offset", "ip", "port",
    "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "show_progress", "state", "log_wandb", "wandb_project",
    "config_files", "cpu_threads",
    # written by the preprocessing hook (recbole_genrec/preprocess/hook.py): where the features are, not settings
    "additional_feat_suffix", "alias_of_item_id", "preload_weight", "sid_codebook_sizes", "genrec_feature_hashes",
})
MISSING = "-"


def hyperparameters(config):
    """``{key: value}`` of ``config`` without :data:`RUN_KEYS`: what a side-by-side table compares."""
    return {key: value for key, value in config.final_config_dict.items() if key not in RUN_KEYS}


def differing_settings(results):
    """``{key: [value of each row]}`` of every key whose value differs between the rows' ``settings`` (the keys of a
    row's ``protocol`` are shared by construction, and listed as such)."""
    settings = [r.get("settings") or {} for r in results]
    shared = {k for r in results for k in (r.get("protocol") or {})}
    keys = sorted({k for s in settings for k in s if k not in shared}, key=str.lower)
    out = {}
    for key in keys:
        values = [s.get(key, MISSING) for s in settings]
        if len({repr(v) for v in values}) > 1:
            out[key] = values
    return out


def settings_lines(results):
    """Markdown lines of a table ``setting | <model> | ...`` of :func:`differing_settings`."""
    differing = differing_settings(results)
    if not differing or len(results) < 2:
        return []
    head = ["setting"] + [r["model"] for r in results]
    lines = ["", "Settings that differ between the rows:", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for key, values in differing.items():
        cells = [f"`{key}`"] + [MISSING if v is MISSING else f"`{v}`" for v in values]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _valid_metric(result):
    return (result.get("protocol") or {}).get("valid_metric") or "valid metric"


def _rows(results):
    """Result dicts as rows ``{model, params, epochs, s/epoch, train s, best valid <metric>, test *, valid *}``."""
    rows = []
    for r in results:
        row = {
            "model": r["model"],
            "params": r.get("params"),
            "epochs": r.get("epochs"),
            "s/epoch": round(r.get("train_seconds_per_epoch") or 0.0, 3),
            "train s": round(r.get("train_seconds") or 0.0, 1),
            f"best valid {_valid_metric(r)}": round(float(r["best_valid_score"]), 4),
        }
        for metric, value in (r.get("test_result") or {}).items():
            row[f"test {metric}"] = round(float(value), 4)
        for metric, value in (r.get("best_valid_result") or {}).items():
            row[f"valid {metric}"] = round(float(value), 4)
        rows.append(row)
    return rows


def _columns(rows):
    columns = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    return columns


def protocol_lines(protocol):
    """Markdown lines naming the settings every row shares."""
    if not protocol:
        return []
    return ["", "Shared by every row: " + "; ".join(f"`{k}` = `{v}`" for k, v in protocol.items()) + "."]


def comparison_table(results, protocol=None):
    """A Markdown table (test metrics first, then cost) covering every model in ``results``,
    followed by the shared settings when ``protocol`` is given and the settings that differ between rows."""
    rows = _rows(results)
    columns = [c for c in _columns(rows) if not c.startswith("valid ")]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in columns) + " |")
    return "\n".join(lines + protocol_lines(protocol) + settings_lines(results))


def write_comparison(results, folder, dataset, protocol=None):
    """Write ``<folder>/<dataset>-<timestamp>.{csv,json,md}``; returns the three paths."""
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    rows = _rows(results)
    columns = _columns(rows)
    with open(stem + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    with open(stem + ".json", "w") as f:
        json.dump({"dataset": dataset, "protocol": protocol or {}, "rows": rows,
                   "differing_settings": differing_settings(results)}, f, indent=2, default=str)
    with open(stem + ".md", "w") as f:
        f.write(f"# {dataset}\n\n" + comparison_table(results, protocol) + "\n")
    return [stem + ".csv", stem + ".json", stem + ".md"]
