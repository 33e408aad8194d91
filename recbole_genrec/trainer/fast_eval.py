"""Exact full-ranking evaluation for general models whose ``full_sort_predict`` is a matrix product.

RecBole's full-sort loop scores ``eval_batch_size // n_items`` users per batch (one user when the
catalogue has more than 4,096 items) and builds every batch's history and positive indices with
per-user Python. Here the users of the evaluation split are scored in chunks of about
``CHUNK_ELEMENTS`` scores (``user_e[chunk] @ item_e.T``), the padding item and each user's history
are masked with one index assignment per chunk, and the top-k and the hit matrix are computed on
tensors. The per-user indices are gathered once per evaluation loader (from RecBole's own
``uid2history_item`` / ``uid2positive_item``, so the masked items are exactly RecBole's) and cached.

The results go into RecBole's ``Collector`` data struct (``rec.items``, ``rec.topk``; any other need,
such as ``rec.meanrank``, is handed to the collector itself per chunk) and RecBole's ``Evaluator``
computes the metrics: the same numbers as ``Trainer.evaluate``.

Which models: one exposing ``full_sort_factors() -> (user_e, item_e)`` (AlphaRec), one whose
``full_sort_predict`` fills ``restore_user_e`` / ``restore_item_e`` (LightGCN, NGCF, SGL, ...) or
one with ``user_embedding`` / ``item_embedding`` tables (BPR, ...). Before each evaluation the
factors are checked against ``full_sort_predict`` on a sample of users; a model whose scores are
not that product (or a multi-process run, or a sampled evaluation) goes through RecBole's loop.
``fast_full_sort_eval: False`` turns the fast path off (``properties/overall.yaml``).
"""

from logging import getLogger

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.data.interaction import Interaction
from recbole.utils import EvaluatorType, ModelType

CHUNK_ELEMENTS = 1 << 24  # scores held at once (64 MiB of float32)
CHECK_USERS = 64  # users on which the factors are checked against full_sort_predict


class FullSortIndex:
    """Users of one full-sort evaluation loader with their history and positives as CSR tensors."""

    def __init__(self, eval_data):
        self.uids = eval_data.uid_list.to(torch.int64)  # [U]
        hist = list(eval_data.uid2history_item[self.uids.numpy()])
        pos = list(eval_data.uid2positive_item[self.uids.numpy()])
        self.hist_ptr, self.hist_items = _csr(hist)  # [U + 1], [n_hist]
        self.pos_ptr, self.pos_items = _csr(pos)  # [U + 1], [n_pos]
        self.pos_len = (self.pos_ptr[1:] - self.pos_ptr[:-1]).to(torch.int)  # [U]

    def chunk(self, start, stop, device):
        """``(hist_rows, hist_items, pos_rows, pos_items)`` of users ``start:stop``, rows counted from 0."""
        h0, h1 = int(self.hist_ptr[start]), int(self.hist_ptr[stop])
        p0, p1 = int(self.pos_ptr[start]), int(self.pos_ptr[stop])
        hist_rows = _rows(self.hist_ptr[start:stop + 1] - h0)
        pos_rows = _rows(self.pos_ptr[start:stop + 1] - p0)
        return (hist_rows.to(device), self.hist_items[h0:h1].to(device),
                pos_rows.to(device), self.pos_items[p0:p1].to(device))


def _csr(tensors):
    lengths = torch.tensor([t.numel() for t in tensors], dtype=torch.int64)
    ptr = torch.zeros(len(tensors) + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=ptr[1:])
    items = torch.cat(tensors).to(torch.int64) if tensors else torch.zeros(0, dtype=torch.int64)
    return ptr, items


def _rows(ptr):
    return torch.repeat_interleave(torch.arange(ptr.numel() - 1), ptr[1:] - ptr[:-1])


def full_sort_index(eval_data):
    """The cached :class:`FullSortIndex` of ``eval_data``."""
    index = getattr(eval_data, "_genrec_full_sort_index", None)
    if index is None:
        index = FullSortIndex(eval_data)
        eval_data._genrec_full_sort_index = index
    return index


def _candidate_factors(model):
    if hasattr(model, "full_sort_factors"):
        return model.full_sort_factors()
    user_e, item_e = getattr(model, "restore_user_e", None), getattr(model, "restore_item_e", None)
    if isinstance(user_e, torch.Tensor) and isinstance(item_e, torch.Tensor):
        return user_e, item_e
    user_t, item_t = getattr(model, "user_embedding", None), getattr(model, "item_embedding", None)
    if isinstance(user_t, torch.nn.Embedding) and isinstance(item_t, torch.nn.Embedding):
        return user_t.weight, item_t.weight
    return None


@torch.no_grad()
def matrix_factors(model, eval_data, n_items, check_users=CHECK_USERS):
    """``(user_e [n_users, d], item_e [n_items, d])`` whose product equals ``model.full_sort_predict``
    on the first ``check_users`` users of ``eval_data``, else ``None``."""
    index = full_sort_index(eval_data)
    if index.uids.numel() == 0:
        return None
    sample = eval_data.user_df[np.arange(min(check_users, index.uids.numel()))]
    device = next(iter(model.parameters()), torch.zeros(0)).device
    try:
        reference = model.full_sort_predict(sample.to(device)).view(len(sample), -1)
    except NotImplementedError:
        return None
    factors = _candidate_factors(model)
    if factors is None:
        return None
    user_e, item_e = factors
    if (user_e.dim() != 2 or item_e.dim() != 2 or item_e.shape[0] != n_items
            or user_e.shape[1] != item_e.shape[1] or reference.shape[1] != n_items):
        return None
    uids = sample[eval_data.uid_field].to(user_e.device)
    if int(uids.max()) >= user_e.shape[0]:
        return None
    mine = user_e[uids] @ item_e.t()
    if not torch.allclose(mine.float(), reference.float().to(mine.device), rtol=1e-4, atol=1e-5):
        return None
    return user_e.detach(), item_e.detach()


@torch.no_grad()
def fast_full_sort_collect(collector, eval_data, user_e, item_e, chunk_elements=CHUNK_ELEMENTS):
    """Score every user of ``eval_data`` as ``user_e[u] @ item_e.T`` in chunks, mask item 0 and the
    user's history, and add the chunk's ``rec.items`` / ``rec.topk`` (and whatever else the
    collector needs) to ``collector``. Returns the number of users evaluated."""
    index = full_sort_index(eval_data)
    n_items = item_e.shape[0]
    k = max(collector.topk)
    need_items, need_topk = collector.register.need("rec.items"), collector.register.need("rec.topk")
    others = collector.register.need("rec.meanrank") or collector.register.need("rec.score")
    step = max(1, chunk_elements // n_items)
    device = user_e.device
    item_t = item_e.t()  # [d, n_items]
    uids = index.uids.to(device)
    n_users = uids.numel()
    for start in range(0, n_users, step):
        stop = min(start + step, n_users)
        hist_rows, hist_items, pos_rows, pos_items = index.chunk(start, stop, device)
        scores = user_e[uids[start:stop]] @ item_t  # [B, n_items]
        scores[:, 0] = -np.inf
        scores[hist_rows, hist_items] = -np.inf
        if others:  # rec.meanrank / rec.score: RecBole's own collection of this (batched) chunk
            interaction = Interaction({eval_data.uid_field: uids[start:stop]})
            collector.eval_batch_collect(scores, interaction, pos_rows, pos_items)
            continue
        if need_items or need_topk:
            _, topk_idx = torch.topk(scores, k, dim=-1)  # [B, k]
            if need_items:
                collector.data_struct.update_tensor("rec.items", topk_idx)
            if need_topk:
                rows = torch.arange(stop - start, device=device).unsqueeze(1)  # [B, 1]
                pos_keys = pos_rows * n_items + pos_items  # [n_pos in chunk]
                hits = torch.isin(rows * n_items + topk_idx, pos_keys).to(torch.int)  # [B, k]
                pos_len = index.pos_len[start:stop].to(device).unsqueeze(1)  # [B, 1]
                collector.data_struct.update_tensor("rec.topk", torch.cat((hits, pos_len), dim=1))
    return n_users


class FastFullSortEvalMixin:
    """``evaluate`` through :func:`fast_full_sort_collect` when it applies, else RecBole's."""

    def _fast_eval_applicable(self, eval_data):
        config = self.config
        return (
            bool(config["fast_full_sort_eval"])
            and isinstance(eval_data, FullSortEvalDataLoader)
            and not eval_data.is_sequential
            and config["MODEL_TYPE"] == ModelType.GENERAL
            and config["eval_type"] == EvaluatorType.RANKING
            and config["single_spec"]
        )

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data or not self._fast_eval_applicable(eval_data):
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
        if load_best_model:
            from recbole.trainer import trainer as recbole_trainer  # RecBole's torch (its own checkpoint format)

            checkpoint_file = model_file or self.saved_model_file
            checkpoint = recbole_trainer.torch.load(checkpoint_file, map_location=self.device)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        self.model.eval()
        n_items = eval_data._dataset.item_num
        factors = matrix_factors(self.model, eval_data, n_items)
        if factors is None:
            if not getattr(self, "_fast_eval_declined", False):
                getLogger().info(f"fast_full_sort_eval: {self.config['model']}.full_sort_predict is not a "
                                 f"matrix product of its factors; using RecBole's evaluation loop.")
                self._fast_eval_declined = True
            return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        self.tot_item_num = n_items
        fast_full_sort_collect(self.eval_collector, eval_data, *factors)
        self.eval_collector.model_collect(self.model)
        result = self.evaluator.evaluate(self.eval_collector.get_data_struct())
        self.wandblogger.log_eval_metrics(result, head="eval")
        return result


__all__ = ["CHUNK_ELEMENTS", "FastFullSortEvalMixin", "FullSortIndex", "fast_full_sort_collect",
           "full_sort_index", "matrix_factors"]
