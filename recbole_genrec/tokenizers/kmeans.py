"""K-means based semantic-ID tokenizers (faiss).

Two ways of turning item embeddings into code tuples without training a network:

* **Residual k-means** (``rkmeans``): level ``l`` clusters the residual left after
  subtracting the centroid chosen at level ``l-1``. This is the quantizer of residual
  quantization (Juang & Gray 1982) used as a training-free alternative to RQ-VAE by
  GRID (Ju et al., 2025, "Generative Recommendation with Semantic IDs: A Practitioner's
  Handbook") and OneRec (Deng et al., 2025).
* **Hierarchical k-means** (``hkmeans``): level ``l`` clusters the items *inside each
  parent cluster* separately, giving a tree (as in DSI, Tay et al. 2022, and PRORec).
  Codes at level ``l > 1`` are child indices local to their parent.

Both follow the tokenizer protocol used by :func:`recbole_genrec.tokenizers.generate_semantic_ids`:
``fit(emb)``, ``encode(emb) -> [N, L] int64``, ``last_level_distances(emb) -> [N, K_L]``
and ``reconstruction_error(emb)``.

This module also holds the helpers shared by every tokenizer (input validation,
codebook-size normalisation, faiss k-means with small-sample clamping, chunked
nearest-centroid assignment).
"""
import abc
import contextlib
import functools
import logging

import faiss
import numpy as np
from tqdm import tqdm

from .diagnostics import tuple_groups

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 65536


# --------------------------------------------------------------------------- helpers
def validate_embeddings(emb, name="emb"):
    """Check that ``emb`` is a finite 2-D numeric array and return it as C-contiguous float32 [N, D]."""
    arr = np.asarray(emb)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n_items, dim], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a numeric (float) array, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad_rows = ~np.isfinite(arr).all(axis=1)  # [N]
    n_bad = int(bad_rows.sum())
    if n_bad:
        first = np.flatnonzero(bad_rows)[:5].tolist()
        raise ValueError(
            f"{name} has {n_bad} of {arr.shape[0]} rows containing NaN/inf values "
            f"(first row indices: {first}; values may also overflow float32); "
            "check the text encoder / embedding step that produced the item embeddings."
        )
    return arr


def normalize_codebook_sizes(codebook_size, n_levels):
    """Return a list of ``n_levels`` positive ints from an int or a per-level sequence."""
    n_levels = int(n_levels)
    if n_levels < 1:
        raise ValueError(f"n_levels must be >= 1, got {n_levels}")
    if np.isscalar(codebook_size):
        sizes = [int(codebook_size)] * n_levels
    else:
        sizes = [int(k) for k in codebook_size]
        if len(sizes) != n_levels:
            raise ValueError(
                f"codebook_size has {len(sizes)} entries but n_levels={n_levels}; "
                "give one size per level or a single int"
            )
    if any(k < 1 for k in sizes):
        raise ValueError(f"every codebook size must be >= 1, got {sizes}")
    return sizes


def clamp_k(k, n_points, where, warn=True):
    """Clamp the number of clusters to the number of points, logging a warning if it changes."""
    if k <= n_points:
        return k
    if warn:
        logger.warning(
            "%s: codebook_size %d > %d points; clamping k to %d for k-means "
            "(codes stay in [0, %d), the configured size is still reported)",
            where, k, n_points, n_points, k,
        )
    return n_points


def kmeanspp_init(x, k, rng):
    """k-means++ seeding (Arthur & Vassilvitskii 2007): k rows of ``x`` [n, D] chosen by D^2 sampling."""
    n = x.shape[0]
    x_sq = (x.astype(np.float64) ** 2).sum(1)  # [n]
    centers = np.empty((k, x.shape[1]), dtype=np.float32)
    first = int(rng.integers(n))
    centers[0] = x[first]
    d2 = np.maximum(x_sq - 2.0 * (x @ x[first]) + x_sq[first], 0.0)  # [n] squared distance to nearest center
    for i in range(1, k):
        cum = np.cumsum(d2)
        if cum[-1] <= 0:  # every point already coincides with a center
            pick = int(rng.integers(n))
        else:
            pick = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), n - 1)
        centers[i] = x[pick]
        d2 = np.minimum(d2, np.maximum(x_sq - 2.0 * (x @ x[pick]) + x_sq[pick], 0.0))
    return centers


def fit_centroids(x, k, niter=20, seed=2020, max_points_per_centroid=256, nredo=1):
    """Cluster ``x`` [n, D] into at most ``k`` centroids; returns centroids [k_eff, D] float32.

    ``k`` must already be clamped to ``n``. When ``k == n`` the (unique) points are the
    centroids, which avoids degenerate k-means runs on tiny groups. Lloyd iterations run in
    faiss (on at most ``max_points_per_centroid * k`` sampled points), started from a
    k-means++ seeding of that many points; ``nredo`` > 1 keeps the best of several runs.
    """
    n, dim = x.shape
    if k >= n:
        return np.unique(x, axis=0).astype(np.float32)  # [n_unique <= n, D], sorted => deterministic
    rng = np.random.default_rng(seed)
    n_sample = min(n, int(max_points_per_centroid) * int(k))
    sample = x if n_sample == n else x[np.sort(rng.choice(n, n_sample, replace=False))]
    sample = np.ascontiguousarray(sample, dtype=np.float32)  # [n_sample, D]
    km = faiss.Kmeans(
        dim, int(k), niter=int(niter), seed=int(seed), verbose=False,
        max_points_per_centroid=int(max_points_per_centroid), min_points_per_centroid=1,
        nredo=int(nredo),
    )
    km.train(sample, init_centroids=kmeanspp_init(sample, int(k), rng))
    return np.ascontiguousarray(km.centroids, dtype=np.float32)  # [k, D]


def assign_nearest(x, centroids, chunk_size=DEFAULT_CHUNK_SIZE):
    """Nearest centroid (L2) per row, in chunks; returns (codes int64 [n], sq_dist float32 [n])."""
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    n = x.shape[0]
    codes = np.empty(n, dtype=np.int64)
    dists = np.empty(n, dtype=np.float32)
    for start in range(0, n, chunk_size):
        chunk = np.ascontiguousarray(x[start:start + chunk_size], dtype=np.float32)  # [c, D]
        d, i = index.search(chunk, 1)  # [c, 1] each
        codes[start:start + chunk_size] = i[:, 0]
        dists[start:start + chunk_size] = d[:, 0]
    return codes, dists


def squared_distances(x, centroids, width):
    """Squared L2 distances [n, width] from ``x`` [n, D] to ``centroids`` [k, D], inf-padded to ``width``."""
    x = x.astype(np.float32, copy=False)
    c = centroids.astype(np.float32, copy=False)
    d = (x * x).sum(1, keepdims=True) - 2.0 * x @ c.T + (c * c).sum(1)[None, :]  # [n, k]
    out = np.full((x.shape[0], width), np.inf, dtype=np.float32)
    out[:, :c.shape[0]] = np.maximum(d, 0.0)
    return out


def mean_square(x, chunk_size=DEFAULT_CHUNK_SIZE):
    """Mean of x**2 over all elements, accumulated in float64 chunk by chunk (no big temporaries)."""
    total = 0.0
    for start in range(0, x.shape[0], chunk_size):
        chunk = x[start:start + chunk_size]
        total += float(np.einsum("ij,ij->", chunk, chunk, dtype=np.float64))
    return total / max(1, x.size)


def group_rows(prefix_codes):
    """Group identical rows of ``prefix_codes`` [N, l].

    Returns ``(prefixes [G, l], members)`` where ``members[g]`` is the sorted index array
    of rows equal to ``prefixes[g]``.
    """
    inverse, counts = tuple_groups(prefix_codes)  # group ids follow the lexicographic row order
    order = np.argsort(inverse, kind="stable")  # [N]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    prefixes = np.asarray(prefix_codes)[order[starts]]  # [G, l]
    members = np.split(order, np.cumsum(counts)[:-1])
    return prefixes, members


def fit_residual_kmeans(x, sizes, niter=20, seed=2020, max_points_per_centroid=256,
                        chunk_size=DEFAULT_CHUNK_SIZE, show_progress=False, where="rkmeans", nredo=1):
    """Residual k-means on ``x`` [N, D].

    Returns (list of centroids [k_l, D], codes [N, L], final residual [N, D]).
    """
    residual = np.array(x, dtype=np.float32, copy=True)  # [N, D]
    codes = np.empty((x.shape[0], len(sizes)), dtype=np.int64)
    centroids = []
    for level in tqdm(range(len(sizes)), desc=f"{where} levels", disable=not show_progress):
        k = clamp_k(sizes[level], x.shape[0], f"{where} level {level + 1}")
        cents = fit_centroids(residual, k, niter, seed + level, max_points_per_centroid, nredo)  # [k, D]
        codes[:, level], _ = assign_nearest(residual, cents, chunk_size)
        _subtract_centroids(residual, cents, codes[:, level], chunk_size)
        centroids.append(cents)
    return centroids, codes, residual


def _subtract_centroids(residual, centroids, codes, chunk_size):
    """In place: residual[i] -= centroids[codes[i]] (chunked to bound temporary memory)."""
    for start in range(0, residual.shape[0], chunk_size):
        residual[start:start + chunk_size] -= centroids[codes[start:start + chunk_size]]


@contextlib.contextmanager
def faiss_threads(n_threads):
    """Temporarily set faiss's OpenMP thread count; no-op (global state untouched) when None."""
    if n_threads is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n_threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def scoped_threads(method):
    """Run a tokenizer method inside ``self.thread_scope()`` (the caller's thread limit, if any)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.thread_scope():
            return method(self, *args, **kwargs)
    return wrapper


# --------------------------------------------------------------------------- base class
class BaseTokenizer(abc.ABC):
    """Common state of semantic-ID tokenizers: levels, configured sizes, seed, device."""

    name = "base"

    def __init__(self, n_levels, codebook_sizes, seed, device="cpu", show_progress=True,
                 n_threads=None):
        self.n_threads = None if n_threads is None else int(n_threads)  # None: leave libraries alone
        self.codebook_sizes = normalize_codebook_sizes(codebook_sizes, n_levels)  # configured K_l
        self.n_levels = len(self.codebook_sizes)
        self.seed = int(seed)
        self.device = device
        self.show_progress = bool(show_progress)
        self.fitted = False

    def thread_scope(self):
        """Context in which the heavy work runs (limits faiss threads when n_threads is set)."""
        return faiss_threads(self.n_threads)

    def _check_fitted(self):
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} must be fit() before use")

    @abc.abstractmethod
    def fit(self, emb):
        """Implemented by every tokenizer."""

    @abc.abstractmethod
    def encode(self, emb):
        """Implemented by every tokenizer."""

    @abc.abstractmethod
    def last_level_distances(self, emb):
        """Implemented by every tokenizer."""

    @abc.abstractmethod
    def reconstruction_error(self, emb):
        """Implemented by every tokenizer."""

    def fit_transform(self, emb):
        """Fit on emb [N, D]; returns (codes [N, L] int64, reconstruction error float)."""
        self.fit(emb)
        return self.encode(emb), self.reconstruction_error(emb)


class _FaissMixin:
    """Parameters and fitting entry points shared by the two faiss tokenizers, which implement
    ``_fit(x) -> codes [N, L]`` and ``_training_error(x, codes) -> float``."""

    def _init_faiss(self, niter, max_points_per_centroid, chunk_size, nredo):
        self.niter = int(niter)
        self.nredo = int(nredo)
        self.max_points_per_centroid = int(max_points_per_centroid)
        self.chunk_size = int(chunk_size)

    @scoped_threads
    def fit(self, emb):
        self._fit(validate_embeddings(emb))
        return self

    @scoped_threads
    def fit_transform(self, emb):
        """Fit and return (codes [N, L], recon error) without re-encoding the training set."""
        x = validate_embeddings(emb)
        codes = self._fit(x)
        return codes, self._training_error(x, codes)


# --------------------------------------------------------------------------- residual k-means
class ResidualKMeansTokenizer(_FaissMixin, BaseTokenizer):
    """Residual k-means: level l quantizes ``x - sum_{j<l} c_j`` with its own codebook."""

    name = "rkmeans"

    def __init__(self, n_levels, codebook_sizes, seed, device="cpu", show_progress=True,
                 niter=20, max_points_per_centroid=256, chunk_size=DEFAULT_CHUNK_SIZE, n_threads=None,
                 nredo=1):
        super().__init__(n_levels, codebook_sizes, seed, device, show_progress, n_threads)
        self._init_faiss(niter, max_points_per_centroid, chunk_size, nredo)
        self.centroids = []  # L arrays [k_l, D]

    def _fit(self, x):
        """Fit on validated x [N, D]; returns the training codes [N, L]."""
        self.centroids, codes, _ = fit_residual_kmeans(
            x, self.codebook_sizes, self.niter, self.seed, self.max_points_per_centroid,
            self.chunk_size, self.show_progress, where="rkmeans", nredo=self.nredo,
        )
        self.fitted = True
        return codes

    def _training_error(self, x, codes):
        """Mean square of ``x - sum_l c_l[codes_l]`` (one pass, no nearest-centroid search)."""
        residual = np.array(x, dtype=np.float32, copy=True)
        for level, centroids in enumerate(self.centroids):
            _subtract_centroids(residual, centroids, codes[:, level], self.chunk_size)
        return mean_square(residual, self.chunk_size)

    def _walk(self, x, n_levels):
        """Quantize the first ``n_levels`` levels; returns (codes [N, n_levels], residual [N, D])."""
        residual = np.array(x, dtype=np.float32, copy=True)
        codes = np.empty((x.shape[0], n_levels), dtype=np.int64)
        for level in range(n_levels):
            codes[:, level], _ = assign_nearest(residual, self.centroids[level], self.chunk_size)
            _subtract_centroids(residual, self.centroids[level], codes[:, level], self.chunk_size)
        return codes, residual

    @scoped_threads
    def encode(self, emb):
        self._check_fitted()
        return self._walk(validate_embeddings(emb), self.n_levels)[0]

    @scoped_threads
    def last_level_distances(self, emb):
        """Squared distances [N, K_L] from the level-(L-1) residual to the last codebook."""
        self._check_fitted()
        _, residual = self._walk(validate_embeddings(emb), self.n_levels - 1)
        return squared_distances(residual, self.centroids[-1], self.codebook_sizes[-1])

    @scoped_threads
    def reconstruction_error(self, emb):
        """Mean squared error per element of ``x - sum_l c_l`` (float)."""
        self._check_fitted()
        _, residual = self._walk(validate_embeddings(emb), self.n_levels)
        return mean_square(residual, self.chunk_size)


# --------------------------------------------------------------------------- hierarchical k-means
class HierarchicalKMeansTokenizer(_FaissMixin, BaseTokenizer):
    """Hierarchical (tree) k-means: each node's items are clustered into its own children.

    ``self.nodes[l]`` maps a prefix tuple of length ``l`` to the centroids [k_node, D] of
    that node's children (level ``l+1`` codes). Groups smaller than ``K_l`` get fewer
    children (their unique points). Every child of every node has its own node at the next
    level (a child without training items gets a single centroid equal to itself), so
    encoding unseen items always finds a path.
    """

    name = "hkmeans"

    def __init__(self, n_levels, codebook_sizes, seed, device="cpu", show_progress=True,
                 niter=20, max_points_per_centroid=256, chunk_size=DEFAULT_CHUNK_SIZE, n_threads=None,
                 nredo=1):
        super().__init__(n_levels, codebook_sizes, seed, device, show_progress, n_threads)
        self._init_faiss(niter, max_points_per_centroid, chunk_size, nredo)
        self.nodes = []  # L dicts: prefix tuple (len l) -> centroids [k_node, D]

    def _training_error(self, x, codes):
        return self._recon_error_from_codes(x, codes)

    def _fit(self, x):
        """Build the tree on validated x [N, D]; returns the training codes [N, L]."""
        k_root = clamp_k(self.codebook_sizes[0], x.shape[0], "hkmeans level 1")
        root = fit_centroids(x, k_root, self.niter, self.seed, self.max_points_per_centroid, self.nredo)
        self.nodes = [{(): root}]
        codes = np.empty((x.shape[0], self.n_levels), dtype=np.int64)
        codes[:, 0], _ = assign_nearest(x, root, self.chunk_size)
        levels = range(1, self.n_levels)
        for level in tqdm(levels, desc="hkmeans levels", disable=not self.show_progress):
            self.nodes.append(self._fit_level(x, codes[:, :level], level))
            self._assign_level(x, codes, level)
        self.fitted = True
        return codes

    def _fit_level(self, x, prefix_codes, level):
        """Build the nodes of depth ``level``: cluster each parent's items into <= K_{level+1} children."""
        k_level = self.codebook_sizes[level]
        prefixes, members = group_rows(prefix_codes)
        nodes = {}
        for prefix, idx in zip(prefixes, members):
            key = tuple(int(c) for c in prefix)
            k = min(k_level, len(idx))  # groups smaller than K get fewer centroids
            nodes[key] = fit_centroids(x[idx], k, self.niter, self.seed + level,
                                       self.max_points_per_centroid, self.nredo)
        self._add_empty_children(nodes, level)
        n_small = sum(1 for c in nodes.values() if c.shape[0] < k_level)
        logger.debug("hkmeans level %d: %d nodes, %d with fewer than %d children",
                     level + 1, len(nodes), n_small, k_level)
        return nodes

    def _add_empty_children(self, nodes, level):
        """Give every child of depth ``level-1`` nodes a node, even if no training item reached it."""
        for parent_key, parent_cents in self.nodes[level - 1].items():
            for child in range(parent_cents.shape[0]):
                key = parent_key + (child,)
                if key not in nodes:
                    nodes[key] = parent_cents[child:child + 1].copy()  # [1, D]

    def _assign_level(self, x, codes, level):
        """Fill ``codes[:, level]`` by nearest child centroid within each item's parent node."""
        prefixes, members = group_rows(codes[:, :level])
        for prefix, idx in zip(prefixes, members):
            cents = self.nodes[level][tuple(int(c) for c in prefix)]
            codes[idx, level], _ = assign_nearest(x[idx], cents, self.chunk_size)

    def _walk(self, x, n_levels):
        codes = np.empty((x.shape[0], n_levels), dtype=np.int64)
        codes[:, 0], _ = assign_nearest(x, self.nodes[0][()], self.chunk_size)
        for level in range(1, n_levels):
            self._assign_level(x, codes, level)
        return codes

    @scoped_threads
    def encode(self, emb):
        self._check_fitted()
        return self._walk(validate_embeddings(emb), self.n_levels)

    @scoped_threads
    def last_level_distances(self, emb):
        """Squared distances [N, K_L] to the children of each item's parent node (inf-padded)."""
        self._check_fitted()
        x = validate_embeddings(emb)
        width = self.codebook_sizes[-1]
        if self.n_levels == 1:
            return squared_distances(x, self.nodes[0][()], width)
        prefix_codes = self._walk(x, self.n_levels - 1)  # [N, L-1]
        out = np.empty((x.shape[0], width), dtype=np.float32)
        prefixes, members = group_rows(prefix_codes)
        for prefix, idx in zip(prefixes, members):
            cents = self.nodes[-1][tuple(int(c) for c in prefix)]
            out[idx] = squared_distances(x[idx], cents, width)
        return out

    @scoped_threads
    def reconstruction_error(self, emb):
        """Mean squared error per element between each item and its leaf centroid."""
        self._check_fitted()
        x = validate_embeddings(emb)
        return self._recon_error_from_codes(x, self._walk(x, self.n_levels))

    def _recon_error_from_codes(self, x, codes):
        """Mean squared error per element between x [N, D] and the leaf centroids of codes [N, L]."""
        recon = np.empty_like(x)
        prefixes, members = group_rows(codes[:, :-1]) if self.n_levels > 1 else (
            np.zeros((1, 0), dtype=np.int64), [np.arange(x.shape[0])])
        for prefix, idx in zip(prefixes, members):
            cents = self.nodes[-1][tuple(int(c) for c in prefix)]
            recon[idx] = cents[codes[idx, -1]]
        np.subtract(x, recon, out=recon)  # recon now holds the error [N, D]
        return mean_square(recon, self.chunk_size)
