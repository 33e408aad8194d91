"""The reports of a run: ``<preset>-<date>.{json,md,png}`` and the results blocks of benchmarks/README.md."""

import json
import os

from benchmarks.harness.common import BENCH_DIR, ROOT, jsonable, say
from benchmarks.plot import plot_quality_vs_time, plot_valid_curves
from benchmarks.presets import PROTOCOL_NAMES

SUMMARY_METRICS = ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10", "hit@10",
                   "itemcoverage@10"]
METRIC_LABELS = ["R@5", "N@5", "R@10", "N@10", "R@20", "N@20", "MRR@10", "Hit@10", "Cov@10"]


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
            head = (["model"] + METRIC_LABELS + ["valid NDCG@10", "best epoch", "epochs", "s/epoch", "train s", "total s", "eval users/s",
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
                         + [_fmt((r.get("best_valid_result") or {}).get("ndcg@10")), _fmt(r.get("best_epoch")),
                            _fmt(r.get("epochs")), _fmt(r.get("train_s_per_epoch"), 1), _fmt(r.get("train_s"), 1),
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


def portable(text):
    """``text`` with this machine's folders spelt as any reader can follow: the checkout as ``<checkout>``, the home
    folder as ``~``."""
    text = text.replace(ROOT, "<checkout>")  # first: the checkout may lie inside the others
    for folder, name in ((os.path.dirname(ROOT), "<checkout>/.."), (os.path.expanduser("~"), "~")):
        text = text.replace(folder + os.sep, name + "/")
    return text


def write_reports(report, out_dir, stem, plot=True):
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    paths["json"] = os.path.join(out_dir, stem + ".json")
    with open(paths["json"], "w") as f:
        f.write(portable(json.dumps(jsonable(report), indent=1)))
    paths["md"] = os.path.join(out_dir, stem + ".md")
    with open(paths["md"], "w") as f:
        f.write(portable(markdown_report(report)) + "\n")
    if not plot:
        return paths
    try:
        png = os.path.join(out_dir, stem + ".png")
        plot_fn = plot_valid_curves if report["meta"].get("plot") == "valid_curves" else plot_quality_vs_time
        if plot_fn(report, png):
            paths["png"] = png
    except Exception as err:  # the numbers matter more than the picture
        say(f"plot failed: {type(err).__name__}: {err}")
    return paths


def update_readme(report, readme=os.path.join(BENCH_DIR, "README.md")):
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
