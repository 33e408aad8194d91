"""Diagnostics for semantic-ID code tuples.

Quantities commonly reported for RQ-VAE / k-means semantic IDs (TIGER, Rajput et al.,
NeurIPS 2023; LC-Rec, Zheng et al., ICDE 2024): per-level codebook usage and perplexity
(exp of the code-distribution entropy; equals K for a uniform distribution over K codes),
collision rate (fraction of items whose full tuple is shared with another item), the
largest number of items sharing each prefix, and reconstruction error.

Also :func:`normalized_mutual_info` (arithmetic-mean normalisation, as in
Strehl & Ghosh 2002 / scikit-learn's default) implemented with numpy only.
"""
import numpy as np


def tuple_groups(codes):
    """Group identical rows of codes [N, l] (l >= 1).

    Returns (inverse [N] group id per row, counts [G] rows per group).
    """
    keys = row_keys(codes)
    if keys is None:  # code space too large for one int64 key: row-wise unique (slower)
        _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    else:
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return inverse.reshape(-1), counts


def row_keys(codes):
    """One int64 key per row of non-negative codes [N, l] (mixed radix), ordered like the rows
    lexicographically; None if the code space does not fit in int64 or codes are negative."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] == 0:
        raise ValueError(f"codes must be a 2-D array with at least one column, got {codes.shape}")
    if codes.shape[0] == 0 or codes.min() < 0:
        return None
    radices = [int(m) + 1 for m in codes.max(axis=0)]
    space = 1
    for r in radices:
        space *= r
    if space >= 2 ** 62:
        return None
    keys = np.zeros(codes.shape[0], dtype=np.int64)
    for col, radix in enumerate(radices):
        keys *= radix
        keys += codes[:, col].astype(np.int64)
    return keys


def _entropy(counts):
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def code_diagnostics(codes, codebook_sizes, recon_error=None):
    """Summary statistics of codes [N, L] given the configured codebook sizes (len L).

    Returns a dict with ``usage`` (fraction of each level's K codes used), ``n_codes_used``,
    ``perplexity`` (per level), ``collision_rate`` (fraction of items whose full tuple is
    shared), ``n_unique_tuples``, ``max_items_per_prefix`` (entry l-1: largest number of
    items sharing the first l codes), ``recon_error`` and sizes.
    """
    codes = np.asarray(codes, dtype=np.int64)
    sizes = [int(k) for k in codebook_sizes]
    if codes.ndim != 2 or codes.shape[1] != len(sizes):
        raise ValueError(f"codes shape {codes.shape} does not match {len(sizes)} codebook sizes")
    n, n_levels = codes.shape
    usage, used, perplexity = [], [], []
    for level, k in enumerate(sizes):
        counts = np.bincount(codes[:, level], minlength=k)
        used.append(int((counts > 0).sum()))
        usage.append(used[-1] / k)
        perplexity.append(float(np.exp(_entropy(counts))))
    max_prefix = [int(tuple_groups(codes[:, :l])[1].max()) for l in range(1, n_levels + 1)]
    inverse, counts = tuple_groups(codes)
    return {
        "n_items": int(n),
        "n_levels": int(n_levels),
        "codebook_sizes": sizes,
        "usage": usage,
        "n_codes_used": used,
        "perplexity": perplexity,
        "collision_rate": float((counts[inverse] > 1).mean()),
        "n_unique_tuples": int(len(counts)),
        "max_items_per_prefix": max_prefix,
        "recon_error": None if recon_error is None else float(recon_error),
    }


def plot_code_usage(codes, codebook_sizes, path):
    """Write a PNG with one histogram (items per code) per level; returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib only when a plot is asked for
    from matplotlib.figure import Figure

    codes = np.asarray(codes, dtype=np.int64)
    sizes = [int(k) for k in codebook_sizes]
    fig = Figure(figsize=(4.0 * len(sizes), 3.0))
    FigureCanvasAgg(fig)  # Agg canvas without touching pyplot's global backend
    for level, k in enumerate(sizes):
        ax = fig.add_subplot(1, len(sizes), level + 1)
        counts = np.bincount(codes[:, level], minlength=k)
        ax.bar(np.arange(len(counts)), counts, width=1.0)
        ax.set_title(f"level {level + 1}: {int((counts > 0).sum())}/{k} codes used")
        ax.set_xlabel("code")
        ax.set_ylabel("items")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path


def normalized_mutual_info(a, b):
    """NMI of two label vectors [N]: I(a; b) / ((H(a) + H(b)) / 2), in [0, 1].

    Two constant labelings count as identical (1.0); one constant vs a varied one gives 0.0.
    """
    a = np.asarray(a).reshape(-1)
    b = np.asarray(b).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"label vectors must be non-empty and equally long, got {a.shape} and {b.shape}")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    ia, ib = ia.reshape(-1), ib.reshape(-1)
    n_b = int(ib.max()) + 1
    _, joint = np.unique(ia.astype(np.int64) * n_b + ib, return_counts=True)  # sparse contingency
    h_a, h_b = _entropy(np.bincount(ia)), _entropy(np.bincount(ib))
    if h_a == 0.0 and h_b == 0.0:
        return 1.0
    mi = h_a + h_b - _entropy(joint)
    return float(np.clip(mi / ((h_a + h_b) / 2.0), 0.0, 1.0))
