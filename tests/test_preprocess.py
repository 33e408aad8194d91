"""Tests for recbole_genrec.preprocess: item text -> embeddings -> semantic IDs -> RecBole features.

Uses tests/data/tiny (40 items, 120 users) and a per-test cache folder. Most tests replace the
text encoder with a deterministic fake (hash of the text -> vector); the real MiniLM runs in the
determinism/cache-hit test and a tiny random BERT saved to disk checks the local-folder path.
"""

import hashlib
import logging
import multiprocessing
import os
import shutil
import sys
import time

import numpy as np
import pytest

import recbole_genrec  # noqa: F401  (compat shims before RecBole)
from recbole_genrec import Config
from recbole_genrec import store as dataset_store
from recbole_genrec.preprocess import cache, features, hook, layout, text, text_encoder
from recbole_genrec.data import create_dataset

DATA_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
FAST_SID = {"sid_method": "rkmeans", "sid_levels": 2, "sid_codebook_size": 8, "sid_params": {"niter": 10}}
TINY_RQVAE = {"hidden_dims": [32], "latent_dim": 8, "batch_size": 64, "epochs": 5, "kmeans_niter": 5}


def make_config(cache_dir, data_root=DATA_ROOT, dataset="tiny", **overrides):
    """A recbole_genrec Config for the tiny dataset (command line of pytest kept out of RecBole)."""
    settings = {"data_path": data_root, "genrec_cache_dir": str(cache_dir), "genrec_features": ["text_emb", "sid"],
                "show_progress": False, "seed": 2020, "text_batch_size": 16}
    settings.update(FAST_SID)
    settings.update(overrides)
    saved = sys.argv
    sys.argv = [saved[0]]
    try:
        return Config(model="BPR", dataset=dataset, config_dict=settings)
    finally:
        sys.argv = saved


def fake_vectors(texts, dim=16):
    """Deterministic pseudo-embeddings [len(texts), dim] float32 from each text's sha256."""
    rows = []
    for t in texts:
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
        rows.append(np.random.default_rng(seed).normal(size=dim))
    return np.asarray(rows, dtype=np.float32)


class CountingEncoder:
    """Stand-in for text_encoder.encode_texts that counts calls."""

    def __init__(self):
        self.calls = 0
        self.texts = None

    def __call__(self, texts, **kwargs):
        self.calls += 1
        self.texts = list(texts)
        return fake_vectors(texts)


def refuse_to_encode(texts, **kwargs):
    raise AssertionError("the encoder ran although the cache should have been used")


@pytest.fixture
def fake_encoder(monkeypatch):
    encoder = CountingEncoder()
    monkeypatch.setattr(text_encoder, "encode_texts", encoder)
    return encoder


def copy_tiny(tmp_path, item_lines=None, with_item=True):
    """A writable copy of tests/data/tiny under tmp_path/data/tiny; optionally edited item rows."""
    folder = tmp_path / "data" / "tiny"
    folder.mkdir(parents=True)
    shutil.copy(os.path.join(DATA_ROOT, "tiny", "tiny.inter"), folder / "tiny.inter")
    if with_item:
        lines = open(os.path.join(DATA_ROOT, "tiny", "tiny.item"), encoding="utf-8").read().splitlines()
        if item_lines:
            lines = [item_lines.get(i, line) for i, line in enumerate(lines)]
        (folder / "tiny.item").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(tmp_path / "data")


# ----------------------------------------------------------------------------- text
def test_item_texts_from_fields_template_and_defaults(tmp_path):
    config = make_config(tmp_path)
    texts, spec = text.item_texts(config, ["i001", "i002"])
    assert spec["fields"] == ["title", "categories", "brand"] and spec["template"] is None
    assert texts[0] == "title: running shoes. categories: shoes. brand: brand_shoes_0"
    config["text_template"] = "{title} ({categories})"
    assert text.item_texts(config, ["i001"])[0] == ["running shoes (shoes)"]
    config["text_template"], config["text_fields"] = None, None
    assert text.item_texts(config, ["i001"])[1]["fields"] == ["title"]
    assert text.clean_value("Beauty Skin_Care Concealers_&_Neutralizers", "categories", "token_seq") == \
        "Beauty, Skin Care, Concealers & Neutralizers"


def test_missing_text_field_lists_existing_fields(tmp_path, fake_encoder):
    config = make_config(tmp_path, text_fields=["description"])
    with pytest.raises(ValueError) as err:
        hook.prepare_features(config)
    message = str(err.value)
    assert "description" in message and "title" in message and "brand" in message and "text_fields" in message


def test_missing_item_file_names_the_path(tmp_path, fake_encoder):
    config = make_config(tmp_path / "cache", data_root=copy_tiny(tmp_path, with_item=False))
    with pytest.raises(FileNotFoundError) as err:
        hook.prepare_features(config)
    assert os.path.join("tiny", "tiny.item") in str(err.value)


def test_empty_text_falls_back_and_is_logged(tmp_path, fake_encoder, caplog):
    data_root = copy_tiny(tmp_path, item_lines={1: "i001\t\t\t"})
    config = make_config(tmp_path / "cache", data_root=data_root)
    with caplog.at_level(logging.WARNING):
        hook.prepare_features(config)
    assert "item i001" in fake_encoder.texts
    assert "1 of 40 items have no text" in caplog.text


# ----------------------------------------------------------------------------- cache behaviour
def test_same_seed_same_codes_and_cache_hit(tmp_path, monkeypatch, caplog):
    """Real MiniLM: a second build (same embeddings, fresh codes) agrees bit for bit; a third
    run is served from the cache without encoding or quantizing."""
    first = hook.prepare_features(make_config(tmp_path / "a"))
    os.makedirs(tmp_path / "b" / "tiny")
    for name in ("embeddings-text.npy", "embeddings-text.npy.meta.json"):
        shutil.copy(tmp_path / "a" / "tiny" / name, tmp_path / "b" / "tiny" / name)
    second = hook.prepare_features(make_config(tmp_path / "b"))
    assert second["cache"]["embeddings"] == "hit" and second["cache"]["codes"] == "missing"
    assert first["codes_path"].startswith(str(tmp_path / "a" / "tiny"))
    codes_a = np.load(first["codes_path"])
    codes_b = np.load(second["codes_path"])
    emb_a = np.load(tmp_path / "a" / "tiny" / "embeddings-text.npy")
    assert emb_a.shape == (40, 384) and np.allclose(np.linalg.norm(emb_a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(codes_a, codes_b)
    assert first["hashes"] == second["hashes"]

    monkeypatch.setattr(text_encoder, "encode_texts", refuse_to_encode)
    import recbole_genrec.tokenizers as tokenizers

    monkeypatch.setattr(tokenizers, "generate_semantic_ids", refuse_to_encode)
    with caplog.at_level(logging.INFO):
        third = hook.prepare_features(make_config(tmp_path / "a"))
    assert set(third["cache"].values()) == {"hit"}
    assert "cache hit" in caplog.text
    assert third["hashes"] == first["hashes"]


def test_stale_cache_is_rebuilt_with_warning(tmp_path, fake_encoder, caplog):
    hook.prepare_features(make_config(tmp_path))
    assert fake_encoder.calls == 1
    with caplog.at_level(logging.WARNING):
        summary = hook.prepare_features(make_config(tmp_path, text_template="{title}. Brand: {brand}."))
    assert fake_encoder.calls == 2
    assert fake_encoder.texts[0].endswith("Brand: brand_shoes_0.") or "Brand:" in fake_encoder.texts[0]
    assert summary["cache"]["embeddings"] == "stale"
    assert "cache stale" in caplog.text and "embeddings-text.npy" in caplog.text


def test_corrupt_files_are_rebuilt_without_reencoding(tmp_path, fake_encoder, monkeypatch, caplog):
    first = hook.prepare_features(make_config(tmp_path))
    store = tmp_path / "tiny"
    assert first["store"] == str(store) and os.path.dirname(first["overlay"]) == str(store / "views")
    genemb = store / "features" / f"emb-{first['hashes']['genemb_file'][:16]}.genemb"
    assert os.path.samefile(os.path.join(first["overlay"], "tiny.genemb"), genemb)  # the view links it
    good = genemb.read_bytes()
    genemb.write_bytes(good[: len(good) // 2])  # truncated
    with open(first["codes_path"], "wb") as f:
        f.write(b"not a numpy file")
    monkeypatch.setattr(text_encoder, "encode_texts", refuse_to_encode)
    with caplog.at_level(logging.WARNING):
        summary = hook.prepare_features(make_config(tmp_path))
    assert summary["cache"]["genemb"] == "corrupt" and summary["cache"]["codes"] == "corrupt"
    assert summary["cache"]["embeddings"] == "hit" and summary["cache"]["view"] == "hit"
    assert summary["overlay"] == first["overlay"] and summary["codes_path"] == first["codes_path"]
    assert genemb.read_bytes() == good
    assert cache.check_artifact(summary["codes_path"], summary["hashes"]["sid"]) == "hit"
    assert "cache corrupt" in caplog.text
    leftovers = [n for folder in (store, store / "features", store / "views") for n in os.listdir(folder)
                 if n.endswith(".tmp")]
    assert leftovers == []


OTHER_SID = dict(FAST_SID, sid_method="hkmeans")  # other semantic-ID settings on the same embeddings


def test_switching_sid_settings_reuses_earlier_codes(tmp_path, fake_encoder, monkeypatch):
    """rkmeans -> hkmeans -> rkmeans: each setting has its own view; going back refits nothing."""
    first = hook.prepare_features(make_config(tmp_path))
    second = hook.prepare_features(make_config(tmp_path, **OTHER_SID))
    assert second["cache"]["codes"] == "missing" and second["cache"]["embeddings"] == "hit"
    assert second["overlay"] != first["overlay"] and second["codes_path"] != first["codes_path"]
    import recbole_genrec.tokenizers as tokenizers

    monkeypatch.setattr(tokenizers, "generate_semantic_ids", refuse_to_encode)
    third = hook.prepare_features(make_config(tmp_path))
    assert third["cache"]["codes"] == "hit" and third["cache"]["gensid"] == "hit" and third["cache"]["view"] == "hit"
    assert third["overlay"] == first["overlay"] and third["hashes"] == first["hashes"]
    assert fake_encoder.calls == 1


def test_earlier_setting_keeps_loading_its_own_codes(tmp_path, fake_encoder):
    """Run A prepares its features, then run B (other SID settings) on the same dataset, then A's RecBole
    loads its dataset: it gets A's codes (a single shared overlay let B overwrite A's <dataset>.gensid)."""
    from recbole.data import create_dataset as recbole_create_dataset

    config_a = make_config(tmp_path)
    summary_a = hook.prepare_features(config_a)
    summary_b = hook.prepare_features(make_config(tmp_path, **OTHER_SID))
    codes_a, codes_b = np.load(summary_a["codes_path"]), np.load(summary_b["codes_path"])
    assert not np.array_equal(codes_a, codes_b)
    kept = cache.load_json(os.path.join(summary_a["store"], "items.json"))["item_tokens"]
    dataset = recbole_create_dataset(config_a)  # RecBole alone, as A's run does after the hook returned
    codes = features.item_codes(dataset)  # [n_items + 1, L], row 0 padding
    assert codes.shape == (dataset.item_num, codes_a.shape[1])
    for iid in range(1, dataset.item_num):
        assert codes[iid].tolist() == codes_a[kept.index(dataset.id2token("item_id", iid))].tolist()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = str(tmp_path / "artifact.json")
    cache.save_json(path, {"a": 1}, key="k1")

    def explode(f):
        f.write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cache.atomic_write(path, explode, mode="w")
    assert cache.load_json(path) == {"a": 1} and cache.check_artifact(path, "k1") == "hit"
    assert sorted(os.listdir(tmp_path)) == ["artifact.json", "artifact.json.meta.json"]


# ----------------------------------------------------------------------------- RecBole integration
def test_preload_rows_align_with_internal_ids_after_filtering(tmp_path, fake_encoder):
    filtering = {"item_inter_num_interval": "[25,inf)", "normalize_all": True,
                 "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title", "brand"]}}
    baseline = create_dataset(make_config(tmp_path / "plain", genrec_features=[], **filtering))
    config = make_config(tmp_path / "cache", **filtering)
    dataset = create_dataset(config)
    assert 1 < dataset.item_num - 1 < 40  # some items were filtered out and ids remapped
    assert dataset.item_num == baseline.item_num  # the feature files add no phantom items
    assert list(dataset.field2id_token["item_id"]) == list(baseline.field2id_token["item_id"])
    assert config["normalize_all"] is False  # vectors protected from RecBole's min-max scaling

    store = str(tmp_path / "cache" / "tiny")
    assert config["data_path"].startswith(os.path.join(store, "views"))  # RecBole read this setting's view
    kept = cache.load_json(os.path.join(store, "items.json"))["item_tokens"]
    emb_cached = np.load(os.path.join(store, "embeddings-text.npy"))  # [N, D], rows follow `kept`
    codes_cached = np.load(dataset_store.codes_path(store, config["genrec_feature_hashes"]["sid"]))
    emb = features.item_embeddings(dataset)
    codes = features.item_codes(dataset)
    assert emb.shape == (dataset.item_num, 16) and codes.shape[0] == dataset.item_num
    assert float(emb[0].abs().sum()) == 0.0 and (codes[0] == -1).all()
    for iid in range(1, dataset.item_num):
        token = dataset.id2token("item_id", iid)
        row = kept.index(token)
        assert np.array_equal(emb[iid].numpy(), emb_cached[row])  # exact float32 round trip
        assert codes[iid].tolist() == codes_cached[row].tolist()
    assert features.codebook_sizes(dataset) == config["sid_codebook_sizes"]
    assert len(features.code_lookup(dataset)) == dataset.item_num - 1

    # vectors stay out of item_feat and out of the interaction batches models receive
    from recbole.data import data_preparation

    train_data, _, _ = data_preparation(config, dataset)
    assert set(train_data.dataset.item_feat.columns) == {"item_id", "title", "brand"}
    batch = next(iter(train_data))
    assert "item_id" in batch.columns and not {"genemb", "gensid"} & set(batch.columns)

    out = features.export_codes_tsv(dataset, str(tmp_path / "codes.tsv"))
    lines = open(out, encoding="utf-8").read().splitlines()
    assert lines[0] == "item_id\ttitle\tcodes" and len(lines) == dataset.item_num
    with pytest.raises(ValueError, match="genrec_features"):
        features.item_codes(baseline)


def test_nan_embeddings_are_rejected_before_quantization(tmp_path, monkeypatch):
    def nan_encoder(texts, **kwargs):
        out = fake_vectors(texts)
        out[3, 0] = np.nan
        return out

    monkeypatch.setattr(text_encoder, "encode_texts", nan_encoder)
    with pytest.raises(ValueError, match="NaN"):
        hook.prepare_features(make_config(tmp_path))
    assert not os.path.exists(tmp_path / "tiny" / "embeddings-text.npy")  # nothing cached


@pytest.mark.parametrize("method,collision", [("rkmeans", "extra_level"), ("rkmeans", "sinkhorn"),
                                              ("hkmeans", "extra_level"), ("rqvae", "extra_level")])
def test_codes_unique_after_collision_handling(tmp_path, fake_encoder, method, collision):
    params = TINY_RQVAE if method == "rqvae" else {"niter": 10}
    sizes = [4, 32] if collision == "sinkhorn" else 8  # sinkhorn needs room under each prefix
    summary = hook.prepare_features(make_config(tmp_path, sid_method=method, sid_collision=collision,
                                                sid_params=params, sid_codebook_size=sizes))
    codes = np.load(summary["codes_path"])
    assert len(np.unique(codes, axis=0)) == 40
    assert len(summary["codebook_sizes"]) == codes.shape[1]
    diag = cache.load_json(dataset_store.diagnostics_path(summary["store"], summary["hashes"]["sid"]))
    for key in ("usage", "perplexity", "collision_rate_before", "max_items_per_prefix", "recon_error", "timings"):
        assert key in diag


def test_collab_embedding_source(tmp_path, fake_encoder):
    config = make_config(tmp_path, item_embedding_source="collab")
    with pytest.raises(FileNotFoundError, match="run CollabEmbed first"):
        hook.prepare_features(config)
    tokens = [f"i{i:03d}" for i in range(1, 41)]
    matrix = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    dataset_store.save_item_embeddings(config, "collab", tokens, matrix, {"model": "CollabEmbed", "epoch": 3})
    summary = hook.prepare_features(make_config(tmp_path, item_embedding_source="collab"))
    assert fake_encoder.calls == 0 and summary["embedding_dim"] == 8
    kept = cache.load_json(str(tmp_path / "tiny" / "items.json"))["item_tokens"]
    first = open(os.path.join(summary["overlay"], "tiny.genemb"), encoding="utf-8").read().splitlines()[1].split("\t")
    assert first[0] == kept[0]
    assert np.array_equal(np.array(first[1].split(), dtype=np.float32), matrix[tokens.index(kept[0])])


# ----------------------------------------------------------------------------- encoders
def test_local_folder_encoder(tmp_path, monkeypatch):
    from transformers import BertConfig, BertModel

    minilm = text_encoder.resolve_encoder_path("all-MiniLM-L6-v2")
    folder = tmp_path / "tiny-bert"
    bert_config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=128)
    BertModel(bert_config).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(minilm, name), folder / name)
    assert text_encoder.pooling_spec(str(folder)) == ("mean", False)
    summary = hook.prepare_features(make_config(tmp_path / "cache", text_encoder=str(folder),
                                                genrec_features=["text_emb"]))
    assert summary["embedding_dim"] == 32 and "sid" not in summary["hashes"]
    emb = np.load(tmp_path / "cache" / "tiny" / "embeddings-text.npy")
    assert emb.shape == (40, 32) and np.isfinite(emb).all()


def test_unknown_hub_name_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(OSError, match="never downloads"):
        text_encoder.resolve_encoder_path("no-such-org/no-such-encoder-model")
    assert time.perf_counter() - start < 10


# ----------------------------------------------------------------------------- concurrency
def _build_in_child(cache_dir, marker, out_path):
    """Run in a spawned process: prepare the tiny features with a slow, logging fake encoder."""
    import recbole_genrec  # noqa: F401
    from recbole_genrec.preprocess import hook as child_hook
    from recbole_genrec.preprocess import text_encoder as child_encoder

    def slow_encoder(texts, **kwargs):
        with open(marker, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        return fake_vectors(texts)

    child_encoder.encode_texts = slow_encoder
    summary = child_hook.prepare_features(make_config(cache_dir))
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(cache.canonical_json(summary["hashes"]))


@pytest.mark.slow
def test_concurrent_processes_build_once(tmp_path):
    marker = str(tmp_path / "encoded.log")
    outs = [str(tmp_path / f"hashes{i}.json") for i in range(2)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_build_in_child, args=(str(tmp_path / "cache"), marker, out)) for out in outs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    hashes = [open(out, encoding="utf-8").read() for out in outs]
    assert hashes[0] == hashes[1]
    assert len(open(marker, encoding="utf-8").read().split()) == 1  # built exactly once


def test_view_links_cover_benchmark_split_files(tmp_path):
    """A view links every ``<dataset>.*`` atomic file, including RecBole's ``benchmark_filename`` parts
    (``<dataset>.train.inter``), never the hook's own suffixes nor another dataset's files."""
    from recbole_genrec.preprocess import layout

    for name in ("tiny.inter", "tiny.item", "tiny.train.inter", "tiny.test.inter", "tiny.gensid", "tiny2.inter"):
        (tmp_path / name).write_text("x")
    links = layout.view_links(str(tmp_path), "tiny", {"gensid": str(tmp_path / "sid-abc.gensid")},
                              skip_suffixes=("genemb", "gensid"))
    assert sorted(links) == ["tiny.gensid", "tiny.inter", "tiny.item", "tiny.test.inter", "tiny.train.inter"]
    assert links["tiny.train.inter"] == str(tmp_path / "tiny.train.inter")
    assert links["tiny.gensid"].endswith("sid-abc.gensid") and not os.path.isabs(links["tiny.gensid"])
