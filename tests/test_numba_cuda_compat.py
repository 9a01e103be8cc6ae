"""numba-cuda <= 0.30.4 under NumPy >= 2.5 (no ``np.row_stack``): the launcher's shim lets its
array support import, which every kernel compile needs (the first real-GPU run failed there)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    if "row_stack" in dir(np):
        del np.row_stack          # what NumPy 2.5 looks like
    {shim}
    import numba.cuda.np.arrayobj  # imported by numba-cuda at the first kernel compile
    print("imported")
    """
)


def _run(shim: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(shim=shim)], capture_output=True, text=True,
                          timeout=120)


def test_numba_cuda_array_support_fails_without_row_stack():
    res = _run("")
    assert res.returncode != 0 and "row_stack" in res.stderr


def test_launch_shim_restores_row_stack_for_numba_cuda():
    res = _run("from gpuframe.kernels.compat import numba_cuda_compat; numba_cuda_compat()")
    assert res.returncode == 0, res.stderr
    assert "imported" in res.stdout
