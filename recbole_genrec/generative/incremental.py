# coding: utf-8
"""Incremental T5 decoder for beam search: one token per beam and step, cross-attention keys/values kept per user.

Beam search over semantic IDs runs the decoder ``L`` times (one code per level) on ``B * beam`` rows.  Calling the
Hugging Face T5 decoder stack for every step is dominated by per-call overhead and, worse, by the cross-attention
cache: ``EncoderDecoderCache`` stores the encoder keys/values once per *row*, so after the first step they are
copied ``beam`` times (``[B * beam, H, S, d_kv]`` per layer) although all beams of a user attend to the same
encoder output.  :class:`IncrementalT5Decoder` runs the same arithmetic directly on the weights of a
:class:`transformers.T5Stack` decoder:

* cross-attention keys/values of all layers are projected with one matrix product per *group of users* and kept
  once per user (``[b, H, S_g, d_kv]``); the beams of a user are folded into the query axis
  (``[b, H, beam, d_kv] x [b, H, S_g, d_kv]``), so nothing is copied per beam.  Users may come in contiguous groups
  whose encoder outputs have different lengths ``S_g`` (see ``T5Backbone.encode_groups``), so no product runs over
  positions that are padding for a whole group;
* the self-attention cache is one preallocated, position-major buffer ``[L - 1, layers, 2, rows, H * d_kv]``: a
  step attends to the cached positions and its own key/value, then writes them into slot ``t`` (the last position
  is never stored); a reorder is a single ``index_select`` of the filled slots but the first (the start token, the
  same for all beams of a user);
* the relative position bias of the self-attention comes from the decoder's own ``compute_bias`` (no
  re-implementation of T5's bucketing), computed once for all ``L`` positions.

Layer norms, projections and the feed-forward block use the decoder's own weights, so any T5 variant (``relu`` /
gated-gelu feed-forward) is supported; dropout is skipped (call it in ``eval()`` mode only).  The result equals the
Hugging Face decoder with a key/value cache up to float round-off (``tests/test_decoding.py``).
"""

from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .workspace import DEFAULT_POOL, BufferPool

Tensors = Union[torch.Tensor, Sequence[torch.Tensor]]


def rms_norm(layer_norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ``T5LayerNorm`` (scale-only RMS norm); the fused kernel when ``x`` and the weight are float32."""
    weight = layer_norm.weight
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, (x.size(-1),), weight, layer_norm.variance_epsilon)
    return layer_norm(x)


def feed_forward(ff_layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A T5 ``T5LayerFF`` in eval mode (layer norm, feed-forward, residual); the ReLU variant runs its activation in
    place, which saves one ``[rows, d_ff]`` allocation per call."""
    dense = ff_layer.DenseReluDense
    if isinstance(getattr(dense, "act", None), nn.ReLU) and hasattr(dense, "wi"):
        hidden = torch.relu_(dense.wi(rms_norm(ff_layer.layer_norm, x)))  # [..., d_ff]
        return x + dense.wo(hidden)
    return ff_layer(x)


class IncrementalT5Decoder:
    r"""Decoder state of a beam search over ``B`` users with ``beam`` beams each.

    Args:
        decoder (`transformers.models.t5.modeling_t5.T5Stack`): a T5 decoder stack (``is_decoder=True``).
        encoder_hidden (`torch.FloatTensor` of shape `(B, S, d)`, or a sequence of `(b_g, S_g, d)` tensors): encoder
            output, one row per user; a sequence holds contiguous groups of users (``sum(b_g) = B``).
        encoder_mask (`torch.LongTensor` of shape `(B, S)`, or a sequence of `(b_g, S_g)` tensors): 1 for real
            encoder tokens, 0 for padding, grouped like ``encoder_hidden``.
        beam_size (`int`): beams per user.
        max_length (`int`): most decoder positions that will be run (the number of code levels).
        pool (:class:`~recbole_genrec.generative.workspace.BufferPool`, *optional*): where the large buffers come from
            on CPU; :meth:`close` gives them back.

    Rows: the first :meth:`step` takes one row per user (all beams share the decoder start token); it then expands the
    state so that every later step takes ``B * beam`` rows, row ``b * beam + k`` being beam ``k`` of user ``b``.
    """

    def __init__(
        self,
        decoder: nn.Module,
        encoder_hidden: Tensors,
        encoder_mask: Tensors,
        beam_size: int,
        max_length: int = 8,
        pool: Optional[BufferPool] = None,
    ):
        hidden_groups = [encoder_hidden] if torch.is_tensor(encoder_hidden) else list(encoder_hidden)
        mask_groups = [encoder_mask] if torch.is_tensor(encoder_mask) else list(encoder_mask)
        if len(hidden_groups) != len(mask_groups):
            raise ValueError(f"{len(hidden_groups)} encoder output groups but {len(mask_groups)} mask groups")
        self.blocks = list(decoder.block)
        self.final_norm = decoder.final_layer_norm
        bias_module = self.blocks[0].layer[0].SelfAttention  # owns relative_attention_bias (shared by layers)
        self.n_heads = bias_module.n_heads
        self.d_kv = bias_module.key_value_proj_dim
        self.inner = self.n_heads * self.d_kv
        self.group_sizes = [h.size(0) for h in hidden_groups]
        self.n_users = sum(self.group_sizes)
        self.beam_size = beam_size
        self.max_length = max_length
        self.pool = pool if pool is not None else DEFAULT_POOL
        device = hidden_groups[0].device

        # fused self-attention projection per layer: [3 * H * d_kv, d] (one product instead of three)
        self.self_qkv = [
            torch.cat([blk.layer[0].SelfAttention.q.weight, blk.layer[0].SelfAttention.k.weight,
                       blk.layer[0].SelfAttention.v.weight], dim=0)
            for blk in self.blocks
        ]
        # cross-attention keys and values of all layers, once per user: per group [layers, 2, b, H, S_g, d_kv]
        cross_kv_weight = torch.cat(
            [torch.cat([blk.layer[1].EncDecAttention.k.weight, blk.layer[1].EncDecAttention.v.weight], dim=0)
             for blk in self.blocks],
            dim=0,
        )  # [layers * 2 * H * d_kv, d]
        self.cross_kv: List[torch.Tensor] = []
        self.cross_bias: List[torch.Tensor] = []
        for hidden, mask in zip(hidden_groups, mask_groups):
            b, s, _ = hidden.shape
            kv = self._project(hidden.reshape(b * s, -1), cross_kv_weight)  # [b * S_g, layers * 2 * H * d_kv]
            kv = kv.view(b, s, len(self.blocks), 2, self.n_heads, self.d_kv).permute(2, 3, 0, 4, 1, 5)
            self.cross_kv.append(self.pool.take(kv.shape, kv.dtype, kv.device).copy_(kv))  # [layers, 2, b, H, S_g, d]
            self.pool.give(kv)
            dtype = kv.dtype
            self.cross_bias.append((1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min)  # [b, 1, 1, S_g]
        # relative position bias of every (query, key) pair of the decoder positions: [L, L, H]
        self.position_bias = bias_module.compute_bias(max_length, max_length, device=device)[0].permute(1, 2, 0)
        self.cache = None  # [L - 1, layers, 2, rows, H * d_kv], allocated after the first step
        self.spare = None  # same shape: target of the next reorder
        self.first_kv: List[torch.Tensor] = []  # first step's keys/values per layer: [2, B, H * d_kv]
        self.length = 0  # decoder positions seen so far

    @property
    def rows_per_user(self) -> int:
        """1 for the first step (all beams share the start token), ``beam`` once the cache holds the beams."""
        return 1 if self.cache is None else self.beam_size

    def _project(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, weight)`` for `(N, d)` inputs, into a pooled buffer on CPU outside autocast."""
        if x.device.type != "cpu" or torch.is_autocast_enabled("cpu") or x.dtype != weight.dtype:
            return F.linear(x, weight)
        return torch.mm(x, weight.t(), out=self.pool.take((x.size(0), weight.size(0)), x.dtype, x.device))

    def close(self) -> None:
        """Gives the large buffers back to the pool; the decoder cannot step any more."""
        self.pool.give(*self.cross_kv, self.cache, self.spare)
        self.cross_kv, self.cache, self.spare = [], None, None
        self.length = self.max_length

    # ------------------------------------------------------------------------------------------------ attention
    def _self_attention(self, index: int, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """`(rows, d)` normed states -> `(rows, d)`; stores this position's key/value in the cache unless it is the
        last position.  One query per row, so the products with the ``t <= L`` keys are broadcast sums."""
        rows, t = x.size(0), self.length
        qkv = F.linear(x, self.self_qkv[index])  # [rows, 3 * H * d_kv]
        q = qkv[:, : self.inner].view(rows, self.n_heads, self.d_kv)  # [rows, H, d_kv]
        kv = qkv[:, self.inner :].view(rows, 2, self.n_heads, self.d_kv)  # [rows, 2, H, d_kv] this position
        bias = self.position_bias[t, : t + 1].unsqueeze(1).to(q.dtype)  # [t+1, 1, H]
        scores = (kv[:, 0] * q).sum(-1).unsqueeze(0)  # [1, rows, H]; T5 does not scale q.k
        if t > 0:  # earlier positions from the cache: [t, rows, H, d_kv] each
            past = self.cache[:t, index].view(t, 2, rows, self.n_heads, self.d_kv)
            scores = torch.cat([(past[:, 0] * q).sum(-1), scores], dim=0)  # [t+1, rows, H]
        weights = torch.softmax((scores + bias).float(), dim=0).to(kv.dtype)  # [t+1, rows, H]
        out = weights[t].unsqueeze(-1) * kv[:, 1]  # [rows, H, d_kv]
        if t > 0:
            out = out + (weights[:t].unsqueeze(-1) * past[:, 1]).sum(0)
        if t == 0:
            self.first_kv.append(kv.transpose(0, 1).reshape(2, rows, self.inner))  # [2, B, H * d_kv]
        elif t + 1 < self.max_length:
            self.cache[t, index] = kv.transpose(0, 1).reshape(2, rows, self.inner)
        return attn.o(out.reshape(rows, self.inner))  # [rows, d]

    def _cross_attention(self, index: int, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """`(B * r, d)` normed states (``r`` rows per user, users in group order) -> `(B * r, d)`."""
        r = self.rows_per_user
        q = attn.q(x)  # [B * r, H * d_kv]
        outputs, start = [], 0
        for size, kv, bias in zip(self.group_sizes, self.cross_kv, self.cross_bias):
            q_g = q[start * r : (start + size) * r].view(size, r, self.n_heads, self.d_kv).transpose(1, 2)  # [b,H,r,d]
            scores = torch.matmul(q_g, kv[index, 0].transpose(2, 3)) + bias  # [b, H, r, S_g]
            weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
            out = torch.matmul(weights, kv[index, 1])  # [b, H, r, d_kv]
            outputs.append(out.transpose(1, 2).reshape(size * r, self.inner))  # [b * r, H * d_kv]
            start += size
        return attn.o(outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=0))  # [B * r, d]

    # ---------------------------------------------------------------------------------------------------- steps
    def step(self, embeds: torch.Tensor) -> torch.Tensor:
        r"""One decoder position: `(rows, d)` input embeddings -> `(rows, d)` final decoder states.

        ``rows`` is ``B`` on the first call and ``B * beam`` afterwards.
        """
        if self.length >= self.max_length:
            raise ValueError(f"the decoder was set up for {self.max_length} positions (max_length)")
        x = embeds
        for index, block in enumerate(self.blocks):
            self_layer, cross_layer, ff_layer = block.layer[0], block.layer[1], block.layer[-1]
            x = x + self._self_attention(index, self_layer.SelfAttention, rms_norm(self_layer.layer_norm, x))
            x = x + self._cross_attention(index, cross_layer.EncDecAttention, rms_norm(cross_layer.layer_norm, x))
            x = feed_forward(ff_layer, x)  # layer norm + feed-forward + residual
        self.length += 1
        hidden = rms_norm(self.final_norm, x)  # [rows, d]
        if self.cache is None:
            self._expand_to_beams()
        return hidden

    def _expand_to_beams(self) -> None:
        """After the first step: every user's single row becomes ``beam`` identical rows of the self-attention cache
        (the cross-attention keys/values stay per user)."""
        first = torch.stack(self.first_kv)  # [layers, 2, B, H * d_kv]
        self.first_kv = []
        layers, _, n_users, inner = first.shape
        slots = max(self.max_length - 1, 1)  # the last position is never attended to by a later one
        shape = (slots, layers, 2, n_users * self.beam_size, inner)
        self.cache = self.pool.take(shape, first.dtype, first.device)
        self.spare = self.pool.take(shape, first.dtype, first.device)  # reorders gather into it, then the two swap
        # position 0 (the start token) is the same for all beams of a user: it never needs reordering
        self.cache[0] = first.repeat_interleave(self.beam_size, dim=2)  # [layers, 2, B * beam, H * d_kv]
        self.spare[0] = self.cache[0]

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Row ``i`` continues row ``beam_idx[i]`` (`(B * beam,)`, never crossing users)."""
        t = min(self.length, self.cache.size(0))
        if t > 1:  # slot 0 (the start token) is identical within a user; reorders never cross users
            torch.index_select(self.cache[1:t], 3, beam_idx, out=self.spare[1:t])
            self.cache, self.spare = self.spare, self.cache
