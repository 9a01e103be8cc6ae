"""CUDA backend: launchers for the ``numba.cuda`` kernels in ``gpuframe.kernels``.

On a real GPU, memory comes from CuPy; under ``NUMBA_ENABLE_CUDASIM=1`` the same launchers
run on numba's simulator.
"""
from __future__ import annotations
