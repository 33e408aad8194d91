"""Training rows of sequential models: ``seq_train_rows: prefixes | sequences``.

RecBole's ``SequentialDataset`` turns every interaction after a user's first into one row (its history of up to
``MAX_ITEM_LIST_LENGTH`` items -> the item), and the split puts each user's last rows into validation and test
(leave-one-out: the last two). Models that predict the next item at *every* position of a history in one pass
(RPG; SASRec's original code) need each training sequence once instead:

- ``prefixes`` (RecBole's, the default): one training row per prefix.
- ``sequences``: one training row per user, the row of the last training interaction, whose history is the user's
  training sequence (minus that item) and whose ``POS_ITEM_ID`` is its last item. A sequence longer than
  ``MAX_ITEM_LIST_LENGTH + 1`` items is cut from its end into windows that do not overlap (every
  ``MAX_ITEM_LIST_LENGTH``-th row counted back from the last is kept), so each training target is in exactly one
  row. Validation and test rows stay as RecBole builds them.

The choice is a config key like any RecBole data setting; :func:`apply_seq_train_rows` is called on the training
loader by :func:`recbole_genrec.run_builder.split` and by the cold-start protocol
(:mod:`recbole_genrec.data.coldstart`).
"""

import logging

import numpy as np
import torch

logger = logging.getLogger(__name__)

SEQ_TRAIN_ROWS = ("prefixes", "sequences")


def seq_train_rows_mode(config):
    """The validated ``seq_train_rows`` of ``config``."""
    mode = str(config["seq_train_rows"]).lower()  # properties/overall.yaml: prefixes
    if mode not in SEQ_TRAIN_ROWS:
        raise ValueError(f"seq_train_rows={mode!r} is not allowed: seq_train_rows must be one of "
                         f"{list(SEQ_TRAIN_ROWS)} (prefixes: RecBole's one row per prefix; sequences: one row per "
                         f"user sequence, for models trained at every position)")
    return mode


def sequence_row_mask(user_ids, window):
    r"""Which rows of a prefix-augmented split are kept as whole sequences.

    Args:
        user_ids (`(N,)`): the user of every row; a user's rows in time order (RecBole's order within a user).
        window (`int`): ``MAX_ITEM_LIST_LENGTH``.
    Returns:
        bool `(N,)`: a user's last row, and every ``window``-th row before it.
    """
    uid = np.asarray(user_ids).reshape(-1)
    order = np.argsort(uid, kind="stable")  # rows grouped by user, time order kept
    sorted_uid = uid[order]
    starts = np.flatnonzero(np.r_[True, sorted_uid[1:] != sorted_uid[:-1]])
    ends = np.r_[starts[1:], len(uid)]
    counts = ends - starts
    rank = np.arange(len(uid)) - np.repeat(starts, counts)  # position of the row within its user
    from_end = np.repeat(counts, counts) - 1 - rank
    keep = np.zeros(len(uid), dtype=bool)
    keep[order] = from_end % int(window) == 0
    return keep


def sequence_rows(dataset, window):
    """A copy of a built training split with one row per (windowed) user sequence; logs the counts."""
    inter = dataset.inter_feat
    keep = sequence_row_mask(inter[dataset.uid_field].numpy(), window)
    n_users = len(np.unique(inter[dataset.uid_field].numpy()))
    logger.info(f"seq_train_rows: sequences: {int(keep.sum())} training rows for {n_users} users "
                f"(from {len(keep)} prefix rows; {int(keep.sum()) - n_users} extra windows of users with more than "
                f"{window + 1} training items)")
    return dataset.copy(inter[torch.from_numpy(keep)])


def apply_seq_train_rows(config, train_data):
    """``train_data`` itself for ``prefixes``; for ``sequences`` a loader of the same class, sampler and shuffling
    over :func:`sequence_rows` of its dataset."""
    if seq_train_rows_mode(config) == "prefixes":
        return train_data
    dataset = train_data._dataset
    if getattr(dataset, "item_list_length_field", None) not in dataset.inter_feat.columns:
        raise ValueError(f"seq_train_rows: sequences needs a sequential model's data (histories of the "
                         f"{config['MAX_ITEM_LIST_LENGTH']} previous items); {config['model']} has none, set "
                         f"seq_train_rows: prefixes")
    rows = sequence_rows(dataset, int(config["MAX_ITEM_LIST_LENGTH"]))
    return type(train_data)(config, rows, train_data._sampler, shuffle=train_data.shuffle)


__all__ = ["SEQ_TRAIN_ROWS", "apply_seq_train_rows", "seq_train_rows_mode", "sequence_row_mask", "sequence_rows"]
