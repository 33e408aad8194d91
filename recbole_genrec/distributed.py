"""Multi-process training on RecBole's distributed path, on GPUs (NCCL) and on CPUs (Gloo).

``recbole_genrec.quick_start.run(nproc=N)`` spawns one process per rank exactly like RecBole's ``run``; every rank
calls ``run_recbole_genrec`` with ``local_rank``, ``nproc``, ``world_size``, ``ip``, ``port`` and ``offset`` in its
config dict. RecBole's ``Config._init_device`` then opens an NCCL process group, calls
``torch.cuda.set_device(local_rank)`` and sets ``device = cuda:<local_rank>``, and RecBole's trainers wrap the model
in ``DistributedDataParallel(model, device_ids=[local_rank])``: nothing of that runs without GPUs. Our ``Config``
overrides only ``_get_model_and_dataset`` and ``_load_internal_config_dict`` (RecBole-GNN style), so
:func:`process_group` adapts the rest from the outside. Outside a rank (no ``local_rank`` in the config dict) it
does nothing at all. Inside a rank it

1. chooses the backend: config key ``dist_backend`` (``nccl`` | ``gloo``; read like RecBole reads keys: command
   line ``--dist_backend=gloo`` over the config dict over the config files) or, when unset, ``nccl`` if a CUDA
   device is visible (``torch.cuda.device_count()``, which does not initialise CUDA) and ``gloo`` otherwise;
2. calls ``torch.distributed.init_process_group`` itself with that backend, global rank ``local_rank + offset``,
   ``world_size`` and ``init_method="tcp://<ip>:<port>"`` (``timeout``: config key ``dist_timeout`` in seconds,
   else PyTorch's default), and while the context is open replaces ``torch.distributed.init_process_group`` by a
   check that the caller asks for the same rank and world size; RecBole's ``_init_device`` thus joins this group
   instead of opening an NCCL one;
3. with Gloo and no visible CUDA device ("CPU mode"): returns a config dict whose ``gpu_id`` is ``-1,-1,...`` (one
   entry per process, because ``_init_device`` asserts ``len(gpu_id.split(",")) >= nproc``; it also exports
   ``gpu_id`` as ``CUDA_VISIBLE_DEVICES``, and ``-1`` hides every GPU), turns ``torch.cuda.set_device`` into a no-op,
   and has RecBole's trainers build ``DistributedDataParallel`` without ``device_ids`` (which must be ``None`` for
   CPU modules); :meth:`DistributedRun.adopt` then sets ``config["device"] = cpu``. Unless ``OMP_NUM_THREADS`` is
   set, each CPU rank also uses ``cpu_count // nproc`` intra-op threads (like ``torchrun``, which defaults to 1):
   ``nproc`` ranks with all cores each oversubscribe the machine, which made a tiny epoch ~50x slower here.
   With CUDA devices RecBole's own device handling is kept (``cuda:<local_rank>``), also with Gloo;
4. on every device, has DDP ignore sparse buffers (``recbole.trainer.trainer.DistributedDataParallel`` is wrapped
   while the context is open): they are built from the dataset, identical on every rank, and DDP cannot broadcast
   them (AlphaRec's graph adjacency would fail with "No support for sparse tensors");
5. on exit destroys the process group and restores the patched names and the thread count, whether the run
   succeeded or failed.

:class:`DistributedRun` also orders the work of the ranks: :meth:`~DistributedRun.rank_zero_first` lets rank 0
build the preprocessing caches (text embeddings, semantic IDs, PRORec stage I) while the other ranks wait at a
barrier and then read them (the file lock of :func:`recbole_genrec.preprocess.cache.locked` stays as the second
guard, e.g. for ranks of another machine sharing the cache folder); :meth:`~DistributedRun.share_checkpoint` gives
every rank rank 0's checkpoint path (RecBole names it after each process's own clock).

:class:`ShardedEvaluation` (a trainer mixin, used by ``GenerativeTrainer`` and added to any other trainer of a
multi-process run by :func:`recbole_genrec.run_builder.trainer_class`) makes distributed evaluation exact: RecBole's ``DistributedSampler`` shards the
evaluated users across ranks but pads the last shard with repeated users, and ``Trainer._map_reduce`` averages
the ranks' metrics weighted by ``len(batched_data)`` summed over batches (4 per batch: a batch-count weight).
Instead, every rank's per-user evaluation rows are gathered, users evaluated twice are dropped and the metrics
are computed once over all users, identical on every rank.
"""

import contextlib
import datetime
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import yaml

BACKENDS = ("nccl", "gloo")
_ROW_KEYS = ("rec.topk", "rec.meanrank", "rec.items", "rec.score", "data.label")  # one row per evaluated user


# ============================================================================= config keys read before Config
def requested(key, config_dict=None, config_file_list=None):
    """Value of ``key`` as RecBole would resolve it: ``--key=value`` on the command line, else the config dict,
    else the last config file that sets it; ``None`` when unset (``Config`` is not built yet when this is needed)."""
    for arg in reversed(sys.argv[1:]):
        if arg.startswith(f"--{key}="):
            return arg.split("=", 1)[1].strip().strip("'\"")
    if config_dict and config_dict.get(key) is not None:
        return config_dict[key]
    for path in reversed(config_file_list or []):
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
        if isinstance(values, dict) and values.get(key) is not None:
            return values[key]
    return None


def resolve_backend(requested_backend=None):
    """``(backend, on_cpu)``: the requested backend (checked) or ``nccl`` with a CUDA device, ``gloo`` without."""
    n_gpus = torch.cuda.device_count()
    backend = str(requested_backend).lower() if requested_backend else ("nccl" if n_gpus > 0 else "gloo")
    if backend not in BACKENDS:
        raise ValueError(f"dist_backend must be one of {BACKENDS}, got {requested_backend!r}")
    if not dist.is_available() or (backend == "gloo" and not dist.is_gloo_available()):
        raise RuntimeError(f"this PyTorch build has no torch.distributed {backend} backend")
    if backend == "nccl" and (n_gpus == 0 or not dist.is_nccl_available()):
        raise ValueError("dist_backend: nccl needs CUDA devices and NCCL; use dist_backend: gloo to run on CPUs")
    return backend, backend == "gloo" and n_gpus == 0


# ============================================================================= the context manager
class DistributedRun:
    """What one process of a run knows about the others (a single process is rank 0 of 1)."""

    def __init__(self, config_dict=None, backend=None, on_cpu=False):
        config_dict = dict(config_dict or {})
        self.enabled = "local_rank" in config_dict
        self.config_dict = config_dict
        self.backend = backend
        self.on_cpu = on_cpu
        self.local_rank = int(config_dict.get("local_rank", 0))
        self.rank = self.local_rank + int(config_dict.get("offset", 0) or 0) if self.enabled else 0
        self.world_size = int(config_dict.get("world_size", 1)) if self.enabled else 1
        self.is_main = self.rank == 0

    def adopt(self, config):
        """Record the backend in ``config`` and put the CPU ranks on ``cpu`` (RecBole set ``cuda:<local_rank>``)."""
        if not self.enabled:
            return config
        config["dist_backend"] = self.backend
        if self.on_cpu:
            config["device"] = torch.device("cpu")
        return config

    def barrier(self):
        if self.enabled:
            if self.backend == "nccl":
                dist.barrier(device_ids=[torch.cuda.current_device()])
            else:
                dist.barrier()

    @contextlib.contextmanager
    def rank_zero_first(self):
        """Rank 0 runs the body first; the others wait for it at a barrier, then run it (and hit its caches)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def share_checkpoint(self, trainer):
        """Give every rank the checkpoint path of rank 0, the only rank that writes it."""
        if self.enabled:
            names = [trainer.saved_model_file]
            dist.broadcast_object_list(names, src=0)
            trainer.saved_model_file = names[0]
        return trainer


def _checked_init(rank, world_size):
    def init_process_group(*args, **kwargs):
        asked_rank, asked_size = kwargs.get("rank", -1), kwargs.get("world_size", -1)
        if (asked_rank not in (-1, rank)) or (asked_size not in (-1, world_size)):
            raise RuntimeError(
                f"the process group is open as rank {rank} of {world_size}, but rank {asked_rank} of "
                f"{asked_size} was asked for (conflicting local_rank/offset/world_size settings?)"
            )

    return init_process_group


def _ddp_builder(ddp, on_cpu):
    def build(module, device_ids=None, **kwargs):
        # Sparse buffers (e.g. a graph's normalised adjacency) are built from the dataset, identical on every rank,
        # and cannot be broadcast by DDP ("No support for sparse tensors"): DDP ignores them.
        sparse = [name for name, buffer in module.named_buffers() if buffer.is_sparse]
        if sparse:
            known = list(getattr(module, "_ddp_params_and_buffers_to_ignore", []))
            ddp._set_params_and_buffers_to_ignore_for_model(module, known + sparse)
        if on_cpu:
            device_ids = None  # DDP of a CPU module takes no device_ids
        return ddp(module, device_ids=device_ids, **kwargs)

    return build


@contextlib.contextmanager
def process_group(config_dict=None, config_file_list=None):
    """Open this rank's process group with the right backend around a whole ``run_recbole_genrec`` (see the module
    docstring for exactly what is patched). Yields a :class:`DistributedRun`; build the ``Config`` from its
    ``config_dict`` and pass the ``Config`` to its :meth:`~DistributedRun.adopt`."""
    if not config_dict or "local_rank" not in config_dict:
        yield DistributedRun(config_dict)
        return
    import recbole.trainer.trainer as recbole_trainer  # patched only in multi-process runs

    backend, on_cpu = resolve_backend(requested("dist_backend", config_dict, config_file_list))
    run = DistributedRun(config_dict, backend, on_cpu)
    nproc = int(config_dict.get("nproc", run.world_size))
    if on_cpu:
        run.config_dict["gpu_id"] = ",".join(["-1"] * nproc)
    timeout = requested("dist_timeout", config_dict, config_file_list)
    kwargs = {"timeout": datetime.timedelta(seconds=float(timeout))} if timeout else {}
    init_method = f"tcp://{config_dict.get('ip', 'localhost')}:{config_dict.get('port', '5678')}"
    dist.init_process_group(backend=backend, rank=run.rank, world_size=run.world_size, init_method=init_method,
                            **kwargs)
    saved = {"init": dist.init_process_group, "set_device": torch.cuda.set_device,
             "ddp": recbole_trainer.DistributedDataParallel, "threads": torch.get_num_threads()}
    try:
        dist.init_process_group = _checked_init(run.rank, run.world_size)
        recbole_trainer.DistributedDataParallel = _ddp_builder(saved["ddp"], on_cpu)
        if on_cpu:
            torch.cuda.set_device = lambda device: None
            if not os.environ.get("OMP_NUM_THREADS"):
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
        yield run
    finally:
        dist.init_process_group = saved["init"]
        torch.cuda.set_device = saved["set_device"]
        recbole_trainer.DistributedDataParallel = saved["ddp"]
        torch.set_num_threads(saved["threads"])
        if dist.is_initialized():
            dist.destroy_process_group()


# ============================================================================= exact sharded evaluation
class _ShardState:
    def __init__(self, positions):
        self.positions = positions  # [n] dataset positions of this rank's users, in iteration order
        self.merged = False


class _GatheringEvaluator:
    """Stands in for the trainer's ``Evaluator`` during one distributed ``evaluate``: gathers all ranks' rows."""

    def __init__(self, evaluator, state):
        self.evaluator, self.state = evaluator, state

    def evaluate(self, struct):
        rows = {key: struct.get(key) for key in _ROW_KEYS if key in struct}
        aligned = bool(rows) and {len(value) for value in rows.values()} == {len(self.state.positions)}
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (self.state.positions, rows, aligned))
        if not all(ok for _, _, ok in gathered):  # rows are not one per sampled user: ranks' metrics are averaged
            return self.evaluator.evaluate(struct)  # by ShardedEvaluation._map_reduce, weighted by users
        positions = np.concatenate([np.asarray(p, dtype=np.int64) for p, _, _ in gathered])  # [sum n]
        _, first = np.unique(positions, return_index=True)  # padded repeats dropped, dataset order restored
        keep = torch.from_numpy(first)
        for key in rows:
            struct.set(key, torch.cat([r[key] for _, r, _ in gathered], dim=0)[keep])
        self.state.merged = True
        return self.evaluator.evaluate(struct)


def _shard_positions(eval_data):
    sampler = getattr(eval_data, "sampler", None)
    if sampler is None:
        return np.arange(0)
    return np.fromiter((int(i) for i in sampler), dtype=np.int64)


class ShardedEvaluation:
    """Trainer mixin: exact metrics when RecBole shards evaluation across ranks.

    Under DDP RecBole's eval dataloaders shard the users with ``DistributedSampler(shuffle=False, drop_last=False)``:
    rank ``r`` evaluates positions ``r, r + W, r + 2W, ...`` and the shards are padded to equal length with users
    from the start, who are then evaluated twice. ``Trainer._map_reduce`` averages each rank's already-averaged
    (and rounded) metrics weighted by ``num_sample``, which counts batches, not users. Here each rank's per-user rows
    (``rec.topk``, ``rec.meanrank``, ``rec.items``, ``rec.score``, ``data.label``) are all-gathered together with
    their dataset positions; repeats are dropped and rows put back in dataset order, and RecBole's ``Evaluator``
    computes the metrics once over all users, so a metric is the mean over users, identical on every rank and equal
    to a single-process evaluation (also for non-averaged metrics such as ItemCoverage or GiniIndex). If a
    dataloader yields rows that do not match its sampled positions, the ranks' metrics are averaged instead,
    each weighted by its number of sampled users. Single-process evaluation is unchanged.
    """

    _shard_state = None

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if self.config["single_spec"] or not eval_data:
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
        evaluator, self._shard_state = self.evaluator, _ShardState(_shard_positions(eval_data))
        self.evaluator = _GatheringEvaluator(evaluator, self._shard_state)
        try:
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
        finally:
            self.evaluator, self._shard_state = evaluator, None

    def _map_reduce(self, result, num_sample):
        """Metrics of all users (already global), or the users-weighted mean of the ranks' metrics."""
        state = self._shard_state
        if state is not None and state.merged:
            return dict(result)
        n_users = len(state.positions) if state is not None else num_sample
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (n_users, dict(result)))
        total = sum(n for n, _ in gathered)
        return {key: round(sum(n * r[key] for n, r in gathered) / max(total, 1), self.config["metric_decimal_place"])
                for key in result}


__all__ = ["BACKENDS", "DistributedRun", "ShardedEvaluation", "process_group", "requested", "resolve_backend"]
