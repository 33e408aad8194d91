"""Tests for RPG (recbole_genrec/model/sequential_recommender/rpg.py), its OPQ tokenizer
(recbole_genrec/tokenizers/opq.py) and the one-row-per-sequence training data (recbole_genrec/data/sequences.py).

Random vectors for the tokenizer; tests/data/tiny (40 items in 5 themes, 120 users) for the model."""

import numpy as np
import pytest

import recbole_genrec  # noqa: F401  (compat shims before RecBole)
from recbole_genrec.tokenizers import generate_semantic_ids
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
    tok = OPQTokenizer(n_levels=n_codes, codebook_sizes=size, pca_dim=pca_dim, show_progress=False).fit(fit)
    bits = int(np.log2(size))
    for vectors in (fit, new):  # fitted items and unseen ones
        codes = tok.encode(vectors)
        assert codes.shape == (len(vectors), n_codes) and codes.min() >= 0 and codes.max() < size
        assert np.array_equal(codes, _faiss_reference_codes(tok.index, tok._project(vectors), n_codes, bits))
    assert tok.factory == f"OPQ{n_codes},IVF1,PQ{n_codes}x{bits}"  # the official index


def test_opq_pca_whitening_has_unit_variance_on_fitted_items():
    x = _vectors()
    tok = OPQTokenizer(n_levels=4, codebook_sizes=16, pca_dim=8, show_progress=False).fit(x)
    projected = tok._project(x)
    assert projected.shape == (len(x), 8)
    np.testing.assert_allclose(projected.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(projected.var(0, ddof=1), 1.0, rtol=1e-3)


def test_stored_opq_tokenizer_encodes_like_the_fitted_one(tmp_path):
    x = _vectors()
    codes, info = generate_semantic_ids(x[:500], method="opq", n_levels=8, codebook_size=32, collision="none",
                                        show_progress=False, pca_dim=16)
    assert codes.shape == (500, 8) and info["codebook_sizes"] == [32] * 8
    fitted = FittedTokenizer(info["tokenizer"], codes, info["codebook_sizes"], "none")
    fitted.save(str(tmp_path / "tok"), "k")
    loaded = FittedTokenizer.load(str(tmp_path / "tok"), "k")
    assert loaded.method == "opq" and loaded.input_dim == 32
    assert np.array_equal(loaded.encode_raw(x[:500]), codes)
    new_codes, sizes = loaded.assign(x[500:])  # unordered codes: no collision rule, raw codes
    assert np.array_equal(new_codes, info["tokenizer"].encode(x[500:])) and sizes == [32] * 8


def test_opq_settings_that_cannot_work_fail_with_the_fix():
    x = _vectors()
    with pytest.raises(ValueError, match="power of two"):
        OPQTokenizer(n_levels=4, codebook_sizes=100)
    with pytest.raises(ValueError, match="do not divide the 32-dimensional"):
        OPQTokenizer(n_levels=5, codebook_sizes=16, show_progress=False).fit(x)
    with pytest.raises(ValueError, match="do not divide the 12-dimensional"):
        OPQTokenizer(n_levels=8, codebook_sizes=16, pca_dim=12)
    with pytest.raises(ValueError, match="needs at least K items"):
        OPQTokenizer(n_levels=4, codebook_sizes=256, show_progress=False).fit(x[:100])
