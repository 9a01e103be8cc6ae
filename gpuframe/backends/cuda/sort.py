"""Sort on a CUDA device: ``sort_indices`` (see :mod:`gpuframe.ops.sort`).

The driver is the one the CPU backend runs (:func:`gpuframe.backends.cpu.sort.sort_indices_with`:
key words, string ranks, a stable LSD radix sort); :class:`CudaSorter` runs its steps as the CUDA
kernels of :mod:`gpuframe.kernels.sort`. A radix pass is per-block digit histograms, one exclusive
scan of the (digit, block) counts, then a stable scatter with block-local ranks, as the hash
partition does. Everything stays on the device: per word, its least and greatest value come back
(the passes cover only the key's range), and per refinement of string
ranks two scalars; never a row.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from gpuframe.kernels import sort as SK

from ...core import memory
from ...core.column import Column
from ...core.device import Device, launch_context
from ..cpu.sort import sort_indices_with
from .launch import launch, launch_config

__all__ = ["sort_indices", "CudaSorter"]

# Grid of the radix passes: at most MAX_BLOCKS blocks, each over a contiguous range of at least
# MIN_TILES tiles (a block loads its 256 cursors once); the key range pass strides over the rows
# with at most RANGE_BLOCKS blocks.
MAX_BLOCKS = 1024
MIN_TILES = 8
RANGE_BLOCKS = 512


def _grid(n: int) -> tuple[int, int, int]:
    """``(blocks, threads, rows_per_block)`` of a radix pass over ``n > 0`` rows."""
    _, threads = launch_config(n)
    threads = min(threads, SK.TILE_MAX)
    tiles = -(-n // threads)
    blocks = max(1, min(MAX_BLOCKS, -(-tiles // MIN_TILES)))
    rows_per_block = -(-tiles // blocks) * threads
    return -(-n // rows_per_block), threads, rows_per_block


class CudaSorter:
    """Runs the sort kernels of :mod:`gpuframe.kernels.sort` on one CUDA device."""

    radix_bits = SK.RADIX_BITS

    def __init__(self, device: Device) -> None:
        self.device = device
        self.k = SK.cuda_kernels()
        self._i64 = memory.empty(1, np.int64, device)
        self._u32 = memory.empty(0, np.uint32, device)

    def empty(self, n: int, dtype: Any) -> Any:
        return memory.empty(n, dtype, self.device)

    def no_bitmap(self) -> Any:
        return memory.empty(1, np.uint8, self.device)

    @staticmethod
    def view(arr: Any, dtype: np.dtype) -> Any:
        return memory.view_as(arr, dtype)

    def fixed_words(self, values, kind, width, validity, has_valid, vbit, desc, flag_only, nulls_last, out):
        launch(self.k.fixed_words, len(out), values, kind, width, validity, has_valid, vbit, desc, flag_only,
               nulls_last, out)

    def bool_words(self, bits, dbit, validity, has_valid, vbit, desc, flag_only, nulls_last, out):
        launch(self.k.bool_words, len(out), bits, dbit, validity, has_valid, vbit, desc, flag_only, nulls_last, out)

    def dict_words(self, indices, dranks, validity, has_valid, vbit, dvalid, has_dvalid, dvbit, width, desc,
                   flag_only, nulls_last, out):
        launch(self.k.dict_words, len(out), indices, dranks, validity, has_valid, vbit, dvalid, has_dvalid, dvbit,
               width, desc, flag_only, nulls_last, out)

    def prefix_words(self, offsets, chars, depth, w, lc):
        launch(self.k.prefix_words, len(w), offsets, chars, depth, w, lc)

    def word_range(self, words, flags, null_flag: int) -> tuple[int, int]:
        n = len(words)
        lo = memory.full(1, np.iinfo(np.uint64).max, np.uint64, self.device)
        hi = memory.zeros(1, np.uint64, self.device)
        blocks, _ = launch_config(n)
        launch(self.k.word_range, n, words, self._u32 if flags is None else flags, np.uint32(null_flag), lo, hi,
               blocks=min(blocks, RANGE_BLOCKS))
        return int(memory.to_host(lo)[0]), int(memory.to_host(hi)[0])

    def radix_pass(self, w_in, p_in: Optional[Any], base: np.uint64, shift: int, w_out: Optional[Any],
                   p_out: Any) -> None:
        n = len(w_in)
        blocks, threads, rpb = _grid(n)
        counts = memory.empty(SK.BUCKETS * blocks, np.int64, self.device)
        launch(self.k.block_counts, n, w_in, base, shift, rpb, counts, threads=threads, blocks=blocks)
        cursors = memory.cumsum_exclusive(counts, np.int64)
        dummy_w = memory.empty(1, w_in.dtype, self.device) if w_out is None else w_out
        launch(self.k.scatter, n, w_in, p_out[:1] if p_in is None else p_in, p_in is None, base, shift, cursors, rpb,
               dummy_w, p_out, w_out is not None, threads=threads, blocks=blocks)

    def gather_words(self, words, perm):
        out = memory.empty(len(perm), words.dtype, self.device)
        launch(self.k.gather_words, len(perm), words, perm, out)
        return out

    def iota(self, out):
        launch(self.k.iota, len(out), out)

    def group_flags(self, perm, ranks, w, lc, flags):
        launch(self.k.group_flags, len(flags), perm, self._i64 if ranks is None else ranks, ranks is not None, w, lc,
               flags)

    def group_ranks(self, perm, flags, lc, ranks) -> tuple[int, int]:
        n = len(flags)
        incl = memory.cumsum_exclusive(flags, np.int64)
        unresolved = memory.zeros(1, np.int64, self.device)
        launch(self.k.group_ranks, n, perm, flags, lc, incl, ranks, unresolved)
        return int(memory.to_host(incl[n:n + 1])[0]), int(memory.to_host(unresolved)[0])


def sort_indices(columns: Sequence[Column], descending: Sequence[bool], nulls_last: bool) -> Any:
    dev = columns[0].device
    with launch_context(dev):
        return sort_indices_with(CudaSorter(dev), columns, descending, nulls_last)
