"""Item-to-item next-item retrieval: how well an item embedding alone predicts the next item.

For each transition (previous item -> next item) the previous item's vector queries all items by
cosine (the query item itself excluded); Recall@K is the share of transitions whose next item is in
the top K. Transitions come from a RecBole sequential eval dataloader (last history item -> target).
"""

import numpy as np
import torch
import torch.nn.functional as F


def eval_transitions(eval_data, item_seq_field, item_seq_len_field, item_field):
    """``(previous [M], next [M])`` internal item ids of the evaluated interactions of ``eval_data``.

    Works with RecBole's full-sort sequential dataloaders, whose dataset rows are the evaluated
    interactions (history in ``item_seq_field``, target in ``item_field``).
    """
    feat = eval_data._dataset.inter_feat
    seq, length = feat[item_seq_field], feat[item_seq_len_field]  # [M, T], [M]
    previous = seq.gather(1, (length - 1).clamp(min=0).unsqueeze(1)).squeeze(1)  # [M]
    keep = length > 0
    return previous[keep], feat[item_field][keep]


@torch.no_grad()
def next_item_recall(vectors, previous, following, ks=(10,), batch_size=1024):
    """Recall@K of retrieving ``following[m]`` from ``vectors[previous[m]]``.

    ``vectors``: [n_items, d] (row 0 = padding, never retrieved); ``previous``, ``following``: [M] ids.
    Returns ``{"recall@K": float}``.
    """
    vectors = F.normalize(torch.as_tensor(np.asarray(vectors), dtype=torch.float32), dim=-1)  # [N, d]
    previous, following = torch.as_tensor(previous), torch.as_tensor(following)
    kmax = max(ks)
    hits = {k: 0 for k in ks}
    for start in range(0, len(previous), batch_size):
        prev = previous[start:start + batch_size]
        scores = vectors[prev] @ vectors.t()  # [b, N]
        scores[:, 0] = float("-inf")
        scores.scatter_(1, prev.unsqueeze(1), float("-inf"))
        top = scores.topk(kmax, dim=1).indices  # [b, kmax]
        found = top == following[start:start + batch_size].unsqueeze(1)  # [b, kmax]
        for k in ks:
            hits[k] += int(found[:, :k].any(1).sum())
    return {f"recall@{k}": hits[k] / max(len(previous), 1) for k in ks}
