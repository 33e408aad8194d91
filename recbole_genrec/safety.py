"""Guards on every place where RecBole would run code from a file or a setting.

RecBole 1.2.1 unpickles its dataset and dataloader caches, ``eval``s the teacher of KD_DAGFM, the settings of a
config dict and the values of a tuning params file, reads LDiffRec's ``item_emb.npy`` with ``allow_pickle=True``
and parses config files with yaml's ``FullLoader``. :data:`GUARDED` lists each such call; :func:`install` (run by
:mod:`recbole_genrec.compat` when RecBole is imported) replaces the name that call uses, in that RecBole module
only, by a guard that reads data and refuses code. The only way past a guard is the documented opt-in
``trust_checkpoint`` / ``--trust-checkpoint``, which lets RecBole unpickle its own caches (``save_dataset``,
``save_dataloaders``): only for caches you wrote yourself.

This module imports neither torch nor RecBole at import time (the command line checks its arguments with it).
"""

import ast
import contextlib
import contextvars
import logging
import os
import re
import types
import warnings

import yaml

from recbole_genrec.errors import ConfigError, UnsafeCheckpointError

logger = logging.getLogger(__name__)

MAX_DEPTH = 64  # nesting of a config value (lists in lists ...): far above any real setting
TEACHERS = ("CrossNet", "CIN")  # KD_DAGFM's teacher networks (classes of recbole's kd_dagfm.py)
OPT_IN = "trust_checkpoint=True (Python, or the config key trust_checkpoint: True) or --trust-checkpoint (command line)"

# (file under the recbole package, the call, how many times it occurs there, the guard that replaces it)
GUARDED = [
    ("data/utils.py", "pickle.load", 2, "recbole.data.utils.pickle.load refuses unless trust_checkpoint"),
    ("config/configurator.py", "eval(", 1, "Config._convert_config_dict reads Python literals only"),
    ("model/context_aware_recommender/kd_dagfm.py", "eval(", 1, "kd_dagfm.eval resolves a teacher name only"),
    ("trainer/hyper_tuning.py", "eval(", 1, "HyperTuning._build_space_from_file reads Python literals only"),
    ("model/general_recommender/ldiffrec.py", "allow_pickle=True", 1, "ldiffrec.np.load never unpickles"),
]

_TRUSTED = contextvars.ContextVar("recbole_genrec_trusted_pickles", default=False)


class SafetyError(ValueError):
    """A file or setting that would run code (the message names it, and the opt-in where there is one)."""


# ----------------------------------------------------------------------------- RecBole's pickle caches
def pickle_cache_files(config):
    """``[(what, path)]``: the files RecBole's ``create_dataset`` and ``data_preparation`` unpickle when they exist."""
    import importlib

    from recbole.utils import ModelType

    module = importlib.import_module("recbole.data.dataset")
    name = f"{config['model']}Dataset"
    if not hasattr(module, name):  # RecBole's own choice of dataset class (recbole.data.utils.create_dataset)
        name = {ModelType.SEQUENTIAL: "SequentialDataset",
                ModelType.KNOWLEDGE: "KnowledgeBasedDataset"}.get(config["MODEL_TYPE"], "Dataset")
    folder = config["checkpoint_dir"]
    dataset = config["dataset_save_path"] or os.path.join(folder, f"{config['dataset']}-{name}.pth")
    loaders = config["dataloaders_save_path"] or os.path.join(folder, f"{config['dataset']}-for-"
                                                                      f"{config['model']}-dataloader.pth")
    return [("dataset", dataset), ("dataloaders", loaders)]


def _refusal(path, what):
    return (f"{path} is a RecBole {what} cache (a pickle): RecBole would unpickle it, which runs any code the file "
            f"contains. Delete it (the {what} is rebuilt from the atomic files), or, if you wrote it yourself "
            f"(save_{what}: True), pass {OPT_IN} to load it")


def check_pickle_caches(config):
    """Refuse, before any work, a RecBole cache file that RecBole would unpickle, unless ``trust_checkpoint``."""
    for what, path in pickle_cache_files(config):
        if os.path.exists(path):
            if not config["trust_checkpoint"]:
                raise UnsafeCheckpointError(_refusal(path, what))
            message = f"trust_checkpoint: RecBole may unpickle its {what} cache {path}; this runs any code it contains"
            logger.warning(message)
            warnings.warn(message, UserWarning, stacklevel=3)


@contextlib.contextmanager
def pickle_caches_allowed(config):
    """Inside: RecBole may unpickle its caches iff ``config['trust_checkpoint']`` (see :func:`guarded_pickle_load`)."""
    token = _TRUSTED.set(bool(config["trust_checkpoint"]))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def guarded_pickle_load(file, *args, **kwargs):
    """``pickle.load`` as ``recbole.data.utils`` sees it: refused outside :func:`pickle_caches_allowed` with trust."""
    if not _TRUSTED.get():
        path = getattr(file, "name", repr(file))
        what = "dataloaders" if str(path).endswith("-dataloader.pth") else "dataset"
        raise UnsafeCheckpointError(_refusal(path, what))
    import pickle

    return pickle.load(file, *args, **kwargs)  # the documented opt-in (trust_checkpoint): runs the file's code


def check_save_settings(config):
    """``save_dataset`` / ``save_dataloaders`` write pickles that only the opt-in may read back: refused without it."""
    for key in ("save_dataset", "save_dataloaders"):
        if config[key] and not config["trust_checkpoint"]:
            raise ConfigError(f"{key}=True writes a pickle that RecBole unpickles on the next run, which would run any "
                              f"code in that file; set {key}: False (the plugin caches its text features itself), or "
                              f"pass {OPT_IN} to write and read such caches")


# ----------------------------------------------------------------------------- settings RecBole evaluates
def literal(text):
    """A Python literal (``'[1, 2]'``, ``'1e-3'``, ``'True'``) as its value; ``ValueError`` for anything else."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(f"{text[:60]!r} is not a Python literal") from None


def convert_config_dict(self, config_dict):
    """RecBole's ``Config._convert_config_dict`` without ``eval``: strings that are Python literals become values,
    ``true``/``false`` booleans, anything else stays the text it was."""
    for key, param in config_dict.items():
        if not isinstance(param, str):
            continue
        try:
            value = literal(param)
        except ValueError:
            value = {"true": True, "false": False}.get(param.lower(), param)
        if value is not None and not isinstance(value, (str, int, float, list, tuple, dict, bool)):
            value = param  # a set, bytes or complex literal stays the text it was
        config_dict[key] = value
    return config_dict


def check_teacher(value):
    """``None`` when ``value`` names a KD_DAGFM teacher, else the problem."""
    if isinstance(value, str) and value in TEACHERS:
        return None
    return f"one of {list(TEACHERS)} (KD_DAGFM's teacher networks)"


def teacher_class(expression):
    """What ``eval(config['teacher'])`` means in RecBole's kd_dagfm.py: a teacher class, looked up by name."""
    import recbole.model.context_aware_recommender.kd_dagfm as kd_dagfm

    if check_teacher(expression) is not None:
        raise SafetyError(f"teacher={expression!r} is not allowed: teacher must be {check_teacher(expression)}; "
                          f"set --teacher=CrossNet or teacher: CIN")
    return getattr(kd_dagfm, expression)


def load_npy_data_only(file, *args, allow_pickle=False, **kwargs):
    """``np.load`` for RecBole's LDiffRec: never unpickles (object arrays are refused, naming the file)."""
    import numpy as np

    try:
        return np.load(file, *args, allow_pickle=False, **kwargs)
    except ValueError as err:
        if "allow_pickle" not in str(err):
            raise
        raise SafetyError(f"{file} holds Python objects (a pickled array), and loading it would run code from the "
                          f"file; save the item embeddings as a numeric array (np.save(path, emb.astype('float32')))"
                          ) from None


_CHOICE_FIX = "write the values as a Python list, e.g. learning_rate choice [0.01,0.001]"


def build_space_from_file(file):
    """RecBole's ``HyperTuning._build_space_from_file`` (lines ``name type values``) reading values as literals.

    ``choice`` takes a Python list, ``uniform`` / ``loguniform`` ``low,high`` and ``quniform`` ``low,high,q``;
    blank lines and ``#`` comments are skipped, and any other line that does not fit is an error naming it.
    """
    from hyperopt import hp

    space = {}
    with open(file, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, start=1):
        parts = line.strip().split(" ")
        if not line.strip() or line.strip().startswith("#"):
            continue
        where = f"{file}, line {number}"
        if len(parts) < 3:
            raise ValueError(f"{where}: {line.strip()!r} is not 'name type values'; {_CHOICE_FIX}")
        name, kind, text = parts[0], parts[1], "".join(parts[2:])
        if kind == "choice":
            try:
                values = literal(text)
            except ValueError:
                values = None
            if not isinstance(values, (list, tuple)) or not values:
                raise ValueError(f"{where}: the choices of {name} ({text!r}) are not a non-empty Python list; "
                                 f"{_CHOICE_FIX}")
            space[name] = hp.choice(name, list(values))
            continue
        sizes = {"uniform": 2, "loguniform": 2, "quniform": 3}
        if kind not in sizes:
            raise ValueError(f"{where}: type {kind!r} of {name} is not one of choice, uniform, loguniform, quniform")
        try:
            numbers = [float(v) for v in text.split(",")]
        except ValueError:
            numbers = []
        if len(numbers) != sizes[kind]:
            form = "low,high,q" if kind == "quniform" else "low,high"
            raise ValueError(f"{where}: {kind} of {name} needs {form} (numbers), got {text!r}")
        space[name] = getattr(hp, kind)(name, *numbers)
    return space


# ----------------------------------------------------------------------------- yaml: plain values only
class ConfigLoader(yaml.SafeLoader):
    """yaml's ``SafeLoader`` (plain values only: no Python tags) with RecBole's float rule (``1e-3`` is a float)."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _where(name, mark):
    return f"{name}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else name


def check_yaml_structure(text, name):
    """Refuse values nested deeper than :data:`MAX_DEPTH` and aliases of a collection inside itself (yaml events:
    no recursion, so a 5,000-deep ``[`` is reported, not a ``RecursionError``)."""
    open_anchors, depth = [], 0
    for event in yaml.parse(text, Loader=ConfigLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            open_anchors.append(event.anchor)
            if depth > MAX_DEPTH:
                raise SafetyError(f"{_where(name, event.start_mark)}: the value nests more than {MAX_DEPTH} levels "
                                  f"deep; write a flat value (a list or a mapping of plain values)")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
            open_anchors.pop()
        elif isinstance(event, yaml.AliasEvent) and event.anchor in open_anchors:
            raise SafetyError(f"{_where(name, event.start_mark)}: alias *{event.anchor} refers to the value that "
                              f"contains it (a value that holds itself); write the value out instead of the alias")


def _plain_yaml(text):
    """``text`` parsed by :class:`ConfigLoader`: plain values only."""
    loader = ConfigLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml(text, name):
    """``text`` as plain yaml data; one-line :class:`SafetyError` naming ``name``, line and column otherwise."""
    try:
        check_yaml_structure(text, name)
        return _plain_yaml(text)
    except yaml.constructor.ConstructorError as err:
        tag = re.search(r"tag '([^']+)'", str(err.problem))
        what = f"the YAML tag {tag.group(1).replace('tag:yaml.org,2002:', '!!')}" if tag else "a YAML tag"
        raise SafetyError(f"{_where(name, err.problem_mark)}: {what} is not allowed (settings are plain values: "
                          f"numbers, strings, lists, mappings); remove the tag") from None
    except yaml.MarkedYAMLError as err:
        problem = " ".join(str(err.problem or err.context or "not valid YAML").split())
        raise SafetyError(f"{_where(name, err.problem_mark)}: {problem}; fix the YAML syntax there") from None
    except yaml.YAMLError as err:
        raise SafetyError(f"{name}: {' '.join(str(err).split())}; fix the YAML syntax") from None


def read_config_file(path):
    """A config file as a dict (plain yaml data only), every problem a one-line error naming the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise FileNotFoundError(f"config file {path} cannot be read ({err.strerror}); check --config_files") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise SafetyError(f"{path}, line {line}, column {column}: byte {raw[err.start:err.start + 1]!r} is not UTF-8; "
                          f"save the config file as UTF-8") from None
    data = load_yaml(text.lstrip("\ufeff"), path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SafetyError(f"{path}: a config file is a mapping of 'key: value' lines, but this one holds a "
                          f"{type(data).__name__}; write one setting per line, e.g. epochs: 10")
    return data


def read_config_files(file_list):
    """The settings of several config files (:func:`read_config_file`), later files winning."""
    merged = {}
    for path in file_list or []:
        merged.update(read_config_file(path))
    return merged


def load_config_files(self, file_list):
    """RecBole's ``Config._load_config_files`` through :func:`read_config_files`."""
    return read_config_files(file_list)


def build_yaml_loader(self):
    """RecBole's ``Config._build_yaml_loader``: :class:`ConfigLoader` (RecBole's own adds its float rule to yaml's
    ``FullLoader`` for the whole process)."""
    return ConfigLoader


def check_value_nesting(text, name):
    """Refuse a command-line value whose brackets nest deeper than :data:`MAX_DEPTH` before anything parses it."""
    depth = deepest = 0
    for char in text:
        depth += 1 if char in "[{(" else -1 if char in "]})" and depth > 0 else 0
        deepest = max(deepest, depth)
    if deepest > MAX_DEPTH:
        raise SafetyError(f"{name}: the value nests {deepest} levels deep (at most {MAX_DEPTH}); pass a flat value")


def yaml_value(text, name):
    """A command-line value read as yaml (plain data), refusing deep nesting and self-referencing aliases."""
    check_yaml_structure(text, name)
    return _plain_yaml(text)


# ----------------------------------------------------------------------------- install
class ModuleProxy(types.ModuleType):
    """A module whose attributes are ``module``'s, except those set on the proxy."""

    def __init__(self, module, **overrides):
        super().__init__(module.__name__)
        self._module = module
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        return getattr(self._module, name)


def _module_proxy(module, **overrides):
    return ModuleProxy(module, **overrides)


def install():
    """Put every guard of :data:`GUARDED` (and the yaml loader) in place in RecBole's modules (idempotent)."""
    import pickle

    import numpy as np
    import recbole.data.utils as data_utils
    import recbole.model.context_aware_recommender.kd_dagfm as kd_dagfm
    import recbole.model.general_recommender.ldiffrec as ldiffrec
    import recbole.trainer.hyper_tuning as hyper_tuning
    from recbole.config import Config

    if getattr(data_utils.pickle, "load", None) is not guarded_pickle_load:
        data_utils.pickle = _module_proxy(pickle, load=guarded_pickle_load)
    kd_dagfm.eval = teacher_class  # the module's own name shadows the builtin, for its one eval(config['teacher'])
    if getattr(ldiffrec.np, "load", None) is not load_npy_data_only:
        ldiffrec.np = _module_proxy(np, load=load_npy_data_only)
    hyper_tuning.HyperTuning._build_space_from_file = staticmethod(build_space_from_file)
    Config._convert_config_dict = convert_config_dict
    Config._build_yaml_loader = build_yaml_loader
    Config._load_config_files = load_config_files


__all__ = ["GUARDED", "OPT_IN", "SafetyError", "check_pickle_caches", "check_save_settings", "install", "literal",
           "pickle_caches_allowed", "read_config_file"]
