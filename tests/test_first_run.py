"""What a new user meets first: presets that say what they set, stock models on RecBole's defaults, mistakes caught
before any work, and the run's output (warnings summary, loss names, the side-by-side table)."""

import logging
import os
import re
import sys
import warnings

import pytest
import yaml

from conftest import DATA_ROOT, recbole_argv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = os.path.join(ROOT, "properties", "quick_start")
GENERATIVE = ("TIGER", "DiscRec", "PRORec")


@pytest.fixture(scope="module")
def ml100k_configs():
    """The configs of the generative presets, and of NGCF and SASRec, on ml-100k (no data is loaded)."""
    from recbole_genrec import Config

    with recbole_argv():
        return {model: Config(model=model, dataset="ml-100k") for model in GENERATIVE + ("NGCF", "SASRec")}


def _preset_keys(name):
    with open(os.path.join(PRESETS, f"{name}-ml-100k.yaml"), encoding="utf-8") as f:
        return set(yaml.safe_load(f))


def _model_keys(name):
    with open(os.path.join(ROOT, "properties", "model", f"{name}.yaml"), encoding="utf-8") as f:
        return set(yaml.safe_load(f))


# ----------------------------------------------------------------------------- presets
@pytest.mark.parametrize("model", GENERATIVE)
def test_every_value_a_preset_comment_states_is_the_value_the_model_gets(model, ml100k_configs):
    with open(os.path.join(PRESETS, f"{model}-ml-100k.yaml"), encoding="utf-8") as f:
        comments = " ".join(line.split("#", 1)[1] for line in f if "#" in line)
    claims = re.findall(r"`([A-Za-z_]\w*): ([^`]+)`", comments)
    assert len(claims) >= 2, comments  # each preset's header says what it sets
    config = ml100k_configs[model]
    for key, text in claims:
        assert config[key] == yaml.safe_load(text), (model, key, text, config[key])
    if model != "TIGER":  # an inheriting preset's header names every key it sets
        assert _preset_keys(model) <= {key for key, _ in claims}


def test_discrec_and_prorec_presets_differ_from_tiger_only_in_what_makes_the_model(ml100k_configs):
    from recbole_genrec.report import hyperparameters

    tiger = hyperparameters(ml100k_configs["TIGER"])
    for model in ("DiscRec", "PRORec"):
        other = hyperparameters(ml100k_configs[model])
        differing = {k for k in set(tiger) | set(other) if repr(tiger.get(k)) != repr(other.get(k))}
        assert differing, model
        assert differing <= _model_keys(model) | _preset_keys(model), (model, differing)
        for key in ("epochs", "train_batch_size", "warmup_steps", "dropout_rate", "learning_rate", "eval_step",
                    "d_model", "num_encoder_layers", "beam_size", "eval_args", "MAX_ITEM_LIST_LENGTH", "topk"):
            assert other[key] == tiger[key], (model, key)


# ----------------------------------------------------------------------------- stock models
def test_stock_models_keep_recboles_defaults_and_a_plugin_change_is_named(ml100k_configs):
    from recbole.config import Config as RecBoleConfig

    with recbole_argv():
        recbole_ngcf = RecBoleConfig(model="NGCF", dataset="ml-100k")
    ngcf = ml100k_configs["NGCF"]
    assert ngcf["epochs"] == recbole_ngcf["epochs"] == 300
    assert ngcf.genrec_changed_defaults == []
    for key, value in recbole_ngcf.final_config_dict.items():  # no RecBole key of NGCF changed
        if key not in ("data_path", "model", "device"):
            assert repr(ngcf[key]) == repr(value), key
    changes = {key: (recbole, ours, source) for key, recbole, ours, source in
               ml100k_configs["SASRec"].genrec_changed_defaults}
    assert set(changes) == {"train_neg_sample_args"}  # SASRec's CE loss takes no negatives (sequential.yaml)
    assert changes["train_neg_sample_args"][1] is None
    assert changes["train_neg_sample_args"][2] == os.path.join("properties", "quick_start", "sequential.yaml")
    assert ml100k_configs["TIGER"].genrec_changed_defaults == []  # a plugin model's own defaults are not changes


def test_a_stock_models_run_logs_what_the_plugin_changed(tmp_path, monkeypatch, caplog):
    from recbole_genrec import Config
    from recbole_genrec.runlog import init_run_logger

    monkeypatch.chdir(tmp_path)  # RecBole's init_logger writes ./log
    with recbole_argv():
        config = Config(model="SASRec", dataset="tiny", config_dict={"data_path": DATA_ROOT})
        user_choice = Config(model="SASRec", dataset="tiny",
                             config_dict={"data_path": DATA_ROOT, "train_neg_sample_args": None})
    assert "train_neg_sample_args" in [change[0] for change in config.genrec_changed_defaults]
    assert "train_neg_sample_args" not in [change[0] for change in user_choice.genrec_changed_defaults]  # the user's
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        with caplog.at_level(logging.INFO):
            init_run_logger(config)
    finally:
        for handler in root.handlers[:]:  # RecBole's handlers write into tmp_path: leave root as it was
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
    lines = [r.getMessage() for r in caplog.records if "instead of RecBole's default" in r.getMessage()]
    assert len(lines) == len(config.genrec_changed_defaults), lines  # tiny.yaml's load_col is the other one
    assert any("train_neg_sample_args: None" in line and "sequential.yaml" in line for line in lines), lines


# ----------------------------------------------------------------------------- mistakes caught before any work
def test_typos_get_the_closest_names_case_insensitive():
    from recbole_genrec.validation import ConfigError, check_command_line, check_metrics, closest, edit_distance

    assert edit_distance("sid_levls", "sid_levels") == 1 and edit_distance("abc", "abc") == 0
    assert edit_distance("kitten", "sitting") == 3
    assert closest("tiger", ["TIGER", "DiscRec", "BPR"]) == ["TIGER"]
    assert closest("Recal", ["Recall", "NDCG", "MRR"]) == ["Recall"]
    check_metrics(["recall", "NDCG"], "ndcg@10")  # RecBole reads metric names case-insensitively
    with pytest.raises(ConfigError, match="unknown metric 'Recal'; did you mean 'Recall'"):
        check_metrics(["Recal", "NDCG"])
    with pytest.raises(ConfigError, match="valid_metric: unknown metric 'NDGC'; did you mean 'NDCG'"):
        check_metrics(["NDCG"], "NDGC@10")
    with pytest.raises(ConfigError, match="dataset 'tiy' not found; did you mean 'tiny'"):
        check_command_line({"data_path": DATA_ROOT}, dataset="tiy")
    with pytest.raises(ConfigError, match="'sid_levls' is unknown.*did you mean 'sid_levels'"):
        check_command_line({"data_path": DATA_ROOT, "sid_levls": 3}, dataset="tiny")
    check_command_line({"data_path": DATA_ROOT, "sid_levls": 3, "allow_unknown_keys": True}, dataset="tiny")
    check_command_line({"data_path": DATA_ROOT, "my_own_setting": 3}, dataset="tiny")  # far from any key


def test_config_file_typos_are_caught_by_the_command_line(tmp_path):
    from recbole_genrec.cli import config_files
    from recbole_genrec.validation import ConfigError, check_command_line

    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("learning_rate: 0.01\n")
    second.write_text("lerning_rate: 0.01\n")
    assert config_files([f"{first} {second}"]) == config_files([str(first), str(second)]) == [str(first), str(second)]
    assert config_files(None) is None
    assert check_command_line({"data_path": DATA_ROOT}, [str(first)], "tiny")["learning_rate"] == 0.01
    with pytest.raises(ConfigError, match="'lerning_rate'.*did you mean 'learning_rate'"):
        check_command_line({"data_path": DATA_ROOT}, [str(first), str(second)], "tiny")
    first.write_text("learning_rate: 1e-3\n")  # a number, as Config reads it (yaml alone reads a string)
    assert check_command_line({"data_path": DATA_ROOT}, [str(first)], "tiny")["learning_rate"] == 0.001


@pytest.mark.parametrize("args, expected", [
    (["--model=tiger"], "did you mean 'TIGER'"),
    (["--model=TIGER", "--dataset=ml-100"], "dataset 'ml-100' not found; did you mean 'ml-100k'"),
    (["--model=TIGER", "--metrics=[Recal,NDCG]"], "unknown metric 'Recal'; did you mean 'Recall'"),
    (["--model=TIGER", "--sid_levls=3"], "did you mean 'sid_levels'"),
])
def test_command_line_typos_fail_before_torch_is_imported(args, expected, capsys, monkeypatch):
    from recbole_genrec import cli

    monkeypatch.setitem(sys.modules, "torch", None)  # importing torch now fails: the check needs none of it
    monkeypatch.setitem(sys.modules, "recbole", None)
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


# ----------------------------------------------------------------------------- output
def test_known_warnings_are_the_same_in_the_command_lines_and_in_pytest():
    import tomllib

    from recbole_genrec.runlog import KNOWN_WARNINGS

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        ini = tomllib.load(f)["tool"]["pytest"]["ini_options"]["filterwarnings"]
    assert ini == [f"ignore:{message}:{category}:{module}" for message, category, module in KNOWN_WARNINGS]


def test_known_warnings_are_filtered_and_the_others_collected_and_repeated(caplog):
    from recbole_genrec import runlog

    assert logging.getLogger().handlers  # caplog's: collect_warnings joins a logger that is set up
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        runlog.quiet_known_warnings()
        with runlog.collect_warnings() as messages:
            warnings.warn_explicit("`torch.cuda.amp.GradScaler(args...)` is deprecated", FutureWarning,
                                   "trainer.py", 1, module="recbole.trainer.trainer")
            warnings.warn("config key 'x' is unknown", UserWarning)
            warnings.warn("config key 'x' is unknown", UserWarning)
            logging.getLogger("recbole_genrec.test").warning("12 items have no text")
            logging.getLogger("recbole_genrec.test").info("not a warning")
    assert messages == ["config key 'x' is unknown", "12 items have no text"]  # known one filtered, repeat dropped
    summary = runlog.warning_summary(messages).splitlines()
    assert summary == ["2 warnings in this run:", "  - config key 'x' is unknown", "  - 12 items have no text"]
    assert runlog.warning_summary([]) == ""


def test_prorec_losses_are_logged_by_name():
    from recbole_genrec.model.sequential_recommender.prorec import PRORec
    from recbole_genrec.trainer.generative_trainer import GenerativeTrainer

    trainer = object.__new__(GenerativeTrainer)  # only the log line is built: no model, no data
    trainer.config, trainer.learning_rate = {"loss_decimal_place": 4}, 0.001
    trainer.model = object.__new__(PRORec)
    line = trainer._generate_train_loss_output(1, 0.0, 2.0, (1.5, 0.25, 0.125))
    plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
    assert "generation loss: 1.5000" in plain and "collab distill loss: 0.2500" in plain, plain
    assert "semantic distill loss: 0.1250" in plain and "train_loss" not in plain, plain


def test_coldstart_report_metrics_have_recboles_decimals():
    from recbole_genrec.data.coldstart import _rounded

    metrics = {"held_out": {"Recall@10": 0.123456, "targets": 7}, "held_out_share@10": 0.0312499}
    assert _rounded(metrics, 4) == {"held_out": {"Recall@10": 0.1235, "targets": 7}, "held_out_share@10": 0.0312}


def test_side_by_side_table_lists_every_setting_that_differs():
    from recbole_genrec.report import comparison_table, differing_settings

    common = {"epochs": 3, "learning_rate": 0.003, "eval_args": {"order": "TO"}}
    results = [
        {"model": "TIGER", "best_valid_score": 0.1, "test_result": {"ndcg@10": 0.1},
         "settings": dict(common, d_model=64)},
        {"model": "DiscRec", "best_valid_score": 0.1, "test_result": {"ndcg@10": 0.1},
         "settings": dict(common, d_model=64, discrec_d_ff=256)},
        {"model": "SASRec", "best_valid_score": 0.1, "test_result": {"ndcg@10": 0.1},
         "settings": dict(common, epochs=300, hidden_size=64)},
    ]
    assert differing_settings(results) == {
        "d_model": [64, 64, "-"], "discrec_d_ff": ["-", 256, "-"], "epochs": [3, 3, 300],
        "hidden_size": ["-", "-", 64]}
    table = comparison_table(results)
    assert "| setting | TIGER | DiscRec | SASRec |" in table and "| `epochs` | `3` | `3` | `300` |" in table
    assert "learning_rate" not in table
    for row, load_col in zip(results, (["a", "feat"], ["a", "feat"], ["a"])):  # the hook adds its feature files
        row["settings"]["load_col"], row["protocol"] = load_col, {"load_col": ["a"]}
    assert "load_col" not in differing_settings(results)  # a protocol key is shared by construction


# ----------------------------------------------------------------------------- the store lock
def test_the_store_lock_is_an_flock_that_other_processes_wait_for(tmp_path):
    import subprocess

    from recbole_genrec.preprocess import cache

    store = tmp_path / "store"
    probe = ("import fcntl, sys\n"
             "with open(sys.argv[1], 'a+') as f:\n"
             "    try:\n"
             "        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "    except BlockingIOError:\n"
             "        print('held')\n"
             "    else:\n"
             "        print('free')\n")

    def other_process():
        return subprocess.run([sys.executable, "-c", probe, str(store / ".lock")], capture_output=True, text=True,
                              check=True, timeout=60).stdout.strip()

    with cache.locked(str(store)):
        assert other_process() == "held"
    assert other_process() == "free"
    with cache.locked(str(store)):  # taken again after its release
        assert other_process() == "held"


def test_alpharec_command_line_help_lists_its_commands_and_options(capsys):
    from recbole_genrec.alpharec import cli

    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "zeroshot" in out and "intention" in out and "COMMAND --help" in out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["zeroshot", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--source" in out and "--target" in out and "--config_files" in out and "evaluate on --target" in out
    assert cli.main(["zeroshoot"]) == 2 and "the first argument is the command" in capsys.readouterr().err


def test_a_host_programs_command_line_only_warns(monkeypatch):
    from recbole_genrec import Config

    monkeypatch.setattr(sys, "argv", ["pytest", "--durations=15"])  # RecBole reads sys.argv too
    with pytest.warns(UserWarning, match="'durations' is unknown"):
        Config(model="BPR", dataset="tiny", config_dict={"data_path": DATA_ROOT})
