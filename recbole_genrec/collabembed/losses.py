"""Contrastive pieces of CollabEmbed: InfoNCE with in-batch and hard negatives, window positives.

All vectors passed here are already L2-normalised, so dot products are cosines.
"""

import torch
import torch.nn.functional as F


def masked_info_nce(anchor, positive, positive_items, tau, anchor_items=None, hard=None, hard_valid=None):
    r"""InfoNCE of ``anchor[b]`` against ``positive[b]`` with the other rows' positives as negatives.

    Args:
        anchor: [B, d] unit vectors (query side).
        positive: [B, d] unit vectors; row ``b`` is the positive of ``anchor[b]``, the other rows are
            its in-batch negatives.
        positive_items: [B] item id of each positive. An in-batch candidate with the same item id as
            the positive is not a negative (masked); neither is one equal to ``anchor_items[b]``.
        tau: temperature.
        anchor_items: [B] item id of each anchor, or ``None`` when the anchor is not an item.
        hard: [B, K, d] extra (mined) negatives per anchor, or ``None``.
        hard_valid: [B, K] bool, False where ``hard`` holds no usable negative.

    Returns:
        scalar mean loss :math:`-\log \frac{e^{s_{bb}/\tau}}{\sum_j e^{s_{bj}/\tau} + \sum_k e^{h_{bk}/\tau}}`.
    """
    logits = anchor @ positive.t() / tau  # [B, B]
    same = positive_items.unsqueeze(0) == positive_items.unsqueeze(1)  # [B, B] candidate j is b's positive item
    if anchor_items is not None:
        same = same | (positive_items.unsqueeze(0) == anchor_items.unsqueeze(1))
    eye = torch.eye(len(anchor), dtype=torch.bool, device=anchor.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    if hard is not None and hard.shape[1] > 0:
        hard_logits = torch.einsum("bd,bkd->bk", anchor, hard) / tau  # [B, K]
        if hard_valid is not None:
            hard_logits = hard_logits.masked_fill(~hard_valid, float("-inf"))
        logits = torch.cat([logits, hard_logits], dim=1)  # [B, B + K]
    target = torch.arange(len(anchor), device=anchor.device)
    return F.cross_entropy(logits, target)


@torch.no_grad()
def mine_hard_negatives(anchor, item_vectors, exclude, threshold, k):
    """The ``k`` items most similar to each anchor among those with cosine below ``threshold``.

    Items scoring above ``threshold`` are treated as probable positives (false negatives) and skipped,
    as are the ``exclude`` ones (the positive, the user's own history, the padding item).

    Args:
        anchor: [B, d] unit vectors.
        item_vectors: [N, d] unit vectors of all items (row 0 = padding).
        exclude: [B, N] bool, True = never a negative for this anchor.
        threshold: cosine ceiling for a negative.
        k: negatives per anchor.

    Returns:
        ``(index [B, k] long, valid [B, k] bool)``; ``valid`` is False where fewer than ``k`` items qualify.
    """
    sims = anchor @ item_vectors.t()  # [B, N]
    sims = sims.masked_fill(exclude | (sims > threshold), float("-inf"))
    k = min(int(k), sims.shape[1])
    top, index = sims.topk(k, dim=1)  # [B, k]
    return index, torch.isfinite(top)


def window_positives(item_seq, item_seq_len, window):
    """One history item per row, drawn uniformly from the last ``window`` items before the target.

    ``item_seq`` [B, T] is RecBole's left-aligned history (valid items at ``0..len-1``),
    ``item_seq_len`` [B] >= 1. Returns item ids [B].
    """
    span = torch.clamp(item_seq_len, max=int(window)).clamp(min=1)  # [B]
    offset = (torch.rand(item_seq_len.shape, device=item_seq.device) * span).long()  # [B] in [0, span)
    position = (item_seq_len - 1 - offset).clamp(min=0)  # [B]
    return item_seq.gather(1, position.unsqueeze(1)).squeeze(1)


def history_mask(item_seq, n_items, extra=()):
    """[B, N] bool: True at the items of each row's history, at ``extra`` item ids ([B] each) and at 0."""
    mask = torch.zeros(item_seq.shape[0], n_items, dtype=torch.bool, device=item_seq.device)
    mask.scatter_(1, item_seq, True)
    for ids in extra:
        mask.scatter_(1, ids.unsqueeze(1), True)
    mask[:, 0] = True
    return mask
