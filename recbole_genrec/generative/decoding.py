# coding: utf-8
"""Trie-constrained beam search over semantic IDs, batched over users and implemented with tensor ops only.

TIGER (Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023) retrieves items by beam
searching the semantic ID of the next item.  Restricting every step to the codes that extend the beam's prefix to
the semantic ID of an existing item (a trie over the code table) guarantees that every returned tuple is a real
item.  Hugging Face's ``prefix_allowed_tokens_fn`` does this with one Python call per beam and step; here the trie
lookup is two ``torch.searchsorted`` calls on the :class:`~recbole_genrec.generative.code_table.CodeTable` prefix
tables for all ``B * beam`` beams at once, which return the (contiguous) existing children of every beam's prefix;
only those are scored, and the beam step is one ``torch.topk`` over ``[B, beam * C_level]`` where ``C_level <= K``
is the trie's largest fan-out at that level.  The first level expands a single beam per user (all beams share the
empty prefix), so no item can be selected twice.

The model plugs in through two callbacks:

* ``step_fn(last_tokens [B*beam], step) -> log_probs [B*beam, V]`` runs one incremental decoder step (reusing its
  key/value cache) on the token chosen at the previous step (the decoder start token at step 0) and returns the
  log-probabilities of the next token over the full vocabulary;
* ``reorder_fn(beam_idx [B*beam])`` reorders the model's decoder state (cache, prefix buffers) so that row ``i``
  continues row ``beam_idx[i]``; it is called once between consecutive steps.

Beam scores are accumulated in float32, so the search is exact under ``torch.autocast`` (bf16/fp16).
"""

from typing import Callable, Optional, Tuple

import torch

from .code_table import DECODER_START_TOKEN_ID, PAD_TOKEN_ID, CodeTable

StepFn = Callable[[torch.Tensor, int], torch.Tensor]
ReorderFn = Callable[[torch.Tensor], None]


def constrained_beam_search(
    step_fn: StepFn,
    code_table: CodeTable,
    batch_size: int,
    beam_size: int,
    device: Optional[torch.device] = None,
    reorder_fn: Optional[ReorderFn] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Beam search restricted to the semantic IDs in ``code_table``.

    Args:
        step_fn: ``step_fn(last_tokens, step) -> log_probs``; ``last_tokens`` is a `torch.LongTensor` of shape
            `(B * beam,)` (row ``b * beam + k`` is beam ``k`` of user ``b``), ``log_probs`` a tensor of shape
            `(B * beam, V)` with ``V >= code_table.vocab_size``. Only the columns of the current level are read.
        code_table: the :class:`CodeTable` whose items may be generated.
        batch_size: number of users ``B``.
        beam_size: number of beams (and of returned items) per user.
        device: device of the search state; defaults to the code table's device.
        reorder_fn: ``reorder_fn(beam_idx)`` with ``beam_idx`` a `torch.LongTensor` of shape `(B * beam,)` holding
            flat row indices; called after every step but the last.
    Returns:
        item_ids (`torch.LongTensor` of shape `(B, beam)`): distinct real items per user, best first; item 0 pads the
            list when the trie holds fewer than ``beam`` items.
        scores (`torch.FloatTensor` of shape `(B, beam)`): float32 sum of the log-probabilities of the item's ``L``
            tokens, sorted in descending order; ``-inf`` for padding.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    device = torch.device(device) if device is not None else code_table.codes.device
    n_rows = batch_size * beam_size
    neg_inf = float("-inf")
    row_base = (torch.arange(batch_size, device=device) * beam_size).unsqueeze(1)  # [B, 1]

    beam_scores = torch.zeros(batch_size, beam_size, dtype=torch.float32, device=device)  # [B, beam]
    prefix_ids = torch.zeros(n_rows, dtype=torch.long, device=device)  # [B*beam] id of the empty prefix
    last_tokens = torch.full((n_rows,), DECODER_START_TOKEN_ID, dtype=torch.long, device=device)  # [B*beam]

    for level in range(code_table.n_levels):
        size = code_table.codebook_sizes[level]
        offset = code_table.level_offsets[level]
        log_probs = step_fn(last_tokens, level)  # [B*beam, V]
        level_log_probs = log_probs[:, offset : offset + size].float()  # [B*beam, K]

        if level == 0:
            # All beams of a user share the empty prefix: expand beam 0 only, so no item is picked twice.
            n_parents = 1
            level_log_probs = level_log_probs.reshape(batch_size, beam_size, size)[:, 0]  # [B, K]
            child_ids, codes, valid = code_table.child_codes(0, prefix_ids[:1])  # [1, C]
            child_ids, codes, valid = (t.expand(batch_size, -1) for t in (child_ids, codes, valid))  # [B, C]
            base_scores = beam_scores[:, :1]  # [B, 1]
        else:
            n_parents = beam_size
            child_ids, codes, valid = code_table.child_codes(level, prefix_ids)  # [B*beam, C]
            base_scores = beam_scores.reshape(n_rows, 1)  # [B*beam, 1]
        width = codes.size(1)  # C: largest fan-out of the trie at this level

        # candidate scores of the existing children only: [B*n_parents, C] -> [B, n_parents*C]
        cand = base_scores + level_log_probs.gather(1, codes.clamp(min=0))
        cand = cand.masked_fill(~valid, neg_inf).reshape(batch_size, n_parents * width)
        child_ids = child_ids.reshape(batch_size, n_parents * width)
        codes = codes.reshape(batch_size, n_parents * width)
        if n_parents * width < beam_size:  # fewer candidates than beams: pad with dead ones
            pad = beam_size - n_parents * width
            cand = torch.nn.functional.pad(cand, (0, pad), value=neg_inf)
            child_ids = torch.nn.functional.pad(child_ids, (0, pad), value=-1)
            codes = torch.nn.functional.pad(codes, (0, pad), value=-1)

        top_scores, top_idx = torch.topk(cand, beam_size, dim=1)  # [B, beam] sorted descending
        parent = (top_idx // max(width, 1)).clamp(max=n_parents - 1)  # [B, beam] beam index within the user
        new_child = child_ids.gather(1, top_idx)  # [B, beam]
        new_code = codes.gather(1, top_idx)  # [B, beam]

        alive = torch.isfinite(top_scores) & (new_child >= 0)  # [B, beam]
        beam_scores = torch.where(alive, top_scores, torch.full_like(top_scores, neg_inf))
        prefix_ids = torch.where(alive, new_child, torch.full_like(new_child, -1)).reshape(n_rows)
        last_tokens = torch.where(alive, new_code + offset, torch.full_like(new_code, PAD_TOKEN_ID)).reshape(n_rows)

        if level + 1 < code_table.n_levels and reorder_fn is not None:
            reorder_fn((row_base + parent).reshape(n_rows))  # flat row index of every new beam's parent

    item_ids = code_table.leaf_items(prefix_ids).reshape(batch_size, beam_size)  # [B, beam]
    return item_ids, beam_scores


def scores_to_full(item_ids: torch.Tensor, scores: torch.Tensor, n_items: int) -> torch.Tensor:
    r"""Scatters beam-search results into a dense score matrix for RecBole's full-sort evaluation.

    Args:
        item_ids (`torch.LongTensor` of shape `(B, beam)`): returned items (0 = padding).
        scores (`torch.FloatTensor` of shape `(B, beam)`): their scores.
        n_items (`int`): number of RecBole items (including the padding item 0).
    Returns:
        `torch.FloatTensor` of shape `(B, n_items)`: the beam score of every returned item, ``-inf`` elsewhere
        (including item 0).
    """
    full = torch.full((item_ids.size(0), n_items), float("-inf"), dtype=torch.float32, device=scores.device)
    valid = item_ids > 0  # [B, beam]
    values = torch.where(valid, scores.float(), torch.full_like(scores, float("-inf"), dtype=torch.float32))
    full.scatter_(1, item_ids.long(), values)
    full[:, 0] = float("-inf")
    return full
