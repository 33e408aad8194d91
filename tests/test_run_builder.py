"""The run builder (recbole_genrec/run_builder.py): one data path, one trainer factory, listeners instead of patches."""

import pytest
import torch

import recbole_genrec  # noqa: F401  (compat shims before RecBole)
from conftest import DATA_ROOT, recbole_argv, tiny_settings

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


# ----------------------------------------------------------------------------- every entry point, one split
RS_SPLIT = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"}
COLD_ALPHAREC = {"eval_args": RS_SPLIT, "train_batch_size": 128, "neg_num": 8, "alpharec_hidden_size": 32,
                 "embedding_size": 16, "learning_rate": 0.005, "metrics": ["Recall", "NDCG"], "topk": [5],
                 "valid_metric": "Recall@5", "epochs": 2, "eval_step": 2, "state": "ERROR",
                 "genrec_count_flops": False, "genrec_coldstart": True, "coldstart_ratio": 0.1}


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory):
    """A cold-start AlphaRec run (its graph is built from the training split) with its checkpoint and trainer."""
    from recbole_genrec import run_recbole_genrec

    folder = tmp_path_factory.mktemp("cold")
    settings = tiny_settings(folder, COLD_ALPHAREC)
    recorder = Recorder()
    with recbole_argv():
        result = run_recbole_genrec("AlphaRec", "tiny", config_dict=settings, listeners=[recorder])
    return settings, result, recorder.trainer


def _rows(loader):
    inter = loader.dataset.inter_feat
    return {field: inter[field].tolist() for field in (loader.dataset.uid_field, loader.dataset.iid_field)}


def test_a_cold_start_reload_scores_identically_to_the_run_that_saved_it(cold_run):
    from recbole_genrec import load_data_and_model
    from recbole_genrec.run_builder import trainer_class

    settings, result, trainer = cold_run
    config, model, dataset, train, valid, test = load_data_and_model(result["checkpoint"], data_path=DATA_ROOT)
    held = result["coldstart"]["n_held_out"]
    assert held == 4 and len(train.dataset.inter_feat) == result["coldstart"]["train"]["samples"] - \
        result["coldstart"]["train"]["dropped"]
    assert trainer_class(config) is type(trainer)
    reloaded = trainer_class(config)(config, model).evaluate(test, load_best_model=False)
    assert dict(reloaded) == dict(result["test_result"])


def test_tuning_objective_runs_the_same_cold_start_protocol(cold_run):
    from recbole_genrec import objective_function

    settings, result, _ = cold_run
    with recbole_argv():
        tuned = objective_function(dict(settings, model="AlphaRec", dataset="tiny"))
    assert dict(tuned["test_result"]) == dict(result["test_result"])
    assert dict(tuned["best_valid_result"]) == dict(result["best_valid_result"])


def test_cold_start_keeps_train_sampling(cold_run):
    from recbole_genrec.data.sampling import UserUniformTrainDataLoader
    from recbole_genrec.run_builder import prepare

    settings, _, _ = cold_run
    with recbole_argv():
        from recbole_genrec import Config

        config = Config("AlphaRec", "tiny", config_dict=settings)
    data = prepare(config)
    assert config["train_sampling"] == "user_uniform" and data.coldstart is not None
    assert isinstance(data.train, UserUniformTrainDataLoader)  # was RecBole's TrainDataLoader under cold start
    held = data.coldstart["held_out"]
    rows = data.train.user_uniform_rows(range(4 * len(data.train.dataset)))
    assert not torch.isin(data.train.dataset.inter_feat["item_id"][torch.as_tensor(rows)], held).any()


def test_every_entry_point_gets_the_same_split_loaders_and_trainer(cold_run):
    from recbole_genrec import load_data_and_model, objective_function
    from recbole_genrec.data.sampling import UserUniformTrainDataLoader
    from recbole_genrec.recommend import load_model
    from recbole_genrec.run_builder import prepare, trainer_class

    settings, result, trainer = cold_run
    config, _, _, train, valid, test = load_data_and_model(result["checkpoint"], data_path=DATA_ROOT)
    direct = prepare(config)
    assert isinstance(direct.train, UserUniformTrainDataLoader)  # AlphaRec.yaml's train_sampling, cold start too
    for mine, theirs in ((train, direct.train), (valid, direct.valid), (test, direct.test)):
        assert type(mine) is type(theirs) and _rows(mine) == _rows(theirs)
    _, _, _, train_dataset, _ = load_model(result["checkpoint"], DATA_ROOT)
    assert train_dataset.inter_feat["item_id"].tolist() == _rows(train)["item_id"]
    with recbole_argv():
        tuned = objective_function(dict(settings, model="AlphaRec", dataset="tiny"))
    assert dict(tuned["test_result"]) == dict(result["test_result"])
    assert trainer_class(config) is type(trainer)
