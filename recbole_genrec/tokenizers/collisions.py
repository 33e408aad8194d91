"""Collision handling: make every item's semantic-ID tuple unique.

Two strategies:

* ``extra_level`` (TIGER, Rajput et al., NeurIPS 2023 "Recommender Systems with Generative
  Retrieval"): append one more code whose value is the item's rank inside its group of
  identical tuples. The extra level's size is the largest group.
* ``sinkhorn`` (LC-Rec, Zheng et al., ICDE 2024 "Adapting Large Language Models by
  Integrating Collaborative Semantics for Recommendation"): re-assign the LAST level of
  colliding items. Within each shared prefix (first L-1 codes) one item keeps each used
  code; the remaining items are spread over the free codes with a balanced optimal
  transport plan computed by Sinkhorn-Knopp iterations on their distances to the
  last-level centroids, rounded greedily (highest plan mass first, one item per code),
  which is a greedy nearest-free-code assignment and therefore always completes.

Uniqueness is impossible when N > prod_l K_l, or (for ``sinkhorn``) when a prefix holds
more items than the last level has codes; both raise ``ValueError`` with the arithmetic.
"""
import logging
from math import prod

import numpy as np

from .diagnostics import tuple_groups

logger = logging.getLogger(__name__)

COLLISION_METHODS = ("extra_level", "sinkhorn", "none")


# --------------------------------------------------------------------------- feasibility
def check_capacity(n_items, codebook_sizes,
                   hint="increase codebook_size or n_levels, or use collision='extra_level'"):
    """Raise ValueError if ``n_items`` cannot get unique tuples from ``codebook_sizes``."""
    capacity = prod(int(k) for k in codebook_sizes)
    if n_items > capacity:
        formula = " x ".join(str(int(k)) for k in codebook_sizes)
        raise ValueError(
            f"cannot give unique semantic IDs: N={n_items} items > {formula} = {capacity} "
            f"possible tuples; {hint}"
        )


def check_prefix_capacity(codes, last_codebook_size):
    """Raise ValueError if some prefix (first L-1 codes) holds more items than K_L codes."""
    prefix = codes[:, :-1]
    if prefix.shape[1] == 0:
        biggest, prefix_tuple = codes.shape[0], ()
    else:
        inverse, counts = tuple_groups(prefix)
        g = int(np.argmax(counts))
        biggest = int(counts[g])
        prefix_tuple = tuple(int(c) for c in prefix[np.flatnonzero(inverse == g)[0]])
    if biggest > last_codebook_size:
        raise ValueError(
            f"sinkhorn collision handling cannot make codes unique: prefix {prefix_tuple} holds "
            f"{biggest} items but the last level has only K={last_codebook_size} codes; "
            "increase the last codebook size, add a level, or use collision='extra_level'"
        )


# --------------------------------------------------------------------------- extra level
def add_extra_level(codes, max_extra=None):
    """Append the rank of each item within its group of identical tuples.

    codes [N, L] -> (codes [N, L+1], extra_size) where extra_size = largest group size.
    """
    codes = np.asarray(codes, dtype=np.int64)
    inverse, counts = tuple_groups(codes)
    order = np.argsort(inverse, kind="stable")  # items grouped, original order inside a group
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # [G]
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - np.repeat(starts, counts)
    extra_size = int(counts.max())
    if max_extra is not None and extra_size > max_extra:
        worst = tuple(int(c) for c in codes[order[starts[int(np.argmax(counts))]]])
        raise ValueError(
            f"extra_level: {extra_size} items share the code tuple {worst}, so the extra level "
            f"needs {extra_size} codes but max_extra={max_extra}; the first {codes.shape[1]} "
            "levels separate the items too poorly (train the tokenizer longer, or raise "
            "codebook_size / n_levels / max_extra)"
        )
    return np.concatenate([codes, rank[:, None]], axis=1), extra_size


# --------------------------------------------------------------------------- sinkhorn
def _logsumexp(a, axis):
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def sinkhorn_plan(cost, n_iters=100, epsilon=0.05):
    """Entropic OT plan (log domain) for cost [a, b] with a <= b.

    Row marginals are 1 (each item placed once), column marginals a/b (codes balanced).
    Returns log-plan [a, b].
    """
    a, b = cost.shape
    span = cost.max() - cost.min()
    log_k = -(cost - cost.min()) / (span + 1e-12) / epsilon  # [a, b]
    log_r = np.zeros(a)
    log_c = np.full(b, np.log(a / b))
    log_u, log_v = np.zeros(a), np.zeros(b)
    for _ in range(n_iters):
        log_u = log_r - _logsumexp(log_k + log_v[None, :], axis=1)
        log_v = log_c - _logsumexp(log_k + log_u[:, None], axis=0)
    return log_u[:, None] + log_k + log_v[None, :]


def greedy_match(score):
    """One distinct column per row, taking (row, col) pairs by decreasing score.

    score [a, b] with a <= b; always assigns every row (some column stays free until
    the row's turn). Returns cols [a].
    """
    a, b = score.shape
    order = np.argsort(-score, axis=None, kind="stable")
    cols = np.full(a, -1, dtype=np.int64)
    col_used = np.zeros(b, dtype=bool)
    n_left = a
    for flat in order:
        r, c = divmod(int(flat), b)
        if cols[r] >= 0 or col_used[c]:
            continue
        cols[r] = c
        col_used[c] = True
        n_left -= 1
        if n_left == 0:
            break
    return cols


def _finite_costs(dist):
    """Replace inf (codes with no centroid) by a cost larger than any real distance."""
    dist = np.asarray(dist, dtype=np.float64)
    finite = np.isfinite(dist)
    big = (dist[finite].max() * 2.0 + 1.0) if finite.any() else 1.0
    return np.where(finite, dist, big)


def _resolve_group(last_codes, dist, n_iters, epsilon):
    """New last-level codes [m] for one prefix group with current codes [m] and distances [m, K]."""
    m, k = dist.shape
    own = dist[np.arange(m), last_codes]
    order = np.lexsort((np.arange(m), own, last_codes))  # by code, then distance, then index
    first = np.ones(m, dtype=bool)
    first[1:] = last_codes[order][1:] != last_codes[order][:-1]
    keepers = np.zeros(m, dtype=bool)
    keepers[order[first]] = True  # the closest item keeps each used code
    movers = np.flatnonzero(~keepers)
    free = np.setdiff1d(np.arange(k), last_codes[keepers])  # len(free) >= len(movers) since m <= K
    cost = dist[np.ix_(movers, free)]  # [a, b]
    log_plan = sinkhorn_plan(cost, n_iters, epsilon)
    score = log_plan if np.isfinite(log_plan).all() else -cost  # greedy nearest-free fallback
    new_codes = last_codes.copy()
    new_codes[movers] = free[greedy_match(score)]
    return new_codes


def sinkhorn_dedup(codes, last_codebook_size, last_distances, n_iters=100, epsilon=0.05):
    """Re-assign last-level codes of colliding items so that all rows become unique.

    codes [N, L]; ``last_distances`` is either an array [N, K_L] of distances to the
    last-level centroids or a callable ``rows -> [len(rows), K_L]`` (so only colliding
    items are measured). Returns new codes [N, L].
    """
    codes = np.array(codes, dtype=np.int64, copy=True)
    n, n_levels = codes.shape
    check_prefix_capacity(codes, last_codebook_size)
    inverse, counts = tuple_groups(codes)
    colliding = counts[inverse] > 1  # [N]
    if not colliding.any():
        return codes
    prefix_inv = tuple_groups(codes[:, :-1])[0] if n_levels > 1 else np.zeros(n, dtype=np.int64)
    bad_prefixes = np.unique(prefix_inv[colliding])
    rows = np.flatnonzero(np.isin(prefix_inv, bad_prefixes))  # all items of affected prefixes
    dist = last_distances(rows) if callable(last_distances) else np.asarray(last_distances)[rows]
    dist = _finite_costs(dist)  # [R, K_L]
    if dist.shape != (len(rows), last_codebook_size):
        raise ValueError(f"last-level distances have shape {dist.shape}, "
                         f"expected ({len(rows)}, {last_codebook_size})")
    local_prefix = prefix_inv[rows]
    order = np.argsort(local_prefix, kind="stable")
    splits = np.flatnonzero(np.diff(local_prefix[order])) + 1
    for group in np.split(order, splits):  # indices into rows
        items = rows[group]
        codes[items, -1] = _resolve_group(codes[items, -1], dist[group], n_iters, epsilon)
    logger.info("sinkhorn: re-assigned last level within %d prefixes (%d items with shared tuples)",
                len(bad_prefixes), int(colliding.sum()))
    if tuple_groups(codes)[1].max() > 1:
        raise RuntimeError("sinkhorn collision handling left duplicate tuples (bug)")
    return codes


# --------------------------------------------------------------------------- dispatcher
def resolve_collisions(codes, method, codebook_sizes, last_distances=None, max_extra=None):
    """Apply ``method`` to codes [N, L]; returns (codes [N, L'], codebook_sizes for each column)."""
    sizes = [int(k) for k in codebook_sizes]
    if method == "none":
        return np.asarray(codes, dtype=np.int64), sizes
    if method == "extra_level":
        new_codes, extra = add_extra_level(codes, max_extra)
        return new_codes, sizes + [extra]
    if method == "sinkhorn":
        check_capacity(len(codes), sizes)
        if last_distances is None:
            raise ValueError("collision='sinkhorn' needs last-level distances")
        return sinkhorn_dedup(codes, sizes[-1], last_distances), sizes
    raise ValueError(f"unknown collision method {method!r}; choose one of {COLLISION_METHODS}")
