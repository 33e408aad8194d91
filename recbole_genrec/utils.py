"""Model and trainer lookup: the plugin first, then RecBole (RecBole-GNN's shape).

The trainer a run uses is composed from the looked-up one by :func:`recbole_genrec.run_builder.trainer_class`.
"""

import importlib
import pkgutil

from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_genrec.model_index import properties_dir  # noqa: F401  (found without importing RecBole)

MODEL_SUBMODULES = [
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
]


def _find_module(package, model_name):
    for submodule in MODEL_SUBMODULES:
        module_path = f"{package}.{submodule}.{model_name.lower()}"
        try:
            found = importlib.util.find_spec(module_path)
        except ModuleNotFoundError:
            found = None
        if found is not None:
            return importlib.import_module(module_path)
    return None


def _models_in(package):
    """``{model type folder: [ClassName, ...]}`` for every model file of ``package``."""
    grouped = {}
    for submodule in MODEL_SUBMODULES:
        try:
            pkg = importlib.import_module(f"{package}.{submodule}")
        except ImportError:
            continue
        names = []
        for info in pkgutil.iter_modules(pkg.__path__):
            try:
                module = importlib.import_module(f"{package}.{submodule}.{info.name}")
            except ImportError:  # e.g. LightGBM/XGBoost wrappers without their optional package
                continue
            names += [n for n in vars(module) if n.lower() == info.name and isinstance(vars(module)[n], type)]
        if names:
            grouped[submodule] = sorted(names)
    return grouped


def list_models():
    """``{"recbole_genrec": {type: [names]}, "recbole": {type: [names]}}``."""
    return {"recbole_genrec": _models_in("recbole_genrec.model"), "recbole": _models_in("recbole.model")}


def get_model(model_name):
    """The model class called ``model_name``: ours first, then RecBole's.

    Raises ``ValueError`` listing every available model when the name is unknown.
    """
    module = _find_module("recbole_genrec.model", model_name)
    if module is not None and hasattr(module, model_name):
        return getattr(module, model_name)
    try:
        return recbole_get_model(model_name)
    except (ValueError, AttributeError, ImportError):
        pass  # RecBole's own lookup also trips over the optional lightgbm/xgboost imports
    available = list_models()
    ours = ", ".join(n for names in available["recbole_genrec"].values() for n in names)
    theirs = ", ".join(n for names in available["recbole"].values() for n in names)
    raise ValueError(
        f"Unknown model '{model_name}'. Model names are case-sensitive.\n"
        f"recbole_genrec models: {ours}\nRecBole models: {theirs}\n"
        "(run `python run_recbole_genrec.py --list-models` for the grouped list)"
    )


def get_trainer(model_type, model_name):
    """``recbole_genrec.trainer.<Model>Trainer`` if it exists, else RecBole's choice (``RecBole.utils.get_trainer``).

    A lookup only: :func:`recbole_genrec.run_builder.trainer_class` composes what a run adds (fast evaluation,
    plain checkpoints, sharded evaluation, epoch timing).
    """
    trainers = importlib.import_module("recbole_genrec.trainer")
    if hasattr(trainers, model_name + "Trainer"):
        return getattr(trainers, model_name + "Trainer")
    return recbole_get_trainer(model_type, model_name)


__all__ = ["get_model", "get_trainer", "list_models", "properties_dir"]
