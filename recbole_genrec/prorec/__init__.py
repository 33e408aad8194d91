"""PRORec stage I (cross-modality knowledge alignment): collaborative encoder, AdaLN adapter, losses, unified codes.

See :mod:`recbole_genrec.prorec.stage1` for the algorithm and the cache layout.
"""

from recbole_genrec.prorec.adapter import AdaLNAdapter, popularity_buckets
from recbole_genrec.prorec.encoder import CollabSequenceEncoder
from recbole_genrec.prorec.losses import catalogue_info_nce, next_item_loss, paired_info_nce
from recbole_genrec.prorec.stage1 import CODE_SOURCES, Stage1Result, run_stage1, stage1_params, train_alignment

__all__ = ["AdaLNAdapter", "CollabSequenceEncoder", "CODE_SOURCES", "Stage1Result", "catalogue_info_nce",
           "next_item_loss", "paired_info_nce", "popularity_buckets", "run_stage1", "stage1_params", "train_alignment"]
