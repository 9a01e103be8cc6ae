"""The CUDA target: launches the ``numba.cuda`` kernels of ``gpuframe.kernels`` on one device
(a real GPU with CuPy memory, or numba's simulator under ``NUMBA_ENABLE_CUDASIM=1``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from gpuframe.kernels import gather as GK
from gpuframe.kernels import hashing as HK

from ...core import memory
from ...core.device import Device, launch_context
from .._common import _check_string_size


class CudaTarget:
    """Launches the ``numba.cuda`` kernels (real GPU or the simulator) on one device."""

    def __init__(self, device: Device) -> None:
        self.device = device

    def empty(self, n: int, dtype: Any) -> Any:
        return memory.empty(n, dtype, self.device)

    def zeros(self, n: int, dtype: Any) -> Any:
        return memory.zeros(n, dtype, self.device)

    def no_bitmap(self) -> Any:
        return memory.empty(1, np.uint8, self.device)

    def scalar(self, arr: Any) -> int:
        return int(memory.to_host(arr)[0])

    @staticmethod
    def _launch(kernel: Any, n: int, *args: Any) -> None:
        from .launch import launch

        launch(kernel, n, *args)

    # hashing
    def hash_fixed(self, values, kind, validity, has_valid, vbit, seed, combine, out) -> None:
        self._launch(HK.cuda_kernels()["fixed"], len(values), values, kind, validity, has_valid, vbit,
                     seed, combine, out)

    def hash_bool(self, bits, dbit, n, validity, has_valid, vbit, seed, combine, out) -> None:
        self._launch(HK.cuda_kernels()["bool"], n, bits, dbit, n, validity, has_valid, vbit, seed, combine, out)

    def hash_string(self, offsets, chars, validity, has_valid, vbit, seed, combine, out) -> None:
        self._launch(HK.cuda_kernels()["string"], len(offsets) - 1, offsets, chars, validity, has_valid, vbit,
                     seed, combine, out)

    def hash_dictionary(self, indices, dict_hashes, validity, has_valid, vbit, seed, combine, out) -> None:
        self._launch(HK.cuda_kernels()["dictionary"], len(indices), indices, dict_hashes, validity, has_valid,
                     vbit, seed, combine, out)

    # gather
    def check_indices(self, idx, n: int) -> tuple[int, int]:
        m = len(idx)
        bad = memory.to_device(np.array([m], dtype=np.int64), self.device)
        missing = self.zeros(1, np.int64)
        self._launch(GK.cuda_kernels()["check"], m, idx, n, bad, missing)
        b = self.scalar(bad)
        return (-1 if b == m else b), self.scalar(missing)

    def gather_fixed(self, values, idx, out) -> int:
        missing = self.zeros(1, np.int64)
        self._launch(GK.cuda_kernels()["fixed"], len(idx), values, idx, out, missing)
        return self.scalar(missing)

    def gather_bits(self, bits, bit_off, has_bits, idx, out) -> int:
        count = self.zeros(1, np.int64)
        self._launch(GK.cuda_kernels()["bits"], len(out), bits, bit_off, has_bits, idx, out, count)
        return self.scalar(count)

    def gather_string_offsets(self, offsets, idx, odt: np.dtype, large: bool) -> tuple[Any, Any, int]:
        m = len(idx)
        k = GK.cuda_kernels()
        lengths = self.empty(m, np.int64)
        self._launch(k["lengths"], m, offsets, idx, lengths)
        offs64 = memory.cumsum_exclusive(lengths, np.int64)
        total = self.scalar(offs64[m:m + 1])
        _check_string_size(total, large)
        memory.ensure_available("gather_column", total, self.device, rows=m, what="the gathered string bytes")
        if np.dtype(odt) == np.int64:
            return offs64, None, total
        out = self.empty(m + 1, odt)
        self._launch(k["cast_copy"], m + 1, offs64, out)
        return out, None, total

    def gather_string_chars(self, offsets, chars, idx, out_offsets, starts, out_chars) -> None:
        self._launch(GK.cuda_kernels()["chars"], len(idx), offsets, chars, idx, out_offsets, out_chars)


def cast_on_device(src: Any, dtype: Any, n: int, device: Device) -> Any:
    """``src[:n]`` converted to ``dtype`` element by element by a CUDA kernel on ``device``
    (C casts: sign- or zero-extending, float32 to float64 exactly, narrowing by truncation)."""
    from .launch import launch

    out = memory.empty(n, dtype, device)
    with launch_context(device):
        launch(GK.cuda_kernels()["cast_copy"], n, src, out)
    return out


def widen(values: Any, dtype: Any, device: Device) -> Any:
    """A fixed-width device array widened to ``dtype`` (int64 or float64) on the device."""
    return cast_on_device(values, dtype, len(values), device)
