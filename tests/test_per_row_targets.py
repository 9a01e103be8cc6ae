"""The per-row join functions compile for both targets in one process, in either order.

The first real-GPU run failed every CUDA join kernel that calls a per-row function
(then ``ht_insert``, ``ht_find``; now the slot table's ``slot_insert``, ``slot_find``,
``segment_of``) with numba-cuda's
``assert isinstance(inst, Stmt)`` once a CPU join had compiled in the same process: the CPU
registration (an ``inline="always"`` overload on the shared Python function) left numba-core IR
that numba-cuda then inlined. No GPU is needed to see it: NVVM compiles the kernels to PTX here
(numba-cuda[cu12] brings NVVM), with numba-cuda told that the current device is sm_90.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import numpy as np, pyarrow as pa
    from numba import cuda, types
    import numba.cuda.dispatcher as disp

    class _SM90:
        compute_capability = (9, 0)

    disp.get_current_device = lambda: _SM90()  # compile without a driver (no GPU here)
    import gpuframe
    from gpuframe.kernels import join as KJ
    from gpuframe.kernels.compat import numba_cuda_compat

    numba_cuda_compat()
    if {cpu_first}:
        L = gpuframe.from_arrow(pa.table({{"k": pa.array([1, 2, 3, 3, None], pa.int64())}}))
        R = gpuframe.from_arrow(pa.table({{"k": pa.array([3, 4, None], pa.int64())}}))
        for how in ("inner", "left", "outer", "semi", "anti"):
            gpuframe.join_indices(L, R, on="k", how=how)
    a = lambda dt, nd=1: types.Array(dt, nd, "C")
    i64, u64, u8 = types.int64, types.uint64, types.uint8
    # slots, tmask, keys, valid, kmode, verify, w, st, en, ch
    tab = types.NamedTuple((a(u64), u64, a(u64), a(u8), types.int64, types.boolean,
                            a(u64, 2), a(i64, 2), a(i64, 2), a(u8)), KJ.SlotTable)
    probe = types.NamedTuple((a(u64), a(u8), a(u64, 2), a(i64, 2), a(i64, 2), a(u8)), KJ.ProbeArrays)
    b = types.boolean
    sigs = {{
        "slot_build": (tab, a(i64), a(i64)),
        "csr_fill": (a(i64), a(i64), a(i64), a(i64)),
        "slot_probe": (tab, probe, b, a(i64), b, a(u8), a(u8), a(i64), a(i64)),
        "expand": (a(i64), a(i64), a(i64), a(i64), b, a(i64), a(i64)),
    }}
    k = KJ.cuda_kernels()
    for name, sig in sigs.items():
        ptx, _ = cuda.compile_ptx(getattr(k, name).py_func, sig, cc=(9, 0))
        assert ".entry" in ptx, name
        print("compiled", name)
    """
)


def _compile(cpu_first: bool) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(cpu_first=cpu_first)],
                          capture_output=True, text=True, timeout=600)


def _check(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split() == ["compiled", "slot_build", "compiled", "csr_fill", "compiled", "slot_probe",
                                  "compiled", "expand"]


def test_cuda_join_kernels_compile_after_cpu_joins_in_the_same_process():
    _check(_compile(cpu_first=True))


def test_cuda_join_kernels_compile_in_a_fresh_process():
    _check(_compile(cpu_first=False))
