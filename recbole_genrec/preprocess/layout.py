"""The store's views: per-setting folders of symlinks that RecBole reads as its ``data_path``.

A view (``<store>/views/<view16>/``, :mod:`recbole_genrec.store`) holds links to the original atomic files
(``<dataset>.inter``, ``.item``, ...) plus ``<dataset>.genemb`` / ``<dataset>.gensid`` linking the store's feature
files of its settings. Views never change once renamed into place, so switching settings back reuses earlier ones
and concurrent runs with different settings each read their own files.
"""

import contextlib
import os
import shutil
import tempfile

from recbole_genrec import store as dataset_store
from recbole_genrec.preprocess import cache

# ----------------------------------------------------------------------------- source files
def source_files_identity(source_dir, dataset):
    """``[[realpath, sha256], ...]`` of the ``<dataset>.*`` files of ``source_dir`` (part of keys).

    The content hash, not size and mtime: a file replaced by one of equal size with its mtime kept is seen.
    """
    files = []
    for name in sorted(os.listdir(source_dir)):
        path = os.path.join(source_dir, name)
        if name.startswith(dataset + ".") and os.path.isfile(path):
            files.append([os.path.realpath(path), cache.file_sha256(path)])
    return files


def view_links(source_dir, dataset, feature_files, skip_suffixes=()):
    """``{link name: target}`` of a view.

    Every ``<dataset>.<suffix>`` / ``<dataset>.<part>.<suffix>`` atomic file of ``source_dir`` (absolute target; suffixes in
    ``skip_suffixes``, the hook's own, are never linked) plus ``<dataset>.<suffix>`` -> the store's
    feature file for each ``suffix: path`` of ``feature_files`` (relative target
    ``../../features/<file>``, so the store can be moved as a whole).
    """
    source_dir = os.path.abspath(source_dir)
    links = {}
    for name in sorted(os.listdir(source_dir)):
        suffix = name.rpartition(".")[2]  # also <dataset>.<part>.inter files (RecBole's benchmark_filename)
        if (name.startswith(dataset + ".") and suffix not in skip_suffixes
                and os.path.isfile(os.path.join(source_dir, name))):
            links[name] = os.path.join(source_dir, name)
    for suffix, path in feature_files.items():
        links[f"{dataset}.{suffix}"] = os.path.join(os.pardir, os.pardir, dataset_store.FEATURES_DIR,
                                                    os.path.basename(path))
    return links


# ----------------------------------------------------------------------------- views
def _view_matches(path, links):
    """True when the folder ``path`` holds exactly the symlinks ``links`` (name -> target)."""
    try:
        names = os.listdir(path)
        return sorted(names) == sorted(links) and all(os.readlink(os.path.join(path, n)) == links[n] for n in names)
    except OSError:  # absent, not a folder, or an entry that is no symlink
        return False


def ensure_view(store, key, links):
    """The view folder ``<store>/views/<key16>/`` holding ``links``, and how it was obtained.

    Returns ``(path, status)``: ``"hit"`` when a matching view already exists (it is reused),
    ``"missing"`` when it was built, ``"corrupt"`` when a view of that name did not match and was
    replaced. A view is built in a temporary folder beside it and renamed into place, so a reader
    never sees a half-built view. Call it under :func:`cache.locked` (two builders of one key would
    race on the rename).
    """
    views = dataset_store.views_dir(store)
    path = os.path.join(views, dataset_store.short(key))
    if _view_matches(path, links):
        return path, "hit"
    status = "corrupt" if os.path.lexists(path) else "missing"
    os.makedirs(views, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=cache.temp_prefix(dataset_store.short(key)), suffix=".tmp", dir=views)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        for name, target in links.items():
            os.symlink(target, os.path.join(tmp, name))
        if status == "corrupt":
            _discard(path, views)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cache.fsync_dir(views)
    return path, status


def _discard(path, views):
    """Move a broken view out of the way first (a rename is atomic), then delete it."""
    trash = tempfile.mkdtemp(prefix=cache.temp_prefix("trash"), suffix=".tmp", dir=views)
    os.rename(path, os.path.join(trash, "view"))
    with contextlib.suppress(OSError):
        shutil.rmtree(trash)  # removes the links, never what they point at
