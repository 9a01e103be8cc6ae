"""Importing ``gpuframe.kernels`` starts numba's OpenMP threads with a passive wait policy, and
leaves no ``OMP_WAIT_POLICY`` behind for other libraries (``cuda_kernels/__init__.py``). Each case
runs in a fresh interpreter: OpenMP reads its settings once, when it is loaded."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, os
import gpuframe.kernels
from numba.np.ufunc import parallel
parallel._launch_threads()
import numba
print("layer", numba.threading_layer())
print("env", os.environ.get("OMP_WAIT_POLICY"))
libs = sorted({line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line})
if libs:
    ctypes.CDLL(libs[0]).omp_display_env(1)   # OpenMP's settings (verbose: the spin count), on stderr
"""


def _run(**extra: str) -> subprocess.CompletedProcess:
    drop = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "GPUFRAME_OMP_SPIN", "NUMBA_ENABLE_CUDASIM")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    if "layer omp" not in r.stdout:
        pytest.skip(f"numba's threading layer is not OpenMP here: {r.stdout.strip()}")
    return r


def test_openmp_threads_wait_passively_and_the_environment_is_restored():
    r = _run()
    # libgomp shows 'PASSIVE' for its default too; the spin count tells them apart (0 when passive)
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in r.stderr and "GOMP_SPINCOUNT = '0'" in r.stderr, r.stderr
    assert "env None" in r.stdout, "OMP_WAIT_POLICY must not stay set for other libraries"


def test_a_users_own_wait_policy_wins():
    r = _run(OMP_WAIT_POLICY="ACTIVE")
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in r.stderr, r.stderr
    assert "env ACTIVE" in r.stdout


def test_opting_out_keeps_openmps_default():
    r = _run(GPUFRAME_OMP_SPIN="1")
    assert "GOMP_SPINCOUNT = " in r.stderr and "GOMP_SPINCOUNT = '0'" not in r.stderr, r.stderr


def test_the_cuda_simulator_keeps_openmps_default():
    r = _run(NUMBA_ENABLE_CUDASIM="1")
    assert "GOMP_SPINCOUNT = " in r.stderr and "GOMP_SPINCOUNT = '0'" not in r.stderr, r.stderr
