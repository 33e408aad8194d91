"""How training positives are drawn: ``train_sampling: interaction | user_uniform``.

- ``interaction`` (RecBole's ``TrainDataLoader``): every epoch is a shuffled pass over the training
  interactions, so a user with 500 interactions is drawn 100 times as often as one with 5.
- ``user_uniform`` (the official AlphaRec / LightGCN-family code, ``base/abstract_data.py`` of
  LehengTHU/AlphaRec): an epoch still has one sample per training interaction, but sample ``k`` of the
  shuffled epoch is user ``users[k % n_users]`` and its positive is one of that user's training
  interactions drawn uniformly. Every user with training items appears ``n_inter // n_users`` or one
  more times per epoch, whatever their history length; heavy users are no longer over-weighted.

Both yield RecBole ``Interaction`` batches of training rows, so negative sampling
(``train_neg_sample_args``), transforms and every general model work unchanged. The one difference
from the official loader: RecBole keeps the last, partial batch (the official ``DataLoader`` has
``drop_last=True``).

:func:`apply_train_sampling` is called by :func:`recbole_genrec.run_builder.split` on every training loader.
"""

import numpy as np
from recbole.data.dataloader import TrainDataLoader

TRAIN_SAMPLING = ("interaction", "user_uniform")


def train_sampling_mode(config):
    """The validated ``train_sampling`` of ``config`` (default ``interaction``, properties/overall.yaml)."""
    mode = str(config["train_sampling"]).lower()
    if mode not in TRAIN_SAMPLING:
        raise ValueError(f"train_sampling must be one of {TRAIN_SAMPLING}, got {mode!r}: set "
                         f"train_sampling: interaction (RecBole's) or user_uniform (official AlphaRec).")
    return mode


class UserUniformTrainDataLoader(TrainDataLoader):
    """RecBole ``TrainDataLoader`` whose positives are drawn user-uniformly (see the module docstring).

    The torch ``DataLoader`` underneath still shuffles ``range(len(dataset))`` (one index per training
    interaction, RecBole's generator and ``DistributedSampler`` unchanged); :meth:`collate_fn` maps
    index ``k`` to user ``users[k % n_users]`` and a uniformly drawn row of that user.
    """

    def __init__(self, config, dataset, sampler, shuffle=False):
        uid = dataset.inter_feat[dataset.uid_field].numpy()
        if uid.size == 0:
            raise ValueError("train_sampling: user_uniform needs training interactions; the training split is empty.")
        order = np.argsort(uid, kind="stable")  # rows grouped by user
        users, starts, counts = np.unique(uid[order], return_index=True, return_counts=True)
        self.uu_order = order.astype(np.int64)  # [n_inter] row ids grouped by user
        self.uu_users = users.astype(np.int64)  # [n_users_with_items]
        self.uu_starts = starts.astype(np.int64)  # [n_users_with_items] first position in uu_order
        self.uu_counts = counts.astype(np.int64)  # [n_users_with_items]
        self.uu_rng = np.random.default_rng(int(config["seed"]))
        super().__init__(config, dataset, sampler, shuffle=shuffle)

    def user_uniform_rows(self, index):
        """Row ids ``[len(index)]`` of the training dataset for the shuffled sample indices ``index``."""
        slot = np.asarray(index, dtype=np.int64) % self.uu_users.size  # which user
        offset = (self.uu_rng.random(slot.size) * self.uu_counts[slot]).astype(np.int64)  # which of their rows
        offset = np.minimum(offset, self.uu_counts[slot] - 1)
        return self.uu_order[self.uu_starts[slot] + offset]

    def collate_fn(self, index):
        data = self._dataset[self.user_uniform_rows(index)]
        transformed_data = self.transform(self._dataset, data)
        return self._neg_sampling(transformed_data)


def apply_train_sampling(config, train_data):
    """``train_data`` itself for ``interaction``; a :class:`UserUniformTrainDataLoader` over the same
    dataset and sampler for ``user_uniform``."""
    mode = train_sampling_mode(config)
    if mode == "interaction" or isinstance(train_data, UserUniformTrainDataLoader):
        return train_data
    if type(train_data) is not TrainDataLoader:
        raise ValueError(
            f"train_sampling: user_uniform replaces RecBole's TrainDataLoader, but {config['model']} trains "
            f"with {type(train_data).__name__}; set train_sampling: interaction for this model."
        )
    return UserUniformTrainDataLoader(config, train_data._dataset, train_data._sampler, shuffle=train_data.shuffle)


__all__ = ["TRAIN_SAMPLING", "UserUniformTrainDataLoader", "apply_train_sampling", "train_sampling_mode"]
