"""Devices: where a buffer lives (host memory or a CUDA GPU) and how we find out what is present."""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from dataclasses import dataclass
from typing import Iterator, Literal, Union

from ..errors import NoGPUError  # noqa: F401  (re-exported: defined in the leaf module)

DeviceKind = Literal["cpu", "cuda"]

CUDA_INSTALL_HINT = (
    "install the CUDA extra for your toolkit: pip install 'gpuframe[cuda12]' or "
    "pip install 'gpuframe[cuda13]' (and check that `nvidia-smi` sees a GPU)"
)


@dataclass(frozen=True)
class Device:
    """A place where memory lives: ``Device("cpu")`` or ``Device("cuda", n)``."""

    kind: DeviceKind = "cpu"
    id: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "cuda"):
            raise ValueError(f"device kind must be 'cpu' or 'cuda', got {self.kind!r}")
        if not isinstance(self.id, int) or self.id < 0:
            raise ValueError(f"device id must be a non-negative int, got {self.id!r}")
        if self.kind == "cpu" and self.id != 0:
            raise ValueError(f"the cpu device has id 0, got {self.id!r}")

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.id}"

    def __repr__(self) -> str:
        return f"Device({str(self)!r})"


DeviceLike = Union[Device, str, None]

CPU = Device("cpu")


def as_device(device: DeviceLike, *, default: Device = CPU) -> Device:
    """Parse ``None``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a :class:`Device`."""
    if device is None:
        return default
    if isinstance(device, Device):
        return device
    if isinstance(device, str):
        text = device.strip().lower()
        if text == "cpu":
            return CPU
        if text == "cuda" or text == "gpu":
            return Device("cuda", 0)
        if text.startswith("cuda:"):
            try:
                return Device("cuda", int(text[5:]))
            except ValueError:
                pass
    raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or a gpuframe.Device, got {device!r}")


def cudasim_enabled() -> bool:
    """True when numba runs CUDA kernels on the CPU simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return True
    try:
        from numba.cuda import config  # type: ignore[attr-defined]

        return bool(getattr(config, "ENABLE_CUDASIM", False))
    except Exception:
        return False


@functools.lru_cache(maxsize=1)
def gpu_count() -> int:
    """Number of real CUDA GPUs visible through CuPy (0 when CuPy or the driver is missing)."""
    if cudasim_enabled():
        return 0
    try:
        import cupy  # noqa: F401

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def cuda_available() -> bool:
    """True when CUDA-device tables can be created: a real GPU, or the numba simulator."""
    return gpu_count() > 0 or cudasim_enabled()


def require_cuda(device: Device) -> None:
    """Raise :class:`NoGPUError` with install advice when ``device`` cannot be used."""
    if not device.is_cuda:
        return
    if cudasim_enabled():
        if device.id != 0:
            raise NoGPUError(f"the CUDA simulator has one device (cuda:0), got {device}")
        return
    n = gpu_count()
    if n == 0:
        raise NoGPUError(f"cannot use {device}: no CUDA GPU was found; {CUDA_INSTALL_HINT}")
    if device.id >= n:
        raise NoGPUError(f"cannot use {device}: only {n} CUDA GPU(s) are visible")


# The simulator runs a kernel by swapping the numba.cuda module in the kernel function's globals
# (and our kernel modules bind ``cuda`` as a module global): two host threads running simulated
# kernels at once (ranks of a local mesh, say) see each other's swap and fail with "'Thread' object
# has no attribute 'blockIdx'". Simulated launches therefore take turns; a GPU needs no lock.
SIMULATOR_LAUNCH_LOCK = threading.RLock()


@contextlib.contextmanager
def launch_context(device: "Device") -> Iterator[None]:
    """Make ``device`` numba's current CUDA device for the kernel launches inside (the buffers of
    a ``cuda:1`` table live on GPU 1; numba would otherwise launch on GPU 0). On the CPU a no-op;
    under the simulator it holds :data:`SIMULATOR_LAUNCH_LOCK`."""
    if device.is_cuda and not cudasim_enabled():
        from numba import cuda

        with cuda.gpus[device.id]:
            yield
    elif device.is_cuda:
        with SIMULATOR_LAUNCH_LOCK:
            yield
    else:
        yield
