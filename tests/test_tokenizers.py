"""Tests for recbole_genrec.tokenizers (semantic-ID generation). Small data, CPU, < ~30 s."""
import logging

import numpy as np
import pytest

from recbole_genrec.tokenizers import (
    TOKENIZERS,
    code_diagnostics,
    generate_semantic_ids,
    normalized_mutual_info,
    plot_code_usage,
)
from recbole_genrec.tokenizers.collisions import add_extra_level, sinkhorn_dedup

# A tiny RQ-VAE keeps the tests fast on 2 shared cores; n_threads=1 (scoped to the tokenizer,
# restored afterwards) avoids OpenMP thrashing when other processes keep the cores busy.
TINY_RQVAE = dict(hidden_dims=(32,), latent_dim=8, batch_size=128, epochs=8, kmeans_niter=10, n_threads=1)
KM = {"niter": 10, "n_threads": 1}
SIZES = [8, 8, 64]
METHOD_PARAMS = {"rqvae": TINY_RQVAE, "rkmeans": KM, "hkmeans": KM}


def clustered(n=400, dim=16, n_clusters=8, noise=0.3, seed=0):
    """Gaussian blobs: returns (emb [n, dim] float32, labels [n])."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, dim)) * 4.0
    labels = rng.integers(0, n_clusters, size=n)
    emb = centers[labels] + rng.normal(size=(n, dim)) * noise
    return emb.astype(np.float32), labels


def with_duplicates(n=300, n_dup=12, seed=0):
    """Clustered data where items 1..n_dup are exact copies of item 0 (forced collisions)."""
    emb, _ = clustered(n=n, seed=seed)
    emb[1:n_dup + 1] = emb[0]
    return emb


def run(emb, method, collision="none", **kw):
    params = dict(METHOD_PARAMS[method])
    params.update(kw.pop("params", {}))
    kw.setdefault("n_levels", 3)
    kw.setdefault("codebook_size", SIZES)
    return generate_semantic_ids(emb, method=method, collision=collision, seed=kw.pop("seed", 7),
                                 show_progress=False, **kw, **params)


def n_unique_rows(codes):
    return len(np.unique(codes, axis=0))


# ----------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("method", ["rkmeans", "hkmeans", "rqvae"])
def test_same_seed_same_codes(method):
    emb, _ = clustered(n=300)
    codes_a, info_a = run(emb, method)
    codes_b, _ = run(emb, method)
    assert codes_a.dtype == np.int64 and codes_a.shape == (300, 3)
    np.testing.assert_array_equal(codes_a, codes_b)
    assert info_a["method"] == method
    assert set(info_a) >= {"codebook_sizes", "diagnostics", "recon_error", "method", "seconds"}
    assert "collision_rate_before" in info_a["diagnostics"]


# ----------------------------------------------------------------------------- uniqueness
@pytest.mark.parametrize("method", ["rkmeans", "hkmeans", "rqvae"])
@pytest.mark.parametrize("collision", ["extra_level", "sinkhorn"])
def test_codes_unique_after_collision_handling(method, collision):
    emb = with_duplicates(n=300, n_dup=12)
    codes, info = run(emb, method, collision=collision)
    assert n_unique_rows(codes) == len(emb)
    assert info["diagnostics"]["collision_rate_before"] >= 13 / 300  # the copies collided
    assert len(info["codebook_sizes"]) == codes.shape[1]
    for col, k in enumerate(info["codebook_sizes"]):
        assert codes[:, col].min() >= 0 and codes[:, col].max() < k
    if collision == "extra_level":
        assert codes.shape[1] == 4 and info["codebook_sizes"][:3] == SIZES
        assert info["codebook_sizes"][3] >= 13
    else:
        assert codes.shape[1] == 3 and info["codebook_sizes"] == SIZES


def test_sinkhorn_only_moves_last_level_of_colliding_prefixes():
    emb = with_duplicates(n=300, n_dup=12)
    raw, _ = run(emb, "rkmeans")
    fixed, _ = run(emb, "rkmeans", collision="sinkhorn")
    np.testing.assert_array_equal(raw[:, :2], fixed[:, :2])
    _, inverse, counts = np.unique(raw, axis=0, return_inverse=True, return_counts=True)
    unique_before = counts[inverse.reshape(-1)] == 1
    bad_prefixes = {tuple(p) for p in raw[~unique_before, :2]}
    untouched = np.array([tuple(p) not in bad_prefixes for p in raw[:, :2]])
    np.testing.assert_array_equal(raw[untouched], fixed[untouched])


def test_extra_level_ranks():
    codes = np.array([[0, 1], [0, 1], [2, 3], [0, 1], [2, 3], [5, 5]])
    out, size = add_extra_level(codes)
    np.testing.assert_array_equal(out[:, -1], [0, 1, 0, 2, 1, 0])
    assert size == 3


def test_sinkhorn_dedup_prefers_near_free_codes():
    # 3 items share (0, 0); code 0 is kept by the nearest one, the others go to their next best.
    codes = np.array([[0, 0], [0, 0], [0, 0], [1, 0]])
    dist = np.array([[0.0, 5.0, 9.0, 9.0],
                     [1.0, 0.5, 9.0, 9.0],
                     [2.0, 9.0, 9.0, 0.7],
                     [0.0, 1.0, 1.0, 1.0]])
    out = sinkhorn_dedup(codes, 4, dist)
    np.testing.assert_array_equal(out, [[0, 0], [0, 1], [0, 3], [1, 0]])


# ----------------------------------------------------------------------------- impossible settings
def test_sinkhorn_too_many_items_for_code_space():
    emb, _ = clustered(n=100)
    with pytest.raises(ValueError, match=r"N=100 items > 4 x 4 x 4 = 64 possible tuples"):
        run(emb, "rkmeans", collision="sinkhorn", codebook_size=4)


def test_sinkhorn_prefix_larger_than_last_codebook():
    emb = with_duplicates(n=200, n_dup=40)  # 41 identical items share every prefix
    msg = r"prefix \(\d+, \d+\) holds \d+ items but the last level has only K=16"
    with pytest.raises(ValueError, match=msg):
        run(emb, "hkmeans", collision="sinkhorn", codebook_size=[8, 8, 16])


def test_extra_level_cap_exceeded():
    emb = with_duplicates(n=200, n_dup=20)
    with pytest.raises(ValueError, match=r"needs \d+ codes but max_extra=5"):
        run(emb, "rkmeans", collision="extra_level", max_extra=5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings_rejected_before_quantization(bad, monkeypatch):
    class MustNotRun:
        def __init__(self, *a, **k):
            raise AssertionError("tokenizer was built despite invalid embeddings")

    monkeypatch.setitem(TOKENIZERS, "rkmeans", MustNotRun)
    emb, _ = clustered(n=50)
    emb[3, 0] = bad
    emb[7, 5] = bad
    with pytest.raises(ValueError, match=r"2 of 50 rows containing NaN/inf.*text encoder"):
        run(emb, "rkmeans")


@pytest.mark.parametrize("emb", [np.zeros(10, dtype=np.float32), np.zeros((0, 4), dtype=np.float32)])
def test_bad_shapes_rejected(emb):
    with pytest.raises(ValueError):
        run(emb, "rkmeans")


def test_unknown_options_rejected():
    emb, _ = clustered(n=50)
    with pytest.raises(ValueError, match="unknown tokenizer"):
        generate_semantic_ids(emb, method="vq", n_levels=3, codebook_size=8, collision="none", seed=0,
                              show_progress=False)
    with pytest.raises(ValueError, match="unknown collision"):
        generate_semantic_ids(emb, method="rkmeans", n_levels=3, codebook_size=8, collision="rehash", seed=0,
                              show_progress=False)
    with pytest.raises(ValueError, match="one size per level"):
        generate_semantic_ids(emb, method="rkmeans", n_levels=3, codebook_size=[4, 4], collision="extra_level",
                              seed=0, show_progress=False)


# ----------------------------------------------------------------------------- small N
@pytest.mark.parametrize("method", ["rkmeans", "hkmeans", "rqvae"])
def test_small_n_clamps_k_and_keeps_configured_sizes(method, caplog):
    emb, _ = clustered(n=40)
    with caplog.at_level(logging.WARNING, logger="recbole_genrec.tokenizers"):
        codes, info = run(emb, method, collision="sinkhorn", codebook_size=256)
    assert "clamping k to 40" in caplog.text
    assert info["codebook_sizes"] == [256, 256, 256]
    assert n_unique_rows(codes) == 40 and codes.max() < 256


# ----------------------------------------------------------------------------- quality
@pytest.mark.slow
def test_rqvae_uses_level1_codes_and_learns():
    emb, _ = clustered(n=512, n_clusters=8, noise=0.2, seed=3)
    params = dict(hidden_dims=(32,), latent_dim=8, batch_size=64, kmeans_niter=10, n_threads=1)
    sizes = [8, 8, 8]
    tok0 = TOKENIZERS["rqvae"](3, sizes, seed=1, show_progress=False, epochs=0, **params).fit(emb)
    tok = TOKENIZERS["rqvae"](3, sizes, seed=1, show_progress=False, epochs=25, **params).fit(emb)
    diag = code_diagnostics(tok.encode(emb), sizes)
    assert diag["usage"][0] >= 0.75
    assert diag["perplexity"][0] > 4.0
    before, after = tok0.reconstruction_error(emb), tok.reconstruction_error(emb)
    assert after < 0.5 * before, (before, after)
    assert tok.last_level_distances(emb).shape == (512, 8)


def test_rkmeans_reconstruction_improves_with_levels():
    emb, _ = clustered(n=400)
    errors = [run(emb, "rkmeans", n_levels=n, codebook_size=8)[1]["recon_error"] for n in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]


def test_hkmeans_children_nested_in_parents():
    rng = np.random.default_rng(5)
    parents = rng.normal(size=(4, 16)) * 20.0
    children = parents[:, None, :] + rng.normal(size=(4, 4, 16)) * 3.0  # 4 sub-clusters per parent
    parent_lab = rng.integers(0, 4, 800)
    child_lab = rng.integers(0, 4, 800)
    emb = (children[parent_lab, child_lab] + rng.normal(size=(800, 16)) * 0.2).astype(np.float32)
    tok = TOKENIZERS["hkmeans"](2, [4, 4], seed=0, show_progress=False, niter=20, n_threads=1).fit(emb)
    codes = tok.encode(emb)
    # the tree recovers both levels: level 1 = parents, full tuple = (parent, child)
    assert normalized_mutual_info(codes[:, 0], parent_lab) == pytest.approx(1.0)
    fine = parent_lab * 4 + child_lab
    assert normalized_mutual_info(codes[:, 0] * 4 + codes[:, 1], fine) == pytest.approx(1.0)
    # each child cluster lies inside exactly one parent, and child codes index that parent's node
    for c in np.unique(codes[:, 0]):
        node = tok.nodes[1][(int(c),)]
        members = codes[:, 0] == c
        assert codes[members, 1].max() < node.shape[0] <= 4
        assert len(np.unique(parent_lab[members])) == 1
    dist = tok.last_level_distances(emb)
    assert dist.shape == (800, 4) and np.isfinite(dist).all()


def test_hkmeans_small_groups_get_fewer_children():
    emb, _ = clustered(n=60, n_clusters=3, noise=0.5)
    tok = TOKENIZERS["hkmeans"](2, [3, 50], seed=0, show_progress=False, n_threads=1).fit(emb)
    assert all(c.shape[0] <= 50 for c in tok.nodes[1].values())
    assert any(c.shape[0] < 50 for c in tok.nodes[1].values())
    dist = tok.last_level_distances(emb)
    assert np.isinf(dist).any() and np.isfinite(dist.min(axis=1)).all()


# ----------------------------------------------------------------------------- diagnostics
def test_code_diagnostics_values():
    codes = np.array([[0, 0], [0, 0], [0, 1], [1, 2]])
    d = code_diagnostics(codes, [2, 4], recon_error=0.5)
    assert d["usage"] == [1.0, 0.75]
    assert d["n_codes_used"] == [2, 3]
    assert d["perplexity"][0] == pytest.approx(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))
    assert d["collision_rate"] == 0.5
    assert d["max_items_per_prefix"] == [3, 2]
    assert d["n_unique_tuples"] == 3 and d["recon_error"] == 0.5


def test_plot_code_usage_writes_png(tmp_path):
    codes = np.random.default_rng(0).integers(0, 16, size=(200, 3))
    path = plot_code_usage(codes, [16, 16, 16], str(tmp_path / "usage.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_nmi_identical_permuted_and_independent():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 20000)
    assert normalized_mutual_info(a, a) == pytest.approx(1.0)
    assert normalized_mutual_info(a, (a + 2) % 5 * 10) == pytest.approx(1.0)  # relabelled
    assert normalized_mutual_info(a, rng.integers(0, 7, 20000)) < 0.01
    assert normalized_mutual_info(np.zeros(10), np.zeros(10)) == 1.0
    assert normalized_mutual_info(np.zeros(10), np.arange(10)) == 0.0


@pytest.mark.parametrize("method", ["rkmeans", "hkmeans"])
def test_fit_transform_matches_encode(method):
    emb, _ = clustered(n=300)
    tok = TOKENIZERS[method](3, SIZES, seed=0, show_progress=False, **KM)
    codes, err = tok.fit_transform(emb)
    np.testing.assert_array_equal(codes, tok.encode(emb))
    assert err == pytest.approx(tok.reconstruction_error(emb), rel=1e-5)
    assert tok.last_level_distances(emb).shape == (300, SIZES[-1])


def test_thread_limit_is_scoped():
    import faiss
    import torch

    before = (torch.get_num_threads(), faiss.omp_get_max_threads())
    emb, _ = clustered(n=100)
    run(emb, "rqvae", params={"epochs": 1})
    assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before


# ----------------------------------------------------------------------------- budgets and yaml keys
def test_rqvae_budget_in_steps_or_epochs():
    emb, _ = clustered(n=300, n_clusters=6, seed=2)
    params = dict(hidden_dims=(16,), latent_dim=4, batch_size=64, kmeans_niter=5, n_threads=1)
    by_steps = TOKENIZERS["rqvae"](2, [4, 4], seed=0, show_progress=False, steps=7, **params).fit(emb)
    assert by_steps.steps_done == 7 and len(by_steps.history) == 2  # 5 batches per pass: one full pass + 2 steps
    by_epochs = TOKENIZERS["rqvae"](2, [4, 4], seed=0, show_progress=False, epochs=3, **params).fit(emb)
    assert by_epochs.steps_done == 15 and len(by_epochs.history) == 3
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TOKENIZERS["rqvae"](2, [4, 4], seed=0, steps=0)


def test_tokenizer_yaml_keys_are_the_ones_used():
    """Every sid_* key of the model yaml files is read by the preprocessing hook, and every sid_params entry (of the
    yaml files and of the benchmark presets) is an argument of the tokenizer it is passed to."""
    import os

    import yaml

    from recbole_genrec.preprocess.hook import sid_inputs
    from recbole_genrec.tokenizers import tokenizer_params

    class Recorder(dict):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.read = set()

        def __getitem__(self, key):
            self.read.add(key)
            return self.get(key)

    from benchmarks.presets import PRESETS
    from recbole_genrec.config import model_yaml_chain
    from recbole_genrec.utils import get_model, properties_dir

    configs = []
    for name in ("TIGER", "DiscRec", "PRORec"):  # each model's yaml over its ancestors' (as Config layers them)
        layered = {}
        for part in model_yaml_chain(name, get_model(name)):
            with open(os.path.join(properties_dir(), "model", f"{part}.yaml")) as f:
                layered.update(yaml.safe_load(f) or {})
        configs.append((name, layered))

    configs += [(f"{p}:{r['model']}", r["config"]) for p, preset in PRESETS.items() for r in preset["rows"]]
    read_any = set()
    for name, config in configs:
        recorder = Recorder({"item_embedding_source": "text", "seed": 0, **configs[0][1], **config})  # over TIGER's
        sid_inputs(recorder, "key")
        read_any |= recorder.read
        method = str(recorder.get("sid_method"))
        unknown = set(recorder.get("sid_params") or {}) - set(tokenizer_params(method))
        assert not unknown, (name, method, unknown)
    sid_keys = {k for _, c in configs for k in c if k.startswith("sid_")}
    assert sid_keys and sid_keys <= read_any, sid_keys - read_any
    assert {"epochs", "steps"} <= set(tokenizer_params("rqvae"))
    emb, _ = clustered(n=60)
    with pytest.raises(ValueError, match=r"sid_params \['epochs'\] are not arguments of the rkmeans tokenizer"):
        generate_semantic_ids(emb, method="rkmeans", n_levels=3, codebook_size=8, collision="extra_level", seed=0,
                              show_progress=False, epochs=5)
