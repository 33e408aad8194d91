"""Writing the dataset store's artifacts: content keys, atomic writes, sidecars, locking.

Which file lives where in the store ``<cache_root>/<dataset>/`` is :mod:`recbole_genrec.store`'s. Every artifact ``<artifact>`` has a sidecar
``<artifact>.meta.json`` holding ``key`` (hash of the inputs) and ``sha256`` (of the bytes); the
store's ``.lock`` is the lock file (``filelock``) serialising check + build across processes.

Every artifact is written to a temporary file in the same folder, fsync'ed and moved into place
with ``os.replace``; its sidecar is removed before and written after, so an interrupted write
never leaves a file that looks valid. Temporary names carry their writer (``.<name>.<host>@<pid>.<random>.tmp``);
the next run that takes the store's lock removes those whose writer is gone (:func:`remove_orphans`).
"""

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time

import numpy as np

logger = logging.getLogger(__name__)

META_SUFFIX = ".meta.json"


# ----------------------------------------------------------------------------- hashing
def canonical_json(obj):
    """Deterministic JSON text of ``obj`` (sorted keys, no whitespace, numpy scalars as Python)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def content_key(obj):
    """sha256 hex digest of the canonical JSON of ``obj``: the cache key of an artifact."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def strings_hash(strings):
    """sha256 of an ordered list of strings (length-prefixed, so boundaries are unambiguous)."""
    digest = hashlib.sha256()
    for text in strings:
        data = str(text).encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def file_sha256(path, chunk=1 << 20):
    """sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- atomic writes
ORPHAN_AGE_S = 24 * 3600  # a temp file of another machine (or without a writer in its name) older than this is orphaned
_OWNED_TEMP = re.compile(r"\.([A-Za-z0-9_-]+)@(\d+)\.[^.]*\.tmp$")


def _host():
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def temp_prefix(name):
    """``.<name>.<host>@<pid>.``: the prefix of a temporary file or folder written by this process."""
    return f".{name}.{_host()}@{os.getpid()}."


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _orphaned(path, name, now):
    owned = _OWNED_TEMP.search(name)
    try:
        age = now - os.lstat(path).st_mtime
    except OSError:
        return False
    if owned and owned.group(1) == _host():
        return not _alive(int(owned.group(2))) or age > ORPHAN_AGE_S
    return age > ORPHAN_AGE_S


def remove_orphans(store):
    """Remove temporary files and folders (``.*.tmp``) of ``store`` and its sub-folders whose writer is gone:
    a process of this machine that no longer runs, or anything older than :data:`ORPHAN_AGE_S`. Returns them."""
    now, removed = time.time(), []
    folders = [store] + [os.path.join(store, d) for d in sorted(os.listdir(store))
                         if os.path.isdir(os.path.join(store, d)) and not d.startswith(".")]
    for folder in folders:
        with contextlib.suppress(OSError):
            for name in os.listdir(folder):
                path = os.path.join(folder, name)
                if not (name.startswith(".") and name.endswith(".tmp")) or not _orphaned(path, name, now):
                    continue
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                removed.append(path)
    if removed:
        logger.info(f"removed {len(removed)} orphaned temporary files of interrupted writes in {store}")
    return removed


def fsync_dir(folder):
    """fsync a folder so that a rename inside it is durable (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write_fn, mode="wb"):
    """Call ``write_fn(fileobj)`` on a temp file beside ``path``, fsync it, then ``os.replace``.

    On any error the temp file is removed and ``path`` is left as it was.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(os.path.basename(path)), suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def _remove_meta(path):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path + META_SUFFIX)


def write_artifact(path, write_fn, key, extra=None, mode="wb"):
    """Atomically write an artifact and then its sidecar ``<path>.meta.json``.

    The old sidecar is removed first, so a crash between the two writes leaves an artifact
    without a sidecar, which :func:`check_artifact` reports as ``missing`` (rebuilt next time).
    Returns the sidecar dict.
    """
    _remove_meta(path)
    atomic_write(path, write_fn, mode=mode)
    meta = dict(extra or {})
    meta.update({"key": key, "sha256": file_sha256(path), "file": os.path.basename(path)})
    atomic_write(path + META_SUFFIX, lambda f: f.write(json.dumps(meta, indent=1, default=_json_default)), mode="w")
    return meta


def read_meta(path):
    """The sidecar dict of ``path``, or ``None`` if absent or unreadable."""
    try:
        with open(path + META_SUFFIX, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def check_artifact(path, key):
    """Status of a cached artifact: ``"hit"``, ``"missing"``, ``"stale"`` or ``"corrupt"``.

    ``stale``: the sidecar's key differs (inputs changed). ``corrupt``: the bytes do not match the
    sidecar's sha256, or the file is unreadable. ``missing``: the file or its sidecar is absent.
    """
    if not os.path.exists(path):
        return "missing"
    meta = read_meta(path)
    if meta is None:
        return "missing" if not os.path.exists(path + META_SUFFIX) else "corrupt"
    if meta.get("key") != key:
        return "stale"
    try:
        if file_sha256(path) != meta.get("sha256"):
            return "corrupt"
    except OSError:
        return "corrupt"
    return "hit"


def report_status(name, status):
    """Log a cache decision: info for hits and first builds, WARNING for stale/corrupt rebuilds."""
    if status == "hit":
        logger.info(f"cache hit: {name}")
    elif status == "missing":
        logger.info(f"cache miss: building {name}")
    else:
        reason = "inputs changed" if status == "stale" else "file does not match its checksum or is unreadable"
        logger.warning(f"cache {status}: {name} ({reason}); rebuilding it")


# ----------------------------------------------------------------------------- typed artifacts
def save_npy(path, array, key, extra=None):
    """Atomically save ``array`` as ``.npy`` with its sidecar."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return write_artifact(path, lambda f: f.write(buffer.getvalue()), key, extra)


def load_npy(path):
    """Load an ``.npy`` artifact (no pickles)."""
    return np.load(path, allow_pickle=False)


def save_json(path, obj, key, extra=None):
    """Atomically save ``obj`` as indented JSON with its sidecar."""
    text = json.dumps(obj, indent=1, default=_json_default)
    return write_artifact(path, lambda f: f.write(text), key, extra, mode="w")


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ----------------------------------------------------------------------------- locking
@contextlib.contextmanager
def locked(store):
    """Exclusive lock on ``<store>/.lock`` across processes (``filelock.FileLock``: an ``fcntl.flock`` on Unix;
    blocks until the holder releases it); on entry the temporary files of interrupted writes are removed
    (:func:`remove_orphans`)."""
    from filelock import FileLock

    os.makedirs(store, exist_ok=True)
    with FileLock(os.path.join(store, ".lock")):
        remove_orphans(store)  # writers hold this lock: a temp file of a dead writer is left over
        yield

