"""The host allocator and the memory guard inside a real Dask worker process with a memory limit."""
from __future__ import annotations

import pytest

pytest.importorskip("distributed")
from distributed import Client, LocalCluster  # noqa: E402

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

MiB = 1 << 20
LIMIT = 1 << 30


def _in_worker() -> dict:
    import numpy as np

    from gpuframe.core import hostalloc, memlimits, memory
    from gpuframe.core.device import CPU

    alloc = hostalloc.get_host_allocator()
    out: dict = {}
    x = hostalloc.host_empty(64 * MiB, np.uint8)
    x[:] = 1
    del x
    hm = memlimits.host_memory()
    out["worker_limit"] = hm.worker_limit
    out["limited_by"] = hm.limited_by
    out["idle_small"] = alloc.stats()["idle_bytes"]
    try:
        memory.ensure_available("take", LIMIT, CPU, rows=1)
    except MemoryError as exc:
        out["guard"] = str(exc)
    # the worker's own data grows past its spill threshold (0.7 of the limit): idle memory goes
    y = hostalloc.host_empty(64 * MiB, np.uint8)
    y[:] = 1
    del y
    held = np.ones(max(0, int(0.76 * LIMIT) + 64 * MiB - memlimits.process_rss()), np.uint8)  # y still counted
    out["rss_held"] = memlimits.process_rss()
    out["idle_after_growth"] = alloc.idle_bytes
    out["effective_limit"] = alloc.stats()["effective_limit_bytes"]
    del held
    return out


def test_worker_limit_caps_the_idle_pool_and_the_guard():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, memory_limit=LIMIT, protocol="tcp",
                      dashboard_address=":0", worker_dashboard_address=None) as cluster, Client(cluster) as client:
        d = client.submit(_in_worker, pure=False).result(timeout=120)
    assert d["worker_limit"] == LIMIT
    assert d["idle_small"] == 64 * MiB                      # room below the spill threshold: kept
    assert "the Dask worker's memory limit of 1,073,741,824 bytes" in d["guard"]
    assert d["guard"].startswith("take: its output of 1 rows needs about 1,073,741,824 bytes")
    assert d["rss_held"] > 0.7 * LIMIT
    assert d["idle_after_growth"] == 0 and d["effective_limit"] == 0, d
