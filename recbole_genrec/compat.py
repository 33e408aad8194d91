"""Compatibility shims that make RecBole 1.2.1 run on today's Python stack.

RecBole 1.2.1 was released against numpy 1.x, torch < 2.6, scipy < 1.15 and setuptools
with ``pkg_resources``. Each shim below repairs exactly one upstream break, is idempotent
(``apply()`` may be called any number of times) and leaves behaviour unchanged on stacks
where the break does not exist. ``apply()`` runs on ``import recbole_genrec``; the shims
that need RecBole run when RecBole is imported (so the package imports fast for ``--help``).

Three more shims guard rather than repair: the calls where RecBole would run code from a file or a setting
(:mod:`recbole_genrec.safety`), ``data_path`` for ``ml-100k`` (RecBole ignores it) and ``drop_duplicates``.

``pandas>=3`` is not shimmed: it is excluded by the pin in ``pyproject.toml``.
"""

import contextlib
import importlib.abc
import importlib.metadata
import importlib.util
import os
import sys
import types

import numpy as np

from recbole_genrec import threads
from recbole_genrec.safety import ModuleProxy

_APPLIED = set()


def _once(fn):
    def wrapper():
        if fn.__name__ not in _APPLIED:
            fn()
            _APPLIED.add(fn.__name__)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@_once
def shim_pkg_resources():
    """ray 2.x imports ``pkg_resources``, which setuptools>=81 no longer ships."""
    try:
        import pkg_resources  # noqa: F401

        return
    except ImportError:
        pass
    import packaging
    import packaging.version

    class DistributionNotFound(Exception):
        pass

    class _Distribution:
        def __init__(self, name):
            self.project_name = name
            self.key = name.lower()
            self.version = importlib.metadata.version(name)

    def get_distribution(name):
        try:
            return _Distribution(str(name))
        except importlib.metadata.PackageNotFoundError as err:
            raise DistributionNotFound(name) from err

    mod = types.ModuleType("pkg_resources")
    mod.__doc__ = "Minimal stand-in created by recbole_genrec.compat (setuptools>=81 removed it)."
    mod.DistributionNotFound = DistributionNotFound
    mod.get_distribution = get_distribution
    mod.require = lambda name: [get_distribution(name)]
    mod.packaging = packaging
    vendor = types.ModuleType("pkg_resources._vendor")
    vendor.packaging = packaging
    mod._vendor = vendor
    sys.modules["pkg_resources"] = mod
    sys.modules["pkg_resources._vendor"] = vendor
    sys.modules["pkg_resources._vendor.packaging"] = packaging
    sys.modules["pkg_resources._vendor.packaging.version"] = packaging.version


@_once
def shim_numpy_aliases():
    """numpy 2 removed ``np.float_``/``np.complex_``/``np.unicode_`` (RecBole's Config),
    ``np.bool8`` (ray.tune's loggers) and the 1.24-removed ``np.float``/``np.int``... that
    RecBole's Config re-adds in ``__init__`` but an unpickled Config (a checkpoint) does not."""
    aliases = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_, "bool8": np.bool_,
               "bool": np.bool_, "int": np.int_, "float": np.float64, "complex": np.complex128,
               "object": np.object_, "str": np.str_, "long": np.int_, "unicode": np.str_}
    for name, target in aliases.items():
        if name not in np.__dict__:
            setattr(np, name, target)


def _save_with_protocol_2():
    """RecBole's ``Trainer._save_checkpoint`` with pickle protocol 2 instead of 4: torch's ``weights_only``
    unpickler parses protocols <= 2 only, so RecBole could not reload its own checkpoints safely."""
    import torch
    from recbole.trainer.trainer import Trainer
    from recbole.utils import set_color

    if getattr(Trainer._save_checkpoint, "_genrec_protocol_2", False):
        return

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }
        torch.save(state, saved_model_file, pickle_protocol=2)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    _save_checkpoint._genrec_protocol_2 = True
    Trainer._save_checkpoint = _save_checkpoint


@_once
def shim_checkpoint_allowlist():
    """torch>=2.6 loads with ``weights_only=True``, which refuses RecBole's checkpoints: they pickle RecBole's
    ``Config``, its enums, numpy scalars and the model class. Instead of switching RecBole back to
    ``weights_only=False`` (which runs any code a checkpoint holds), the names those checkpoints need are put on
    torch's allow-list, mapped to inert stand-ins (:data:`recbole_genrec.checkpoint.ALLOW_LIST`: ``Config`` ->
    ``RestoredConfig``, whose ``__init__`` refuses to run; every RecBole model class -> ``ModelClassRef``). RecBole's
    own ``torch.load`` calls (``evaluate(load_best_model=True)``, ``resume_checkpoint``, ``load_data_and_model``)
    then load RecBole checkpoints as data, and refuse anything else. RecBole's trainer writes them with pickle
    protocol 2 (:func:`_save_with_protocol_2`), the highest that ``weights_only`` parses."""
    _save_with_protocol_2()
    module = sys.modules.get("recbole_genrec.checkpoint")
    if module is not None and not hasattr(module, "register_allow_list"):
        return  # recbole_genrec.checkpoint is being imported (it imported RecBole): it registers at its end
    from recbole_genrec.checkpoint import register_allow_list

    register_allow_list()


@_once
def shim_dok_update():
    """scipy>=1.15 removed ``dok_matrix._update`` that LightGCN, NGCF, NCL, SGL, GCMC,
    SpectralCF, KGIN and MCCLK call to build their adjacency matrices."""
    import scipy.sparse as sp

    for cls in (sp.dok_matrix, getattr(sp, "dok_array", None)):
        if cls is None or hasattr(cls, "_update"):
            continue

        def _update(self, data):
            # Keys are (row, col) pairs inside the shape; values are non-zero weights.
            self._dict.update(data)

        cls._update = _update


@_once
def shim_item_metrics():
    """ItemCoverage/GiniIndex/TailPercentage crash in ``Collector.get_data_struct``, which
    calls ``.cpu()`` on the int ``data.num_items`` and on Counters (RecBole issues #2131,
    #2191, #2194)."""
    import torch

    from recbole.evaluator.collector import Collector

    original = Collector.get_data_struct
    if getattr(original, "_genrec_fixed", False):
        return

    def get_data_struct(self):
        data = self.data_struct._data_dict
        plain = {k: v for k, v in data.items() if not isinstance(v, torch.Tensor)}
        for key in plain:
            del data[key]
        try:
            returned = original(self)
        finally:
            data.update(plain)
        returned._data_dict.update(plain)
        return returned

    get_data_struct._genrec_fixed = True
    Collector.get_data_struct = get_data_struct


# --------------------------------------------------------------------------------------------- hyperopt (tuning)
class _RandomStateWithIntegers(np.random.RandomState):
    """``RandomState`` plus the ``Generator.integers`` method that hyperopt>=0.2.7 samples ``randint`` and
    ``hp.choice`` with (half-open ``[low, high)`` unless ``endpoint``, like ``Generator.integers``)."""

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        if high is None:
            low, high = 0, low
        if endpoint:
            high = np.add(high, 1)
        return self.randint(low, high, size=size, dtype=dtype)




class _NumpyWithIntegersRandomState(ModuleProxy):
    """``numpy`` as ``recbole.trainer.hyper_tuning`` sees it: ``np.random.RandomState`` has ``integers``.
    Only that module sees this proxy; the global numpy is unchanged."""

    def __init__(self, numpy_module):
        random = ModuleProxy(numpy_module.random, RandomState=_RandomStateWithIntegers)
        super().__init__(numpy_module, random=random)


@_once
def shim_hyperopt_rng():
    """RecBole's ``HyperTuning(algo='exhaustive')`` samples with ``np.random.RandomState(seed)``, but hyperopt>=0.2.7
    calls ``rng.integers`` (numpy's ``Generator`` API): ``'RandomState' object has no attribute 'integers'``.
    ``random`` and ``bayes`` get a ``Generator`` from hyperopt itself and need nothing."""
    import recbole.trainer.hyper_tuning as hyper_tuning

    if hasattr(np.random.RandomState, "integers") or isinstance(hyper_tuning.np, _NumpyWithIntegersRandomState):
        return
    hyper_tuning.np = _NumpyWithIntegersRandomState(hyper_tuning.np)


SINE_MODULE = "recbole.model.sequential_recommender.sine"


def _keep_anomaly_mode(exec_module):
    """``exec_module`` that leaves torch's anomaly mode as it found it."""

    def exec_keeping_mode(module):
        import torch

        enabled, check_nan = torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()
        try:
            exec_module(module)
        finally:
            torch.autograd.set_detect_anomaly(enabled, check_nan)

    return exec_keeping_mode


@_once
def shim_sine_anomaly():
    """RecBole's ``sine.py`` calls ``torch.autograd.set_detect_anomaly(True)`` at import, and looking up any stock
    sequential model imports it: every later backward in the process would run in anomaly mode (1.6x slower on a
    SASRec step). Its import now leaves the mode as it was."""
    if SINE_MODULE not in sys.modules and not any(
        isinstance(f, _AfterImport) and f.fullname == SINE_MODULE for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _AfterImport(SINE_MODULE, wrap=_keep_anomaly_mode))


# --------------------------------------------------------------------------------------------- guards and data
@_once
def shim_security_guards():
    """RecBole unpickles its dataset/dataloader caches, ``eval``s settings (a config dict, KD_DAGFM's ``teacher``,
    a tuning params file), reads LDiffRec's ``.npy`` with ``allow_pickle=True`` and config files with yaml's
    ``FullLoader``: each call gets a guard that reads data only (:mod:`recbole_genrec.safety`)."""
    from recbole_genrec import safety

    safety.install()


@_once
def shim_ml_100k_data_path():
    """RecBole's ``Config`` points ``data_path`` of ``ml-100k`` at its bundled copy, whatever the user set: a
    ``data_path`` the user gives wins, as for every other dataset."""
    from recbole.config import Config

    original = Config._set_default_parameters
    if getattr(original, "_genrec_fixed", False):
        return

    def _set_default_parameters(self):
        original(self)
        given = self.external_config_dict.get("data_path")
        if self.dataset == "ml-100k" and given:
            self.final_config_dict["data_path"] = os.path.join(given, self.dataset)

    _set_default_parameters._genrec_fixed = True
    Config._set_default_parameters = _set_default_parameters


def _duplicated_rows(frame):
    """Boolean mask of the rows of ``frame`` that repeat an earlier row in every column (sequence cells compared as
    tuples)."""
    keys = frame.copy()
    for column in keys.columns:
        if keys[column].dtype == object and len(keys) and isinstance(keys[column].iloc[0], np.ndarray):
            keys[column] = keys[column].map(tuple)
    return keys.duplicated(keep="first").to_numpy()


@_once
def shim_drop_duplicates():
    """``drop_duplicates: True`` drops the interaction rows that repeat an earlier row in every loaded column (across
    the parts of ``benchmark_filename`` too) right after RecBole loads them, and logs how many."""
    from recbole.data.dataset import Dataset

    original = Dataset._load_inter_feat
    if getattr(original, "_genrec_fixed", False):
        return

    def _load_inter_feat(self, token, dataset_path):
        original(self, token, dataset_path)
        wanted = self.config["drop_duplicates"]  # None without the plugin's yaml (stock RecBole): keep every row
        if self.inter_feat is None or wanted is not True:
            return
        duplicated = _duplicated_rows(self.inter_feat)
        if not duplicated.any():
            return
        if getattr(self, "file_size_list", None):  # the parts of benchmark_filename: their sizes after the drop
            bounds = np.cumsum([0] + list(self.file_size_list))
            self.file_size_list = [int((~duplicated[a:b]).sum()) for a, b in zip(bounds[:-1], bounds[1:])]
        self.inter_feat = self.inter_feat[~duplicated].reset_index(drop=True)
        self.logger.warning(f"drop_duplicates: dropped {int(duplicated.sum())} duplicated interaction rows of "
                            f"'{token}' (every loaded column equal to an earlier row)")

    _load_inter_feat._genrec_fixed = True
    Dataset._load_inter_feat = _load_inter_feat


LIGHT_SHIMS = (shim_pkg_resources, shim_numpy_aliases)
RECBOLE_SHIMS = (shim_checkpoint_allowlist, shim_dok_update, shim_item_metrics, shim_hyperopt_rng, shim_sine_anomaly,
                 shim_security_guards, shim_ml_100k_data_path, shim_drop_duplicates)


def apply_recbole_shims():
    """The shims that need torch/scipy/RecBole (idempotent), then torch's CPU thread count
    (:func:`recbole_genrec.threads.configure`: it needs torch, which RecBole has just loaded)."""
    for shim in RECBOLE_SHIMS:
        shim()
    threads.configure()


class _AfterImport(importlib.abc.MetaPathFinder):
    """Wraps the loading of one module, ``fullname``, the first time it is imported: ``wrap(exec_module)`` returns
    the function that executes it (used once, then the finder removes itself)."""

    def __init__(self, fullname, wrap):
        self.fullname, self.wrap = fullname, wrap

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.fullname:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader.exec_module = self.wrap(spec.loader.exec_module)
        return spec


def _then_shim(exec_module):
    def exec_then_shim(module):
        exec_module(module)
        apply_recbole_shims()

    return exec_then_shim


def _after_recbole_import():
    """:func:`apply_recbole_shims` right after ``import recbole`` (the package's ``__init__``) has run, so that
    ``import recbole_genrec`` stays light (no torch, no RecBole) until RecBole itself is imported, by the plugin or
    by the user, and RecBole is never used without its shims."""
    return _AfterImport("recbole", wrap=_then_shim)


def apply():
    """Apply every shim (idempotent): ``pkg_resources`` and the numpy aliases now (they must exist before
    ``recbole.quick_start`` imports ray), the others now if RecBole is already imported, else right after it is."""
    for shim in LIGHT_SHIMS:
        shim()
    if "recbole" in sys.modules:
        apply_recbole_shims()
    elif not any(isinstance(f, _AfterImport) and f.fullname == "recbole" for f in sys.meta_path):
        sys.meta_path.insert(0, _after_recbole_import())
