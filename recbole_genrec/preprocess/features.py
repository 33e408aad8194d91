"""Accessors for models: the hook's item embeddings and semantic IDs, indexed by internal item id.

Both come from RecBole's ``preload_weight`` matrices, whose rows follow RecBole's item ids after
filtering and remapping (row 0 is ``[PAD]``)::

    emb = item_embeddings(dataset)     # FloatTensor [n_items, D], row 0 zeros
    codes = item_codes(dataset)        # LongTensor  [n_items, L], row 0 = -1
    sizes = codebook_sizes(dataset)    # [K_1, ..., K_L]
"""

import csv
import logging

import numpy as np
import torch

from recbole_genrec.preprocess.fields import EMB_ID, SID_ID
from recbole_genrec.preprocess.text import DEFAULT_FIELD_CANDIDATES, read_item_table

logger = logging.getLogger(__name__)


def _preloaded(dataset, field, feature):
    try:
        return dataset.get_preload_weight(field)
    except ValueError:
        raise ValueError(
            f"The dataset has no '{feature}' feature ({field} is not preloaded). Set "
            f"`genrec_features: [text_emb{', sid' if feature == 'sid' else ''}]` in the model's config "
            f"and build the dataset with recbole_genrec.create_dataset (it runs the preprocessing hook)."
        ) from None


def item_embeddings(dataset):
    """Item embeddings: FloatTensor [n_items, D] (row ``i`` = internal item id ``i``; row 0 zeros)."""
    matrix = _preloaded(dataset, EMB_ID, "text_emb")  # [n_items, D] float64
    emb = torch.from_numpy(np.asarray(matrix, dtype=np.float32)).clone()
    emb[0] = 0.0
    return emb


def item_codes(dataset):
    """Semantic IDs: LongTensor [n_items, L] (row 0, the padding item, is all -1)."""
    matrix = _preloaded(dataset, SID_ID, "sid")  # [n_items, L] float64 holding integers
    codes = torch.from_numpy(np.rint(np.asarray(matrix)).astype(np.int64))
    codes[0] = -1
    return codes


def codebook_sizes(dataset):
    """Codes per level, including an extra collision level: list of ints of length L."""
    sizes = dataset.config["sid_codebook_sizes"]
    if not sizes:
        raise ValueError("No semantic IDs were prepared (config['sid_codebook_sizes'] is unset); set "
                         "`genrec_features: [text_emb, sid]` and build the dataset with recbole_genrec.create_dataset.")
    return [int(k) for k in sizes]


def code_lookup(dataset):
    """``{code tuple: internal item id}`` for every real item (ids 1..n_items-1)."""
    codes = item_codes(dataset).tolist()
    return {tuple(codes[i]): i for i in range(1, len(codes))}


def _titles(dataset, tokens):
    """Title of each token, read from the original ``.item`` file (``""`` when unavailable)."""
    config = dataset.config
    try:
        table, field_types = read_item_table(config, config["genrec_source_data_path"] or config["data_path"])
    except FileNotFoundError:
        return [""] * len(tokens)
    field = next((f for f in DEFAULT_FIELD_CANDIDATES if f in field_types), None)
    if field is None:
        return [""] * len(tokens)
    table = table.drop_duplicates(subset=config["ITEM_ID_FIELD"]).set_index(config["ITEM_ID_FIELD"])[field]
    return [table.get(t, "") for t in tokens]


def export_codes_tsv(dataset, path):
    """Write ``item_id<TAB>title<TAB>codes`` (space-separated) for every item; returns ``path``."""
    codes = item_codes(dataset).tolist()
    tokens = dataset.field2id_token[dataset.iid_field]
    titles = _titles(dataset, tokens)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(["item_id", "title", "codes"])
        for i in range(1, len(codes)):
            writer.writerow([tokens[i], titles[i], " ".join(map(str, codes[i]))])
    logger.info(f"wrote {len(codes) - 1} item codes to {path}")
    return path
