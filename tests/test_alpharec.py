"""Tests for AlphaRec (recbole_genrec/model/general_recommender/alpharec.py), zero-shot transfer
(recbole_genrec/alpharec/zeroshot.py) and user intention queries (recbole_genrec/alpharec/intention.py).

tests/data/tiny (40 items, 120 users), a random 0.8/0.1/0.1 split, the real offline MiniLM
text encoder (40 short titles) and a cache folder under pytest's tmp_path.
"""

import sys

import numpy as np
import pytest
import torch

import recbole_genrec  # noqa: F401  (compat shims before RecBole)

from conftest import DATA_ROOT, make_tiny_config, prepare_tiny, recbole_argv
from recbole_genrec.alpharec.intention import encode_queries, genre_share, intention_scores, recommend_with_intention
from recbole_genrec.model.general_recommender.alpharec import AlphaRec
from recbole_genrec.preprocess.features import item_embeddings

RS_SPLIT = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"}
ALPHAREC_SETTINGS = {"eval_args": RS_SPLIT, "train_batch_size": 128, "neg_num": 16, "alpharec_hidden_size": 64,
                     "embedding_size": 32, "learning_rate": 0.005, "metrics": ["Recall", "NDCG"], "topk": [10],
                     "valid_metric": "NDCG@10"}


def make_config(cache_dir, **overrides):
    return make_tiny_config("AlphaRec", cache_dir, ALPHAREC_SETTINGS, **overrides)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cache = tmp_path_factory.mktemp("alpharec_cache")
    return dict(prepare_tiny(make_config(cache)), cache=cache)


def build_model(tiny, **overrides):
    config = make_config(tiny["cache"], **overrides) if overrides else tiny["config"]
    torch.manual_seed(0)
    return AlphaRec(config, tiny["train"].dataset)


def pairs(dataset):
    inter = dataset.inter_feat
    u = inter[dataset.uid_field].numpy()
    i = inter[dataset.iid_field].numpy()
    return set(zip(u.tolist(), i.tolist()))


def train_steps(model, train_data, epochs):
    opt = torch.optim.Adam(model.parameters(), lr=model.config["learning_rate"])
    model.train()
    for _ in range(epochs):
        for batch in train_data:
            loss = model.calculate_loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def test_user_init_is_mean_of_training_items_only(tiny):
    model = build_model(tiny)
    lm = item_embeddings(tiny["train"].dataset)
    train_pairs = pairs(tiny["train"].dataset)
    held_out = pairs(tiny["valid"].dataset) | pairs(tiny["test"].dataset)
    checked = 0
    for user in sorted({u for u, _ in held_out})[:20]:
        train_items = sorted({i for u, i in train_pairs if u == user})
        other_items = sorted({i for u, i in held_out if u == user} - set(train_items))
        expected = lm[train_items].mean(0)
        assert torch.allclose(model.user_lm[user], expected, atol=1e-5)
        if other_items:  # a mean that also used valid/test items would differ
            leaky = lm[sorted(set(train_items) | set(other_items))].mean(0)
            assert not torch.allclose(model.user_lm[user], leaky, atol=1e-4)
            checked += 1
    assert checked > 0
    assert torch.count_nonzero(model.user_lm[0]) == 0  # padding user


def test_graph_is_built_from_training_split(tiny):
    model = build_model(tiny)
    train_pairs = pairs(tiny["train"].dataset)
    all_pairs = pairs(tiny["dataset"])
    assert len(train_pairs) < len(all_pairs)
    assert model.n_train_inter == len(train_pairs)
    assert model.norm_adj._nnz() == 2 * len(train_pairs)  # both directions of every training edge
    index = model.norm_adj.coalesce().indices()
    edges = {(int(r), int(c) - model.n_users) for r, c in index.t().tolist() if r < model.n_users}
    assert edges == train_pairs


def test_cosine_scores_are_bounded(tiny):
    model = build_model(tiny)
    train_steps(model, tiny["train"], 1)
    users = torch.arange(1, model.n_users)
    from recbole.data.interaction import Interaction

    full = model.full_sort_predict(Interaction({model.USER_ID: users})).view(len(users), -1)
    assert full.shape[1] == model.n_items
    assert full.min() >= -1 - 1e-5 and full.max() <= 1 + 1e-5
    items = torch.randint(1, model.n_items, (len(users),))
    point = model.predict(Interaction({model.USER_ID: users, model.ITEM_ID: items}))
    assert point.abs().max() <= 1 + 1e-5
    assert torch.allclose(point, full[torch.arange(len(users)), items], atol=1e-5)


def test_short_training_lowers_the_loss(tiny):
    model = build_model(tiny)
    batch = next(iter(tiny["train"]))
    torch.manual_seed(1)
    with torch.no_grad():
        before = float(model.calculate_loss(batch))
    train_steps(model, tiny["train"], 3)
    torch.manual_seed(1)
    with torch.no_grad():
        after = float(model.calculate_loss(batch))
    assert after < before - 0.05, (before, after)


def test_in_batch_negatives_and_negative_sampler(tiny):
    model = build_model(tiny, neg_num=0)
    loss = model.calculate_loss(next(iter(tiny["train"])))
    assert torch.isfinite(loss) and loss.requires_grad
    model = build_model(tiny)
    users = torch.arange(1, model.n_users).repeat_interleave(4)
    neg = model.sample_negatives(users, 64)
    assert neg.min() >= 1 and neg.max() < model.n_items
    train_pairs = pairs(tiny["train"].dataset)
    hits = sum((u, i) in train_pairs for u, row in zip(users.tolist(), neg.tolist()) for i in row)
    assert hits / neg.numel() < 0.01  # positives are re-drawn (a handful may survive 10 rounds)


def test_linear_mapping_switch_changes_parameters(tiny):
    mlp = build_model(tiny)
    linear = build_model(tiny, alpharec_mapping="linear")
    mlp_shapes = {k: tuple(v.shape) for k, v in mlp.state_dict().items()}
    lin_shapes = {k: tuple(v.shape) for k, v in linear.state_dict().items()}
    d, e = mlp.lm_dim, mlp.embedding_size
    assert mlp_shapes == {"mapping.0.weight": (64, d), "mapping.0.bias": (64,),
                          "mapping.2.weight": (e, 64), "mapping.2.bias": (e,)}
    assert lin_shapes == {"mapping.weight": (e, d)}
    assert isinstance(linear.mapping, torch.nn.Linear)
    with pytest.raises(ValueError):
        build_model(tiny, alpharec_mapping="gru")


def test_intention_query_moves_the_queried_item_up(tiny):
    model = build_model(tiny)
    train_steps(model, tiny["train"], 2)
    train_ds = tiny["train"].dataset
    titles = dict(zip(*_item_titles(train_ds)))
    user = 1
    base = intention_scores(model, [user])[0]
    history = {i for u, i in pairs(train_ds) if u == user}
    base[list(history)] = -torch.inf
    # the candidate the user likes least (outside the history)
    order = torch.argsort(base, descending=True).tolist()
    target = [i for i in order if i not in history and i != 0][-1]
    rank_before = order.index(target)
    q = encode_queries(model, [titles[target]])
    with_q = intention_scores(model, [user], q, alpha=0.5)[0]
    with_q[list(history)] = -torch.inf
    rank_after = torch.argsort(with_q, descending=True).tolist().index(target)
    assert rank_after < rank_before
    # alpha = 0 is the plain model; the recommendation list API returns tokens and cosines
    assert torch.allclose(intention_scores(model, [user], q, alpha=0.0)[0, 1:],
                          model.full_sort_predict(_inter(model, [user]))[1:], atol=1e-5)
    recs = recommend_with_intention(model, train_ds, train_ds.id2token(train_ds.uid_field, user), titles[target],
                                    alpha=0.9, topk=5)
    assert len(recs) == 5 and all(-1 <= s <= 1 for _, s in recs)
    assert recs[0][0] == train_ds.id2token(train_ds.iid_field, target) or target in history


def test_genre_share_and_zero_shot_rebuild(tiny):
    from recbole_genrec.alpharec.zeroshot import build_target, evaluate_model, popularity_model

    model = build_model(tiny)
    train_steps(model, tiny["train"], 1)
    rows = genre_share(model, tiny["train"].dataset, ["makeup"], alpha=0.5, topk=5, field="categories",
                       query_template="{genre}")
    assert 0 <= rows[0]["share_without"] <= 1 and rows[0]["share_with"] >= rows[0]["share_without"]
    # zero-shot: the state dict is the mapping only and loads into a model built on another split
    ckpt = {"config": model.config, "state_dict": model.state_dict()}
    assert all(k.startswith("mapping.") for k in ckpt["state_dict"])
    other = {"data_path": DATA_ROOT, "genrec_cache_dir": str(tiny["cache"]), "show_progress": False,
             "eval_args": {"split": {"RS": [0.7, 0.1, 0.2]}, "order": "RO", "group_by": "user", "mode": "full"},
             "metrics": ["Recall"], "topk": [5], "valid_metric": "Recall@5"}
    with recbole_argv():
        config, target, train_data, _, test_data = build_target("tiny", ckpt, config_dict=other)
    for k, v in model.state_dict().items():
        assert torch.equal(target.state_dict()[k], v)
    assert target.n_train_inter != model.n_train_inter  # rebuilt from the other split
    zs = evaluate_model(config, target, test_data)
    pop = evaluate_model(config, popularity_model(config, train_data), test_data)
    assert 0 <= zs["recall@5"] <= 1 and 0 <= pop["recall@5"] <= 1


def _item_titles(dataset):
    from recbole_genrec.preprocess.text import read_item_table

    table, _ = read_item_table(dataset.config)
    token2id = dataset.field2token_id[dataset.iid_field]
    keep = [t in token2id for t in table["item_id"]]
    return [token2id[t] for t in table["item_id"][keep]], list(table["title"][keep])


def _inter(model, users):
    from recbole.data.interaction import Interaction

    return Interaction({model.USER_ID: torch.tensor(users)})


def test_zero_shot_pop_baseline_counts_every_training_interaction(tiny):
    """The zero-shot table's Pop holds the exact training counts (RecBole's Pop counts an item once per batch)."""
    from recbole_genrec.alpharec.zeroshot import popularity_model

    train = tiny["train"]
    pop = popularity_model(tiny["config"], train)
    items = train.dataset.inter_feat[train.dataset.iid_field].numpy()
    expected = np.bincount(items, minlength=train.dataset.item_num)
    assert pop.item_cnt.view(-1).tolist() == expected.tolist() and int(pop.max_cnt) == expected.max()
    assert expected.max() > 1  # repeated items: the case RecBole's batch counting gets wrong


def test_alpharec_commands_read_config_values_as_the_main_command_does(monkeypatch):
    from recbole_genrec.alpharec.cli import _parse, intention_parser, zeroshot_parser
    from recbole_genrec.cli import parse_config_overrides

    monkeypatch.setattr(sys, "argv", ["prog", "--anything"])
    extra = ["--learning_rate=1e-3", "--metrics=[Recall,NDCG]"]
    args, config_dict = _parse(zeroshot_parser(), ["--source=a", "--target=b", "--trust_checkpoint", *extra])
    assert config_dict == dict(parse_config_overrides(extra), trust_checkpoint=True)
    assert config_dict["learning_rate"] == 0.001 and sys.argv == ["prog"]
    args, config_dict = _parse(intention_parser(), ["--dataset=ml-100k", "--genres", "Action", *extra])
    assert config_dict == parse_config_overrides(extra) and args.genres == ["Action"]
