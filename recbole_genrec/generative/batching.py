# coding: utf-8
"""Length-bucketed training batches for the generative recommenders (TIGER, DiscRec, PRORec).

RecBole's training loader draws every batch uniformly from all (history, next item) samples, so a batch of 256
almost always holds one full 20-item history and every row is padded to ``20 * L + 1`` encoder tokens; on
amazon-beauty the mean history is 6.7 items, so about two thirds of the encoder's work is padding.  Here

* :class:`LengthBuckets` orders the samples of every epoch by history length, cuts that order into batches of
  similar length and shuffles the batch order (a fresh random order inside every length, fixed by ``seed`` and the
  epoch, so a resumed run sees the same batches);
* :func:`trim_left_padding` drops the leading encoder columns that are padding in every row of a batch.

Trimming is exact: T5's relative position bias depends only on distances between tokens and padded keys are masked,
so the real tokens' states, the loss and the gradients are those of the padded batch (tests/test_tiger.py checks
this to 1e-5).  What changes with bucketing is the composition of each batch (samples of similar length train
together), not the set of samples of an epoch.
"""

from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch


def trim_left_padding(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, multiple: int = 1
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Drops the leading columns that are padding in every row.

    Args:
        input_ids, attention_mask (`torch.LongTensor` of shape `(B, S)`): left-padded encoder inputs.
        multiple (`int`): the number of dropped columns is a multiple of this (DiscRec's item-aligned layout keeps
            its alignment to the final EOS); at least one column is kept.
    Returns:
        input_ids, attention_mask of shape `(B, S')`, ``S' <= S`` (views of the inputs).
    """
    seq_len = attention_mask.size(1)
    real = attention_mask.bool().any(dim=0)  # [S] columns with a real token in some row
    first = int(real.int().argmax()) if bool(real.any()) else seq_len - 1
    start = min(first - first % max(1, multiple), seq_len - 1)
    if start <= 0:
        return input_ids, attention_mask
    return input_ids[:, start:], attention_mask[:, start:]


class LengthBuckets:
    r"""Batches of samples with similar history lengths, in a shuffled order that depends on ``(seed, epoch)``.

    Args:
        lengths (`array-like` of shape `(N,)`): history length of every training sample.
        batch_size (`int`): samples per batch (the last batch of an epoch may be smaller).
        seed (`int`): base seed; epoch ``e`` uses ``seed + e``.
        rank, world_size (`int`): under DDP every rank takes every ``world_size``-th batch, all ranks the same count.
    """

    def __init__(self, lengths, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.lengths = np.asarray(lengths).reshape(-1)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), max(1, int(world_size))

    def all_batches(self, epoch: int) -> List[np.ndarray]:
        """The sample indices of every batch of ``epoch`` (all ranks)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        permutation = rng.permutation(self.lengths.size)  # random order inside every length
        order = permutation[np.argsort(self.lengths[permutation], kind="stable")]  # [N] shortest first
        batches = [order[i : i + self.batch_size] for i in range(0, order.size, self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def epoch_batches(self, epoch: int) -> List[np.ndarray]:
        """This rank's batches of ``epoch`` (every ``world_size``-th, the same count on every rank)."""
        batches = self.all_batches(epoch)
        if self.world_size > 1:
            batches = batches[self.rank :: self.world_size][: len(batches) // self.world_size]
        return batches

    def __len__(self) -> int:
        n_batches = -(-self.lengths.size // self.batch_size)
        return n_batches // self.world_size if self.world_size > 1 else n_batches

    def padding_fraction(self, epoch: int = 0, tokens_per_item: int = 1, extra_tokens: int = 1,
                         max_length: Optional[int] = None) -> Tuple[float, float]:
        r"""Fraction of encoder tokens that are padding in ``epoch``: ``(bucketed, uniform)``.

        ``uniform`` pads every row to ``max_length`` items (RecBole's batches almost always hold one full history);
        ``bucketed`` pads every row to the longest history of its batch.  Tokens per row:
        ``tokens_per_item * length + extra_tokens``.
        """
        max_length = int(max_length or self.lengths.max())
        real = float((tokens_per_item * self.lengths + extra_tokens).sum())
        bucketed = sum(len(b) * (tokens_per_item * int(self.lengths[b].max()) + extra_tokens)
                       for b in self.all_batches(epoch))
        uniform = self.lengths.size * (tokens_per_item * max_length + extra_tokens)
        return 1.0 - real / bucketed, 1.0 - real / uniform


def bucketed_interactions(train_data, buckets: LengthBuckets, epoch: int) -> Iterator:
    """RecBole ``Interaction`` batches of ``train_data`` (a ``TrainDataLoader``) in ``buckets``' order for ``epoch``
    (built by the loader's own ``collate_fn``: same fields, transforms and negative sampling as RecBole's batches)."""
    for index in buckets.epoch_batches(epoch):
        yield train_data.collate_fn(index.tolist())


def sample_lengths(train_data, field: str) -> np.ndarray:
    """History length (``ITEM_SEQ_LEN`` field) of every sample of a RecBole training loader."""
    return np.asarray(train_data._dataset.inter_feat[field]).reshape(-1)


__all__ = ["LengthBuckets", "bucketed_interactions", "sample_lengths", "trim_left_padding"]
