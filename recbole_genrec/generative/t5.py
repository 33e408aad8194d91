# coding: utf-8
"""T5 encoder-decoder backbone for generative retrieval over semantic IDs.

TIGER (Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023) feeds the flattened semantic
IDs of a user's history to a T5 encoder and trains the decoder to emit the ``L`` codes of the next item with token
cross-entropy.  :class:`T5Backbone` wraps :class:`transformers.T5ForConditionalGeneration` (built from a config, no
download; defaults are the TIGER paper's: 4+4 layers, 6 heads of 64, d_model 128, d_ff 1024, ReLU, dropout 0.1) and
adds what the generative recommenders share:

* ``forward_loss``: teacher-forced token cross-entropy on the target item's codes;
* ``sequence_log_prob``: exact log-probability of given items (exhaustive scoring / tests / re-ranking);
* ``beam_search``: users sorted by history length and encoded in groups without the leading columns that are
  padding for the whole group (``length_groups`` / ``encode_groups``), then trie-constrained beam search
  (:func:`~recbole_genrec.generative.decoding.constrained_beam_search`) with an incremental decoder
  (:class:`~recbole_genrec.generative.incremental.IncrementalT5Decoder`) that keeps the cross-attention keys/values
  once per user and group and reorders its self-attention cache with one ``index_select`` per step; its large
  buffers come from a :class:`~recbole_genrec.generative.workspace.BufferPool`, so repeated searches on CPU do not
  pay page faults for fresh memory.

Subclasses change the inputs through two hooks whose default is the shared token embedding:
``encoder_embeds(input_ids)`` and ``decoder_embeds(decoder_input_ids)``.  ``decoder_embeds`` always receives the
*full* decoder prefix ``[start, t_0, ..., t_{j}]`` (also during incremental decoding, where only its last position
is fed to the cached decoder), so a model such as DiscRec can make the embedding of code ``j`` depend on all earlier
codes of the same item.
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration

from .code_table import DECODER_START_TOKEN_ID, EOS_TOKEN_ID, PAD_TOKEN_ID, CodeTable
from .decoding import constrained_beam_search
from . import hf_compat, incremental
from .hf_compat import EncoderDecoderCache
from .lean_t5 import t5_stack_forward

class T5Backbone(nn.Module):
    r"""T5 encoder-decoder over semantic-ID tokens.

    Args:
        vocab_size (`int`): token vocabulary size (``CodeTable.vocab_size``).
        d_model, d_ff, num_layers, num_decoder_layers, num_heads, d_kv, dropout_rate, feed_forward_proj: T5 sizes
            (a model passes its config's; TIGER.yaml holds the paper's).
        **config_kwargs: any other :class:`transformers.T5Config` argument.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        d_model: int,
        d_ff: int,
        num_layers: int,
        num_decoder_layers: int,
        num_heads: int,
        d_kv: int,
        dropout_rate: float,
        feed_forward_proj: str,
        **config_kwargs,
    ):
        super().__init__()
        config_kwargs.setdefault("pad_token_id", PAD_TOKEN_ID)
        config_kwargs.setdefault("eos_token_id", EOS_TOKEN_ID)
        config_kwargs.setdefault("decoder_start_token_id", DECODER_START_TOKEN_ID)
        self.config = T5Config(
            vocab_size=vocab_size,
            d_model=d_model,
            d_ff=d_ff,
            num_layers=num_layers,
            num_decoder_layers=num_decoder_layers,
            num_heads=num_heads,
            d_kv=d_kv,
            dropout_rate=dropout_rate,
            feed_forward_proj=feed_forward_proj,
            **config_kwargs,
        )
        self.t5 = T5ForConditionalGeneration(self.config)
        # full-sequence passes (training, scoring, encoding) through the lean forward of the same weights
        # (recbole_genrec.generative.lean_t5); False = Hugging Face's T5Stack.forward
        self.lean_forward = True

    # ------------------------------------------------------------------------------------------------- hooks
    trim_multiple = 1  # length_groups trims leading padding in multiples of this (DiscRec: tokens per item)

    @property
    def shared(self) -> nn.Embedding:
        """Token embedding shared by encoder, decoder and (tied) LM head."""
        return self.t5.get_input_embeddings()

    @property
    def d_model(self) -> int:
        return self.config.d_model

    def encoder_embeds(self, input_ids: torch.Tensor) -> torch.Tensor:
        r"""Encoder input embeddings: `(B, S)` token ids -> `(B, S, d_model)`."""
        return self.shared(input_ids)

    def decoder_embeds(self, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        r"""Decoder input embeddings: full prefix `(B, t)` (starting with the decoder start token) -> `(B, t, d_model)`.

        Position ``j`` must only depend on positions ``<= j`` (the decoder is causal and, during beam search, only the
        last position of a growing prefix is used).
        """
        return self.shared(decoder_input_ids)

    # ------------------------------------------------------------------------------------------ building blocks
    @staticmethod
    def shift_right(target_tokens: torch.Tensor) -> torch.Tensor:
        r"""Teacher-forcing decoder inputs: `(B, L)` targets -> `(B, L)` ``[start, t_0, ..., t_{L-2}]``."""
        start = torch.full_like(target_tokens[:, :1], DECODER_START_TOKEN_ID)  # [B, 1]
        return torch.cat([start, target_tokens[:, :-1]], dim=1)

    def encode(
        self,
        input_ids: Optional[torch.Tensor],
        attention_mask: torch.Tensor,
        inputs_embeds: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        r"""Runs the encoder: `(B, S)` ids or `(B, S, d)` embeddings -> last hidden state `(B, S, d)`."""
        if inputs_embeds is None:
            inputs_embeds = self.encoder_embeds(input_ids)
        if self.lean_forward:
            return t5_stack_forward(self.t5.encoder, inputs_embeds, attention_mask)  # [B, S, d]
        return self.t5.encoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state

    def length_groups(
        self, attention_mask: torch.Tensor, n_groups: Optional[int] = None
    ) -> Tuple[torch.Tensor, List[Tuple[int, int, int]]]:
        r"""Groups of users with similar history lengths, for inference with less work on padding.

        Args:
            attention_mask (`torch.LongTensor` of shape `(B, S)`): left-padded encoder mask.
            n_groups (`int`, *optional*): number of groups; default one per 8 users, at most 8 (at least 1).
        Returns:
            order (`torch.LongTensor` of shape `(B,)`): users sorted by history length, shortest first.
            groups: ``(begin, end, start)`` per group: the users ``order[begin:end]`` need only the encoder columns
            ``start:`` (the leading columns are padding for all of them; ``start`` is a multiple of
            ``trim_multiple``, so item-aligned layouts such as DiscRec's keep their alignment).
        """
        batch_size, seq_len = attention_mask.shape
        n_groups = n_groups if n_groups is not None else min(8, batch_size // 8)
        n_groups = max(1, min(n_groups, batch_size))
        positions = torch.arange(seq_len, device=attention_mask.device)
        first_real = torch.where(attention_mask.bool(), positions, seq_len).min(dim=1).values  # [B]
        order = torch.argsort(first_real, descending=True, stable=True)  # shortest histories first
        groups = []
        for rows in torch.arange(batch_size).chunk(n_groups):
            begin, end = int(rows[0]), int(rows[-1]) + 1
            start = int(first_real[order[begin:end]].min())
            groups.append((begin, end, max(0, min(start - start % self.trim_multiple, seq_len - 1))))
        return order, groups

    def encode_groups(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, groups: List[Tuple[int, int, int]]
    ) -> List[torch.Tensor]:
        r"""Encoder outputs of contiguous user groups without their leading padding columns.

        ``groups`` holds ``(begin, end, start)`` as returned by :meth:`length_groups` (for inputs already sorted by
        ``order``); group ``g`` gets ``(end - begin, S - start, d)``.  Equal to :meth:`encode` on the real positions:
        T5's relative position bias depends only on distances between tokens and padded keys are masked.
        """
        return [
            self.encode(input_ids[begin:end, start:], attention_mask[begin:end, start:])
            for begin, end, start in groups
        ]

    def lm_logits(self, decoder_hidden: torch.Tensor) -> torch.Tensor:
        r"""Tied LM head: `(..., d_model)` decoder states -> `(..., V)` logits (T5 rescales tied outputs)."""
        if hf_compat.scales_decoder_outputs(self.config):
            decoder_hidden = decoder_hidden * (self.config.d_model**-0.5)
        return self.t5.lm_head(decoder_hidden)

    def decode(
        self,
        decoder_inputs_embeds: torch.Tensor,
        encoder_hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: Optional[EncoderDecoderCache] = None,
    ) -> torch.Tensor:
        r"""Runs the decoder: `(B, t, d)` embeddings -> last hidden state `(B, t, d)` (``cache`` updated in place)."""
        if cache is None and self.lean_forward:
            return t5_stack_forward(self.t5.decoder, decoder_inputs_embeds, None, encoder_hidden, attention_mask)
        outputs = self.t5.decoder(
            inputs_embeds=decoder_inputs_embeds,
            encoder_hidden_states=encoder_hidden,
            encoder_attention_mask=attention_mask,
            **hf_compat.decoder_cache_kwargs(self.t5.decoder, cache),  # `cache=` on 5.x, `past_key_values=` on 4.x
        )
        return outputs.last_hidden_state

    # ------------------------------------------------------------------------------------------------ training
    def forward_loss(
        self,
        input_ids: Optional[torch.Tensor],
        attention_mask: torch.Tensor,
        target_tokens: torch.Tensor,
        inputs_embeds: Optional[torch.Tensor] = None,
        decoder_inputs_embeds: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""Teacher-forced token cross-entropy on the target items' codes.

        Args:
            input_ids (`torch.LongTensor` of shape `(B, S)`): encoder tokens (may be ``None`` with ``inputs_embeds``).
            attention_mask (`torch.LongTensor` of shape `(B, S)`): encoder padding mask.
            target_tokens (`torch.LongTensor` of shape `(B, L)`): target item tokens; ``-100`` positions are ignored.
            inputs_embeds (`torch.FloatTensor` of shape `(B, S, d)`, *optional*): replaces ``encoder_embeds``.
            decoder_inputs_embeds (`torch.FloatTensor` of shape `(B, L, d)`, *optional*): replaces ``decoder_embeds``.
        Returns:
            loss (scalar float32), logits `(B, L, V)`, encoder last hidden `(B, S, d)`, decoder last hidden `(B, L, d)`.
        """
        encoder_hidden = self.encode(input_ids, attention_mask, inputs_embeds)  # [B, S, d]
        if decoder_inputs_embeds is None:
            decoder_input_ids = self.shift_right(target_tokens.clamp(min=0))  # [B, L]
            decoder_inputs_embeds = self.decoder_embeds(decoder_input_ids)  # [B, L, d]
        decoder_hidden = self.decode(decoder_inputs_embeds, encoder_hidden, attention_mask)  # [B, L, d]
        logits = self.lm_logits(decoder_hidden)  # [B, L, V]
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), target_tokens.reshape(-1), ignore_index=-100
        )
        return loss, logits, encoder_hidden, decoder_hidden

    def sequence_log_prob(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_tokens: torch.Tensor
    ) -> torch.Tensor:
        r"""Sum of the teacher-forced log-probabilities of the `(B, L)` target tokens -> float32 `(B,)`."""
        _, logits, _, _ = self.forward_loss(input_ids, attention_mask, target_tokens)  # [B, L, V]
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # [B, L, V]
        return log_probs.gather(2, target_tokens.unsqueeze(2)).squeeze(2).sum(dim=1)  # [B]

    # ------------------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def beam_search(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        code_table: CodeTable,
        beam_size: int,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""Trie-constrained beam search for the next item (call ``eval()`` first to disable dropout).

        Args:
            input_ids (`torch.LongTensor` of shape `(B, S)`), attention_mask (`(B, S)`): encoder inputs.
            code_table: items that may be generated.
            beam_size: number of beams / returned items.
        Returns:
            item_ids `(B, beam)` and float32 scores `(B, beam)` (summed token log-probabilities, descending).
        """
        batch_size = input_ids.size(0)
        # users sorted by history length, encoded and cross-attended in groups without their shared padding
        order, groups = self.length_groups(attention_mask)
        input_ids, attention_mask = input_ids[order], attention_mask[order]
        encoder_parts = self.encode_groups(input_ids, attention_mask, groups)  # [b_g, S_g, d] per group
        masks = [attention_mask[begin:end, start:] for begin, end, start in groups]  # [b_g, S_g] per group
        decoder = _BeamSearchState(self, encoder_parts, masks, beam_size, code_table.n_levels)
        try:
            item_ids, scores = constrained_beam_search(
                decoder.step, code_table, batch_size, beam_size, device=input_ids.device, reorder_fn=decoder.reorder
            )  # [B, beam] x2, in sorted user order
        finally:
            decoder.close()  # its large buffers go back to the pool for the next search
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(batch_size, device=order.device)
        return item_ids[inverse], scores[inverse]


class _BeamSearchState:
    """Decoder state of a running beam search: full prefix tokens for ``decoder_embeds`` + the incremental decoder
    (:class:`~recbole_genrec.generative.incremental.IncrementalT5Decoder`: self-attention cache per beam,
    cross-attention keys/values once per user).

    Row ``b * beam + k`` is beam ``k`` of user ``b``.  All beams of a user share the empty prefix, so the first step
    runs on the ``B`` users only; the prefix is then expanded to the ``B * beam`` rows.
    """

    def __init__(
        self,
        backbone: T5Backbone,
        encoder_hidden: incremental.Tensors,
        encoder_mask: incremental.Tensors,
        beam_size: int,
        max_length: int,
    ):
        self.backbone = backbone
        self.beam_size = beam_size
        self.decoder = incremental.IncrementalT5Decoder(
            backbone.t5.decoder, encoder_hidden, encoder_mask, beam_size, max_length
        )
        self.prefix = torch.zeros(self.decoder.n_users, 0, dtype=torch.long, device=backbone.shared.weight.device)

    def step(self, last_tokens: torch.Tensor, step: int) -> torch.Tensor:
        """`(B*beam,)` last chosen tokens -> `(B*beam, V)` float32 next-token log-probabilities."""
        first = self.prefix.size(1) == 0
        if first:  # identical start token for all beams of a user
            last_tokens = last_tokens[:: self.beam_size]  # [B]
        self.prefix = torch.cat([self.prefix, last_tokens.unsqueeze(1)], dim=1)  # [rows, t]
        embeds = self.backbone.decoder_embeds(self.prefix)[:, -1]  # [rows, d]
        hidden = self.decoder.step(embeds)  # [rows, d]
        log_probs = torch.log_softmax(self.backbone.lm_logits(hidden).float(), dim=-1)  # [rows, V]
        if first:
            beam = self.beam_size
            self.prefix = self.prefix.repeat_interleave(beam, dim=0)  # [B*beam, 1]
            log_probs = log_probs.repeat_interleave(beam, dim=0)  # [B*beam, V]
        return log_probs

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Row ``i`` continues row ``beam_idx[i]`` (`(B*beam,)`, never crossing users)."""
        self.prefix = self.prefix.index_select(0, beam_idx)
        self.decoder.reorder(beam_idx)

    def close(self) -> None:
        """Ends the search: the incremental decoder's large buffers go back to its pool."""
        self.decoder.close()
