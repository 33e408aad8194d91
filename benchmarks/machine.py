"""What every benchmark script records about the machine and the code: CPU name, load, library versions, git commit."""

import os
import platform
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_name():
    """The CPU model from ``/proc/cpuinfo`` (Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average():
    """1/5/15-minute load averages, rounded (``None`` where the OS has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def git_commit(override=None):
    """``<sha>`` plus the number of uncommitted paths, or ``override`` (a checkout copied without ``.git``)."""
    if override:
        return override
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown (no git checkout)"
        changed = len([line for line in dirty.stdout.splitlines() if line.strip()])
        return sha.stdout.strip() + (f" (+{changed} uncommitted paths)" if changed else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git unavailable)"


def library_versions():
    """Versions of the libraries that decide the numbers (a missing optional one is recorded as such)."""
    versions = {"python": platform.python_version()}
    for name in ("torch", "recbole", "transformers", "numpy", "scipy", "pandas", "faiss"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except Exception as err:  # a missing optional package is information, not a failure
            versions[name] = f"missing ({type(err).__name__})"
    return versions
