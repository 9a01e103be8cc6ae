"""The backend registry: lazy registration (the CPU path never imports CUDA modules), capabilities
chosen by the op without a fallback, and the general join path (gather maps, then a gather)
giving the fused CPU path's answer."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.backends import registry
from gpuframe.core.device import CPU, Device

from .common.join import rows_multiset


def test_cpu_path_never_imports_cuda_modules():
    # a fresh interpreter: the CPU join, hash partition and gather, then what got imported
    code = textwrap.dedent("""
        import sys
        import numpy as np, pyarrow as pa
        import gpuframe
        from gpuframe.ops.hashing import hash_rows
        from gpuframe.ops.partition import partition_ids
        t = gpuframe.from_arrow(pa.table({"k": np.arange(1000) % 37, "s": [str(i) for i in range(1000)]}))
        for how in ("inner", "left", "semi"):
            gpuframe.merge(t, t, on=["k", "s"], how=how)
        gpuframe.join_indices(t, t, on="k")
        gpuframe.join_size(t, t, on="s")
        gpuframe.hash_partition(t, "k", 7)
        partition_ids(t, "s", 3)
        hash_rows(t, ["k", "s"])
        gpuframe.take(t, [3, 1, -1])
        bad = sorted(m for m in sys.modules
                     if m == "numba.cuda" or m.startswith(("numba.cuda.", "gpuframe.backends.cuda", "cupy")))
        loaded = sorted(m for m in sys.modules if m.startswith("gpuframe.backends.cpu."))
        print("BAD", bad)
        print("LOADED", loaded)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"})
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("BAD", "LOADED")))
    assert lines["BAD"] == "[]", f"the CPU path imported CUDA modules: {lines['BAD']}"
    # and the walk above did run the CPU backend's modules
    for mod in ("join", "partition", "gather", "hashing"):
        assert f"gpuframe.backends.cpu.{mod}" in lines["LOADED"]


def test_importing_gpuframe_loads_no_backend():
    code = ("import sys, gpuframe; "
            "print(sorted(m for m in sys.modules if m.startswith('gpuframe.backends.') "
            "and m not in ('gpuframe.backends.registry', 'gpuframe.backends.contract')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_lazy_table_names_importable_implementations():
    for (backend, op), target in registry.LAZY.items():
        assert backend in registry.BACKENDS
        module, _, attr = target.partition(":")
        assert module.startswith(f"gpuframe.backends.{backend}."), target
    # every CPU entry resolves (CUDA ones need numba.cuda: the simulator lane resolves those)
    for op in registry.implemented("cpu"):
        fn, dev = registry.resolve(op, CPU)
        assert callable(fn) and dev == CPU


def test_implemented_lists_both_backends():
    cpu, cuda = registry.implemented("cpu"), registry.implemented("cuda")
    assert {"join", "join_size", "merged_key", "gather_column", "check_indices", "hash_rows",
            "partition_ids", "hash_partition"} <= set(cuda)
    # the CPU's capabilities: the fused join, the skewed merge's split in one scatter, the
    # set operations' rows without group ids, groupby's dense integer keys and one pass, and the
    # sort's key column without a gather and its merge of sorted runs
    assert set(cpu) == set(cuda) | {"join_fused", "hash_partition_heavy", "first_rows", "distinct_rows",
                                    "dense_groups", "group_reduce_many", "sort_keyed",
                                    "merge_indices"}


def test_capability_never_falls_back():
    cuda = Device("cuda", 0)
    assert registry.capability("join_fused", CPU) is not None
    # CUDA has no fused join: the op takes its general path, without a warning or an error
    with gpuframe.config.options(raise_on_fallback=True):
        assert registry.capability("join_fused", cuda) is None
        with pytest.raises(gpuframe.FallbackError, match="'join_fused' has no cuda implementation"):
            registry.resolve("join_fused", cuda)


def test_register_lazy_validates_and_takes_effect(monkeypatch):
    monkeypatch.setattr(registry, "LAZY", dict(registry.LAZY))
    monkeypatch.setattr(registry, "_IMPLS", {name: {} for name in registry.BACKENDS})
    with pytest.raises(ValueError, match="target must be 'module:attribute', got 'os.path'"):
        registry.register_lazy("cpu", "demo", "os.path")
    with pytest.raises(ValueError, match=r"backend must be one of \['cpu', 'cuda'\], got 'tpu'"):
        registry.register_lazy("tpu", "demo", "os:getcwd")
    registry.register_lazy("cpu", "demo", "os.path:basename")
    fn, dev = registry.resolve("demo", CPU)
    assert fn("/a/b") == "b" and "demo" in registry.implemented("cpu")


def test_errors_are_one_type_everywhere():
    from gpuframe import errors
    from gpuframe.core import device, validate

    assert gpuframe.FallbackError is registry.FallbackError is errors.FallbackError
    assert gpuframe.PerformanceWarning is registry.PerformanceWarning is errors.PerformanceWarning
    assert gpuframe.NoGPUError is device.NoGPUError is errors.NoGPUError
    assert validate.InvalidColumnError is errors.InvalidColumnError


# --------------------------------------------------------------------------- general join path
def _tables():
    rng = np.random.default_rng(5)
    n, m = 300, 120
    lk = rng.integers(0, 60, n)
    rk = rng.integers(0, 60, m)
    left = pa.table({
        "k": pa.array(lk, pa.int32(), mask=rng.random(n) < 0.1),
        "s": pa.array([f"s{x % 17}" for x in lk], mask=rng.random(n) < 0.1),
        "f": pa.array(rng.random(n)),
        "b": pa.array(rng.random(n) < 0.5),
        "v": pa.array(rng.integers(0, 9, n), pa.int16(), mask=rng.random(n) < 0.2),
    })
    right = pa.table({
        "k": pa.array(rk, pa.int64()),
        "s": pa.array([f"s{x % 17}" for x in rk]).dictionary_encode(),
        "f": pa.array(rng.random(m), pa.float32()),
        "w": pa.array([f"w{i}" for i in range(m)], mask=rng.random(m) < 0.2),
    })
    return gpuframe.from_arrow(left), gpuframe.from_arrow(right)


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
@pytest.mark.parametrize("on", [["k"], ["s"], ["k", "s"]], ids=["int", "string", "int_string"])
@pytest.mark.parametrize("nulls_equal", [False, True])
def test_general_path_matches_the_fused_path(how, on, nulls_equal, monkeypatch):
    # the CPU without its fused capability: gather maps from "join", merged keys from
    # "merged_key", the other columns gathered, as the CUDA backend does it
    left, right = _tables()
    fused = gpuframe.merge(left, right, on=on, how=how, nulls_equal=nulls_equal).to_arrow()
    calls = []
    real = registry.capability
    monkeypatch.setattr("gpuframe.ops.join.capability",
                        lambda op, dev: calls.append(op) or (None if op == "join_fused" else real(op, dev)))
    general = gpuframe.merge(left, right, on=on, how=how, nulls_equal=nulls_equal).to_arrow()
    assert calls == ["join_fused"]
    assert general.schema == fused.schema
    assert rows_multiset(general, general.column_names) == rows_multiset(fused, fused.column_names)
