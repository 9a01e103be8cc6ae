"""Every CUDA kernel family on tiny data, the CPU backend as the oracle: the first step of
``ci/gpu_check.sh`` on a GPU machine.

``python -m gpuframe.benchmarks.gpu_kernel_check [--out FILE.json] [--budget-s N] [--cases SUBSTR]``

Families: ``hashing`` (``hash_rows`` on every stored type, nulls, several columns, a seed),
``partition`` (``partition_ids``, ``hash_partition``: offsets and the whole table, which is stable
on both devices), ``gather`` (``take`` with repeats and ``-1`` on every type with nulls), ``join``
(``join_indices``, ``join_size`` and ``merge`` for every ``how``, on int, promoted int, float,
string, dictionary, multi-column and nullable keys, ``nulls_equal`` both ways), ``merged_key``
(outer merges whose key column comes from either side, promoted types) and ``keyprep`` (the
key preparation of :mod:`gpuframe.kernels.keyprep`: dictionary keys with null indices and null
entries, several string keys, uint64 joined with signed keys, and their merged keys) and
``exchange`` (``exchange_tables`` between two ranks over TCP in this process, the received
table assembled by :mod:`gpuframe.kernels.assemble`: every stored type with nulls, pieces that
start mid-byte, different, shared and widened dictionaries).

Each case runs on ``cuda:0`` and on the CPU and compares the answers. Its outcome is one of

* ``ok``;
* ``differs``: the GPU's answer is not the CPU's (the message says how);
* ``compile failed``: a CUDA kernel did not compile (numba typing/lowering, NVVM, the linker);
* ``error``: anything else raised on the GPU side (or, ``cpu error``, on the CPU side);
* ``skipped``: the ``--budget-s`` ran out first.

Exit status: 0 every case ok; 3 at least one compile failure (``ci/gpu_check.sh`` stops there:
nothing after it can run); 1 other failures; 2 no CUDA device (a message, no traceback).

Under ``NUMBA_ENABLE_CUDASIM=1`` the "GPU" is numba's simulator (slow: use ``--cases``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa

EXIT_OK, EXIT_FAILED, EXIT_NO_GPU, EXIT_COMPILE = 0, 1, 2, 3
OK, DIFFERS, COMPILE, ERROR, CPU_ERROR, SKIPPED = ("ok", "differs", "compile failed", "error", "cpu error",
                                                   "skipped")
HOWS = ("inner", "left", "right", "outer", "semi", "anti")

# Exception classes (by name, anywhere in the MRO) that mean a kernel did not compile or load.
_COMPILE_ERROR_NAMES = {"NumbaError", "TypingError", "LoweringError", "CompilerError", "UnsupportedError",
                        "NvvmError", "NvvmSupportError", "NvrtcError", "NvrtcCompilationError", "LinkerError",
                        "CCSupportError"}
# CUDA driver errors that mean the compiled module could not be loaded
_LOAD_ERROR_TEXT = ("CUDA_ERROR_INVALID_PTX", "CUDA_ERROR_NO_BINARY_FOR_GPU", "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
                    "CUDA_ERROR_INVALID_IMAGE", "CUDA_ERROR_JIT_COMPILER_NOT_FOUND")
# Source files of numba's (and numba-cuda's) compilers: an exception raised inside them while a
# kernel is being built is a compile failure whatever its class (an AssertionError in an IR pass).
_COMPILER_FILES = ("compiler.py", "compiler_machinery.py", "typed_passes.py", "untyped_passes.py", "lowering.py",
                   "typeinfer.py", "nvvm.py", "codegen.py", "inline_closurecall.py", "ir_utils.py")


def is_compile_error(exc: BaseException) -> bool:
    """True when ``exc`` says a kernel failed to compile (or its machine code failed to load)."""
    names = {c.__name__ for c in type(exc).__mro__}
    if names & _COMPILE_ERROR_NAMES:
        return True
    text = str(exc)
    if any(t in text for t in _LOAD_ERROR_TEXT):
        return True
    tb = exc.__traceback__
    while tb is not None:
        fname = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if "numba" in fname and fname.rsplit("/", 1)[-1] in _COMPILER_FILES:
            return True
        tb = tb.tb_next
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_compile_error(cause)


def describe(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --------------------------------------------------------------------------- tiny data
def _array(dtype: pa.DataType, n: int, seed: int, card: int, nulls: bool) -> pa.Array:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, card, n)
    mask = (rng.random(n) < 0.15) if nulls else None
    if pa.types.is_dictionary(dtype):
        return pa.array([f"v{c}" for c in codes], pa.string(), mask=mask).dictionary_encode().cast(dtype)
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        words = ["", "a", "ß", "日本", "key-"]
        return pa.array([words[c % 5] + (str(c) if c % 3 else "") for c in codes], dtype, mask=mask)
    if pa.types.is_boolean(dtype):
        return pa.array((codes % 2).astype(bool), dtype, mask=mask)
    if pa.types.is_floating(dtype):
        vals = (codes - card // 2).astype(np.float64) * 0.5
        vals[codes == 0] = np.nan
        vals[codes == 1] = -0.0
        return pa.array(vals.astype(dtype.to_pandas_dtype()), dtype, mask=mask)
    if pa.types.is_date32(dtype):
        return pa.array(codes.astype(np.int32), pa.int32(), mask=mask).cast(dtype)
    if pa.types.is_timestamp(dtype):
        return pa.array(codes.astype(np.int64) * 1_000_003, pa.int64(), mask=mask).cast(dtype)
    info = np.iinfo(dtype.to_pandas_dtype())
    lo = max(int(info.min), -(card // 2)) if info.min < 0 else 0
    return pa.array(np.clip(codes + lo, info.min, info.max).astype(dtype.to_pandas_dtype()), dtype, mask=mask)


def _table(n: int, types: dict[str, pa.DataType], seed: int, card: int = 20, nulls: bool = True) -> pa.Table:
    return pa.table({name: _array(t, n, seed + i, card, nulls) for i, (name, t) in enumerate(types.items())})


ALL_TYPES = {
    "i8": pa.int8(), "i16": pa.int16(), "i32": pa.int32(), "i64": pa.int64(), "u8": pa.uint8(),
    "u16": pa.uint16(), "u32": pa.uint32(), "u64": pa.uint64(), "f32": pa.float32(), "f64": pa.float64(),
    "b": pa.bool_(), "s": pa.string(), "ls": pa.large_string(), "d32": pa.date32(), "ts": pa.timestamp("us"),
    "dict": pa.dictionary(pa.int32(), pa.string()),
}


# --------------------------------------------------------------------------- answers
def _host(arr: Any) -> Optional[np.ndarray]:
    from gpuframe.core import memory

    return None if arr is None else np.asarray(memory.to_host(arr))


def _canon(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return "<nan>"
    if isinstance(v, float) and v == 0.0:
        return 0.0
    return v


def _rows(t: pa.Table, ordered: bool) -> Any:
    rows = [tuple(_canon(v) for v in r) for r in zip(*[c.to_pylist() for c in t.columns])] if t.num_rows else []
    return rows if ordered else Counter(rows)


def _table_answer(out: Any, ordered: bool) -> tuple:
    t = out.to_arrow()
    return (str(t.schema), t.num_rows, _rows(t, ordered))


def _pairs(li: Any, ri: Any) -> tuple:
    left = _host(li)
    if ri is None:
        return ("left only", left.tolist())
    right = _host(ri)
    return ("pairs", Counter(zip(left.tolist(), right.tolist())))


@dataclass
class Case:
    family: str
    name: str
    run: Callable[[str], Any]   # device ("cuda" or "cpu") -> a comparable answer

    @property
    def id(self) -> str:
        return f"{self.family}/{self.name}"


def _diff(a: Any, b: Any) -> str:
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                if isinstance(x, Counter) and isinstance(y, Counter):
                    only_gpu, only_cpu = x - y, y - x
                    return (f"part {i}: {sum(only_gpu.values())} rows only on the GPU (e.g. {list(only_gpu)[:2]}), "
                            f"{sum(only_cpu.values())} only on the CPU (e.g. {list(only_cpu)[:2]})")
                sx, sy = repr(x), repr(y)
                return f"part {i}: GPU {sx[:150]} vs CPU {sy[:150]}"
    return f"GPU {repr(a)[:150]} vs CPU {repr(b)[:150]}"


# --------------------------------------------------------------------------- cases
def _on(table: pa.Table, device: str) -> Any:
    import gpuframe

    return gpuframe.from_arrow(table, device=device)


def _hash_case(t: pa.Table, on: list[str], seed: int = 0) -> Callable[[str], Any]:
    def run(device: str) -> Any:
        from gpuframe.ops.hashing import hash_rows

        return ("hashes", _host(hash_rows(_on(t, device), on, seed)).tolist())
    return run


def _pids_case(t: pa.Table, on: list[str], n: int) -> Callable[[str], Any]:
    def run(device: str) -> Any:
        from gpuframe.ops.partition import partition_ids

        return ("pids", _host(partition_ids(_on(t, device), on, n)).tolist())
    return run


def _partition_case(t: pa.Table, on: list[str], n: int) -> Callable[[str], Any]:
    def run(device: str) -> Any:
        import gpuframe

        out, offsets = gpuframe.hash_partition(_on(t, device), on, n)
        return (np.asarray(offsets).tolist(),) + _table_answer(out, ordered=True)
    return run


def _take_case(t: pa.Table, idx: np.ndarray) -> Callable[[str], Any]:
    def run(device: str) -> Any:
        import gpuframe

        return _table_answer(gpuframe.take(_on(t, device), idx), ordered=True)
    return run


def _join_case(left: pa.Table, right: pa.Table, how: str, nulls_equal: bool, **on: Any) -> Callable[[str], Any]:
    def run(device: str) -> Any:
        import gpuframe

        lt, rt = _on(left, device), _on(right, device)
        kw = dict(on, how=how, nulls_equal=nulls_equal)
        li, ri = gpuframe.join_indices(lt, rt, **kw)
        pairs = _pairs(li, ri)
        size = gpuframe.join_size(lt, rt, **kw)
        merged = _table_answer(gpuframe.merge(lt, rt, **kw), ordered=how in ("semi", "anti"))
        return (pairs, size) + merged
    return run


def _table_op_case(fn: Callable[..., Any], tables: Sequence[pa.Table], ordered: bool = True,
                   **kw: Any) -> Callable[[str], Any]:
    """A table operation of :mod:`gpuframe` (unique, the set operations, groupby, sort, filter,
    concat, cross) on the tables, its result compared row by row (in order where it is defined)."""
    def run(device: str) -> Any:
        out = fn(*[_on(t, device) for t in tables], **kw)
        return _table_answer(out, ordered)
    return run


def _table_op_cases(all_types: pa.Table) -> list[Case]:
    """The kernels of grouping (kernels.group, the join's slot table), sorting (kernels.sort) and
    selection: every result equal to the CPU's. Aggregates whose float sums depend on the order
    of the additions are left out (integer values only for sums, means of small integers)."""
    import gpuframe

    other = _table(90, {"i64": pa.int64(), "s": pa.string(), "f64": pa.float64()}, 7, card=25)
    mine = all_types.select(["i64", "s", "f64"])
    aggs = {"sum": ("i32", "sum"), "n": ("f64", "count"), "rows": ("s", "size"), "lo": ("f64", "min"),
            "hi": ("s", "max"), "dmax": ("dict", "max"), "tmin": ("ts", "min"), "med": ("i16", "median"),
            "avg": ("i8", "mean"), "first": ("dict", "first"), "last": ("d32", "last"), "distinct": ("s", "nunique"),
            "bsum": ("b", "sum")}
    mask = gpuframe.Column.from_arrow(pa.array(np.arange(all_types.num_rows) % 3 != 1))
    return [
        Case("group", "unique_all_types", _table_op_case(gpuframe.unique, [all_types])),
        Case("group", "unique_last_string", _table_op_case(gpuframe.unique, [all_types], subset=["s", "b"],
                                                           keep="last")),
        Case("group", "union", _table_op_case(gpuframe.union, [mine, other])),
        Case("group", "intersect", _table_op_case(gpuframe.intersect, [mine, other])),
        Case("group", "difference", _table_op_case(gpuframe.difference, [mine, other])),
        Case("group", "groupby_int_key", _table_op_case(gpuframe.groupby_agg, [all_types], by="i8", aggs=aggs)),
        Case("group", "groupby_string_keys_dropna", _table_op_case(gpuframe.groupby_agg, [all_types], by=["s", "b"],
                                                                   aggs=aggs, dropna=True)),
        Case("sort", "int_key", _table_op_case(gpuframe.sort, [all_types], by="i64")),
        Case("sort", "keys_desc_nulls_first", _table_op_case(gpuframe.sort, [all_types], by=["s", "f64", "d32"],
                                                             descending=[True, False, True], nulls_last=False)),
        Case("select", "filter", _table_op_case(lambda t: t.filter(mask.to(t.device)), [all_types])),
        Case("select", "concat", _table_op_case(lambda a, b: gpuframe.concat([a, b.slice(5, 40)]),
                                                [all_types, all_types])),
        Case("select", "cross", _table_op_case(lambda a, b: gpuframe.merge(a, b, how="cross"),
                                               [mine.slice(0, 12), other.slice(3, 9)])),
    ]


def _exchange_case(sources: list[pa.Table]) -> Callable[[str], Any]:
    """Each of two ranks sends the first half of its table (in two pieces, the second starting
    mid-byte, and an empty one) to rank 0 and the rest to rank 1; the answer is what each got."""
    def run(device: str) -> Any:
        import threading

        import gpuframe
        from gpuframe.comm import exchange_tables, local_mesh

        tables = [_on(t, device) for t in sources]
        out = []
        for t in tables:
            cut = t.num_rows // 2 + 1
            out.append([[t.slice(0, 5), t.slice(5, cut - 5), t.slice(0, 0)], [t.slice(cut, t.num_rows - cut)]])
        comms = local_mesh(2, "tcp", timeout=60)
        got: list[Any] = [None, None]

        def rank(r: int) -> None:
            try:
                got[r] = exchange_tables(comms[r], out[r])
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                got[r] = exc

        try:
            threads = [threading.Thread(target=rank, args=(r,), daemon=True) for r in range(2)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(120)
        finally:
            for c in comms:
                c.close()
        answers = []
        for g in got:
            if isinstance(g, BaseException):
                raise g
            if g is None:
                raise TimeoutError("exchange_tables: a rank did not finish within 120 s")
            if g.device != gpuframe.core.device.as_device(device):
                raise AssertionError(f"the received table is on {g.device}, expected {device}")
            answers.append(_table_answer(g, ordered=True))
        return tuple(answers)
    return run


def _exchange_sources() -> dict[str, list[pa.Table]]:
    def dictionary(r: int, n: int, entries: int, index: Any) -> pa.Array:
        codes = np.random.default_rng(r).integers(0, entries, n).astype(index)
        mask = np.random.default_rng(r + 9).random(n) < 0.15
        words = pa.array([f"r{r}_{i}" for i in range(entries)])
        return pa.DictionaryArray.from_arrays(pa.array(codes, mask=mask), words)

    return {
        "all_types": [_table(40 + 3 * r, ALL_TYPES, 11 + 5 * r, card=12) for r in range(2)],
        "dictionaries": [pa.table({
            "widened": dictionary(r, 37 + r, 100, np.int8),     # 200 entries in all: int32 indices
            "shared": pa.DictionaryArray.from_arrays(pa.array(np.arange(37 + r) % 3, pa.int16()),
                                                     pa.array(["x", "", "yy"])),
        }) for r in range(2)],
    }


def _join_shapes() -> dict[str, tuple[pa.Table, pa.Table, dict]]:
    rng = np.random.default_rng(7)
    n = 120
    ints_l = pa.table({"k": pa.array(np.where(rng.random(n) < 0.3, 5, rng.integers(0, 40, n)),
                                     mask=rng.random(n) < 0.1), "a": np.arange(n)})
    ints_r = pa.table({"k": pa.array(np.repeat(np.arange(0, 60, 3), 3), mask=np.arange(60) % 17 == 0),
                       "b": np.arange(60) * 2.5})
    return {
        "int64_dups_nulls": (ints_l, ints_r, {"on": "k"}),
        "int32_vs_int64": (_table(90, {"k": pa.int32(), "a": pa.float32()}, 11, 25),
                           _table(70, {"k2": pa.int64(), "b": pa.int8()}, 12, 25),
                           {"left_on": "k", "right_on": "k2"}),
        "uint64": (_table(90, {"k": pa.uint64(), "a": pa.int32()}, 13, 30),
                   _table(70, {"k": pa.uint64(), "b": pa.int16()}, 14, 30), {"on": "k"}),
        "float_nan_zero": (_table(90, {"k": pa.float64(), "a": pa.int64()}, 15, 12),
                           _table(70, {"k": pa.float32(), "b": pa.int64()}, 16, 12), {"on": "k"}),
        "string": (_table(100, {"k": pa.string(), "a": pa.int64()}, 17, 15),
                   _table(80, {"k": pa.large_string(), "b": pa.string()}, 18, 15), {"on": "k"}),
        "dictionary": (_table(90, {"k": pa.dictionary(pa.int32(), pa.string()), "a": pa.int64()}, 19, 12),
                       _table(70, {"k": pa.string(), "b": pa.bool_()}, 20, 12), {"on": "k"}),
        "multi_int_string": (_table(100, {"k1": pa.int32(), "k2": pa.string(), "a": pa.float64()}, 21, 6),
                             _table(80, {"k1": pa.int64(), "k2": pa.large_string(), "b": pa.date32()}, 22, 6),
                             {"on": ["k1", "k2"]}),
        "multi_fixed": (_table(100, {"k1": pa.int16(), "k2": pa.float64(), "k3": pa.bool_(), "a": pa.int32()}, 23, 4),
                        _table(80, {"k1": pa.int64(), "k2": pa.float32(), "k3": pa.bool_(), "b": pa.uint8()}, 24, 4),
                        {"on": ["k1", "k2", "k3"]}),
    }


def _keyprep_shapes() -> dict[str, tuple[pa.Table, pa.Table, dict]]:
    rng = np.random.default_rng(9)

    def dictionary(n: int, index_type: pa.DataType, value_type: pa.DataType) -> pa.Array:
        entries = pa.array(["", "a", "ß", "日本", "key-12345", None], value_type)   # a null entry
        idx = pa.array(rng.integers(0, len(entries), n), index_type, mask=rng.random(n) < 0.15)
        return pa.DictionaryArray.from_arrays(idx, entries)

    def ints(n: int, t: pa.DataType, values: list) -> pa.Array:
        return pa.array(rng.choice(np.array(values, t.to_pandas_dtype()), n), t, mask=rng.random(n) < 0.1)

    u64 = [0, 1, 5, 2**63, 2**63 + 5, 2**64 - 1]
    return {
        "dict_null_entries": (pa.table({"k": dictionary(60, pa.int32(), pa.string()), "a": np.arange(60)}),
                              pa.table({"k": dictionary(40, pa.int8(), pa.large_string()), "b": np.arange(40)}),
                              {"on": "k"}),
        "two_strings": (pa.table({"k1": _array(pa.string(), 60, 31, 5, True),
                                  "k2": dictionary(60, pa.int16(), pa.string()), "a": np.arange(60)}),
                        pa.table({"k1": dictionary(40, pa.int32(), pa.string()),
                                  "k2": _array(pa.large_string(), 40, 32, 5, True), "b": np.arange(40)}),
                        {"on": ["k1", "k2"]}),
        "uint64_vs_int64": (pa.table({"k": ints(60, pa.uint64(), u64), "a": np.arange(60)}),
                            pa.table({"k2": ints(40, pa.int64(), [0, 1, 5, -1, -(2**63)]), "b": np.arange(40)}),
                            {"left_on": "k", "right_on": "k2"}),
        "int8_vs_uint64_multi": (pa.table({"k": ints(60, pa.int8(), [0, 1, 5, -1, -128]),
                                           "s": _array(pa.string(), 60, 33, 3, True), "a": np.arange(60)}),
                                 pa.table({"k2": ints(40, pa.uint64(), u64), "s2": _array(pa.string(), 40, 34, 3, True),
                                           "b": np.arange(40)}),
                                 {"left_on": ["k", "s"], "right_on": ["k2", "s2"]}),
    }


def cases() -> list[Case]:
    """Every case, each family's first case early (a compile failure shows before the budget ends)."""
    out: list[Case] = []
    all_types = _table(150, ALL_TYPES, 1, card=30)
    # one of each family first
    shapes = _join_shapes()
    l0, r0, on0 = shapes["int64_dups_nulls"]
    idx = np.random.default_rng(2).integers(-1, 150, 200).astype(np.int64)
    out += [
        Case("hashing", "i64", _hash_case(all_types, ["i64"])),
        Case("partition", "hash_partition_all_types", _partition_case(all_types, ["i64"], 7)),
        Case("gather", "take_all_types", _take_case(all_types, idx)),
        Case("join", "int64_dups_nulls/inner", _join_case(l0, r0, "inner", False, **on0)),
        Case("merged_key", "int64_dups_nulls/outer", _join_case(l0, r0, "outer", False, **on0)),
    ]
    for name in ALL_TYPES:
        if name != "i64":
            out.append(Case("hashing", name, _hash_case(all_types, [name])))
    out += [
        Case("hashing", "multi_i32_s_f64", _hash_case(all_types, ["i32", "s", "f64"])),
        Case("hashing", "multi_all_seed", _hash_case(all_types, list(ALL_TYPES), seed=12345)),
        Case("partition", "ids_int64", _pids_case(all_types, ["i64"], 64)),
        Case("partition", "ids_multi", _pids_case(all_types, ["i32", "s", "b"], 5)),
        Case("partition", "hash_partition_string_key", _partition_case(all_types, ["s"], 64)),
        Case("partition", "hash_partition_multi_key", _partition_case(all_types, ["dict", "f32"], 3)),
        Case("gather", "take_slice", _take_case(all_types.slice(13, 100), np.array([99, 0, -1, 5, 5, 42], np.int64))),
        Case("gather", "take_empty", _take_case(all_types, np.zeros(0, np.int64))),
    ]
    for shape, (lt, rt, on) in shapes.items():
        for how in HOWS:
            if (shape, how) in (("int64_dups_nulls", "inner"), ("int64_dups_nulls", "outer")):
                continue
            family = "merged_key" if how in ("outer", "right") else "join"
            out.append(Case(family, f"{shape}/{how}", _join_case(lt, rt, how, False, **on)))
    for shape in ("int64_dups_nulls", "multi_int_string", "string"):
        lt, rt, on = shapes[shape]
        for how in ("inner", "outer", "anti"):
            out.append(Case("join", f"{shape}/{how}/nulls_equal", _join_case(lt, rt, how, True, **on)))
    for name, sources in _exchange_sources().items():
        out.append(Case("exchange", name, _exchange_case(sources)))
    for shape, (lt, rt, on) in _keyprep_shapes().items():
        for how, nulls_equal in (("inner", False), ("outer", False), ("outer", True)):
            name = f"{shape}/{how}" + ("/nulls_equal" if nulls_equal else "")
            out.append(Case("keyprep", name, _join_case(lt, rt, how, nulls_equal, **on)))
    out += _table_op_cases(all_types)
    return out


# --------------------------------------------------------------------------- running
def run_case(case: Case) -> dict:
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"family": case.family, "case": case.name}
    try:
        got = case.run("cuda")
    except Exception as e:  # noqa: BLE001 - every failure is recorded, the next case runs
        rec.update(status=COMPILE if is_compile_error(e) else ERROR, message=describe(e),
                   traceback=traceback.format_exc(limit=-8))
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        return rec
    try:
        want = case.run("cpu")
    except Exception as e:  # noqa: BLE001
        rec.update(status=CPU_ERROR, message=describe(e), traceback=traceback.format_exc(limit=-8))
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        return rec
    rec["status"] = OK if got == want else DIFFERS
    if got != want:
        rec["message"] = _diff(got, want)
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def exit_status(records: Sequence[dict]) -> int:
    statuses = {r["status"] for r in records}
    if COMPILE in statuses:
        return EXIT_COMPILE
    if statuses - {OK, SKIPPED}:
        return EXIT_FAILED
    return EXIT_OK


def summary_line(records: Sequence[dict]) -> str:
    c = Counter(r["status"] for r in records)
    return (f"kernel check: {c[OK]} ok, {c[DIFFERS]} differ, {c[COMPILE]} compile failed, "
            f"{c[ERROR] + c[CPU_ERROR]} errors, {c[SKIPPED]} skipped of {len(records)} cases")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gpuframe.benchmarks.gpu_kernel_check",
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="write the records as JSON to this file")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting cases after this many seconds (the rest: skipped)")
    p.add_argument("--cases", default=None,
                   help="only cases whose family/name contains one of these comma-separated strings")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from gpuframe.core.device import CUDA_INSTALL_HINT, cudasim_enabled, gpu_count

    if not (cudasim_enabled() or gpu_count() > 0):
        print(f"gpu_kernel_check: no CUDA GPU is visible to CuPy, so no kernel can run; {CUDA_INSTALL_HINT}",
              file=sys.stderr)
        return EXIT_NO_GPU
    import gpuframe

    gpuframe.config.set(raise_on_fallback=True)   # a CUDA case must never run on the CPU
    selected = cases()
    if args.cases:
        wanted = [w.strip() for w in args.cases.split(",") if w.strip()]
        selected = [c for c in selected if any(w in c.id for w in wanted)]
    t0 = time.monotonic()
    records: list[dict] = []

    def save() -> None:  # after every case: a run stopped by its time limit keeps what it did
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump({"summary": summary_line(records), "simulator": cudasim_enabled(),
                           "seconds": round(time.monotonic() - t0, 2), "records": records}, f, indent=1)

    for case in selected:
        if args.budget_s is not None and time.monotonic() - t0 > args.budget_s:
            records.append({"family": case.family, "case": case.name, "status": SKIPPED, "message": "budget"})
            continue
        rec = run_case(case)
        records.append(rec)
        save()
        line = f"{rec['status']:<15} {case.id} ({rec['seconds']:.2f} s)"
        if rec.get("message"):
            line += f": {rec['message']}"
        print(line, flush=True)
    skipped = [f"{r['family']}/{r['case']}" for r in records if r["status"] == SKIPPED]
    if skipped:
        print(f"{SKIPPED:<15} {len(skipped)} cases (budget), from {skipped[0]} on")
    save()
    line = summary_line(records)
    status = exit_status(records)
    if status == EXIT_COMPILE:
        line += " -- CUDA KERNELS DO NOT COMPILE"
    print(line, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
