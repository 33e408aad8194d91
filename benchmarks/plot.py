"""Plots of benchmark results.

* a ``run.py`` report: quality vs. cost, NDCG@10 against training time (log x), one panel per dataset;
* a decoding report (``{"runs": [decoding_bench.py outputs ...]}``): users/s against users per call for both searches,
  one panel per thread count, one line style per malloc setting, with our search's arithmetic floor.

    python benchmarks/plot.py benchmarks/results/cpu-quick-2025-01-01_1200.json   # -> the same name, .png
"""

import json
import os
import sys

MARKERS = {"loo": "o", "rs": "s"}


def _finish_panel(ax, report, dataset, which="major"):
    """Title (with the user truncation), grid and legend of one dataset's panel."""
    users = report["meta"]["datasets"][dataset].get("max_users")
    ax.set_title(dataset + (f" (first {users} users)" if users else ""))
    ax.grid(True, which=which, alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _save(fig, plt, report, path):
    """The run's title line, then the PNG; returns True (something was drawn)."""
    meta = report["meta"]
    fig.suptitle(f"{meta['preset']} -- {meta['date']} -- {meta['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_quality_vs_time(report, path):
    """Write the PNG; returns False when no row has both a metric and a training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r.get("status") == "ok" and (r.get("test_result") or {}).get("ndcg@10")
            is not None and r.get("train_s")]
    if not rows:
        return False
    datasets = [d for d in report["meta"]["datasets"] if any(r["dataset"] == d for r in rows)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for protocol, marker in MARKERS.items():
            group = [r for r in rows if r["dataset"] == dataset and r["protocol"] == protocol]
            if not group:
                continue
            xs = [max(r["train_s"], 1e-2) for r in group]
            ys = [r["test_result"]["ndcg@10"] for r in group]
            label = "leave-one-out" if protocol == "loo" else "random 8:1:1"
            ax.scatter(xs, ys, marker=marker, s=46, label=label)
            for x, y, r in zip(xs, ys, group):
                ax.annotate(r["label"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("training time (s, log scale)")
        ax.set_ylabel("test NDCG@10")
        _finish_panel(ax, report, dataset, which="both")
    return _save(fig, plt, report, path)


def plot_valid_curves(report, path):
    """Validation NDCG@10 against trained epochs, one line per row (``valid_curve`` of the run.py rows); one panel per
    dataset. Returns False when no row has a validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if [p for p in (r.get("valid_curve") or []) if p.get("ndcg@10") is not None]]
    if not rows:
        return False
    datasets = [d for d in report["meta"]["datasets"] if any(r["dataset"] == d for r in rows)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(7.0 * len(datasets), 4.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for r in (r for r in rows if r["dataset"] == dataset):
            points = [p for p in r["valid_curve"] if p.get("ndcg@10") is not None]
            test = (r.get("test_result") or {}).get("ndcg@10")
            label = r["label"] + (f" (test {test:.4f})" if test is not None else "")
            ax.plot([p["epoch"] for p in points], [p["ndcg@10"] for p in points], marker="o", ms=3, label=label)
        ax.set_xlabel("epochs trained")
        ax.set_ylabel("validation NDCG@10")
        _finish_panel(ax, report, dataset)
    return _save(fig, plt, report, path)


def plot_decoding(report, path):
    """Users/s of HF ``generate`` and of our search against users per call; returns False without runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report.get("runs") or []
    if not runs:
        return False
    threads = sorted({run["torch_threads"] for run in runs})
    fig, axes = plt.subplots(1, len(threads), figsize=(6.2 * len(threads), 4.6), squeeze=False, sharey=True)
    for ax, n_threads in zip(axes[0], threads):
        for run in (r for r in runs if r["torch_threads"] == n_threads):
            style = "-" if not run.get("malloc_env") else "--"
            malloc = "glibc defaults" if not run.get("malloc_env") else "malloc tuned"
            sizes = [row["batch_size"] for row in run["rows"]]
            ax.plot(sizes, [row["ours_users_per_s"] for row in run["rows"]], style, marker="o", color="tab:blue",
                    label=f"ours ({malloc})")
            ax.plot(sizes, [row["hf_users_per_s"] for row in run["rows"]], style, marker="s", color="tab:red",
                    label=f"HF generate + trie ({malloc})")
        floor = (report.get("arithmetic_floor") or {}).get(str(n_threads))
        if floor:
            ax.axhline(1e3 / floor["ours_floor_ms_per_user"], color="tab:blue", alpha=0.4, linestyle=":",
                       label="ours: matrix-product floor")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("users per call")
        ax.set_ylabel("users / s (log scale)")
        ax.set_title(f"{n_threads} thread(s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(report.get("title", "constrained beam search"), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Plot benchmark reports: each REPORT.json -> REPORT.png beside it.")
    parser.add_argument("reports", nargs="+", metavar="REPORT.json", help="a run.py or decoding_bench.py report")
    for path in parser.parse_args(argv).reports:
        with open(path) as f:
            report = json.load(f)
        png = os.path.splitext(path)[0] + ".png"
        if "runs" in report:
            plot = plot_decoding
        elif (report.get("meta") or {}).get("plot") == "valid_curves":
            plot = plot_valid_curves
        else:
            plot = plot_quality_vs_time
        print(png if plot(report, png) else f"{path}: nothing to plot")


if __name__ == "__main__":
    main()
