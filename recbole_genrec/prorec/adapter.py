# coding: utf-8
r"""Language -> collaborative space adapter with adaptive layer normalisation (PRORec stage I).

PRORec/UNGER (Xiao et al., 2025) maps the frozen language-model item embedding into the space of the collaborative
ID embedding with a learnable "modality adaptation" layer. The paper does not pin down its shape; ours is

.. math::

    h = W_2\,\mathrm{GELU}(W_1 e^{\text{text}}_i), \qquad
    A(e^{\text{text}}_i) = \mathrm{LN}(h) \odot (1 + \gamma(c_i)) + \beta(c_i)

where LN has no affine parameters and :math:`(\gamma, \beta)` come from a linear map of a conditioning vector
:math:`c_i` (AdaLN, Perez et al. 2018 FiLM / Peebles & Xie 2023 DiT). The modulation map is zero-initialised, so
training starts from a plain LayerNorm ("adaLN-Zero"). Conditioning (``cond``):

* ``popularity`` (default): a learned embedding of the item's log2 training-popularity bucket,
  ``min(floor(log2(1 + count)), n_buckets - 1)``. Collaborative ID embeddings are strongly shaped by popularity
  (frequent items get larger, more central vectors) while text embeddings carry none of it; the bucket lets the
  adapter place head and tail items where the ID space puts them, without giving it the item's identity (which would
  make the alignment trivial). Counts come from the training split only.
* ``text``: the language embedding itself (input-dependent FiLM).
* ``none``: an ordinary LayerNorm with learned affine parameters (ablation).
"""

import torch
from torch import nn

ADALN_CONDITIONS = ("popularity", "text", "none")


def popularity_buckets(counts, n_buckets):
    r"""`(n_items,)` training counts -> `(n_items,)` long buckets ``min(floor(log2(1 + count)), n_buckets - 1)``."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    return torch.floor(torch.log2(1.0 + counts)).long().clamp(0, n_buckets - 1)


class AdaLNAdapter(nn.Module):
    r"""Two-layer MLP followed by adaptive layer normalisation.

    Args:
        in_dim (`int`): language embedding size ``D``.
        out_dim (`int`): collaborative embedding size ``d``.
        hidden_dim (`int`): MLP hidden size.
        cond (`str`): ``popularity`` | ``text`` | ``none`` (see the module docstring).
        n_buckets (`int`): popularity buckets (``cond='popularity'``).
        cond_dim (`int`): size of the popularity-bucket embedding.
    """

    def __init__(self, in_dim, out_dim, hidden_dim, cond, n_buckets, cond_dim=32):
        super().__init__()
        if cond not in ADALN_CONDITIONS:
            raise ValueError(f"prorec_adaln_cond must be one of {ADALN_CONDITIONS}, got {cond!r}")
        self.cond = cond
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        self.norm = nn.LayerNorm(out_dim, elementwise_affine=cond == "none")
        self.modulation = None
        if cond != "none":
            if cond == "popularity":
                self.bucket_embedding = nn.Embedding(n_buckets, cond_dim)
            self.modulation = nn.Linear(cond_dim if cond == "popularity" else in_dim, 2 * out_dim)
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(self, text_emb, buckets=None):
        r"""`(N, D)` language embeddings (+ `(N,)` popularity buckets) -> `(N, d)` adapted embeddings."""
        hidden = self.norm(self.mlp(text_emb))  # [N, d]
        if self.modulation is None:
            return hidden
        if self.cond == "popularity":
            if buckets is None:
                raise ValueError("AdaLNAdapter(cond='popularity') needs the items' popularity buckets")
            condition = self.bucket_embedding(buckets)  # [N, cond_dim]
        else:
            condition = text_emb  # [N, D]
        scale, shift = self.modulation(condition).chunk(2, dim=-1)  # [N, d] each
        return hidden * (1.0 + scale) + shift
