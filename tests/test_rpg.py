"""Tests for RPG (recbole_genrec/model/sequential_recommender/rpg.py), its OPQ tokenizer
(recbole_genrec/tokenizers/opq.py) and the one-row-per-sequence training data (recbole_genrec/data/sequences.py).

Random vectors for the tokenizer; tests/data/tiny (40 items in 5 themes, 120 users) for the model."""

import os

import numpy as np
import pytest

import recbole_genrec  # noqa: F401  (compat shims before RecBole)
from recbole_genrec.tokenizers import generate_semantic_ids
from recbole_genrec import store
from recbole_genrec.tokenizers.artifact import FittedTokenizer
from recbole_genrec.tokenizers.opq import OPQTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _vectors(n=600, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(6, dim))
    return (rng.normal(size=(n, 6)) @ basis + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


def _faiss_reference_codes(index, x, n_codes, bits):
    """The official RPG recipe: add the vectors to the trained index and read its inverted list with faiss's own
    BitstringReader."""
    import faiss

    index = faiss.clone_index(index)
    index.add(x)
    invlists = faiss.extract_index_ivf(index).invlists
    size = invlists.list_size(0)
    packed = faiss.rev_swig_ptr(invlists.get_codes(0), size * invlists.code_size).reshape(size, -1)
    out = []
    for row in packed:
        reader = faiss.BitstringReader(faiss.swig_ptr(row), packed.shape[1])
        out.append([reader.read(bits) for _ in range(n_codes)])
    return np.asarray(out, dtype=np.int64)


# ----------------------------------------------------------------------------- the OPQ tokenizer
@pytest.mark.parametrize("n_codes,size,pca_dim", [(8, 256, 0), (4, 64, 16), (16, 16, 0)])
def test_opq_codes_equal_faiss_encoding(n_codes, size, pca_dim):
    x = _vectors()
    fit, new = x[:500], x[500:]
    tok = OPQTokenizer(n_levels=n_codes, codebook_sizes=size, seed=2020, pca_dim=pca_dim, show_progress=False)
    tok.fit(fit)
    bits = int(np.log2(size))
    for vectors in (fit, new):  # fitted items and unseen ones
        codes = tok.encode(vectors)
        assert codes.shape == (len(vectors), n_codes) and codes.min() >= 0 and codes.max() < size
        assert np.array_equal(codes, _faiss_reference_codes(tok.index, tok._project(vectors), n_codes, bits))
    assert tok.factory == f"OPQ{n_codes},IVF1,PQ{n_codes}x{bits}"  # the official index


def test_opq_pca_whitening_has_unit_variance_on_fitted_items():
    x = _vectors()
    tok = OPQTokenizer(n_levels=4, codebook_sizes=16, seed=2020, pca_dim=8, show_progress=False).fit(x)
    projected = tok._project(x)
    assert projected.shape == (len(x), 8)
    np.testing.assert_allclose(projected.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(projected.var(0, ddof=1), 1.0, rtol=1e-3)


def test_stored_opq_tokenizer_encodes_like_the_fitted_one(tmp_path):
    x = _vectors()
    codes, info = generate_semantic_ids(x[:500], method="opq", n_levels=8, codebook_size=32, collision="none",
                                        seed=0, show_progress=False, pca_dim=16)
    assert codes.shape == (500, 8) and info["codebook_sizes"] == [32] * 8
    fitted = FittedTokenizer(info["tokenizer"], codes, info["codebook_sizes"], "none")
    store.save_tokenizer(str(tmp_path / "tok"), fitted, "k")
    loaded = store.load_tokenizer(str(tmp_path / "tok"), "k")
    assert loaded.method == "opq" and loaded.input_dim == 32
    assert np.array_equal(loaded.encode_raw(x[:500]), codes)
    new_codes, sizes = loaded.assign(x[500:])  # unordered codes: no collision rule, raw codes
    assert np.array_equal(new_codes, info["tokenizer"].encode(x[500:])) and sizes == [32] * 8


def test_opq_settings_that_cannot_work_fail_with_the_fix():
    x = _vectors()
    with pytest.raises(ValueError, match="power of two"):
        OPQTokenizer(n_levels=4, codebook_sizes=100, seed=2020)
    with pytest.raises(ValueError, match="do not divide the 32-dimensional"):
        OPQTokenizer(n_levels=5, codebook_sizes=16, seed=2020, show_progress=False).fit(x)
    with pytest.raises(ValueError, match="do not divide the 12-dimensional"):
        OPQTokenizer(n_levels=8, codebook_sizes=16, seed=2020, pca_dim=12)
    with pytest.raises(ValueError, match="needs at least K items"):
        OPQTokenizer(n_levels=4, codebook_sizes=256, seed=2020, show_progress=False).fit(x[:100])


# ----------------------------------------------------------------------------- one row per user sequence
def test_sequence_rows_keep_the_last_row_and_every_window_before_it():
    from recbole_genrec.data.sequences import sequence_row_mask

    users = np.array([7, 7, 3, 7, 3, 7, 7, 7, 7, 5])  # user 7: 7 rows, user 3: 2 rows, user 5: 1 row
    keep = sequence_row_mask(users, window=3)
    # user 7's rows are positions 0,1,3,5,6,7,8; its rows 0, 3 and 6 back from its last are positions 8, 5 and 0
    assert keep.tolist() == [True, False, False, False, True, True, False, False, True, True]


# ----------------------------------------------------------------------------- the model on tests/data/tiny
import torch  # noqa: E402

from conftest import LOO_EVAL_ARGS, TINY_LOAD_COL, make_tiny_config, popularity_recall  # noqa: E402

TINY_RPG = {
    "eval_args": LOO_EVAL_ARGS, "load_col": TINY_LOAD_COL, "sid_levels": 8, "sid_codebook_size": 16,
    "sid_params": {"pca_dim": 16}, "n_embd": 32, "n_head": 2, "n_inner": 64, "MAX_ITEM_LIST_LENGTH": 50,
    "genrec_count_flops": False, "warmup_steps": 5, "topk": [5], "valid_metric": "Recall@5",
}


def _prepare(tmp_path, **overrides):
    from recbole_genrec import run_builder

    config = make_tiny_config("RPG", tmp_path, TINY_RPG, **overrides)
    data = run_builder.prepare(config)  # as run_recbole_genrec prepares the data (cold start included)
    return {"config": config, "dataset": data.dataset, "train": data.train, "valid": data.valid, "test": data.test}


def _model(tiny, seed=0):
    from recbole_genrec.model.sequential_recommender.rpg import RPG

    torch.manual_seed(seed)
    return RPG(tiny["config"], tiny["train"]._dataset).eval()


def _all_rows(loader):
    return loader._dataset[torch.arange(len(loader._dataset))]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _prepare(tmp_path_factory.mktemp("rpg"))


def test_sequences_cover_every_training_target_once(tmp_path_factory):
    cache = tmp_path_factory.mktemp("rpg-rows")
    prefixes = _prepare(cache, seq_train_rows="prefixes", MAX_ITEM_LIST_LENGTH=3)
    sequences = _prepare(cache, seq_train_rows="sequences", MAX_ITEM_LIST_LENGTH=3)
    pre, seq = _all_rows(prefixes["train"]), _all_rows(sequences["train"])
    assert len(seq) < len(pre) and len(torch.unique(seq["user_id"])) == len(torch.unique(pre["user_id"]))
    covered = []
    for user, items, length, target in zip(seq["user_id"].tolist(), seq["item_id_list"].tolist(),
                                           seq["item_length"].tolist(), seq["item_id"].tolist()):
        covered += [(user, item) for item in items[1:length] + [target]]  # what every position predicts
    assert sorted(covered) == sorted(zip(pre["user_id"].tolist(), pre["item_id"].tolist()))
    # validation and test rows are RecBole's, whatever the training rows
    for part in ("valid", "test"):
        a, b = _all_rows(prefixes[part]), _all_rows(sequences[part])
        assert torch.equal(a["item_id_list"], b["item_id_list"]) and torch.equal(a["item_id"], b["item_id"])


def test_one_pass_loss_equals_the_loss_over_every_prefix(tmp_path_factory, tiny):
    """Every position of one row per user gives the same loss as RecBole's one row per prefix trained at its last
    position (no history is cut: 50 items > the longest tiny sequence)."""
    prefixes = _prepare(tmp_path_factory.mktemp("rpg-prefix"), seq_train_rows="prefixes")
    sequences = _all_rows(tiny["train"])
    prefix_rows = _all_rows(prefixes["train"])
    model = _model(tiny)
    assert model.all_positions
    with torch.no_grad():
        one_pass = model.calculate_loss(sequences)
        model.all_positions = False
        per_prefix = model.calculate_loss(prefix_rows)
        # and by hand: the mean over prefixes of the mean over codes of -log p(code of the target)
        log_probs = model.code_log_probs(prefix_rows)  # [P, K, C]
        codes = model.codes[prefix_rows["item_id"]]  # [P, K]
        by_hand = -log_probs.gather(2, codes.unsqueeze(2)).mean()
    assert int(sequences["item_length"].sum()) == len(prefix_rows)  # the same targets
    torch.testing.assert_close(one_pass, per_prefix, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_prefix, by_hand, rtol=1e-5, atol=1e-5)


def test_exact_scores_equal_a_brute_force_loop(tiny):
    model = _model(tiny)
    batch = next(iter(tiny["test"]))[0]
    with torch.no_grad():
        scores = model.full_sort_predict(batch)  # [B, n_items]
        log_probs = model.code_log_probs(batch)  # [B, K, C]
        # users are decoded in groups of similar history length: the same states as the whole padded batch
        item_seq, lengths = batch["item_id_list"], batch["item_length"]
        full = model.decode(item_seq)[torch.arange(len(lengths)), lengths - 1]
        torch.testing.assert_close(model.last_hidden(item_seq, lengths), full, rtol=1e-5, atol=1e-5)
    assert len(lengths) > 64 and lengths.min() < lengths.max()  # several groups of different lengths
    codes = model.codes.tolist()
    expected = torch.full_like(scores, float("-inf"))
    for b in range(scores.size(0)):
        for item in range(1, model.n_items):
            expected[b, item] = sum(float(log_probs[b, k, c]) for k, c in enumerate(codes[item])) / len(codes[item])
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)
    # predict() scores the given items the same way
    items = torch.randint(1, model.n_items, (scores.size(0),))
    batch.interaction["item_id"] = items
    with torch.no_grad():
        torch.testing.assert_close(model.predict(batch), scores[torch.arange(len(items)), items])


def test_graph_decoding_over_a_complete_graph_is_exact(tiny):
    """With every item a neighbour of every item, one propagation step scores all items: the beams are the exact
    top items with their exact scores."""
    model = _model(tiny)
    model.decoding, model.n_edges, model.propagation_steps, model.num_beams = "graph", model.n_items, 1, 5
    batch = next(iter(tiny["test"]))[0]
    with torch.no_grad():
        graph = model.full_sort_predict(batch)
        model.decoding = "exact"
        exact = model.full_sort_predict(batch)
    top = exact.topk(5, dim=1)
    assert torch.isfinite(graph).sum(dim=1).eq(5).all()
    torch.testing.assert_close(graph.gather(1, top.indices), top.values)


def test_graph_neighbours_are_the_most_similar_items(tiny):
    model = _model(tiny)
    model.n_edges, model.graph_chunk_size = 4, 7  # several chunks
    with torch.no_grad():
        adjacency = model.build_graph()  # [n_items, 4]
        table = torch.nn.functional.normalize(model.code_embedding.weight, dim=-1)
        vectors = table[model.flat_codes()]  # [N, K, d]
        sim = (1 + torch.einsum("ikd,jkd->ijk", vectors, vectors)).mean(dim=2) / 2  # [N, N]
        sim[:, 0] = float("-inf")
    expected = sim.topk(4, dim=1).values
    torch.testing.assert_close(sim.gather(1, adjacency)[1:], expected[1:])


# ----------------------------------------------------------------------------- new items
def test_add_items_fills_held_out_items_with_the_fitted_transform(tmp_path_factory):
    """Cold start: the held-out items have no codes and no score; add_items gives them the stored tokenizer's codes
    of their text embeddings and scores them exactly like every other item; the other items' scores change only for
    users with a held-out item in their history (it was a zero vector without codes)."""
    from recbole_genrec.data import coldstart
    from recbole_genrec.preprocess.features import item_embeddings
    from recbole_genrec.store import load_tokenizer_for_config

    cold = _prepare(tmp_path_factory.mktemp("rpg-cold"), genrec_coldstart=True, coldstart_ratio=0.1)
    held = coldstart.held_out_ids(cold["config"], cold["dataset"])
    coldstart.check_training_free_of(cold["train"]._dataset, held)
    model = _model(cold)
    assert (model.codes[held] == -1).all()
    batch = next(iter(cold["test"]))[0]
    with torch.no_grad():
        before = model.full_sort_predict(batch)
    assert torch.isinf(before[:, held]).all()
    emb = item_embeddings(cold["dataset"])[held].numpy()
    added = model.add_items(embeddings=emb, item_ids=held)
    assert torch.equal(added.item_ids, held) and not added.skipped.any()
    assert np.array_equal(model.codes[held].numpy(), load_tokenizer_for_config(cold["config"]).tokenizer.encode(emb))
    with torch.no_grad():
        after = model.full_sort_predict(batch)
        log_probs = model.code_log_probs(batch)  # [B, K, C]
    others = torch.ones(model.n_items, dtype=torch.bool)
    others[held] = False
    plain = ~torch.isin(batch["item_id_list"], held).any(dim=1)  # users whose history holds no held-out item
    assert plain.any() and torch.equal(after[plain][:, others], before[plain][:, others])
    expected = log_probs.gather(2, model.codes[held].t().unsqueeze(0).expand(len(log_probs), -1, -1)).mean(1)
    torch.testing.assert_close(after[:, held], expected)
    # appended items get new ids and columns
    n = model.n_items
    appended = model.add_items(embeddings=emb[:2])
    assert appended.item_ids.tolist() == [n, n + 1] and model.n_items == n + 2
    with torch.no_grad():
        wider = model.full_sort_predict(batch)
    torch.testing.assert_close(wider[:, n:], after[:, held[:2]])


# ----------------------------------------------------------------------------- settings checked before any work
@pytest.mark.parametrize("overrides,message", [
    ({"sid_codebook_size": 100}, "sid_codebook_size=100 .* power of two"),
    ({"sid_levels": 5, "sid_params": {"pca_dim": 128}}, r"sid_levels=5 does not divide pca_dim \(128\)"),
    ({"sid_levels": 7, "sid_params": {}}, r"sid_levels=7 does not divide the output size of text_encoder.*\(384\)"),
    ({"n_embd": 30, "n_head": 4}, "n_embd=30 is not divisible by n_head=4"),
    ({"seq_train_rows": "users"}, "seq_train_rows='users' is not allowed"),
])
def test_malformed_settings_fail_before_any_work(tmp_path, monkeypatch, overrides, message):
    from conftest import recbole_argv, tiny_settings
    from recbole_genrec import run_recbole_genrec
    from recbole_genrec.preprocess import text_encoder
    from recbole_genrec.validation import ConfigError

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the check that should have failed")

    monkeypatch.setattr(text_encoder, "encode_texts", refuse)
    with recbole_argv(), pytest.raises(ConfigError, match=message):
        run_recbole_genrec("RPG", "tiny", config_dict=tiny_settings(tmp_path, TINY_RPG, **overrides))
    assert not (tmp_path / "tiny").exists()  # no cache store was made


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_rpg_trains_through_run_recbole_genrec_and_beats_popularity(tmp_path):
    from conftest import recbole_argv, tiny_settings
    from recbole_genrec import run_recbole_genrec

    settings = tiny_settings(tmp_path, TINY_RPG, n_embd=64, epochs=40, eval_step=5, stopping_step=4,
                             embd_pdrop=0.1, attn_pdrop=0.1, genrec_count_flops=True)
    with recbole_argv():
        result = run_recbole_genrec("RPG", "tiny", config_dict=settings)
    tiny = _prepare(tmp_path)  # same split and features (cached)
    assert len(tiny["train"]._dataset) == len(torch.unique(_all_rows(tiny["train"])["user_id"]))  # one row per user
    baseline = popularity_recall({"train": tiny["train"], "test": tiny["test"]}, 5)
    assert result["test_result"]["recall@5"] > baseline + 0.1, (result["test_result"], baseline)
    assert result["train_losses"][-1] < result["train_losses"][0]


@pytest.mark.slow
def test_rpg_and_sasrec_side_by_side_with_cold_start_rows(tmp_path):
    from conftest import recbole_argv, tiny_settings
    from recbole_genrec.quick_start import run_side_by_side

    settings = tiny_settings(tmp_path, TINY_RPG, epochs=2, eval_step=1, genrec_coldstart=True, coldstart_ratio=0.1,
                             results_dir=str(tmp_path / "results"))
    with recbole_argv():
        results, paths = run_side_by_side(["RPG", "SASRec"], "tiny", config_dict=settings)
    assert [r["model"] for r in results] == ["RPG", "SASRec"] and all(os.path.isfile(p) for p in paths)
    for key in ("eval_args", "MAX_ITEM_LIST_LENGTH", "metrics", "topk", "valid_metric", "seed"):
        assert results[0]["protocol"][key] == results[1]["protocol"][key]  # same split, history, metrics
    rpg, sasrec = (r["coldstart"] for r in results)
    assert rpg["add_items"]["added"] == rpg["n_held_out"] > 0 and sasrec["add_items"]["added"] == 0
    assert rpg["metrics"]["held_out"]["targets"] == sasrec["metrics"]["held_out"]["targets"]
