"""Optimized product quantization (faiss OPQ + PQ): long, unordered semantic IDs.

RPG (Hou et al., KDD 2025, "Generating Long Semantic IDs in Parallel for Recommendation") gives every item ``M``
codes of ``log2(K)`` bits from faiss's ``OPQ{M},IVF1,PQ{M}x{bits}`` index (inner-product metric) fitted on the item
text embeddings, optionally PCA-whitened first.  OPQ (Ge et al., CVPR 2013) learns a rotation so that the ``M``
sub-vectors quantize well; product quantization (Jegou et al., TPAMI 2011) then codes every sub-vector with its own
``K``-entry codebook.  The ``IVF1`` coarse level has a single list, so every code is the PQ code of the rotated
vector minus one centroid.  Unlike residual or tree codes, no code refines another: the codes are unordered.

Codes are read from faiss's own encoder (``sa_encode``: the bytes faiss stores for the item) and unpacked
``bits`` at a time, least significant bit first, as faiss's ``BitstringReader`` reads them.  Items may share a
tuple: RPG scores every item from its codes, so no collision level is needed (``sid_collision: none``).

``pca_dim`` > 0 first projects on the top ``pca_dim`` principal components of the fitted items (``whiten``:
scaled to unit variance), as the official RPG code does with scikit-learn's ``PCA(whiten=True)`` before OPQ.
"""

import contextlib
import logging
import os
import tempfile

import faiss
import numpy as np

from .kmeans import BaseTokenizer, scoped_threads, validate_embeddings

logger = logging.getLogger(__name__)


def code_bits(codebook_size):
    """``log2(codebook_size)``; ``ValueError`` unless it is a power of two in [2, 2**16]."""
    k = int(codebook_size)
    bits = k.bit_length() - 1
    if k < 2 or k != 1 << bits or bits > 16:
        raise ValueError(f"opq: sid_codebook_size={codebook_size} must be a power of two between 2 and 65536 (PQ "
                         f"codes are log2(K)-bit integers), e.g. 256 for 8-bit codes")
    return bits


def check_opq_shape(dim, n_codebooks, codebook_size):
    """Raise ``ValueError`` when ``n_codebooks`` sub-vectors of ``K`` codes cannot split ``dim``-d vectors."""
    code_bits(codebook_size)
    if int(dim) % int(n_codebooks):
        raise ValueError(f"opq: {n_codebooks} codebooks (sid_levels) do not divide the {dim}-dimensional vectors "
                         f"they quantize (the text embeddings, or pca_dim when set); choose sid_levels among the "
                         f"divisors of {dim} or set sid_params {{pca_dim: N}} with N a multiple of {n_codebooks}")


@contextlib.contextmanager
def _faiss_warnings_counted(where):
    """Collect what faiss's C++ code prints on stderr (one "please provide at least ... training points" line per
    k-means run when the items are few) and log it once, with the number of lines."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines = [ln for ln in sink.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    if lines:
        logger.warning("%s: faiss printed %d lines while training, e.g. %r", where, len(lines), lines[0])


def unpack_codes(packed, n_codes, bits):
    """faiss's packed PQ bytes `(N, code_size)` uint8 -> `(N, n_codes)` int64 codes (``bits`` each, LSB first)."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if bits == 8:
        return packed[:, :n_codes].astype(np.int64)
    flat = np.unpackbits(packed, axis=1, bitorder="little")[:, : n_codes * bits]  # [N, M * bits]
    weights = np.left_shift(1, np.arange(bits, dtype=np.int64))  # [bits]
    return flat.reshape(len(packed), n_codes, bits).astype(np.int64) @ weights


class OPQTokenizer(BaseTokenizer):
    """faiss ``OPQ{M},IVF1,PQ{M}x{bits}`` (inner product) on the (optionally PCA-whitened) embeddings.

    ``n_levels`` = ``M`` codebooks; every codebook has the same power-of-two size ``K``. ``niter``: OPQ's
    iterations (each trains ``M`` k-means; minutes on one core for ten thousand items). faiss's training is
    deterministic (its own fixed seeds); ``seed`` is recorded only.
    """

    name = "opq"

    def __init__(self, n_levels, codebook_sizes, seed, device="cpu", show_progress=True,
                 pca_dim=0, whiten=True, niter=50, n_threads=None):
        super().__init__(n_levels, codebook_sizes, seed, device, show_progress, n_threads)
        if len(set(self.codebook_sizes)) != 1:
            raise ValueError(f"opq: every codebook has the same size (one PQ), got sid_codebook_size="
                             f"{self.codebook_sizes}; give a single power of two")
        self.bits = code_bits(self.codebook_sizes[0])
        self.pca_dim = int(pca_dim or 0)
        if self.pca_dim < 0:
            raise ValueError(f"opq: pca_dim={pca_dim} must be >= 0 (0 = no PCA)")
        if self.pca_dim:
            check_opq_shape(self.pca_dim, self.n_levels, self.codebook_sizes[0])
        self.whiten = bool(whiten)
        self.niter = int(niter)  # OPQ's alternating rotation / PQ iterations (faiss's default 50)
        if self.niter < 1:
            raise ValueError(f"opq: niter={niter} must be >= 1")
        self.pca_mean = None  # [D] float32
        self.pca_components = None  # [pca_dim, D] float32, rows scaled by 1/sqrt(variance) when whitening
        self.index = None  # faiss IndexPreTransform(OPQ) -> IndexIVFPQ(nlist=1)

    # ------------------------------------------------------------------ layout
    @property
    def factory(self):
        return f"OPQ{self.n_levels},IVF1,PQ{self.n_levels}x{self.bits}"

    @property
    def input_dim(self):
        return int(self.pca_mean.shape[0]) if self.pca_mean is not None else int(self.index.d)

    def _project(self, x):
        """PCA (whitened) projection `(N, D) -> (N, pca_dim)`; the input itself without PCA."""
        if self.pca_components is None:
            return x
        return np.ascontiguousarray((x - self.pca_mean) @ self.pca_components.T, dtype=np.float32)

    # ------------------------------------------------------------------ fit
    def _fit_pca(self, x):
        n, dim = x.shape
        if self.pca_dim > dim:
            raise ValueError(f"opq: pca_dim={self.pca_dim} exceeds the embedding dimension {dim}")
        if n <= self.pca_dim:
            raise ValueError(f"opq: PCA to pca_dim={self.pca_dim} needs more than {self.pca_dim} items, got {n}; "
                             f"lower pca_dim or set it to 0")
        mean = x.mean(axis=0, dtype=np.float64)  # [D]
        centered = x.astype(np.float64) - mean
        variance, vectors = np.linalg.eigh(centered.T @ centered / (n - 1))  # ascending
        top = np.argsort(variance)[::-1][: self.pca_dim]
        components = vectors[:, top].T  # [pca_dim, D]
        signs = np.sign(components[np.arange(len(top)), np.abs(components).argmax(axis=1)])  # a fixed sign per axis
        components *= signs[:, None]
        if self.whiten:
            if variance[top].min() <= 1e-12 * max(variance[top].max(), 1e-30):
                raise ValueError(f"opq: the fitted items span fewer than pca_dim={self.pca_dim} directions, so "
                                 f"whitening divides by zero; lower pca_dim or set whiten: False")
            components /= np.sqrt(variance[top])[:, None]
        self.pca_mean = mean.astype(np.float32)
        self.pca_components = components.astype(np.float32)

    @scoped_threads
    def fit(self, emb):
        x = validate_embeddings(emb)  # [N, D]
        k = self.codebook_sizes[0]
        if x.shape[0] < k:
            raise ValueError(f"opq: {x.shape[0]} items to fit but sid_codebook_size={k}: PQ's k-means needs at "
                             f"least K items; lower sid_codebook_size (a power of two <= {x.shape[0]})")
        if self.pca_dim:
            self._fit_pca(x)
        else:
            self.pca_mean = self.pca_components = None
        y = self._project(x)  # [N, d]
        check_opq_shape(y.shape[1], self.n_levels, k)
        index = faiss.index_factory(y.shape[1], self.factory, faiss.METRIC_INNER_PRODUCT)
        opq = faiss.downcast_VectorTransform(index.chain.at(0))
        # OPQ learns its rotation with an internal PQ of 8-bit codes unless given one: give it the index's code
        # size (the same PQ as the default for 256 codes; fewer codes train on fewer items)
        rotation_pq = faiss.ProductQuantizer(y.shape[1], self.n_levels, self.bits)
        opq.pq = rotation_pq
        opq.niter = self.niter
        try:
            with _faiss_warnings_counted(f"opq ({self.factory}, {y.shape[0]} items)"):
                index.train(y)
        finally:
            opq.pq = None  # the pointer must not outlive rotation_pq; only training reads it
        self.index = index
        self.fitted = True
        return self

    # ------------------------------------------------------------------ encode
    @scoped_threads
    def encode(self, emb):
        """`(N, D)` embeddings -> `(N, M)` int64 codes in ``[0, K)``: faiss's own encoding, unpacked."""
        self._check_fitted()
        y = self._project(validate_embeddings(emb))
        return unpack_codes(self.index.sa_encode(y), self.n_levels, self.bits)

    @scoped_threads
    def reconstruction_error(self, emb):
        """Mean squared error per element between the (projected) vectors and faiss's decoding of their codes."""
        self._check_fitted()
        y = self._project(validate_embeddings(emb))
        decoded = self.index.sa_decode(self.index.sa_encode(y))  # [N, d]
        return float(np.mean((y.astype(np.float64) - decoded) ** 2))

    @scoped_threads
    def last_level_distances(self, emb):
        """Squared distances `(N, K)` from the last rotated sub-vector (minus the coarse centroid) to the last
        codebook (what the PQ assigns the last code by)."""
        self._check_fitted()
        opq, ivf = self._parts()
        rotated = opq.apply(self._project(validate_embeddings(emb))) - self._coarse_centroid(ivf)  # [N, d]
        dsub = ivf.pq.dsub
        sub = rotated[:, -dsub:]  # [N, dsub]
        cents = self._pq_centroids(ivf)[-1]  # [K, dsub]
        return np.maximum((sub * sub).sum(1, keepdims=True) - 2.0 * sub @ cents.T + (cents * cents).sum(1), 0.0)

    # ------------------------------------------------------------------ parts (storage)
    def _parts(self):
        opq = faiss.downcast_VectorTransform(self.index.chain.at(0))
        return opq, faiss.downcast_index(faiss.extract_index_ivf(self.index))

    @staticmethod
    def _coarse_centroid(ivf):
        return ivf.quantizer.reconstruct_n(0, 1)  # [1, d]

    @staticmethod
    def _pq_centroids(ivf):
        pq = ivf.pq
        return faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)

    def state_arrays(self):
        """``{name: float32 array}`` that rebuild the fitted index exactly (see :meth:`load_state_arrays`)."""
        self._check_fitted()
        opq, ivf = self._parts()
        out = {
            "opq_matrix": faiss.vector_to_array(opq.A).reshape(opq.d_out, opq.d_in),
            "coarse_centroid": self._coarse_centroid(ivf),
            "pq_centroids": self._pq_centroids(ivf),
        }
        if self.pca_components is not None:
            out.update({"pca_mean": self.pca_mean, "pca_components": self.pca_components})
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}

    def load_state_arrays(self, arrays):
        """Rebuild the fitted index from :meth:`state_arrays`' output."""
        self.pca_mean = arrays.get("pca_mean")
        self.pca_components = arrays.get("pca_components")
        matrix = np.ascontiguousarray(arrays["opq_matrix"], dtype=np.float32)  # [d, d]
        index = faiss.index_factory(int(matrix.shape[1]), self.factory, faiss.METRIC_INNER_PRODUCT)
        self.index = index
        opq, ivf = self._parts()
        faiss.copy_array_to_vector(matrix.ravel(), opq.A)
        opq.is_trained = True
        ivf.quantizer.add(np.ascontiguousarray(arrays["coarse_centroid"], dtype=np.float32))
        faiss.copy_array_to_vector(np.ascontiguousarray(arrays["pq_centroids"], dtype=np.float32).ravel(),
                                   ivf.pq.centroids)
        ivf.is_trained = True
        index.is_trained = True
        self.fitted = True
        return self
