"""Comparison tables for side-by-side runs: one row per model, every metric, cost columns."""

import csv
import json
import os
import time


def _rows(results):
    """Flatten result dicts into rows ``{model, params, epochs, s/epoch, train s, valid:*, test:*}``."""
    rows = []
    for r in results:
        row = {
            "model": r["model"],
            "params": r.get("params"),
            "epochs": r.get("epochs"),
            "s/epoch": round(r.get("train_seconds_per_epoch") or 0.0, 3),
            "train s": round(r.get("train_seconds") or 0.0, 1),
            "best valid": round(float(r["best_valid_score"]), 4),
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


def comparison_table(results):
    """A Markdown table (test metrics first, then cost) covering every model in ``results``."""
    rows = _rows(results)
    columns = [c for c in _columns(rows) if not c.startswith("valid ")]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def write_comparison(results, folder, dataset):
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
        json.dump({"dataset": dataset, "rows": rows}, f, indent=2, default=str)
    with open(stem + ".md", "w") as f:
        f.write(f"# {dataset}\n\n" + comparison_table(results) + "\n")
    return [stem + ".csv", stem + ".json", stem + ".md"]
