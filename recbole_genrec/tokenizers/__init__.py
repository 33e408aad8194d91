"""Semantic-ID tokenizers: item embeddings -> unique discrete code tuples.

Methods (``TOKENIZERS``):

* ``rqvae``   - RQ-VAE as in TIGER (Rajput et al., NeurIPS 2023, "Recommender Systems
  with Generative Retrieval"; residual quantization after Zeghidour et al. 2021 and
  Lee et al., CVPR 2022).
* ``rkmeans`` - residual k-means with faiss (GRID / OneRec style, training-free).
* ``hkmeans`` - hierarchical (tree) k-means with faiss (DSI / PRORec style).
* ``opq``     - faiss OPQ + product quantization: many unordered codes per item (RPG, Hou et al., KDD 2025);
  items may share a tuple, so RPG runs it with ``collision="none"``.

Collision handling (``collision=``): ``extra_level`` (TIGER), ``sinkhorn`` (LC-Rec,
Zheng et al., ICDE 2024) or ``none``.

One call::

    codes, info = generate_semantic_ids(emb, method="rqvae", n_levels=3, codebook_size=256,
                                        collision="extra_level", seed=2020, device="cpu",
                                        show_progress=True, epochs=100, lr=1e-3)
"""
import logging
import time

import numpy as np

from .collisions import COLLISION_METHODS, check_capacity, resolve_collisions
from .diagnostics import code_diagnostics, normalized_mutual_info, plot_code_usage
from .kmeans import (
    HierarchicalKMeansTokenizer,
    ResidualKMeansTokenizer,
    normalize_codebook_sizes,
    validate_embeddings,
)
from .opq import OPQTokenizer
from .rqvae import RQVAETokenizer

logger = logging.getLogger(__name__)

TOKENIZERS = {
    "rqvae": RQVAETokenizer,
    "rkmeans": ResidualKMeansTokenizer,
    "hkmeans": HierarchicalKMeansTokenizer,
    "opq": OPQTokenizer,
}

__all__ = [
    "TOKENIZERS", "generate_semantic_ids", "tokenizer_params", "code_diagnostics", "plot_code_usage",
    "normalized_mutual_info", "validate_embeddings", "RQVAETokenizer",
    "ResidualKMeansTokenizer", "HierarchicalKMeansTokenizer", "OPQTokenizer",
]


def _check_options(method, collision, n_items, sizes, max_extra):
    """Fail before any training when the options are unknown or uniqueness is impossible."""
    if method not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer method {method!r}; choose one of {sorted(TOKENIZERS)}")
    if collision not in COLLISION_METHODS:
        raise ValueError(f"unknown collision method {collision!r}; choose one of {COLLISION_METHODS}")
    if collision == "sinkhorn":
        check_capacity(n_items, sizes)
    if collision == "extra_level" and max_extra is not None:
        check_capacity(n_items, sizes + [int(max_extra)],
                       hint="increase codebook_size, n_levels or max_extra")


def tokenizer_params(method):
    """The arguments ``sid_params`` may set for tokenizer ``method`` (its constructor's, minus the common ones)."""
    import inspect

    common = {"self", "n_levels", "codebook_sizes", "seed", "device", "show_progress"}
    params = inspect.signature(TOKENIZERS[method].__init__).parameters
    return sorted(n for n, p in params.items() if n not in common and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))


def _check_params(method, params):
    unknown = sorted(set(params) - set(tokenizer_params(method)))
    if unknown:
        raise ValueError(f"sid_params {unknown} are not arguments of the {method} tokenizer; it accepts "
                         f"{tokenizer_params(method)} (sid_params are per method: drop them when switching method)")


def generate_semantic_ids(emb, *, method, n_levels, codebook_size, collision, seed, device="cpu", show_progress=True,
                          max_extra=None, **method_params):
    """Fit a tokenizer on emb [N, D] and return unique code tuples.

    Returns ``(codes, info)``: codes int64 [N, L'] (L' = n_levels, +1 with ``extra_level``),
    unique rows unless ``collision="none"``; info has ``codebook_sizes`` (one per column,
    incl. the extra level), ``diagnostics`` (computed before collision handling, plus
    ``collision_rate_before``), ``recon_error``, ``method``, ``collision`` and ``seconds``.
    ``max_extra`` caps the extra level's size (ValueError if exceeded). ``info["tokenizer"]`` is the fitted
    tokenizer (store it with :class:`~recbole_genrec.tokenizers.artifact.FittedTokenizer`).
    """
    start = time.perf_counter()
    x = validate_embeddings(emb)  # [N, D] float32, finite
    sizes = normalize_codebook_sizes(codebook_size, n_levels)
    _check_options(method, collision, x.shape[0], sizes, max_extra)
    _check_params(method, method_params)
    tokenizer = TOKENIZERS[method](n_levels=n_levels, codebook_sizes=sizes, seed=seed,
                                   device=device, show_progress=show_progress, **method_params)
    raw_codes, recon = tokenizer.fit_transform(x)  # codes [N, L], float
    diagnostics = code_diagnostics(raw_codes, sizes, recon)
    diagnostics["collision_rate_before"] = diagnostics["collision_rate"]
    codes, out_sizes = resolve_collisions(
        raw_codes, collision, sizes,
        last_distances=lambda rows: tokenizer.last_level_distances(x[rows]),
        max_extra=max_extra,
    )
    seconds = time.perf_counter() - start
    logger.info("%s: %d items -> %d levels %s, collision rate before handling %.4f (%s), %.1fs",
                method, x.shape[0], codes.shape[1], out_sizes,
                diagnostics["collision_rate_before"], collision, seconds)
    info = {
        "codebook_sizes": out_sizes,
        "diagnostics": diagnostics,
        "recon_error": recon,
        "method": method,
        "collision": collision,
        "seconds": seconds,
        "tokenizer": tokenizer,
    }
    return codes.astype(np.int64), info
