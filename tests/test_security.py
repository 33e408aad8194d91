"""Checkpoints are data: no entry point runs code from a file, and RecBole's checkpoints still load.

A hostile checkpoint's pickle creates a marker file when it is unpickled. Every way the plugin reads a
checkpoint (``load_data_and_model``, ``run(model_file=)``, the AlphaRec ``--checkpoint`` commands,
``collab_teacher_checkpoint``, a trainer's best-model reload) must refuse it without creating the file, with an
error naming the opt-in. RecBole's own checkpoints (a pickled ``Config``) load through the allow-list, and the
plugin's own checkpoints hold only tensors and plain data.
"""

import os
import pickle
import re
import subprocess
import sys

import pytest
import torch

from conftest import (DATA_ROOT, LOO_EVAL_ARGS, TINY_LOAD_COL, make_tiny_config, prepare_tiny, recbole_argv,
                      tiny_settings)
from recbole_genrec.checkpoint import (
    FORMAT,
    RestoredConfig,
    UnsafeCheckpointError,
    load_checkpoint,
    plain_checkpoint_trainer,
)

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ = {"eval_args": LOO_EVAL_ARGS, "load_col": TINY_LOAD_COL, "epochs": 1, "genrec_count_flops": False,
       "train_batch_size": 256, "eval_batch_size": 256, "topk": [5], "valid_metric": "Recall@5", "state": "ERROR"}


class _Touch:
    """Unpickling this runs ``os.system('touch <marker>')``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _EvilConfig:
    """Pickles as a call of RecBole's ``Config`` whose config dict holds a string RecBole would ``eval``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from recbole.config import Config

        payload = f"__import__('os').system('touch {self.marker}')"
        return Config, ("BPR", "tiny", None, {"data_path": "x", "learning_rate": payload})


@pytest.fixture
def hostile(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.pth"
    torch.save({"config": _Touch(str(marker)), "state_dict": {}, "other_parameter": None}, str(path))
    return str(path), marker


def assert_refused(call, marker):
    with pytest.raises(UnsafeCheckpointError, match="trust_checkpoint=True.*--trust-checkpoint"):
        call()
    assert not marker.exists(), "code from the checkpoint ran"


# ----------------------------------------------------------------------------- every entry point
def test_load_data_and_model_refuses_code(hostile):
    from recbole_genrec import load_data_and_model

    path, marker = hostile
    assert_refused(lambda: load_data_and_model(path), marker)


def test_run_with_model_file_refuses_code_before_any_work(hostile, tmp_path, monkeypatch):
    from recbole_genrec import quick_start, run_builder

    path, marker = hostile
    monkeypatch.setattr(run_builder, "create_dataset", lambda config: pytest.fail("data was built first"))
    with recbole_argv():
        assert_refused(lambda: quick_start.run("SASRec", "tiny", config_dict=tiny_settings(tmp_path, SEQ),
                                               model_file=path), marker)


@pytest.mark.parametrize("command", ["zeroshot", "intention"])
def test_alpharec_checkpoint_commands_refuse_code(hostile, command, monkeypatch):
    from recbole_genrec.alpharec import cli

    path, marker = hostile
    args = ["--source=tiny", "--target=tiny"] if command == "zeroshot" else ["--dataset=tiny"]
    monkeypatch.setattr(sys, "argv", ["cli"])
    assert_refused(lambda: cli.COMMANDS[command](args + [f"--checkpoint={path}"]), marker)


def test_collab_teacher_checkpoint_refuses_code(hostile, tmp_path):
    from recbole_genrec.collabembed.teacher import load_teacher

    path, marker = hostile
    config = make_tiny_config("CollabEmbed", tmp_path, SEQ, collab_teacher_checkpoint=path)
    assert_refused(lambda: load_teacher(config, None, config["collab_teacher_checkpoint"]), marker)


def test_trainer_best_model_reload_refuses_code(hostile, tmp_path):
    from recbole_genrec.utils import get_model, get_trainer

    path, marker = hostile
    tiny = prepare_tiny(make_tiny_config("SASRec", tmp_path, SEQ))
    model = get_model("SASRec")(tiny["config"], tiny["train"].dataset)
    trainer = plain_checkpoint_trainer(get_trainer(tiny["config"]["MODEL_TYPE"], "SASRec"))(tiny["config"], model)
    assert_refused(lambda: trainer.evaluate(tiny["test"], load_best_model=True, model_file=path), marker)
    assert_refused(lambda: trainer.resume_checkpoint(path), marker)


def test_stock_recbole_loader_refuses_code_too(hostile):
    """No global patch: RecBole's own torch.load keeps torch's weights_only=True default."""
    import recbole.quick_start.quick_start as stock

    path, marker = hostile
    with pytest.raises(pickle.UnpicklingError):
        stock.load_data_and_model(path)
    assert not marker.exists()


def test_allow_listed_config_name_cannot_run_config_init(tmp_path):
    """``recbole.config.configurator.Config`` is on the allow-list only as RestoredConfig, whose __init__ refuses to
    run, so a pickle that *calls* Config (whose __init__ evals strings of its config dict) runs nothing."""
    marker = tmp_path / "pwned"
    path = str(tmp_path / "evil-config.pth")
    torch.save({"config": _EvilConfig(str(marker)), "state_dict": {}}, path)
    with pytest.raises(Exception):
        load_checkpoint(path)
    with pytest.raises(Exception):
        torch.load(path)  # the global allow-list (compat) maps the name the same way
    assert not marker.exists()


def test_opt_in_warns_and_loads_an_old_checkpoint(tmp_path):
    """A checkpoint with objects beyond the allow-list (an old or foreign file) loads only through the opt-in."""
    path = str(tmp_path / "old.pth")
    torch.save({"config": {"model": "X"}, "state_dict": {"w": torch.ones(2)}, "extra": pickle.PickleError("x")},
               path)
    with pytest.raises(UnsafeCheckpointError, match="is not plain data.*PickleError.*trust_checkpoint"):
        load_checkpoint(path)
    with pytest.warns(UserWarning, match="executes any code"):
        checkpoint = load_checkpoint(path, trust_checkpoint=True)
    assert torch.equal(checkpoint["state_dict"]["w"], torch.ones(2))


def test_cli_opt_in_flag_is_accepted():
    from recbole_genrec.cli import _prepare

    _, _, config_dict = _prepare(["--model=SASRec", "--dataset=tiny", "--trust-checkpoint"])
    assert config_dict == {"trust_checkpoint": True}


# ----------------------------------------------------------------------------- checkpoints still load
@pytest.fixture(scope="module")
def sasrec_run(tmp_path_factory):
    from recbole_genrec import run_recbole_genrec

    cache = tmp_path_factory.mktemp("security")
    with recbole_argv():
        result = run_recbole_genrec("SASRec", "tiny", config_dict=tiny_settings(cache, SEQ))
    return result, cache


def test_plugin_checkpoints_are_plain_data(sasrec_run):
    result, _ = sasrec_run
    checkpoint = torch.load(result["checkpoint"], weights_only=True)  # no allow-list needed
    assert checkpoint["format"] == FORMAT
    assert isinstance(checkpoint["config"], dict) and checkpoint["config"]["final_config_dict"]["model"] == "SASRec"
    assert checkpoint["item_tokens"][0] == "[PAD]" and len(checkpoint["item_tokens"]) == 41
    assert all(isinstance(v, torch.Tensor) for v in checkpoint["state_dict"].values())


def test_plugin_checkpoint_reloads_to_identical_scores(sasrec_run):
    from recbole_genrec import load_data_and_model

    result, _ = sasrec_run
    config, model, _, _, _, test_data = load_data_and_model(result["checkpoint"], data_path=DATA_ROOT)
    assert isinstance(config, RestoredConfig) and config["MODEL_TYPE"].name == "SEQUENTIAL"
    assert config["device"] == torch.device("cpu")
    saved = torch.load(result["checkpoint"], weights_only=True)["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key])
    from recbole_genrec.run_builder import trainer_class

    reloaded = trainer_class(config)(config, model).evaluate(test_data, load_best_model=False)
    assert dict(reloaded) == dict(result["test_result"]) and result["test_result"]["recall@5"] > 0


def test_stock_recbole_trainer_checkpoints_load_safely(sasrec_run, tmp_path):
    """A checkpoint written by RecBole's own Trainer (pickled Config, enums, numpy scalar, model class) loads with
    weights_only=True through the allow-list, both in RecBole's own resume path and in the plugin's loader."""
    import numpy as np
    from recbole.trainer import Trainer

    from recbole_genrec.utils import get_model

    tiny = prepare_tiny(make_tiny_config("SASRec", tmp_path, SEQ))
    model = get_model("SASRec")(tiny["config"], tiny["train"].dataset)
    trainer = Trainer(tiny["config"], model)  # stock: pickles the Config
    trainer.best_valid_score = np.float64(0.25)
    trainer._save_checkpoint(3, verbose=False)
    trainer.resume_checkpoint(trainer.saved_model_file)  # RecBole's own torch.load, weights_only=True
    assert trainer.start_epoch == 4
    checkpoint = load_checkpoint(trainer.saved_model_file)
    assert isinstance(checkpoint["config"], RestoredConfig) and checkpoint["config"]["model"] == "SASRec"
    assert checkpoint["best_valid_score"] == 0.25


def test_fresh_interpreter_stock_flow_loads_recbole_checkpoint(tmp_path):
    """``import recbole_genrec`` then stock RecBole: its trainer's checkpoints load with torch's safe default."""
    code = (
        "import recbole_genrec, torch, os\n"
        "from recbole.config import Config\n"
        f"c = Config(model='BPR', dataset='tiny', config_dict={{'data_path': {DATA_ROOT!r}}})\n"
        f"p = {str(tmp_path / 'c.pth')!r}\n"
        "torch.save({'config': c, 'state_dict': {}}, p)\n"
        "assert torch.load(p)['config']['model'] == 'BPR'\n"
        "print('OK')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]


def test_protocol_4_checkpoints_of_recbole_1_2_1_load_as_data(tmp_path):
    """RecBole 1.2.1 wrote pickle protocol 4, which weights_only cannot parse: the restricted unpickler reads those
    files with the same allow-list, and still refuses a hostile one."""
    import numpy as np

    config = make_tiny_config("SASRec", tmp_path, SEQ)
    path = str(tmp_path / "old-recbole.pth")
    torch.save({"config": config, "state_dict": {"w": torch.arange(3)}, "best_valid_score": np.float64(0.5)}, path,
               pickle_protocol=4)
    checkpoint = load_checkpoint(path)
    assert isinstance(checkpoint["config"], RestoredConfig) and checkpoint["config"]["model"] == "SASRec"
    assert torch.equal(checkpoint["state_dict"]["w"], torch.arange(3)) and checkpoint["best_valid_score"] == 0.5
    marker = tmp_path / "pwned"
    hostile = str(tmp_path / "hostile4.pth")
    torch.save({"config": _Touch(str(marker)), "state_dict": {}}, hostile, pickle_protocol=4)
    assert_refused(lambda: load_checkpoint(hostile), marker)


def test_alpharec_cli_refusal_is_one_line_exit_2(hostile, capsys, monkeypatch):
    from recbole_genrec.alpharec import cli

    path, marker = hostile
    monkeypatch.setattr(sys, "argv", ["cli"])
    assert cli.main(["intention", "--dataset=tiny", f"--checkpoint={path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trust-checkpoint" in err[0] and "Traceback" not in err[0]
    assert not marker.exists()


# ----------------------------------------------------------------------------- RecBole's pickle caches
def plant(path, marker):
    """A pickle at ``path`` that creates ``marker`` when it is unpickled."""
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(_Touch(str(marker)), f)


def refused_cache(path):
    return pytest.raises(UnsafeCheckpointError,
                         match=re.escape(str(path)) + ".*trust_checkpoint=True.*--trust-checkpoint")


@pytest.mark.parametrize("name,key", [("tiny-SequentialDataset.pth", None), ("tiny-for-SASRec-dataloader.pth", None),
                                      ("mine.pth", "dataset_save_path"), ("mine.pth", "dataloaders_save_path")])
def test_recbole_cache_pickles_are_refused_before_any_work(tmp_path, monkeypatch, name, key):
    from recbole_genrec import quick_start

    marker = tmp_path / "pwned"
    path = tmp_path / ("saved" if key is None else "elsewhere") / name
    plant(path, marker)
    settings = tiny_settings(tmp_path, SEQ, **({key: str(path)} if key else {}))
    monkeypatch.setattr(quick_start, "init_logger", lambda config: None)
    from recbole_genrec.preprocess import hook

    monkeypatch.setattr(hook, "prepare_features", lambda config: pytest.fail("features were built first"))
    with recbole_argv(), refused_cache(path):
        quick_start.run_recbole_genrec("SASRec", "tiny", config_dict=settings)
    assert not marker.exists()


def test_stock_recbole_data_functions_refuse_cache_pickles_too(tmp_path):
    """After ``import recbole_genrec``, RecBole's own create_dataset / data_preparation cannot unpickle either."""
    from recbole.data import create_dataset as stock_create_dataset
    from recbole.data import data_preparation as stock_data_preparation

    from recbole_genrec.data import create_dataset

    marker = tmp_path / "pwned"
    config = make_tiny_config("SASRec", tmp_path, SEQ)
    dataset = create_dataset(config)
    loaders = tmp_path / "saved" / "tiny-for-SASRec-dataloader.pth"
    plant(loaders, marker)
    with refused_cache(loaders):
        stock_data_preparation(config, dataset)
    cache = tmp_path / "saved" / "tiny-SequentialDataset.pth"
    plant(cache, marker)
    with refused_cache(cache):
        stock_create_dataset(config)
    assert not marker.exists()


def test_saving_recbole_caches_needs_the_opt_in_which_reads_them_back(tmp_path):
    from recbole_genrec.data import create_dataset
    from recbole_genrec.validation import ConfigError, check_config

    with pytest.raises(ConfigError, match="save_dataset=True writes a pickle.*save_dataset: False.*trust_checkpoint"):
        check_config(make_tiny_config("SASRec", tmp_path, SEQ, save_dataset=True))
    config = make_tiny_config("SASRec", tmp_path, SEQ, save_dataset=True, trust_checkpoint=True)
    check_config(config)
    first = create_dataset(config)
    assert (tmp_path / "saved" / "tiny-SequentialDataset.pth").exists()
    with pytest.warns(UserWarning, match="trust_checkpoint: RecBole may unpickle its dataset cache"):
        again = create_dataset(make_tiny_config("SASRec", tmp_path, SEQ, save_dataset=True, trust_checkpoint=True))
    assert again.inter_num == first.inter_num and again.item_num == first.item_num


# ----------------------------------------------------------------------------- settings RecBole evaluates
def payload(marker):
    return f"__import__('os').system('touch {marker}')"


def test_kd_dagfm_teacher_is_a_name_never_code(tmp_path):
    import recbole.model.context_aware_recommender.kd_dagfm as kd_dagfm

    from recbole_genrec.data import create_dataset
    from recbole_genrec.safety import SafetyError
    from recbole_genrec.utils import get_model
    from recbole_genrec.validation import ConfigError, check_config

    marker = tmp_path / "pwned"
    config = make_tiny_config("KD_DAGFM", tmp_path, teacher=payload(marker))
    with pytest.raises(ConfigError, match=r"teacher=.*must be one of \['CrossNet', 'CIN'\]"):
        check_config(config)
    dataset = create_dataset(config)
    with pytest.raises(SafetyError, match="teacher=.*set --teacher=CrossNet"):
        get_model("KD_DAGFM")(config, dataset)  # RecBole's eval(config['teacher']) inside
    assert not marker.exists()
    model = get_model("KD_DAGFM")(make_tiny_config("KD_DAGFM", tmp_path, teacher="CIN"), dataset)
    assert isinstance(model.teacher_network, kd_dagfm.CIN)


def test_ldiffrec_item_embeddings_are_never_unpickled(tmp_path):
    import shutil

    import numpy as np
    from recbole.data import data_preparation

    from recbole_genrec.data import create_dataset
    from recbole_genrec.safety import SafetyError
    from recbole_genrec.utils import get_model

    marker = tmp_path / "pwned"
    folder = tmp_path / "data" / "tiny"
    shutil.copytree(os.path.join(DATA_ROOT, "tiny"), folder)
    hostile = np.empty(1, dtype=object)
    hostile[0] = _Touch(str(marker))
    np.save(folder / "item_emb.npy", hostile, allow_pickle=True)
    config = make_tiny_config("LDiffRec", tmp_path, data_path=str(tmp_path / "data"), n_cate=2)
    train_data = data_preparation(config, create_dataset(config))[0]
    with pytest.raises(SafetyError, match="item_emb.npy holds Python objects.*numeric array"):
        get_model("LDiffRec")(config, train_data.dataset)  # RecBole's np.load(..., allow_pickle=True) inside
    assert not marker.exists()


def test_stock_recbole_config_never_evaluates_settings(tmp_path):
    from recbole.config import Config as StockConfig

    marker = tmp_path / "pwned"
    with recbole_argv():
        config = StockConfig(model="BPR", dataset="tiny", config_dict={"data_path": DATA_ROOT,
                                                                      "learning_rate": payload(marker), "topk": "[5]"})
    assert config["learning_rate"] == payload(marker) and config["topk"] == [5] and not marker.exists()


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/object/new:os.system",
                                 "!!python/name:os.system"])
def test_config_file_tags_are_refused_by_plugin_and_stock_config(tmp_path, tag):
    from recbole.config import Config as StockConfig

    from recbole_genrec import Config
    from recbole_genrec.safety import SafetyError

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"epochs: 1\nlearning_rate: {tag} ['touch {marker}']\n", encoding="utf-8")
    for config_class in (Config, StockConfig):
        with recbole_argv(), pytest.raises(SafetyError, match=re.escape(f"{path}, line 2, column 16: the YAML tag")):
            config_class(model="BPR", dataset="tiny", config_file_list=[str(path)],
                         config_dict={"data_path": DATA_ROOT})
    assert not marker.exists()


def test_tuning_params_file_values_are_literals(tmp_path):
    pytest.importorskip("hyperopt", reason="tuning needs the [tune] extra")
    from recbole.trainer import HyperTuning

    marker = tmp_path / "pwned"
    params = tmp_path / "evil.hyper"
    params.write_text(f"embedding_size choice [8,16]\nlearning_rate choice {payload(marker)}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{params}, line 2") + ".*not a non-empty Python list"):
        HyperTuning(lambda *a, **k: None, params_file=str(params), algo="exhaustive")
    assert not marker.exists()
    params.write_text("# a comment\nembedding_size choice [8,16]\nlearning_rate uniform 0.001,0.01\n", encoding="utf-8")
    tuner = HyperTuning(lambda *a, **k: None, params_file=str(params), algo="random")
    assert sorted(tuner.space) == ["embedding_size", "learning_rate"]


def test_scan_every_eval_and_pickle_of_recbole_is_guarded():
    """Every ``eval(``, ``allow_pickle=True`` and ``pickle.load`` in the installed RecBole is one of
    recbole_genrec.safety.GUARDED, and each guard is in place: a new occurrence (a RecBole upgrade) fails here."""
    import glob

    import numpy as np
    import recbole
    import recbole.data.utils as data_utils
    import recbole.model.context_aware_recommender.kd_dagfm as kd_dagfm
    import recbole.model.general_recommender.ldiffrec as ldiffrec
    import recbole.trainer.hyper_tuning as hyper_tuning
    from recbole.config import Config as StockConfig

    from recbole_genrec import safety

    root = os.path.dirname(recbole.__file__)
    patterns = {"eval(": re.compile(r"(?<![\w.])eval\("), "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
                "pickle.load": re.compile(r"pickle\.loads?\(|\bUnpickler\(")}
    found = {}
    for path in glob.glob(os.path.join(root, "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for call, pattern in patterns.items():
            count = len(pattern.findall(text))
            if count:
                found[(os.path.relpath(path, root).replace(os.sep, "/"), call)] = count
    assert found == {(path, call): count for path, call, count, _ in safety.GUARDED}
    assert data_utils.pickle.load is safety.guarded_pickle_load
    assert kd_dagfm.eval is safety.teacher_class
    assert ldiffrec.np.load is safety.load_npy_data_only and ldiffrec.np.zeros is np.zeros
    assert hyper_tuning.HyperTuning._build_space_from_file is safety.build_space_from_file
    assert StockConfig._convert_config_dict is safety.convert_config_dict
    assert StockConfig._load_config_files is safety.load_config_files


# ----------------------------------------------------------------------------- a restored config is data
def test_restored_config_drops_keys_that_load_files_trust_or_select_code(sasrec_run, tmp_path):
    from recbole_genrec import load_data_and_model
    from recbole_genrec.checkpoint import restored_keys

    result, _ = sasrec_run
    marker = tmp_path / "pwned"
    for name in ("dataset.pth", "loaders.pth", "teacher.pth"):
        plant(tmp_path / name, marker)
    checkpoint = torch.load(result["checkpoint"], weights_only=True)
    values = checkpoint["config"]["final_config_dict"]
    values.update({"dataset_save_path": str(tmp_path / "dataset.pth"),
                   "dataloaders_save_path": str(tmp_path / "loaders.pth"), "trust_checkpoint": True,
                   "collab_teacher_checkpoint": str(tmp_path / "teacher.pth"),
                   "teacher": payload(marker), "config_files": [str(tmp_path / "x.yaml")], "save_dataset": True})
    path = str(tmp_path / "tampered.pth")
    torch.save(checkpoint, path)
    loaded = load_checkpoint(path)
    assert {"dataset_save_path", "dataloaders_save_path", "trust_checkpoint", "collab_teacher_checkpoint", "teacher",
            "config_files", "save_dataset", "data_path"} <= set(restored_keys(loaded))
    assert loaded["config"]["dataset_save_path"] is None and loaded["config"]["teacher"] is None
    with pytest.warns(UserWarning, match="are not restored .*name files to load, turn trust on or select code"):
        config, model, *_ = load_data_and_model(path, data_path=DATA_ROOT)
    assert config["trust_checkpoint"] is False and not marker.exists()
    for key, value in model.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][key])


def test_restored_config_needs_the_callers_data_path(sasrec_run, tmp_path, monkeypatch):
    from recbole_genrec import load_data_and_model

    result, _ = sasrec_run
    monkeypatch.chdir(tmp_path)  # no shared/data next to the working directory
    monkeypatch.delenv("RECBOLE_GENREC_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match=r"does not choose the data.*pass data_path=.*trained on "
                                                + re.escape(DATA_ROOT)):
        load_data_and_model(result["checkpoint"])


def tampering_file(tmp_path, module, name, attribute):
    """A legacy-format torch file whose pickle (protocol 4, which torch's weights_only unpickler does not parse) sets
    ``attribute`` on the class ``module.name`` with BUILD: process tampering, no code."""
    import struct

    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    def text(value):
        data = value.encode()
        return b"\x8c" + struct.pack("<B", len(data)) + data  # SHORT_BINUNICODE

    # PROTO 4, the class (STACK_GLOBAL), state (None, {attribute: {}}) (NONE, EMPTY_DICT, SETITEM, TUPLE2), BUILD, STOP
    body = b"\x80\x04" + text(module) + text(name) + b"\x93" + b"N}" + text(attribute) + b"}s\x86b."
    path = tmp_path / "tamper.pth"
    with open(path, "wb") as f:
        for value in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": PROTOCOL_VERSION}):
            pickle.dump(value, f, protocol=2)
        f.write(body)
        pickle.dump([], f, protocol=2)
    return str(path)


@pytest.mark.parametrize("module,name,attribute", [("yaml.loader", "FullLoader", "yaml_constructors"),
                                                   ("recbole.config.configurator", "Config", "from_state")])
def test_fallback_unpickler_builds_no_state_onto_classes(tmp_path, module, name, attribute):
    import yaml

    from recbole_genrec import checkpoint

    target = {"FullLoader": yaml.FullLoader, "Config": RestoredConfig}[name]
    before = target.__dict__.get(attribute, "absent")
    path = tampering_file(tmp_path, module, name, attribute)
    with pytest.raises(UnsafeCheckpointError, match="is not plain data"):
        load_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError, match=f"BUILD on the class {target.__qualname__}"):
        torch.load(path, weights_only=False, pickle_module=checkpoint._restricted_pickle_module())
    assert target.__dict__.get(attribute, "absent") is before  # the class is as it was
    assert yaml.load("a: 1", Loader=yaml.FullLoader) == {"a": 1}


def test_recommend_cli_names_and_accepts_the_opt_in(hostile, tmp_path, capsys):
    from recbole_genrec import recommend

    path, marker = hostile
    assert recommend.main(["--checkpoint", path, "--user", "u001"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trust-checkpoint" in err[0] and not marker.exists()
    old = str(tmp_path / "old.pth")
    torch.save({"config": {"model": "SASRec", "dataset": "tiny"}, "state_dict": {}, "x": pickle.PickleError("x")}, old)
    with pytest.warns(UserWarning, match="executes any code"):
        code = recommend.main(["--checkpoint", old, "--user", "u001", "--trust-checkpoint", "--data_path", DATA_ROOT])
    err = capsys.readouterr().err
    assert "unrecognized arguments" not in err and "not plain data" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # (RecBole's pandas warnings aside)
    assert code == 2 and len(errors) == 1 and "does not fit the SASRec built now: missing [" in errors[0]
