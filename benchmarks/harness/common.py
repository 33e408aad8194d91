"""What every part of the harness uses: paths, progress lines, machine facts, JSON-safe values."""

import os
import platform
import threading

import numpy as np

from benchmarks.machine import cpu_name, load_average

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # benchmarks/
ROOT = os.path.dirname(BENCH_DIR)  # the checkout
RUN_SCRIPT = os.path.join(BENCH_DIR, "run.py")
PROGRESS = "[bench]"
print_lock = threading.Lock()


def say(message):
    with print_lock:
        print(f"{PROGRESS} {message}", flush=True)


def default_cache_root():
    """``$RECBOLE_GENREC_CACHE`` or ``~/.cache/recbole_genrec``, absolute."""
    root = os.environ.get("RECBOLE_GENREC_CACHE") or os.path.join("~", ".cache", "recbole_genrec")
    return os.path.abspath(os.path.expanduser(root))


def machine_info(device):
    import torch  # here, not at module level: the CLI parses its flags (and --help) without loading torch

    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average": load_average(),
        "device": device,
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return info


def jsonable(value):
    """``value`` with numpy scalars / small arrays as plain numbers and lists (large arrays as their shape)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"array{list(value.shape)}"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
