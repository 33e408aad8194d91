# coding: utf-8
"""Tests of the buffer pool behind the beam search's large tensors."""

import os
import sys

import torch

try:
    import recbole_genrec.generative  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole_genrec.generative.workspace import BufferPool  # noqa: E402


def test_given_back_buffers_are_reused_for_similar_sizes():
    pool = BufferPool()
    first = pool.take((3, 1000), torch.float32, "cpu")
    assert first.shape == (3, 1000) and first.is_contiguous()
    storage = first.data_ptr()
    pool.give(first)
    assert pool.free_bytes > 0
    again = pool.take((2, 1400), torch.float32, "cpu")  # another shape in the same size bucket
    assert again.shape == (2, 1400) and again.data_ptr() == storage
    assert pool.free_bytes == 0
    other = pool.take((3, 1000), torch.float64, "cpu")  # another dtype never shares a buffer
    assert other.data_ptr() != storage


def test_buffers_in_use_are_never_handed_out_twice():
    pool = BufferPool()
    a = pool.take((10,), torch.float32, "cpu")
    b = pool.take((10,), torch.float32, "cpu")
    assert a.data_ptr() != b.data_ptr()
    pool.give(a)
    pool.give(a)  # a second give of the same buffer is ignored
    c = pool.take((10,), torch.float32, "cpu")
    d = pool.take((10,), torch.float32, "cpu")
    assert c.data_ptr() == a.data_ptr() and d.data_ptr() not in (a.data_ptr(), b.data_ptr())


def test_foreign_tensors_are_not_adopted_and_the_pool_is_bounded():
    pool = BufferPool(max_bytes=2 * (1 << 18) * 4)  # room for two smallest float32 buffers
    own = torch.zeros(1 << 18)
    pool.give(own[:10], torch.ones(5))  # views of tensors the pool did not hand out are ignored
    assert pool.free_bytes == 0
    taken = [pool.take((100,), torch.float32, "cpu") for _ in range(3)]
    pool.give(*taken)
    assert pool.free_bytes == 2 * (1 << 18) * 4  # the third buffer was freed, not kept
    pool.clear()
    assert pool.free_bytes == 0
