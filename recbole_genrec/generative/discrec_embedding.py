# coding: utf-8
"""DiscRec input embedding: disentangled semantic / collaborative branches with an adaptive gate.

DiscRec: Liu et al., "DiscRec: Disentangled Semantic-Collaborative Modeling for Generative Recommendation", 2025
(official code: github.com/Ten-Mao/DiscRec, ``layers/DiscRec.py``).

A generative recommender such as TIGER embeds every semantic-ID token with one shared table, so a token's
embedding mixes what the code means (semantics shared by all items with that code) with how its item is used
(collaborative signal).  DiscRec keeps the T5 stacks unchanged and replaces only their input embeddings by

* a **semantic branch**: the plain shared token embedding ``e_tok``;
* a **collaborative branch**: ``LayerNorm(e_tok + e_level)`` where ``e_level`` is an *item-level position* (level)
  embedding (the index of the token inside its item's semantic ID), followed by one multi-head self-attention
  layer whose mask keeps every token inside its own item (block-diagonal in the encoder, causal over the target
  item's prefix in the decoder), a residual connection and a residual feed-forward layer ``d -> d_ff -> d``;
* a **gate**: per token, ``softmax`` over two scores mixes the branches; the mix is fed to the T5 stack.

Modules (each small and usable alone):

* :class:`LevelEmbedding` -- item-level position embedding; :func:`encoder_item_layout` /
  :func:`decoder_item_layout` compute the level indices and item-local attention masks for the token layouts of
  :meth:`~recbole_genrec.generative.code_table.CodeTable.history_tokens` and of the decoder prefix;
* :class:`ItemLocalAttention` -- multi-head self-attention under a boolean ``(B, S, S)`` "may attend" mask;
* :class:`CollaborativeBranch` -- LayerNorm -> item-local attention -> residual -> residual feed-forward;
* :class:`BranchGate` -- the per-token two-way softmax gate;
* :class:`DiscRecEmbedding` -- the composition, with the paper's ablation switches.

Level indices (one table of ``L + 4`` rows per stack): ``0`` = decoder start (BOS), ``1..L`` = code levels,
``L + 1`` = EOS, ``L + 2`` = PAD, ``L + 3`` = any other token (TIGER's optional hashed user token, which is not
part of an item and, like PAD, attends only to itself in the collaborative branch).

Choices where the official code was kept or changed on purpose:

* **Gate.** As in the official code, each branch ``k`` owns a learned vector ``w_k`` (official: ``nn.Embedding(2,
  d)``) and its score is ``<h_k, w_k>``; the gate is ``softmax_k`` of these two scores.  Kept as is.
* **Padding.** The official branch has no key-padding mask (it only zeroes the attention rows of padded
  queries).  Here PAD keys are masked out (a token never attends to padding) and each PAD query attends only to
  itself, so no row of the softmax is empty.  PAD positions get their own level index instead of a code level.
* **EOS.** The official code lets EOS and the last item *slot* attend to each other.  Its histories are
  right-padded, so for every history shorter than ``max_len`` that slot is padding and EOS is linked to PAD
  tokens.  Our histories are left-padded (``CodeTable.history_tokens``), so the last slot always holds the true
  last item.  We keep the link one-directional: EOS attends to itself and to the codes of the last history item
  (``eos_attends_last_item=True``, config ``discrec_eos_attends_last_item``), while no code token attends to EOS,
  so the collaborative embedding of every item token depends on the codes of its own item only (identical for an
  item wherever it appears in a history).  With ``False`` EOS attends to itself only.
* **Decoder levels.** The official decoder is run without key/value cache so it always sees the full prefix; our
  ``T5Backbone.decoder_embeds`` hook also receives the full prefix during cached beam search, and the branch is
  recomputed over it (``L <= 4`` tokens), so level indices and the causal item mask are exact at every step.
* **Collaborative block** (defaults = the official ``layers/DiscRec.py`` + ``layers/FeedForward.py``):
  ``h = LN(x)``; ``a = h + Attn(h)`` where ``Attn`` projects q/k/v (with biases) and has **no output projection and
  no dropout** (official ``DiscRecAttention`` returns ``softmax(QK^T / sqrt(d_h)) V + q``); then **post-norm** feed-
  forward ``n = LN(a)``, ``out = n + Drop(W_2 Drop(ReLU(W_1 n)))`` (official ``collaborate_ffn_norm`` followed by
  ``FeedForward``, whose residual is its normalised input).  Options that restore this package's earlier choices:
  ``attn_out_proj=True`` (``discrec_attn_out_proj``: output projection + dropout on the attention output) and
  ``ffn_norm="pre"`` (``discrec_ffn_norm``: ``out = a + Drop(FFN(LN(a)))``).
* **Initialisation** (``init``, config ``discrec_init``): ``"official"`` (default) leaves the level embedding and the
  gate vectors at PyTorch's ``nn.Embedding`` default N(0, 1) as the official code does (its ``post_init`` only
  re-initialises T5's own modules), and initialises the branch's q/k/v and feed-forward weights Xavier-normal with
  zero biases (official ``MultiHeadAttention`` / ``FeedForward`` ``_init_weights``).  With N(0, 1) gate vectors the
  gate starts far from 0.5/0.5 for most tokens.  ``"small"`` is the earlier choice: level embedding and gate
  N(0, 0.02) (gate starts at 0.5/0.5), PyTorch's default ``nn.Linear`` init.
* **LayerNorm.** ``nn.LayerNorm`` with the official ``eps=1e-8``; the official ``LayerNorm`` divides by
  ``std + eps`` instead of ``sqrt(var + eps)`` (identical up to ``eps``).
* **Ablations** (the paper's): ``use_level_embedding=False`` drops ``e_level``; ``use_collab_branch=False`` returns
  the semantic branch alone (plain TIGER embedding); ``use_gate=False`` sums the two branches.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .code_table import EOS_TOKEN_ID, PAD_TOKEN_ID


# ------------------------------------------------------------------------------------------- token layouts
def n_level_indices(n_levels: int) -> int:
    """Rows of the level table: BOS (0), levels ``1..L``, EOS (``L + 1``), PAD (``L + 2``), other (``L + 3``)."""
    return n_levels + 4


def encoder_item_layout(
    input_ids: torch.Tensor, n_levels: int, code_vocab_size: int, eos_attends_last_item: bool
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Level indices and item-local attention mask of encoder inputs built by ``CodeTable.history_tokens``.

    The layout is ``[extra, codes(slot_0), ..., codes(slot_{T-1}), EOS]`` with ``L`` tokens per item slot, the
    item grid aligned to the final EOS and ``extra`` = ``(S - 1) mod L`` leading positions (TIGER's optional
    user-token column).  Padding slots and items without a semantic ID hold PAD tokens; a token that is neither a
    code, EOS nor PAD (e.g. TIGER's hashed user token) is level "other" and attends only to itself.

    Args:
        input_ids (`torch.LongTensor` of shape `(B, S)`): encoder tokens.
        n_levels (`int`): ``L``, tokens per item.
        code_vocab_size (`int`): ``CodeTable.vocab_size``; code tokens are ``2 <= id < code_vocab_size``.
        eos_attends_last_item (`bool`): whether EOS may attend to the codes of the last item slot.
    Returns:
        levels (`torch.LongTensor` of shape `(B, S)`): ``1..L`` for codes, ``L + 1`` EOS, ``L + 2`` PAD, ``L + 3``
            other.
        allowed (`torch.BoolTensor` of shape `(B, S, S)`): ``allowed[b, i, j]`` -- query ``i`` may attend key ``j``.
    """
    batch_size, seq_len = input_ids.shape
    device = input_ids.device
    extra = (seq_len - 1) % n_levels
    positions = torch.arange(seq_len, device=device)  # [S]
    grid = positions - extra  # [S] position inside the item grid (negative in the extra column)
    is_code = (input_ids >= EOS_TOKEN_ID + 1) & (input_ids < code_vocab_size) & (grid >= 0)  # [B, S]
    is_code[:, -1] = False
    is_eos = torch.zeros_like(is_code)
    is_eos[:, -1] = input_ids[:, -1] == EOS_TOKEN_ID
    is_pad = input_ids == PAD_TOKEN_ID  # [B, S]

    levels = torch.full_like(input_ids, n_levels + 3)  # [B, S] "other"
    levels = torch.where(is_code, (grid % n_levels + 1).expand_as(levels), levels)
    levels = levels.masked_fill(is_eos, n_levels + 1).masked_fill(is_pad, n_levels + 2)

    # item slot of every code token; every other token is its own group (negative ids never collide with slots)
    slots = torch.div(grid, n_levels, rounding_mode="floor").expand_as(input_ids)  # [B, S]
    groups = torch.where(is_code, slots, -1 - positions.expand_as(input_ids))  # [B, S]
    allowed = groups.unsqueeze(2) == groups.unsqueeze(1)  # [B, S(query), S(key)]
    if eos_attends_last_item:
        last_slot = (seq_len - 1 - extra) // n_levels - 1  # slot right before EOS (left padding: the true last item)
        to_last_item = is_code & (slots == last_slot)  # [B, S] keys
        allowed[:, -1] |= to_last_item & is_eos[:, -1:]
    return levels, allowed


def decoder_item_layout(decoder_input_ids: torch.Tensor, n_levels: int) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Level indices and causal mask of a decoder prefix ``[BOS, t_0, ..., t_{j}]`` (one item, BOS included).

    Args:
        decoder_input_ids (`torch.LongTensor` of shape `(B, t)`): full decoder prefix, ``t <= L + 1``.
        n_levels (`int`): ``L``.
    Returns:
        levels (`torch.LongTensor` of shape `(B, t)`): ``0`` for BOS, ``1..L`` for the codes.
        allowed (`torch.BoolTensor` of shape `(B, t, t)`): lower-triangular (causal within the target item).
    """
    batch_size, length = decoder_input_ids.shape
    if length > n_levels + 1:
        raise ValueError(f"a decoder prefix holds at most {n_levels + 1} tokens, got {length}")
    device = decoder_input_ids.device
    levels = torch.arange(length, device=device).unsqueeze(0).expand(batch_size, -1)  # [B, t]
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()  # [t, t]
    return levels, causal.unsqueeze(0).expand(batch_size, -1, -1)


# ----------------------------------------------------------------------------------------------- modules
INITS = ("official", "small")
FFN_NORMS = ("post", "pre")


def _check_choice(value, allowed, name):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


class LevelEmbedding(nn.Embedding):
    r"""Item-level position embedding: `(B, S)` level indices (see :func:`n_level_indices`) -> `(B, S, d)`.

    ``init="official"``: N(0, 1) (``nn.Embedding``'s default, as the official ``code_embedding``); ``"small"``: N(0, 0.02).
    """

    def __init__(self, n_levels: int, d_model: int, init: str):
        super().__init__(n_level_indices(n_levels), d_model)  # N(0, 1)
        if _check_choice(init, INITS, "init") == "small":
            nn.init.normal_(self.weight, std=0.02)


class ItemLocalAttention(nn.Module):
    r"""Multi-head self-attention restricted by a boolean mask (``True`` = may attend).

    No dropout on the attention probabilities (as in the official ``DiscRecAttention``).

    Args:
        d_model (`int`): hidden size (divisible by ``n_heads``).
        n_heads (`int`): attention heads (official: 2).
        out_proj (`bool`): an output projection after the heads (official: none; the heads are concatenated).
        init (`str`): ``"official"`` = Xavier-normal q/k/v (each ``d x d`` block on its own) and projection weights,
            zero biases; ``"small"`` = PyTorch's ``nn.Linear`` default.
    """

    def __init__(self, d_model: int, n_heads: int, out_proj: bool, init: str):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model) if out_proj else None
        if _check_choice(init, INITS, "init") == "official":
            for block in self.qkv.weight.data.chunk(3, dim=0):  # q, k, v: [d, d] each, as official q/k/v_proj
                nn.init.xavier_normal_(block)
            nn.init.zeros_(self.qkv.bias)
            if self.out is not None:
                nn.init.xavier_normal_(self.out.weight)
                nn.init.zeros_(self.out.bias)

    def forward(self, hidden: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        r"""`(B, S, d)` states and `(B, S, S)` mask (every row must allow at least one key) -> `(B, S, d)`."""
        batch_size, seq_len, d_model = hidden.shape
        head_dim = d_model // self.n_heads
        qkv = self.qkv(hidden).reshape(batch_size, seq_len, 3, self.n_heads, head_dim)  # [B, S, 3, h, d/h]
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, h, S, d/h]
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed.unsqueeze(1))  # [B, h, S, d/h]
        context = context.transpose(1, 2).reshape(batch_size, seq_len, d_model)  # [B, S, d]
        return context if self.out is None else self.out(context)


class CollaborativeBranch(nn.Module):
    r"""Item-local attention block of the collaborative branch.

    Official form: ``h = LN(x); a = h + Attn(h); n = LN(a); out = n + Drop(FFN(n))`` (``ffn_norm="post"``,
    no attention output projection / dropout).  ``ffn_norm="pre"``: ``out = a + Drop(FFN(LN(a)))``;
    ``attn_out_proj=True``: ``a = h + Drop(W_o Attn(h))``.

    Args:
        d_model, n_heads, d_ff, dropout: sizes (official: 2 heads, ``d_ff = 1024``, dropout 0.1).
        layer_norm_eps (`float`): official ``1e-8``.
        attn_out_proj (`bool`), ffn_norm (`str`), init (`str`): see above and :class:`ItemLocalAttention`.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, attn_out_proj: bool, ffn_norm: str,
                 init: str, layer_norm_eps: float = 1e-8):
        super().__init__()
        self.ffn_norm_placement = _check_choice(ffn_norm, FFN_NORMS, "ffn_norm")
        self.attn_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.attention = ItemLocalAttention(d_model, n_heads, attn_out_proj, init)
        self.ffn_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)
        if init == "official":  # official FeedForward: Xavier-normal 1x1 convolutions, zero biases
            for layer in (self.ffn[0], self.ffn[3]):
                nn.init.xavier_normal_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, inputs: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        r"""`(B, S, d)` token (+ level) embeddings, `(B, S, S)` mask -> `(B, S, d)` collaborative embeddings."""
        hidden = self.attn_norm(inputs)  # [B, S, d]
        attended = self.attention(hidden, allowed)  # [B, S, d]
        if self.attention.out is not None:
            attended = self.dropout(attended)
        hidden = hidden + attended  # [B, S, d]
        if self.ffn_norm_placement == "post":
            normed = self.ffn_norm(hidden)
            return normed + self.dropout(self.ffn(normed))  # [B, S, d]
        return hidden + self.dropout(self.ffn(self.ffn_norm(hidden)))  # [B, S, d]


class BranchGate(nn.Module):
    r"""Per-token softmax over two branch scores ``s_k = <h_k, w_k>`` (official code's gate).

    Returns the mix ``sum_k g_k h_k`` `(B, S, d)` and the weights ``g`` `(B, S, 2)` (semantic, collaborative).
    ``init="official"``: the vectors start N(0, 1) (official ``nn.Embedding(2, d)``); ``"small"``: N(0, 0.02).
    """

    def __init__(self, d_model: int, init: str):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(2, d_model))
        nn.init.normal_(self.weight, std=1.0 if _check_choice(init, INITS, "init") == "official" else 0.02)

    def forward(self, semantic: torch.Tensor, collaborative: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        branches = torch.stack([semantic, collaborative], dim=-2)  # [B, S, 2, d]
        weights = torch.softmax((branches * self.weight).sum(-1), dim=-1)  # [B, S, 2]
        return (branches * weights.unsqueeze(-1)).sum(-2), weights


class DiscRecEmbedding(nn.Module):
    r"""DiscRec input embedding of one T5 stack (the shared token embedding is passed in, not owned).

    Args:
        d_model (`int`): hidden size of the T5 stack.
        n_levels (`int`): ``L``, codes per item.
        n_heads, d_ff, dropout, layer_norm_eps: collaborative-branch sizes.
        use_level_embedding (`bool`): add the item-level position embedding to the collaborative branch input.
        use_collab_branch (`bool`): with ``False`` the output is the semantic branch (plain token embedding).
        use_gate (`bool`): softmax gate (``True``) or plain sum (``False``) of the two branches.
        attn_out_proj, ffn_norm, init: the collaborative block's form and initialisation (see
            :class:`CollaborativeBranch`, :class:`LevelEmbedding`, :class:`BranchGate`).
    The values come from ``properties/model/DiscRec.yaml`` (the ``discrec_*`` keys and ``dropout_rate``).
    """

    def __init__(
        self,
        d_model: int,
        n_levels: int,
        n_heads: int,
        d_ff: int,
        dropout: float,
        use_level_embedding: bool,
        use_collab_branch: bool,
        use_gate: bool,
        attn_out_proj: bool,
        ffn_norm: str,
        init: str,
        layer_norm_eps: float = 1e-8,  # the official value; no config key
    ):
        super().__init__()
        self.n_levels = n_levels
        self.use_collab_branch = use_collab_branch
        self.level_embedding = (
            LevelEmbedding(n_levels, d_model, init) if use_level_embedding and use_collab_branch else None
        )
        self.collab_branch = (
            CollaborativeBranch(d_model, n_heads, d_ff, dropout, attn_out_proj, ffn_norm, init, layer_norm_eps)
            if use_collab_branch else None
        )
        self.gate = BranchGate(d_model, init) if use_gate and use_collab_branch else None

    def collaborative(self, token_embeds: torch.Tensor, levels: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        r"""Collaborative branch: `(B, S, d)` token embeddings, `(B, S)` levels, `(B, S, S)` mask -> `(B, S, d)`."""
        inputs = token_embeds if self.level_embedding is None else token_embeds + self.level_embedding(levels)
        return self.collab_branch(inputs, allowed)

    def forward(
        self, token_embeds: torch.Tensor, levels: torch.Tensor, allowed: torch.Tensor
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        r"""Mixes the branches.

        Args:
            token_embeds (`torch.FloatTensor` of shape `(B, S, d)`): shared token embeddings (semantic branch).
            levels (`torch.LongTensor` of shape `(B, S)`): level indices.
            allowed (`torch.BoolTensor` of shape `(B, S, S)`): item-local attention mask.
        Returns:
            embeds `(B, S, d)` for the T5 stack and gate weights `(B, S, 2)` (``None`` without gate).
        """
        if self.collab_branch is None:
            return token_embeds, None
        collaborative = self.collaborative(token_embeds, levels, allowed)  # [B, S, d]
        if self.gate is None:
            return token_embeds + collaborative, None
        return self.gate(token_embeds, collaborative)


__all__ = [
    "BranchGate",
    "CollaborativeBranch",
    "FFN_NORMS",
    "INITS",
    "DiscRecEmbedding",
    "ItemLocalAttention",
    "LevelEmbedding",
    "decoder_item_layout",
    "encoder_item_layout",
    "n_level_indices",
]
