"""Fuzz the two doors through which outside data reaches the kernels: the Arrow import
(:func:`gpuframe.from_arrow`) and the wire unpacking of received tables
(:func:`gpuframe.comm.wire.unpack_table`).

Each case builds a valid input, corrupts one thing at random (string offsets, dictionary indices,
null counts, validity bits, lengths and slice offsets, buffer sizes; for the wire also every header
field, the schema bytes, frame sizes, dtypes, order and count) and feeds it in. The verdict is
checked against an independent reference:

* Arrow import: pyarrow's own ``validate(full=True)`` of the same array. gpuframe must accept
  exactly what pyarrow accepts, and what it accepts must come back equal (``to_arrow().equals``).
* wire: a small pure-numpy decoder of the wire format (the module docstring of
  ``comm/wire.py``). gpuframe may refuse (a clean ``ValueError``/``CommError``), but what it
  accepts must be valid for the reference and decode to the same values.

Any other exception is an *unclean* failure; a crash ends the process (run it in a subprocess:
the test suite does). Strings are ASCII, so that no offset corruption can make invalid UTF-8
(pyarrow checks UTF-8, gpuframe does not need to).

Usage::

    python -m benchmarks.fuzz_import --cases 20000 --seed 1 --out fuzz.json
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa

import gpuframe as gf
from gpuframe.comm.errors import CommError
from gpuframe.comm.wire import pack_table, unpack_table
from gpuframe.core.dtypes import Layout, layout_of, offsets_dtype, physical_numpy_dtype

TYPES = [pa.int64(), pa.int32(), pa.float64(), pa.bool_(), pa.string(), pa.large_string(),
         pa.dictionary(pa.int32(), pa.string()), pa.dictionary(pa.int8(), pa.large_string()),
         pa.dictionary(pa.uint16(), pa.string())]


# ============================================================================ valid inputs
def _words(rng: np.random.Generator, n: int) -> list[str]:
    letters = np.array(list("abcdefghij"))
    return ["".join(letters[rng.integers(0, 10, int(rng.integers(0, 6)))]) for _ in range(n)]


def random_array(rng: np.random.Generator, dtype: pa.DataType, n: int) -> pa.Array:
    """A valid array of ``n`` rows (nulls on about a third of the arrays), sliced at a random offset."""
    total = n + int(rng.integers(0, 9))
    mask = rng.random(total) < 0.3 if rng.random() < 0.6 else None
    if pa.types.is_dictionary(dtype):
        ndict = int(rng.integers(1, 7))
        values = pa.array(_words(rng, ndict), type=dtype.value_type)
        idx = pa.array(rng.integers(0, ndict, total), type=dtype.index_type, mask=mask)
        arr = pa.DictionaryArray.from_arrays(idx, values)
    elif pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        arr = pa.array(_words(rng, total), type=dtype, mask=mask)
    elif pa.types.is_boolean(dtype):
        arr = pa.array(rng.random(total) < 0.5, type=dtype, mask=mask)
    else:
        arr = pa.array(rng.integers(-1000, 1000, total).astype(physical_numpy_dtype(dtype)), type=dtype, mask=mask)
    off = int(rng.integers(0, total - n + 1))
    return arr.slice(off, n)


def _np(buf: Optional[pa.Buffer], dtype: Any = np.uint8) -> Optional[np.ndarray]:
    return None if buf is None else np.frombuffer(buf, dtype=dtype).copy()


def _pb(a: Optional[np.ndarray]) -> Optional[pa.Buffer]:
    return None if a is None else pa.py_buffer(np.ascontiguousarray(a).tobytes())


def _evil(rng: np.random.Generator, old: int, hi: int) -> int:
    """A replacement for a layout integer: near the old value, in range, or far outside."""
    k = int(rng.integers(0, 6))
    return [old + int(rng.integers(1, 4)), old - int(rng.integers(1, 4)), int(rng.integers(0, max(hi, 1) + 1)),
            -int(rng.integers(1, 1 << 30)), int(rng.integers(hi + 1, hi + (1 << 30))), hi][k]


# ============================================================================ Arrow import
def corrupt_arrow(rng: np.random.Generator, arr: pa.Array) -> tuple[str, Callable[[], pa.Array]]:
    """``(kind, build)``: ``build()`` makes the corrupted array (pyarrow may refuse to: then the
    producer could not have made it either, and the case counts as ``producer_refused``)."""
    dtype, n, off = arr.type, len(arr), arr.offset
    lay = layout_of(dtype)
    if lay == Layout.DICTIONARY:
        idx_arr = arr.indices
        vb, ib = _np(idx_arr.buffers()[0]), _np(idx_arr.buffers()[1], physical_numpy_dtype(dtype))
        dictionary = arr.dictionary
        nc = idx_arr.null_count
        kinds = ["index", "index", "null_count", "validity_bit", "dictionary_offsets", "length"]
    else:
        bufs = arr.buffers()
        vb = _np(bufs[0])
        nc = arr.null_count
        if lay == Layout.STRING:
            ob, cb = _np(bufs[1], offsets_dtype(dtype)), _np(bufs[2])
            kinds = ["offset", "offset", "null_count", "validity_bit", "length", "truncate"]
        else:
            db = _np(bufs[1], np.uint8 if lay == Layout.BOOL else physical_numpy_dtype(dtype))
            kinds = ["null_count", "validity_bit", "length", "truncate"]
    kind = kinds[int(rng.integers(0, len(kinds)))]
    length = n
    if kind == "null_count":
        nc = int(rng.integers(0, n + 1)) if n else 0
    elif kind == "validity_bit" and vb is not None and n:
        i = off + int(rng.integers(0, n))
        vb[i >> 3] ^= np.uint8(1 << (i & 7))
    elif kind == "length":
        length = max(0, n + int(rng.integers(-3, 4)))
    if lay == Layout.DICTIONARY:
        if kind == "index" and n:
            i = off + int(rng.integers(0, n))
            info = np.iinfo(ib.dtype)
            ib[i] = np.clip(_evil(rng, int(ib[i]), len(dictionary)), info.min, info.max)
        if kind == "dictionary_offsets" and len(dictionary):
            dictionary = _corrupt_string(rng, dictionary)

        def build() -> pa.Array:
            d = dictionary() if callable(dictionary) else dictionary
            ind = pa.Array.from_buffers(dtype.index_type, length, [_pb(vb), _pb(ib)], nc, off)
            return pa.DictionaryArray.from_arrays(ind, d, safe=False)
        return kind, build
    if lay == Layout.STRING:
        if kind == "offset":
            i = off + int(rng.integers(0, n + 1))
            info = np.iinfo(ob.dtype)
            ob[i] = np.clip(_evil(rng, int(ob[i]), len(cb)), info.min, info.max)
        if kind == "truncate":
            cb = cb[:int(rng.integers(0, len(cb) + 1))]
        return kind, lambda: pa.Array.from_buffers(dtype, length, [_pb(vb), _pb(ob), _pb(cb)], nc, off)
    if kind == "truncate":
        db = db[:int(rng.integers(0, len(db) + 1))]
    return kind, lambda: pa.Array.from_buffers(dtype, length, [_pb(vb), _pb(db)], nc, off)


def _corrupt_string(rng: np.random.Generator, arr: pa.Array) -> Callable[[], pa.Array]:
    bufs = arr.buffers()
    ob, cb = _np(bufs[1], offsets_dtype(arr.type)), _np(bufs[2])
    i = arr.offset + int(rng.integers(0, len(arr) + 1))
    info = np.iinfo(ob.dtype)
    ob[i] = np.clip(_evil(rng, int(ob[i]), len(cb)), info.min, info.max)
    return lambda: pa.Array.from_buffers(arr.type, len(arr), [_pb(_np(bufs[0])), _pb(ob), _pb(cb)],
                                         arr.null_count, arr.offset)


class _ArrayOnly:
    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __arrow_c_array__(self, requested_schema: Any = None) -> Any:
        return self.obj.__arrow_c_array__(requested_schema)


class _DeviceArrayOnly:
    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __arrow_c_device_array__(self, requested_schema: Any = None, **kwargs: Any) -> Any:
        return self.obj.__arrow_c_device_array__(requested_schema, **kwargs)


class _StreamOnly:
    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self.obj.__arrow_c_stream__(requested_schema)


DOORS = ["array", "table", "chunked", "c_array", "c_device_array", "c_stream"]


def _through(door: str, arr: pa.Array) -> Any:
    if door == "array":
        return arr
    if door == "chunked":
        return pa.chunked_array([arr], type=arr.type)
    batch = pa.record_batch([arr], names=["k"])
    if door == "table":
        return pa.Table.from_batches([batch])
    if door == "c_array":
        return _ArrayOnly(batch)
    if door == "c_device_array":
        return _DeviceArrayOnly(batch)
    return _StreamOnly(pa.Table.from_batches([batch]))


def arrow_case(rng: np.random.Generator) -> dict:
    dtype = TYPES[int(rng.integers(0, len(TYPES)))]
    arr = random_array(rng, dtype, int(rng.integers(0, 40)))
    kind, build = corrupt_arrow(rng, arr)
    door = DOORS[int(rng.integers(0, len(DOORS)))]
    rec = {"target": "arrow", "type": str(dtype), "kind": kind, "door": door}
    try:
        bad = build()
    except (pa.ArrowInvalid, ValueError):
        rec["verdict"] = "producer_refused"
        return rec
    try:
        # the reference sees what a consumer of this door sees: through the C interfaces the
        # buffer sizes are not carried (the text size is the last offset), so pyarrow imports
        # the same object first
        ref = _pyarrow_import(door, bad)
        ref.validate(full=True)
        ref_ok = True
    except pa.ArrowInvalid as exc:
        ref_ok = False
        rec["reference_error"] = str(exc)[:300]
    try:
        tbl = gf.from_arrow(_through(door, bad))
    except ValueError as exc:
        rec["verdict"] = "rejected" if not ref_ok else "FAIL_rejected_valid"
        rec["error"] = str(exc)[:300]
        return rec
    except Exception as exc:  # noqa: BLE001 - the point of the fuzz
        rec["verdict"] = "FAIL_unclean"
        rec["error"] = f"{type(exc).__name__}: {exc}"[:300]
        return rec
    if not ref_ok:
        rec["verdict"] = "FAIL_accepted_invalid"
        return rec
    got = tbl.column(0).to_arrow()
    rec["verdict"] = "accepted" if got.equals(ref) else "FAIL_wrong_data"
    return rec


def _pyarrow_import(door: str, arr: pa.Array) -> pa.Array:
    obj = _through(door, arr)
    if door == "c_array":
        return pa.record_batch(obj).column(0)
    if door == "c_device_array":
        return pa.RecordBatch._import_from_c_device_capsule(*obj.__arrow_c_device_array__()).column(0)
    if door == "c_stream":
        return pa.table(obj).column(0).combine_chunks()
    return arr


# ============================================================================ wire
def _bits(frame: np.ndarray, bit: int, n: int) -> np.ndarray:
    return np.unpackbits(frame, bitorder="little")[bit:bit + n]


class Invalid(Exception):
    pass


def _need(cond: bool) -> None:
    if not cond:
        raise Invalid()


def _ref_frame(it: Any, dtype: Any, count: Optional[int]) -> np.ndarray:
    f = next(it, None)
    _need(isinstance(f, np.ndarray) and f.ndim == 1 and f.dtype == np.dtype(dtype))
    _need(count is None or f.shape[0] == count)
    return f


def _is_int(v: Any, lo: int, hi: Optional[int] = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)


def ref_column(dtype: pa.DataType, meta: Any, it: Any, n_expected: Optional[int]) -> list:
    """Reference decoding of one packed column: its values as Python objects (None for null)."""
    _need(isinstance(meta, dict) and _is_int(meta.get("n"), 0))
    n = meta["n"]
    _need(n_expected is None or n == n_expected)
    valid = np.ones(n, dtype=bool)
    vbit = meta.get("vbit")
    if vbit is not None:
        _need(_is_int(vbit, 0, 7))
        valid = _bits(_ref_frame(it, np.uint8, (vbit + n + 7) // 8), vbit, n).astype(bool)
        _need(_is_int(meta.get("nulls"), 0) and meta["nulls"] == int((~valid).sum()))
    else:
        _need(meta.get("nulls") == 0)
    lay = layout_of(dtype)
    if lay == Layout.FIXED:
        vals = _ref_frame(it, physical_numpy_dtype(dtype), n).tolist()
    elif lay == Layout.BOOL:
        dbit = meta.get("dbit")
        _need(_is_int(dbit, 0, 7))
        vals = [bool(b) for b in _bits(_ref_frame(it, np.uint8, (dbit + n + 7) // 8), dbit, n)]
    elif lay == Layout.STRING:
        base = meta.get("base")
        _need(_is_int(base, 0))
        o = _ref_frame(it, offsets_dtype(dtype), n + 1).astype(np.int64) - base
        chars = _ref_frame(it, np.uint8, None)
        # as Arrow: an empty slice reads no text, so only its first offset must be >= 0
        _need(o[0] >= 0 and (n == 0 or o[-1] <= len(chars)) and bool(np.all(o[1:] >= o[:-1])))
        vals = [bytes(chars[o[i]:o[i + 1]]) for i in range(n)]  # bytes: UTF-8 is not the wire's business
    else:
        idx = _ref_frame(it, physical_numpy_dtype(dtype), n).astype(np.int64)
        d = ref_column(dtype.value_type, meta.get("dict"), it, None)
        _need(all(0 <= idx[i] < len(d) for i in range(n) if valid[i]))
        vals = [d[idx[i]] if valid[i] else None for i in range(n)]
    return [v if valid[i] else None for i, v in enumerate(vals)]


def ref_unpack(header: Any, frames: list) -> Optional[list[list]]:
    """Reference decoding of a one-piece message: the columns' values, or None when invalid."""
    try:
        _need(isinstance(header, dict) and header.get("v") == 1)
        schema = pa.ipc.read_schema(pa.py_buffer(header["schema"]))
        pieces = header["pieces"]
        _need(isinstance(pieces, list) and len(pieces) == 1 and isinstance(pieces[0], dict))
        n = pieces[0].get("n")
        cols = pieces[0].get("cols")
        _need(_is_int(n, 0) and isinstance(cols, list) and len(cols) == len(schema))
        it = iter(frames)
        out = [ref_column(f.type, m, it, n) for f, m in zip(schema, cols)]
        _need(next(it, None) is None)
        return out
    except (Invalid, pa.ArrowException, OSError, KeyError, TypeError, ValueError, IndexError):
        return None


def _leaves(obj: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _leaves(v, path + (k,))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _leaves(v, path + (i,))]
    return [path]


def _set(obj: Any, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


def _get(obj: Any, path: tuple) -> Any:
    for k in path:
        obj = obj[k]
    return obj


WIRE_KINDS = ["header_int", "header_type", "header_drop", "schema_byte", "frame_size", "frame_dtype",
              "frame_order", "frame_count", "frame_value", "frame_value", "frame_value"]


def corrupt_wire(rng: np.random.Generator, header: dict, frames: list) -> str:
    """Corrupt ``header``/``frames`` in place; returns the kind of corruption."""
    kind = WIRE_KINDS[int(rng.integers(0, len(WIRE_KINDS)))]
    leaves = [p for p in _leaves(header) if p and p[0] == "pieces"]
    if kind == "header_int":
        ints = [p for p in leaves if isinstance(_get(header, p), int)]
        p = ints[int(rng.integers(0, len(ints)))]
        _set(header, p, _evil(rng, _get(header, p), 64))
    elif kind == "header_type":
        p = leaves[int(rng.integers(0, len(leaves)))]
        _set(header, p, ["7", 2.5, None, True, [1], {"n": 1}][int(rng.integers(0, 6))])
    elif kind == "header_drop":
        p = leaves[int(rng.integers(0, len(leaves)))]
        parent = _get(header, p[:-1])
        if isinstance(parent, dict):
            del parent[p[-1]]
        else:
            parent.pop(p[-1])
    elif kind == "schema_byte":
        raw = bytearray(header["schema"])
        raw[int(rng.integers(0, len(raw)))] ^= int(rng.integers(1, 256))
        header["schema"] = bytes(raw)
    elif not frames:
        return "none"
    elif kind == "frame_size":
        i = int(rng.integers(0, len(frames)))
        f = frames[i]
        k = int(rng.integers(0, f.shape[0] + 3))
        frames[i] = f[:k] if k <= f.shape[0] else np.concatenate([f, f[:1].repeat(k - f.shape[0]) if f.shape[0]
                                                                  else np.zeros(k, f.dtype)])
    elif kind == "frame_dtype":
        i = int(rng.integers(0, len(frames)))
        f = frames[i]
        dt = [np.uint8, np.int32, np.int64, np.float64, np.int16][int(rng.integers(0, 5))]
        raw = f.view(np.uint8)
        frames[i] = raw[:raw.shape[0] - raw.shape[0] % np.dtype(dt).itemsize].view(dt)
    elif kind == "frame_order":
        i, j = rng.integers(0, len(frames), 2)
        frames[i], frames[j] = frames[j], frames[i]
    elif kind == "frame_count":
        if rng.random() < 0.5:
            frames.pop(int(rng.integers(0, len(frames))))
        else:
            frames.insert(int(rng.integers(0, len(frames) + 1)), frames[int(rng.integers(0, len(frames)))].copy())
    else:  # frame_value: one element of a frame (offsets, indices, bitmaps, values)
        i = int(rng.integers(0, len(frames)))
        f = frames[i]
        if f.shape[0]:
            j = int(rng.integers(0, f.shape[0]))
            if f.dtype == np.uint8:  # a bitmap or text: ASCII, so that text stays valid UTF-8
                f[j] = np.uint8(rng.integers(0, 128))
            elif f.dtype.kind in "iu":
                info = np.iinfo(f.dtype)
                f[j] = np.clip(_evil(rng, int(f[j]), 64), info.min, info.max)
            else:
                f[j] = -f[j] + 1
    return kind


def wire_case(rng: np.random.Generator) -> dict:
    ncols = int(rng.integers(1, 4))
    n = int(rng.integers(0, 30))
    cols = {f"c{i}": random_array(rng, TYPES[int(rng.integers(0, len(TYPES)))], n) for i in range(ncols)}
    src = gf.from_arrow(pa.table(cols))
    header, frames = pack_table(src)
    header = copy.deepcopy(header)
    frames = [np.array(f, copy=True) for f in frames]   # what a transport delivers
    kind = corrupt_wire(rng, header, frames)
    rec = {"target": "wire", "kind": kind}
    expect = ref_unpack(copy.deepcopy(header), [f.copy() for f in frames])
    try:
        got = unpack_table(header, frames)
    except (ValueError, CommError) as exc:
        rec["verdict"] = "rejected" if expect is None or kind != "none" else "FAIL_rejected_valid"
        rec["error"] = str(exc)[:300]
        return rec
    except Exception as exc:  # noqa: BLE001
        rec["verdict"] = "FAIL_unclean"
        rec["error"] = f"{type(exc).__name__}: {exc}"[:300]
        return rec
    if expect is None:
        rec["verdict"] = "FAIL_accepted_invalid"
        rec["header"] = repr(header["pieces"])[:300]
        return rec
    values = [got.column(i).to_arrow() for i in range(got.num_columns)]
    values = [v.dictionary_decode() if pa.types.is_dictionary(v.type) else v for v in values]
    values = [v.cast(pa.large_binary()) if pa.types.is_string(v.type) or pa.types.is_large_string(v.type) else v
              for v in values]
    ok = [v.to_pylist() for v in values] == expect
    rec["verdict"] = "accepted" if ok else "FAIL_wrong_data"
    return rec


def control_cases(rng: np.random.Generator, k: int) -> list[dict]:
    """Uncorrupted inputs must come through unchanged (through every door)."""
    out = []
    for _ in range(k):
        dtype = TYPES[int(rng.integers(0, len(TYPES)))]
        arr = random_array(rng, dtype, int(rng.integers(0, 40)))
        for door in DOORS:
            try:
                got = gf.from_arrow(_through(door, arr)).column(0).to_arrow()
                v = "accepted" if got.equals(arr) else "FAIL_wrong_data"
            except Exception as exc:  # noqa: BLE001
                v = f"FAIL_rejected_valid: {type(exc).__name__}: {exc}"[:300]
            out.append({"target": "control", "type": str(dtype), "door": door, "verdict": v})
    return out


# ============================================================================ driver
def run(cases: int, seed: int, target: str = "all") -> dict:
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    records = control_cases(rng, max(1, cases // 100))
    for _ in range(cases):
        t = target if target != "all" else ("arrow" if rng.random() < 0.5 else "wire")
        records.append(arrow_case(rng) if t == "arrow" else wire_case(rng))
    counts: dict[str, int] = {}
    for r in records:
        key = f"{r['target']}:{r['verdict'].split(':')[0]}"
        counts[key] = counts.get(key, 0) + 1
    failures = [r for r in records if r["verdict"].startswith("FAIL")]
    return {"cases": cases, "seed": seed, "target": target, "seconds": round(time.perf_counter() - t0, 2),
            "counts": dict(sorted(counts.items())), "failures": failures[:50], "n_failures": len(failures)}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=2000, help="corrupted inputs to try (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", choices=["all", "arrow", "wire"], default="all")
    p.add_argument("--out", help="write the summary (and up to 50 failures) as JSON here")
    args = p.parse_args(argv)
    res = run(args.cases, args.seed, args.target)
    print(f"fuzz_import: {res['cases']} cases (seed {res['seed']}, target {res['target']}) in {res['seconds']} s")
    for k, v in res["counts"].items():
        print(f"  {k:40s} {v}")
    print(f"  failures: {res['n_failures']}")
    for f in res["failures"][:10]:
        print("   ", json.dumps(f)[:400])
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)
    return 1 if res["n_failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
