"""recbole-genrec: generative and language-based recommenders as a RecBole 1.2.1 plugin.

Importing the package applies the compatibility shims in :mod:`recbole_genrec.compat`, so
stock RecBole models run on numpy 2, torch>=2.6, scipy>=1.15 and setuptools>=81, and the CPU
threading defaults of :mod:`recbole_genrec.threads` (OpenMP threads sleep instead of spinning;
torch's intra-op threads = the CPUs this process may use, unless ``OMP_NUM_THREADS`` is set). The
shims that need RecBole, and the thread count, are applied the moment RecBole is imported, and the
public names below are imported on first use, so ``import recbole_genrec`` itself (and
``run_recbole_genrec.py --help``) loads neither torch nor RecBole.
"""

import importlib

from recbole_genrec import threads as _threads

_threads.set_wait_policy()  # before anything imports torch: OpenMP reads it once, at load

from recbole_genrec import compat as _compat  # noqa: E402

_compat.apply()

__version__ = "0.1.0"

_API = {
    "Config": "recbole_genrec.config",
    "create_dataset": "recbole_genrec.data",
    "get_model": "recbole_genrec.utils",
    "get_trainer": "recbole_genrec.utils",
    "list_models": "recbole_genrec.utils",
    "load_data_and_model": "recbole_genrec.quick_start",
    "objective_function": "recbole_genrec.quick_start",
    "run": "recbole_genrec.quick_start",
    "run_recbole_genrec": "recbole_genrec.quick_start",
    "run_side_by_side": "recbole_genrec.quick_start",
    "patch": "recbole_genrec.plugin",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
