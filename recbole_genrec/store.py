"""The dataset store: the one module that knows the layout of ``<cache_root>/<dataset>/``.

    items.json                          item tokens that survive RecBole's filtering
    embeddings-<source>.npy             item embeddings (source ``text``, or e.g. ``collab`` from a model)
    codes-<sid16>.npy                   semantic IDs, one file per semantic-ID key (first 16 hex digits)
    diagnostics-<sid16>.json            their diagnostics;  code_usage-<sid16>.png: their plot (``--plot``)
    tokenizer-<sid16>.safetensors/.json the fitted tokenizer of those codes (encodes new items)
    features/<emb|sid>-<key16>.<suffix> RecBole feature files, one per content key
    views/<view16>/                     RecBole's ``data_path`` for one feature combination: symlinks only
    prorec/<key16>/                     PRORec's stage-I artefacts
    runs/<name>/                        states of resumable runs
    <artifact>.meta.json, .lock         sidecars (key + sha256) and the ``flock`` target

Start at :func:`store_dir`. Writing, hashing and locking are :mod:`recbole_genrec.preprocess.cache`'s; views are
built by :mod:`recbole_genrec.preprocess.layout`.
"""

import json
import logging
import os

import numpy as np

from recbole_genrec.preprocess import cache

logger = logging.getLogger(__name__)

KEY_CHARS = 16  # hex digits of a content key used in file names (64 bits)
FEATURES_DIR, VIEWS_DIR, PROREC_DIR, RUNS_DIR = "features", "views", "prorec", "runs"
ENV_CACHE = "RECBOLE_GENREC_CACHE"
TOKENIZER_WEIGHTS, TOKENIZER_META = ".safetensors", ".json"


def short(key):
    """The first :data:`KEY_CHARS` hex digits of a content key (the full key is in the sidecar)."""
    return key[:KEY_CHARS]


# ----------------------------------------------------------------------------- folders
def cache_root(config):
    """``config['genrec_cache_dir']``, else ``$RECBOLE_GENREC_CACHE``, else ``~/.cache/recbole_genrec``."""
    root = config["genrec_cache_dir"] or os.environ.get(ENV_CACHE) or os.path.join("~", ".cache", "recbole_genrec")
    return os.path.abspath(os.path.expanduser(str(root)))


def store_dir(config):
    """The dataset's store folder ``<cache_root>/<dataset>/`` (created)."""
    path = os.path.join(cache_root(config), config["dataset"])
    os.makedirs(path, exist_ok=True)
    return path


def run_dir(config_or_cache_dir, dataset, name):
    """``<cache_root>/<dataset>/runs/<name>/`` (created): the state of one resumable run. The first argument is a
    config or a cache root folder."""
    root = config_or_cache_dir if isinstance(config_or_cache_dir, (str, os.PathLike)) else cache_root(
        config_or_cache_dir)
    path = os.path.join(os.path.abspath(os.path.expanduser(str(root))), str(dataset), RUNS_DIR, str(name))
    os.makedirs(path, exist_ok=True)
    return path


def prorec_root(store):
    """``<store>/prorec/``: PRORec's stage-I folders."""
    return os.path.join(store, PROREC_DIR)


def prorec_dir(store, key):
    """``<store>/prorec/<key16>/``."""
    return os.path.join(prorec_root(store), short(key))


def prorec_tokenizer_stem(folder, source):
    """``<stage-I folder>/tokenizer-<source>`` (add ``.safetensors`` / ``.json``)."""
    return os.path.join(folder, f"tokenizer-{source}")


def prorec_paths(folder, sources):
    """Every stage-I artefact of ``<store>/prorec/<key16>/``: ``{name or (kind, source): path}``."""
    paths = {"id_emb": os.path.join(folder, "id_emb.npy"), "adapted_text": os.path.join(folder, "adapted_text.npy"),
             "report": os.path.join(folder, "stage1.json"),
             "adapter": os.path.join(folder, "adapter.safetensors")}  # encodes new items (PRORec.add_items)
    for source in sources:
        paths["codes", source] = os.path.join(folder, f"codes-{source}.npy")
        stem = prorec_tokenizer_stem(folder, source)
        paths["tokenizer", source] = stem + TOKENIZER_WEIGHTS
        paths["tokenizer-meta", source] = stem + TOKENIZER_META
    return paths


def views_dir(store):
    """``<store>/views/``."""
    return os.path.join(store, VIEWS_DIR)


# ----------------------------------------------------------------------------- keyed artifacts
def items_path(store):
    return os.path.join(store, "items.json")


def embeddings_path(store, source):
    """``<store>/embeddings-<source>.npy``."""
    return os.path.join(store, f"embeddings-{source}.npy")


def codes_path(store, sid_key):
    """``<store>/codes-<sid16>.npy``."""
    return os.path.join(store, f"codes-{short(sid_key)}.npy")


def diagnostics_path(store, sid_key):
    """``<store>/diagnostics-<sid16>.json``."""
    return os.path.join(store, f"diagnostics-{short(sid_key)}.json")


def plot_path(store, sid_key):
    """``<store>/code_usage-<sid16>.png``."""
    return os.path.join(store, f"code_usage-{short(sid_key)}.png")


def feature_path(store, prefix, suffix, file_key):
    """``<store>/features/<prefix>-<key16>.<suffix>``, e.g. ``features/sid-0123456789abcdef.gensid``."""
    return os.path.join(store, FEATURES_DIR, f"{prefix}-{short(file_key)}.{suffix}")


def tokenizer_stem(store, sid_key):
    """``<store>/tokenizer-<sid16>`` (add ``.safetensors`` / ``.json``)."""
    return os.path.join(store, f"tokenizer-{short(sid_key)}")


# ----------------------------------------------------------------------------- fitted tokenizers


def save_tokenizer(stem, fitted, key, extra=None):
    """Write a :class:`~recbole_genrec.tokenizers.artifact.FittedTokenizer` as ``<stem>.safetensors`` +
    ``<stem>.json`` (atomic, with content-hash sidecars); returns the paths."""
    blob, meta = fitted.to_bytes()
    meta = {**meta, "key": key, **(extra or {})}
    weights, meta_path = stem + TOKENIZER_WEIGHTS, stem + TOKENIZER_META
    cache.write_artifact(weights, lambda f: f.write(blob), key)
    cache.save_json(meta_path, meta, key)
    return weights, meta_path


def load_tokenizer(stem, key=None):
    """Read a stored tokenizer; both files are checked against their sidecars (and ``key`` when given)."""
    from recbole_genrec.tokenizers.artifact import FittedTokenizer

    weights, meta_path = stem + TOKENIZER_WEIGHTS, stem + TOKENIZER_META
    for path in (weights, meta_path):
        sidecar = cache.read_meta(path)
        status = cache.check_artifact(path, key if key is not None else (sidecar or {}).get("key"))
        if status != "hit":
            raise FileNotFoundError(
                f"stored tokenizer {path} is {status}; rebuild it by running the preprocessing hook again "
                f"(python -m recbole_genrec.preprocess with the same dataset and sid_* settings)")
    with open(weights, "rb") as f:
        blob = f.read()
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    return FittedTokenizer.from_bytes(blob, meta, source=meta_path)


def load_tokenizer_for_config(config):
    """The tokenizer the hook fitted for ``config`` (a config the hook has prepared, e.g. a model's)."""
    hashes = config["genrec_feature_hashes"] or {}
    if not hashes.get("sid"):
        raise ValueError("this config has no semantic IDs prepared by the hook (genrec_features lacks 'sid'), so "
                         "there is no stored tokenizer to encode new items with")
    return load_tokenizer(tokenizer_stem(store_dir(config), hashes["sid"]), hashes["sid"])


# ----------------------------------------------------------------------------- external embeddings
def embeddings_key(source_name, item_tokens, key_extra=None):
    """Cache key of an item-embedding matrix written by a model (e.g. CollabEmbed)."""
    return cache.content_key({"source": source_name, "items": cache.strings_hash(item_tokens),
                              "extra": key_extra or {}})


def save_item_embeddings(config, source_name, item_tokens, matrix, key_extra=None):
    """Store item embeddings [n_items, D] produced by a model as ``embeddings-<source>.npy``.

    ``item_tokens`` are the external item tokens of the rows (no ``[PAD]`` row). The hook uses
    them when ``item_embedding_source: <source_name>``. ``key_extra`` (dict) records what
    produced the matrix (model, checkpoint, ...) and becomes part of the key. Returns the path.
    """
    if source_name == "text":
        raise ValueError("source name 'text' is reserved for the hook's own text embeddings")
    matrix = np.asarray(matrix, dtype=np.float32)  # [n_items, D]
    tokens = [str(t) for t in item_tokens]
    if matrix.ndim != 2 or matrix.shape[0] != len(tokens):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(tokens)} item tokens")
    if "[PAD]" in tokens:
        raise ValueError("item_tokens must not contain '[PAD]'; drop row 0 of RecBole-indexed matrices")
    store = store_dir(config)
    path = embeddings_path(store, source_name)
    key = embeddings_key(source_name, tokens, key_extra)
    with cache.locked(store):
        cache.save_npy(path, matrix, key, {"source": source_name, "item_tokens": tokens, "key_extra": key_extra or {}})
    logger.info(f"saved {matrix.shape[0]} x {matrix.shape[1]} item embeddings of source '{source_name}' to {path}")
    return path


def load_item_embeddings(store, source_name):
    """Read ``embeddings-<source>.npy`` written by :func:`save_item_embeddings`.

    Returns ``(item_tokens, matrix [n, D] float32, sha256, key_extra)``. Raises ``FileNotFoundError`` when it
    was never written and ``ValueError`` when it does not match its sidecar.
    """
    path = embeddings_path(store, source_name)
    meta = cache.read_meta(path)
    if not os.path.exists(path) or meta is None:
        raise FileNotFoundError(
            f"item_embedding_source '{source_name}' needs {path} (with its .meta.json), which does not "
            f"exist: run CollabEmbed first (it saves its item embeddings with "
            f"recbole_genrec.store.save_item_embeddings), or set item_embedding_source: text."
        )
    if cache.check_artifact(path, meta.get("key")) != "hit":
        raise ValueError(f"{path} does not match its checksum in {path + cache.META_SUFFIX}; rerun CollabEmbed to "
                         f"rewrite it")
    matrix = cache.load_npy(path).astype(np.float32)
    return list(meta["item_tokens"]), matrix, meta["sha256"], meta.get("key_extra") or {}
