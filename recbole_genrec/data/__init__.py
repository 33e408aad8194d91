"""Datasets: where the atomic files are, and the dataset a model gets (RecBole's ``recbole.data`` role).

- :func:`resolve_data_path`  finds ``<dataset>.inter`` offline (never downloads), or the pre-split
  ``<dataset>.<part>.inter`` files when ``benchmark_filename`` is set
- :func:`create_dataset`     runs the preprocessing hook (text -> embeddings -> semantic IDs),
  then builds RecBole's dataset, which loads the hook's features

Splits and loaders (cold start, ``train_sampling``) come from :func:`recbole_genrec.run_builder.split`.

The models read those features through :mod:`recbole_genrec.preprocess.features`.
"""

import os
from logging import getLogger

import recbole

from recbole.data import create_dataset as recbole_create_dataset

from recbole_genrec.safety import check_pickle_caches, pickle_caches_allowed
from recbole_genrec.validation import benchmark_parts


def resolve_data_path(config):
    """Make ``config['data_path']`` point at a folder holding ``<dataset>.inter``, or, when
    ``benchmark_filename`` is set (e.g. ``[train, valid, test]``: a paper's own split), the files
    ``<dataset>.train.inter``, ``<dataset>.valid.inter``, ``<dataset>.test.inter`` that RecBole then
    loads in that order as the training, validation and test sets.

    Searched in order: the configured ``data_path``, ``$RECBOLE_GENREC_DATA``, ``../shared/data``
    and ``shared/data`` next to the working directory, and the datasets shipped inside the
    recbole wheel (ml-100k). Raises ``FileNotFoundError`` listing every path searched.
    """
    dataset = config["dataset"]
    configured = config["data_path"]
    candidates = [configured] if configured else []  # a restored config has none: the search below finds it
    roots = [os.environ.get("RECBOLE_GENREC_DATA"), os.path.join("..", "shared", "data"),
             os.path.join("shared", "data"), os.path.join(os.path.dirname(recbole.__file__), "dataset_example")]
    candidates += [os.path.join(r, dataset) for r in roots if r]
    parts = benchmark_parts(config)
    names = [f"{dataset}.{part}.inter" for part in parts] if parts else [f"{dataset}.inter"]
    for path in candidates:
        present = [os.path.isfile(os.path.join(path, name)) for name in names]
        if all(present):
            if path != configured:
                getLogger().info(f"dataset '{dataset}' found in {os.path.abspath(path)}")
            config["data_path"] = path
            return path
        if parts and any(present):
            missing = ", ".join(n for n, ok in zip(names, present) if not ok)
            raise FileNotFoundError(
                f"Pre-split dataset '{dataset}' in {os.path.abspath(path)} lacks {missing} "
                f"(benchmark_filename: {parts}). Add the missing file(s), or set benchmark_filename to "
                f"the parts that exist, in train, valid, test order."
            )
    searched = "\n  ".join(os.path.abspath(os.path.join(p, names[0])) for p in candidates)
    hint = (f" (and {', '.join(names[1:])}; benchmark_filename: {parts})" if parts and len(names) > 1 else "")
    raise FileNotFoundError(
        f"Dataset '{dataset}' not found (RecBole would try to download it; recbole_genrec works "
        f"offline). Searched:\n  {searched}{hint}\nPut the atomic files in one of these folders, pass "
        f"--data_path=<folder that contains {dataset}/>, or set RECBOLE_GENREC_DATA."
    )


def create_dataset(config):
    """Resolve the data path, check the atomic files (:func:`recbole_genrec.validation.check_atomic_files`),
    run the preprocessing hook if the model needs text embeddings or semantic IDs, then build RecBole's
    dataset (which reads the registered features)."""
    resolve_data_path(config)
    check_pickle_caches(config)  # RecBole would unpickle its saved dataset/dataloaders: refused unless trusted
    # here, not at module level: `import recbole_genrec` stays light (the hook loads pandas, faiss, the encoders)
    from recbole_genrec.preprocess.hook import prepare_features
    from recbole_genrec.validation import check_atomic_files

    check_atomic_files(config)  # headers, time field, nan timestamps, duplicate ids, items without text

    prepare_features(config)
    with pickle_caches_allowed(config):
        return recbole_create_dataset(config)


__all__ = ["create_dataset", "resolve_data_path"]
