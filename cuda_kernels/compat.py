"""Compatibility shims between numba-cuda and the libraries it runs with.

Kernels are compiled by numba-cuda; :func:`numba_cuda_compat` fixes what a released numba-cuda
trips over in its environment before the first compile. The CUDA launchers (grid choice,
simulator quirks) live in :mod:`gpuframe.backends.cuda.launch`.
"""
from __future__ import annotations

_COMPAT_DONE = False


def numba_cuda_compat() -> None:
    """Let numba-cuda (<= 0.30.4, the newest release) compile kernels under NumPy >= 2.5.

    numba-cuda's ``np/arrayobj.py`` registers an overload for ``np.row_stack``, an alias of
    ``np.vstack`` that NumPy 2.5 removed; the module is imported at the first kernel compile, which
    then fails with ``AttributeError: module 'numpy' has no attribute 'row_stack'`` (seen on the
    first real-GPU run: every join and partition kernel failed to compile). Restoring the alias
    before that import is enough; it changes nothing where NumPy still has it.
    """
    global _COMPAT_DONE
    if _COMPAT_DONE:
        return
    import numpy as np

    if "row_stack" not in dir(np):
        np.row_stack = np.vstack  # type: ignore[attr-defined]
    _COMPAT_DONE = True
