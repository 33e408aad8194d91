"""Preprocessing hook: item text embeddings and learned semantic IDs as RecBole item features.

``recbole_genrec.create_dataset`` calls :func:`prepare_features` for models whose config sets
``genrec_features`` (``[text_emb]`` or ``[text_emb, sid]``). Models then read the features with
:func:`item_embeddings`, :func:`item_codes`, :func:`codebook_sizes` and :func:`code_lookup`.
Another model can supply the embeddings (``item_embedding_source: <name>``) by calling
:func:`recbole_genrec.store.save_item_embeddings`. Command line: ``python -m recbole_genrec.preprocess --dataset=ml-100k``.
"""

from recbole_genrec.preprocess.features import (
    code_lookup,
    codebook_sizes,
    export_codes_tsv,
    item_codes,
    item_embeddings,
)
from recbole_genrec.preprocess.hook import prepare_features

__all__ = [
    "code_lookup",
    "codebook_sizes",
    "export_codes_tsv",
    "item_codes",
    "item_embeddings",
    "prepare_features",
]
