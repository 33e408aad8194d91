# coding: utf-8
"""Tests for PRORec (recbole_genrec/model/sequential_recommender/prorec.py) and its stage I (recbole_genrec/prorec).

tests/data/tiny (40 items in 5 themes, 120 users walking through one theme), leave-one-out split, the offline MiniLM
text encoder, a small stage I (d = 32, 2 code levels of 4 + collision level), a 1+1-layer T5 with d_model 32 and a
cache under tmp_path.
"""

import copy
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

import recbole_genrec  # noqa: F401  (compat shims before RecBole)
from recbole.utils import init_seed

from conftest import DATA_ROOT, TINY_T5, TINY_TIGER, make_tiny_config, prepare_tiny, recbole_argv, tiny_settings
from recbole_genrec import run_recbole_genrec
from recbole_genrec.prorec import AdaLNAdapter, popularity_buckets, stage1 as stage1_module
from recbole_genrec.prorec.data import item_counts, user_sequences, windows
from recbole_genrec.prorec.losses import sampled_next_item_loss
from recbole_genrec.prorec.stage1 import alignment_stats, build_modules, stage1_params, train_alignment
from recbole_genrec.model.sequential_recommender.prorec import PRORec
from recbole_genrec.model.sequential_recommender.tiger import TIGER
from recbole_genrec.preprocess.features import item_embeddings
from recbole_genrec.trainer import GenerativeTrainer
from recbole_genrec.utils import get_trainer

torch.set_num_threads(1)

PROREC_SETTINGS = {
    # stage I
    "prorec_hidden_size": 32, "prorec_inner_size": 64, "prorec_max_len": 10, "prorec_stage1_epochs": 30,
    "prorec_stage1_batch_size": 32, "prorec_stage1_lr": 0.005, "prorec_align_items": 40, "prorec_lambda": 1.0,
    "prorec_code_levels": 2, "prorec_codebook_size": 4,
    # stage II
    **TINY_T5, **TINY_TIGER, "epochs": 8,
}


def make_config(cache_dir, **overrides):
    return make_tiny_config("PRORec", cache_dir, PROREC_SETTINGS, **overrides)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cache = tmp_path_factory.mktemp("prorec_cache")
    tiny = dict(prepare_tiny(make_config(cache)), cache=cache)
    init_seed(tiny["config"]["seed"], tiny["config"]["reproducibility"])
    return dict(tiny, model=PRORec(tiny["config"], tiny["train"].dataset))


def build(tiny, **overrides):
    config = make_config(tiny["cache"], **overrides)
    init_seed(config["seed"], config["reproducibility"])
    return PRORec(config, tiny["train"].dataset)


# ------------------------------------------------------------------------------------------------ stage I data
@pytest.mark.slow
def test_stage1_sees_exactly_the_training_sequences(tiny):
    dataset, train = tiny["dataset"], tiny["train"].dataset
    sequences = user_sequences(train)
    raw = pd.read_csv(os.path.join(DATA_ROOT, "tiny", "tiny.inter"), sep="\t", dtype=str)
    raw.columns = [c.split(":")[0] for c in raw.columns]
    raw = raw.assign(t=raw["timestamp"].astype(float)).sort_values(["user_id", "t"], kind="stable")
    raw["iid"] = dataset.token2id(dataset.iid_field, raw["item_id"].tolist())
    full = raw.groupby("user_id", sort=False)["iid"].apply(list)
    expected = sorted(seq[:-2] for seq in full if len(seq) >= 4)  # leave-one-out: drop the valid + test items
    assert sorted(s.tolist() for s in sequences) == expected
    # windows of max_len + 1 items predict every target s[1:] exactly once
    max_len = 3
    w = windows(sequences, max_len)
    assert w.shape[1] == max_len + 1
    targets = np.sort(w[:, 1:][w[:, 1:] != 0].numpy())
    assert np.array_equal(targets, np.sort(np.concatenate([s[1:] for s in sequences])))


def test_adaln_starts_as_layer_norm_and_buckets_popularity():
    torch.manual_seed(0)
    adapter = AdaLNAdapter(8, 6, hidden_dim=16, cond="popularity", n_buckets=4)
    x = torch.randn(5, 8)
    buckets = popularity_buckets(torch.tensor([0, 1, 3, 7, 1000]), 4)
    assert buckets.tolist() == [0, 1, 2, 3, 3]
    hidden = torch.nn.functional.layer_norm(adapter.mlp(x), (6,))
    assert torch.allclose(adapter(x, buckets), hidden, atol=1e-6)  # zero-initialised modulation
    with pytest.raises(ValueError):
        AdaLNAdapter(8, 6, hidden_dim=16, cond="item_id", n_buckets=4)


# --------------------------------------------------------------------------------------------- alignment
@pytest.mark.slow
def test_alignment_loss_decreases_and_matches_pairs(tiny):
    train = tiny["train"].dataset
    params = stage1_params(tiny["config"])
    sequences = user_sequences(train)
    text = item_embeddings(train)  # [n_items, D]
    buckets = popularity_buckets(item_counts(sequences, text.size(0)), params["prorec_adaln_buckets"])
    torch.manual_seed(0)
    encoder, adapter = build_modules(params, text.size(0), text.size(1))
    with torch.no_grad():
        before = alignment_stats(encoder.item_embedding.weight[1:], adapter(text, buckets)[1:])
    encoder, adapter, history = train_alignment(windows(sequences, params["prorec_max_len"]), text, buckets, params,
                                                seed=7)
    with torch.no_grad():
        after = alignment_stats(encoder.item_embedding.weight[1:], adapter(text, buckets)[1:])
    assert history["align"][-1] < 0.5 * history["align"][0]
    assert history["next_item"][-1] < history["next_item"][0]
    assert abs(before["matched"] - before["unmatched"]) < 0.2
    assert after["matched"] > after["unmatched"] + 0.3
    assert after["matched"] > before["matched"] + 0.3


# ------------------------------------------------------------------------------------------------- codes
@pytest.mark.slow
def test_codes_are_unique_and_nmi_is_written(tiny):
    model = tiny["model"]
    result = model.stage1
    for source, codes in result.codes.items():
        rows = codes[1:]
        assert (codes[0] == -1).all() and (rows >= 0).all()
        assert len(np.unique(rows, axis=0)) == rows.shape[0], source
        assert len(result.codebook_sizes[source]) == 3  # 2 levels + collision level
    assert torch.equal(model.code_table.codes[1:], torch.from_numpy(result.codes["aligned"][1:]))
    with open(os.path.join(result.folder, "stage1.json"), encoding="utf-8") as f:
        report = json.load(f)
    nmi = report["nmi_first_level"]
    assert set(nmi) == {"aligned~text", "aligned~id", "concat~text", "concat~id", "text~id"}
    assert all(0.0 <= v <= 1.0 for v in nmi.values())
    assert report["nmi_first_level"] == result.report["nmi_first_level"]


@pytest.mark.slow
def test_code_source_switch_changes_the_vocabulary_codes(tiny):
    model = build(tiny, prorec_code_source="text")
    assert torch.equal(model.code_table.codes[1:], torch.from_numpy(model.stage1.codes["text"][1:]))
    assert model.stage1.status == "hit"  # same stage-I inputs: the other sources come from the cache
    with pytest.raises(ValueError):
        build(tiny, prorec_code_source="title")


# ------------------------------------------------------------------------------------------------ stage II
@pytest.mark.slow
def test_distill_false_is_exactly_tiger_loss(tiny):
    plain = build(tiny, prorec_distill=False)

    class TIGEROnUnifiedCodes(TIGER):  # TIGER itself, on PRORec's stage-I codes
        def _build_code_table(self, config, dataset):
            return copy.deepcopy(plain.code_table)

    tiger = TIGEROnUnifiedCodes(tiny["config"], tiny["train"].dataset)
    tiger.load_state_dict(plain.state_dict())  # strict: no extra PRORec parameter without distillation
    batch = next(iter(tiny["train"]))
    plain.train()
    tiger.train()
    loss = plain.calculate_loss(batch)
    assert loss.dim() == 0 and torch.equal(loss, tiger.calculate_loss(batch))

    distilled = build(tiny, prorec_distill=True, prorec_mu=0.5)
    distilled.load_state_dict(plain.state_dict(), strict=False)  # same T5 weights, plus the two heads
    generation, collab, semantic = distilled.calculate_loss(batch)
    assert torch.equal(generation, loss)
    assert collab > 0 and semantic > 0
    collab.add(semantic).backward()
    assert distilled.collab_head.weight.grad.abs().sum() > 0
    assert distilled.backbone.t5.encoder.block[0].layer[0].SelfAttention.q.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_rerun_reuses_stage1_and_keys_on_hyperparameters(tiny, monkeypatch):
    first = build(tiny)

    def refuse(*args, **kwargs):
        raise AssertionError("stage I was retrained although its inputs did not change")

    monkeypatch.setattr(stage1_module, "train_alignment", refuse)
    second = build(tiny)
    assert second.stage1.status == "hit"
    assert np.array_equal(first.stage1.codes["aligned"], second.stage1.codes["aligned"])
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name  # stage I never moves the global RNG: same stage-II initialisation
    with pytest.raises(AssertionError, match="retrained"):
        build(tiny, prorec_tau=0.2)  # a stage-I hyperparameter is part of the key


@pytest.mark.slow
def test_end_to_end_run_trains_both_stages(tiny, tmp_path):
    assert get_trainer(tiny["config"]["MODEL_TYPE"], "PRORec") is GenerativeTrainer
    with recbole_argv():
        result = run_recbole_genrec(model="PRORec", dataset="tiny",
                                    config_dict=tiny_settings(tiny["cache"], PROREC_SETTINGS,
                                                              checkpoint_dir=str(tmp_path)))
    test = result["test_result"]
    assert {"recall@5", "ndcg@5"} <= set(test)
    assert test["recall@5"] > 5 / 40  # random ranking of the 40 items


def test_sampled_softmax_masks_accidental_hits_and_matches_full_softmax():
    torch.manual_seed(0)
    table = torch.randn(6, 4)
    hidden = torch.randn(3, 4)
    targets = torch.tensor([1, 2, 5])
    # every real item as a negative: the copy of the target is masked, leaving the full softmax over items 1..5
    expected = torch.nn.functional.cross_entropy(hidden @ table[1:].t(), targets - 1)
    assert torch.allclose(sampled_next_item_loss(hidden, targets, table, torch.arange(1, 6)), expected, atol=1e-6)


def test_length_bucketed_batches_cover_every_window_once():
    from recbole_genrec.prorec.stage1 import length_bucketed_batches

    lengths = torch.randint(2, 30, (103,))
    batches = length_bucketed_batches(lengths, 8, torch.Generator().manual_seed(0), pool=4)
    assert sorted(torch.cat(batches).tolist()) == list(range(103))
    assert all(b.numel() <= 8 for b in batches)
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in batches) / len(batches)
    assert spread < 8  # random batches of 8 lengths in [2, 30) would spread by ~20


# ------------------------------------------------------------------------------------------- unified codes
def clustered_catalogue(n_items=12_000, dim=48, n_clusters=300, seed=0):
    """A 12k-item catalogue of clustered unit vectors, shaped like amazon-beauty's (unified embeddings are
    concatenations of two L2-normalised parts, so the scale matches)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    members = rng.integers(0, n_clusters, n_items)
    x = centres[members] + 0.35 * rng.normal(size=(n_items, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_default_unified_codes_use_every_level_of_a_12k_catalogue():
    """The default quantiser (residual k-means, 3 x 256) splits the items at every level; hierarchical k-means with
    256 children per node (the earlier default) leaves its third level near-constant, and the check names it."""
    emb = clustered_catalogue()
    params = dict(_prorec_yaml_defaults(), prorec_code_params={"niter": 10})
    assert params["prorec_code_method"] == "rkmeans" and params["prorec_codebook_size"] == 256
    codes, sizes, diagnostics, _ = stage1_module.quantise(emb, params, seed=0)
    usage = diagnostics["unified_levels"]
    assert len(usage) == 3 and codes.shape == (12_001, 4)  # 3 levels + TIGER's collision level
    assert stage1_module.level_usage_problems(usage) == []
    for level in usage:
        assert level["distinct"] >= 200 and level["perplexity"] >= 64, level
    assert min(u["conditional_perplexity"] for u in usage) >= 2.0
    assert len(np.unique(codes[1:], axis=0)) == 12_000

    tree_codes, _, tree_diag, _ = stage1_module.quantise(emb, dict(params, prorec_code_method="hkmeans"), seed=0)
    problems = stage1_module.level_usage_problems(tree_diag["unified_levels"])
    assert problems and problems[-1].startswith("level 3")  # ~47 items per level-1 node: level 3 carries nothing


def test_level_usage_counts_the_split_given_the_prefix():
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 0]])
    usage = stage1_module.level_usage(codes)
    assert [u["distinct"] for u in usage] == [3, 2]
    assert usage[0]["perplexity"] == pytest.approx(3.0)
    # given the prefix, level 2 splits prefixes 0 and 1 two ways and prefix 2 not at all
    assert usage[1]["conditional_perplexity"] == pytest.approx(np.exp(np.log(2) * 4 / 6))
    # the most it could: 6 items over prefixes of perplexity 3 -> 2 ways
    assert usage[0]["max_split"] == pytest.approx(6.0) and usage[1]["max_split"] == pytest.approx(2.0)


def _prorec_yaml_defaults():
    """The stage-I keys with their defaults from properties/model/PRORec.yaml (the one source of defaults)."""
    import os

    import yaml

    from recbole_genrec.utils import properties_dir

    with open(os.path.join(properties_dir(), "model", "PRORec.yaml")) as f:
        defaults = yaml.safe_load(f)
    return {key: defaults[key] for key in stage1_module.STAGE1_KEYS}
