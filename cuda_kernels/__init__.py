"""gpuframe's kernels (``gpuframe.kernels``): per-row functions shared by both targets, the CPU
drivers (``njit``) and the CUDA kernel factories.

Importing the package starts numba's CPU thread pool with OpenMP threads that *sleep* while they
wait for work (:func:`_start_cpu_threads`).
"""
from __future__ import annotations

import os as _os


def _start_cpu_threads() -> None:
    """Start numba's CPU threading layer with ``OMP_WAIT_POLICY=PASSIVE`` set for the moment
    OpenMP reads its settings (the variable is restored at once, so no other library sees it).

    OpenMP's default makes idle threads spin before they sleep. Measured on the 2-core
    development VM: a 2k x 10-row join called after 0.2 s idle took 24 ms a call with spinning
    threads and 1.2 ms with sleeping ones (0.4 ms back to back either way); with other processes
    busy on the cores, a 1M x 100k join took 80-95 ms against 25-34 ms; back-to-back large joins
    were unchanged. A user's own ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` wins, as does a
    threading layer numba started already; ``GPUFRAME_OMP_SPIN=1`` keeps OpenMP's default, and
    so does the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which runs every CUDA thread as a
    Python thread: sleeping OpenMP workers then wait behind them, and the simulator's tests ran
    2.3x slower (124 s against 55 s for one file).
    """
    env = _os.environ
    if env.get("GPUFRAME_OMP_SPIN", "0").strip() not in ("", "0") or "OMP_WAIT_POLICY" in env \
            or "GOMP_SPINCOUNT" in env or env.get("NUMBA_ENABLE_CUDASIM", "0").strip() not in ("", "0"):
        return
    try:
        from numba.np.ufunc import parallel
    except ImportError:        # pragma: no cover - numba is a dependency
        return
    if parallel._is_initialized:
        return
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        parallel._launch_threads()
    except Exception:          # pragma: no cover - numba reports a missing layer when a kernel runs
        pass
    finally:
        env.pop("OMP_WAIT_POLICY", None)


_start_cpu_threads()
