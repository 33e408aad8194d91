"""User-uniform training positives (recbole_genrec/data/sampling.py), pre-split datasets
(``benchmark_filename`` in recbole_genrec/data/__init__.py), the fast full-ranking evaluation
(recbole_genrec/trainer/fast_eval.py) and AlphaRec's official defaults (width rule, patience).

All on tests/data/tiny (120 users, 40 items; users have 5 to 13 interactions).
"""

import os

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

import recbole_genrec  # noqa: F401  (compat shims before RecBole)

from conftest import DATA_ROOT, make_tiny_config, recbole_argv, tiny_settings

pytestmark = pytest.mark.usefixtures("one_thread")

RS_SPLIT = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"}
GENERAL = {"eval_args": RS_SPLIT, "train_batch_size": 64, "metrics": ["Recall", "NDCG"], "topk": [5],
           "valid_metric": "NDCG@5", "genrec_count_flops": False, "state": "ERROR", "epochs": 3}
ALPHAREC_TINY = {"neg_num": 8, "embedding_size": 16, "learning_rate": 0.005}


def loaders(cache, model="BPR", **overrides):
    from recbole.utils import init_seed

    from recbole_genrec.data import create_dataset
    from recbole_genrec.run_builder import split

    config = make_tiny_config(model, cache, GENERAL, **overrides)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    return config, dataset, split(config, dataset)[:3]


def drawn_pairs(train_data, epochs):
    """(users, items) of every training sample over ``epochs`` passes."""
    users, items = [], []
    ds = train_data._dataset
    for _ in range(epochs):
        for batch in train_data:
            users.append(batch[ds.uid_field])
            items.append(batch[ds.iid_field])
    return torch.cat(users).numpy(), torch.cat(items).numpy()


# ----------------------------------------------------------------------------- user-uniform sampling
def test_user_uniform_sampling_draws_users_uniformly(tmp_path):
    from recbole_genrec.data.sampling import UserUniformTrainDataLoader

    _, _, (train, _, _) = loaders(tmp_path, train_sampling="user_uniform")
    assert isinstance(train, UserUniformTrainDataLoader)
    ds = train._dataset
    train_uid = ds.inter_feat[ds.uid_field].numpy()
    train_iid = ds.inter_feat[ds.iid_field].numpy()
    train_pairs = set(zip(train_uid.tolist(), train_iid.tolist()))
    users_with_items, history = np.unique(train_uid, return_counts=True)
    assert history.max() >= 2 * history.min()  # heavy and light users: the two loaders must differ

    users, items = drawn_pairs(train, epochs=20)
    assert len(users) == 20 * len(ds)  # an epoch still has one sample per training interaction
    assert set(zip(users.tolist(), items.tolist())) <= train_pairs  # only training pairs are drawn
    counts = np.array([np.sum(users == u) for u in users_with_items])
    assert chisquare(counts).pvalue > 0.05  # uniform over users (fixed seed 2020)
    # ... and within a user, uniform over their training rows (an item repeated in the history counts as often
    # as it appears, like a repeated id in the official train.txt line): pooled chi-square over users.
    stat, dof = 0.0, 0
    for u in users_with_items:
        own = items[users == u]
        item_ids, rows = np.unique(train_iid[train_uid == u], return_counts=True)
        observed = np.array([np.sum(own == i) for i in item_ids])
        expected = own.size * rows / rows.sum()
        stat += float(((observed - expected) ** 2 / expected).sum())
        dof += item_ids.size - 1
    from scipy.stats import chi2

    assert chi2.sf(stat, dof) > 0.05

    # RecBole's interaction-uniform loader on the same data draws users in proportion to their history:
    _, _, (plain, _, _) = loaders(tmp_path)
    assert type(plain).__name__ == "TrainDataLoader"
    plain_users, _ = drawn_pairs(plain, epochs=20)
    plain_counts = np.array([np.sum(plain_users == u) for u in users_with_items])
    assert chisquare(plain_counts).pvalue < 1e-6
    np.testing.assert_array_equal(plain_counts, 20 * history)


def test_user_uniform_is_seeded_and_keeps_negative_sampling(tmp_path):
    _, _, (a, _, _) = loaders(tmp_path, train_sampling="user_uniform")
    _, _, (b, _, _) = loaders(tmp_path, train_sampling="user_uniform")
    ua, ia = drawn_pairs(a, 2)
    ub, ib = drawn_pairs(b, 2)
    np.testing.assert_array_equal(ua, ub)
    np.testing.assert_array_equal(ia, ib)
    batch = next(iter(a))  # BPR: RecBole's pairwise sampler still adds one negative per positive
    assert a._dataset.iid_field in batch and "neg_" + a._dataset.iid_field in batch


def test_bad_train_sampling_is_named(tmp_path):
    with pytest.raises(ValueError, match="train_sampling must be one of"):
        loaders(tmp_path, train_sampling="per_user")


# ----------------------------------------------------------------------------- AlphaRec official defaults
def test_alpharec_official_defaults(tmp_path):
    from recbole_genrec.model.general_recommender.alpharec import AlphaRec, official_hidden_size

    assert official_hidden_size("all-MiniLM-L6-v2", 384) == 108  # 9/32 * D, the official fallback
    assert official_hidden_size("text-embedding-3-large", 3072) == 1536  # 1/2 * D
    config, _, (train, _, _) = loaders(tmp_path, "AlphaRec", **ALPHAREC_TINY)
    assert config["eval_step"] == 5 and config["stopping_step"] == 20 and config["train_sampling"] == "user_uniform"
    assert type(train).__name__ == "UserUniformTrainDataLoader"
    model = AlphaRec(config, train._dataset)
    assert model.mapping[0].out_features == official_hidden_size(config["text_encoder"], model.lm_dim) == 108
    explicit = make_tiny_config("AlphaRec", tmp_path, GENERAL, ALPHAREC_TINY, alpharec_hidden_size=48)
    assert AlphaRec(explicit, train._dataset).mapping[0].out_features == 48  # a user's width wins
    bad = make_tiny_config("AlphaRec", tmp_path, GENERAL, ALPHAREC_TINY, alpharec_hidden_size="wide")
    with pytest.raises(ValueError, match="alpharec_hidden_size must be a positive integer or 'auto'"):
        AlphaRec(bad, train._dataset)


# ----------------------------------------------------------------------------- pre-split datasets
def write_presplit(folder, name="tinysplit"):
    """tests/data/tiny split per user by time: last item test, second to last valid, the rest train."""
    import pandas as pd

    src = os.path.join(DATA_ROOT, "tiny")
    inter = pd.read_csv(os.path.join(src, "tiny.inter"), sep="\t")
    inter = inter.sort_values(["user_id:token", "timestamp:float"], kind="stable")
    rank = inter.groupby("user_id:token").cumcount(ascending=False)  # 0 = last
    target = folder / name
    target.mkdir(parents=True)
    parts = {"train": inter[rank >= 2], "valid": inter[rank == 1], "test": inter[rank == 0]}
    for part, frame in parts.items():
        frame.to_csv(target / f"{name}.{part}.inter", sep="\t", index=False)
    with open(os.path.join(src, "tiny.item")) as f_in, open(target / f"{name}.item", "w") as f_out:
        f_out.write(f_in.read())
    return parts


def test_presplit_dataset_runs_end_to_end(tmp_path):
    from recbole_genrec import run_recbole_genrec
    from recbole_genrec.data import create_dataset
    from recbole_genrec.run_builder import split

    parts = write_presplit(tmp_path / "data")
    settings = tiny_settings(tmp_path / "cache", GENERAL, ALPHAREC_TINY, data_path=str(tmp_path / "data"),
                             benchmark_filename=["train", "valid", "test"], epochs=2, eval_step=1)
    settings["eval_args"] = {"order": "RO", "group_by": "user", "mode": "full"}  # the files are the split
    with recbole_argv():
        result = run_recbole_genrec("AlphaRec", "tinysplit", config_dict=settings, saved=False)
    assert set(result["test_result"]) == {"recall@5", "ndcg@5"} and result["epochs"] == 2
    assert 0 <= result["test_result"]["recall@5"] <= 1

    # The three loaders hold exactly the three files' interactions.
    from recbole_genrec import Config

    with recbole_argv():
        config = Config(model="AlphaRec", dataset="tinysplit", config_dict=settings)
    dataset = create_dataset(config)
    train, valid, test, _ = split(config, dataset)
    for loader, part in ((train, "train"), (valid, "valid"), (test, "test")):
        ds = loader._dataset
        got = set(zip(ds.id2token(ds.uid_field, ds.inter_feat[ds.uid_field].numpy()).tolist(),
                      ds.id2token(ds.iid_field, ds.inter_feat[ds.iid_field].numpy()).tolist()))
        frame = parts[part]
        assert got == set(zip(frame["user_id:token"], frame["item_id:token"]))


def test_presplit_missing_part_is_named(tmp_path):
    from recbole_genrec.data import resolve_data_path

    write_presplit(tmp_path / "data")
    os.remove(tmp_path / "data" / "tinysplit" / "tinysplit.valid.inter")
    config = {"dataset": "tinysplit", "data_path": str(tmp_path / "data" / "tinysplit"),
              "benchmark_filename": ["train", "valid", "test"]}
    with pytest.raises(FileNotFoundError, match=r"lacks tinysplit\.valid\.inter"):
        resolve_data_path(config)
    config["benchmark_filename"] = ["train", "test"]  # the parts that exist
    assert resolve_data_path(config) == str(tmp_path / "data" / "tinysplit")


# ----------------------------------------------------------------------------- fast full-ranking evaluation
ALL_METRICS = ["Recall", "NDCG", "Hit", "MRR", "Precision", "MAP", "ItemCoverage", "GiniIndex",
               "AveragePopularity", "TailPercentage"]


@pytest.mark.parametrize("model_name", ["AlphaRec", "BPR", "LightGCN"])
def test_fast_eval_equals_recbole_metrics(tmp_path, model_name):
    from recbole.trainer import Trainer

    from recbole_genrec.trainer import fast_eval
    from recbole_genrec.run_builder import trainer_class
    from recbole_genrec.utils import get_model

    extra = ALPHAREC_TINY if model_name == "AlphaRec" else {}
    config, _, (train, valid, test) = loaders(tmp_path, model_name, metrics=ALL_METRICS, topk=[1, 5, 10],
                                              eval_batch_size=80, **extra)  # RecBole: 2 users per batch
    torch.manual_seed(0)
    model = get_model(model_name)(config, train._dataset)
    trainer = trainer_class(config)(config, model)
    assert isinstance(trainer, fast_eval.FastFullSortEvalMixin)
    trainer.fit(train, valid_data=None, saved=False, verbose=False)  # a few epochs: non-trivial rankings
    trainer.eval_collector.data_collect(train)

    calls = {"n": 0}
    predict = model.full_sort_predict

    def counted(interaction):
        calls["n"] += 1
        return predict(interaction)

    model.full_sort_predict = counted
    for loader in (valid, test):
        calls["n"] = 0
        fast = trainer.evaluate(loader, load_best_model=False)
        assert calls["n"] == 1  # the factor check only: the users were scored from the factors
        slow = Trainer.evaluate(trainer, loader, load_best_model=False)  # RecBole's own loop
        assert calls["n"] > 1
        assert list(fast) == list(slow) and len(fast) == len(ALL_METRICS) * 3
        assert dict(fast) == dict(slow)
    assert fast["recall@10"] > 0


def test_fast_eval_chunks_and_opt_out(tmp_path):
    from recbole.trainer import Trainer

    from recbole_genrec.trainer import fast_eval
    from recbole_genrec.run_builder import trainer_class
    from recbole_genrec.utils import get_model

    config, _, (train, _, test) = loaders(tmp_path, "BPR", metrics=["Recall", "NDCG", "MRR"], topk=[3, 10])
    torch.manual_seed(0)
    model = get_model("BPR")(config, train._dataset)
    trainer = trainer_class(config)(config, model)
    trainer.fit(train, saved=False, verbose=False)
    reference = Trainer.evaluate(trainer, test, load_best_model=False)
    factors = fast_eval.matrix_factors(model, test, test._dataset.item_num)
    for chunk_users in (1, 7, 1000):  # chunk boundaries never change a number
        fast_eval.fast_full_sort_collect(trainer.eval_collector, test, *factors,
                                         chunk_elements=chunk_users * test._dataset.item_num)
        trainer.eval_collector.model_collect(model)
        assert dict(trainer.evaluator.evaluate(trainer.eval_collector.get_data_struct())) == dict(reference)
    config["fast_full_sort_eval"] = False
    calls = {"n": 0}
    predict = model.full_sort_predict
    model.full_sort_predict = lambda inter: (calls.__setitem__("n", calls["n"] + 1), predict(inter))[1]
    assert dict(trainer.evaluate(test, load_best_model=False)) == dict(reference)
    assert calls["n"] == len(test)  # opted out: RecBole's loop, one call per batch


def test_fast_eval_declines_a_model_that_is_not_a_matrix_product(tmp_path):
    from recbole.trainer import Trainer

    from recbole_genrec.trainer import fast_eval
    from recbole_genrec.run_builder import trainer_class
    from recbole_genrec.utils import get_model

    config, _, (train, _, test) = loaders(tmp_path, "BPR")
    torch.manual_seed(0)
    model = get_model("BPR")(config, train._dataset)
    predict = model.full_sort_predict
    model.full_sort_predict = lambda inter: torch.sigmoid(predict(inter))  # monotone, but not U @ I.T
    assert fast_eval.matrix_factors(model, test, test._dataset.item_num) is None
    trainer = trainer_class(config)(config, model)
    trainer.eval_collector.data_collect(train)
    assert dict(trainer.evaluate(test, load_best_model=False)) == dict(Trainer.evaluate(trainer, test,
                                                                                         load_best_model=False))


def test_fast_eval_hands_rank_metrics_to_recbole_collector(tmp_path):
    """GAUC needs rec.meanrank: each chunk goes through RecBole's own collection, with the same result."""
    from recbole.trainer import Trainer

    from recbole_genrec.run_builder import trainer_class
    from recbole_genrec.utils import get_model

    config, _, (train, _, test) = loaders(tmp_path, "BPR", metrics=["GAUC", "Recall", "MRR"], topk=[5])
    torch.manual_seed(0)
    model = get_model("BPR")(config, train._dataset)
    trainer = trainer_class(config)(config, model)
    trainer.fit(train, saved=False, verbose=False)
    fast = trainer.evaluate(test, load_best_model=False)
    assert set(fast) == {"gauc", "recall@5", "mrr@5"}
    assert dict(fast) == dict(Trainer.evaluate(trainer, test, load_best_model=False))
