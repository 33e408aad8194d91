"""The preprocessing hook: item text -> embeddings -> semantic IDs -> RecBole item features.

:func:`prepare_features` runs before RecBole builds the dataset (``recbole_genrec.data.create_dataset``).
For ``genrec_features: [text_emb]`` and/or ``[sid]`` it

1. finds the items RecBole will keep (a filter-only pass of RecBole's own ``Dataset``), so the
   feature files never add items that filtering dropped (they would become extra item ids);
2. builds (or reuses from the cache) item embeddings, from item text or from another source
   such as CollabEmbed (``item_embedding_source``), and the semantic IDs;
3. writes the feature files (``genemb_id:token  genemb:float_seq`` and
   ``gensid_id:token  gensid:float_seq``) into the dataset's store, named by their content key;
4. links a *view* folder for this combination of settings: symlinks to the original atomic files
   plus ``<dataset>.genemb`` / ``<dataset>.gensid`` -> the store's feature files;
5. points the config at the view and registers both files the RecBole way:
   ``additional_feat_suffix``, ``alias_of_item_id`` (same id space as ``item_id``, so rows follow
   RecBole's filtering and remapping) and ``preload_weight`` (dense matrices, never joined into
   interaction batches). Models read them with :mod:`recbole_genrec.preprocess.features`.

Storage (:mod:`recbole_genrec.store`): one store ``<cache_root>/<dataset>/`` per
dataset holds content-keyed, never-overwritten artifacts (``codes-<sid16>.npy``,
``features/sid-<key16>.gensid``, ...) and one immutable view per setting
(``views/<view16>/``). Switching settings back and forth reuses what was built before, and
concurrent runs with different settings each load their own files. Building happens under the
store's file lock; every artifact is content-hashed and rebuilt when stale or corrupt.
"""

import contextlib
import logging
import os
import tempfile
import time

import numpy as np
import pandas as pd
from recbole.data.dataset import Dataset

from recbole_genrec import store as dataset_store
from recbole_genrec.preprocess import cache, layout, text, text_encoder
from recbole_genrec.preprocess.fields import EMB_FIELD, EMB_ID, EMB_SUFFIX, FEATURES, SID_FIELD, SID_ID, SID_SUFFIX
from recbole_genrec import tokenizers
from recbole_genrec.tokenizers.artifact import FittedTokenizer

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Config keys that decide which items survive RecBole's loading and filtering.
_FILTER_KEYS = ("USER_ID_FIELD", "ITEM_ID_FIELD", "field_separator", "seq_separator", "encoding", "load_col",
                "unload_col", "rm_dup_inter", "val_interval", "filter_inter_by_user_or_item",
                "user_inter_num_interval", "item_inter_num_interval", "benchmark_filename", "TIME_FIELD")


# ============================================================================= entry point
def prepare_features(config, plot=False):
    """Build or reuse the features named in ``config['genrec_features']`` and register them.

    Returns ``None`` when no feature is requested, else a summary dict: ``overlay`` (the view
    folder RecBole reads, i.e. the new ``data_path``), ``store`` (the dataset's cache folder),
    ``codes_path`` (the semantic IDs used, ``None`` without ``sid``), shapes, codebook sizes,
    hashes, diagnostics, timings and cache decisions. ``plot=True`` also writes
    ``code_usage-<sid16>.png`` beside the codes.
    """
    features = requested_features(config)
    if not features:
        return None
    source_dir = config["genrec_source_data_path"] or config["data_path"]
    store = dataset_store.store_dir(config)
    summary = {"overlay": None, "store": store, "codes_path": None, "features": features, "cache": {}, "timings": {}}
    with cache.locked(store):
        tokens = surviving_item_tokens(config, source_dir, store, summary)  # [N] external tokens
        emb, emb_key = item_embeddings_for(config, source_dir, store, tokens, summary)  # [N, D]
        hashes = {"text_emb": emb_key, "embedding_held_out": summary.get("embedding_held_out")}
        feature_files = {}  # suffix -> the store's feature file the view links as <dataset>.<suffix>
        if "text_emb" in features:
            hashes["genemb_file"], feature_files[EMB_SUFFIX] = write_emb_file(store, tokens, emb, emb_key, summary)
        codebook_sizes = None
        if "sid" in features:
            codes, codebook_sizes, sid_key = semantic_ids_for(config, store, tokens, emb, emb_key, summary)
            hashes["sid"] = sid_key
            hashes["gensid_file"], feature_files[SID_SUFFIX] = write_sid_file(store, tokens, codes, sid_key, summary)
            if plot:
                summary["plot"] = write_plot(store, sid_key, codes, codebook_sizes)
        view = feature_view(config, source_dir, store, features, feature_files, hashes, summary)
    summary["overlay"] = view
    point_config(config, source_dir, view, features, codebook_sizes, hashes)
    summary.update({"n_items": len(tokens), "embedding_dim": int(emb.shape[1]), "codebook_sizes": codebook_sizes,
                    "hashes": hashes})
    return summary


def requested_features(config):
    """``config['genrec_features']`` as a list, checked against :data:`FEATURES`."""
    features = config["genrec_features"]
    if isinstance(features, str):
        features = [features]
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ValueError(f"genrec_features {unknown} unknown; use a subset of {list(FEATURES)}")
    return list(features)


# ============================================================================= items RecBole keeps
def _probe_class():
    class _FilterProbe(Dataset):
        """RecBole's Dataset stopped right after loading + filtering (no remapping)."""

        def _data_processing(self):
            self.feat_name_list = self._build_feat_name_list()
            if self.benchmark_filename_list is None:
                self._data_filtering()

    return _FilterProbe


@contextlib.contextmanager
def _plain_config(config, source_dir):
    """Temporarily point ``config`` at the source data without this hook's own features."""
    keys = ("data_path", "additional_feat_suffix", "load_col", "preload_weight", "alias_of_item_id")
    saved = {k: config[k] for k in keys}
    try:
        config["data_path"] = source_dir
        suffixes = [s for s in (config["additional_feat_suffix"] or []) if s not in (EMB_SUFFIX, SID_SUFFIX)]
        config["additional_feat_suffix"] = suffixes or None
        if config["load_col"] is not None:
            config["load_col"] = {k: v for k, v in config["load_col"].items() if k not in (EMB_SUFFIX, SID_SUFFIX)}
        config["preload_weight"] = None
        alias = [a for a in (config["alias_of_item_id"] or []) if a not in (EMB_ID, SID_ID)]
        config["alias_of_item_id"] = alias or None
        yield config
    finally:
        for k, v in saved.items():
            config[k] = v


def surviving_item_tokens(config, source_dir, store, summary):
    """External tokens of the items RecBole keeps after filtering, in RecBole's id order.

    Row ``i`` of this list becomes internal item id ``i + 1``. Cached in ``items.json``, keyed by
    the source files (path and content hash) and the loading/filtering config.
    """
    if not config["ITEM_ID_FIELD"]:
        raise ValueError("genrec_features need an ITEM_ID_FIELD")
    with _plain_config(config, source_dir):
        settings = {k: config[k] for k in _FILTER_KEYS}
    key = cache.content_key({"files": layout.source_files_identity(source_dir, config["dataset"]),
                             "config": settings, "format": FORMAT_VERSION})
    path = dataset_store.items_path(store)
    status = cache.check_artifact(path, key)
    cache.report_status(f"{os.path.basename(path)} (items kept by RecBole's filtering)", status)
    summary["cache"]["items"] = status
    if status == "hit":
        return cache.load_json(path)["item_tokens"]
    start = time.perf_counter()
    with _plain_config(config, source_dir):
        probe = _probe_class()(config)
    iid = probe.iid_field
    columns = [probe.inter_feat[iid].to_numpy()]
    if probe.item_feat is not None:
        columns.append(probe.item_feat[iid].to_numpy())
    tokens = [str(t) for t in pd.unique(np.concatenate(columns)) if isinstance(t, str) or not pd.isna(t)]
    summary["timings"]["filter_probe_s"] = round(time.perf_counter() - start, 3)
    cache.save_json(path, {"item_tokens": tokens}, key)
    logger.info(f"{len(tokens)} items survive RecBole's loading/filtering of '{config['dataset']}'")
    return tokens


# ============================================================================= embeddings
def _check_finite(emb, tokens, what):
    """Raise ``ValueError`` naming the items whose embedding rows contain NaN/inf."""
    bad = ~np.isfinite(emb).all(axis=1)  # [N]
    if bad.any():
        examples = [tokens[i] for i in np.flatnonzero(bad)[:5]]
        raise ValueError(
            f"{what} has non-finite values (NaN/inf) for {int(bad.sum())} of {len(tokens)} items "
            f"(e.g. {examples}); refusing to cache or quantize them. Check the encoder/source "
            f"(fp16 overflow? empty inputs?)."
        )


def text_embedding_inputs(config, tokens, texts, spec, encoder_path):
    """Everything the text embeddings depend on (its canonical JSON hash is the cache key)."""
    mode, normalize = text_encoder.pooling_spec(encoder_path, config["text_pooling"])
    return {
        "kind": "text_embeddings",
        "format": FORMAT_VERSION,
        "encoder": str(config["text_encoder"]),
        "encoder_config": text_encoder.encoder_fingerprint(encoder_path),
        "pooling": [mode, normalize],
        "fields": spec["fields"],
        "template": spec["template"],
        "max_length": int(config["text_max_length"]),
        "items": cache.strings_hash(tokens),
        "texts": cache.strings_hash(texts),
    }


def _device(config):
    device = str(config["device"])
    return "cuda" if device.startswith("cuda") else "cpu"


def item_embeddings_for(config, source_dir, store, tokens, summary):
    """Item embeddings [N, D] float32 for ``tokens`` and their cache key."""
    source = str(config["item_embedding_source"])
    if source != "text":
        return _external_embeddings(store, source, tokens, summary)
    texts, spec = text.item_texts(config, tokens, source_dir)
    encoder_path = text_encoder.resolve_encoder_path(config["text_encoder"])
    key = cache.content_key(text_embedding_inputs(config, tokens, texts, spec, encoder_path))
    path = dataset_store.embeddings_path(store, "text")
    status = cache.check_artifact(path, key)
    cache.report_status(os.path.basename(path), status)
    summary["cache"]["embeddings"] = status
    summary["text_spec"] = spec
    if status == "hit":
        emb = cache.load_npy(path)
        summary["timings"]["embedding_s"] = cache.read_meta(path).get("seconds")
        return emb, key
    logger.info(f"encoding {len(texts)} item texts with {config['text_encoder']}; e.g. {texts[0]!r}")
    start = time.perf_counter()
    emb = text_encoder.encode_texts(
        texts, encoder=config["text_encoder"], pooling=config["text_pooling"],
        max_length=int(config["text_max_length"]), batch_size=int(config["text_batch_size"]),
        device=_device(config), show_progress=bool(config["show_progress"]),
    )
    emb = np.ascontiguousarray(emb, dtype=np.float32)  # [N, D]
    if emb.ndim != 2 or emb.shape[0] != len(tokens):
        raise ValueError(f"text encoder returned shape {emb.shape} for {len(tokens)} items")
    _check_finite(emb, tokens, f"text embeddings from {config['text_encoder']}")
    seconds = round(time.perf_counter() - start, 3)
    summary["timings"]["embedding_s"] = seconds
    cache.save_npy(path, emb, key, {"seconds": seconds, "n_items": len(tokens), "dim": int(emb.shape[1]),
                                    "encoder": str(config["text_encoder"]), "text_spec": spec})
    return emb, key


def _external_embeddings(store, source, tokens, summary):
    """Rows of ``embeddings-<source>.npy`` (written by e.g. CollabEmbed) for ``tokens``."""
    ext_tokens, matrix, sha, key_extra = dataset_store.load_item_embeddings(store, source)
    row_of = {t: i for i, t in enumerate(ext_tokens)}
    missing = [t for t in tokens if t not in row_of]
    if missing:
        raise ValueError(
            f"{os.path.basename(dataset_store.embeddings_path(store, source))} lacks {len(missing)} of the {len(tokens)} items of this dataset "
            f"(e.g. {missing[:5]}); rerun the model that wrote it with the same dataset and filtering."
        )
    emb = np.ascontiguousarray(matrix[[row_of[t] for t in tokens]], dtype=np.float32)  # [N, D]
    _check_finite(emb, tokens, os.path.basename(dataset_store.embeddings_path(store, source)))
    summary["cache"]["embeddings"] = f"external:{source}"
    summary["timings"]["embedding_s"] = 0.0
    key = cache.content_key({"kind": "external_embeddings", "source": source, "sha256": sha,
                             "items": cache.strings_hash(tokens), "format": FORMAT_VERSION})
    summary["embedding_held_out"] = key_extra.get("held_out")  # the cold-start set of the run that wrote them
    return emb, key


# ============================================================================= semantic IDs
def sid_inputs(config, emb_key):
    """Everything the semantic IDs depend on."""
    return {
        "kind": "semantic_ids",
        "format": FORMAT_VERSION,
        "embeddings": emb_key,
        "source": str(config["item_embedding_source"]),
        "method": str(config["sid_method"]),
        "levels": int(config["sid_levels"]),
        "codebook_size": config["sid_codebook_size"],
        "collision": str(config["sid_collision"]),
        "params": dict(config["sid_params"]),
        "seed": int(config["seed"]),
    }


def _held_out_rows(config, tokens, inputs):
    """Cold-start protocol: boolean [N] of the items the tokenizer must not see (``None`` when off); the
    held-out set becomes part of the semantic-ID key."""
    from recbole_genrec.data import coldstart

    if not coldstart.enabled(config):
        return None
    held = set(coldstart.held_out_tokens(config, tokens))
    inputs["held_out"] = cache.strings_hash(sorted(held))
    return np.array([t in held for t in tokens], dtype=bool)


def semantic_ids_for(config, store, tokens, emb, emb_key, summary):
    """``(codes [N, L'] int64, codebook_sizes [L'], key)``, from the cache or freshly fitted.

    Stored as ``codes-<key16>.npy`` + ``diagnostics-<key16>.json`` + the fitted tokenizer
    ``tokenizer-<key16>.safetensors/.json`` (:mod:`recbole_genrec.tokenizers.artifact`): other settings never
    overwrite them. Under the cold-start protocol the tokenizer is fitted without the held-out items, whose rows
    are ``-1`` (no code; models add them after training with ``add_items``).
    """
    inputs = sid_inputs(config, emb_key)
    held = _held_out_rows(config, tokens, inputs)
    key = cache.content_key(inputs)
    codes_path, diag_path = dataset_store.codes_path(store, key), dataset_store.diagnostics_path(store, key)
    stem = dataset_store.tokenizer_stem(store, key)
    status = cache.check_artifact(codes_path, key)
    for other in (diag_path, stem + ".safetensors", stem + ".json"):
        other_status = cache.check_artifact(other, key)
        if status == "hit" and other_status != "hit":
            status = other_status
    cache.report_status(f"{os.path.basename(codes_path)} + {os.path.basename(diag_path)}", status)
    summary["cache"]["codes"] = status
    summary["codes_path"] = codes_path
    if status == "hit":
        codes = cache.load_npy(codes_path).astype(np.int64)
        diagnostics = cache.load_json(diag_path)
    else:
        fit_rows = np.flatnonzero(~held) if held is not None else np.arange(len(tokens))
        fit_codes, diagnostics, fitted = _fit_codes(config, inputs, emb[fit_rows], [tokens[i] for i in fit_rows],
                                                    summary)
        codes = np.full((len(tokens), fit_codes.shape[1]), -1, dtype=np.int64)  # held-out rows: no code
        codes[fit_rows] = fit_codes
        if held is not None:
            diagnostics["held_out_items"] = int(held.sum())
        meta = {"codebook_sizes": diagnostics["codebook_sizes"], "n_items": len(tokens), "inputs": inputs}
        dataset_store.save_tokenizer(stem, fitted, key, {"items": cache.strings_hash([tokens[i] for i in fit_rows])})
        cache.save_npy(codes_path, codes, key, meta)
        cache.save_json(diag_path, diagnostics, key)
    summary["tokenizer_path"] = stem + ".safetensors"
    if codes.ndim != 2 or codes.shape[0] != len(tokens):
        raise ValueError(f"semantic IDs in {codes_path} have shape {codes.shape}, expected [{len(tokens)}, L]")
    n_coded = int((codes >= 0).all(axis=1).sum())
    if inputs["collision"] != "none" and len(np.unique(codes[(codes >= 0).all(axis=1)], axis=0)) != n_coded:
        raise ValueError(f"semantic IDs in {codes_path} are not unique per item (collision={inputs['collision']})")
    summary["diagnostics"] = diagnostics
    summary["timings"]["codes_s"] = diagnostics.get("timings", {}).get("codes_s")
    log_diagnostics(diagnostics)
    return codes, list(diagnostics["codebook_sizes"]), key


def _fit_codes(config, inputs, emb, tokens, summary):
    """Fit the tokenizer on emb [N, D]: ``(codes [N, L'], diagnostics, FittedTokenizer)``."""
    _check_finite(emb, tokens, "item embeddings")
    start = time.perf_counter()
    codes, info = tokenizers.generate_semantic_ids(
        emb, method=inputs["method"], n_levels=inputs["levels"], codebook_size=inputs["codebook_size"],
        collision=inputs["collision"], seed=inputs["seed"], device=_device(config),
        show_progress=bool(config["show_progress"]), **inputs["params"],
    )
    seconds = round(time.perf_counter() - start, 3)
    diagnostics = dict(info["diagnostics"])
    diagnostics.update({
        "method": info["method"],
        "collision": inputs["collision"],
        "codebook_sizes": [int(k) for k in info["codebook_sizes"]],
        "levels_after_collision_handling": int(codes.shape[1]),
        "recon_error": info["recon_error"],
        "n_items": int(codes.shape[0]),
        "n_unique_codes": int(len(np.unique(codes, axis=0))),
        "timings": {"embedding_s": summary["timings"].get("embedding_s"), "codes_s": seconds},
    })
    codes = np.asarray(codes, dtype=np.int64)
    return codes, diagnostics, FittedTokenizer(info["tokenizer"], codes, diagnostics["codebook_sizes"],
                                               inputs["collision"])


def diagnostics_table(diagnostics):
    """Plain-text table of per-level usage/perplexity and the scalar diagnostics."""
    sizes = diagnostics.get("codebook_sizes") or []
    usage = diagnostics.get("usage") or []
    perplexity = diagnostics.get("perplexity") or []
    prefix = diagnostics.get("max_items_per_prefix") or []
    lines = [f"{'level':>5} {'K':>6} {'usage':>7} {'perplexity':>10} {'max items/prefix':>16}"]
    for level in range(len(usage)):
        k = sizes[level] if level < len(sizes) else ""
        mp = prefix[level] if level < len(prefix) else ""
        lines.append(f"{level + 1:>5} {k:>6} {usage[level]:>7.3f} {perplexity[level]:>10.2f} {mp:>16}")
    recon = diagnostics.get("recon_error")
    timings = diagnostics.get("timings", {})
    lines.append(
        f"method={diagnostics.get('method')} collision={diagnostics.get('collision')} "
        f"items={diagnostics.get('n_items')} final sizes={sizes} "
        f"collision rate before handling={diagnostics.get('collision_rate_before', float('nan')):.4f} "
        f"recon error={'n/a' if recon is None else f'{recon:.5f}'} "
        f"embedding={timings.get('embedding_s')}s codes={timings.get('codes_s')}s"
    )
    return "\n".join(lines)


def log_diagnostics(diagnostics):
    logger.info("semantic-ID diagnostics (before collision handling):\n" + diagnostics_table(diagnostics))


def write_plot(store, sid_key, codes, codebook_sizes):
    """``<store>/code_usage-<sid16>.png`` (written atomically)."""
    path = dataset_store.plot_path(store, sid_key)
    fd, tmp = tempfile.mkstemp(prefix=".code_usage.", suffix=".png", dir=store)
    os.close(fd)
    try:
        tokenizers.plot_code_usage(codes, codebook_sizes, tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    logger.info(f"code usage plot: {path}")
    return path


# ============================================================================= atomic files
def _write_feature_file(store, prefix, suffix, header, tokens, rows_as_text, key, summary):
    """``<store>/features/<prefix>-<key16>.<suffix>`` (kept when valid); returns ``(key, path)``."""
    path = dataset_store.feature_path(store, prefix, suffix, key)
    status = cache.check_artifact(path, key)
    cache.report_status(f"{suffix} file {os.path.basename(path)}", status)
    summary["cache"][suffix] = status
    if status != "hit":
        def write(f):
            f.write(header + "\n")
            for token, row in zip(tokens, rows_as_text):
                f.write(f"{token}\t{row}\n")

        cache.write_artifact(path, write, key, {"n_items": len(tokens)}, mode="w")
    return key, path


def write_emb_file(store, tokens, emb, emb_key, summary):
    """``features/emb-<key16>.genemb``: one row per item, float32 values exactly representable ('%.9g')."""
    key = cache.content_key({"kind": "genemb_file", "embeddings": emb_key, "items": cache.strings_hash(tokens),
                             "format": FORMAT_VERSION})
    fmt = " ".join(["%.9g"] * emb.shape[1])
    rows = (fmt % tuple(row) for row in emb.tolist())
    header = f"{EMB_ID}:token\t{EMB_FIELD}:float_seq"
    return _write_feature_file(store, "emb", EMB_SUFFIX, header, tokens, rows, key, summary)


def write_sid_file(store, tokens, codes, sid_key, summary):
    """``features/sid-<key16>.gensid``: integer codes as a float_seq (RecBole has no int_seq type)."""
    key = cache.content_key({"kind": "gensid_file", "codes": sid_key, "items": cache.strings_hash(tokens),
                             "format": FORMAT_VERSION})
    rows = (" ".join(map(str, row)) for row in codes.tolist())
    header = f"{SID_ID}:token\t{SID_FIELD}:float_seq"
    return _write_feature_file(store, "sid", SID_SUFFIX, header, tokens, rows, key, summary)


# ============================================================================= view
def feature_view(config, source_dir, store, features, feature_files, hashes, summary):
    """The view folder RecBole will read for these settings (reused when it exists); returns its path.

    Its key covers the requested features, the feature files' keys and the source files
    (path, content hash), so each combination of settings gets its own, never-changing view.
    """
    dataset = config["dataset"]
    links = layout.view_links(source_dir, dataset, feature_files, skip_suffixes=(EMB_SUFFIX, SID_SUFFIX))
    key = cache.content_key({
        "kind": "view",
        "format": FORMAT_VERSION,
        "features": sorted(features),
        "genemb_file": hashes.get("genemb_file"),
        "gensid_file": hashes.get("gensid_file"),
        "files": layout.source_files_identity(source_dir, dataset),
        "links": links,
    })
    view, status = layout.ensure_view(store, key, links)
    cache.report_status(f"view {os.path.relpath(view, store)}", status)
    summary["cache"]["view"] = status
    return view


# ============================================================================= config
def _append_unique(values, extra):
    values = list(values or [])
    return values + [v for v in extra if v not in values]


def point_config(config, source_dir, view, features, codebook_sizes, hashes):
    """Point RecBole at the view folder and register the feature files (idempotent)."""
    pairs = []
    if "text_emb" in features:
        pairs.append((EMB_SUFFIX, EMB_ID, EMB_FIELD))
    if "sid" in features:
        pairs.append((SID_SUFFIX, SID_ID, SID_FIELD))
    config["genrec_source_data_path"] = source_dir
    config["data_path"] = view
    config["additional_feat_suffix"] = _append_unique(config["additional_feat_suffix"], [p[0] for p in pairs])
    config["alias_of_item_id"] = _append_unique(config["alias_of_item_id"], [p[1] for p in pairs])
    preload = dict(config["preload_weight"] or {})
    preload.update({p[1]: p[2] for p in pairs})
    config["preload_weight"] = preload
    if config["load_col"] is not None:
        load_col = dict(config["load_col"])
        load_col.update({p[0]: [p[1], p[2]] for p in pairs})
        config["load_col"] = load_col
    _protect_from_normalization(config, view, {p[2] for p in pairs})
    config["sid_codebook_sizes"] = list(codebook_sizes) if codebook_sizes is not None else None
    config["genrec_feature_hashes"] = hashes


def _loaded_float_fields(config, view):
    """Float-like fields RecBole will load from the view's atomic files (load_col/unload_col applied)."""
    dataset = config["dataset"]
    suffixes = ["inter", "user", "item"] + list(config["additional_feat_suffix"] or [])
    fields = set()
    for suffix in suffixes:
        path = os.path.join(view, f"{dataset}.{suffix}")
        if suffix == "inter" and config["benchmark_filename"]:
            path = os.path.join(view, f"{dataset}.{config['benchmark_filename'][0]}.inter")
        if not os.path.isfile(path):
            continue
        load_col = None if config["load_col"] is None else config["load_col"].get(suffix, [])
        load_col = None if load_col == "*" else load_col
        unload_col = (config["unload_col"] or {}).get(suffix) or []
        with open(path, encoding=config["encoding"]) as f:
            header = f.readline().rstrip("\n")
        for item in header.split(config["field_separator"]):
            name, _, ftype = item.partition(":")
            if ftype in ("float", "float_seq") and (load_col is None or name in load_col) and name not in unload_col:
                fields.add(name)
    return fields


def _protect_from_normalization(config, view, ours):
    """Keep RecBole's min-max normalisation (normalize_all / normalize_field) off the feature vectors."""
    if config["normalize_all"]:
        others = sorted(_loaded_float_fields(config, view) - ours)
        config["normalize_all"] = False
        config["normalize_field"] = others or None
        logger.info(f"normalize_all -> normalize_field {others}: {sorted(ours)} must stay unnormalised")
    elif config["normalize_field"]:
        kept = [f for f in config["normalize_field"] if f not in ours]
        if len(kept) != len(config["normalize_field"]):
            logger.warning(f"removed {sorted(ours)} from normalize_field: embeddings/codes must stay unnormalised")
        config["normalize_field"] = kept or None
