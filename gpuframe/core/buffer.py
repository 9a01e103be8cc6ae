"""Buffer: one contiguous region of typed memory on a device, kept alive by its owner."""
from __future__ import annotations

from typing import Any

import numpy as np

from . import memory, streams
from .device import Device


class Buffer:
    """A 1-D typed array on a device (numpy on the CPU, CuPy or numba device array on CUDA).

    The buffer never copies on construction; ``owner`` keeps foreign memory (a pyarrow
    buffer, a DLPack capsule, an imported ArrowDeviceArray) alive for as long as the
    Buffer lives.

    ``stream`` is the ``cudaStream_t`` handle of the stream the buffer was written on (CUDA only;
    ``None`` on the host): the running operation's stream, else CuPy's current stream when the
    buffer was made (:mod:`gpuframe.core.streams`). Exports order themselves after it.
    """

    __slots__ = ("array", "device", "owner", "stream")

    def __init__(self, array: Any, device: Device | None = None, owner: Any = None,
                 stream: int | None = None) -> None:
        self.array = array
        self.device = device if device is not None else memory.array_device(array)
        self.owner = owner
        self.stream = stream if stream is not None else streams.buffer_stream(self.device)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(self.array.shape[0])

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def ptr(self) -> int:
        """Address of the first element on its device."""
        return memory.data_ptr(self.array)

    def to(self, device: Device) -> "Buffer":
        if device == self.device:
            return self
        return Buffer(memory.to_device(self.array, device), device)

    def to_numpy(self) -> np.ndarray:
        return memory.to_host(self.array)

    def __repr__(self) -> str:
        return f"Buffer({self.dtype}, size={self.size}, device={self.device}, ptr=0x{self.ptr:x})"
