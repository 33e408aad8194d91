"""The one path from a config to a run; every entry point (command line, tuning, reload, recommend, zero-shot,
cold start, benchmarks) builds through it.

    config = Config(...); check_config(config)           # recbole_genrec.config, recbole_genrec.validation
    data = prepare(config)                               # dataset -> cold start -> splits -> train_sampling
    model, trainer = build(config, data)                 # model, then the trainer of trainer_class(config)

Start at :func:`prepare` and :func:`trainer_class`.
"""

from typing import NamedTuple, Optional

from recbole.data.utils import data_preparation as recbole_data_preparation
from recbole.trainer import Trainer
from recbole.utils import ModelType, init_seed

from recbole_genrec.checkpoint import PlainCheckpoints
from recbole_genrec.data import coldstart, create_dataset
from recbole_genrec.data.sampling import apply_train_sampling
from recbole_genrec.data.sequences import apply_seq_train_rows
from recbole_genrec.distributed import DistributedRun, ShardedEvaluation
from recbole_genrec.safety import pickle_caches_allowed
from recbole_genrec.trainer.events import RunEvents
from recbole_genrec.trainer.fast_eval import FastFullSortEvalMixin
from recbole_genrec.trainer.resume import ResumableTraining
from recbole_genrec.utils import get_model, get_trainer


class Prepared(NamedTuple):
    """What :func:`prepare` returns: the dataset, its three loaders and the cold-start info (``None`` when off)."""

    dataset: object
    train: object
    valid: object
    test: object
    coldstart: Optional[dict] = None


def item_tokens(dataset):
    """The item vocabulary in RecBole's id order (``[PAD]`` first), stored with the weights."""
    return [str(t) for t in dataset.field2id_token[dataset.iid_field]]


# ============================================================================= data
def split(config, dataset):
    """``(train, valid, test, cold start info or None)`` of a built dataset: the one data-preparation path."""
    if not coldstart.enabled(config):
        with pickle_caches_allowed(config):  # RecBole's saved dataloaders: unpickled only with trust_checkpoint
            train, valid, test = recbole_data_preparation(config, dataset)
        train = apply_seq_train_rows(config, train)  # RPG: one training row per user sequence
        return apply_train_sampling(config, train), valid, test, None
    with pickle_caches_allowed(config):
        train, valid, test, cold = coldstart.data_preparation(config, dataset)  # items held out of every fit
    train = apply_train_sampling(config, train)
    coldstart.guard(config, Prepared(dataset, train, valid, test, cold))  # names the first leaking item
    return train, valid, test, cold


def load_dataset(config, group=None):
    """Seed and build the dataset (rank 0 first: it fills the preprocessing caches); :func:`split` comes next."""
    group = group or DistributedRun()
    init_seed(config["seed"], config["reproducibility"])
    with group.rank_zero_first():  # text embeddings / semantic IDs: built by rank 0, read by the others
        return create_dataset(config)


def prepare(config, group=None):
    """:func:`load_dataset`, then :func:`split`: a :class:`Prepared`."""
    dataset = load_dataset(config, group)
    return Prepared(dataset, *split(config, dataset))


# ============================================================================= trainer
def trainer_mixins(config, base, distributed=False):
    """The mixins composed in front of ``base``, outermost first (a mixin ``base`` already has is skipped)."""
    candidates = [
        (ResumableTraining, bool(config["resume_training"])),  # a resume state after every epoch (trainer/resume.py)
        (RunEvents, True),  # epoch wall times and listeners (trainer/events.py)
        (ShardedEvaluation, distributed),  # exact metrics over all ranks' users (distributed.py)
        (PlainCheckpoints, True),  # checkpoints are data (checkpoint.py)
        # fast exact full ranking (trainer/fast_eval.py), unless the trainer evaluates its own way
        (FastFullSortEvalMixin, config["MODEL_TYPE"] == ModelType.GENERAL and base.evaluate is Trainer.evaluate),
    ]
    return [mixin for mixin, wanted in candidates if wanted and not issubclass(base, mixin)]


_COMPOSED = {}


def trainer_class(config, distributed=False):
    """The trainer class of ``config['model']``: the looked-up trainer with :func:`trainer_mixins` in front.

    Equal inputs give the same class object. Trainers that are not RecBole ``Trainer`` subclasses are returned as
    looked up.
    """
    base = get_trainer(config["MODEL_TYPE"], config["model"])
    if not (isinstance(base, type) and issubclass(base, Trainer)):
        return base
    mixins = tuple(trainer_mixins(config, base, distributed))
    if not mixins:
        return base
    if (base, mixins) not in _COMPOSED:
        _COMPOSED[base, mixins] = type(base.__name__, (*mixins, base),
                                       {"__module__": base.__module__, "__qualname__": base.__qualname__,
                                        "__doc__": base.__doc__})
    return _COMPOSED[base, mixins]


# ============================================================================= model and trainer
def build_model(config, data, group=None):
    """The model of ``config['model']`` on the training dataset (rank 0 first: PRORec's stage I fills a cache)."""
    group = group or DistributedRun()
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    with group.rank_zero_first():
        model = get_model(config["model"])(config, data.train._dataset).to(config["device"])
    if data.coldstart is not None:
        coldstart.exclude_from_softmax(model, data.coldstart["held_out"])  # CE over every item: no held-out candidate
        coldstart.guard_model(model, data)  # codes, softmax candidates and negatives of the model's own
    return model


def build_trainer(config, model, data, group=None, listeners=()):
    """The trainer of :func:`trainer_class` for ``model``, storing the item vocabulary with its checkpoints."""
    group = group or DistributedRun()
    trainer = trainer_class(config, distributed=group.enabled)(config, model)
    trainer.genrec_item_tokens = item_tokens(data.dataset)
    group.share_checkpoint(trainer)
    trainer.genrec_listeners = tuple(listeners)
    if isinstance(trainer, RunEvents):
        trainer._notify("trainer_built")
    return trainer


def build(config, data, group=None, listeners=()):
    """``(model, trainer)`` of a prepared run."""
    model = build_model(config, data, group)
    return model, build_trainer(config, model, data, group, listeners)


__all__ = ["Prepared", "build", "build_model", "build_trainer", "item_tokens", "load_dataset", "prepare", "split",
           "trainer_class", "trainer_mixins"]
