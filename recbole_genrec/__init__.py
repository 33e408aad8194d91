"""recbole-genrec: generative and language-based recommenders as a RecBole 1.2.1 plugin.

Importing the package applies the compatibility shims in :mod:`recbole_genrec.compat`, so
stock RecBole models run on numpy 2, torch>=2.6, scipy>=1.15 and setuptools>=81.
"""

from recbole_genrec import compat as _compat

_compat.apply()

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
