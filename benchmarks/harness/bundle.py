"""``--make-bundle``: everything a preset needs on a GPU machine without internet, in one folder to copy there.

recbole_genrec is imported inside :func:`make_bundle`, the one command that needs it in the parent process.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import recbole

from benchmarks.harness.common import say
from benchmarks.harness.datasets import find_dataset
from benchmarks.harness.rows import build_config, row_label

BUNDLE_SOURCE = "minilm"  # item_embedding_source name of the precomputed text embeddings in a bundle
BUNDLE_WHEELS = ["faiss-cpu==1.15.1", "colorlog", "texttable"]  # importable here, absent from the GPU image


def make_bundle(preset, args):
    """Everything the preset needs on a GPU machine without internet, in one git-ignored folder to copy there.

    ``data/<dataset>/`` copies of the atomic files (the data folder may not be there); ``cache/<dataset>/`` the
    text embeddings (as item_embedding_source ``minilm``: the MiniLM weights stay here) and the semantic IDs of
    the preset's rows, so the GPU run encodes nothing; ``wheels/`` faiss-cpu, colorlog, texttable;
    ``site/recbole`` (RecBole 1.2.1 is in no local index; pure Python, copied without its example datasets).
    """
    import recbole_genrec  # noqa: F401  (compat shims)
    from recbole_genrec import Config
    from recbole_genrec.data import resolve_data_path
    from recbole_genrec.preprocess import cache as genrec_cache
    from recbole_genrec import store as dataset_store
    from recbole_genrec.preprocess.hook import prepare_features

    bundle = os.path.abspath(args.make_bundle)
    data_dir, cache_dir = os.path.join(bundle, "data"), os.path.join(bundle, "cache")
    for name in preset["datasets"]:
        source = find_dataset(name, args.data_path)
        target = os.path.join(data_dir, name)
        os.makedirs(target, exist_ok=True)
        for suffix in ("inter", "item"):
            src = os.path.join(source, f"{name}.{suffix}")
            if os.path.isfile(src):
                shutil.copyfile(src, os.path.join(target, f"{name}.{suffix}"))
        say(f"bundle: copied {name} to {target}")
        base = {"data_path": data_dir, "genrec_cache_dir": cache_dir, "use_gpu": False, "show_progress": False}
        # 1. text embeddings with the real encoder, stored again under the source name the GPU run uses
        config = Config("AlphaRec", name, config_dict=dict(base, item_embedding_source="text"))
        resolve_data_path(config)
        prepare_features(config)
        store = dataset_store.store_dir(config)
        tokens = genrec_cache.load_json(dataset_store.items_path(store))["item_tokens"]
        emb = genrec_cache.load_npy(dataset_store.embeddings_path(store, "text"))
        dataset_store.save_item_embeddings(config, BUNDLE_SOURCE, tokens, np.asarray(emb),
                                          {"encoder": str(config["text_encoder"]), "copied_from": "text"})
        # 2. semantic IDs of every row that asks for them, with the row's own settings
        for row in preset["rows"]:
            if row["dataset"] != name:
                continue
            row_config = build_config(row, {"data_path": data_dir, "cache_dir": cache_dir}, "cpu", args.threads)
            row_config.update(base, item_embedding_source=BUNDLE_SOURCE)
            config = Config(row["model"], name, config_dict=row_config)
            if "sid" in (config["genrec_features"] or []):
                resolve_data_path(config)
                summary = prepare_features(config)
                say(f"bundle: codes for {row_label(row)}: {summary['cache']}")
        # 3. keep what the GPU run reads (embeddings-<BUNDLE_SOURCE>.npy, codes-*.npy, diagnostics-*.json): drop
        # the views (links to this machine's paths), the text-format feature files, the raw text embeddings and
        # old single-folder leftovers; the GPU run rewrites feature files and views from the kept artifacts
        for entry in os.listdir(store):
            path = os.path.join(store, entry)
            if entry in ("views", "features") and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.islink(path) or entry.startswith((f"{name}.genemb", f"{name}.gensid", "embeddings-text.",
                                                           ".lock", "items.json", "codes.npy", "diagnostics.json")):
                os.remove(path)
    wheels = os.path.join(bundle, "wheels")
    os.makedirs(wheels, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform",
           "manylinux_2_27_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
           "-d", wheels] + BUNDLE_WHEELS
    subprocess.run(cmd, check=True)
    site = os.path.join(bundle, "site", "recbole")
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(os.path.dirname(recbole.__file__), site,
                    ignore=shutil.ignore_patterns("__pycache__", "dataset_example"))
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(bundle) for f in fs)
    say(f"bundle ready: {bundle} ({size / 2**20:.1f} MiB; copy it beside the checkout on the GPU machine)")
    return 0
