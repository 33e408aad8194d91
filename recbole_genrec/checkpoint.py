"""Checkpoints that are data, not code.

A pickle can run any code when it is loaded, so every checkpoint the plugin reads goes through
:func:`load_checkpoint`, which calls ``torch.load(weights_only=True)``:

* **The plugin's own checkpoints** (written by every trainer that :mod:`recbole_genrec.quick_start` runs,
  stock RecBole models included, see :func:`plain_checkpoint_trainer`) hold only tensors and plain data:
  ``state_dict`` (a TIGER's :class:`~recbole_genrec.generative.CodeTable` lives there as buffers),
  ``other_parameter``, ``optimizer``, the config as a dict (:func:`config_state`: enums by name, devices as
  strings) and ``item_tokens``, the item vocabulary in RecBole's id order (row ``i`` = internal id ``i``).
* **RecBole's checkpoints** pickle a ``Config`` object, its enums, numpy scalars and the model class. They
  load through an explicit allow-list (:data:`ALLOW_LIST`, used with ``torch.serialization.safe_globals``).
  ``Config`` itself is *not* on it: RecBole's ``Config.__init__`` ``eval``s strings, so the name
  ``recbole.config.configurator.Config`` is mapped to :class:`RestoredConfig`, whose ``__init__`` refuses to
  run and which only receives the pickled attributes. Model classes are mapped to :class:`ModelClassRef`, an
  inert stand-in; yaml's ``FullLoader`` class is referenced, never used.
* Checkpoints pickled with protocol 3+ (RecBole 1.2.1 writes protocol 4, which torch's ``weights_only``
  unpickler cannot parse) are read by Python's unpickler restricted to the same names (``find_class`` answers
  only torch's own ``weights_only`` globals and :data:`ALLOW_LIST`): data only, as well.
* Anything else (an old checkpoint holding other objects, or a hostile file) is refused with
  :class:`UnsafeCheckpointError`, which names the opt-in: ``trust_checkpoint=True`` (config key / keyword),
  ``--trust-checkpoint`` on the command lines. The opt-in warns and loads with ``weights_only=False``, which
  executes whatever code the file holds: use it only for files you made yourself.
"""

import enum
import logging
import pickle
import re
import types
import warnings

import numpy as np
import torch
import yaml
from recbole.utils import EvaluatorType, FeatureSource, FeatureType, InputType, ModelType

from recbole.config import Config

logger = logging.getLogger(__name__)

FORMAT = "recbole_genrec.checkpoint"
VERSION = 1
TRUST_HINT = ("pass trust_checkpoint=True (Python, or the config key trust_checkpoint: True) or --trust-checkpoint "
              "(command line) to load it anyway; that runs any code the file contains, so do it only for a file "
              "you made yourself")
_ENUMS = {cls.__name__: cls for cls in (ModelType, InputType, EvaluatorType, FeatureType, FeatureSource)}


class UnsafeCheckpointError(ValueError):
    """A checkpoint that ``weights_only=True`` with the allow-list cannot load (it would run code)."""


class ModelClassRef:
    """Inert stand-in for the model class a RecBole ``Config`` pickles (``config.model_class``)."""

    def __init__(self, *args, **kwargs):
        pass


class RestoredConfig(Config):
    """A ``Config`` rebuilt from a checkpoint: the saved ``final_config_dict`` and parameter groups, no files read.

    ``RestoredConfig(...)`` raises: a checkpoint can only hand it attributes (so an allow-listed name cannot
    be used to run ``Config.__init__``, which ``eval``s strings). Build one with :meth:`from_state`.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("RestoredConfig is rebuilt from checkpoint data only (RestoredConfig.from_state); "
                        "use recbole_genrec.Config to build a config")

    @classmethod
    def from_state(cls, state):
        config = cls.__new__(cls)
        config.final_config_dict = decode(state["final_config_dict"])
        config.parameters = {k: list(v) for k, v in (state.get("parameters") or {}).items()}
        config.model, config.dataset = config.final_config_dict["model"], config.final_config_dict["dataset"]
        config.model_class = ModelClassRef
        config.yaml_loader = yaml.FullLoader
        config.external_config_dict, config.internal_config_dict = {}, {}
        return config


def _numpy_globals():
    try:  # numpy 2 (numpy.core still imports there, with a DeprecationWarning)
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1
        from numpy.core.multiarray import scalar
    # pickles name it by the numpy that wrote them: accept both names
    names = [(scalar, "numpy._core.multiarray.scalar"), (scalar, "numpy.core.multiarray.scalar")]
    names.append(np.dtype)
    if hasattr(np, "dtypes"):  # numpy >= 1.25: the dtype classes have names (numpy.dtypes.Float64DType, ...)
        names += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    else:  # numpy 1.24: the same classes, reachable only through a dtype instance (numpy.dtype[float64])
        names += sorted({type(np.dtype(code)) for code in np.typecodes["All"]}, key=str)
    return names


ALLOW_LIST = [
    (RestoredConfig, "recbole.config.configurator.Config"),
    (RestoredConfig, "recbole_genrec.config.Config"),
    (RestoredConfig, "recbole_genrec.checkpoint.RestoredConfig"),
    *_ENUMS.values(),
    (yaml.FullLoader, "yaml.loader.FullLoader"),
    *_numpy_globals(),
]
_MODEL_GLOBAL = re.compile(r"^(recbole|recbole_genrec)\.model\.[A-Za-z0-9_.]+$")
_UNSUPPORTED = re.compile(r"GLOBAL (\S+) was not an allowed global")


# ----------------------------------------------------------------------------- config as plain data
def encode(value, key="config"):
    """``value`` as plain data that ``weights_only=True`` loads (enums by name, devices as strings)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        if type(value).__name__ in _ENUMS:
            return {"__enum__": type(value).__name__, "name": value.name}
        return {"__repr__": repr(value)}
    if isinstance(value, torch.device):
        return {"__device__": str(value)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {(k if isinstance(k, (str, int, float, bool)) else str(k)): encode(v, f"{key}.{k}")
                for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(encode(v, key) for v in value)
    if isinstance(value, list):
        return [encode(v, key) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"__set__": [encode(v, key) for v in sorted(value, key=repr)]}
    logger.warning(f"checkpoint: config key {key} holds a {type(value).__name__}, stored as its repr")
    return {"__repr__": repr(value)}


def decode(value):
    """Inverse of :func:`encode` (a ``__repr__`` entry stays its text)."""
    if isinstance(value, dict):
        if set(value) == {"__enum__", "name"}:
            return _ENUMS[value["__enum__"]][value["name"]]
        if set(value) == {"__device__"}:
            return torch.device(value["__device__"])
        if set(value) == {"__set__"}:
            return set(decode(v) for v in value["__set__"])
        if set(value) == {"__repr__"}:
            return value["__repr__"]
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, tuple):
        return tuple(decode(v) for v in value)
    return value


def config_state(config):
    """A ``Config`` as plain data: ``{"final_config_dict": ..., "parameters": {group: [keys]}}``."""
    parameters = getattr(config, "parameters", None) or {}
    return {"final_config_dict": encode(dict(config.final_config_dict)),
            "parameters": {str(k): [str(x) for x in v] for k, v in parameters.items()}}


# ----------------------------------------------------------------------------- save / load
def save_checkpoint(path, config, state_dict, other_parameter=None, optimizer=None, epoch=None, cur_step=None,
                    best_valid_score=None, item_tokens=None):
    """Write a plain-data checkpoint (tensors, numbers, strings, lists and dicts only)."""
    score = None if best_valid_score is None else float(best_valid_score)
    state = {
        "format": FORMAT, "version": VERSION,
        "config": config_state(config),
        "epoch": epoch, "cur_step": cur_step, "best_valid_score": score,
        "state_dict": state_dict,
        "other_parameter": encode(other_parameter, "other_parameter") if other_parameter is not None else None,
        "optimizer": optimizer,
        "item_tokens": None if item_tokens is None else [str(t) for t in item_tokens],
    }
    torch.save(state, path)
    return path


def is_plain(checkpoint):
    return isinstance(checkpoint, dict) and checkpoint.get("format") == FORMAT


def _allowed_names():
    """``{"module.Name": object}`` a checkpoint may reference: torch's ``weights_only`` globals + :data:`ALLOW_LIST`."""
    from torch import _weights_only_unpickler

    allowed = dict(_weights_only_unpickler._get_allowed_globals())
    for entry in ALLOW_LIST:
        obj, name = entry if isinstance(entry, tuple) else (entry, f"{entry.__module__}.{entry.__qualname__}")
        allowed[name] = obj
    return allowed


def _restricted_pickle_module():
    """A ``pickle_module`` for ``torch.load`` whose ``find_class`` answers only :func:`_allowed_names`."""
    allowed = _allowed_names()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            full = f"{module}.{name}"
            if full in allowed:
                return allowed[full]
            if _MODEL_GLOBAL.match(full):
                return ModelClassRef
            raise pickle.UnpicklingError(f"GLOBAL {full} was not an allowed global")

    module = types.ModuleType("recbole_genrec_restricted_pickle")
    module.Unpickler = Unpickler
    module.load = lambda file, **kwargs: Unpickler(file, **kwargs).load()
    module.UnpicklingError = pickle.UnpicklingError
    return module


def _temporarily_allowed(entries):
    """``torch.serialization.safe_globals`` of the ``entries`` not yet allowed (its exit removes what it added,
    which would otherwise strip the process-wide registration of :func:`register_allow_list`)."""
    present = {(e[1] if isinstance(e, tuple) else id(e)) for e in torch.serialization.get_safe_globals()}
    missing = [e for e in entries if (e[1] if isinstance(e, tuple) else id(e)) not in present]
    return torch.serialization.safe_globals(missing)


def _safe_load(path, map_location):
    """``torch.load(weights_only=True)`` with :data:`ALLOW_LIST` (plus inert refs for model classes); pickles of
    protocol 3+ through :func:`_restricted_pickle_module`. Returns ``(checkpoint, None)`` or ``(None, refused)``."""
    extra = []
    while True:
        try:
            with _temporarily_allowed(ALLOW_LIST + extra):
                return torch.load(path, map_location=map_location, weights_only=True), None
        except pickle.UnpicklingError as err:
            found = _UNSUPPORTED.search(str(err))
            name = found.group(1) if found else None
            if name and _MODEL_GLOBAL.match(name) and all(n != name for _, n in extra) and len(extra) < 8:
                extra.append((ModelClassRef, name))
                continue
            if "Unsupported operand" not in str(err):
                return None, name or str(err).splitlines()[0]
        break
    try:  # a protocol-4 pickle (RecBole's own checkpoints): same names, Python's unpickler
        return torch.load(path, map_location=map_location, weights_only=False,
                          pickle_module=_restricted_pickle_module()), None
    except pickle.UnpicklingError as err:
        found = _UNSUPPORTED.search(str(err))
        return None, found.group(1) if found else str(err).splitlines()[0]


def load_checkpoint(path, trust_checkpoint=False, map_location="cpu"):
    """Load a checkpoint as data; its ``config`` is always a ``Config`` (a :class:`RestoredConfig` unless trusted).

    Raises :class:`UnsafeCheckpointError` (naming the opt-in) for a file that needs more than the allow-list;
    with ``trust_checkpoint=True`` such a file is loaded with ``weights_only=False`` after a warning.
    """
    checkpoint, refused = _safe_load(path, map_location)
    if checkpoint is None:
        if not trust_checkpoint:
            raise UnsafeCheckpointError(
                f"checkpoint {path} is not plain data: it needs {refused}, which is not on the allow-list of "
                f"recbole_genrec.checkpoint, and loading it would run code from the file. "
                f"If you trust it, {TRUST_HINT}."
            )
        message = (f"trust_checkpoint: loading {path} with weights_only=False; this executes any code the file "
                   f"contains (it needs {refused})")
        warnings.warn(message, stacklevel=2)
        logger.warning(message)
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is no model checkpoint (expected a dict with a 'state_dict'); "
                         "pass a file written by a recbole_genrec or RecBole trainer")
    if is_plain(checkpoint):
        checkpoint = dict(checkpoint, config=RestoredConfig.from_state(checkpoint["config"]))
        if checkpoint.get("other_parameter") is not None:
            checkpoint["other_parameter"] = decode(checkpoint["other_parameter"])
    return checkpoint


# ----------------------------------------------------------------------------- trainers
class PlainCheckpoints:
    """Trainer mixin: checkpoints written by :func:`save_checkpoint` and read by :func:`load_checkpoint`.

    Replaces RecBole's ``_save_checkpoint`` (which pickles the ``Config``), ``resume_checkpoint`` and the
    checkpoint loading of ``evaluate(load_best_model=True)`` (which call ``torch.load`` on whatever file).
    Set ``trainer.genrec_item_tokens`` to store the item vocabulary with the weights.
    """

    genrec_item_tokens = None

    def _trust(self):
        return bool(self.config["trust_checkpoint"])

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        path = kwargs.pop("saved_model_file", self.saved_model_file)
        optimizer = self.optimizer.state_dict() if getattr(self, "optimizer", None) is not None else None
        save_checkpoint(path, self.config, self.model.state_dict(), self.model.other_parameter(), optimizer,
                        epoch, self.cur_step, self.best_valid_score, self.genrec_item_tokens)
        if verbose:
            from recbole.utils import set_color

            self.logger.info(set_color("Saving current", "blue") + f": {path}")

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        self.saved_model_file = resume_file
        checkpoint = load_checkpoint(resume_file, self._trust(), map_location=self.device)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        if str(checkpoint["config"]["model"]).lower() != str(self.config["model"]).lower():
            self.logger.warning(f"checkpoint {resume_file} is of model {checkpoint['config']['model']}, "
                                f"this run trains {self.config['model']}")
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        if checkpoint.get("optimizer") is not None:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = load_checkpoint(checkpoint_file, self._trust(), map_location=self.device)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, model_file=model_file, show_progress=show_progress)


def plain_checkpoint_trainer(trainer_class):
    """``trainer_class`` with :class:`PlainCheckpoints` in front (RecBole ``Trainer`` subclasses only)."""
    from recbole.trainer import Trainer

    if not (isinstance(trainer_class, type) and issubclass(trainer_class, Trainer)):
        return trainer_class
    if issubclass(trainer_class, PlainCheckpoints):
        return trainer_class
    return type(trainer_class.__name__, (PlainCheckpoints, trainer_class), {"__module__": trainer_class.__module__,
                                                                            "__qualname__": trainer_class.__qualname__})


_REGISTERED = []


def register_allow_list():
    """Put :data:`ALLOW_LIST` and an inert reference for every model class of RecBole and the plugin on torch's
    global allow-list (idempotent), so RecBole's own ``torch.load`` calls load RecBole checkpoints as data."""
    if _REGISTERED:
        return
    from recbole_genrec.model_index import model_globals

    refs = [(ModelClassRef, name) for package in ("recbole", "recbole_genrec") for name in model_globals(package)]
    torch.serialization.add_safe_globals(ALLOW_LIST + refs)
    _REGISTERED.append(True)


register_allow_list()

__all__ = ["ALLOW_LIST", "FORMAT", "PlainCheckpoints", "RestoredConfig", "UnsafeCheckpointError", "config_state",
           "load_checkpoint", "plain_checkpoint_trainer", "save_checkpoint"]
