"""DLPack: columns as tensors (``Column.__dlpack__``, :func:`table_to_torch`) and tensors as
columns (:func:`from_dlpack`).

What each column type becomes (the same rules for ``Column.__dlpack__`` and ``to_torch``):

========================  ==================================================================
int*, uint*, float*       the values, zero-copy (``data_ptr == Buffer.ptr + offset * itemsize``)
date32                    its int32 day counts, zero-copy
timestamp (any unit, tz)  its int64 counts of the unit, zero-copy (the time zone is not carried)
dictionary<int, string>   its integer *indices*, zero-copy (the dictionary strings are not exported)
bool                      unpacked to one byte per row (``torch.bool``): a copy, because Arrow
                          stores booleans as bits and DLPack has no bit type; refused with
                          ``BufferError`` when the consumer asks ``copy=False``
string, large_string      ``TypeError`` naming the column: variable-width data is not a tensor
========================  ==================================================================

Nulls: DLPack carries no validity mask, so a column with nulls is refused (``ValueError`` naming
the column and its null count) unless the caller asks for ``nulls="mask"`` in
:func:`table_to_torch`, which returns ``(values, valid)`` pairs: ``valid`` is a new ``torch.bool``
tensor and the ``values`` at null rows are unspecified.

On a real GPU the export is CuPy's: ``__dlpack__`` hands the consumer's ``stream`` to CuPy, which
makes that stream wait for ours (the protocol's stream handshake). "Ours" is the stream the
column's buffers were written on (``Buffer.stream``, the producing operation's stream; see
:mod:`gpuframe.core.streams`), made CuPy's current stream for the handshake; a bool column is
unpacked on that stream too. Under the CUDA simulator there
is no device memory to share: exporting a CUDA column raises ``BufferError``.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Literal, Optional, Union, overload

import numpy as np
import pyarrow as pa

from ..core import memory, streams
from ..core.buffer import Buffer
from ..core.column import Column
from ..core.device import CPU, CUDA_INSTALL_HINT, Device, NoGPUError, cudasim_enabled, require_cuda
from ..core.dtypes import Layout
from ..core.table import Table

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["column_dlpack", "column_dlpack_device", "from_dlpack", "table_to_torch"]

# DLPack device types (dlpack.h DLDeviceType)
KDL_CPU = 1
KDL_CUDA = 2
KDL_CUDA_HOST = 3
KDL_CUDA_MANAGED = 13

TORCH_INSTALL = "pip install 'gpuframe[torch]'"


def column_dlpack_device(col: Column) -> tuple[int, int]:
    """``Column.__dlpack_device__``: ``(1, 0)`` on the CPU, ``(2, id)`` on CUDA GPU ``id``."""
    dev = col.device
    return (KDL_CUDA, dev.id) if dev.is_cuda else (KDL_CPU, 0)


def _check_exportable(col: Column, name: str, *, copy: Optional[bool]) -> None:
    if col.layout == Layout.STRING:
        raise TypeError(f"column {name!r} has type {col.dtype}: strings have no tensor form "
                        "(dictionary-encode it to export its integer codes)")
    if col.device.is_cuda and cudasim_enabled():
        raise BufferError(f"column {name!r} is on {col.device} under the CUDA simulator, which has no "
                          "device memory to share through DLPack; move it with .to('cpu') first")
    if col.layout == Layout.BOOL and copy is False:
        raise BufferError(f"column {name!r} is bool, stored as bits: exporting it unpacks the bits "
                          "(a copy), which copy=False forbids")


def _tensor_source(col: Column, name: str, *, copy: Optional[bool]) -> Any:
    """The array (numpy or CuPy) that DLPack exports for ``col``, following the module table."""
    _check_exportable(col, name, copy=copy)
    if col.layout == Layout.BOOL:
        return memory.view_as(col.bool_bytes(), np.bool_)
    return col.values()


def _null_error(col: Column, name: str) -> ValueError:
    return ValueError(f"column {name!r} has {col.null_count} null(s) and DLPack has no validity mask; "
                      "fill the nulls first, or call table_to_torch(..., nulls='mask') to get "
                      "(values, valid) pairs")


def _kwargs(**kw: Any) -> dict[str, Any]:
    # pass only what the consumer gave: older producers reject keywords they do not know
    return {k: v for k, v in kw.items() if v is not None}


def column_dlpack(col: Column, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                  copy: Optional[bool] = None, allow_nulls: bool = False, name: str = "<column>") -> Any:
    """``Column.__dlpack__``: a DLPack capsule of the column's values (see the module table).

    Parameters
    ----------
    stream, max_version, dl_device, copy
        As in the array-API ``__dlpack__``; passed to NumPy (CPU) or CuPy (CUDA), which perform
        the stream handshake on a GPU.
    allow_nulls : bool
        Export the values of a column that has nulls (the caller handles validity).
    name : str
        Used in error messages.
    """
    if col.has_nulls and not allow_nulls:
        raise _null_error(col, name)
    _check_exportable(col, name, copy=copy)
    kwargs = _kwargs(stream=stream, max_version=max_version, dl_device=dl_device, copy=copy)
    # CuPy makes the consumer's stream wait on *the current device's* current stream: make that
    # the column's GPU and the stream its buffers were written on (a bool column's unpacking
    # kernel runs there too)
    with _on_device(col.device), _producer_stream(col):
        src = _tensor_source(col, name, copy=copy)
        return src.__dlpack__(**kwargs)


def _producer_stream(col: Column) -> Any:
    """The stream ``col``'s buffers were written on, as the current stream (CUDA columns)."""
    if not col.device.is_cuda:
        return contextlib.nullcontext()
    return streams.operation(streams.ready_stream((b.stream for b in col.buffers()), col.device), col.device)


class _Exporter:
    """A DLPack producer for one column (lets ``torch.from_dlpack`` drive the stream handshake)."""

    __slots__ = ("col", "name", "allow_nulls")

    def __init__(self, col: Column, name: str, allow_nulls: bool) -> None:
        self.col = col
        self.name = name
        self.allow_nulls = allow_nulls

    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                   copy: Optional[bool] = None) -> Any:
        return column_dlpack(self.col, stream=stream, max_version=max_version, dl_device=dl_device,
                             copy=copy, allow_nulls=self.allow_nulls, name=self.name)

    def __dlpack_device__(self) -> tuple[int, int]:
        return column_dlpack_device(self.col)


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ImportError(f"Table.to_torch needs PyTorch; install it with: {TORCH_INSTALL}") from exc
    return torch


def table_to_torch(table: Table, nulls: Literal["raise", "mask"] = "raise"
                   ) -> dict[str, Union["torch.Tensor", tuple["torch.Tensor", "torch.Tensor"]]]:
    """Every column as a PyTorch tensor sharing the column's memory (``Table.to_torch``).

    Parameters
    ----------
    table : Table
    nulls : {"raise", "mask"}
        ``"raise"`` (default): a column with nulls raises ``ValueError`` naming it.
        ``"mask"``: a column with nulls becomes ``(values, valid)``, ``valid`` a new ``torch.bool``
        tensor; columns without nulls stay plain tensors.

    Returns
    -------
    dict of str to torch.Tensor or (torch.Tensor, torch.Tensor)
        In column order. Tensors are on the table's device and share its memory, except bool
        columns (unpacked from bits: a copy) and the ``valid`` masks. See the module docstring
        for what dictionary, date and timestamp columns become.

    Raises
    ------
    TypeError
        For a string column (named in the message).
    ValueError
        For a column with nulls when ``nulls="raise"``, or an unknown ``nulls``.
    BufferError
        For CUDA tables under the CUDA simulator (no device memory to share).
    """
    if nulls not in ("raise", "mask"):
        raise ValueError(f"nulls must be 'raise' or 'mask', got {nulls!r}")
    torch = _torch()
    # validate every column before exporting any, so that an error leaves nothing half-done
    on_cpu = not table.device.is_cuda
    sources = []
    for name, col in table.items():
        _check_exportable(col, name, copy=None)
        if nulls == "raise" and col.has_nulls:
            raise _null_error(col, name)
        # CPU: the array to export now; CUDA: exported later through the stream handshake
        sources.append((name, col, _tensor_source(col, name, copy=None) if on_cpu else None))
    out: dict[str, Any] = {}
    with _on_device(table.device):  # the unpacked masks are exported by CuPy from the table's GPU
        for name, col, src in sources:
            if on_cpu:
                # host memory: numpy's own DLPack export, no stream handshake to drive
                values = torch.from_dlpack(src)
            else:
                values = torch.from_dlpack(_Exporter(col, name, allow_nulls=True))
            if nulls == "mask" and col.has_nulls:
                with _producer_stream(col):  # unpacked and handed over on the column's stream
                    valid = torch.from_dlpack(memory.view_as(col.validity_bytes(), np.bool_))
                out[name] = (values, valid)
            else:
                out[name] = values
    return out


def _on_device(device: Device) -> Any:
    if not device.is_cuda:
        return contextlib.nullcontext()
    import cupy as cp

    return cp.cuda.Device(device.id)


# ---------------------------------------------------------------------------------------------- import


@overload
def from_dlpack(obj: Any, *, name: None = None) -> Column: ...
@overload
def from_dlpack(obj: Any, *, name: str) -> Table: ...


def from_dlpack(obj: Any, *, name: Optional[str] = None) -> Union[Column, Table]:
    """A Column (or, with ``name``, a one-column Table) over a 1-D DLPack tensor or array.

    Parameters
    ----------
    obj : object with ``__dlpack__`` and ``__dlpack_device__``
        A 1-D PyTorch tensor, NumPy or CuPy array, ... on the CPU or a CUDA GPU.
    name : str, optional
        When given, return ``Table({name: column})``.

    Returns
    -------
    Column or Table
        Zero-copy for a contiguous tensor of a supported numeric type. Copies: a strided tensor
        is made contiguous, a bool tensor is packed into Arrow bits.

    Raises
    ------
    TypeError
        For an object without the DLPack protocol, or a dtype gpuframe does not store
        (float16, complex, ...).
    ValueError
        For a tensor that is not 1-D.
    NoGPUError
        For a CUDA tensor without a usable GPU and CuPy.
    """
    if not hasattr(obj, "__dlpack__") or not hasattr(obj, "__dlpack_device__"):
        raise TypeError(f"from_dlpack expects an object with __dlpack__ and __dlpack_device__, got {type(obj).__name__}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {name!r}")
    dev_type, dev_id = (int(x) for x in obj.__dlpack_device__())
    if dev_type in (KDL_CPU, KDL_CUDA_HOST):
        arr = np.from_dlpack(obj)
        device = CPU
    elif dev_type in (KDL_CUDA, KDL_CUDA_MANAGED):
        device = Device("cuda", dev_id)
        if cudasim_enabled():
            raise NoGPUError("importing a CUDA DLPack tensor needs a real GPU and CuPy; the CUDA "
                             "simulator has no device memory")
        require_cuda(device)
        try:
            import cupy as cp
        except ImportError as exc:
            raise NoGPUError(f"importing a CUDA DLPack tensor needs CuPy; {CUDA_INSTALL_HINT}") from exc
        with cp.cuda.Device(dev_id):
            arr = cp.from_dlpack(obj)
    else:
        raise TypeError(f"from_dlpack supports CPU and CUDA tensors, got DLPack device type {dev_type}")
    col = _column_from_array(arr, device)
    return col if name is None else Table([(name, col)], len(col))


def _column_from_array(arr: Any, device: Device) -> Column:
    if arr.ndim != 1:
        raise ValueError(f"from_dlpack expects a 1-D tensor, got shape {tuple(arr.shape)}")
    dtype = np.dtype(arr.dtype)
    if dtype.kind not in "iufb" or dtype == np.float16:
        raise TypeError(f"from_dlpack: gpuframe stores int8-int64, uint8-uint64, float32/64 and bool, "
                        f"got {dtype}")
    if not device.is_cuda:
        # contiguous numbers: no copy; strided: a contiguous copy; bool: packed into bits (a copy)
        return Column.from_numpy(arr)
    import cupy as cp

    n = int(arr.shape[0])
    with cp.cuda.Device(device.id):  # copies (packing, making contiguous) stay on the tensor's GPU
        if dtype == np.bool_:
            # (packbits of an empty array returns the input's dtype, not uint8)
            data = cp.packbits(arr, bitorder="little") if n else cp.zeros(0, dtype=cp.uint8)
            return Column(pa.bool_(), n, Buffer(data, device), None, None, None, 0, 0)
        arr = cp.ascontiguousarray(arr)
    return Column(pa.from_numpy_dtype(dtype), n, Buffer(arr, device), None, None, None, 0, 0)
