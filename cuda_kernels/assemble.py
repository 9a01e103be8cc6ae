"""The CUDA kernels that assemble a received table on the device (``gpuframe.comm.exchange``).

The exchange receives every piece's validity bitmap, bool bitmap and string offsets into one
device scratch buffer per column and kind; these kernels then build the final buffers from them
with nothing but a small table of piece descriptors crossing from the host:

* ``concat_bits``: one LSB-first bitmap from pieces that each start at an arbitrary bit (a piece
  without a bitmap is all set), as ``comm.exchange._concat_bitmaps`` does on the host;
* ``rebase_offsets``: string offsets of the concatenated text, each piece's offsets minus its
  base plus where its bytes start (int32 or int64 out), as ``_concat_offsets``;
* ``shift_indices``: dictionary indices shifted by where each piece's dictionary starts in the
  concatenated one (in place, or widened into a new array), each non-null index checked against
  its own piece's dictionary first;
* ``differs``: whether the pieces' dictionaries (offsets less their base, then bytes) differ
  from the first piece's, so that the usual case (every piece of a categorical carries the same
  dictionary) keeps one copy.

Piece descriptors: an int64 array ``desc`` of shape ``(5, pieces + 1)``; column ``p`` describes
piece ``p`` (in output row order) and the last column holds the row total in ``D_ROW``:

* ``D_ROW``: the piece's first output row;
* ``D_SRC``: bitmaps: its first byte in the scratch (``-1``: no bitmap, every bit set);
  offsets: its first element in the scratch;
* ``D_BIT``: bitmaps: the bit of that byte that holds its first row; offsets: its base (the
  sender's first offset);
* ``D_ADD``: offsets: where its text starts in the assembled text; indices: where its
  dictionary starts in the concatenated dictionary;
* ``D_LIM``: indices: the size of its own dictionary (a non-null index must be below it).

The per-row functions are defined once (:mod:`gpuframe.kernels.per_row`) and compile for both
targets; the launchers are in :mod:`gpuframe.comm.device_assembly`.
"""
from __future__ import annotations

import functools

import numpy as np

from .kernel_set import KernelSet
from .per_row import per_row

# rows of the piece descriptors (see the module docstring)
D_ROW = 0
D_SRC = 1
D_BIT = 2
D_ADD = 3
D_LIM = 4
D_FIELDS = 5

# numba.cuda, bound by the first cuda_kernels() call: a module global, because the simulator
# runs kernels by swapping the numba.cuda module in their globals.
cuda = None


@per_row
def piece_at(desc, r):
    """The piece that holds output row ``r`` (``0 <= r < total``): the last piece whose first
    row is ``<= r``, so empty pieces (whose first row equals the next one's) are skipped."""
    lo = 0
    hi = desc.shape[1] - 2
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if desc[D_ROW, mid] <= r:
            lo = mid
        else:
            hi = mid - 1
    return lo


@per_row
def bitmap_byte(desc, scratch, nrows, j):
    """Byte ``j`` of the assembled bitmap of ``nrows`` rows (bits past the last row are 0)."""
    first = j * 8
    p = piece_at(desc, first)
    out = np.int64(0)
    for k in range(8):
        r = first + k
        if r >= nrows:
            break
        while desc[D_ROW, p + 1] <= r:
            p += 1
        src = desc[D_SRC, p]
        bit = np.int64(1)
        if src >= 0:
            b = desc[D_BIT, p] + r - desc[D_ROW, p]
            bit = (np.int64(scratch[src + (b >> 3)]) >> (b & 7)) & 1
        out |= bit << k
    return out


@per_row
def rebased_offset(desc, scratch, nrows, total_chars, r):
    """Offset ``r`` (``0 <= r <= nrows``) of the assembled string column: the piece's own offset
    minus its base plus where its text starts; the last one is the text's size."""
    if r >= nrows:
        return np.int64(total_chars)
    p = piece_at(desc, r)
    return np.int64(scratch[desc[D_SRC, p] + r - desc[D_ROW, p]]) - desc[D_BIT, p] + desc[D_ADD, p]


@per_row
def shift_index_row(desc, src, out, valid, has_valid, r):
    """``out[r] = src[r] + `` the start of row ``r``'s piece's dictionary (null rows too, as on
    the host). Returns 0, or the piece number + 1 when the row is not null and its index is
    outside its own piece's dictionary (once shifted it would read another rank's entries)."""
    p = piece_at(desc, r)
    v = np.int64(src[r])
    bad = np.int64(0)
    if not has_valid or ((np.int64(valid[r >> 3]) >> (r & 7)) & 1) != 0:
        if v < 0 or v >= desc[D_LIM, p]:
            bad = np.int64(p + 1)
    out[r] = v + desc[D_ADD, p]
    return bad


@per_row
def differs_from_first(desc, arr, m, t):
    """Item ``t`` of the comparison of pieces ``1..`` with piece 0, ``m`` elements each: whether
    element ``t % m`` of piece ``1 + t // m`` (at ``D_SRC``, minus its ``D_BIT``) differs from
    the same element of piece 0 (string offsets minus their base; bytes minus 0)."""
    q = 1 + t // m
    i = t - (q - 1) * m
    a = np.int64(arr[desc[D_SRC, q] + i]) - desc[D_BIT, q]
    b = np.int64(arr[desc[D_SRC, 0] + i]) - desc[D_BIT, 0]
    return a != b


@functools.lru_cache(maxsize=None)
def cuda_kernels() -> KernelSet:
    """Build (once) the assembly kernels (``numba.cuda`` is imported here, not at module import,
    so the CPU path never pays for it)."""
    global cuda
    from numba import cuda

    @cuda.jit
    def k_concat_bits(desc, scratch, out, nrows):
        j = cuda.grid(1)
        if j < out.shape[0]:
            out[j] = bitmap_byte(desc, scratch, nrows, j)

    @cuda.jit
    def k_rebase_offsets(desc, scratch, out, nrows, total_chars):
        r = cuda.grid(1)
        if r < out.shape[0]:
            out[r] = rebased_offset(desc, scratch, nrows, total_chars, r)

    @cuda.jit
    def k_shift_indices(desc, src, out, valid, has_valid, flag):
        r = cuda.grid(1)
        if r < out.shape[0]:
            bad = shift_index_row(desc, src, out, valid, has_valid, r)
            if bad != 0:
                flag[0] = bad   # any offending piece will do: racing writers all write one

    @cuda.jit
    def k_differs(desc, arr, m, n, flag):
        t = cuda.grid(1)
        if t < n:
            if differs_from_first(desc, arr, m, t):
                flag[0] = 1

    return KernelSet(concat_bits=k_concat_bits, rebase_offsets=k_rebase_offsets, shift_indices=k_shift_indices,
                     differs=k_differs)
