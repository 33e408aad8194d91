"""Quality vs. cost plot of a benchmark run: NDCG@10 against training time (log x), one panel per dataset.

    python benchmarks/plot.py benchmarks/results/cpu-quick-2025-01-01_1200.json   # -> the same name, .png
"""

import json
import os
import sys

MARKERS = {"loo": "o", "rs": "s"}


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
        users = report["meta"]["datasets"][dataset].get("max_users")
        ax.set_title(dataset + (f" (first {users} users)" if users else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    meta = report["meta"]
    fig.suptitle(f"{meta['preset']} -- {meta['date']} -- {meta['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None):
    argv = argv if argv is not None else sys.argv[1:]
    for path in argv:
        with open(path) as f:
            report = json.load(f)
        png = os.path.splitext(path)[0] + ".png"
        print(png if plot_quality_vs_time(report, png) else f"{path}: nothing to plot")


if __name__ == "__main__":
    main()
