# coding: utf-8
"""Lean forward pass of a Hugging Face T5 stack over full sequences (training, teacher forcing, full encoding).

:func:`t5_stack_forward` computes exactly what ``T5Stack.forward`` computes without a cache (same parameters, same
arithmetic, no new weights), with less work per call on a CPU:

* one fused ``q|k|v`` projection per self-attention (``k|v`` per cross-attention) instead of three;
* the relative position bias and the padding mask are added once per stack into one `(B, H, S, S)` additive bias
  that every layer reuses (HF adds the bias and the mask again in every layer), and attention runs through
  :func:`torch.nn.functional.scaled_dot_product_attention` with ``scale=1`` (T5 does not scale the scores);
* RMS normalisation through :func:`torch.nn.functional.rms_norm`;
* dropout through :func:`fast_dropout`, whose keep mask is drawn as 16-bit integers from one 64-bit draw per four
  elements (CPU Bernoulli sampling costs more than the matrix products of a small T5; see the function).

Only the modules' parameters are read (``q``, ``k``, ``v``, ``o``, ``relative_attention_bias``, ``layer_norm``,
``wi``/``wi_0``/``wi_1``, ``wo``, ``final_layer_norm``), which have the same names in transformers 4.x and 5.x.
Incremental decoding (a cache) stays with :mod:`recbole_genrec.generative.incremental` / HF.

Equivalence: with dropout off (``eval()`` or ``dropout_rate: 0``) the outputs and gradients equal HF's to float
round-off (tests/test_tiger.py); with dropout on, the random masks differ from HF's (another sampler), not their
distribution except for the 1/65536 quantisation of the drop probability stated in :func:`fast_dropout`.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F

_KEEP_LEVELS = 1 << 16  # the keep mask compares 16-bit draws with round(keep * 2^16)


class _MaskedScale(torch.autograd.Function):
    """``x * mask * scale`` whose backward reuses the boolean mask (no float mask is kept for autograd)."""

    @staticmethod
    def forward(ctx, x, mask, scale):
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return torch.where(mask, x * scale, 0.0)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return torch.where(mask, grad * ctx.scale, 0.0), None, None


def keep_mask(shape, p: float, device=None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Boolean keep mask of ``shape``: each entry is kept with probability ``1 - p`` rounded to a multiple of 2^-16.

    Four 16-bit uniform draws are cut from every 64-bit integer of torch's generator (seeded by RecBole like every
    other draw), which on a CPU is about 6x cheaper than ``bernoulli_``.
    """
    n = math.prod(shape)
    threshold = int(round((1.0 - p) * _KEEP_LEVELS))
    # the full int64 range: random_() without bounds leaves the sign bit 0, which would bias every fourth draw
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None, generator=generator)
    draws = words.view(torch.int16)[:n].view(shape)  # [..] uniform on [-2^15, 2^15)
    return draws < (threshold - (1 << 15))


def effective_keep(p: float) -> float:
    """The keep probability :func:`keep_mask` realises for drop probability ``p``."""
    return int(round((1.0 - p) * _KEEP_LEVELS)) / _KEEP_LEVELS


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    r"""Inverted dropout with :func:`keep_mask`: ``x * mask / keep`` (``keep`` = the realised keep probability, so
    the expectation is exactly ``x``).  Identity when not training or ``p == 0``; ``F.dropout`` off the CPU."""
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    if p >= 1.0:
        return x * 0.0
    mask = keep_mask(x.shape, p, x.device)
    return _MaskedScale.apply(x, mask, 1.0 / effective_keep(p))


def _rms_norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """HF ``T5LayerNorm`` (scale only, no mean subtraction)."""
    return F.rms_norm(x, (x.size(-1),), norm.weight, norm.variance_epsilon)


def relative_bias(attention: torch.nn.Module, query_length: int, key_length: int, device) -> torch.Tensor:
    r"""T5's relative position bias of the first layer: `(1, H, q, k)` (HF's ``compute_bias`` without a cache)."""
    context = torch.arange(query_length, dtype=torch.long, device=device)[:, None]
    memory = torch.arange(key_length, dtype=torch.long, device=device)[None, :]
    buckets = attention._relative_position_bucket(
        memory - context,
        bidirectional=not attention.is_decoder,
        num_buckets=attention.relative_attention_num_buckets,
        max_distance=attention.relative_attention_max_distance,
    )  # [q, k]
    return attention.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # [1, H, q, k]


def _key_mask_bias(mask: torch.Tensor, dtype) -> torch.Tensor:
    """`(B, S)` 1/0 key mask -> `(B, 1, 1, S)` additive bias (0 / dtype min), as HF's extended masks."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def _attention(attn, query_in, key_value_in, bias, dropout_p, self_attention: bool) -> torch.Tensor:
    r"""One T5 attention (no output dropout): `(B, q, d)` queries, `(B, k, d)` keys/values, bias `(B|1, H, q, k)`."""
    batch, q_len, _ = query_in.shape
    heads, d_kv = attn.n_heads, attn.key_value_proj_dim
    if self_attention:
        weight = torch.cat([attn.q.weight, attn.k.weight, attn.v.weight])  # [3*H*dk, d]
        qkv = F.linear(query_in, weight).view(batch, q_len, 3, heads, d_kv).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)  # [B, H, q, dk] x3
    else:
        k_len = key_value_in.size(1)
        query = attn.q(query_in).view(batch, q_len, heads, d_kv).transpose(1, 2)  # [B, H, q, dk]
        weight = torch.cat([attn.k.weight, attn.v.weight])  # [2*H*dk, d]
        kv = F.linear(key_value_in, weight).view(batch, k_len, 2, heads, d_kv).permute(2, 0, 3, 1, 4)
        key, value = kv.unbind(0)  # [B, H, k, dk] x2
    context = F.scaled_dot_product_attention(
        query, key, value, attn_mask=bias.to(query.dtype), dropout_p=dropout_p, scale=1.0
    )  # [B, H, q, dk]
    return attn.o(context.transpose(1, 2).reshape(batch, q_len, heads * d_kv))  # [B, q, d]


def _feed_forward(ffn, x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``T5DenseActDense`` / ``T5DenseGatedActDense`` (its inner dropout through :func:`fast_dropout`)."""
    if hasattr(ffn, "wi"):
        hidden = ffn.act(ffn.wi(x))
    else:
        hidden = ffn.act(ffn.wi_0(x)) * ffn.wi_1(x)
    return ffn.wo(fast_dropout(hidden, p, training))


def t5_stack_forward(
    stack: torch.nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: Optional[torch.Tensor] = None,
    encoder_hidden: Optional[torch.Tensor] = None,
    encoder_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""``T5Stack.forward(...).last_hidden_state`` without a cache.

    Args:
        stack: an HF ``T5Stack`` (``t5.encoder`` or ``t5.decoder``); its ``training`` flag switches dropout.
        inputs_embeds (`torch.FloatTensor` of shape `(B, S, d)`): input embeddings.
        attention_mask (`torch.LongTensor` of shape `(B, S)`, *optional*): encoder padding mask (1 = real); the
            decoder is causal and unpadded, as in :meth:`T5Backbone.forward_loss`.
        encoder_hidden (`(B, S_enc, d)`), encoder_mask (`(B, S_enc)`): decoder only, the cross-attended states.
    Returns:
        `(B, S, d)` last hidden states (final RMS norm and dropout applied, as HF).
    """
    config = stack.config
    training = stack.training
    p = float(config.dropout_rate) if training else 0.0
    batch, length, _ = inputs_embeds.shape
    device, dtype = inputs_embeds.device, inputs_embeds.dtype
    first = stack.block[0].layer[0].SelfAttention
    bias = relative_bias(first, length, length, device).to(dtype)  # [1, H, S, S]
    if stack.is_decoder:
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        bias = bias.masked_fill(~causal, torch.finfo(dtype).min)  # [1, H, S, S]
        cross_bias = _key_mask_bias(encoder_mask, dtype)  # [B, 1, 1, S_enc]
    elif attention_mask is not None:
        bias = bias + _key_mask_bias(attention_mask, dtype)  # [B, H, S, S]

    hidden = fast_dropout(inputs_embeds, p, training)  # [B, S, d]
    for block in stack.block:
        self_layer = block.layer[0]
        normed = _rms_norm(self_layer.layer_norm, hidden)
        hidden = hidden + fast_dropout(_attention(self_layer.SelfAttention, normed, normed, bias, p, True), p, training)
        if stack.is_decoder:
            cross_layer = block.layer[1]
            normed = _rms_norm(cross_layer.layer_norm, hidden)
            attended = _attention(cross_layer.EncDecAttention, normed, encoder_hidden, cross_bias, p, False)
            hidden = hidden + fast_dropout(attended, p, training)
        ff_layer = block.layer[-1]
        hidden = hidden + fast_dropout(
            _feed_forward(ff_layer.DenseReluDense, _rms_norm(ff_layer.layer_norm, hidden), p, training), p, training
        )
    return fast_dropout(_rms_norm(stack.final_layer_norm, hidden), p, training)


__all__ = ["effective_keep", "fast_dropout", "keep_mask", "relative_bias", "t5_stack_forward"]
