# coding: utf-8
r"""Collaborative sequential encoder of PRORec's stage I (SASRec-style).

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018, as implemented by RecBole's ``SASRec``:
item-ID embedding + learned position embedding -> LayerNorm -> dropout -> causal
:class:`recbole.model.layers.TransformerEncoder`. Scores are dot products with the item-ID embedding table, so the
table :attr:`CollabSequenceEncoder.item_embedding` is the item's *collaborative* (ID) embedding that PRORec aligns
with the language embedding and later quantises.

Unlike RecBole's SASRec, :meth:`forward` returns the hidden state of *every* position: stage I trains with the
next-item loss at all positions of a user's training sequence (the original SASRec objective), which is equivalent
to RecBole's prefix augmentation but needs one sequence per user instead of one per interaction.
"""

import torch
from recbole.model.layers import TransformerEncoder
from torch import nn


class CollabSequenceEncoder(nn.Module):
    r"""Causal Transformer over item-ID sequences.

    Args:
        n_items (`int`): number of RecBole item ids (row 0 is padding).
        max_len (`int`): longest input sequence (position table size).
        hidden_size, n_layers, n_heads, inner_size, dropout: Transformer sizes (the ``prorec_*`` keys of
            ``properties/model/PRORec.yaml``).
        hidden_act, layer_norm_eps: activation and LayerNorm epsilon (as RecBole's SASRec; no config key).
        initializer_range (`float`): std of the normal initialisation (as RecBole's SASRec).
    """

    def __init__(self, n_items, max_len, hidden_size, n_layers, n_heads, inner_size, dropout,
                 hidden_act="gelu", layer_norm_eps=1e-12, initializer_range=0.02):  # the last three: RecBole's SASRec
        super().__init__()
        self.initializer_range = initializer_range
        self.item_embedding = nn.Embedding(n_items, hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden_size)
        self.trm_encoder = TransformerEncoder(
            n_layers=n_layers, n_heads=n_heads, hidden_size=hidden_size, inner_size=inner_size,
            hidden_dropout_prob=dropout, attn_dropout_prob=dropout, hidden_act=hidden_act,
            layer_norm_eps=layer_norm_eps,
        )
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    @staticmethod
    def causal_mask(item_seq):
        r"""`(B, T)` right-padded ids -> additive mask `(B, 1, T, T)`: causal and hiding padding keys."""
        keep = (item_seq != 0).unsqueeze(1).unsqueeze(2)  # [B, 1, 1, T]
        keep = torch.tril(keep.expand(-1, -1, item_seq.size(1), -1))  # [B, 1, T, T]
        return torch.where(keep, 0.0, -10000.0)

    def forward(self, item_seq):
        r"""`(B, T)` right-padded item ids -> hidden states `(B, T, hidden_size)` of every position."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)  # [1, T]
        hidden = self.item_embedding(item_seq) + self.position_embedding(positions)  # [B, T, d]
        hidden = self.dropout(self.layer_norm(hidden))
        return self.trm_encoder(hidden, self.causal_mask(item_seq), output_all_encoded_layers=False)[-1]

    def scores(self, hidden):
        r"""`(..., d)` hidden states -> `(..., n_items)` dot-product logits against every item-ID embedding."""
        return hidden @ self.item_embedding.weight.t()
