# coding: utf-8
"""Reusable CPU buffers for the large tensors of a beam search.

Every beam search allocates a few tensors of several to tens of MB (the decoder's self-attention cache and its
reorder target, the per-user cross-attention keys/values).  glibc serves allocations that large with fresh
``mmap`` pages and returns them to the system on free, so each search pays one page fault per 4 KB it touches:
on a 2-core CPU that was about a tenth of a TIGER-sized search.  :class:`BufferPool` keeps released buffers and
hands them out again, as the CUDA caching allocator does on GPUs (GPU tensors are simply allocated).

Buffers are taken with :meth:`BufferPool.take` and must be given back with :meth:`BufferPool.give` only once
nothing reads them any more; a buffer that is never given back is just freed by Python.  The pool is thread-safe
and holds at most ``max_bytes`` of free buffers.
"""

import threading
import weakref
from typing import Dict, List, Sequence, Tuple

import torch

_BUCKET = 1 << 18  # capacities are rounded up to multiples of 256k elements so that similar sizes share buffers


class BufferPool:
    r"""A pool of flat CPU buffers, reused by size bucket.

    Args:
        max_bytes (`int`): most bytes of free buffers the pool keeps (further ones are freed).
    """

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes
        self._free: Dict[Tuple[int, torch.dtype], List[torch.Tensor]] = {}
        self._free_bytes = 0
        self._taken: Dict[int, "weakref.ref[torch.Tensor]"] = {}  # buffers handed out and not given back
        self._lock = threading.Lock()

    def take(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised contiguous tensor of ``shape`` (from the pool on CPU, a new allocation elsewhere)."""
        device = torch.device(device)
        numel = 1
        for size in shape:
            numel *= int(size)
        if device.type != "cpu":
            return torch.empty(tuple(shape), dtype=dtype, device=device)
        capacity = max(-(-numel // _BUCKET), 1) * _BUCKET
        with self._lock:
            free = self._free.get((capacity, dtype))
            flat = free.pop() if free else None
            if flat is not None:
                self._free_bytes -= flat.numel() * flat.element_size()
        if flat is None:
            flat = torch.empty(capacity, dtype=dtype)
        with self._lock:
            self._taken = {key: ref for key, ref in self._taken.items() if ref() is not None}
            self._taken[id(flat)] = weakref.ref(flat)
        return flat[:numel].view(tuple(shape))

    def give(self, *tensors: torch.Tensor) -> None:
        """Returns buffers obtained from :meth:`take` (any other tensor, and GPU tensors, are ignored)."""
        for tensor in tensors:
            if tensor is None or tensor._base is None:
                continue
            flat = tensor._base
            size = flat.numel() * flat.element_size()
            with self._lock:
                ref = self._taken.pop(id(flat), None)
                if ref is None or ref() is not flat or self._free_bytes + size > self.max_bytes:
                    continue
                self._free.setdefault((flat.numel(), flat.dtype), []).append(flat)
                self._free_bytes += size

    def clear(self) -> None:
        """Frees all pooled buffers."""
        with self._lock:
            self._free.clear()
            self._free_bytes = 0

    @property
    def free_bytes(self) -> int:
        return self._free_bytes


#: the pool used by :class:`~recbole_genrec.generative.incremental.IncrementalT5Decoder`
DEFAULT_POOL = BufferPool()
