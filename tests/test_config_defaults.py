"""The yaml files are the one source of defaults.

* every key the plugin's code reads (``config["key"]``) is defined by a yaml (ours, or RecBole's overall.yaml /
  dataset/sample.yaml / model yamls), by RecBole's ``Config`` itself (``device``, ``local_rank``, ...) or by our code
  (``config["key"] = ...``, e.g. the preprocessing hook's runtime keys);
* no read falls back to a value in code for a key a yaml defines: ``config.get(k, default)``, ``config[k] if k in
  config else ...``, ``try: config[k] except KeyError``, ``getattr(config, k, default)``, a helper that turns ``None``
  into a value (``True if value is None else ...``) applied to ``config[k]``, and, for keys whose yaml default is
  not ``~``, ``config[k] or ...`` / ``config[k] if config[k] is not None else ...``. The scan parses the code
  (``ast``);
* a subclass model yaml states only what differs from its ancestors' (config.py layers ``TIGER.yaml`` before
  ``DiscRec.yaml`` and ``PRORec.yaml``).
"""

import ast
import glob
import os
import sys

import pytest
import recbole
import yaml
from conftest import DATA_ROOT

from recbole_genrec import Config
from recbole_genrec.config import model_yaml_chain
from recbole_genrec.preprocess.hook import _FILTER_KEYS
from recbole_genrec.prorec.stage1 import STAGE1_KEYS
from recbole_genrec.utils import get_model, list_models, properties_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "recbole_genrec", "**", "*.py"), recursive=True))
RECBOLE_PROPERTIES = os.path.join(os.path.dirname(recbole.__file__), "properties")
PLUGIN_MODELS = sorted(n for names in list_models()["recbole_genrec"].values() for n in names)

# keys RecBole itself reads without a yaml default (None has a meaning there: the locale's encoding)
RECBOLE_UNDEFINED = {"encoding"}


def _yaml_keys(*patterns):
    keys = {}
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            with open(path, encoding="utf-8") as f:
                keys.update(yaml.safe_load(f) or {})
    return keys


def _is_config(node):
    return (isinstance(node, ast.Name) and node.id.endswith("config")) or \
        (isinstance(node, ast.Attribute) and node.attr.endswith("config"))


def _key(node):
    """``"k"`` of a ``config["k"]`` subscript, else ``None``."""
    if isinstance(node, ast.Subscript) and _is_config(node.value) and isinstance(node.slice, ast.Constant) \
            and isinstance(node.slice.value, str):
        return node.slice.value
    return None


def _none_to_value_helpers(tree):
    """Functions that return a constant for a ``None`` parameter (``True if value is None else bool(value)``)."""
    helpers = set()
    for func in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        params = {a.arg for a in func.args.args}
        for node in ast.walk(func):
            if isinstance(node, ast.IfExp) and isinstance(node.test, ast.Compare) \
                    and isinstance(node.test.left, ast.Name) and node.test.left.id in params \
                    and isinstance(node.test.comparators[0], ast.Constant) and node.test.comparators[0].value is None:
                fallback = node.body if isinstance(node.test.ops[0], ast.Is) else node.orelse
                if isinstance(fallback, ast.Constant):
                    helpers.add(func.name)
    return helpers


def scan(source):
    """``[(kind, key, line)]`` of every config read, write and fallback in ``source`` (Python text)."""
    tree = ast.parse(source)
    helpers = _none_to_value_helpers(tree)
    found = []
    for node in ast.walk(tree):
        if _key(node) is not None:
            kind = "assign" if isinstance(node.ctx, ast.Store) else "read"
            found.append((kind, _key(node), node.lineno))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and _is_config(node.func.value) and node.args and isinstance(node.args[0], ast.Constant):
            found.append(("get", node.args[0].value, node.lineno))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                and len(node.args) == 3 and _is_config(node.args[0]) and isinstance(node.args[1], ast.Constant):
            found.append(("getattr", node.args[1].value, node.lineno))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in helpers:
            found += [("helper", _key(a), node.lineno) for a in node.args if _key(a) is not None]
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and _key(node.values[0]) is not None:
            found.append(("or", _key(node.values[0]), node.lineno))
        if isinstance(node, ast.IfExp) and isinstance(node.test, ast.Compare):
            left, op, right = node.test.left, node.test.ops[0], node.test.comparators[0]
            if isinstance(op, (ast.In, ast.NotIn)) and _is_config(right) and isinstance(left, ast.Constant):
                found.append(("in", left.value, node.lineno))
            if isinstance(op, (ast.Is, ast.IsNot)) and _key(left) is not None \
                    and isinstance(right, ast.Constant) and right.value is None:
                fallback = node.body if isinstance(op, ast.Is) else node.orelse  # the value when the key is unset
                if not (isinstance(fallback, ast.Constant) and fallback.value is None):
                    found.append(("is-none", _key(left), node.lineno))
        if isinstance(node, ast.Try):
            caught = set()
            for handler in node.handlers:
                types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                caught |= {t.id for t in types if isinstance(t, ast.Name)}
            if "KeyError" in caught:
                body = ast.Module(body=node.body, type_ignores=[])
                found += [("try", _key(n), n.lineno) for n in ast.walk(body) if _key(n) is not None]
    return found


def _source_matches(*kinds):
    """``{key: ["file:line", ...]}`` of every scan finding of ``kinds`` in the plugin's source."""
    found = {}
    for path in SOURCES:
        with open(path, encoding="utf-8") as f:
            for kind, key, line in scan(f.read()):
                if kind in kinds:
                    found.setdefault(key, []).append(f"{os.path.relpath(path, ROOT)}:{line}")
    return found


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    """RecBole's Config reads --key=value from sys.argv: pytest's own options must not reach it."""
    monkeypatch.setattr(sys, "argv", sys.argv[:1])


@pytest.fixture(scope="module")
def yaml_defaults():
    """``{key: default}`` of every yaml that can define a key (RecBole's first, ours over them)."""
    ours = properties_dir()
    return _yaml_keys(os.path.join(RECBOLE_PROPERTIES, "overall.yaml"),
                      os.path.join(RECBOLE_PROPERTIES, "dataset", "sample.yaml"),
                      os.path.join(RECBOLE_PROPERTIES, "model", "*.yaml"),
                      os.path.join(ours, "overall.yaml"), os.path.join(ours, "quick_start", "sequential.yaml"),
                      os.path.join(ours, "model", "*.yaml"))


@pytest.fixture(scope="module")
def defined_keys(yaml_defaults):
    keys = set(yaml_defaults) | set(_source_matches("assign")) | RECBOLE_UNDEFINED
    for model in PLUGIN_MODELS:  # what RecBole's Config adds in code (device, local_rank, eval_type, ...)
        keys |= set(Config(model, "tiny", config_dict={"data_path": DATA_ROOT}).final_config_dict)
    return keys


def test_the_scan_sees_the_reads_and_every_kind_of_fallback():
    reads = _source_matches("read")
    assert {"sid_method", "beam_size", "collab_hard_neg_num", "tau"} <= set(reads)
    assert "genrec_source_data_path" in _source_matches("assign")  # the hook's runtime key
    mutants = {
        "or": 'x = config["a"] or 3',
        "is-none": 'x = int(config["a"] if config["a"] is not None else 2020)',
        "get": 'x = config.get("a", 3)',
        "in": 'x = config["a"] if "a" in config else 3',
        "getattr": 'x = getattr(self.config, "a", 3)',
        "try": 'try:\n    x = config["a"]\nexcept (KeyError, TypeError):\n    x = 3',
        "helper": 'def flag(v):\n    return True if v is None else bool(v)\nx = flag(config["a"])',
    }
    for kind, source in mutants.items():
        assert (kind, "a") in [(k, key) for k, key, _ in scan(source)], kind
    assert [k for k, _, _ in scan('x = config["a"] == 3')] == ["read"]
    assert [k for k, _, _ in scan('x = None if config["a"] is None else config["a"][0]')] == ["read"] * 2


def test_every_key_the_code_reads_is_defined(defined_keys):
    reads = _source_matches("read", "get", "in", "try")
    reads.update({key: ["STAGE1_KEYS"] for key in STAGE1_KEYS})
    reads.update({key: ["hook._FILTER_KEYS"] for key in _FILTER_KEYS})
    missing = {key: where for key, where in reads.items() if key not in defined_keys}
    assert not missing, (f"config keys read but defined by no yaml (add them to properties/, with a comment): "
                         f"{missing}")


def test_no_read_falls_back_to_a_value_in_code(yaml_defaults):
    always = {key: where for key, where in _source_matches("get", "in", "getattr", "try", "helper").items()
              if key in yaml_defaults}
    assert not always, f"these reads fall back to a value in code for keys a yaml defines: read config[key]: {always}"
    unless_unset = {key: where for key, where in _source_matches("or", "is-none").items()
                    if key in yaml_defaults and yaml_defaults[key] is not None}
    assert not unless_unset, (f"these reads fall back to a value in code although a yaml defines a default: drop the "
                              f"fallback (the yaml is the one source of defaults): {unless_unset}")


def _model_yaml(name):
    with open(os.path.join(properties_dir(), "model", f"{name}.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


@pytest.mark.parametrize("model", PLUGIN_MODELS)
def test_subclass_yaml_repeats_no_ancestor_value(model):
    chain = model_yaml_chain(model, get_model(model))
    inherited = {}
    for ancestor in chain[:-1]:
        inherited.update(_model_yaml(ancestor))
    repeated = {k: v for k, v in _model_yaml(model).items() if k in inherited and inherited[k] == v}
    assert not repeated, f"{model}.yaml repeats what {chain[:-1]} already set: {repeated}"


def test_ancestor_yaml_is_layered_before_the_model_yaml():
    assert model_yaml_chain("DiscRec", get_model("DiscRec")) == ["TIGER", "DiscRec"]
    assert model_yaml_chain("PRORec", get_model("PRORec")) == ["TIGER", "PRORec"]
    assert model_yaml_chain("TIGER", get_model("TIGER")) == ["TIGER"]
    tiger = _model_yaml("TIGER")
    discrec = Config("DiscRec", "tiny", config_dict={"data_path": DATA_ROOT})
    prorec = Config("PRORec", "tiny", config_dict={"data_path": DATA_ROOT, "d_model": 48})
    for key in ("d_model", "warmup_steps", "lr_scheduler", "beam_size", "MAX_ITEM_LIST_LENGTH"):
        assert discrec[key] == tiger[key], key  # inherited from TIGER.yaml
    assert tiger["use_user_token"] is True and discrec["use_user_token"] is False  # DiscRec.yaml wins over TIGER's
    assert prorec["genrec_features"] == ["text_emb"]  # PRORec.yaml wins over TIGER's [text_emb, sid]
    assert prorec["prorec_lambda"] == _model_yaml("PRORec")["prorec_lambda"]
    assert prorec["d_model"] == 48  # the user's setting wins over both yamls


def test_a_class_outside_the_registry_inherits_its_parents_yaml():
    tiger = get_model("TIGER")
    child = type("MyTIGER", (tiger,), {})
    assert model_yaml_chain("MyTIGER", child) == ["TIGER", "MyTIGER"]


def test_library_signatures_take_yaml_settings_without_defaults_of_their_own():
    """The library functions and modules a model builds from its config state no default that a yaml also states: the
    caller passes the config's value, so the yaml stays the single source of defaults."""
    import inspect

    from recbole_genrec.generative import T5Backbone
    from recbole_genrec.generative import discrec_embedding as branch
    from recbole_genrec.model.sequential_recommender.discrec import DiscRecBackbone
    from recbole_genrec.preprocess.text_encoder import encode_texts
    from recbole_genrec.prorec import AdaLNAdapter, CollabSequenceEncoder
    from recbole_genrec.tokenizers import TOKENIZERS, generate_semantic_ids

    t5_sizes = ("d_model", "d_ff", "num_layers", "num_decoder_layers", "num_heads", "d_kv", "dropout_rate",
                "feed_forward_proj")
    discrec = ("n_heads", "d_ff", "dropout", "use_level_embedding", "use_collab_branch", "use_gate", "attn_out_proj",
               "ffn_norm", "init")  # DiscRec.yaml's discrec_* keys and TIGER.yaml's dropout_rate
    signatures = [
        (generate_semantic_ids, ("method", "n_levels", "codebook_size", "collision", "seed")),
        (encode_texts, ("encoder", "pooling", "max_length", "batch_size")),
        (T5Backbone.__init__, t5_sizes),
        (DiscRecBackbone.__init__, ("branch_kwargs", "eos_attends_last_item")),
        (branch.DiscRecEmbedding.__init__, discrec),
        (branch.CollaborativeBranch.__init__, ("n_heads", "d_ff", "dropout", "attn_out_proj", "ffn_norm", "init")),
        (branch.ItemLocalAttention.__init__, ("n_heads", "out_proj", "init")),
        (branch.LevelEmbedding.__init__, ("init",)),
        (branch.BranchGate.__init__, ("init",)),
        (branch.encoder_item_layout, ("eos_attends_last_item",)),
        (CollabSequenceEncoder.__init__, ("hidden_size", "n_layers", "n_heads", "inner_size", "dropout")),
        (AdaLNAdapter.__init__, ("hidden_dim", "cond", "n_buckets")),
    ]
    signatures += [(tokenizer.__init__, ("n_levels", "codebook_sizes", "seed")) for tokenizer in TOKENIZERS.values()]
    for function, names in signatures:
        params = inspect.signature(function).parameters
        stated = [n for n in names if params[n].default is not inspect.Parameter.empty]
        assert not stated, f"{function.__qualname__} restates yaml defaults for {stated}"
