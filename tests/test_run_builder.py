"""The run builder (recbole_genrec/run_builder.py): one data path, one trainer factory, listeners instead of patches."""

import pytest

import recbole_genrec  # noqa: F401  (compat shims before RecBole)
from conftest import recbole_argv, tiny_settings

pytestmark = pytest.mark.usefixtures("one_thread")

BPR_RUN = {"epochs": 2, "eval_step": 1, "state": "ERROR", "genrec_count_flops": False, "topk": [5],
           "valid_metric": "Recall@5"}


class Recorder:
    def __init__(self):
        self.events, self.trainer = [], None

    def trainer_built(self, trainer):
        self.trainer = trainer
        self.events.append(("built", type(trainer).__name__))

    def epoch_trained(self, trainer, epoch_idx, seconds, loss):
        assert trainer is self.trainer and seconds > 0 and float(loss) > 0
        self.events.append(("epoch", epoch_idx))

    def evaluated(self, trainer, eval_data, seconds, result):
        assert trainer is self.trainer and seconds > 0
        self.events.append(("evaluated", sorted(result)))


def test_listeners_hear_every_epoch_and_evaluation_without_patching(tmp_path):
    from recbole_genrec import run_recbole_genrec

    recorder = Recorder()
    with recbole_argv():
        result = run_recbole_genrec("BPR", "tiny", config_dict=tiny_settings(tmp_path, BPR_RUN), saved=False,
                                    listeners=[recorder])
    metrics = ("evaluated", ["hit@5", "mrr@5", "ndcg@5", "precision@5", "recall@5"])
    # built, then per epoch: training and validation; then the test
    assert recorder.events == [("built", "Trainer"), ("epoch", 0), metrics, ("epoch", 1), metrics, metrics]
    assert "_train_epoch" not in vars(recorder.trainer) and "evaluate" not in vars(recorder.trainer)  # no patches
    assert result["epochs"] == 2 and result["train_seconds_per_epoch"] > 0
