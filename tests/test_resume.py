"""Training that resumes to the epoch (recbole_genrec.trainer.resume).

A run killed with SIGKILL in the middle of an epoch and started again must end exactly like a run that was never
interrupted: the same epochs, per-epoch losses, best validation epoch and test metrics. Each run is a fresh
interpreter (``_SCRIPT``) on tests/data/tiny with one thread, which kills itself at a given training batch.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import DATA_ROOT, LOO_EVAL_ARGS, TINY_LOAD_COL, TINY_T5, TINY_TIGER, make_tiny_config, recbole_argv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    import recbole_genrec
    from recbole_genrec.utils import get_model

    model_name, config_dict, kill_at, out = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    sys.argv = sys.argv[:1]
    model_class = get_model(model_name)
    calls = [0]
    calculate_loss = model_class.calculate_loss

    def dying_loss(self, interaction):
        calls[0] += 1
        if calls[0] == kill_at:  # in the middle of an epoch, after some optimizer steps of it
            os.kill(os.getpid(), signal.SIGKILL)
        return calculate_loss(self, interaction)

    model_class.calculate_loss = dying_loss
    result = recbole_genrec.run_recbole_genrec(model=model_name, dataset="tiny", config_dict=config_dict)
    with open(out, "w") as f:
        json.dump({"epochs": result["epochs"], "train_losses": result["train_losses"],
                   "best_valid_result": result["best_valid_result"], "test_result": result["test_result"],
                   "valid": result.get("valid_history"), "train_seconds": result["train_seconds"]}, f)
    """
)

SASREC = {"eval_args": LOO_EVAL_ARGS, "load_col": TINY_LOAD_COL, "MAX_ITEM_LIST_LENGTH": 10, "hidden_size": 16,
          "inner_size": 32, "n_layers": 1, "n_heads": 1, "train_batch_size": 64, "loss_type": "CE",
          "train_neg_sample_args": None, "metrics": ["Recall", "NDCG"], "topk": [5], "valid_metric": "NDCG@5",
          "epochs": 6, "eval_step": 1, "stopping_step": 10, "learning_rate": 0.01}
TIGER = dict(TINY_T5, **dict(TINY_TIGER, epochs=4, eval_step=1))


def _run(tmp_path, model, settings, name, kill_at=0):
    config = dict(settings, data_path=DATA_ROOT, genrec_cache_dir=str(tmp_path / "cache"), seed=2020,
                  checkpoint_dir=str(tmp_path / f"saved-{name}"), show_progress=False, resume_training=True,
                  resume_name=name, genrec_count_flops=False, state="ERROR")
    out = tmp_path / f"{name}.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, model, json.dumps(config), str(kill_at), str(out)],
                          capture_output=True, text=True, timeout=600, cwd=str(tmp_path), env=env)
    if kill_at:
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
        return None
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("model,settings,kill_at", [("SASRec", SASREC, 18), ("TIGER", TIGER, 18)])
def test_killed_run_resumes_to_the_same_result(tmp_path, model, settings, kill_at):
    """SIGKILL in the middle of the second epoch (tiny: 12 batches an epoch), then a restart: the same epoch count,
    per-epoch losses, best validation and test metrics as the uninterrupted run, bit for bit."""
    whole = _run(tmp_path, model, settings, "whole")
    assert _run(tmp_path, model, settings, "cut", kill_at=kill_at) is None
    state = tmp_path / "cache" / "tiny" / "runs" / "cut" / "state.pth"
    assert state.is_file()  # the first epoch finished before the kill
    assert torch.load(state, weights_only=True)["next_epoch"] == 1
    resumed = _run(tmp_path, model, settings, "cut")
    assert resumed["epochs"] == whole["epochs"] == settings["epochs"]
    assert resumed["train_losses"] == whole["train_losses"]
    assert resumed["best_valid_result"] == whole["best_valid_result"]
    assert resumed["test_result"] == whole["test_result"]
    again = _run(tmp_path, model, settings, "cut")  # a finished state: no training, the same test
    assert again["test_result"] == whole["test_result"] and again["train_losses"] == whole["train_losses"]
    assert again["train_seconds"] == resumed["train_seconds"] > 0  # every restart's seconds, not this process's


def _sasrec_trainer(tmp_path, **overrides):
    import recbole_genrec  # noqa: F401
    from recbole_genrec import run_builder
    from recbole_genrec.trainer.resume import ResumableTraining

    settings = dict(SASREC, resume_training=True, resume_name="probe", **overrides)
    config = make_tiny_config("SASRec", tmp_path, settings)
    data = run_builder.prepare(config)
    model, trainer = run_builder.build(config, data)
    assert isinstance(trainer, ResumableTraining)
    return trainer, data.train, data.valid


def test_resume_state_of_another_config_is_refused_naming_the_key(tmp_path):
    with recbole_argv():
        trainer, train, valid = _sasrec_trainer(tmp_path, epochs=1)
        trainer.fit(train, valid, saved=False)
        state = torch.load(os.path.join(tmp_path, "tiny", "runs", "probe", "state.pth"), weights_only=True)
        assert state["finished"] and state["next_epoch"] == 1 and len(state["history"]["train"]) == 1
        other, train, valid = _sasrec_trainer(tmp_path, epochs=1, learning_rate=0.002)
        with pytest.raises(ValueError, match=r"learning_rate: 0\.01 there, 0\.002 here.*Delete"):
            other.fit(train, valid, saved=False)
        same, train, valid = _sasrec_trainer(tmp_path, epochs=1, show_progress=True)  # not a training setting
        assert same.fit(train, valid, saved=False)[0] == trainer.best_valid_score


def test_a_finished_state_is_tested_with_every_metric(tmp_path):
    """A finished state trains nothing, yet the test sees the training data as after a fit: ItemCoverage needs it."""
    from recbole_genrec import run_builder

    metrics = {"metrics": ["Recall", "NDCG", "ItemCoverage"], "epochs": 1}
    with recbole_argv():
        first, train, valid = _sasrec_trainer(tmp_path, **metrics)
        first.fit(train, valid)
        again, train, valid = _sasrec_trainer(tmp_path, **metrics)
        again.fit(train, valid)  # finished: no training
        test = run_builder.prepare(again.config).test
        assert again.evaluate(test) == first.evaluate(test)
        assert 0 < again.evaluate(test)["itemcoverage@5"] <= 1


def test_config_differences_compare_the_keys_both_sides_have():
    from recbole_genrec.trainer.resume import config_differences

    saved = {"learning_rate": 0.01, "epochs": 5, "removed_key": 1, "data_path": "/a"}
    current = {"learning_rate": 0.01, "epochs": 6, "new_key": False, "data_path": "/b"}
    assert config_differences(saved, current) == ["epochs: 5 there, 6 here"]


def test_a_model_declares_the_keys_that_change_neither_its_training_nor_its_selection(tmp_path):
    """RPG under exact scoring: a state written with other graph-decoding settings resumes; under graph decoding, or
    with another training setting, it is refused."""
    import recbole_genrec  # noqa: F401
    from recbole_genrec import run_builder
    from recbole_genrec.trainer.resume import inert_keys
    from recbole_genrec.utils import get_model
    from test_rpg import TINY_RPG

    def trainer(**overrides):
        settings = dict(TINY_RPG, epochs=1, resume_training=True, resume_name="rpg", **overrides)
        config = make_tiny_config("RPG", tmp_path, settings)
        data = run_builder.prepare(config)
        return run_builder.build(config, data)[1], data.train, data.valid

    with recbole_argv():
        first, train, valid = trainer(rpg_n_edges=100, rpg_num_beams=10)
        first.fit(train, valid, saved=False)
        same, train, valid = trainer(rpg_n_edges=200, rpg_num_beams=20)  # graph settings: unused by exact scoring
        assert same.fit(train, valid, saved=False)[0] == first.best_valid_score
        other, train, valid = trainer(rpg_n_edges=200, learning_rate=0.002)
        with pytest.raises(ValueError, match=r"learning_rate: 0\.01 there, 0\.002 here"):
            other.fit(train, valid, saved=False)
    rpg, sasrec = get_model("RPG"), get_model("SASRec")
    assert "rpg_n_edges" in inert_keys(rpg, {"rpg_decoding": "exact"})
    assert not inert_keys(rpg, {"rpg_decoding": "graph"}) and not inert_keys(sasrec, {})


def test_resume_state_of_other_data_is_refused(tmp_path):
    from recbole_genrec.trainer import resume

    with recbole_argv():
        trainer, train, valid = _sasrec_trainer(tmp_path, epochs=1)
        trainer.fit(train, valid, saved=False)
        other, train, valid = _sasrec_trainer(tmp_path, epochs=1)
        train.dataset.inter_feat[train.dataset.iid_field][0] += 1  # one training interaction changed
        assert resume.data_fingerprint(train, valid) != trainer._resume_data
        with pytest.raises(ValueError, match="training data differ"):
            other.fit(train, valid, saved=False)
