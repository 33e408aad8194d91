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
  only torch's own ``weights_only`` globals and :data:`ALLOW_LIST`) and, like torch's, building state only onto
  instances of those classes (never onto a class, so a file cannot change ``yaml``'s loaders or
  :class:`RestoredConfig` for the rest of the process): data only, as well.
* A restored config is data, not instructions: keys that name files to load, turn trust on or select code
  (:data:`UNRESTORED`) are dropped on load (:func:`restored_keys` says which), so the caller's own settings
  (``trust_checkpoint``, ``data_path``) decide.
* Anything else (an old checkpoint holding other objects, or a hostile file) is refused with
  :class:`UnsafeCheckpointError`, which names the opt-in: ``trust_checkpoint=True`` (config key / keyword),
  ``--trust-checkpoint`` on the command lines. The opt-in warns and loads with ``weights_only=False``, which
  executes whatever code the file holds: use it only for files you made yourself.
"""

import enum
import logging
import os
from collections import OrderedDict
import pickle
import re
import types
import warnings

import numpy as np
import torch
import yaml
from recbole.utils import EvaluatorType, FeatureSource, FeatureType, InputType, ModelType

from recbole.config import Config

from recbole_genrec.errors import UnsafeCheckpointError
from recbole_genrec.safety import ConfigLoader

logger = logging.getLogger(__name__)

FORMAT = "recbole_genrec.checkpoint"
VERSION = 1
TRUST_HINT = ("pass trust_checkpoint=True (Python, or the config key trust_checkpoint: True) or --trust-checkpoint "
              "(command line) to load it anyway; that runs any code the file contains, so do it only for a file "
              "you made yourself")
_ENUMS = {cls.__name__: cls for cls in (ModelType, InputType, EvaluatorType, FeatureType, FeatureSource)}




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
        config.yaml_loader = ConfigLoader
        config.external_config_dict, config.internal_config_dict = {}, {}
        return config


# Keys of a restored config that name files to load, turn trust on or select code: never taken from a checkpoint.
UNRESTORED = re.compile(r"^(trust_checkpoint|config_files|data_path|genrec_source_data_path|warm_up|save_dataset|"
                        r"save_dataloaders|teacher|.*_save_path|.*_checkpoint|.*_pretrain_path|pre_model_path|"
                        r"pretrain_path)$")


def drop_unrestored(config):
    """Remove the :data:`UNRESTORED` keys from a restored ``config`` (in place); ``{key: value}`` of those that were
    set (``teacher`` stays when it names a known teacher network: it then selects no other code)."""
    from recbole_genrec.safety import check_teacher

    values = getattr(config, "final_config_dict", None)
    if not isinstance(values, dict):
        return {}
    dropped = {}
    for key in [k for k in values if isinstance(k, str) and UNRESTORED.match(k)]:
        if key == "teacher" and check_teacher(values[key]) is None:
            continue
        value = values.pop(key)
        if value not in (None, False, "", [], {}):
            dropped[key] = value
    return dropped


def restored_keys(checkpoint):
    """``{key: value}`` of the checkpoint's config that :func:`drop_unrestored` dropped on load."""
    return dict(checkpoint.get("genrec_dropped_config") or {})


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
    (ConfigLoader, "recbole_genrec.safety.ConfigLoader"),
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


def _buildable(inst, allowed_types):
    """Whether ``BUILD`` may set state on ``inst``: instances of the allowed classes (torch's rule), never a class."""
    return not isinstance(inst, type) and (type(inst) in allowed_types
                                           or type(inst) in (torch.Tensor, torch.nn.Parameter, OrderedDict))


def _restricted_pickle_module():
    """A ``pickle_module`` for ``torch.load`` whose ``find_class`` answers only :func:`_allowed_names` and whose
    ``BUILD``, ``APPEND(S)``, ``SETITEM(S)`` and ``ADDITEMS`` act only on instances of allowed classes and on plain
    lists, dicts and sets (Python's pure unpickler, with those opcodes checked first)."""
    allowed = _allowed_names()
    allowed_types = {v for v in allowed.values() if isinstance(v, type)} | {ModelClassRef}

    def refuse(what, target):
        name = target.__qualname__ if isinstance(target, type) else type(target).__qualname__
        kind = "the class" if isinstance(target, type) else "an instance of"
        raise pickle.UnpicklingError(f"{what} on {kind} {name}")

    def build(self):
        inst, state = self.stack[-2], self.stack[-1]
        if not _buildable(inst, allowed_types):
            refuse("BUILD", inst)
        states = state if isinstance(state, tuple) and len(state) == 2 else (state,)
        for part in states:
            if isinstance(part, dict) and any(not isinstance(k, str) or k.startswith("__") for k in part):
                refuse("BUILD of a special attribute", inst)
        base_build(self)

    def checked(opcode, kind, below):
        def load(self):  # the object the opcode changes: under the mark, or under its ``below`` operands
            target = self.metastack[-1][-1] if below is None else self.stack[-1 - below]
            if not isinstance(target, kind) or isinstance(target, type):
                refuse(pickle_names[opcode], target)
            base[opcode](self)
        return load

    base = pickle._Unpickler.dispatch
    base_build = base[pickle.BUILD[0]]
    pickle_names = {pickle.APPEND[0]: "APPEND", pickle.APPENDS[0]: "APPENDS", pickle.SETITEM[0]: "SETITEM",
                    pickle.SETITEMS[0]: "SETITEMS", pickle.ADDITEMS[0]: "ADDITEMS"}
    dispatch = dict(base)
    dispatch[pickle.BUILD[0]] = build
    dispatch[pickle.APPEND[0]] = checked(pickle.APPEND[0], list, below=1)
    dispatch[pickle.APPENDS[0]] = checked(pickle.APPENDS[0], list, below=None)
    dispatch[pickle.SETITEM[0]] = checked(pickle.SETITEM[0], dict, below=2)
    dispatch[pickle.SETITEMS[0]] = checked(pickle.SETITEMS[0], dict, below=None)
    dispatch[pickle.ADDITEMS[0]] = checked(pickle.ADDITEMS[0], set, below=None)

    class Unpickler(pickle._Unpickler):
        def find_class(self, module, name):
            full = f"{module}.{name}"
            if full in allowed:
                return allowed[full]
            if _MODEL_GLOBAL.match(full):
                return ModelClassRef
            raise pickle.UnpicklingError(f"GLOBAL {full} was not an allowed global")

    Unpickler.dispatch = dispatch

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
    checkpoint["genrec_dropped_config"] = drop_unrestored(checkpoint.get("config"))
    return checkpoint


def restore_config(checkpoint, path, data_path=None, trust_checkpoint=False):
    """The config of a loaded checkpoint, ready to rebuild its run in this process.

    The keys :func:`drop_unrestored` dropped are named in one message. ``data_path`` (a folder that holds
    ``<dataset>/``) is the caller's: a checkpoint never chooses which files are read. Without it the dataset is
    searched where every run searches (:func:`recbole_genrec.data.resolve_data_path`); the error then names the
    folder the checkpoint was trained on. ``trust_checkpoint`` is the caller's as well.
    """
    from recbole_genrec.data import resolve_data_path

    config = checkpoint["config"]
    dropped = restored_keys(checkpoint)
    trained_on = dropped.pop("genrec_source_data_path", None) or dropped.pop("data_path", None)
    dropped.pop("data_path", None)
    if dropped:
        message = (f"checkpoint {path}: config keys {sorted(dropped)} are not restored (they name files to load, "
                   f"turn trust on or select code); this run uses its own settings for them")
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)
    config["single_spec"], config["local_rank"] = True, 0  # a multi-process run's checkpoint, reloaded in one
    config["device"] = torch.device("cuda" if torch.cuda.is_available() and config["use_gpu"] else "cpu")
    config["trust_checkpoint"] = bool(trust_checkpoint)
    config["data_path"] = os.path.join(str(data_path), str(config["dataset"])) if data_path else None
    try:
        resolve_data_path(config)
    except FileNotFoundError as err:
        hint = f" (it was trained on {os.path.dirname(os.path.normpath(trained_on))})" if trained_on else ""
        raise FileNotFoundError(f"{' '.join(str(err).split())} A checkpoint does not choose the data it is reloaded "
                                f"with: pass data_path=<folder that contains {config['dataset']}/>{hint}, or "
                                f"--data_path on the command line") from None
    return config


def _shape(value):
    return list(value.shape) if hasattr(value, "shape") else type(value).__name__


def check_checkpoint_model(checkpoint, path, model_name=None):
    """The model name of ``checkpoint``; ``ValueError`` naming both when it is not ``model_name`` (when given)."""
    config = checkpoint.get("config")
    saved = config.get("model") if isinstance(config, dict) else config["model"] if config is not None else None
    if model_name is not None and saved is not None and str(saved).lower() != str(model_name).lower():
        raise ValueError(f"checkpoint {path} holds a {saved} model, but this run builds {model_name}: pass a "
                         f"checkpoint of {model_name}, or run --model={saved} with this one")
    return saved


def load_weights(model, checkpoint, path, model_name=None):
    """Load ``checkpoint``'s weights (and other parameters) into ``model``; a one-line ``ValueError`` naming the
    file when the checkpoint is of another model (``model_name``: the model this run builds) or does not fit."""
    saved = check_checkpoint_model(checkpoint, path, model_name)
    state_dict = checkpoint["state_dict"]
    try:
        model.load_state_dict(state_dict)
    except RuntimeError:
        current = model.state_dict()
        missing = [k for k in current if k not in state_dict]
        extra = [k for k in state_dict if k not in current]
        changed = [f"{k} {_shape(state_dict[k])} in the file, {_shape(current[k])} now" for k in current
                   if k in state_dict and _shape(state_dict[k]) != _shape(current[k])]
        parts = ([f"sizes differ ({'; '.join(changed[:3])})"] if changed else []) + \
                ([f"missing {missing[:3]}"] if missing else []) + ([f"unexpected {extra[:3]}"] if extra else [])
        raise ValueError(
            f"checkpoint {path} does not fit the {model_name or saved or type(model).__name__} built now: "
            f"{', '.join(parts) or 'the weights do not load'}. The data or the settings changed since training (items, "
            f"item texts and with them the semantic IDs, or model hyperparameters): retrain on the current data, or "
            f"restore the files and settings the checkpoint was trained with") from None
    model.load_other_parameter(checkpoint.get("other_parameter"))


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
        load_weights(self.model, checkpoint, resume_file, self.config["model"])
        if checkpoint.get("optimizer") is not None:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = load_checkpoint(checkpoint_file, self._trust(), map_location=self.device)
            load_weights(self.model, checkpoint, checkpoint_file, self.config["model"])
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

__all__ = ["ALLOW_LIST", "FORMAT", "PlainCheckpoints", "RestoredConfig", "UNRESTORED", "UnsafeCheckpointError",
           "check_checkpoint_model", "config_state", "drop_unrestored", "load_checkpoint", "load_weights",
           "plain_checkpoint_trainer", "restore_config", "restored_keys", "save_checkpoint"]
