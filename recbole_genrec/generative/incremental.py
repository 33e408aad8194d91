# coding: utf-8
"""Incremental T5 decoder for beam search: one token per beam and step, cross-attention keys/values kept per user.

Beam search over semantic IDs runs the decoder ``L`` times (one code per level) on ``B * beam`` rows.  Calling the
Hugging Face T5 decoder stack for every step is dominated by per-call overhead and, worse, by the cross-attention
cache: ``EncoderDecoderCache`` stores the encoder keys/values once per *row*, so after the first step they are
copied ``beam`` times (``[B * beam, H, S, d_kv]`` per layer) although all beams of a user attend to the same
encoder output.  :class:`IncrementalT5Decoder` runs the same arithmetic directly on the weights of a
:class:`transformers.T5Stack` decoder:

* cross-attention keys/values are projected once per *user* (``[B, H, S, d_kv]``) and the beams of a user are
  folded into the query axis (``[B, H, beam, d_kv] x [B, H, S, d_kv]``), so nothing is copied per beam;
* the self-attention cache is a pair of plain tensors per layer (``[rows, H, t, d_kv]``, ``t <= L``) reordered with
  one ``index_select`` each;
* the relative position bias of the single new query (position ``t - 1``) comes from the decoder's own
  ``compute_bias`` (no re-implementation of T5's bucketing).

Layer norms, projections and the feed-forward block are the decoder's own modules, so any T5 variant
(``relu`` / gated-gelu feed-forward) is supported; dropout is skipped (call it in ``eval()`` mode only).  The
result equals the Hugging Face decoder with a key/value cache up to float round-off (``tests/test_decoding.py``).
"""

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn


def feed_forward(ff_layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A T5 ``T5LayerFF`` in eval mode (layer norm, feed-forward, residual); the ReLU variant runs its activation in
    place, which saves one ``[rows, d_ff]`` allocation per call."""
    dense = ff_layer.DenseReluDense
    if isinstance(getattr(dense, "act", None), nn.ReLU) and hasattr(dense, "wi"):
        hidden = torch.relu_(dense.wi(ff_layer.layer_norm(x)))  # [..., d_ff]
        return x + dense.wo(hidden)
    return ff_layer(x)


class IncrementalT5Decoder:
    r"""Decoder state of a beam search over ``B`` users with ``beam`` beams each.

    Args:
        decoder (`transformers.models.t5.modeling_t5.T5Stack`): a T5 decoder stack (``is_decoder=True``).
        encoder_hidden (`torch.FloatTensor` of shape `(B, S, d)`): encoder output, one row per user.
        encoder_mask (`torch.LongTensor` of shape `(B, S)`): 1 for real encoder tokens, 0 for padding.
        beam_size (`int`): beams per user.

    Rows: the first :meth:`step` takes one row per user (all beams share the decoder start token); it then expands the
    state so that every later step takes ``B * beam`` rows, row ``b * beam + k`` being beam ``k`` of user ``b``.
    """

    def __init__(self, decoder: nn.Module, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor, beam_size: int):
        self.blocks = list(decoder.block)
        self.final_norm = decoder.final_layer_norm
        self.bias_module = self.blocks[0].layer[0].SelfAttention  # owns relative_attention_bias (shared by layers)
        self.n_heads = self.bias_module.n_heads
        self.d_kv = self.bias_module.key_value_proj_dim
        self.n_users = encoder_hidden.size(0)
        self.beam_size = beam_size
        self.rows_per_user = 1  # 1 for the first step, beam afterwards

        # cross-attention keys (transposed) and values, once per user and contiguous, so that no step copies them:
        # per layer [B, H, d_kv, S] and [B, H, S, d_kv]
        self.cross_kt: List[torch.Tensor] = []
        self.cross_v: List[torch.Tensor] = []
        # fused self-attention projection: per layer [3 * H * d_kv, d] (one matmul instead of three)
        self.self_qkv: List[torch.Tensor] = []
        for block in self.blocks:
            attn = block.layer[1].EncDecAttention
            self.cross_kt.append(self._heads(attn.k(encoder_hidden)).transpose(2, 3).contiguous())
            self.cross_v.append(self._heads(attn.v(encoder_hidden)).contiguous())
            own = block.layer[0].SelfAttention
            self.self_qkv.append(torch.cat([own.q.weight, own.k.weight, own.v.weight], dim=0))
        dtype = self.cross_v[0].dtype
        # additive mask of padded encoder positions: [B, 1, 1, S]
        self.cross_bias = (1.0 - encoder_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        # self-attention cache per layer: [rows, H, t, d_kv]
        self.self_k: List[Optional[torch.Tensor]] = [None] * len(self.blocks)
        self.self_v: List[Optional[torch.Tensor]] = [None] * len(self.blocks)
        self.length = 0  # decoder positions seen so far

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, T, H * d_kv)` -> `(N, H, T, d_kv)`."""
        return x.view(x.size(0), x.size(1), self.n_heads, self.d_kv).transpose(1, 2)

    def _self_attention(self, index: int, attn: nn.Module, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """`(rows, 1, d)` normed states, `(1, H, t)` position bias -> `(rows, 1, d)`; appends this position's
        key/value to the cache.  One query per row, so the products are broadcast sums, not batched matmuls."""
        rows = x.size(0)
        qkv = F.linear(x[:, 0], self.self_qkv[index]).view(rows, 3, self.n_heads, 1, self.d_kv)  # [rows, 3, H, 1, d_kv]
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # [rows, H, 1, d_kv]
        if self.self_k[index] is not None:
            k = torch.cat([self.self_k[index], k], dim=2)  # [rows, H, t, d_kv]
            v = torch.cat([self.self_v[index], v], dim=2)
        self.self_k[index], self.self_v[index] = k, v
        scores = (q * k).sum(-1) + bias  # [rows, H, t]; T5 does not scale q.k
        weights = torch.softmax(scores.float(), dim=-1).to(v.dtype)  # [rows, H, t]
        out = (weights.unsqueeze(-1) * v).sum(2)  # [rows, H, d_kv]
        return attn.o(out.reshape(rows, 1, -1))  # [rows, 1, d]

    def _cross_attention(self, index: int, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """`(B * r, 1, d)` normed states (``r`` rows per user) -> `(B * r, 1, d)`."""
        r = self.rows_per_user
        q = attn.q(x).view(self.n_users, r, self.n_heads, self.d_kv).transpose(1, 2)  # [B, H, r, d_kv]
        scores = torch.matmul(q, self.cross_kt[index]) + self.cross_bias  # [B, H, r, S]
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = torch.matmul(weights, self.cross_v[index])  # [B, H, r, d_kv]
        return attn.o(out.transpose(1, 2).reshape(x.size(0), 1, -1))  # [B * r, 1, d]

    def step(self, embeds: torch.Tensor) -> torch.Tensor:
        r"""One decoder position: `(rows, d)` input embeddings -> `(rows, d)` final decoder states.

        ``rows`` is ``B`` on the first call and ``B * beam`` afterwards.
        """
        x = embeds.unsqueeze(1)  # [rows, 1, d]
        t = self.length + 1
        bias = self.bias_module.compute_bias(1, t, device=x.device, past_seen_tokens=t - 1)  # [1, H, 1, t]
        bias = bias.to(self.cross_v[0].dtype)[:, :, 0]  # [1, H, t]
        for index, block in enumerate(self.blocks):
            self_layer, cross_layer, ff_layer = block.layer[0], block.layer[1], block.layer[-1]
            x = x + self._self_attention(index, self_layer.SelfAttention, self_layer.layer_norm(x), bias)
            x = x + self._cross_attention(index, cross_layer.EncDecAttention, cross_layer.layer_norm(x))
            x = feed_forward(ff_layer, x)  # layer norm + feed-forward + residual
        self.length = t
        hidden = self.final_norm(x)[:, 0]  # [rows, d]
        if self.rows_per_user == 1 and self.beam_size > 1:
            self._expand_to_beams()
        return hidden

    def _expand_to_beams(self) -> None:
        """After the first step: every user's single row becomes ``beam`` identical rows (self-attention cache only;
        the cross-attention keys/values stay per user)."""
        self.rows_per_user = self.beam_size
        self.self_k = [k.repeat_interleave(self.beam_size, dim=0) for k in self.self_k]  # [B*beam, H, 1, d_kv]
        self.self_v = [v.repeat_interleave(self.beam_size, dim=0) for v in self.self_v]

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Row ``i`` continues row ``beam_idx[i]`` (`(B * beam,)`, never crossing users)."""
        self.self_k = [k.index_select(0, beam_idx) for k in self.self_k]
        self.self_v = [v.index_select(0, beam_idx) for v in self.self_v]
