# coding: utf-8
r"""Training data of PRORec's stage I, rebuilt from RecBole's *training* split only.

RecBole's sequential datasets store one augmented row per training target (``item_id_list`` = the (truncated)
prefix, ``item_id`` = the target, rows of a user in time order). :func:`user_sequences` undoes the augmentation:
per user, the first row's prefix followed by every row's target is the user's complete training sequence.
:func:`windows` cuts the sequences into right-padded windows of at most ``max_len + 1`` items so that every target
is predicted exactly once by a causal encoder.
"""

import numpy as np
import torch

from recbole_genrec.preprocess import cache


def user_sequences(dataset):
    r"""Per-user training sequences of a RecBole sequential (train) dataset.

    Returns a list of int64 arrays (internal item ids, oldest first), one per user with at least one target.
    Raises ``ValueError`` when the dataset has no augmented sequence fields.
    """
    config = dataset.config
    seq_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    len_field = config["ITEM_LIST_LENGTH_FIELD"]
    feat = dataset.inter_feat
    if seq_field not in feat.columns or len_field not in feat.columns:
        raise ValueError(f"PRORec stage I needs RecBole's augmented sequences ('{seq_field}', '{len_field}'): pass the "
                         "training dataset of data_preparation (train_data.dataset) to the model.")
    users = feat[dataset.uid_field].numpy()  # [R]
    targets = feat[dataset.iid_field].numpy()  # [R]
    prefixes = feat[seq_field].numpy()  # [R, T]
    lengths = feat[len_field].numpy()  # [R]
    order = np.argsort(users, kind="stable")  # keeps the time order of each user's rows
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    sequences = []
    for rows in np.split(order, bounds):
        if rows.size == 0:
            continue
        first = rows[0]
        sequences.append(np.concatenate([prefixes[first, :lengths[first]], targets[rows]]).astype(np.int64))
    return sequences


def sequences_hash(sequences):
    r"""sha256 of the sequences (ids and boundaries): part of the stage-I cache key."""
    return cache.strings_hash(" ".join(map(str, s.tolist())) for s in sequences)


def item_counts(sequences, n_items):
    r"""`(n_items,)` number of occurrences of every item in the training sequences."""
    flat = np.concatenate(sequences) if sequences else np.zeros(0, dtype=np.int64)
    return np.bincount(flat, minlength=n_items)


def windows(sequences, max_len):
    r"""Cut sequences into `(W, max_len + 1)` right-padded windows (LongTensor).

    A sequence ``s`` of length ``n`` gives windows ending at ``n, n - max_len, n - 2 max_len, ...``; consecutive
    windows share one item, so every ``s[1:]`` element is a target exactly once (inputs ``w[:-1]``, targets
    ``w[1:]``).
    """
    width = max_len + 1
    rows = []
    for seq in sequences:
        for end in range(len(seq), 1, -max_len):
            chunk = seq[max(0, end - width):end]
            rows.append(np.pad(chunk, (0, width - len(chunk))))
    return torch.from_numpy(np.stack(rows).astype(np.int64)) if rows else torch.zeros((0, width), dtype=torch.long)
