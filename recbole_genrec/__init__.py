"""recbole-genrec: generative and language-based recommenders as a RecBole 1.2.1 plugin.

Importing the package applies the compatibility shims in :mod:`recbole_genrec.compat`, so
stock RecBole models run on numpy 2, torch>=2.6, scipy>=1.15 and setuptools>=81, and the CPU
threading defaults of :mod:`recbole_genrec.threads` (OpenMP threads sleep instead of spinning;
torch's intra-op threads = the CPUs this process may use, unless ``OMP_NUM_THREADS`` is set).
"""

from recbole_genrec import threads as _threads

_threads.set_wait_policy()  # before anything imports torch: OpenMP reads it once, at load

from recbole_genrec import compat as _compat  # noqa: E402

_compat.apply()
_threads.configure()

__version__ = "0.1.0"

from recbole_genrec.config import Config  # noqa: E402
from recbole_genrec.data import create_dataset  # noqa: E402
from recbole_genrec.utils import get_model, get_trainer, list_models  # noqa: E402
from recbole_genrec.quick_start import (  # noqa: E402
    load_data_and_model,
    objective_function,
    run,
    run_recbole_genrec,
    run_side_by_side,
)
from recbole_genrec.plugin import patch  # noqa: E402

__all__ = [
    "Config",
    "create_dataset",
    "get_model",
    "get_trainer",
    "list_models",
    "load_data_and_model",
    "objective_function",
    "patch",
    "run",
    "run_recbole_genrec",
    "run_side_by_side",
]
