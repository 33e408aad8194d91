"""The benchmark suite's machinery (benchmarks/run.py, benchmarks/harness/): presets, truncation, reports, and one
real smoke run."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import presets, run
from benchmarks.harness import datasets as bench_datasets
from benchmarks.harness import reports
from benchmarks.harness import rows as bench_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")

def test_presets_cover_every_model_with_one_protocol_each():
    p = presets.PRESETS
    assert {"smoke", "cpu-quick", "cpu-full", "gpu"} <= set(p)
    quick_models = {r["model"] for r in p["cpu-quick"]["rows"]}
    assert set(presets.ALL_MODELS) == quick_models
    gpu = p["gpu"]
    assert set(gpu["datasets"]) == {"amazon-beauty"}
    for row in gpu["rows"]:
        assert row["protocol"] == ("rs" if row["model"] in presets.GENERAL else "loo")
        assert row["config"].get("enable_amp") is True
    held_out = {"amazon-scientific", "yelp"}
    for preset in p.values():
        assert not held_out & set(preset["datasets"])
    # every cut-off fits in the 20 beams of the generative models
    assert max(presets.TOPK) <= 20

def test_truncate_keeps_first_users_and_their_items(tmp_path):
    src = tmp_path / "src" / "toy"
    src.mkdir(parents=True)
    (src / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                                   "u1\ti1\t0\nu2\ti2\t1\nu1\ti3\t2\nu3\ti4\t3\nu2\ti1\t4\n")
    (src / "toy.item").write_text("item_id:token\ttitle:token_seq\ni1\ta\ni2\tb\ni3\tc\ni4\td\ni5\te\n")
    (src / "toy.user").write_text("user_id:token\tage:float\nu1\t1\nu2\t2\nu3\t3\n")
    data_path, alias = bench_datasets.truncate_dataset("toy", str(src), 2, str(tmp_path / "work"))
    assert alias == "toy-u2"
    folder = os.path.join(data_path, alias)
    inter = open(os.path.join(folder, "toy-u2.inter")).read().splitlines()
    assert [line.split("\t")[0] for line in inter[1:]] == ["u1", "u2", "u1", "u2"]
    items = [line.split("\t")[0] for line in open(os.path.join(folder, "toy-u2.item")).read().splitlines()[1:]]
    assert items == ["i1", "i2", "i3"]
    users = [line.split("\t")[0] for line in open(os.path.join(folder, "toy-u2.user")).read().splitlines()[1:]]
    assert users == ["u1", "u2"]
    # a second call reuses the copy (same source, same N)
    mtime = os.path.getmtime(os.path.join(folder, "toy-u2.inter"))
    assert bench_datasets.truncate_dataset("toy", str(src), 2, str(tmp_path / "work")) == (data_path, alias)
    assert os.path.getmtime(os.path.join(folder, "toy-u2.inter")) == mtime

def test_set_reads_values_as_the_command_line_reads_them(tmp_path):
    from recbole_genrec.cli import parse_config_overrides

    given = ["learning_rate=1e-3", "metrics=[Recall,NDCG]", "topk=[5,10]", "sid_params={pca_dim: 16}"]
    args = run.parse_args(["--preset", "smoke", "--datasets", "no-such-dataset", "--data-path", str(tmp_path),
                           *[f"--set={item}" for item in given]])
    rows = bench_rows.select_rows(presets.PRESETS["smoke"], args, bench_datasets.resolve_datasets(
        presets.PRESETS["smoke"], args))
    expected = parse_config_overrides([f"--{item}" for item in given])
    assert expected["learning_rate"] == 0.001 and expected["metrics"] == ["Recall", "NDCG"]
    for row in rows:
        assert {key: row["config"][key] for key in expected} == expected


def test_missing_dataset_is_skipped_not_fatal(tmp_path):
    args = run.parse_args(["--preset", "smoke", "--datasets", "no-such-dataset", "--data-path", str(tmp_path)])
    datasets = bench_datasets.resolve_datasets(presets.PRESETS["smoke"], args)
    assert "not found" in datasets["no-such-dataset"]["error"]
    rows = bench_rows.select_rows(presets.PRESETS["smoke"], args, datasets)
    assert {r["model"] for r in rows} == {"Pop", "BPR"} and {r["dataset"] for r in rows} == {"no-such-dataset"}
    results = bench_rows.run_rows(rows, datasets, args, presets.PRESETS["smoke"])
    assert [r["status"] for r in results] == ["skipped", "skipped"]
    report = {"meta": {"preset": "smoke", "date": "d", "description": "x", "command": "c", "git_commit": "g",
                       "machine": {"cpu": "c", "cores": 1, "load_average": None, "gpu": None}, "versions": {},
                       "device": "cpu", "threads": 1, "jobs": 1, "datasets": datasets},
              "rows": results}
    md = reports.markdown_report(report)
    assert "missing" in md and "skipped" in md

@pytest.mark.slow
def test_smoke_preset_writes_json_md_png(tmp_path):
    env = dict(os.environ, RECBOLE_GENREC_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "run.py"), "--preset", "smoke", "--out",
                           str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(os.listdir(tmp_path / "out"))
    stems = {os.path.splitext(f)[0] for f in files}
    assert len(stems) == 1 and {os.path.splitext(f)[1] for f in files} == {".json", ".md", ".png"}
    stem = stems.pop()
    report = json.load(open(tmp_path / "out" / f"{stem}.json"))
    assert report["meta"]["preset"] == "smoke" and "torch" in report["meta"]["versions"]
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"Pop", "BPR"}
    for row in rows.values():
        assert row["status"] == "ok", row.get("error")
        for metric in reports.SUMMARY_METRICS:
            assert 0.0 <= row["test_result"][metric] <= 1.0
        assert row["eval_users"] == 120 and row["eval_users_per_s"] > 0
        assert row["peak_rss_mib"] > 50 and row["total_s"] > 0
        assert row["epochs"] == row["config"]["epochs"]
    assert rows["BPR"]["params"] > 0
    md = open(tmp_path / "out" / f"{stem}.md").read()
    assert "| Pop |" in md and "| BPR |" in md
    assert os.path.getsize(tmp_path / "out" / f"{stem}.png") > 1000


def test_bundle_with_max_users_is_refused_before_any_work(tmp_path, capsys):
    """A GPU bundle holds the full datasets' artifacts: a truncated run against it would fail row by row, so the
    harness refuses up front and says which flag to drop."""
    code = run.main(["--preset", "gpu", "--device", "cpu", "--max-users", "300", "--bundle", str(tmp_path),
                     "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--max-users 300" in err and "drop --bundle" in err
    assert not (tmp_path / "out").exists()


def test_beauty_cpu_preset_is_the_paper_protocol_on_full_beauty(tmp_path):
    preset = presets.PRESETS["beauty-cpu"]
    assert preset["datasets"] == {"amazon-beauty": {"max_users": None}} and preset["resume"] and preset["resume_rows"]
    labels = [bench_rows.row_label(r) for r in preset["rows"]]
    assert labels[:3] == ["SASRec", "SASRec[lr3e-3]", "RPG[hist50]"]  # the baseline, then RPG at the paper's history
    assert {"SASRec[h128]", "SASRec[drop0.2]", "SASRec[bpr-h128-lr5e-4]", "TIGER", "DiscRec", "PRORec", "BERT4Rec",
            "TIGER[cpu-8ep]", "TIGER[cpu-8ep-bf16]", "TIGER[paper-8ep]"} <= set(labels) and len(set(labels)) == 16
    rpg = {r["tag"]: r["config"] for r in preset["rows"] if r["model"] == "RPG"}
    assert {tag: (c["MAX_ITEM_LIST_LENGTH"], c.get("sid_levels", 32)) for tag, c in rpg.items()} == {
        "hist50": (50, 32), "hist20": (20, 32), "cb16": (50, 16), "cb8": (50, 8)}  # paper, protocol, ablation
    assert all(r["protocol"] == "loo" for r in preset["rows"])
    assert presets.PROTOCOLS["loo"]["MAX_ITEM_LIST_LENGTH"] == 20
    assert {5, 10} <= set(presets.TOPK) and {"Recall", "NDCG"} <= set(presets.METRICS)
    for r in preset["rows"]:  # to early stopping: no time budget, an epoch cap far above convergence
        assert "train_time_budget_s" not in r["config"]
        assert r["config"].get("epochs", 150) >= 150 or r.get("tag", "").endswith(("8ep", "8ep-bf16"))
    generative = [r for r in preset["rows"] if r["model"] in presets.GENERATIVE]
    assert all(r["config"]["train_length_buckets"] for r in generative)
    bf16 = {r["tag"]: r["config"] for r in generative if r.get("tag", "").startswith("cpu-8ep")}
    assert {k: v for k, v in bf16["cpu-8ep-bf16"].items() if bf16["cpu-8ep"].get(k) != v} == {"cpu_bf16": True}
    assert preset["plot"] == "valid_curves"
    args = run.parse_args(["--preset", "beauty-cpu"])
    datasets = {"amazon-beauty": {"max_users": None}}
    names = [r["config"]["resume_name"] for r in bench_rows.select_rows(preset, args, datasets)]
    assert len(set(names)) == len(names) and names[0] == "beauty-cpu-amazon-beauty-SASRec"


def test_fresh_forgets_the_rows_resume_states(tmp_path):
    preset = dict(presets.PRESETS["smoke"], resume_rows=True)
    args = run.parse_args(["--preset", "smoke", "--fresh"])
    datasets = {"tiny": {"max_users": None, "cache_dir": str(tmp_path), "recbole_name": "tiny"}}
    rows = bench_rows.select_rows(preset, args, datasets)
    states = [tmp_path / "tiny" / "runs" / r["config"]["resume_name"] for r in rows]
    for folder in states:
        folder.mkdir(parents=True)
        (folder / "state.pth").write_bytes(b"")
    run.forget_resume_states(rows, datasets)
    assert not any(folder.exists() for folder in states)


def test_resumable_preset_skips_finished_rows(tmp_path, monkeypatch):
    """A second invocation of a resumable preset keeps the rows that finished, reruns only the others and writes
    into the same report; --fresh starts over."""
    calls = []

    def fake_run_row(row, dataset, args, timeout_s, log_dir):
        calls.append(row["model"])
        ok = row["model"] != "BPR" or len(calls) > 2  # BPR fails the first time
        base = {"model": row["model"], "tag": None, "label": row["model"], "dataset": row["dataset"],
                "protocol": row["protocol"], "max_users": dataset["max_users"], "config": row["config"]}
        return dict(base, status="ok" if ok else "error", error=None if ok else "boom",
                    test_result={"ndcg@10": 0.1}, valid_curve=[{"epoch": 1, "ndcg@10": 0.05, "seconds": 1.0}],
                    train_s=1.0)

    preset = dict(presets.PRESETS["smoke"], resume=True, plot="valid_curves")
    monkeypatch.setitem(run.PRESETS, "resumable", preset)
    monkeypatch.setattr(bench_rows, "run_row", fake_run_row)
    argv = ["--preset", "resumable", "--out", str(tmp_path), "--data-path", os.path.join(ROOT, "tests", "data")]
    assert run.main(argv) == 0 and sorted(calls) == ["BPR", "Pop"]  # the preset runs 2 rows at a time
    assert run.main(argv) == 0 and calls[2:] == ["BPR"]  # Pop finished before: not rerun
    report = json.load(open(tmp_path / "resumable.json"))
    assert [(r["model"], r["status"], bool(r.get("resumed"))) for r in report["rows"]] == [
        ("Pop", "ok", True), ("BPR", "ok", False)]
    assert os.path.getsize(tmp_path / "resumable.png") > 1000  # the validation curves
    assert run.main(argv + ["--fresh"]) == 0 and sorted(calls[3:]) == ["BPR", "Pop"]
    # one model per invocation (--models): the other models' finished rows stay in the report
    json.dump(dict(report, rows=[r for r in report["rows"] if r["model"] == "Pop"]), open(tmp_path / "resumable.json", "w"))
    assert run.main(argv + ["--models", "BPR"]) == 0 and calls[5:] == ["BPR"]
    report = json.load(open(tmp_path / "resumable.json"))
    assert sorted((r["model"], r["status"]) for r in report["rows"]) == [("BPR", "ok"), ("Pop", "ok")]


def test_resumable_preset_extends_only_its_own_report(tmp_path):
    """A dry run's report (<preset>-u300-...json) is never taken for the full run's, whose file is <preset>.json."""
    other = {"rows": [{"model": "Pop", "status": "ok"}]}
    json.dump(other, open(tmp_path / "beauty-cpu-u300-dryrun.json", "w"))
    args = run.parse_args(["--preset", "beauty-cpu", "--out", str(tmp_path)])
    args.resume = "latest"
    assert run.earlier_rows(args, "beauty-cpu", own_report=True) == ([], "beauty-cpu")
    assert run.earlier_rows(args, "beauty-cpu")[1] == "beauty-cpu-u300-dryrun"  # plain --resume: the newest report
    json.dump(other, open(tmp_path / "beauty-cpu.json", "w"))
    assert run.earlier_rows(args, "beauty-cpu", own_report=True)[1] == "beauty-cpu"


def test_progress_shows_every_row_from_its_resume_state(tmp_path):
    """--progress reads the rows' resume states: a row still training shows its epochs and best validation so far,
    a row without a state is 'not started'."""
    import datetime

    import torch

    preset = dict(presets.PRESETS["smoke"], resume_rows=True)
    args = run.parse_args(["--preset", "smoke", "--progress", "--out", str(tmp_path / "out"), "--cache-dir",
                           str(tmp_path / "cache"), "--data-path", os.path.join(ROOT, "tests", "data")])
    args.device, args.threads = "cpu", 1
    datasets = bench_datasets.resolve_datasets(preset, args)
    first = bench_rows.select_rows(preset, args, datasets)[0]
    folder = tmp_path / "cache" / "tiny" / "runs" / first["config"]["resume_name"]
    folder.mkdir(parents=True)
    history = {"train": [{"epoch": 0, "loss": 1.0, "seconds": 2.0}, {"epoch": 1, "loss": 0.9, "seconds": 4.0}],
               "valid": [{"epoch": 0, "score": 0.1, "result": {"ndcg@10": 0.1}, "seconds": 1.0},
                         {"epoch": 1, "score": 0.08, "result": {"ndcg@10": 0.08}, "seconds": 2.0}]}
    torch.save({"finished": False, "history": history}, folder / "state.pth")
    meta = run.run_meta(args, preset, datetime.datetime.now())
    assert run.write_progress(preset, args, meta, "smoke") == 0
    text = (tmp_path / "out" / "smoke-progress.md").read_text()
    label = bench_rows.row_label(first)
    assert f"| {label} | training | 2 | 0.1000 (1) | 0.0800 | 3 | 1.5 |" in text
    assert text.count("| not started |") == len(preset["rows"]) - 1
    assert os.path.getsize(tmp_path / "out" / "smoke-progress.png") > 1000


def test_reports_spell_machine_folders_portably():
    from benchmarks.harness.common import ROOT

    text = reports.portable(f"{ROOT}/benchmarks {os.path.dirname(ROOT)}/shared/data {os.path.expanduser('~')}/.cache")
    assert text == "<checkout>/benchmarks <checkout>/../shared/data ~/.cache"
