"""Compatibility shims that make RecBole 1.2.1 run on today's Python stack.

RecBole 1.2.1 was released against numpy 1.x, torch < 2.6, scipy < 1.15 and setuptools
with ``pkg_resources``. Each shim below repairs exactly one upstream break, is idempotent
(``apply()`` may be called any number of times) and leaves behaviour unchanged on stacks
where the break does not exist. ``apply()`` runs on ``import recbole_genrec``.

``pandas>=3`` is not shimmed: it is excluded by the pin in ``pyproject.toml``.
"""

import importlib.metadata
import sys
import types

import numpy as np

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


class _TorchWithTrustedLoad(types.ModuleType):
    """``torch`` as RecBole's trainer sees it, with the pre-2.6 ``torch.load`` default.

    RecBole's checkpoints pickle its own ``Config`` object, which torch>=2.6 refuses to load
    with ``weights_only=True``. Only RecBole's modules see this proxy; the global ``torch``
    keeps its safe default.
    """

    def __init__(self, torch_module):
        super().__init__("torch")
        self._torch = torch_module

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def load(self, *args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return self._torch.load(*args, **kwargs)


@_once
def shim_torch_load():
    """torch>=2.6 defaults ``torch.load(weights_only=True)``, breaking
    ``trainer.evaluate(load_best_model=True)``, ``resume_checkpoint`` and ``load_data_and_model``."""
    import torch

    import recbole.trainer.trainer as trainer

    modules = [trainer]
    try:
        import recbole.quick_start.quick_start as quick_start

        modules.append(quick_start)
    except (ImportError, AttributeError):  # ray not importable yet: nothing there to patch
        pass
    proxy = _TorchWithTrustedLoad(torch)
    for module in modules:
        if getattr(module, "torch", None) is torch:
            module.torch = proxy


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


class _ModuleProxy(types.ModuleType):
    """A module whose attributes are ``module``'s, except those set on the proxy."""

    def __init__(self, module, **overrides):
        super().__init__(module.__name__)
        self._module = module
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        return getattr(self._module, name)


class _NumpyWithIntegersRandomState(_ModuleProxy):
    """``numpy`` as ``recbole.trainer.hyper_tuning`` sees it: ``np.random.RandomState`` has ``integers``.
    Only that module sees this proxy; the global numpy is unchanged."""

    def __init__(self, numpy_module):
        random = _ModuleProxy(numpy_module.random, RandomState=_RandomStateWithIntegers)
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


def apply():
    """Apply every shim (idempotent). Order matters: ``pkg_resources`` and numpy aliases must
    exist before ``recbole.quick_start`` (which imports ray) is imported."""
    shim_pkg_resources()
    shim_numpy_aliases()
    shim_torch_load()
    shim_dok_update()
    shim_item_metrics()
    shim_hyperopt_rng()
