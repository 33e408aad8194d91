"""Plugin plumbing: lookups with fallback, config layering, clear errors, entry points."""

import json
import os
import sys

import pytest

import recbole_genrec
from conftest import DATA_ROOT, tiny_settings
from recbole_genrec import Config, get_model, get_trainer, list_models, run_recbole_genrec
from recbole_genrec.cli import main as cli_main
from recbole_genrec.data import resolve_data_path

HERE = os.path.dirname(os.path.abspath(__file__))
# one short run of a stock model; the preprocessing cache in tmp_path/cache, checkpoints in tmp_path/saved
RUN_SETTINGS = {"epochs": 1, "state": "ERROR", "genrec_count_flops": False, "train_batch_size": 256,
                "eval_batch_size": 256, "topk": [5], "valid_metric": "Recall@5"}


def tiny_config(tmp_path, **extra):
    return tiny_settings(tmp_path / "cache", RUN_SETTINGS, checkpoint_dir=str(tmp_path / "saved"), **extra)


def test_get_model_prefers_plugin_then_falls_back():
    from recbole.model.general_recommender.bpr import BPR
    from recbole.model.sequential_recommender.sasrec import SASRec

    assert get_model("BPR") is BPR
    assert get_model("SASRec") is SASRec
    alpharec = get_model("AlphaRec")
    assert alpharec.__module__.startswith("recbole_genrec.model")


def test_unknown_model_lists_models():
    with pytest.raises(ValueError) as err:
        get_model("Tigerr")
    message = str(err.value)
    assert "Unknown model 'Tigerr'" in message
    assert "AlphaRec" in message and "SASRec" in message and "NGCF" in message


def test_get_trainer_looks_up_and_trainer_class_composes(tmp_path):
    from recbole.trainer import Trainer, TraditionalTrainer
    from recbole.utils import ModelType

    from recbole_genrec.checkpoint import PlainCheckpoints
    from recbole_genrec.run_builder import trainer_class
    from recbole_genrec.trainer import GenerativeTrainer
    from recbole_genrec.trainer.events import RunEvents
    from recbole_genrec.trainer.fast_eval import FastFullSortEvalMixin

    assert get_trainer(ModelType.GENERAL, "BPR") is Trainer  # a lookup: RecBole's choice
    assert get_trainer(ModelType.TRADITIONAL, "ItemKNN") is TraditionalTrainer
    assert get_trainer(ModelType.SEQUENTIAL, "TIGER") is GenerativeTrainer  # the plugin's <Model>Trainer
    bpr = trainer_class(Config("BPR", "tiny", config_dict=tiny_config(tmp_path)))
    assert bpr.__mro__[1:5] == (RunEvents, PlainCheckpoints, FastFullSortEvalMixin, Trainer)
    assert bpr.fit is Trainer.fit and trainer_class(Config("BPR", "tiny", config_dict=tiny_config(tmp_path))) is bpr
    tiger = trainer_class(Config("TIGER", "tiny", config_dict=tiny_config(tmp_path)))
    assert tiger.__mro__[1:3] == (RunEvents, GenerativeTrainer)  # it has checkpoints and sharding of its own


def test_list_models_groups_both_packages():
    models = list_models()
    assert "AlphaRec" in models["recbole_genrec"]["general_recommender"]
    assert "LightGCN" in models["recbole"]["general_recommender"]
    assert "BERT4Rec" in models["recbole"]["sequential_recommender"]


def test_config_layers_plugin_yaml_after_recbole():
    config = Config(model="AlphaRec", dataset="tiny", config_dict={"data_path": DATA_ROOT})
    assert config["genrec_features"] == ["text_emb"]  # properties/model/AlphaRec.yaml
    assert config["text_encoder"] == "all-MiniLM-L6-v2"  # properties/overall.yaml
    # RecBole's overall.yaml underneath: keys only it sets, and one both set, where the plugin's yaml wins
    assert config["learner"] == "adam" and config["metric_decimal_place"] == 4 and config["epochs"] == 300
    assert config["train_batch_size"] == 4096  # AlphaRec.yaml over RecBole's 2048
    user = Config(model="AlphaRec", dataset="tiny", config_dict={"data_path": DATA_ROOT, "text_encoder": "x"})
    assert user["text_encoder"] == "x"  # the user's settings win


def test_sequential_sampling_follows_loss_type():
    ce = Config(model="SASRec", dataset="tiny", config_dict={"data_path": DATA_ROOT})
    assert ce["train_neg_sample_args"]["distribution"] == "none"
    bpr = Config(model="SASRec", dataset="tiny", config_dict={"data_path": DATA_ROOT, "loss_type": "BPR"})
    assert bpr["train_neg_sample_args"]["distribution"] == "uniform"
    general = Config(model="BPR", dataset="tiny", config_dict={"data_path": DATA_ROOT})
    assert general["train_neg_sample_args"]["distribution"] == "uniform"


def test_unknown_dataset_lists_searched_paths(tmp_path):
    config = Config(model="BPR", dataset="no-such-set", config_dict={"data_path": str(tmp_path)})
    with pytest.raises(FileNotFoundError) as err:
        resolve_data_path(config)
    message = str(err.value)
    assert "no-such-set" in message
    assert os.path.join(str(tmp_path), "no-such-set", "no-such-set.inter") in message
    assert "dataset_example" in message


def test_ml100k_resolves_to_the_wheel(tmp_path):
    config = Config(model="BPR", dataset="ml-100k", config_dict={"data_path": str(tmp_path)})
    path = resolve_data_path(config)
    assert os.path.isfile(os.path.join(path, "ml-100k.inter"))


def test_cli_errors_are_messages_not_tracebacks(capsys):
    assert cli_main(["--model=NoSuchModel", "--dataset=tiny"]) == 2
    err = capsys.readouterr().err
    assert "Unknown model 'NoSuchModel'" in err and "Traceback" not in err


def test_cli_list_models(capsys):
    assert cli_main(["--list-models"]) == 0
    out = capsys.readouterr().out
    assert "recbole_genrec:" in out and "sequential_recommender:" in out and "SASRec" in out


@pytest.mark.slow
@pytest.mark.parametrize("model", ["NGCF", "LightGCN", "SASRec", "BERT4Rec"])
def test_stock_models_run_with_item_metrics_and_best_model(tmp_path, model):
    metrics = ["Recall", "NDCG", "ItemCoverage", "GiniIndex"]
    result = run_recbole_genrec(model, "tiny", config_dict=tiny_config(tmp_path, metrics=metrics))
    test = result["test_result"]
    assert set(test) == {"recall@5", "ndcg@5", "itemcoverage@5", "giniindex@5"}
    assert 0 < test["itemcoverage@5"] <= 1 and 0 <= test["giniindex@5"] <= 1
    assert os.path.isfile(result["checkpoint"])  # evaluate(load_best_model=True) read it back
    assert result["params"] > 0 and result["train_seconds_per_epoch"] > 0


@pytest.mark.slow
def test_side_by_side_writes_one_table(tmp_path, capsys):
    from recbole_genrec.quick_start import run_side_by_side

    results, paths = run_side_by_side(
        ["Pop", "BPR"], "tiny", config_dict=tiny_config(tmp_path), results_dir=str(tmp_path / "results")
    )
    out = capsys.readouterr().out
    assert "| Pop |" in out and "| BPR |" in out and "test recall@5" in out
    assert [r["model"] for r in results] == ["Pop", "BPR"]
    with open([p for p in paths if p.endswith(".json")][0]) as f:
        rows = json.load(f)["rows"]
    assert [r["model"] for r in rows] == ["Pop", "BPR"]
    assert all("test recall@5" in r and "s/epoch" in r and "params" in r for r in rows)


@pytest.mark.slow
def test_patch_lets_stock_run_recbole_find_plugin_models(tmp_path):
    import recbole.quick_start.quick_start as qs

    recbole_genrec.patch()
    assert qs.get_model("AlphaRec") is get_model("AlphaRec")
    assert qs.Config is Config
    result = qs.run_recbole(model="BPR", dataset="tiny", config_dict=tiny_config(tmp_path))
    assert "recall@5" in result["test_result"]
    assert recbole_genrec.patch() is True  # idempotent


def test_every_subpackage_is_packaged():
    """A subpackage missing from pyproject's explicit list would vanish from the wheel."""
    import tomllib

    root = os.path.dirname(HERE)
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = {"recbole_genrec.properties"}
    for folder, _, files in os.walk(os.path.join(root, "recbole_genrec")):
        if "__init__.py" in files:
            found.add(os.path.relpath(folder, root).replace(os.sep, "."))
    assert found == listed


def test_stand_alone_entry_points_parse_yaml_overrides():
    """--key=value options of the zero-shot / intention commands: YAML values, anything else rejected by name."""
    from recbole_genrec.cli import parse_config_overrides

    parsed = parse_config_overrides(["--topk=[10,20]", "--metrics=[Recall,NDCG]", "--epochs=3", "--tau=0.2"])
    assert parsed == {"topk": [10, 20], "metrics": ["Recall", "NDCG"], "epochs": 3, "tau": 0.2}
    with pytest.raises(SystemExit, match="'stray'.*--key=value"):
        parse_config_overrides(["stray"])


def test_cli_yaml_lists_reach_recbole_as_lists(monkeypatch):
    """run_recbole_genrec.py --metrics=[Recall,NDCG]: the plugin parses YAML and Python values itself and hands
    RecBole a config dict (RecBole's eval-based parser would keep the YAML list as a string)."""
    from recbole_genrec.cli import parse_config_overrides

    parsed = parse_config_overrides(["--metrics=[Recall,NDCG]", "--topk=[5,10]", "--eval_args={'mode': 'full'}",
                                     "--epochs=2", "--learning_rate=1e-3", "--note=[unclosed"])
    assert parsed == {"metrics": ["Recall", "NDCG"], "topk": [5, 10], "eval_args": {"mode": "full"}, "epochs": 2,
                      "learning_rate": 0.001, "note": "[unclosed"}
    monkeypatch.setattr(sys, "argv", ["run_recbole_genrec.py"])
    config = Config(model="Pop", dataset="tiny", config_dict=dict(parsed, data_path=DATA_ROOT))
    assert config["metrics"] == ["Recall", "NDCG"] and config["topk"] == [5, 10] and config["epochs"] == 2


def test_checkpoint_allow_list_touches_no_deprecated_numpy_module():
    import warnings

    from recbole_genrec import checkpoint

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = [name for _, name in (e for e in checkpoint._numpy_globals() if isinstance(e, tuple))]
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)], [str(w.message) for w in caught]
    assert {"numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar"} <= set(names)


def test_preprocess_command_parses_overrides_like_the_main_command_line(monkeypatch):
    from recbole_genrec.preprocess.__main__ import build_config, parse_args

    monkeypatch.setattr(sys, "argv", ["python -m recbole_genrec.preprocess", "--epochs=[unread]"])
    args, extra = parse_args(["--dataset=tiny", f"--data_path={DATA_ROOT}", "--metrics=[Recall,NDCG]",
                              "--sid_params={niter: 5}", "--topk=[5]"])
    config = build_config(args, extra)
    assert config["metrics"] == ["Recall", "NDCG"] and config["sid_params"] == {"niter": 5} and config["topk"] == [5]
    assert config["epochs"] == 300 and sys.argv[1:] == ["--epochs=[unread]"]  # RecBole read no command line
