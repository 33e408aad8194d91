"""Checks that run before any work: settings (:func:`check_config`, :func:`check_value`), unknown keys
(:func:`check_unknown_keys`) and the atomic files (:func:`check_atomic_files`).

Every error names the key (or file and line), the value and what is allowed; data defects that the run can
live with are warnings with counts, never silent repairs. This module imports neither torch nor RecBole at
import time, so the command line can check its arguments before loading them.
"""

import difflib
import functools
import glob
import logging
import math
import os
import re
import warnings

from recbole_genrec.errors import ConfigError  # noqa: F401  (raised here; re-exported)

logger = logging.getLogger(__name__)




class DataError(ValueError):
    """A defect of the atomic files that the chosen protocol cannot work with."""


# ----------------------------------------------------------------------------- single values
def _int(minimum):
    def check(value):
        if isinstance(value, float) and value.is_integer():  # 64.0 or 1e3: read as a float, used as a size
            return f"an integer >= {minimum} ({value!r} is a float: write {int(value)})"
        if isinstance(value, bool) or not isinstance(value, int):
            return f"an integer >= {minimum}"
        return None if value >= minimum else f"an integer >= {minimum}"
    return check


def _number(low, high=None, low_open=False, high_open=True):
    def check(value):
        text = (f"a number {'>' if low_open else '>='} {low}"
                + ("" if high is None else f" and {'<' if high_open else '<='} {high}"))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return text
        if value < low or (low_open and value == low):
            return text
        if high is not None and (value > high or (high_open and value == high)):
            return text
        return None
    return check


def _choice(*options):
    def check(value):
        return None if value in options else f"one of {list(options)}"
    return check


def _codebook_size(value):
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 2 for v in values):
        return "an integer >= 2, or a list of them (one per level)"
    return None


def _mapping(value):
    return None if value is None or isinstance(value, dict) else "a dict, e.g. {epochs: 200, lr: 0.001}"


def _template(value):
    if isinstance(value, str):
        return None
    return ("a text such as 'Title: {title}' (on the command line a bare {x} is read as a YAML mapping: quote it, "
            "--text_template=\"'{title}'\")")


def _teacher(value):
    from recbole_genrec.safety import check_teacher

    return check_teacher(value)


def _flag(value):
    return None if isinstance(value, bool) else "True or False"


RULES = {
    "d_model": _int(1), "d_ff": _int(1), "d_kv": _int(1), "num_heads": _int(1),
    "num_encoder_layers": _int(1), "num_decoder_layers": _int(1),
    "sid_levels": _int(1), "sid_codebook_size": _codebook_size, "sid_params": _mapping,
    "sid_method": _choice("rqvae", "rkmeans", "hkmeans", "opq"),
    "sid_collision": _choice("extra_level", "sinkhorn", "none"),
    "beam_size": _int(1), "beam_batch_size": _int(1), "user_token_buckets": _int(1),
    "MAX_ITEM_LIST_LENGTH": _int(1), "train_batch_size": _int(1), "eval_batch_size": _int(1),
    "epochs": _int(0), "eval_step": _int(1), "stopping_step": _int(0), "warmup_steps": _int(0),
    "text_max_length": _int(1), "text_batch_size": _int(1),
    "learning_rate": _number(0, low_open=True), "dropout_rate": _number(0, 1), "weight_decay": _number(0),
    "coldstart_epsilon": _number(0, 1, high_open=False),
    "text_template": _template, "teacher": _teacher, "drop_duplicates": _flag, "trust_checkpoint": _flag,
    "seq_train_rows": _choice("prefixes", "sequences"),
    "n_embd": _int(1), "n_layer": _int(1), "n_head": _int(1), "n_inner": _int(1), "embd_pdrop": _number(0, 1),
    "attn_pdrop": _number(0, 1), "resid_pdrop": _number(0, 1), "rpg_temperature": _number(0, low_open=True),
    "rpg_decoding": _choice("exact", "graph"), "rpg_num_beams": _int(1), "rpg_n_edges": _int(1),
    "rpg_propagation_steps": _int(1), "rpg_graph_chunk_size": _int(1),
}
_NOT_COUNTS = re.compile(r"ratio|resolution|thre?shold|^w_max$|^q$")  # integer defaults of real-valued settings


@functools.lru_cache(maxsize=1)
def integer_keys():
    """Keys whose every default in RecBole's and the plugin's yaml files is an integer (sizes, counts, steps)."""
    import yaml

    from recbole_genrec.model_index import package_dir  # no import of torch or RecBole: the CLI checks with this

    ours = package_dir("recbole_genrec")  # the plugin's yaml: inside the wheel, or properties/ of a checkout
    kinds = {}
    for root in (os.path.join(package_dir("recbole"), "properties"), os.path.join(ours, "properties"),
                 os.path.join(os.path.dirname(ours), "properties")):
        for path in glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True):
            try:
                with open(path, encoding="utf-8") as f:
                    data = yaml.safe_load(f)
            except (OSError, yaml.YAMLError):
                continue
            for key, value in (data.items() if isinstance(data, dict) else ()):
                if value is not None:
                    kinds.setdefault(str(key), set()).add(type(value))
    return frozenset(k for k, types in kinds.items() if types == {int} and not _NOT_COUNTS.search(k))


def check_value(key, value):
    """Raise :class:`ConfigError` when ``value`` is not allowed for ``key`` (keys without a rule pass)."""
    rule = RULES.get(key) or (_int(0) if key in integer_keys() and isinstance(value, float) else None)
    problem = rule(value) if rule is not None and value is not None else None
    if problem:
        raise ConfigError(f"{key}={value!r} is not allowed: {key} must be {problem} "
                          f"(e.g. --{key}=... on the command line or `{key}: ...` in a config file)")


def benchmark_parts(config):
    """The file-name suffixes of a dataset given as split files (``benchmark_filename``), else ``None``."""
    parts = config["benchmark_filename"]  # RecBole's overall.yaml: ~
    if not parts:
        return None
    return [parts] if isinstance(parts, str) else list(parts)


def check_config(config):
    """Every rule of :data:`RULES` on ``config``, then the rules that tie keys together."""
    from recbole_genrec.safety import check_save_settings

    for key in RULES:
        if key in config:
            check_value(key, config[key])
    check_beam(config)
    if config["coldstart_epsilon"] is not None:
        _check_coldstart_epsilon(config)
    for key, value in (getattr(config, "external_config_dict", None) or {}).items():
        if key not in RULES:  # the user's own values of integer settings (a float there fails only later)
            check_value(key, value)
    check_save_settings(config)
    check_metrics(config["metrics"], config["valid_metric"])
    if "sid" in list(config["genrec_features"]):
        levels, sizes = config["sid_levels"], config["sid_codebook_size"]
        if isinstance(sizes, (list, tuple)) and levels is not None and len(sizes) != levels:
            raise ConfigError(f"sid_codebook_size={list(sizes)} has {len(sizes)} entries but sid_levels={levels}: "
                              f"give one size per level or a single integer")
        check_sid_params(config["sid_method"], config["sid_params"])
        if config["sid_method"] == "opq":
            check_opq(config)
    if config["n_embd"] is not None and config["n_head"] is not None and config["n_embd"] % config["n_head"]:
        raise ConfigError(f"n_embd={config['n_embd']} is not divisible by n_head={config['n_head']}: every attention "
                          f"head takes n_embd / n_head dimensions")


def check_opq(config):
    """OPQ codes: codebook sizes a power of two (log2(K)-bit PQ codes), the number of codebooks dividing the
    vectors they quantize (``pca_dim`` when set, else the text encoder's output size when it can be read)."""
    sizes, levels = config["sid_codebook_size"], config["sid_levels"]
    sizes = list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]
    if any(k & (k - 1) for k in sizes) or len(set(sizes)) != 1:
        raise ConfigError(f"sid_codebook_size={config['sid_codebook_size']} is not allowed with sid_method=opq: "
                          f"every codebook has the same size, a power of two (PQ codes are log2(K)-bit integers), "
                          f"e.g. 256")
    params = config["sid_params"]
    dim, what = (params.get("pca_dim") if isinstance(params, dict) else None) or None, "pca_dim"
    if dim is None:
        dim, what = _text_embedding_dim(config), f"the output size of text_encoder={config['text_encoder']!r}"
    if dim is not None and levels and dim % levels:
        raise ConfigError(f"sid_levels={levels} does not divide {what} ({dim}): OPQ cuts every vector into "
                          f"sid_levels equal sub-vectors; choose sid_levels among the divisors of {dim} or set "
                          f"sid_params {{pca_dim: N}} with N a multiple of {levels}")


def _text_embedding_dim(config):
    """The text encoder's output size from its config files (``None`` when it cannot be read without loading it)."""
    import json

    if str(config["item_embedding_source"]) != "text":
        return None
    try:
        from recbole_genrec.preprocess.text_encoder import resolve_encoder_path

        path = resolve_encoder_path(config["text_encoder"])
        dense = sorted(glob.glob(os.path.join(path, "*_Dense", "config.json")))
        with open(dense[-1] if dense else os.path.join(path, "config.json"), encoding="utf-8") as f:
            values = json.load(f)
    except (OSError, ValueError, ImportError):
        return None
    dim = values.get("out_features") if dense else values.get("hidden_size", values.get("d_model"))
    return int(dim) if isinstance(dim, int) else None


def _check_coldstart_epsilon(config):
    epsilon = config["coldstart_epsilon"]
    if not config["genrec_coldstart"]:
        raise ConfigError(f"coldstart_epsilon={epsilon} ranks held-out items, but genrec_coldstart is False: set "
                          f"genrec_coldstart: True, or coldstart_epsilon: ~")
    model_class = getattr(config, "model_class", None)  # RecBole's Config holds the class it looked up
    if not callable(getattr(model_class, "beam_search", None)):  # the TIGER family decodes semantic IDs by beam
        raise ConfigError(f"coldstart_epsilon={epsilon} needs a model that decodes semantic IDs by beam search "
                          f"(TIGER, DiscRec, PRORec), not {config['model']}: set coldstart_epsilon: ~")


def check_beam(config):
    """Generative models (every model with ``beam_size``, PRORec included) return ``beam_size`` items per user."""
    if config["beam_size"] is None or not config["topk"]:
        return
    top = max(config["topk"]) if isinstance(config["topk"], (list, tuple)) else config["topk"]
    if config["beam_size"] < top:
        raise ConfigError(f"beam_size={config['beam_size']} is smaller than max(topk)={top}: beam search "
                          f"returns beam_size items per user; set beam_size >= {top} or lower topk")


def sid_param_names(method):
    """Keyword arguments the tokenizer ``method`` accepts in ``sid_params``."""
    from recbole_genrec.tokenizers import TOKENIZERS, tokenizer_params

    if method not in TOKENIZERS:
        raise ConfigError(f"sid_method={method!r} is not allowed: sid_method must be one of {sorted(TOKENIZERS)}")
    return tokenizer_params(method)


def check_sid_params(method, params):
    """Raise :class:`ConfigError` naming unknown keys of ``sid_params`` and the ones ``method`` accepts."""
    if not params:
        return
    check_value("sid_params", params)
    allowed = sid_param_names(method) + ["max_extra"]
    unknown = [k for k in params if k not in allowed]
    if unknown:
        hints = {k: difflib.get_close_matches(k, allowed, n=1) for k in unknown}
        hint = "; ".join(f"{k!r} (did you mean {h[0]!r}?)" if h else repr(k) for k, h in hints.items())
        raise ConfigError(f"sid_params has keys that sid_method={method!r} does not accept: {hint}. "
                          f"Allowed keys: {allowed}")


# ----------------------------------------------------------------------------- unknown keys
def _yaml_keys(pattern):
    import yaml

    keys = set()
    for path in glob.glob(pattern, recursive=True):
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict):
            keys.update(str(k) for k in data)
    return keys


_CONFIG_READ = re.compile(r"""config\[\s*["']([A-Za-z_][A-Za-z0-9_]*)["']\s*\]""")


def _keys_read_in(folder):
    keys = set()
    for path in glob.glob(os.path.join(folder, "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8", errors="replace") as f:
            keys.update(_CONFIG_READ.findall(f.read()))
    return keys


@functools.lru_cache(maxsize=1)
def known_keys():
    """Keys of every RecBole and plugin yaml, plus every key either package reads from a config by name."""
    from recbole_genrec.model_index import package_dir, properties_dir

    recbole_dir, ours = package_dir("recbole"), package_dir("recbole_genrec")
    keys = _yaml_keys(os.path.join(recbole_dir, "properties", "**", "*.yaml"))
    keys |= _yaml_keys(os.path.join(properties_dir(), "**", "*.yaml"))
    keys |= _keys_read_in(recbole_dir) | _keys_read_in(ours)
    keys |= {"model", "dataset", "config_files", "nproc", "world_size", "ip", "port", "offset", "local_rank"}
    return frozenset(keys)


def unknown_keys(keys, extra_known=()):
    known = known_keys() | set(extra_known)
    return [k for k in keys if k not in known]


def edit_distance(a, b, limit=None):
    """Levenshtein distance of two strings (insertions, deletions, substitutions); stops early past ``limit``."""
    if abs(len(a) - len(b)) > (limit if limit is not None else len(a) + len(b)):
        return abs(len(a) - len(b))
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def closest(name, candidates, n=3, max_distance=2, similar=True):
    """Up to ``n`` of ``candidates`` nearest to ``name``, case-insensitive (``tiger`` -> ``TIGER``): those within edit
    distance ``max_distance``, nearest first, then (``similar``) difflib's close matches of longer names."""
    originals = {c.lower(): c for c in candidates}
    lower = name.lower()
    scored = sorted((edit_distance(lower, c, max_distance), c) for c in originals)
    near = [originals[c] for d, c in scored if d <= max_distance]
    if similar:
        near += [originals[c] for c in difflib.get_close_matches(lower, list(originals), n=n, cutoff=0.6)
                 if originals[c] not in near]
    return near[:n]


def check_unknown_keys(keys, extra_known=(), allow=False, warn=True):
    """A key that neither RecBole nor the plugin knows, within edit distance 2 of a known key (1 for a key of up to
    5 characters, where 2 edits reach unrelated words: ``note`` -> ``nogb``), is a typo: raise :class:`ConfigError`
    naming both (``allow=True``, the ``allow_unknown_keys`` setting, makes it a warning). Other unknown keys (a
    user's own) warn once, with the closest known key when there is one."""
    known = sorted(known_keys() | set(extra_known))
    for key in unknown_keys(keys, extra_known):
        typo = closest(key, known, n=1, max_distance=2 if len(key) > 5 else 1, similar=False)
        if typo and not allow:
            raise ConfigError(f"config key {key!r} is unknown to RecBole and recbole_genrec: did you mean "
                              f"{typo[0]!r}? Fix the name, or pass --allow_unknown_keys=True (config: "
                              f"`allow_unknown_keys: True`) to keep a key of your own with a warning")
        if not warn:
            continue
        close = typo or difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        message = f"config key {key!r} is unknown to RecBole and recbole_genrec and has no effect{hint}"
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)


# ----------------------------------------------------------------------------- names
@functools.lru_cache(maxsize=1)
def metric_names():
    """RecBole's metric classes (``Recall``, ``NDCG``, ...), read from its source without importing it."""
    import ast

    from recbole_genrec.model_index import package_dir

    path = os.path.join(package_dir("recbole"), "evaluator", "metrics.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    return sorted(node.name for node in tree.body if isinstance(node, ast.ClassDef))


def check_metrics(metrics=None, valid_metric=None):
    """Raise :class:`ConfigError` for a metric RecBole does not have, with the closest names (case-insensitive,
    as RecBole reads them)."""
    known = metric_names()
    lower = {m.lower() for m in known}
    given = [] if metrics is None else [metrics] if isinstance(metrics, str) else list(metrics)
    checks = [("metrics", str(m)) for m in given]
    if valid_metric:
        checks.append(("valid_metric", str(valid_metric).split("@")[0]))
    for key, name in checks:
        if name.lower() not in lower:
            near = closest(name, known)
            hint = f"did you mean {' or '.join(repr(n) for n in near)}? " if near else ""
            raise ConfigError(f"{key}: unknown metric {name!r}; {hint}RecBole's metrics are {known}")


def dataset_roots(data_path=None):
    """Folders a dataset's folder is looked up in, in :func:`recbole_genrec.data.resolve_data_path`'s order:
    ``data_path`` (RecBole's default ``dataset/``), ``$RECBOLE_GENREC_DATA``, ``../shared/data``, ``shared/data``
    and the datasets inside the recbole wheel."""
    from recbole_genrec.model_index import package_dir

    roots = [data_path or "dataset/", os.environ.get("RECBOLE_GENREC_DATA"), os.path.join("..", "shared", "data"),
             os.path.join("shared", "data"), os.path.join(package_dir("recbole"), "dataset_example")]
    return [r for r in roots if r]


def _has_interactions(folder, dataset):
    return os.path.isdir(folder) and any(n.startswith(dataset + ".") and n.endswith(".inter") for n in os.listdir(folder))


def check_dataset_name(dataset, data_path=None):
    """Raise :class:`ConfigError` when no folder ``<root>/<dataset>`` with an ``.inter`` file exists in
    :func:`dataset_roots`, with the closest dataset names found there (case-insensitive)."""
    roots = dataset_roots(data_path)
    if any(_has_interactions(os.path.join(root, dataset), dataset) for root in roots):
        return
    found = sorted({name for root in roots if os.path.isdir(root) for name in os.listdir(root)
                    if _has_interactions(os.path.join(root, name), name)})
    near = closest(dataset, found)
    hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
    raise ConfigError(f"dataset {dataset!r} not found{hint} Datasets found: {found}, in "
                      f"{[os.path.abspath(r) for r in roots]}. For another dataset pass --data_path=<folder that "
                      f"contains {dataset}/{dataset}.inter> or set RECBOLE_GENREC_DATA")


def check_command_line(overrides, config_files=None, dataset=None):
    """What the command line can check before torch or RecBole is imported: unknown keys (a typo within edit
    distance 2 is an error unless ``allow_unknown_keys``), values, metric names and, when ``dataset`` is given, the
    dataset's folder. Returns the settings of the config files and the overrides."""
    from recbole_genrec.safety import read_config_files

    settings = read_config_files(config_files)  # as Config reads them: 1e-3 is a number
    settings.update(overrides)
    allow = settings.get("allow_unknown_keys", False)
    check_unknown_keys(list(settings), allow=allow, warn=False)  # the warnings come from Config, once
    for key, value in settings.items():
        check_value(key, value)
    check_metrics(settings.get("metrics"), settings.get("valid_metric"))
    if dataset is not None:
        check_dataset_name(dataset, settings.get("data_path"))
    return settings


# ----------------------------------------------------------------------------- atomic files
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


def read_header(path, separator="\t", encoding="utf-8"):
    """``[(name, type), ...]`` of an atomic file's header; :class:`DataError` naming file, line and form."""
    with open(path, encoding=encoding or "utf-8") as f:
        line = f.readline().rstrip("\r\n")
    fields = []
    for column, item in enumerate(line.split(separator or "\t"), start=1):
        name, _, ftype = item.partition(":")
        if not name or ftype not in FIELD_TYPES:
            problem = "has no type" if not ftype else f"has type {ftype!r}"
            raise DataError(f"{path}, line 1, column {column}: header field {item!r} {problem}; every column must "
                            f"be written name:type with type one of {list(FIELD_TYPES)} (e.g. user_id:token, "
                            f"timestamp:float), separated by the field_separator {separator!r}")
        fields.append((name, ftype))
    return fields


def _atomic_files(folder, dataset):
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.startswith(dataset + ".") and os.path.isfile(os.path.join(folder, n)) and "." in n[len(dataset):]
                  and not n.endswith((".json", ".yaml", ".md", ".txt", ".npy", ".zip")))


def _loaded(config, suffix, names):
    load_col = config["load_col"]
    if load_col is None:
        wanted = set(names)
    elif suffix not in load_col:
        wanted = set()
    elif load_col[suffix] == "*":
        wanted = set(names)
    else:
        wanted = set(load_col[suffix])
    unload = set(((config["unload_col"] or {}).get(suffix)) or [])
    return [n for n in names if n in wanted and n not in unload]


def time_ordered(config):
    args = config["eval_args"]
    return str(args.get("order", "RO")).upper() == "TO"


def check_atomic_files(config):
    """Check the dataset's atomic files against the protocol, before anything is built.

    Errors (:class:`DataError`): a UTF-8 byte-order mark, bytes that are not ``encoding`` or an unclosed quote
    (:func:`check_text_file`); a header field without a valid type; an interaction file without rows or without
    the user or item column; a time-ordered protocol (``eval_args`` order ``TO``, which every sequential model
    needs) without a loaded time field; ``nan`` timestamps under a time-ordered protocol; duplicated interaction
    rows under leave-one-out. Warnings with counts: ``nan`` timestamps otherwise, duplicated interaction rows
    otherwise, duplicate item ids in the item file, interactions whose items have no text (for models that encode
    item text).
    """
    import pandas as pd

    from recbole.utils import ModelType

    dataset, folder = config["dataset"], config["data_path"]
    sep, encoding = config["field_separator"], config["encoding"] or "utf-8"
    headers, rows = {}, {}
    for path in _atomic_files(folder, dataset):
        suffix = os.path.basename(path)[len(dataset) + 1:]  # "inter", or "train.inter" (benchmark_filename)
        rows[suffix] = check_text_file(path, sep, encoding)
        headers[suffix] = (path, read_header(path, sep, encoding))
    report = {}
    for suffix, (path, fields) in headers.items():
        if suffix == "inter" or suffix.endswith(".inter"):
            _check_interaction_file(config, path, [n for n, _ in fields], rows[suffix])
    report["duplicate_interactions"] = _check_duplicates(config, headers, sep, encoding)
    inter = headers.get("inter")
    if inter is None:
        return report
    inter_path, inter_fields = inter
    names = [n for n, _ in inter_fields]
    loaded = _loaded(config, "inter", names)
    time_field = config["TIME_FIELD"]
    sequential = config["MODEL_TYPE"] == ModelType.SEQUENTIAL
    if sequential or time_ordered(config):
        if not time_field or time_field not in loaded:
            where = (f"is not a column of {inter_path}" if time_field not in names
                     else f"is a column of {inter_path} but load_col does not load it (load_col: {config['load_col']})")
            need = (f"{config['model']} is a sequential model: it reads each user's history in time order"
                    if sequential else "eval_args order 'TO' sorts each user's interactions by time")
            fix_load = (f" Add '{time_field}' to load_col ({{inter: [{', '.join(loaded + [str(time_field)])}]}})."
                        if time_field in names else "")
            raise DataError(
                f"{need}, but the time field TIME_FIELD={time_field!r} {where} (columns: {names}).{fix_load} "
                f"Without timestamps, use a general model (e.g. --model=BPR, LightGCN or AlphaRec) with a random "
                f"split (--config_files=properties/protocol/random-8-1-1.yaml)."
            )
    if time_field and time_field in loaded:
        column = pd.read_csv(inter_path, sep=sep, usecols=[names.index(time_field)], dtype=str, header=0,
                             keep_default_na=False, encoding=encoding, engine="c").iloc[:, 0]
        values = pd.to_numeric(column.str.strip().replace("", "nan"), errors="coerce")
        bad = int(values.isna().sum())
        report["nan_timestamps"] = bad
        if bad:
            message = (f"{bad} of {len(values)} interactions in {inter_path} have no valid timestamp "
                       f"('{time_field}' empty, nan or not a number); RecBole fills them with the column mean")
            if time_ordered(config):
                raise DataError(message + ", which re-orders the histories and changes the test targets under "
                                "the time-ordered split (eval_args order 'TO'). Fix or drop those rows.")
            logger.warning(message + ".")
            warnings.warn(message + ".", UserWarning, stacklevel=2)
    item = headers.get("item")
    iid = config["ITEM_ID_FIELD"]
    if item is not None and iid:
        item_path, item_fields = item
        item_names = [n for n, _ in item_fields]
        if iid in item_names:
            ids = pd.read_csv(item_path, sep=sep, usecols=[item_names.index(iid)], dtype=str, header=0,
                              keep_default_na=False, encoding=encoding, engine="c").iloc[:, 0]
            duplicated = ids[ids.duplicated(keep=False)]
            report["duplicate_item_ids"] = int(duplicated.nunique())
            if len(duplicated):
                extra = len(duplicated) - duplicated.nunique()
                message = (f"{duplicated.nunique()} item ids appear more than once in {item_path} "
                           f"({extra} extra rows, e.g. {list(duplicated.unique()[:3])}); "
                           f"RecBole and the text encoder keep the first row of each")
                logger.warning(message)
                warnings.warn(message, UserWarning, stacklevel=2)
    features = config["genrec_features"]
    if "text_emb" in list(features) and iid in names and str(config["item_embedding_source"]) == "text":
        report["interactions_without_text"] = _interactions_without_text(config, inter_path, names, sep, encoding)
    return report


def _line_and_column(raw, offset):
    return raw.count(b"\n", 0, offset) + 1, offset - (raw.rfind(b"\n", 0, offset) + 1) + 1


def check_text_file(path, separator="\t", encoding="utf-8"):
    """The number of rows of an atomic file (lines under the header); :class:`DataError` naming file, line and
    column for a UTF-8 byte-order mark, bytes that are not ``encoding`` and a quote that its line does not close."""
    with open(path, "rb") as f:
        raw = f.read()
    encoding = encoding or "utf-8"
    if raw.startswith(b"\xef\xbb\xbf") and encoding.replace("_", "-").lower() in ("utf-8", "utf8"):
        raise DataError(f"{path}, line 1, column 1: the file starts with a UTF-8 byte-order mark (BOM), which RecBole "
                        f"reads as part of the first column name; save the file as UTF-8 without a BOM, or set "
                        f"encoding: utf-8-sig")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line, column = _line_and_column(raw, err.start)
        raise DataError(f"{path}, line {line}, column {column}: byte {raw[err.start:err.start + 1]!r} is not valid "
                        f"{encoding}; convert the file to {encoding} (e.g. iconv -f latin1 -t utf-8), or set encoding: "
                        f"to the one it is written in (e.g. encoding: latin-1)") from None
    lines = text.splitlines()
    if '"' in text:  # RecBole's reader treats a field that starts with " as quoted, up to the closing "
        for number, line in enumerate(lines, start=1):
            column = 1
            for field in line.split(separator or "\t"):
                if field.startswith('"') and (len(field) < 2 or not field.endswith('"')):
                    raise DataError(f"{path}, line {number}, column {column}: the value {field[:30]!r} opens a quote "
                                    f"that its line does not close, so RecBole would read on to the end of the file "
                                    f"as one value; remove the quote or close it")
                column += len(field) + len(separator or "\t")
    return sum(1 for line in lines[1:] if line.strip())


def _check_interaction_file(config, path, names, rows):
    """An interaction file has rows, and the user and item columns that the config names (and loads)."""
    if rows == 0:
        raise DataError(f"{path} has a header but no rows; add the interactions, one per line under the header")
    loaded = _loaded(config, "inter", names)
    for key in ("USER_ID_FIELD", "ITEM_ID_FIELD"):
        field = config[key]
        if not field:
            continue
        if field not in names:
            raise DataError(f"{path}, line 1: {key}={field!r} is not a column of the header (columns: {names}); add "
                            f"the column, or set {key} to the column that holds the ids (--{key}=<column>)")
        if field not in loaded:
            raise DataError(f"{path}: {key}={field!r} is a column but load_col does not load it (load_col: "
                            f"{config['load_col']}); add '{field}' to load_col")


def _check_duplicates(config, headers, sep, encoding):
    """Count the interaction rows equal to an earlier row in every loaded column (over all parts of
    ``benchmark_filename``). An error under leave-one-out (copies of a test target stay in training), a warning
    otherwise; ``drop_duplicates: True`` drops them on load (:mod:`recbole_genrec.compat`)."""
    import pandas as pd

    parts = benchmark_parts(config)
    suffixes = [f"{p}.inter" for p in parts] if parts else ["inter"]
    frames, paths = [], []
    for suffix in suffixes:
        if suffix not in headers:
            continue
        path, fields = headers[suffix]
        names = [n for n, _ in fields]
        loaded = _loaded(config, "inter", names)
        if not loaded:
            continue
        frame = pd.read_csv(path, sep=sep, usecols=[names.index(n) for n in loaded], dtype=str, header=0,
                            keep_default_na=False, encoding=encoding, engine="c")
        frames.append(frame.set_axis(loaded, axis=1))
        paths.append(path)
    if not frames:
        return 0
    table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    duplicated = table.duplicated(keep="first")
    count = int(duplicated.sum())
    if not count:
        return 0
    distinct = int(table[duplicated].drop_duplicates().shape[0])
    example = table[duplicated].iloc[0].to_dict()
    where = " and ".join(paths)
    message = (f"{count} interaction rows of {where} repeat an earlier row in every loaded column ({distinct} distinct "
               f"rows, e.g. {example}); copies of a row can land in both the training and the test split")
    if config["drop_duplicates"]:
        logger.info(message + "; drop_duplicates: True drops them")
        return count
    if "LS" in (config["eval_args"].get("split") or {}):
        raise DataError(message + " under leave-one-out (eval_args split LS), which inflates the test metrics. Remove "
                        "them from the file, or pass --drop_duplicates=True (drop_duplicates: True) to drop them")
    message += "; pass --drop_duplicates=True (drop_duplicates: True) to drop them"
    logger.warning(message)
    warnings.warn(message, UserWarning, stacklevel=3)
    return count


def _interactions_without_text(config, inter_path, names, sep, encoding):
    import pandas as pd

    from recbole_genrec.preprocess import text

    iid = config["ITEM_ID_FIELD"]
    try:
        table, field_types = text.read_item_table(config, config["data_path"])
    except FileNotFoundError:
        return None  # the hook reports the missing item file
    fields, _ = text.resolve_text_spec(config, field_types)
    if iid not in table.columns:
        return None
    table = table.drop_duplicates(subset=iid, keep="first")
    has_text = table[fields].apply(lambda col: col.str.strip() != "").any(axis=1)
    with_text = set(table.loc[has_text, iid])
    items = pd.read_csv(inter_path, sep=sep, usecols=[names.index(iid)], dtype=str, header=0,
                        keep_default_na=False, encoding=encoding, engine="c").iloc[:, 0]
    lacking = ~items.isin(with_text)
    count = int(lacking.sum())
    if count:
        message = (f"{count} of {len(items)} interactions in {inter_path} ({items[lacking].nunique()} items) are "
                   f"on items without text in {fields} (no row in the item file, or empty fields); those items are "
                   f"encoded from the fallback text 'item <token>'")
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)
    return count
