"""Launching ``numba.cuda`` kernels: the launch configuration, on the operation's stream.

Kernels are built by memoised factories in each kernel module (``cuda_kernels()``, a
:class:`~gpuframe.kernels.kernel_set.KernelSet`), so numba compiles each kernel once per argument
signature and the launchers here only pick a grid. Every launch goes through
:func:`gpuframe.core.streams.launch_kernel`: on the stream of the running operation (the caller's
``stream=``, else CuPy's current stream), with CuPy arrays handed to numba without a
per-argument stream synchronisation, and under the simulator's launch lock.
"""
from __future__ import annotations

from typing import Any

from gpuframe.core.device import cudasim_enabled
from gpuframe.core.streams import _quiet_uint64_overflow, launch_kernel  # noqa: F401  (re-exported)
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


def launch(kernel: Any, n: int, *args: Any, threads: int | None = None, blocks: int | None = None) -> None:
    """Run ``kernel`` over ``n`` items (nothing to do when ``n == 0``): one item per thread, or
    ``blocks`` blocks of ``threads`` threads when the kernel strides over the items itself."""
    if n <= 0:
        return
    numba_cuda_compat()
    nb, tpb = launch_config(n, threads)
    blocks = nb if blocks is None else blocks
    launch_kernel(kernel, blocks, tpb, args)
