"""CPU threading defaults that suit a shared machine.

torch sizes its intra-op thread pool from the number of CPUs it sees, not from a container's CPU quota, and GNU
OpenMP (the runtime of torch's Linux CPU wheels) spin-waits for work between parallel regions.  On a machine where
other processes compete for the cores, spinning threads steal the time that the thread doing the work needs, and a
parallel region finishes only when its slowest, descheduled thread does: the README's first command (NGCF on
ml-100k) took 260-305 s per epoch under load with torch's defaults against 32.5 s with one thread.  This module

* sets ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of spinning) unless the user set ``OMP_WAIT_POLICY`` or
  ``GOMP_SPINCOUNT``.  OpenMP reads it once, when torch is first imported, so :func:`set_wait_policy` runs at the very
  start of ``import recbole_genrec``; it cannot change a torch that was imported before;
* sets torch's intra-op threads to the CPUs this process may use (:func:`available_cpus`: its CPU affinity, capped by
  a cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` quota, rounded down, at least 1), unless the user chose:
  ``OMP_NUM_THREADS`` in the environment wins, then the config key ``cpu_threads`` (:func:`configure` with a
  config), then a ``torch.set_num_threads`` the user called after ``import recbole_genrec`` (a later
  :func:`configure` keeps it).

threadpoolctl does not replace this module: it limits the BLAS/OpenMP pools of libraries already loaded, but it
neither counts the CPUs a cgroup quota allows nor sets the wait policy before torch loads OpenMP, and torch's own
intra-op pool is set with ``torch.set_num_threads``.
"""

import math
import os
import warnings
from typing import Mapping, MutableMapping, Optional

CONFIG_KEY = "cpu_threads"
CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"

# What the last call of configure() decided: {"threads": int, "source": str}
state = {"threads": None, "source": None}


def set_wait_policy(environ: Optional[MutableMapping[str, str]] = None) -> bool:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the user set a wait policy or spin count; True if it was set here."""
    environ = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _cgroup_paths(proc_cgroup: str):
    """``{controller: path}`` of this process from ``/proc/self/cgroup`` (v2's unified entry has controller "")."""
    paths = {}
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                paths[controller] = parts[2]
    return paths


def _ancestors(root: str, path: str):
    """``root/path``, then each parent up to ``root`` itself (a limit on any ancestor applies to the process).
    A path that climbs out of ``root`` (``/../..``, seen outside a cgroup namespace) is clipped to it."""
    path = os.path.normpath("/" + path).lstrip("/")
    while True:
        yield os.path.join(root, path) if path else root
        if not path:
            return
        path = os.path.dirname(path)


def cgroup_cpu_limit(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> Optional[float]:
    """CPUs' worth of time per period that this process's cgroup may use (e.g. 1.5), or None without a quota.

    cgroup v2: ``cpu.max`` ("<quota> <period>" or "max <period>") in the process's cgroup and its ancestors;
    cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1 = none) under the ``cpu`` controller's mount.
    In a container the process's cgroup is often the mount's root, so the root is read too.  The smallest limit wins.
    """
    paths = _cgroup_paths(proc_cgroup)
    limits = []
    if "" in paths:  # v2
        for folder in _ancestors(root, paths[""]):
            fields = (_read(os.path.join(folder, "cpu.max")) or "").split()
            if len(fields) == 2 and fields[0] != "max":
                try:
                    limits.append(int(fields[0]) / int(fields[1]))
                except (ValueError, ZeroDivisionError):
                    pass
    for controller in ("cpu", "cpuacct"):  # v1 (cpu is usually co-mounted as cpu,cpuacct)
        if controller not in paths:
            continue
        for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            base = os.path.join(root, mount)
            if not os.path.isdir(base):
                continue
            for folder in _ancestors(base, paths[controller]):
                quota, period = _read(os.path.join(folder, "cpu.cfs_quota_us")), _read(
                    os.path.join(folder, "cpu.cfs_period_us"))
                try:
                    if quota is not None and period is not None and int(quota) > 0:
                        limits.append(int(quota) / int(period))
                except (ValueError, ZeroDivisionError):
                    pass
        break
    return min(limits) if limits else None


def available_cpus(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota (rounded down), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        cpus = min(cpus, max(1, math.floor(limit)))
    return max(1, cpus)


def _config_threads(config) -> Optional[int]:
    if config is None:
        return None
    try:
        value = config[CONFIG_KEY]
    except (KeyError, TypeError):
        return None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{CONFIG_KEY} must be a positive integer (intra-op CPU threads), got {value!r}; "
                         f"drop it to use the CPUs this process may use ({available_cpus()})")
    return value


def configure(config: Optional[Mapping] = None, environ: Optional[Mapping[str, str]] = None) -> int:
    """Sets torch's intra-op thread count for this process; returns it.

    Order: ``OMP_NUM_THREADS`` (left to torch, which read it at import) > ``config["cpu_threads"]`` >
    a count the user already set with ``torch.set_num_threads`` > :func:`available_cpus`.
    """
    import torch

    environ = os.environ if environ is None else environ
    chosen = _config_threads(config)
    if environ.get("OMP_NUM_THREADS"):
        if chosen is not None and chosen != torch.get_num_threads():
            warnings.warn(f"{CONFIG_KEY}={chosen} is not applied: OMP_NUM_THREADS={environ['OMP_NUM_THREADS']} in the "
                          f"environment sets torch's threads ({torch.get_num_threads()}); unset it to use {CONFIG_KEY}")
        state.update(threads=torch.get_num_threads(), source="OMP_NUM_THREADS")
    elif chosen is not None:
        torch.set_num_threads(chosen)
        state.update(threads=chosen, source=CONFIG_KEY)
    elif state["threads"] is not None and torch.get_num_threads() != state["threads"]:
        state.update(threads=torch.get_num_threads(), source="torch.set_num_threads")  # the user changed it since
    else:
        threads = available_cpus()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        state.update(threads=threads, source="available CPUs")
    return state["threads"]
