"""gpuframe.info() and format_info()."""
from __future__ import annotations

import json
import os
from importlib import metadata

import numpy as np
import pyarrow as pa

import gpuframe
from gpuframe.core.device import cudasim_enabled, gpu_count
from gpuframe.sysinfo import format_info

EXPECTED_PACKAGES = {"gpuframe", "numpy", "pyarrow", "numba", "numba-cuda", "cupy", "torch", "dask",
                     "distributed", "ucxx"}


def test_info_structure_and_versions():
    d = gpuframe.info()
    json.dumps(d)  # plain data, for the CLI's --json and for bug reports
    assert set(d) >= {"versions", "backends", "devices", "transports", "python", "platform"}
    v = d["versions"]
    assert EXPECTED_PACKAGES <= set(v)
    assert v["gpuframe"] == gpuframe.__version__
    assert v["numpy"] == np.__version__ and v["pyarrow"] == pa.__version__
    assert v["numba"] == metadata.version("numba")
    for name, ver in v.items():
        assert ver is None or isinstance(ver, str), name
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert v["cupy"] is None


def test_info_devices_and_transports():
    d = gpuframe.info()
    dev = d["devices"]
    assert dev["cpu"]["logical_cores"] == os.cpu_count() and dev["cpu"]["model"]
    assert dev["cuda_simulator"] == cudasim_enabled()
    assert len(dev["gpus"]) == gpu_count()
    for g in dev["gpus"]:
        assert g["name"] and g["memory_bytes"] > 0
    if not dev["gpus"]:
        assert dev["cuda"]["error"]
    t = d["transports"]
    assert t["tcp"]["available"] == (d["versions"]["distributed"] is not None)
    assert isinstance(t["ucx"]["available"], bool)
    if not t["ucx"]["available"]:
        assert t["ucx"]["error"]
    assert set(d["backends"]) >= {"cpu", "cuda"}
    assert all(isinstance(op, str) for op in d["backends"]["cpu"])


def test_format_info():
    d = gpuframe.info()
    text = format_info(d)
    for section in ("packages:", "devices:", "backends:", "transports:"):
        assert section in text
    assert f"gpuframe {gpuframe.__version__}" in text
    assert d["versions"]["pyarrow"] in text and d["devices"]["cpu"]["model"] in text
    # a missing package prints as "-" rather than None
    fake = json.loads(json.dumps(d))
    fake["versions"]["cupy"] = None
    fake["devices"]["gpus"] = [{"id": 0, "name": "Fake GPU", "memory_bytes": 80 * 2**30,
                                "compute_capability": "9.0", "multiprocessors": 132}]
    out = format_info(fake)
    assert "cuda:0  Fake GPU, 80.0 GiB, compute capability 9.0" in out
    assert "None" not in out.split("devices:")[0]



def test_info_stays_the_function_after_the_module_is_imported():
    import gpuframe.sysinfo as mod

    assert callable(gpuframe.info) and gpuframe.info()["versions"]["gpuframe"] == gpuframe.__version__
    assert mod.info is gpuframe.info
