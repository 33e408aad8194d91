"""Checkpoints are data: no entry point runs code from a file, and RecBole's checkpoints still load.

A hostile checkpoint's pickle creates a marker file when it is unpickled. Every way the plugin reads a
checkpoint (``load_data_and_model``, ``run(model_file=)``, the AlphaRec ``--checkpoint`` commands,
``collab_teacher_checkpoint``, a trainer's best-model reload) must refuse it without creating the file, with an
error naming the opt-in. RecBole's own checkpoints (a pickled ``Config``) load through the allow-list, and the
plugin's own checkpoints hold only tensors and plain data.
"""

import os
import pickle
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
    config, model, _, _, _, test_data = load_data_and_model(result["checkpoint"])
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
