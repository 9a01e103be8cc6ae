"""Launching ``numba.cuda`` kernels: the launch configuration and the simulator's quirks.

Kernels are built by memoised factories in each kernel module (``cuda_kernels()``, a
:class:`~gpuframe.kernels.kernel_set.KernelSet`), so numba compiles each kernel once per argument
signature and the launchers here only pick a grid.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator

from gpuframe.core.device import SIMULATOR_LAUNCH_LOCK, cudasim_enabled
from gpuframe.kernels.compat import numba_cuda_compat

THREADS_PER_BLOCK = 256
# The simulator runs every thread of a block as a Python thread: smaller blocks keep it lighter.
SIM_THREADS_PER_BLOCK = 64


def launch_config(n: int, threads: int | None = None) -> tuple[int, int]:
    """``(blocks, threads)`` covering ``n`` work items, one item per thread."""
    if threads is None:
        threads = SIM_THREADS_PER_BLOCK if cudasim_enabled() else THREADS_PER_BLOCK
    blocks = max(1, (int(n) + threads - 1) // threads)
    return blocks, threads


@contextlib.contextmanager
def _quiet_uint64_overflow() -> Iterator[None]:
    # Under the simulator the kernels run as Python on numpy scalars, which warn on the uint64
    # wrap-around that the hash arithmetic relies on (a GPU wraps silently). The simulator's
    # threads do not inherit numpy's errstate, so the warning filter is the one place to say so.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="overflow encountered", category=RuntimeWarning)
        yield


def launch(kernel: Any, n: int, *args: Any, threads: int | None = None, blocks: int | None = None) -> None:
    """Run ``kernel`` over ``n`` items (nothing to do when ``n == 0``): one item per thread, or
    ``blocks`` blocks of ``threads`` threads when the kernel strides over the items itself."""
    if n <= 0:
        return
    numba_cuda_compat()
    nb, tpb = launch_config(n, threads)
    blocks = nb if blocks is None else blocks
    if cudasim_enabled():
        with SIMULATOR_LAUNCH_LOCK, _quiet_uint64_overflow():
            kernel[blocks, tpb](*args)
    else:
        kernel[blocks, tpb](*args)
