# coding: utf-8
"""DiscRec: TIGER with disentangled semantic / collaborative input embeddings.

Reference:
    Liu et al. "DiscRec: Disentangled Semantic-Collaborative Modeling for Generative Recommendation." 2025.
    Official code: https://github.com/Ten-Mao/DiscRec (``layers/DiscRec.py``, ``layers/FeedForward.py``,
    ``layers/MultiHeadAttention.py``).

DiscRec keeps TIGER's T5 encoder-decoder, semantic IDs, loss and constrained retrieval, and replaces the input
embeddings of *both* stacks by a gated mix of a semantic branch (the shared token embedding) and a collaborative
branch (token + item-level position embedding -> item-local attention -> feed-forward), see
:mod:`recbole_genrec.generative.discrec_embedding`.  As in the official code, the encoder and the decoder each own
their branch parameters (level table, attention, feed-forward, gate); only the token table is shared (and tied to
the LM head, as in TIGER).

Faithful by default to the official code: the collaborative block (attention without output projection or
dropout, post-norm feed-forward on the normalised input) and its initialisation (level embedding and gate N(0, 1),
Xavier-normal projections with zero biases); the earlier choices of this package are options
(``discrec_attn_out_proj: True``, ``discrec_ffn_norm: pre``, ``discrec_init: small``).

Deviations from the paper / official code (details in :mod:`~recbole_genrec.generative.discrec_embedding`):

* padding is masked inside the collaborative branch (the official code has no key-padding mask);
* EOS attends one-directionally to the codes of the last history item (official: EOS <-> last item *slot*, which
  its right-padded histories fill with padding unless the history is full); ``discrec_eos_attends_last_item``;
* the gate is the official one (per-branch learned vector, score ``<h_k, w_k>``, softmax over the two branches);
* decoding is TIGER's cached trie-constrained beam search; the decoder branch is recomputed over the full prefix
  at every step (official: ``generate`` with ``use_cache=False`` and ``prefix_allowed_tokens_fn``);
* the decoder does not emit a final EOS after the ``L`` codes (TIGER's target), so the decoder prefix holds BOS and
  at most ``L - 1`` codes;
* everything TIGER deviates in (RecBole data pipeline and evaluation, trainer, tokenizer choice) applies as well;
  TIGER's optional hashed user token gets its own level index and attends only to itself in the branch.
"""

import torch

from recbole_genrec.generative import T5Backbone
from recbole_genrec.generative.discrec_embedding import DiscRecEmbedding, decoder_item_layout, encoder_item_layout
from recbole_genrec.model.sequential_recommender.tiger import TIGER


class DiscRecBackbone(T5Backbone):
    r"""T5 backbone whose encoder and decoder inputs are DiscRec embeddings.

    Args:
        vocab_size (`int`): full vocabulary (semantic-ID tokens plus TIGER's user tokens).
        n_levels (`int`): ``L``, codes per item.
        code_vocab_size (`int`): ``CodeTable.vocab_size`` (tokens at or above it are not codes).
        branch_kwargs (`dict`): :class:`DiscRecEmbedding` arguments (``n_heads``, ``d_ff``, ``dropout``,
            ``use_level_embedding``, ``use_collab_branch``, ``use_gate``, ``attn_out_proj``, ``ffn_norm``, ``init``).
        eos_attends_last_item (`bool`): see :func:`encoder_item_layout`.
        **t5_kwargs: :class:`T5Backbone` arguments.
    """

    def __init__(
        self,
        vocab_size: int,
        n_levels: int,
        code_vocab_size: int,
        branch_kwargs: dict,
        eos_attends_last_item: bool,
        **t5_kwargs,
    ):
        super().__init__(vocab_size, **t5_kwargs)
        self.n_levels = n_levels
        self.trim_multiple = n_levels  # the item-level layout is aligned to the final EOS in steps of n_levels
        self.code_vocab_size = code_vocab_size
        self.eos_attends_last_item = eos_attends_last_item
        self.encoder_branch = DiscRecEmbedding(self.d_model, n_levels, **branch_kwargs)
        self.decoder_branch = DiscRecEmbedding(self.d_model, n_levels, **branch_kwargs)

    def encoder_layout(self, input_ids: torch.Tensor):
        r"""`(B, S)` encoder tokens -> level indices `(B, S)` and item-local mask `(B, S, S)`."""
        return encoder_item_layout(input_ids, self.n_levels, self.code_vocab_size, self.eos_attends_last_item)

    def encoder_embeds(self, input_ids: torch.Tensor) -> torch.Tensor:
        r"""`(B, S)` encoder tokens -> `(B, S, d_model)` gated semantic/collaborative embeddings."""
        levels, allowed = self.encoder_layout(input_ids)  # [B, S], [B, S, S]
        return self.encoder_branch(self.shared(input_ids), levels, allowed)[0]

    def decoder_embeds(self, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        r"""Full prefix `(B, t)` ``[BOS, t_0, ..]`` -> `(B, t, d_model)`; position ``j`` sees ``<= j`` only."""
        levels, allowed = decoder_item_layout(decoder_input_ids, self.n_levels)  # [B, t], [B, t, t]
        return self.decoder_branch(self.shared(decoder_input_ids), levels, allowed)[0]


def branch_kwargs(config) -> dict:
    r"""The :class:`DiscRecEmbedding` arguments a config (or a dict of its values) states: the ``discrec_*`` keys and
    the T5 ``dropout_rate``."""
    return dict(
        n_heads=int(config["discrec_n_heads"]),
        d_ff=int(config["discrec_d_ff"]),
        dropout=float(config["dropout_rate"]),
        use_level_embedding=bool(config["discrec_level_embedding"]),
        use_collab_branch=bool(config["discrec_collab_branch"]),
        use_gate=bool(config["discrec_gate"]),
        attn_out_proj=bool(config["discrec_attn_out_proj"]),
        ffn_norm=str(config["discrec_ffn_norm"]),
        init=str(config["discrec_init"]),
    )


class DiscRec(TIGER):
    r"""TIGER whose input embeddings are DiscRec's gated semantic / collaborative branches.

    Everything but ``_build_backbone`` is TIGER's (training, ``predict`` = exact log-likelihood, ``full_sort_predict``
    = cached trie-constrained beam search).  Config keys beyond TIGER's (``properties/model/DiscRec.yaml``):
    ``discrec_level_embedding``, ``discrec_collab_branch``, ``discrec_gate`` (ablations), ``discrec_n_heads``,
    ``discrec_d_ff``, ``discrec_eos_attends_last_item``, ``discrec_attn_out_proj``, ``discrec_ffn_norm``,
    ``discrec_init``.
    """

    def _build_backbone(self, config, vocab_size: int) -> DiscRecBackbone:
        return DiscRecBackbone(
            vocab_size,
            n_levels=self.code_table.n_levels,
            code_vocab_size=self.code_table.vocab_size,
            branch_kwargs=branch_kwargs(config),
            eos_attends_last_item=bool(config["discrec_eos_attends_last_item"]),
            **self._backbone_kwargs(config),
        )

