"""The model list without importing torch or RecBole: a scan of the model files.

``run_recbole_genrec.py --list-models`` and the model-name check of the command line use it, so they answer in
well under a second. It follows :func:`recbole_genrec.utils.list_models` (which imports every model module):
a model is the class of ``<package>/model/<group>/<file>.py`` whose lower-cased name is the file name, and a file
whose top-level imports are not installed (RecBole's LightGBM/XGBoost wrappers) is left out. A test checks that
both lists are equal.
"""

import ast
import functools
import importlib.machinery
import os
import sys

MODEL_SUBMODULES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


def package_dir(package):
    """Folder of a top-level package, found without importing it (nor running import hooks)."""
    if package == "recbole_genrec":
        return os.path.dirname(os.path.abspath(__file__))
    spec = importlib.machinery.PathFinder.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed")
    return list(spec.submodule_search_locations)[0]


def properties_dir():
    """The plugin's yaml folder: packaged inside the wheel, or ``properties/`` of a checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "properties"), os.path.join(os.path.dirname(here), "properties")):
        if os.path.isdir(os.path.join(candidate, "model")):
            return candidate
    raise FileNotFoundError(f"recbole_genrec's properties/ folder is missing (looked in {here} and its parent).")


def _importable(module):
    top = module.split(".")[0]
    if top in sys.builtin_module_names or top in sys.modules:
        return True
    return importlib.machinery.PathFinder.find_spec(top) is not None


def _model_classes(path, stem, package):
    """Class names of ``path`` that name the file, or ``[]`` when its top-level imports are missing."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    for node in tree.body:
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        if not all(m.split(".")[0] in (package, "recbole", "recbole_genrec") or _importable(m) for m in modules):
            return []
    return [node.name for node in tree.body if isinstance(node, ast.ClassDef) and node.name.lower() == stem]


@functools.lru_cache(maxsize=None)
def _scan(package):
    root = os.path.join(package_dir(package), "model")
    grouped = {}
    for group in MODEL_SUBMODULES:
        folder = os.path.join(root, group)
        if not os.path.isfile(os.path.join(folder, "__init__.py")):
            continue
        names = []
        for name in sorted(os.listdir(folder)):
            stem, ext = os.path.splitext(name)
            if ext == ".py" and stem != "__init__":
                names += [(stem, cls) for cls in _model_classes(os.path.join(folder, name), stem, package)]
        if names:
            grouped[group] = names
    return grouped


def static_models(package):
    """``{group: [ClassName, ...]}`` of ``package`` (``recbole_genrec`` or ``recbole``), sorted."""
    return {group: sorted(cls for _, cls in names) for group, names in _scan(package).items()}


def static_list_models():
    """Same shape as :func:`recbole_genrec.utils.list_models`."""
    return {"recbole_genrec": static_models("recbole_genrec"), "recbole": static_models("recbole")}


def model_names():
    """Every model name of both packages."""
    return {n for package in static_list_models().values() for names in package.values() for n in names}


def model_globals(package):
    """``<package>.model.<group>.<file>.<Class>`` of every model: the names a pickled ``model_class`` has."""
    return [f"{package}.model.{group}.{stem}.{cls}" for group, names in _scan(package).items() for stem, cls in names]
