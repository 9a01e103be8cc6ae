"""The CUDA target: launches the ``numba.cuda`` kernels of ``gpuframe.kernels`` on one device
(a real GPU with CuPy memory, or numba's simulator under ``NUMBA_ENABLE_CUDASIM=1``)."""
from __future__ import annotations

from typing import Any, Optional

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

    def gather_string_offsets(self, offsets, idx, odt: np.dtype, large: bool) -> tuple[Any, Any, int, Optional[int]]:
        """Offsets of the gathered strings (no starts: the copy reads the source offsets), total
        bytes; the number of -1 indices is not counted here (``None``)."""
        m = len(idx)
        k = GK.cuda_kernels()
        lengths = self.empty(m, np.int64)
        self._launch(k["lengths"], m, offsets, idx, lengths)
        offs64 = memory.cumsum_exclusive(lengths, np.int64)
        total = self.scalar(offs64[m:m + 1])
        _check_string_size(total, large)
        memory.ensure_available("gather_column", total, self.device, rows=m, what="the gathered string bytes")
        if np.dtype(odt) == np.int64:
            return offs64, None, total, None
        out = self.empty(m + 1, odt)
        self._launch(k["cast_copy"], m + 1, offs64, out)
        return out, None, total, None

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


# --------------------------------------------------------------------------- key preparation
# The kernels of gpuframe.kernels.keyprep behind gpuframe.backends._keys.DeviceKeyPrep: the
# general path's dictionary keys, several string keys and range checks, on the device.
def _keyprep() -> Any:
    from gpuframe.kernels.keyprep import cuda_kernels

    return cuda_kernels()


def _key_launch(name: str, n: int, device: Device, *args: Any) -> None:
    from .launch import launch

    with launch_context(device):
        launch(_keyprep()[name], n, *args)


def _none(dtype: Any, device: Device) -> Any:
    return memory.empty(1, dtype, device)


def _string_span_at(offsets: Any, base: int, valid: Any, st: Any, en: Any, flag: Any, keep: Any) -> None:
    """One plain string key's spans, ``base`` added (``_keys.DeviceKeyPrep.string_span_at``)."""
    dev = memory.array_device(st)
    _key_launch("string_span_at", int(st.shape[0]), dev, offsets, np.int64(base),
                _none(np.uint8, dev) if valid is None else valid, valid is not None, st, en,
                _none(np.uint64, dev) if flag is None else flag, flag is not None,
                _none(np.uint8, dev) if keep is None else keep, keep is not None)


def _dict_span(indices: Any, ivalid: Any, doffs: Any, dvalid: Any, base: int, st: Any, en: Any, flag: Any,
               keep: Any) -> None:
    """One dictionary string key's spans and nulls (``_keys.DeviceKeyPrep.dict_span``)."""
    dev = memory.array_device(st)
    _key_launch("dict_span", int(st.shape[0]), dev, indices, _none(np.uint8, dev) if ivalid is None else ivalid,
                ivalid is not None, doffs, _none(np.uint8, dev) if dvalid is None else dvalid, dvalid is not None,
                np.int64(base), st, en, _none(np.uint64, dev) if flag is None else flag, flag is not None,
                _none(np.uint8, dev) if keep is None else keep, keep is not None)


def _range_valid(words: Any, valid: Any) -> Any:
    """uint8 per row: 1 where the key is valid and its int64 word is ``>= 0``
    (``_keys.DeviceKeyPrep.range_valid``)."""
    n = int(words.shape[0])
    dev = memory.array_device(words)
    out = memory.empty(n, np.uint8, dev)
    _key_launch("range_valid", n, dev, words, _none(np.uint8, dev) if valid is None else valid, valid is not None, out)
    return out


def _range_clear(words: Any, valid: Any, keep: Any) -> None:
    """Clear ``keep`` where the row is not null (``valid``: None, all valid) and its int64 word
    is negative (``_keys.DeviceKeyPrep.range_clear``)."""
    dev = memory.array_device(keep)
    _key_launch("range_clear", int(keep.shape[0]), dev, words, _none(np.uint8, dev) if valid is None else valid,
                valid is not None, keep)


def _copy_at(src: Any, dst: Any, base: int) -> None:
    """``dst[base:base + len(src)] = src`` on the device (``_keys.DeviceKeyPrep.copy_at``)."""
    _key_launch("copy_at", int(src.shape[0]), memory.array_device(dst), src, dst, np.int64(base))


def key_prep() -> Any:
    """The CUDA backend's :class:`gpuframe.backends._keys.DeviceKeyPrep`."""
    from .._keys import DeviceKeyPrep

    return DeviceKeyPrep(string_span_at=_string_span_at, dict_span=_dict_span, range_valid=_range_valid,
                         range_clear=_range_clear, copy_at=_copy_at)
