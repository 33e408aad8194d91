"""Trustworthy inputs: the user's settings win or the run says why, data defects are reported with counts, settings
are validated before any work, reloads are self-contained, and side-by-side rows share one protocol."""

import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import (DATA_ROOT, LOO_EVAL_ARGS, TINY_LOAD_COL, TINY_T5, TINY_TIGER, make_tiny_config, recbole_argv,
                      tiny_settings)
from recbole_genrec import Config
from recbole_genrec.preprocess import cache, hook, text_encoder
from recbole_genrec.validation import ConfigError, DataError, check_atomic_files, check_config

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIGER_RUN = {**TINY_T5, **TINY_TIGER, "sid_method": "rkmeans", "sid_levels": 2, "sid_codebook_size": 8, "epochs": 1,
             "eval_step": 1, "state": "ERROR"}
RANDOM_SPLIT = {"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "mode": "full", "group_by": "user"}}


def fake_encode(texts, **kwargs):
    """Deterministic stand-in for the text encoder: a vector per distinct text."""
    rows = [np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")).normal(size=16)
            for t in texts]
    return np.asarray(rows, dtype=np.float32)


def refuse_to_encode(texts, **kwargs):
    raise AssertionError("item texts were encoded before the check that should have failed")


@pytest.fixture
def encoder(monkeypatch):
    monkeypatch.setattr(text_encoder, "encode_texts", fake_encode)


def copy_tiny(tmp_path, name="tiny", inter=None, item=None):
    """``tmp_path/data/<name>/`` with tiny's files; ``inter``/``item``: functions editing the list of lines."""
    folder = tmp_path / "data" / name
    folder.mkdir(parents=True)
    for suffix, edit in (("inter", inter), ("item", item)):
        lines = open(os.path.join(DATA_ROOT, "tiny", f"tiny.{suffix}"), encoding="utf-8").read().splitlines()
        lines = edit(lines) if edit else lines
        (folder / f"{name}.{suffix}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(tmp_path / "data")


def config_on(model, data_path, cache_dir, dataset="tiny", **overrides):
    settings = tiny_settings(cache_dir, **overrides)
    settings["data_path"] = data_path
    with recbole_argv():
        return Config(model=model, dataset=dataset, config_dict=settings)


# ----------------------------------------------------------------------------- the user's settings win
def test_explicit_text_fields_beat_the_dataset_template():
    shipped = Config(model="TIGER", dataset="ml-100k", config_dict={"data_path": DATA_ROOT})
    assert shipped["text_template"]  # properties/dataset/ml-100k.yaml
    user = Config(model="TIGER", dataset="ml-100k", config_dict={"data_path": DATA_ROOT, "text_fields": ["class"]})
    assert user["text_fields"] == ["class"] and user["text_template"] is None
    both = Config(model="TIGER", dataset="ml-100k",
                  config_dict={"data_path": DATA_ROOT, "text_fields": ["class"], "text_template": "{class}!"})
    assert both["text_template"] == "{class}!"


def test_the_same_text_fields_override_changes_the_codes(tmp_path, encoder):
    runs = {}
    for name, extra in (("default", {}), ("title", {"text_fields": ["title"]})):
        config = make_tiny_config("TIGER", tmp_path / "cache", TIGER_RUN, **extra)
        summary = hook.prepare_features(config)
        runs[name] = (summary, cache.load_npy(summary["codes_path"]))
    (default, codes), (title, title_codes) = runs["default"], runs["title"]
    assert title["text_spec"]["fields"] == ["title"] and default["text_spec"]["fields"] != ["title"]
    assert title["hashes"]["text_emb"] != default["hashes"]["text_emb"]  # text settings are in the cache key
    assert title["cache"]["embeddings"] == "stale"  # rebuilt, not the cached embeddings of the other text
    assert not np.array_equal(codes, title_codes)


def test_a_misspelt_key_is_an_error_with_the_closest_known_key_unless_allowed():
    with pytest.raises(ValueError, match="'sid_levls' is unknown.*did you mean 'sid_levels'.*allow_unknown_keys"):
        Config(model="TIGER", dataset="tiny", config_dict={"data_path": DATA_ROOT, "sid_levls": 3})
    with pytest.warns(UserWarning, match="'sid_levls' is unknown.*did you mean 'sid_levels'"):
        Config(model="TIGER", dataset="tiny",
               config_dict={"data_path": DATA_ROOT, "sid_levls": 3, "allow_unknown_keys": True})


def test_known_keys_do_not_warn(recwarn, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["run_recbole_genrec.py"])  # RecBole's Config also reads --key=value from argv
    Config(model="TIGER", dataset="tiny", config_dict={"data_path": DATA_ROOT, "sid_levels": 2, "learning_rate": 0.1,
                                                       "collab_teacher_checkpoint": None, "n_layers": 2})
    unknown = [str(w.message) for w in recwarn if "unknown to RecBole" in str(w.message)]
    assert not unknown, unknown


def test_settings_are_never_evaluated(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    monkeypatch.setattr(sys, "argv", ["run_recbole_genrec.py", f"--learning_rate={payload}"])
    config = Config(model="BPR", dataset="tiny", config_dict={"data_path": DATA_ROOT, "embedding_size": payload,
                                                              "topk": "[5, 10]", "reg_weight": "1e-3"})
    assert not marker.exists()
    assert config["learning_rate"] == payload and config["embedding_size"] == payload
    assert config["topk"] == [5, 10] and config["reg_weight"] == 0.001  # literals are still read as values
    with pytest.raises(ConfigError, match="learning_rate=.*must be a number > 0"):
        check_config(config)


def test_cli_passes_overrides_as_data(tmp_path, monkeypatch):
    from recbole_genrec import cli

    marker = tmp_path / "pwned"
    seen = {}
    monkeypatch.setattr(cli, "_run", lambda args, models, config_dict: seen.update(config_dict) or 0)
    assert cli.main(["--model=Pop", f"--note=__import__('os').system('touch {marker}')", "--topk=[5,10]"]) == 0
    assert seen == {"note": f"__import__('os').system('touch {marker}')", "topk": [5, 10]} and not marker.exists()


# ----------------------------------------------------------------------------- validation up front
@pytest.mark.parametrize("key,value,expected", [
    ("d_model", 0, "d_model=0 is not allowed: d_model must be an integer >= 1"),
    ("num_heads", 0, "num_heads=0 is not allowed: num_heads must be an integer >= 1"),
    ("sid_levels", "abc", "sid_levels='abc' is not allowed: sid_levels must be an integer >= 1"),
    ("beam_size", -1, "beam_size=-1 is not allowed"),
    ("sid_codebook_size", 1, "sid_codebook_size=1 is not allowed: sid_codebook_size must be an integer >= 2"),
    ("sid_collision", "nope", "sid_collision='nope' is not allowed: sid_collision must be one of"),
])
def test_bad_values_name_key_value_and_range(key, value, expected):
    config = Config(model="TIGER", dataset="tiny", config_dict={"data_path": DATA_ROOT, key: value})
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("(", r"\(")):
        check_config(config)


def test_unknown_sid_params_key_names_the_allowed_ones():
    config = Config(model="TIGER", dataset="tiny", config_dict={"data_path": DATA_ROOT, "sid_method": "rqvae",
                                                                "sid_params": {"epochz": 3}})
    with pytest.raises(ConfigError, match="'epochz' \\(did you mean 'epochs'\\?\\).*Allowed keys"):
        check_config(config)


@pytest.mark.parametrize("model", ["TIGER", "DiscRec", "PRORec"])
def test_beam_smaller_than_topk_is_refused_up_front(model):
    """PRORec builds its codes in stage I (genrec_features has no sid): the rule still runs before any work."""
    config = Config(model=model, dataset="tiny", config_dict={"data_path": DATA_ROOT, "beam_size": 5,
                                                               "topk": [10]})
    with pytest.raises(ConfigError, match="beam_size=5 is smaller than max\\(topk\\)=10"):
        check_config(config)


def test_sid_collision_none_with_shared_codes_names_the_setting():
    import torch

    from recbole_genrec.generative import CodeTable

    codes = torch.tensor([[0, 0], [1, 2], [1, 2]])
    with pytest.raises(ValueError, match="1 items share.*set sid_collision to extra_level"):
        CodeTable(codes, [4, 4])


def _cli(*args):
    program = ("import sys\nfrom recbole_genrec.cli import main\n"
               "rc = main(sys.argv[1:])\nassert 'torch' not in sys.modules and 'recbole' not in sys.modules\n"
               "sys.exit(rc)\n")
    return subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_cli_argument_errors_are_one_line_exit_2_without_importing_torch():
    for args, expected in (
        (["--model=TIGER", "--sid_levels=abc"], "sid_levels='abc' is not allowed"),
        (["--model=TIGR"], "Unknown model 'TIGR' (names are case-sensitive); did you mean 'TIGER'?"),
        (["--model=TIGER", "stray"], "unrecognised argument 'stray'"),
        (["--nproc=two"], "invalid int value: 'two'"),
    ):
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, proc.stderr)


def test_cli_debug_flag_prints_the_traceback():
    proc = _cli("--model=TIGR", "--debug")
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "Unknown model 'TIGR'" in proc.stderr


def test_list_models_answers_without_torch_and_matches_the_real_list():
    from recbole_genrec.model_index import static_list_models
    from recbole_genrec.utils import list_models

    assert static_list_models() == list_models()
    proc = _cli("--list-models")
    assert proc.returncode == 0 and "TIGER" in proc.stdout and "SASRec" in proc.stdout, proc.stderr
    help_proc = _cli("--help")
    assert help_proc.returncode == 0 and "--trust-checkpoint" in help_proc.stdout, help_proc.stderr


# ----------------------------------------------------------------------------- data defects
def _with_timestamp(lines, rows, value):
    return [line if i not in rows else "\t".join(line.split("\t")[:2] + [value] + line.split("\t")[3:])
            for i, line in enumerate(lines)]


def test_nan_timestamps_warn_with_their_count(tmp_path):
    data = copy_tiny(tmp_path, inter=lambda lines: _with_timestamp(lines, {1, 5, 9}, "nan"))
    config = config_on("BPR", data, tmp_path / "cache", load_col=TINY_LOAD_COL, **RANDOM_SPLIT)
    config["data_path"] = os.path.join(data, "tiny")
    with pytest.warns(UserWarning, match="3 of \\d+ interactions .* have no valid timestamp"):
        report = check_atomic_files(config)
    assert report["nan_timestamps"] == 3


def test_nan_timestamps_are_an_error_under_time_ordered_leave_one_out(tmp_path):
    data = copy_tiny(tmp_path, inter=lambda lines: _with_timestamp(lines, {2, 3}, ""))
    config = config_on("SASRec", data, tmp_path / "cache", load_col=TINY_LOAD_COL, eval_args=LOO_EVAL_ARGS)
    config["data_path"] = os.path.join(data, "tiny")
    with pytest.raises(DataError, match="2 of \\d+ interactions.*re-orders the histories"):
        check_atomic_files(config)


def test_duplicate_item_ids_warn_with_counts(tmp_path):
    data = copy_tiny(tmp_path, item=lambda lines: lines + [lines[1], lines[2], lines[2]])
    config = config_on("BPR", data, tmp_path / "cache", **RANDOM_SPLIT)
    config["data_path"] = os.path.join(data, "tiny")
    with pytest.warns(UserWarning, match="2 item ids appear more than once .*\\(3 extra rows"):
        report = check_atomic_files(config)
    assert report["duplicate_item_ids"] == 2


def test_interactions_on_items_without_text_are_counted(tmp_path):
    removed = {"i015", "i016"}
    data = copy_tiny(tmp_path, item=lambda lines: [x for x in lines if x.split("\t")[0] not in removed])
    inter = open(os.path.join(DATA_ROOT, "tiny", "tiny.inter"), encoding="utf-8").read().splitlines()[1:]
    expected = sum(line.split("\t")[1] in removed for line in inter)
    config = config_on("TIGER", data, tmp_path / "cache", **TIGER_RUN)
    config["data_path"] = os.path.join(data, "tiny")
    with pytest.warns(UserWarning, match=f"{expected} of {len(inter)} interactions .*\\(2 items\\)"):
        report = check_atomic_files(config)
    assert report["interactions_without_text"] == expected > 0


def test_a_header_without_types_names_file_line_and_form(tmp_path):
    data = copy_tiny(tmp_path, inter=lambda lines: ["user_id\titem_id\ttimestamp\trating"] + lines[1:])
    config = config_on("BPR", data, tmp_path / "cache", **RANDOM_SPLIT)
    config["data_path"] = os.path.join(data, "tiny")
    with pytest.raises(DataError, match="tiny.inter, line 1, column 1: header field 'user_id' has no type.*name:type"):
        check_atomic_files(config)


def test_tiger_without_timestamps_fails_before_any_encoding(tmp_path, monkeypatch):
    from recbole_genrec import run_recbole_genrec

    monkeypatch.setattr(text_encoder, "encode_texts", refuse_to_encode)
    drop_time = lambda lines: ["\t".join(x.split("\t")[:2] + x.split("\t")[3:]) for x in lines]  # noqa: E731
    data = copy_tiny(tmp_path, name="notime", inter=drop_time)
    settings = tiny_settings(tmp_path / "cache", TIGER_RUN, data_path=data,
                             load_col={"inter": ["user_id", "item_id", "rating"]}, **RANDOM_SPLIT)
    with recbole_argv(), pytest.raises(DataError, match="TIGER is a sequential model.*TIME_FIELD='timestamp' is not a "
                                                         "column.*use a general model"):
        run_recbole_genrec("TIGER", "notime", config_dict=settings)


LASTFM = os.path.join(ROOT, "..", "shared", "data", "lastfm-hetrec2011", "lastfm-hetrec2011.inter")


@pytest.mark.skipif(not os.path.isfile(LASTFM), reason="lastfm-hetrec2011 is not in ../shared/data")
def test_tiger_on_lastfm_fails_before_any_encoding(tmp_path, monkeypatch):
    from recbole_genrec.data import create_dataset

    monkeypatch.setattr(text_encoder, "encode_texts", refuse_to_encode)
    with recbole_argv():
        config = Config(model="TIGER", dataset="lastfm-hetrec2011", config_dict={
            "data_path": os.path.dirname(os.path.dirname(LASTFM)), "genrec_cache_dir": str(tmp_path)})
    with pytest.raises(DataError, match="time field.*general model"):
        create_dataset(config)


def test_protocol_file_carries_the_load_col_it_needs(tmp_path):
    data = copy_tiny(tmp_path, name="clean")  # no dataset yaml: RecBole's default load_col has no timestamp
    protocol = os.path.join(ROOT, "properties", "protocol", "leave-one-out-20.yaml")
    with recbole_argv():
        config = Config(model="SASRec", dataset="clean", config_file_list=[protocol], config_dict={"data_path": data})
    config["data_path"] = os.path.join(data, "clean")
    assert "timestamp" in config["load_col"]["inter"]
    check_atomic_files(config)  # the time field is loaded: no error


def test_staleness_uses_the_content_not_size_and_mtime(tmp_path):
    data = copy_tiny(tmp_path)
    config = config_on("TIGER", data, tmp_path / "cache", **TIGER_RUN)
    source = os.path.join(data, "tiny")
    from recbole_genrec.store import store_dir

    store = store_dir(config)
    first = hook.surviving_item_tokens(config, source, store, {"cache": {}, "timings": {}})
    path = os.path.join(source, "tiny.inter")
    stat = os.stat(path)
    body = open(path, encoding="utf-8").read()
    assert "i040" in body and "i099" not in body
    open(path, "w", encoding="utf-8").write(body.replace("i040", "i099"))  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size and os.stat(path).st_mtime_ns == stat.st_mtime_ns
    summary = {"cache": {}, "timings": {}}
    second = hook.surviving_item_tokens(config, source, store, summary)
    assert summary["cache"]["items"] == "stale" and "i099" in second and "i099" not in first


def test_orphaned_temp_files_are_removed_on_the_next_run(tmp_path):
    store = tmp_path / "store"
    (store / "views").mkdir(parents=True)
    host = cache._host()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = store / f".items.json.{host}@{dead.pid}.abc123.tmp"
    orphan_view = store / "views" / f".0123456789abcdef.{host}@{dead.pid}.xyz.tmp"
    live = store / f".codes.npy.{host}@{os.getpid()}.def456.tmp"
    old = store / ".codes-1.npy.q1w2e3.tmp"
    fresh = store / ".codes-2.npy.r4t5y6.tmp"
    for path in (orphan, live, old, fresh):
        path.write_text("partial")
    orphan_view.mkdir()
    os.symlink("/nonexistent", orphan_view / "tiny.inter")
    os.utime(old, (1, 1))
    with cache.locked(str(store)):
        pass
    assert not orphan.exists() and not orphan_view.exists() and not old.exists()
    assert live.exists() and fresh.exists()  # a running writer's file, and an unowned one that may be in use


# ----------------------------------------------------------------------------- reload
def _tiger_on_a_copy_of_tiny(tmp_path, monkeypatch):
    """``(data folder, run result)``: a TIGER trained on a copy of the tiny data (stand-in text encoder)."""
    from recbole_genrec import run_recbole_genrec

    monkeypatch.setattr(text_encoder, "encode_texts", fake_encode)
    data = copy_tiny(tmp_path)
    with recbole_argv():
        return data, run_recbole_genrec("TIGER", "tiny", config_dict=tiny_settings(tmp_path / "cache", TIGER_RUN,
                                                                                    data_path=data))


@pytest.mark.slow
def test_reload_uses_the_checkpoint_and_names_changed_items(tmp_path, monkeypatch):
    import torch

    from recbole_genrec import load_data_and_model

    data, result = _tiger_on_a_copy_of_tiny(tmp_path, monkeypatch)
    saved = torch.load(result["checkpoint"], weights_only=True)
    monkeypatch.setattr(text_encoder, "encode_texts", refuse_to_encode)  # the cache is intact: nothing to encode
    config, model, *_ = load_data_and_model(result["checkpoint"], data_path=data)
    assert torch.equal(model.code_table.codes, saved["state_dict"]["code_table.codes"])
    inter = os.path.join(data, "tiny", "tiny.inter")
    with open(inter, "a", encoding="utf-8") as f:
        f.write("".join(f"u{u:03d}\ti041\t{900 + u}.0\t5.0\n" for u in range(1, 8)))
    with pytest.raises(ValueError, match="trained on 40 items.*now has 41: 1 items added \\(e.g. \\['i041'\\]\\) "
                                         "and 0 removed.*Rebuild: retrain"):
        load_data_and_model(result["checkpoint"], data_path=data)


# ----------------------------------------------------------------------------- side by side
def test_side_by_side_rows_share_one_protocol(tmp_path, monkeypatch):
    from recbole_genrec import quick_start
    from recbole_genrec.report import comparison_table

    configs = {}

    def fake_run(model, dataset, config_file_list=None, config_dict=None, saved=True):
        config = Config(model, dataset, config_file_list, config_dict)
        configs[model] = config
        protocol = {key: config[key] for key in quick_start.PROTOCOL_KEYS}
        metric = config["valid_metric"].lower()
        return {"model": model, "best_valid_score": 0.1, "best_valid_result": {metric: 0.1},
                "test_result": {f"{m.lower()}@{k}": 0.2 for m in config["metrics"] for k in config["topk"]},
                "protocol": protocol, "params": 1, "epochs": 1, "train_seconds": 1.0, "train_seconds_per_epoch": 1.0}

    monkeypatch.setattr(quick_start, "run_recbole_genrec", fake_run)
    settings = tiny_settings(tmp_path / "cache")
    settings.pop("seed")
    with recbole_argv():
        results, paths = quick_start.run_side_by_side(["TIGER", "SASRec"], "tiny", config_dict=settings,
                                                      results_dir=str(tmp_path / "results"))
    tiger, sasrec = configs["TIGER"], configs["SASRec"]
    for key in quick_start.PROTOCOL_KEYS:
        assert tiger[key] == sasrec[key], key
    assert sasrec["MAX_ITEM_LIST_LENGTH"] == 20 and sasrec["valid_metric"] == "NDCG@10"  # TIGER's, not RecBole's
    assert sasrec["hidden_size"] == 64 and tiger["d_model"] == 128  # each keeps its own hyperparameters
    table = comparison_table(results, {k: tiger[k] for k in ("eval_args", "MAX_ITEM_LIST_LENGTH")})
    header = table.splitlines()[0]
    assert "best valid NDCG@10" in header and "Shared by every row" in table
    assert all(" |  |" not in line for line in table.splitlines()[2:4])  # no blank cells
    md = open(paths[2], encoding="utf-8").read()
    assert "Shared by every row" in md and "`MAX_ITEM_LIST_LENGTH` = `20`" in md


# ----------------------------------------------------------------------------- every error one line: file, key, fix
def test_wrong_value_types_are_one_line_errors_before_torch_is_imported():
    for args, expected in (
        (["--model=TIGER", "--d_model=64.0"], "d_model=64.0 is not allowed: d_model must be an integer >= 1 (64.0 is "
                                              "a float: write 64)"),
        (["--model=BPR", "--train_batch_size=1e3"], "train_batch_size=1000.0 is not allowed: train_batch_size must be "
                                                    "an integer >= 1 (1000.0 is a float: write 1000)"),
        (["--model=SASRec", "--hidden_size=64.0"], "hidden_size=64.0 is not allowed"),  # an integer of RecBole's yaml
        (["--model=TIGER", "--text_template={x}"], "text_template={'x': None} is not allowed: text_template must be a "
                                                   "text such as 'Title: {title}'"),
        (["--model=BPR", "--x=" + "[" * 5000], "--x: the value nests 5000 levels deep (at most 64)"),
        (["--model=BPR", "--x=&a [*a]"], "--x, line 1, column 5: alias *a refers to the value that contains it"),
    ):
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, proc.stderr)


def test_floats_for_integer_settings_in_a_config_file_fail_the_checks(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("d_model: 64.0\n", encoding="utf-8")
    config = Config(model="TIGER", dataset="tiny", config_file_list=[str(path)], config_dict={"data_path": DATA_ROOT})
    with pytest.raises(ConfigError, match=r"d_model=64.0 is not allowed.*write 64"):
        check_config(config)
    config = Config(model="BPR", dataset="tiny", config_dict={"data_path": DATA_ROOT, "learning_rate": 1,
                                                              "embedding_size": 16})
    check_config(config)  # an integer where a float is expected is fine


@pytest.mark.parametrize("text,expected", [
    ("epochs: 1\nx: " + "[" * 5000 + "\n", r"line 2, column 67: the value nests more than 64 levels deep"),
    ("epochs: 1\nx: &a [1, *a]\n", r"line 2, column 11: alias \*a refers to the value that contains it"),
    ("- 1\n- 2\n", r"a config file is a mapping of 'key: value' lines"),
    ("epochs: [1\n", r"line 2, column 1: .*; fix the YAML syntax there"),
])
def test_config_file_problems_name_file_line_and_column(tmp_path, text, expected):
    from recbole_genrec.safety import SafetyError

    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    with recbole_argv(), pytest.raises(SafetyError, match=re.escape(str(path)) + ".*" + expected):
        Config(model="BPR", dataset="tiny", config_file_list=[str(path)], config_dict={"data_path": DATA_ROOT})


def test_latin_1_config_file_names_line_and_column(tmp_path):
    from recbole_genrec.safety import SafetyError

    path = tmp_path / "run.yaml"
    path.write_bytes("epochs: 1\n# caf\xe9\n".encode("latin-1"))
    with recbole_argv(), pytest.raises(SafetyError, match=re.escape(f"{path}, line 2, column 6: byte b'\\xe9'")):
        Config(model="BPR", dataset="tiny", config_file_list=[str(path)], config_dict={"data_path": DATA_ROOT})


def _drop_item_column(lines):
    return ["\t".join(line.split("\t")[:1] + line.split("\t")[2:]) for line in lines]


@pytest.mark.parametrize("edit,expected", [
    (lambda lines: ["\ufeff" + lines[0]] + lines[1:],
     r"tiny.inter, line 1, column 1: the file starts with a UTF-8 byte-order mark .*encoding: utf-8-sig"),
    (_drop_item_column, r"tiny.inter, line 1: ITEM_ID_FIELD='item_id' is not a column of the header \(columns: "
                        r"\['user_id', 'timestamp', 'rating'\]\); add the column, or set ITEM_ID_FIELD"),
    (lambda lines: lines[:1], r"tiny.inter has a header but no rows; add the interactions"),
    (lambda lines: [lines[0], lines[1].replace("i015", '"i015')] + lines[2:],
     r"tiny.inter, line 2, column 6: the value '\"i015' opens a quote that its line does not close"),
])
def test_atomic_file_defects_name_file_line_and_fix(tmp_path, edit, expected):
    data = copy_tiny(tmp_path, inter=edit)
    with pytest.raises(DataError, match=expected):
        check_atomic_files(config_on("BPR", data, tmp_path / "cache"))


def test_latin_1_bytes_in_an_atomic_file_name_line_and_column(tmp_path):
    data = copy_tiny(tmp_path)
    inter = os.path.join(data, "tiny", "tiny.inter")
    lines = open(inter, encoding="utf-8").read().splitlines()
    lines[2] = lines[2].replace("u001", "u\xe9")
    with open(inter, "wb") as f:
        f.write(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"tiny.inter, line 3, column 2: byte b'\\xe9' is not valid utf-8.*"
                                        r"encoding: latin-1"):
        check_atomic_files(config_on("BPR", data, tmp_path / "cache"))
    config = config_on("BPR", data, tmp_path / "cache", encoding="latin-1")
    check_atomic_files(config)  # the fix the message names


def test_a_data_defect_is_one_line_exit_2_on_the_command_line(tmp_path, monkeypatch, capsys):
    from recbole_genrec import cli

    data = copy_tiny(tmp_path, inter=lambda lines: ["\ufeff" + lines[0]] + lines[1:])
    monkeypatch.chdir(tmp_path)  # RecBole's log folder
    assert cli.main(["--model=BPR", "--dataset=tiny", f"--data_path={data}", "--state=ERROR"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("run_recbole_genrec.py:")]
    assert len(errors) == 1 and "tiny.inter, line 1, column 1: the file starts with a UTF-8 byte-order" in errors[0]


def test_duplicated_interactions_are_counted_an_error_under_leave_one_out_and_dropped_on_request(tmp_path):
    from recbole_genrec.data import create_dataset

    data = copy_tiny(tmp_path, inter=lambda lines: lines + lines[1:11] + lines[5:8])
    loo = {"eval_args": LOO_EVAL_ARGS, "load_col": TINY_LOAD_COL}
    with pytest.raises(DataError, match=r"13 interaction rows of .*tiny.inter repeat an earlier row in every loaded "
                                        r"column \(10 distinct rows.*leave-one-out.*--drop_duplicates=True"):
        check_atomic_files(config_on("SASRec", data, tmp_path / "cache", **loo))
    with pytest.warns(UserWarning, match=r"13 interaction rows .* repeat an earlier row"):
        report = check_atomic_files(config_on("BPR", data, tmp_path / "cache", **RANDOM_SPLIT))
    assert report["duplicate_interactions"] == 13
    dropped = create_dataset(config_on("SASRec", data, tmp_path / "cache", drop_duplicates=True, **loo))
    clean = create_dataset(config_on("SASRec", copy_tiny(tmp_path / "clean"), tmp_path / "cache", **loo))
    assert dropped.inter_num == clean.inter_num == 1077


def test_data_path_wins_for_ml_100k_too(tmp_path):
    config = Config(model="BPR", dataset="ml-100k", config_dict={"data_path": str(tmp_path)})
    assert config["data_path"] == os.path.join(str(tmp_path), "ml-100k")
    assert os.path.normpath(Config(model="BPR", dataset="ml-100k")["data_path"]).endswith(
        os.path.join("recbole", "dataset_example", "ml-100k"))  # unset: RecBole's bundled copy, as before


def test_a_checkpoint_of_another_model_is_refused_before_any_work(tmp_path, monkeypatch):
    from recbole_genrec import quick_start, run_builder
    from recbole_genrec.checkpoint import save_checkpoint

    config = make_tiny_config("SASRec", tmp_path, {"eval_args": LOO_EVAL_ARGS, "load_col": TINY_LOAD_COL})
    path = save_checkpoint(str(tmp_path / "sasrec.pth"), config, {})
    monkeypatch.setattr(run_builder, "create_dataset", lambda config: pytest.fail("data was built first"))
    with recbole_argv(), pytest.raises(ValueError, match=r"sasrec.pth holds a SASRec model, but this run builds "
                                                         r"GRU4Rec: pass a checkpoint of GRU4Rec, or run "
                                                         r"--model=SASRec"):
        quick_start.run("GRU4Rec", "tiny", config_dict=tiny_settings(tmp_path, eval_args=LOO_EVAL_ARGS,
                                                                     load_col=TINY_LOAD_COL), model_file=path)


def test_side_by_side_conflicts_are_explained_before_any_row_trains(tmp_path, monkeypatch):
    from recbole_genrec import quick_start

    monkeypatch.setattr(quick_start, "run_recbole_genrec", lambda *a, **k: pytest.fail("a row trained first"))
    with recbole_argv(), pytest.raises(ConfigError, match=r"share the protocol of the first model, BPR \(eval_args "
                                                          r"order 'RO'\), but TIGER is a sequential model.*"
                                                          r"--model=TIGER,BPR.*leave-one-out-20.yaml"):
        quick_start.run_side_by_side(["BPR", "TIGER"], "tiny", config_dict=tiny_settings(tmp_path))


def test_reload_after_item_texts_changed_says_what_changed(tmp_path, monkeypatch):
    from recbole_genrec import load_data_and_model

    data, result = _tiger_on_a_copy_of_tiny(tmp_path, monkeypatch)
    item = os.path.join(data, "tiny", "tiny.item")
    lines = open(item, encoding="utf-8").read().splitlines()
    same = ["\t".join([line.split("\t")[0], "one text", "same", "brand"]) for line in lines[1:13]]
    with open(item, "w", encoding="utf-8") as f:
        f.write("\n".join(lines[:1] + same + lines[13:]) + "\n")  # 12 items with one text: new codes, more collisions
    with pytest.raises(ValueError) as err:
        load_data_and_model(result["checkpoint"], data_path=data)
    message = str(err.value)
    assert "\n" not in message and result["checkpoint"] in message
    assert "does not fit the TIGER built now: sizes differ" in message and "item texts" in message
