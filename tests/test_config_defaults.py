"""The yaml files are the one source of defaults.

* every key the plugin's code reads (``config["key"]``) is defined by a yaml (ours, or RecBole's overall.yaml /
  dataset/sample.yaml / model yamls), by RecBole's ``Config`` itself (``device``, ``local_rank``, ...) or by our code
  (``config["key"] = ...``, e.g. the preprocessing hook's runtime keys);
* no read falls back to a value in code (``config["key"] or 64``) for a key whose yaml default is not ``~``;
* a subclass model yaml states only what differs from its ancestors' (config.py layers ``TIGER.yaml`` before
  ``DiscRec.yaml`` and ``PRORec.yaml``).
"""

import glob
import os
import re

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

READ = re.compile(r"config\[\s*[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']\s*\]")
ASSIGN = re.compile(r"config\[\s*[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']\s*\]\s*=(?!=)")
# `config["k"] or <fallback>` and `config["k"] if config["k"] is not None else <fallback>`
FALLBACK = re.compile(r"config\[\s*[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']\s*\]\)?\s+"
                      r"(?:or\b|if\s+\S+\s+is\s+not\s+None\s+else)")
# keys RecBole itself reads without a yaml default (None has a meaning there: the locale's encoding)
RECBOLE_UNDEFINED = {"encoding"}


def _yaml_keys(*patterns):
    keys = {}
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            with open(path, encoding="utf-8") as f:
                keys.update(yaml.safe_load(f) or {})
    return keys


def _source_matches(pattern):
    """``{key: ["file:line", ...]}`` of every match of ``pattern`` in the plugin's source."""
    found = {}
    for path in SOURCES:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                for key in pattern.findall(line):
                    found.setdefault(key, []).append(f"{os.path.relpath(path, ROOT)}:{number}")
    return found


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
    keys = set(yaml_defaults) | set(_source_matches(ASSIGN)) | RECBOLE_UNDEFINED
    for model in PLUGIN_MODELS:  # what RecBole's Config adds in code (device, local_rank, eval_type, ...)
        keys |= set(Config(model, "tiny", config_dict={"data_path": DATA_ROOT}).final_config_dict)
    return keys


def test_the_scan_sees_the_reads():
    reads = _source_matches(READ)
    assert {"sid_method", "beam_size", "collab_hard_neg_num", "tau"} <= set(reads)
    assert "genrec_source_data_path" in _source_matches(ASSIGN)  # the hook's runtime key
    assert FALLBACK.findall('x = config["a"] or 3') == ["a"]
    assert FALLBACK.findall('x = int(config["seed"] if config["seed"] is not None else 2020)') == ["seed"]
    assert FALLBACK.findall('x = config["a"] == 3') == []


def test_every_key_the_code_reads_is_defined(defined_keys):
    reads = _source_matches(READ)
    reads.update({key: ["STAGE1_KEYS"] for key in STAGE1_KEYS})
    reads.update({key: ["hook._FILTER_KEYS"] for key in _FILTER_KEYS})
    missing = {key: where for key, where in reads.items() if key not in defined_keys}
    assert not missing, (f"config keys read but defined by no yaml (add them to properties/, with a comment): "
                         f"{missing}")


def test_no_read_falls_back_to_a_value_in_code(yaml_defaults):
    fallbacks = {key: where for key, where in _source_matches(FALLBACK).items()
                 if key in yaml_defaults and yaml_defaults[key] is not None}
    assert not fallbacks, (f"these reads fall back to a value in code although a yaml defines a default: drop the "
                           f"fallback (the yaml is the one source of defaults): {fallbacks}")


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
