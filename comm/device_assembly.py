"""Launchers of the kernels that assemble a received device table (:mod:`gpuframe.kernels.assemble`).

:mod:`gpuframe.comm.exchange` receives the validity bitmaps, bool bitmaps and string offsets of
a device table into device scratch buffers, one per column and kind; these functions build the
final buffers from them on the device. What crosses from the host is the table of piece
descriptors (five int64 per piece, :func:`descriptors`); what comes back, one int64 flag of
the dictionary index check. ``numba.cuda`` and the CUDA backend are imported on the first call,
so the CPU path never imports them.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from gpuframe.core import memory
from gpuframe.core.device import Device, launch_context


def descriptors(rows: Sequence[int], total: int, *, src: Sequence[int] = (), bit: Sequence[int] = (),
                add: Sequence[int] = (), lim: Sequence[int] = ()) -> np.ndarray:
    """The piece descriptors (host, int64, ``(D_FIELDS, pieces + 1)``) of
    :mod:`gpuframe.kernels.assemble`: ``rows`` the pieces' first output rows, ``total`` the row
    count; the other fields per piece (zero where not given)."""
    from gpuframe.kernels.assemble import D_ADD, D_BIT, D_FIELDS, D_LIM, D_ROW, D_SRC

    npieces = len(rows)
    desc = np.zeros((D_FIELDS, npieces + 1), dtype=np.int64)
    desc[D_ROW, :npieces] = rows
    desc[D_ROW, npieces] = total
    for field, values in ((D_SRC, src), (D_BIT, bit), (D_ADD, add), (D_LIM, lim)):
        if len(values):
            if len(values) != npieces:
                raise ValueError(f"descriptors: expected {npieces} values per field (one per piece), got "
                                 f"{len(values)}")
            desc[field, :npieces] = values
    return desc


def _launch(name: str, n: int, device: Device, *args: Any) -> None:
    from gpuframe.backends.cuda.launch import launch
    from gpuframe.kernels.assemble import cuda_kernels

    with launch_context(device):
        launch(cuda_kernels()[name], n, *args)


def _nonempty(arr: Any, dtype: Any, device: Device) -> Any:
    """``arr``, or a 1-element stand-in when it is empty (no 0-byte kernel argument)."""
    return arr if int(arr.shape[0]) else memory.empty(1, dtype, device)


def concat_bits(desc: np.ndarray, scratch: Any, nrows: int, device: Device) -> Any:
    """The LSB-first bitmap (uint8, on ``device``) of ``nrows`` rows from the pieces' bitmaps in
    ``scratch`` (``desc``: first row, first scratch byte or -1 for all set, first bit)."""
    out = memory.empty((nrows + 7) // 8, np.uint8, device)
    if nrows:
        _launch("concat_bits", int(out.shape[0]), device, memory.to_device(desc, device),
                _nonempty(scratch, np.uint8, device), out, np.int64(nrows))
    return out


def rebase_offsets(desc: np.ndarray, scratch: Any, nrows: int, total_chars: int, dtype: Any,
                   device: Device) -> Any:
    """String offsets (``dtype``, ``nrows + 1``, on ``device``) of the concatenated text from the
    pieces' offsets in ``scratch`` (``desc``: first row, first scratch element, base, first byte;
    ``scratch`` may be None when no piece arrived)."""
    dtype = np.dtype(dtype)
    out = memory.empty(nrows + 1, dtype, device)
    if scratch is None or not int(scratch.shape[0]):  # no piece at all: the one offset is the text size
        scratch = memory.empty(1, dtype, device)
    _launch("rebase_offsets", nrows + 1, device, memory.to_device(desc, device), scratch, out, np.int64(nrows),
            np.int64(total_chars))
    return out


def shift_indices(desc: np.ndarray, src: Any, out: Any, validity: Optional[Any], device: Device) -> int:
    """``out[r] = src[r] +`` the start of row ``r``'s piece's dictionary (``out`` may be ``src``).
    Returns 0, or 1 + the number of a piece whose non-null index lies outside its own dictionary
    (``desc``: first row, dictionary start, dictionary size)."""
    n = int(out.shape[0])
    if not n:
        return 0
    flag = memory.zeros(1, np.int64, device)
    valid = validity if validity is not None else memory.empty(1, np.uint8, device)
    _launch("shift_indices", n, device, memory.to_device(desc, device), src, out, valid, validity is not None, flag)
    return int(memory.to_host(flag)[0])


def differs(desc: np.ndarray, arr: Any, m: int, device: Device) -> bool:
    """Whether any piece ``1..`` holds other values than piece 0 in its ``m`` elements of ``arr``
    (``desc``: each piece's first element, and a value subtracted from each of its elements)."""
    npieces = int(desc.shape[1]) - 1
    n = (npieces - 1) * int(m)
    if n <= 0:
        return False
    flag = memory.zeros(1, np.int64, device)
    _launch("differs", n, device, memory.to_device(desc, device), arr, np.int64(m), np.int64(n), flag)
    return bool(memory.to_host(flag)[0])
