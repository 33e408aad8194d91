# coding: utf-8
"""Semantic-ID code table shared by the generative recommenders.

Generative retrieval models such as TIGER (Rajput et al., "Recommender Systems with Generative Retrieval",
NeurIPS 2023) represent every item by a short tuple of discrete codes ``(c_0, ..., c_{L-1})`` (its *semantic ID*),
encode the user history as the concatenation of the semantic IDs of the past items and decode the semantic ID
of the next item autoregressively.  :class:`CodeTable` holds this item -> code mapping and everything derived
from it that the models need:

* a flat **token vocabulary** shared by encoder and decoder::

      PAD = 0                         padding; also the T5 ``decoder_start_token_id``
      EOS = 1                         appended to the encoder input after the last history item
      level l, code c -> offset[l] + c,   offset[0] = 2,  offset[l + 1] = offset[l] + codebook_sizes[l]

  so ``vocab_size = 2 + sum(codebook_sizes)`` and the tokens of different levels never collide;
* ``item_tokens`` / ``history_tokens`` to turn RecBole item ids and item sequences into token ids;
* ``lookup`` to map decoded token tuples back to RecBole item ids;
* the **prefix tables** used by trie-constrained beam search.  For every level ``l`` the buffer
  ``prefix_keys_l`` holds the sorted unique keys of all length-``l + 1`` code prefixes, where a prefix key is
  defined hierarchically as ``key_{l} = id_{l} * codebook_sizes[l] + c_l`` and ``id_{l}`` is the position of the
  length-``l`` prefix in ``prefix_keys_{l-1}`` (``id_0 = 0`` for the empty prefix).  A code ``c`` is allowed after
  prefix ``id`` iff ``id * K_l + c`` is in ``prefix_keys_l``; since keys are sorted, the children of a prefix form
  the contiguous slice ``[searchsorted(id * K_l), searchsorted((id + 1) * K_l))`` (see ``child_codes``).  Memory is
  ``O(n_items * L)`` and never depends on ``prod(codebook_sizes)``; keys never overflow because
  ``id_l < n_items``.

Row 0 of ``codes`` is RecBole's padding item; its values are ignored.  Any other row that contains a negative
code is treated as an item without a semantic ID: it is never generated and ``item_tokens`` maps it to PAD.
All tensors are registered as buffers so model checkpoints carry the code table, and ``load_state_dict`` accepts
a table of a different size (the buffers are replaced, not copied into).
"""

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

PAD_TOKEN_ID = 0
EOS_TOKEN_ID = 1
DECODER_START_TOKEN_ID = PAD_TOKEN_ID
NUM_SPECIAL_TOKENS = 2


class CodeTable(nn.Module):
    r"""Item -> semantic-ID table, token vocabulary and trie tables for constrained decoding.

    Args:
        codes (`torch.LongTensor` of shape `(n_items, L)`): code tuple of every RecBole internal item id; row 0 is
            the padding item (ignored). Rows with a negative entry are items without a semantic ID.
        codebook_sizes (`Sequence[int]` of length `L`): number of codes of every level; defaults to
            ``codes.max(0) + 1``.
    """

    def __init__(self, codes: torch.Tensor, codebook_sizes: Optional[Sequence[int]] = None):
        super().__init__()
        codes = torch.as_tensor(codes).detach().to(device="cpu", dtype=torch.long).clone()
        if codes.dim() != 2 or codes.size(0) < 1 or codes.size(1) < 1:
            raise ValueError(f"`codes` must have shape [n_items, L] with n_items >= 1, got {tuple(codes.shape)}")
        n_levels = codes.size(1)
        codes[0] = -1  # padding item
        valid = (codes >= 0).all(dim=1)  # [n_items]
        if codebook_sizes is None:
            codebook_sizes = (codes[valid].max(dim=0).values + 1).tolist() if valid.any() else [1] * n_levels
        codebook_sizes = [int(k) for k in codebook_sizes]
        if len(codebook_sizes) != n_levels or min(codebook_sizes) < 1:
            raise ValueError(f"`codebook_sizes` {codebook_sizes} does not match {n_levels} code levels")
        sizes = torch.tensor(codebook_sizes, dtype=torch.long)  # [L]
        if valid.any() and (codes[valid] >= sizes).any():
            raise ValueError("some codes are >= their level's codebook size")
        codes[~valid] = -1

        offsets = NUM_SPECIAL_TOKENS + torch.cumsum(sizes, 0) - sizes  # [L]
        self.register_buffer("codes", codes)  # [n_items, L]
        self.register_buffer("codebook_sizes_t", sizes)  # [L]
        self.register_buffer("offsets", offsets)  # [L]

        # ---- trie tables: sorted unique hierarchical prefix keys per level -------------------------------------
        real_items = valid.nonzero(as_tuple=True)[0]  # [n_real]
        real_codes = codes[real_items]  # [n_real, L]
        prefix_id = torch.zeros(real_items.numel(), dtype=torch.long)  # [n_real] id of the empty prefix
        for level in range(n_levels):
            keys = prefix_id * codebook_sizes[level] + real_codes[:, level]  # [n_real]
            unique_keys = torch.unique(keys, sorted=True)  # [n_prefixes_l]
            prefix_id = torch.searchsorted(unique_keys, keys)  # [n_real]
            self.register_buffer(f"prefix_keys_{level}", unique_keys)
        n_leaves = getattr(self, f"prefix_keys_{n_levels - 1}").numel()
        if n_leaves != real_items.numel():
            raise ValueError(
                f"{real_items.numel() - n_leaves} items share their code tuple with another item; semantic IDs must "
                "be unique: set sid_collision to extra_level (TIGER's extra level numbering colliding items) "
                "or sinkhorn instead of none"
            )
        item_of_leaf = torch.zeros(n_leaves, dtype=torch.long)  # [n_leaves]
        item_of_leaf[prefix_id] = real_items
        self.register_buffer("item_of_leaf", item_of_leaf)
        self._sync_meta()

    # ------------------------------------------------------------------------------------------------ metadata
    def _sync_meta(self) -> None:
        """Caches the python-side sizes derived from the buffers."""
        self.codebook_sizes: List[int] = [int(k) for k in self.codebook_sizes_t.tolist()]
        self.n_levels: int = len(self.codebook_sizes)
        self.n_items: int = int(self.codes.size(0))
        self.level_offsets: List[int] = [int(o) for o in self.offsets.tolist()]
        self.vocab_size: int = NUM_SPECIAL_TOKENS + sum(self.codebook_sizes)
        # largest fan-out of the trie per level (width of the candidate tensors of beam search)
        self.max_children: List[int] = []
        for level in range(self.n_levels):
            keys = self.prefix_keys(level)
            parents = torch.div(keys, self.codebook_sizes[level], rounding_mode="floor")
            counts = torch.unique_consecutive(parents, return_counts=True)[1] if keys.numel() else keys
            self.max_children.append(int(counts.max()) if counts.numel() else 0)

    @property
    def n_real_items(self) -> int:
        """Number of items that own a semantic ID (i.e. can be generated)."""
        return int(self.item_of_leaf.numel())

    def prefix_keys(self, level: int) -> torch.Tensor:
        """Sorted unique hierarchical keys of all code prefixes of length ``level + 1``: `[n_prefixes_level]`."""
        return getattr(self, f"prefix_keys_{level}")

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # The tables of another dataset/tokenizer have other shapes: adopt the stored tensors instead of copying.
        for name, buf in list(self._buffers.items()):
            key = prefix + name
            if key in state_dict and buf is not None and state_dict[key].shape != buf.shape:
                self._buffers[name] = torch.empty_like(state_dict[key], device=buf.device, dtype=buf.dtype)
        level = 0
        while f"{prefix}prefix_keys_{level}" in state_dict:  # a checkpoint with more levels than this table
            if f"prefix_keys_{level}" not in self._buffers:
                self.register_buffer(
                    f"prefix_keys_{level}", torch.empty_like(state_dict[f"{prefix}prefix_keys_{level}"])
                )
            level += 1
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        n_levels = int(self.codebook_sizes_t.numel())
        stale = [n for n in self._buffers if n.startswith("prefix_keys_") and int(n.rsplit("_", 1)[1]) >= n_levels]
        for name in stale:
            del self._buffers[name]
        self._sync_meta()

    # -------------------------------------------------------------------------------------------- tokenisation
    def item_tokens(self, item_ids: torch.Tensor) -> torch.Tensor:
        r"""Token ids of items.

        Args:
            item_ids (`torch.LongTensor` of shape `(*)`): RecBole internal item ids.
        Returns:
            `torch.LongTensor` of shape `(*, L)`; the padding item (and items without codes) map to PAD tokens.
        """
        codes = self.codes[item_ids]  # [*, L]
        return torch.where(codes >= 0, codes + self.offsets, torch.full_like(codes, PAD_TOKEN_ID))

    def history_tokens(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""Flattens the semantic IDs of the user histories into left-padded encoder inputs.

        Args:
            item_seq (`torch.LongTensor` of shape `(B, T)`): RecBole item sequences, right-padded with item 0 (the
                first ``item_seq_len`` positions hold the history, oldest first).
            item_seq_len (`torch.LongTensor` of shape `(B,)`): history lengths.
        Returns:
            input_ids (`torch.LongTensor` of shape `(B, T * L + 1)`):
                ``[PAD ... PAD, codes(i_1), ..., codes(i_n), EOS]``
                so the most recent item always sits right before the final EOS token.
            attention_mask (`torch.LongTensor` of shape `(B, T * L + 1)`): 1 for real tokens (incl. EOS), 0 for PAD.
        """
        batch_size, max_len = item_seq.shape
        lengths = item_seq_len.to(item_seq.device).long().clamp(0, max_len)  # [B]
        shift = max_len - lengths  # [B] number of left-padding item slots
        slots = torch.arange(max_len, device=item_seq.device)  # [T]
        src = slots.unsqueeze(0) - shift.unsqueeze(1)  # [B, T] source position of every output slot
        in_history = src >= 0  # [B, T]
        shifted = torch.gather(item_seq, 1, src.clamp(min=0))  # [B, T]
        shifted = torch.where(in_history, shifted, torch.zeros_like(shifted))  # item 0 -> PAD tokens
        tokens = self.item_tokens(shifted).reshape(batch_size, max_len * self.n_levels)  # [B, T*L]
        eos = torch.full((batch_size, 1), EOS_TOKEN_ID, dtype=tokens.dtype, device=tokens.device)  # [B, 1]
        input_ids = torch.cat([tokens, eos], dim=1)  # [B, T*L+1]
        attention_mask = (input_ids != PAD_TOKEN_ID).long()  # [B, T*L+1]
        return input_ids, attention_mask

    # ---------------------------------------------------------------------------------------------- decoding
    def child_codes(self, level: int, prefix_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""Existing one-code extensions of the given prefixes (one trie step, fully tensorised).

        The children of prefix ``p`` are the contiguous slice ``[searchsorted(keys, p*K), searchsorted(keys, (p+1)*K))``
        of ``prefix_keys(level)``, so two binary searches per prefix suffice and the result has only
        ``C = max_children[level]`` (the trie's largest fan-out at this level, ``<= K``) columns.

        Args:
            level (`int`): code level being decoded.
            prefix_ids (`torch.LongTensor` of shape `(N,)`): id of every length-``level`` prefix (0 is the empty
                prefix at level 0; -1 marks a dead prefix, which has no children).
        Returns:
            child_ids (`torch.LongTensor` of shape `(N, C)`): ids of the extended prefixes, -1 where there is none.
            codes (`torch.LongTensor` of shape `(N, C)`): the codes (not tokens) of the extensions, -1 where none.
            valid (`torch.BoolTensor` of shape `(N, C)`): whether the entry is a real extension.
        """
        keys_table = self.prefix_keys(level)  # [n_prefixes]
        size = self.codebook_sizes[level]
        width = self.max_children[level]
        n_rows = prefix_ids.size(0)
        if keys_table.numel() == 0 or width == 0:
            empty = torch.full((n_rows, 0), -1, dtype=torch.long, device=prefix_ids.device)
            return empty, empty.clone(), empty.bool()
        first_key = prefix_ids * size  # [N]
        lo = torch.searchsorted(keys_table, first_key)  # [N]
        hi = torch.searchsorted(keys_table, first_key + size)  # [N]
        child_ids = lo.unsqueeze(1) + torch.arange(width, device=prefix_ids.device)  # [N, C]
        valid = child_ids < hi.unsqueeze(1)  # [N, C]
        codes = keys_table[child_ids.clamp(max=keys_table.numel() - 1)] - first_key.unsqueeze(1)  # [N, C]
        minus_one = torch.full_like(child_ids, -1)
        return torch.where(valid, child_ids, minus_one), torch.where(valid, codes, minus_one), valid

    def leaf_items(self, leaf_ids: torch.Tensor) -> torch.Tensor:
        """Item ids of full-length prefix ids (`[*]`); -1 (dead prefix) maps to item 0."""
        items = self.item_of_leaf[leaf_ids.clamp(min=0)]
        return torch.where(leaf_ids >= 0, items, torch.zeros_like(items))

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:
        r"""Maps token tuples back to item ids.

        Args:
            tokens (`torch.LongTensor` of shape `(*, L)`): token ids (``offset[l] + code``).
        Returns:
            `torch.LongTensor` of shape `(*)`: RecBole item id, or 0 when the tuple is not the semantic ID of an item.
        """
        if tokens.size(-1) != self.n_levels:
            raise ValueError(f"expected {self.n_levels} tokens per item, got {tokens.size(-1)}")
        lead_shape = tokens.shape[:-1]
        tokens = tokens.reshape(-1, self.n_levels)  # [N, L]
        codes = tokens - self.offsets  # [N, L]
        prefix_ids = torch.zeros(tokens.size(0), dtype=torch.long, device=tokens.device)  # [N]
        for level in range(self.n_levels):
            keys_table = self.prefix_keys(level)
            code = codes[:, level]  # [N]
            in_range = (code >= 0) & (code < self.codebook_sizes[level]) & (prefix_ids >= 0)
            keys = prefix_ids * self.codebook_sizes[level] + code  # [N]
            if keys_table.numel() == 0:
                prefix_ids = torch.full_like(prefix_ids, -1)
                continue
            pos = torch.searchsorted(keys_table, keys).clamp(max=keys_table.numel() - 1)  # [N]
            found = in_range & (keys_table[pos] == keys)
            prefix_ids = torch.where(found, pos, torch.full_like(pos, -1))
        return self.leaf_items(prefix_ids).reshape(lead_shape)

    # ------------------------------------------------------------------------------------------- adding items
    def add_items(self, codes: torch.Tensor, item_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        r"""Give items semantic IDs after construction: the trie, ``lookup`` and ``n_items`` follow.

        Existing items keep their codes, so every score the model computes for them is unchanged (the vocabulary
        and ``codebook_sizes`` are fixed: a code outside them is an error).

        Args:
            codes (`torch.LongTensor` of shape `(M, L)`): the new items' code tuples; a row of ``-1`` adds an item
                without a semantic ID (it exists but is never generated).
            item_ids (`torch.LongTensor` of shape `(M,)`, *optional*): existing rows without a code to fill (e.g.
                the held-out items of the cold-start protocol); by default the items are appended as ids
                ``n_items .. n_items + M - 1``.
        Returns:
            `torch.LongTensor` of shape `(M,)`: the item ids that now hold ``codes``.
        """
        codes = torch.as_tensor(codes).detach().to(device="cpu", dtype=torch.long)
        if codes.dim() != 2 or codes.size(1) != self.n_levels:
            raise ValueError(f"`codes` must have shape [M, {self.n_levels}], got {tuple(codes.shape)}")
        valid = (codes >= 0).all(dim=1)  # [M]
        too_big = valid & (codes >= self.codebook_sizes_t.cpu()).any(dim=1)
        if too_big.any():
            rows = too_big.nonzero().flatten()[:5].tolist()
            raise ValueError(f"{int(too_big.sum())} new code tuples (rows {rows}, e.g. {codes[rows[0]].tolist()}) "
                             f"exceed the codebook sizes {self.codebook_sizes} the model was trained with")
        table = self.codes.cpu().clone()  # [n_items, L]
        if item_ids is None:
            item_ids = torch.arange(self.n_items, self.n_items + codes.size(0))
            table = torch.cat([table, torch.full_like(codes, -1)])
        else:
            item_ids = torch.as_tensor(item_ids, dtype=torch.long).cpu().flatten()
            if item_ids.numel() != codes.size(0):
                raise ValueError(f"{item_ids.numel()} item_ids for {codes.size(0)} code rows")
            out = (item_ids < 1) | (item_ids >= self.n_items)
            if out.any():
                raise ValueError(f"item ids {item_ids[out][:5].tolist()} are not items of this table (1..{self.n_items - 1})")
            coded = (table[item_ids] >= 0).all(dim=1)
            if coded.any():
                raise ValueError(f"items {item_ids[coded][:5].tolist()} already have semantic IDs; existing codes are "
                                 "never changed (append new items instead)")
            if item_ids.unique().numel() != item_ids.numel():
                raise ValueError("item_ids contains duplicates")
        table[item_ids] = codes.masked_fill(~valid.unsqueeze(1), -1)
        device = self.codes.device
        fresh = CodeTable(table, self.codebook_sizes)  # checks uniqueness against the existing items too
        for name in [n for n in self._buffers if n.startswith("prefix_keys_")]:
            del self._buffers[name]
        for name, buf in fresh._buffers.items():
            self._buffers[name] = buf.to(device)
        self._sync_meta()
        return item_ids

    def extra_repr(self) -> str:
        return (
            f"n_items={self.n_items}, n_real_items={self.n_real_items}, codebook_sizes={self.codebook_sizes}, "
            f"vocab_size={self.vocab_size}, max_children={self.max_children}"
        )
