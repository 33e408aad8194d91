# coding: utf-8
r"""Losses of PRORec: next-item cross-entropy over all positions and (symmetric) InfoNCE."""

import torch
import torch.nn.functional as F


def next_item_loss(logits, targets):
    r"""Cross-entropy of `(..., n_items)` logits against `(...)` targets; target 0 (padding) is ignored."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=0)


def sampled_next_item_loss(hidden, targets, item_table, negatives):
    r"""Sampled-softmax next-item loss: `(n, d)` hidden states, `(n,)` targets, `(n_items, d)` table.

    The positive competes with `(N,)` ``negatives`` shared by all rows (uniform item ids); a negative equal to the
    row's target is masked out. Cost ``n x N x d`` instead of ``n x n_items x d``.
    """
    positive = (hidden * item_table[targets]).sum(dim=-1, keepdim=True)  # [n, 1]
    negative = hidden @ item_table[negatives].t()  # [n, N]
    negative = negative.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
    logits = torch.cat([positive, negative], dim=1)  # [n, 1 + N]
    return F.cross_entropy(logits, torch.zeros_like(targets))


def paired_info_nce(anchors, positives, tau, symmetric=True):
    r"""InfoNCE with cosine similarity (Oord et al. 2018; CLIP's symmetric form).

    Row ``i`` of `(N, d)` ``anchors`` must match row ``i`` of `(N, d)` ``positives``; the other rows are negatives.
    ``symmetric`` averages the anchor->positive and positive->anchor directions. Returns a scalar.
    """
    logits = F.normalize(anchors, dim=-1) @ F.normalize(positives, dim=-1).t() / tau  # [N, N]
    labels = torch.arange(logits.size(0), device=logits.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.t(), labels))
    return loss


def catalogue_info_nce(queries, targets, table, tau):
    r"""InfoNCE of `(B, d)` queries against a whole item table `(n_items, d)` (cosine / ``tau``).

    The positive of row ``b`` is ``table[targets[b]]``; every other item of the table is a negative. Row 0 (padding)
    is never a candidate.
    """
    logits = F.normalize(queries, dim=-1) @ F.normalize(table, dim=-1).t() / tau  # [B, n_items]
    pad = torch.zeros_like(logits[0], dtype=torch.bool)
    pad[0] = True
    logits = logits.masked_fill(pad, float("-inf"))
    return F.cross_entropy(logits, targets)
