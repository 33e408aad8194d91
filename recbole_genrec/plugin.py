"""``patch()``: let stock ``recbole.quick_start.run_recbole(model="TIGER")`` find plugin models.

Opt-in and idempotent. It swaps the names that ``recbole.quick_start.quick_start`` looked up at
import time (``Config``, ``get_model``, ``get_trainer``, ``create_dataset``) for the plugin's,
which fall back to RecBole's own for every stock model.
"""

from recbole_genrec.config import Config
from recbole_genrec.data import create_dataset
from recbole_genrec.utils import get_model, get_trainer

_PATCHED = False


def patch():
    """Route RecBole's quick-start entry points through recbole_genrec (returns True once done)."""
    global _PATCHED
    if _PATCHED:
        return True
    import recbole.quick_start.quick_start as qs  # opt-in: RecBole's quick start loads only when patched

    qs.Config = Config
    qs.get_model = get_model
    qs.get_trainer = get_trainer
    qs.create_dataset = create_dataset
    _PATCHED = True
    return True
