"""Under ``GPUFRAME_RECORD_LAUNCHES=FILE`` (set by ``ci/test.sh`` for the ptx lane), record the
argument types of every kernel launch the simulator runs, and write them to FILE as JSON at the
end of the session (under pytest-xdist, each worker to ``FILE.<worker id>``): ``ci/ptx_lane.py``
compiles each recorded signature with the real NVVM.

Blocks run on pooled threads (:mod:`tests.common.sim_blocks`: the simulator's own thread
creation and polling took most of this lane's time); ``GPUFRAME_SIM_BLOCKS=numba`` keeps the
simulator's own ``BlockManager``."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

_RECORDED: dict[str, set[str]] = {}


def _describe(arg) -> list:
    if isinstance(arg, tuple):
        # the kernels' argument records (named tuples of arrays and scalars), field by field
        cls = type(arg)
        fields = [_describe(a) for a in arg]
        if cls is not tuple and hasattr(cls, "_fields"):
            return ["namedtuple", f"{cls.__module__}:{cls.__qualname__}", fields]
        return ["tuple", fields]
    if hasattr(arg, "dtype") and hasattr(arg, "shape") and getattr(arg, "ndim", 0) >= 1:
        flags = getattr(arg, "flags", None)
        layout = "A" if flags is not None and not flags["C_CONTIGUOUS"] else "C"
        return ["array", str(np.dtype(arg.dtype)), int(arg.ndim), layout]
    if isinstance(arg, (bool, np.bool_)):
        return ["bool"]
    if isinstance(arg, np.generic):
        return ["scalar", str(arg.dtype)]
    if isinstance(arg, int):
        return ["int"]
    if isinstance(arg, float):
        return ["float"]
    raise TypeError(f"cannot record a kernel argument of type {type(arg).__name__}")


def pytest_configure(config):
    from gpuframe.core.device import cudasim_enabled

    if cudasim_enabled() and os.environ.get("GPUFRAME_SIM_BLOCKS", "pooled") != "numba":
        from ..common import sim_blocks

        sim_blocks.install()
    path = os.environ.get("GPUFRAME_RECORD_LAUNCHES")
    if not path:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        path = f"{path}.{worker}"          # each pytest-xdist worker its own file; ci/test.sh merges them
    elif getattr(config.option, "numprocesses", None):
        return                             # the xdist controller runs no test: nothing to record
    if not cudasim_enabled():
        raise pytest.UsageError("GPUFRAME_RECORD_LAUNCHES needs NUMBA_ENABLE_CUDASIM=1")
    from numba.cuda.simulator import kernel as simkernel

    call = simkernel.FakeCUDAKernel.__call__

    def recording_call(self, *args):
        # the library's kernels only: kernels that tests define for themselves (the block
        # runner's, tests/cudasim/test_sim_blocks_sim.py) are not the ptx lane's to compile
        if not self.fn.__module__.startswith("tests."):
            key = f"{self.fn.__module__}:{self.fn.__qualname__}"
            _RECORDED.setdefault(key, set()).add(json.dumps([_describe(a) for a in args]))
        return call(self, *args)

    simkernel.FakeCUDAKernel.__call__ = recording_call
    config._gpuframe_record_path = path


def pytest_unconfigure(config):
    path = getattr(config, "_gpuframe_record_path", None)
    if path:
        with open(path, "w") as fh:
            json.dump({k: sorted(v) for k, v in sorted(_RECORDED.items())}, fh, indent=1)
