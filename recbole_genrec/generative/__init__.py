# coding: utf-8
"""Shared machinery of the generative recommenders (TIGER, DiscRec, PRORec).

TIGER: Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023.

* :class:`CodeTable` -- item -> semantic-ID table, token vocabulary and trie tables;
* :func:`constrained_beam_search` / :func:`scores_to_full` -- tensorised trie-constrained beam search;
* :class:`T5Backbone` -- T5 encoder-decoder with loss, exact scoring and cached beam search.
"""

from .code_table import (
    DECODER_START_TOKEN_ID,
    EOS_TOKEN_ID,
    NUM_SPECIAL_TOKENS,
    PAD_TOKEN_ID,
    CodeTable,
)
from .decoding import constrained_beam_search, scores_to_full
from .t5 import T5Backbone

__all__ = [
    "CodeTable",
    "T5Backbone",
    "constrained_beam_search",
    "scores_to_full",
    "PAD_TOKEN_ID",
    "EOS_TOKEN_ID",
    "DECODER_START_TOKEN_ID",
    "NUM_SPECIAL_TOKENS",
]
