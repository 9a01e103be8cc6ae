"""CUDA-simulator shims of the Arrow C device import (``NUMBA_ENABLE_CUDASIM=1``).

Under the simulator a "CUDA" buffer is host memory owned by a numba ``FakeCUDAArray``. Export
(:mod:`gpuframe.interop.arrow_export`) needs no shim: it hands out the simulated buffers' host
addresses with ``device_type`` 2 (CUDA), ``device_id`` 0 and ``sync_event`` NULL (there is no
stream to wait on). Import (:mod:`gpuframe.interop.arrow_import`) uses :func:`sim_wrapper` to map
each address of such a struct back to the simulated buffer that this process exported and whose
export has not been released; any other address is refused, because nothing else exists there.
Nothing here runs outside the simulator.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.buffer import Buffer
from ..core.column import Column
from ..core.device import Device
from . import arrow_c_abi as cd

if TYPE_CHECKING:
    from .arrow_import import Wrapper

__all__ = ["sim_exported_buffers", "sim_wrapper"]


def sim_exported_buffers() -> dict[int, Any]:
    """Simulated CUDA arrays that this process exported and the consumer has not released yet."""
    found: dict[int, Any] = {}
    for keep in list(cd._STATES.values()):
        for obj in keep:
            if isinstance(obj, Column):
                for buf in (obj.data, obj.validity, obj.offsets):
                    if buf is not None and buf.device.is_cuda:
                        found[buf.ptr] = buf.array
    return found


def sim_wrapper(device: Device, imported: cd.ImportedDeviceArray) -> Wrapper:
    """The import's buffer wrapper under the simulator: ``wrap(address, nbytes, dtype)`` returns a
    :class:`Buffer` over the simulated array this process exported at ``address``."""
    from numba import cuda
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    known = sim_exported_buffers()

    def wrap(ptr: int, nbytes: int, dtype: np.dtype) -> Buffer:
        dtype = np.dtype(dtype)
        src = known.get(ptr)
        if src is None and nbytes == 0:
            return Buffer(cuda.device_array(0, dtype=dtype), device, owner=imported)
        if src is None:
            raise ValueError(
                f"under the CUDA simulator only device arrays exported by gpuframe in this process "
                f"can be imported; address 0x{ptr:x} is not one of them")
        raw = src._ary.view(np.uint8)
        if raw.nbytes < nbytes:
            raise ValueError(f"ArrowDeviceArray buffer at 0x{ptr:x} needs {nbytes} bytes, the exported "
                             f"buffer has {raw.nbytes}")
        return Buffer(FakeCUDAArray(raw[:nbytes].view(dtype)), device, owner=imported)

    return wrap
