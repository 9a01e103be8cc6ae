"""The device path of the table exchange, on numba's CUDA simulator (no GPU needed).

The simulator must be switched on before numba is imported, so each case runs in a fresh
interpreter with ``NUMBA_ENABLE_CUDASIM=1``: two ranks exchange CUDA tables of every column type
(frames are simulator device arrays; values land in device buffers, bitmaps and offsets are
assembled through the host). Only the exchange runs there: the simulator cannot run kernels from
two rank threads at once, so partitioning and joining device tables across ranks is left to the
real-GPU lane.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .helpers import BACKENDS, require

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys
    import gpuframe
    from gpuframe.comm import exchange_tables, local_mesh
    from tests.common.data import DTYPES, random_table
    from tests.distributed.helpers import concat, plain, run_ranks

    backend = sys.argv[1]
    cols = {f"c{i}": t for i, t in enumerate(DTYPES)}
    src = [random_table(40 + 7 * r, cols, nulls=True, seed=r, cardinality=6) for r in range(2)]
    comms = local_mesh(2, backend, timeout=30)

    def rank(r):
        t = gpuframe.from_arrow(src[r], device="cuda")
        out = exchange_tables(comms[r], [[t.slice(0, 13)], [t.slice(13, t.num_rows - 13)]])
        assert out.device.is_cuda, out.device
        assert all(c.device.is_cuda for c in out.columns)
        return out.to_arrow()

    got = run_ranks(rank, 2)
    expect = [concat([s.slice(0, 13) for s in src]), concat([s.slice(13) for s in src])]
    for g, e in zip(got, expect):
        for name in e.column_names:
            assert plain(g[name]).equals(plain(e[name])), name
    for c in comms:
        c.close()
    print("device exchange ok")
""")


@pytest.mark.parametrize("backend", BACKENDS)
def test_exchange_of_device_tables_on_the_simulator(backend):
    require(backend)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, backend], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "device exchange ok" in proc.stdout
