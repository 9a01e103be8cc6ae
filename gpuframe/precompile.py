"""Compile the CPU kernels into numba's on-disk cache ahead of their first use (``gpuframe compile``).

Every CPU kernel is ``cache=True``: compiled once per machine, then loaded in about a
millisecond. The first use on a fresh machine pays the compile, 15-25 s on 2 cores for the
first join alone. :func:`compile_kernels` pays it at install time instead (``gpuframe compile``;
``ci/demo.sh`` runs the demo's jobs before the demo), for the kernels the library's
operations reach: it runs a fixed list of jobs (every operation, every stored type, both sides
of the size switches that pick a kernel path) in one process per core, each walking the jobs
from a different place, sharing their compiles (:func:`~gpuframe.kernels.jit_cache.share_compiles`:
a kernel signature is compiled by the process that claims it first and loaded by the others).
A kernel or type the jobs miss still compiles on first use, as before.

It only fills a cache: nothing it does changes a result. With a warm cache it takes as long as
the jobs' imports and runs (seconds).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

from .kernels.jit_cache import share_compiles, shared_compiles

__all__ = ["JOBS", "SIZES", "compile_kernels", "run_jobs"]


# --------------------------------------------------------------------------- the jobs
def _np():
    import numpy as np
    return np


def _numbers(n: int, seed: int, nulls: bool = True) -> Any:
    """A pyarrow table of ``n`` rows: every fixed-width stored type, with nulls (``nulls``)."""
    import pyarrow as pa
    np = _np()
    rng = np.random.default_rng(seed)
    k = rng.integers(0, max(n // 3, 1), n)
    mask = (rng.random(n) < 0.1) if nulls else None
    cols = {}
    for t in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        cols[t] = pa.array((k % min(np.iinfo(t).max, 1 << 40)).astype(t), mask=mask)
    cols["float32"] = pa.array((k * 0.5).astype("float32"), mask=mask)
    cols["float64"] = pa.array(k * 0.25, mask=mask)
    cols["bool"] = pa.array(k % 2 == 0, mask=mask)
    cols["date32"] = pa.array(k.astype("int32"), mask=mask).view(pa.date32())
    cols["timestamp"] = pa.array(k.astype("int64"), mask=mask).view(pa.timestamp("us"))
    cols["key"] = pa.array(k, mask=mask)
    return pa.table(cols)


def _strings(n: int, seed: int, nulls: bool = True) -> Any:
    """A pyarrow table of ``n`` rows with string, large_string and dictionary columns and an
    int64 key."""
    import pyarrow as pa
    np = _np()
    rng = np.random.default_rng(seed)
    k = rng.integers(0, max(n // 3, 1), n)
    mask = (rng.random(n) < 0.1) if nulls else None
    words = np.array([f"w{i}é" if i % 7 else f"long-key-{i:012d}" for i in range(max(n // 3, 1))], dtype=object)
    s = pa.array(words[k], pa.string(), mask=mask)
    return pa.table({"s": s, "ls": s.cast(pa.large_string()), "d": s.dictionary_encode(),
                     "key": pa.array(k, mask=mask), "v": pa.array(rng.random(n))})


# a small table (the serial and in-cache paths) and one past every size switch of the CPU backend
# (parallel kernels, a partitioned join build, radix sort passes)
SIZES = (2_000, 400_000)
_QUADRATIC_MAX = 10_000   # joins whose output grows with the square of the rows run below this


def _join_sides(n: int) -> tuple[Any, Any, Any]:
    """An int64-keyed probe side with every fixed-width type, a build side with repeated keys
    and one with unique keys (no nulls)."""
    import pyarrow as pa
    import gpuframe
    left = gpuframe.from_arrow(_numbers(n, 1))
    right = gpuframe.from_arrow(_numbers(n // 2 + 1, 2).select(["key", "float64", "int32"]))
    keys = _np().random.default_rng(3).permutation(n // 3 + 1)
    unique_right = gpuframe.from_arrow(pa.table({"key": keys, "int16": (keys % 1000).astype("int16")}))
    return left, right, unique_right


def job_join_inner(n: int) -> None:
    import gpuframe
    left, right, unique_right = _join_sides(n)
    gpuframe.merge(left, right, on="key")
    gpuframe.merge(left, unique_right, on="key")
    gpuframe.merge(unique_right, left, on="key")
    # string and dictionary payloads on an int64 key
    strs = gpuframe.from_arrow(_strings(n, 19))
    gpuframe.merge(strs, unique_right, on="key")
    gpuframe.merge(unique_right, strs, on="key")
    gpuframe.merge(strs, gpuframe.from_arrow(_strings(n // 4 + 1, 20)).select(["key", "s", "d"]), on="key",
                   suffixes=("_l", "_r"))


def job_join_outer(n: int) -> None:
    import gpuframe
    left, right, unique_right = _join_sides(n)
    for how in ("left", "right", "outer"):
        gpuframe.merge(left, right, on="key", how=how)
        gpuframe.merge(left, unique_right, on="key", how=how)
    if n <= _QUADRATIC_MAX:   # a null key matches every null key: quadratic in the nulls
        gpuframe.merge(left, right, on="key", nulls_equal=True)
    strs = gpuframe.from_arrow(_strings(n, 21))
    gpuframe.merge(strs, gpuframe.from_arrow(_strings(n // 4 + 1, 22)).select(["key", "s", "d"]), on="key",
                   how="left", suffixes=("_l", "_r"))


def job_join_semi(n: int) -> None:
    import gpuframe
    left, right, unique_right = _join_sides(n)
    for how in ("semi", "anti"):
        gpuframe.merge(left, right, on="key", how=how)
        gpuframe.merge(left, unique_right, on="key", how=how)
    gpuframe.join_indices(left, right, on="key")
    gpuframe.join_indices(left, unique_right, on="key", how="left")
    gpuframe.join_size(left, right, on="key")
    gpuframe.join_size(left, unique_right, on="key", how="outer")


def job_join_keys(n: int) -> None:
    import gpuframe
    nums = gpuframe.from_arrow(_numbers(n, 4))
    other = gpuframe.from_arrow(_numbers(n // 2 + 1, 5))
    narrow = ("int8", "bool") if n <= _QUADRATIC_MAX else ()   # few values: quadratic joins
    for key in narrow + ("int16", "int32", "uint64", "float32", "float64", "date32", "timestamp"):
        gpuframe.merge(nums.select([key, "key"]), other.select([key, "float64"]) if key != "float64"
                       else other.select([key, "int8"]), on=key)
    gpuframe.merge(nums, other.select(["int32", "key", "uint8"]), on=["key", "int32"], suffixes=("_l", "_r"))
    strs = gpuframe.from_arrow(_strings(n, 6))
    sother = gpuframe.from_arrow(_strings(n // 2 + 1, 7))
    for key in ("s", "ls", "d"):
        for how in ("inner", "left", "outer"):
            gpuframe.merge(strs, sother.select([key, "v"]), on=key, how=how, suffixes=("_l", "_r"))
    gpuframe.merge(strs, sother.select(["s", "key", "ls"]), on=["s", "key"], how="left")
    gpuframe.merge(strs, sother.select(["key", "s", "d"]), on="key")
    tiny = gpuframe.from_arrow(_numbers(50, 8))
    gpuframe.merge(tiny.select(["key", "int8"]), tiny.select(["int16", "float64"]), how="cross")


_FRAME_TYPES = ["key", "int64", "float64", "bool", "timestamp"]   # what a DataFrame's columns mostly are


def job_partition(n: int) -> None:
    import gpuframe
    # int64 keys, the common payload types; Arrow's buffers are read-only to numba, pandas'
    # writable: kernels compile for each (pandas holds an integer column with nulls as float64:
    # its tables have none)
    nums = gpuframe.from_arrow(_numbers(n, 9).select(_FRAME_TYPES))
    pandas_nums = gpuframe.from_pandas(_numbers(n, 25, nulls=False).select(_FRAME_TYPES).to_pandas())
    strs = gpuframe.from_arrow(_strings(n, 10).select(["key", "s", "v"]))
    pandas_strs = gpuframe.from_pandas(_strings(n, 26, nulls=False).select(["key", "s", "v"]).to_pandas())
    for parts in (2, 64, 300):
        for t in (nums, pandas_nums, strs, pandas_strs):
            gpuframe.hash_partition(t, "key", parts)
    gpuframe.take(nums, _np().arange(0, n, 3))
    gpuframe.take(strs, _np().arange(n - 1, -1, -2))
    # partitions gathered into one table (gpuframe.dask.to_table, a multi-file read_parquet): at
    # the large size past the parallel block copy's threshold
    gpuframe.concat([pandas_nums, pandas_nums])


def job_partition_types(n: int) -> None:
    import gpuframe
    nums = gpuframe.from_arrow(_numbers(n, 23))
    strs = gpuframe.from_arrow(_strings(n, 24))
    pandas_nums = gpuframe.from_pandas(_numbers(n, 27, nulls=False).to_pandas())
    pandas_strs = gpuframe.from_pandas(_strings(n, 28, nulls=False).to_pandas())
    for parts in (7, 300):
        for t in (nums, pandas_nums):
            gpuframe.hash_partition(t, "key", parts)
            gpuframe.hash_partition(t, ["key", "int32"], parts)
        for t in (strs, pandas_strs):
            gpuframe.hash_partition(t, "key", parts)
            gpuframe.hash_partition(t, "s", parts)
        gpuframe.hash_partition(strs, ["key", "d"], parts)
    for key in nums.column_names:
        gpuframe.hash_partition(nums, key, 8)
        gpuframe.hash_partition(pandas_nums, key, 8)
    gpuframe.take(nums, _np().arange(0, n, 3))
    gpuframe.take(strs, _np().arange(n - 1, -1, -2))
    # partitions gathered into one table (gpuframe.dask.to_table, a multi-file read_parquet): at
    # the large size past the parallel block copy's threshold
    gpuframe.concat([pandas_nums, pandas_nums])


def job_sort(n: int) -> None:
    import gpuframe
    nums = gpuframe.from_arrow(_numbers(n, 11))
    strs = gpuframe.from_arrow(_strings(n, 12))
    for key in nums.column_names:
        gpuframe.sort(nums, key)
    gpuframe.sort(nums, "int64", descending=True, nulls_last=False)
    gpuframe.sort(nums, ["int32", "float64"], descending=[False, True])
    for key in ("s", "ls", "d"):
        gpuframe.sort(strs, key)
    gpuframe.sort(strs, ["s", "key"], descending=[True, False])
    gpuframe.sort_indices(nums, ["key", "uint8"])
    # keys without nulls: the bucket sort of one large key and its values decoded from the words
    plain = gpuframe.from_arrow(_numbers(n, 14, nulls=False))
    for key in plain.column_names:
        gpuframe.sort(plain, key, descending=key == "int64")
    # a string key of few distinct values (past 64k rows): grouped by its bytes, the distinct
    # strings ranked
    import pyarrow as pa
    gpuframe.sort(gpuframe.from_arrow(pa.table({"c": pa.array([f"category-{i % 40}" for i in range(n)])})), "c")
    # the distributed sort's merge of sorted runs: an int64 key's own values, and sort words
    from gpuframe.ops.sort import _merge_runs
    half = n // 2
    for by in (["int64"], ["int64", "key"]):
        runs = gpuframe.concat([gpuframe.sort(plain.slice(0, half), by), gpuframe.sort(plain.slice(half, n - half), by)])
        _merge_runs(runs, by, [0, half, n])


def job_groupby(n: int) -> None:
    import gpuframe
    from gpuframe.ops.groupby import OPS
    nums = gpuframe.from_arrow(_numbers(n, 13))
    for values in ("int64", "int32", "uint8", "float64", "float32", "bool"):
        aggs = {f"{op}": (values, op) for op in OPS}
        nums.groupby("key").agg(**aggs)
    nums.groupby(["int8", "uint16"], sort=True).agg(s=("float64", "sum"), m=("int64", "max"))
    nums.groupby("key", dropna=True).agg(n=("timestamp", "min"), d=("date32", "max"), c=("bool", "count"))
    # keys without nulls from 0 (ids): their values are the groups (dense keys read as group ids)
    ids = gpuframe.from_arrow(_numbers(n, 19, nulls=False))
    ids.groupby("key").agg(s=("int64", "sum"), m=("float64", "mean"), c=("int32", "count"), sd=("float32", "std"),
                           md=("float64", "median"), u=("int8", "nunique"), x=("int16", "max"), f=("uint8", "first"),
                           z=("int8", "size"), lm=("int32", "min"))
    strs = gpuframe.from_arrow(_strings(n, 14))
    for key in ("s", "d", ["s", "key"]):
        strs.groupby(key).agg(v_sum=("v", "sum"), v_mean=("v", "mean"), v_std=("v", "std"),
                              v_med=("v", "median"), k_u=("key", "nunique"), ls_first=("ls", "first"),
                              s_max=("s", "max"), d_min=("d", "min"))


def job_setops(n: int) -> None:
    import gpuframe
    a = gpuframe.from_arrow(_numbers(n, 15))
    b = gpuframe.from_arrow(_numbers(n, 16))
    one_a, one_b = a.select(["key"]), b.select(["key"])
    for x, y in ((a, b), (one_a, one_b)):
        gpuframe.union(x, y)
        gpuframe.union(x, y, distinct=False)
        gpuframe.intersect(x, y)
        gpuframe.difference(x, y)
        for keep in ("any", "first", "last"):
            gpuframe.unique(x, keep=keep)
    sa = gpuframe.from_arrow(_strings(n, 17))
    sb = gpuframe.from_arrow(_strings(n, 18))
    gpuframe.union(sa, sb)
    gpuframe.intersect(sa, sb)
    gpuframe.difference(sa, sb)
    gpuframe.unique(sa, ["s"], keep="first")
    gpuframe.concat([a, b])
    gpuframe.filter(a, _np().arange(n) % 3 == 0)


# the processes start at different places in this list (ci/demo.sh runs the first two)
JOBS: list[tuple[str, Callable[[int], None]]] = [
    ("join-inner", job_join_inner),      # inner merges on int64 keys, string payloads
    ("partition", job_partition),        # hash_partition on int64 keys, a DataFrame's usual types; take, concat
    ("join-outer", job_join_outer),      # left, right and outer merges
    ("join-semi", job_join_semi),        # semi and anti merges, join_indices, join_size
    ("join-keys", job_join_keys),        # merge on every other key type, string and multi-column keys
    ("partition-types", job_partition_types),   # hash_partition of every type, string and multi-column keys
    ("groupby", job_groupby),            # every op on every value type, string keys
    ("sort", job_sort),                  # every type, descending, multi-key
    ("setops", job_setops),              # union, intersect, difference, unique, concat, filter
]


# --------------------------------------------------------------------------- running
def _chosen(jobs: Optional[Sequence[str]]) -> list[tuple[str, Callable[[int], None]]]:
    if jobs is None:
        return list(JOBS)
    names = [name for name, _ in JOBS]
    unknown = [j for j in jobs if j not in names]
    if unknown or isinstance(jobs, str):
        raise ValueError(f"jobs: expected a list of job names from {names}, got {jobs!r}")
    return [(name, fn) for name, fn in JOBS if name in jobs]


def run_jobs(start: int = 0, claims_folder: Optional[str] = None, sizes: tuple[int, ...] = SIZES,
             jobs: Optional[Sequence[str]] = None) -> list[tuple[str, float]]:
    """Run the jobs (every one, or those named in ``jobs``) in this process, each on tables of
    every size in ``sizes``: all jobs at the first size, then at the next..., from unit ``start``
    of that list on (wrapping round), so that processes starting at different places compile
    different kernels. With ``claims_folder``, share the compiles with the other processes using
    that folder. Returns each unit's name (``job@rows``) and seconds."""
    if claims_folder is not None:
        share_compiles(claims_folder)
    units = [(f"{name}@{n}", fn, n) for n in sizes for name, fn in _chosen(jobs)]
    times = []
    for name, job, n in units[start % len(units):] + units[:start % len(units)]:
        t0 = time.perf_counter()
        job(n)
        times.append((name, time.perf_counter() - t0))
    return times


def compile_kernels(processes: Optional[int] = None, *, say: Optional[Callable[[str], None]] = None,
                    sizes: tuple[int, ...] = SIZES, jobs: Optional[Sequence[str]] = None) -> dict:
    """Compile the CPU kernels into numba's on-disk cache in ``processes`` processes at once
    (default: one per core, at most one per job and size), each running the jobs (every one, or
    those named in ``jobs``) on tables of each of the ``sizes`` (rows), from its own place. The processes share their
    compiles through ``GPUFRAME_COMPILE_CLAIMS`` when it is set (with the processes already
    sharing there), else through a folder of their own. Returns ``{"seconds", "processes",
    "jobs"}``; raises ``RuntimeError`` with the failing process's output if one fails."""
    chosen = [name for name, _ in _chosen(jobs)]
    if processes is None:
        processes = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                        len(chosen) * len(sizes))
    if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
        raise ValueError(f"processes: expected an int >= 1, got {processes!r}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpuframe-compile-") as own:
        folder = os.environ.get("GPUFRAME_COMPILE_CLAIMS") or own
        procs, logs = [], []
        units = len(chosen) * len(sizes)
        for i in range(processes):
            start = (i * units) // processes
            cmd = [sys.executable, "-m", "gpuframe.precompile", "--start", str(start), "--claims", folder,
                   "--sizes", ",".join(str(n) for n in sizes), *[a for name in chosen for a in ("--job", name)]]
            env = dict(os.environ, GPUFRAME_COMPILE_CLAIMS=folder)   # shared from the first kernel import
            # output to a file, not a pipe: a child that fills a pipe nobody reads yet would stop,
            # perhaps holding a signature the others wait for
            logs.append(open(os.path.join(own, f"process-{i}.log"), "w+"))
            procs.append(subprocess.Popen(cmd, stdout=logs[-1], stderr=subprocess.STDOUT, text=True, env=env))
        outputs = []
        try:
            for p, log in zip(procs, logs):
                p.wait()
                log.seek(0)
                outputs.append(log.read())
        except BaseException:   # interrupted: no compiling process outlives the command
            for p in procs:
                p.kill()
            raise
        finally:
            for log in logs:
                log.close()
    failed = [(p.returncode, out) for p, out in zip(procs, outputs) if p.returncode != 0]
    if failed:
        rc, out = failed[0]
        raise RuntimeError(f"compiling the kernels failed (a process exited with {rc}):\n{out[-4000:]}")
    for i, out in enumerate(outputs):
        for line in out.strip().splitlines():
            if say is not None:
                say(f"process {i}: {line}")
    return {"seconds": time.perf_counter() - t0, "processes": processes, "jobs": len(chosen)}


def _main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m gpuframe.precompile")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--claims", default=None)
    p.add_argument("--sizes", default=f"{SIZES[0]},{SIZES[1]}")
    p.add_argument("--job", action="append", default=None)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    times = run_jobs(a.start, a.claims, tuple(int(x) for x in a.sizes.split(",")), a.job)
    print(" ".join(f"{name} {s:.1f} s;" for name, s in times) + f" total {time.perf_counter() - t0:.1f} s; "
          f"{shared_compiles()['compiled']} kernel signatures compiled here, "
          f"{shared_compiles()['loaded']} by another process")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
