"""How the package's parts are joined: no import cycle (module level or inside functions), tokenizers/ knows no store
and no config, one owner of the store's file names."""

import ast
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "recbole_genrec")


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path, top_level_only):
    """``recbole_genrec`` modules a file imports (at module level only, or anywhere): for ``from X import a`` the
    submodule ``X.a`` when there is one, else ``X``."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("recbole_genrec")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("recbole_genrec"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                where = os.path.join(ROOT, *sub.split("."))
                found.add(sub if os.path.isfile(where + ".py") or os.path.isdir(where) else node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.add(".")  # relative: inside the same package
    return found


FILES = sorted(glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True))
MODULES = {_module_name(p): p for p in FILES}


def _graph(top_level_only=False):
    """Import edges between the package's modules; a module's own parent packages are no edge (Python initialises
    them first, whatever the module imports)."""
    graph = {}
    for name, path in MODULES.items():
        parents = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)}
        graph[name] = {m for m in _imports(path, top_level_only) if m in MODULES and m != name and m not in parents}
    return graph


def test_no_import_cycle():
    graph, state, cycles = _graph(), {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, f"module-level import cycles: {cycles}"


def test_the_cycle_detector_sees_a_cycle(monkeypatch):
    graph = {"a": {"b"}, "b": {"a"}}
    monkeypatch.setattr(__import__(__name__), "_graph", lambda: graph)
    with pytest.raises(AssertionError, match="cycles"):
        test_no_import_cycle()


def test_every_import_of_the_package_names_something_it_has():
    """``from recbole_genrec.x import name`` anywhere (functions included: they run only when called) in the package,
    the benchmarks, the scripts and the tests names a module or an attribute that exists: a moved name fails here,
    not when somebody first runs the benchmark that imports it."""
    import importlib.util

    import recbole_genrec  # noqa: F401  (compat shims before RecBole)

    paths = FILES + sorted(glob.glob(os.path.join(ROOT, "benchmarks", "**", "*.py"), recursive=True)) + \
        sorted(glob.glob(os.path.join(ROOT, "tests", "*.py"))) + sorted(glob.glob(os.path.join(ROOT, "*.py")))
    missing = []
    for path in paths:
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0
                    and (node.module or "").split(".")[0] == "recbole_genrec"):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name) and importlib.util.find_spec(f"{node.module}.{alias.name}") is None:
                    missing.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.module}.{alias.name}")
    assert not missing, missing


def test_tokenizers_know_no_store_and_no_config():
    for path in glob.glob(os.path.join(PACKAGE, "tokenizers", "*.py")):
        imported = _imports(path, top_level_only=False)
        outside = sorted(m for m in imported if m != "." and not m.startswith("recbole_genrec.tokenizers"))
        assert not outside, f"{os.path.relpath(path, ROOT)} imports {outside}"
        assert "config[" not in open(path, encoding="utf-8").read(), path


def test_only_the_store_names_the_store_files():
    """The file names of <cache>/<dataset>/ are spelt in recbole_genrec/store.py only (docstrings aside)."""
    prefixes = ("items.json", "embeddings-", "codes-", "diagnostics-", "tokenizer-", "code_usage-", "stage1.json",
                "id_emb.npy", "adapter.safetensors")
    for path in FILES:
        if path.endswith(os.path.join("recbole_genrec", "store.py")):
            continue
        tree = ast.parse(open(path, encoding="utf-8").read())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                spelt = [p for p in prefixes if node.value.startswith(p)]
                assert not spelt, f"{os.path.relpath(path, ROOT)}:{node.lineno} spells the store's {spelt}"


def test_run_dir_is_inside_the_dataset_store(tmp_path):
    from recbole_genrec import store

    assert store.run_dir(str(tmp_path), "ml-100k", "TIGER-1") == str(tmp_path / "ml-100k" / "runs" / "TIGER-1")
    assert os.path.isdir(tmp_path / "ml-100k" / "runs" / "TIGER-1")
