"""Frames: the 1-D contiguous arrays (host or device) that carry a message's data.

A frame goes out as it is, without a copy; the receiver allocates each one from its
:class:`FrameSpec` (byte size, dtype, memory kind) before the data arrives. Only plain number
dtypes (:data:`ALLOWED_FRAME_DTYPES`) may travel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from gpuframe.core import memory

from .errors import CommError

#: The numpy dtype strings a frame may have: plain numbers only (no objects, no structured or
#: datetime dtypes). Both byte orders; bool and the 1-byte integers have no byte order.
ALLOWED_FRAME_DTYPES = frozenset(
    s for t in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")
    for s in (np.dtype(t).newbyteorder("<").str, np.dtype(t).newbyteorder(">").str))

Frame = Any  # a 1-D contiguous numpy, CuPy or numba device array
Message = tuple[Any, list[Frame]]  # (header, frames)


@dataclass(frozen=True)
class FrameSpec:
    """What a receiver needs to allocate one frame: byte size, numpy dtype string, memory kind."""

    nbytes: int
    dtype: str
    device: str  # "cpu" or "cuda"

    @property
    def count(self) -> int:
        return self.nbytes // np.dtype(self.dtype).itemsize

    def to_wire(self) -> list:
        return [self.nbytes, self.dtype, self.device]

    @classmethod
    def from_wire(cls, item: Any) -> "FrameSpec":
        """A spec received from a peer, checked; ``ValueError`` saying what is wrong."""
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise ValueError(f"a frame spec must be [nbytes, dtype, device], got {item!r:.100}")
        nbytes, dtype, device = item
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 0 <= nbytes < 2**62:
            raise ValueError(f"a frame's byte size must be an int in [0, 2**62), got {nbytes!r:.40}")
        if not isinstance(dtype, str) or dtype not in ALLOWED_FRAME_DTYPES:
            raise ValueError(f"frame dtype {dtype!r:.40} is not allowed (plain bool, int, uint and float "
                             f"dtypes only: {sorted(ALLOWED_FRAME_DTYPES)})")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"a frame's memory kind must be 'cpu' or 'cuda', got {device!r:.40}")
        itemsize = np.dtype(dtype).itemsize
        if nbytes % itemsize:
            raise ValueError(f"a frame of dtype {dtype} cannot have {nbytes} bytes (not a multiple of {itemsize})")
        return cls(nbytes, dtype, device)


def as_frame(obj: Any) -> Frame:
    """Check that ``obj`` can be a frame (1-D, contiguous, host or device); bytes become uint8."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return np.frombuffer(obj, dtype=np.uint8)
    if not hasattr(obj, "dtype") or not hasattr(obj, "shape"):
        raise TypeError(f"a frame must be a 1-D numpy/CuPy array or a bytes-like object, got {type(obj).__name__}")
    if len(obj.shape) != 1:
        raise ValueError(f"a frame must be 1-D, got an array of shape {tuple(obj.shape)}")
    flags = getattr(obj, "flags", None)
    contiguous = True
    if flags is not None:
        try:
            contiguous = bool(flags["C_CONTIGUOUS"])
        except (KeyError, TypeError):
            contiguous = bool(getattr(flags, "c_contiguous", True))
    if not contiguous:
        raise ValueError("a frame must be contiguous; pass a contiguous slice or copy it first")
    dtype = np.dtype(obj.dtype)
    if dtype.str not in ALLOWED_FRAME_DTYPES:
        raise TypeError(f"a frame must have a plain bool, int, uint or float dtype, got {dtype}")
    return obj


def frame_spec(frame: Frame) -> FrameSpec:
    """The spec a receiver needs to allocate ``frame``."""
    dev = memory.array_device(frame)
    dtype = np.dtype(frame.dtype)
    return FrameSpec(int(frame.shape[0]) * dtype.itemsize, dtype.str, "cuda" if dev.is_cuda else "cpu")


def host_view(frame: Frame) -> Optional[np.ndarray]:
    """The numpy array behind ``frame`` when it is host memory (a simulator device array's
    backing array too), else ``None``."""
    if isinstance(frame, np.ndarray):
        return frame
    if memory._is_fake_cuda(frame):
        return frame._ary
    return None


def copy_into(dst: Frame, src: Frame) -> None:
    """Copy ``src`` into the existing array ``dst`` (same byte size; host or device, either way)."""
    if src.nbytes != dst.nbytes:
        raise CommError(f"frame size mismatch: expected {dst.nbytes} bytes, got {src.nbytes}")
    if not src.nbytes:
        return
    hd, hs = host_view(dst), host_view(src)
    if hd is not None:
        hd.view(np.uint8)[...] = (hs if hs is not None else memory.to_host(src)).view(np.uint8)
        return
    # dst is device memory (CuPy): use the array's own copy methods
    if hs is not None:
        dst.view(np.uint8).set(hs.view(np.uint8))
    else:
        dst.view(np.uint8)[...] = src.view(np.uint8)


#: ``allocator([(header, [FrameSpec, ...]) per rank]) -> [[array, ...] per rank]`` (see ``aall_to_all``)
Allocator = Callable[[list[tuple[Any, list[FrameSpec]]]], list[list[Frame]]]
