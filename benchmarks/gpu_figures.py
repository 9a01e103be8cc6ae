"""The GPU figures of ``ci/gpu_check.sh``, each next to its target, in one run on one CUDA GPU.

``python -m gpuframe.benchmarks.gpu_figures --out DIR [--scale 1.0] [--budget-s N] [--runs 5]``

Figures (sizes at ``--scale 1``; ``--scale`` multiplies every size, so ``--scale 1e-4`` runs the
whole script on tiny data):

* ``copy``: device-to-device copy bandwidth of 1 GiB, ``cupy.copyto`` (a kernel) and
  ``cudaMemcpyAsync`` (read + write bytes / time); the larger is *the* copy bandwidth that the
  ``% copy`` figures divide by.
* ``join_unique``: 10M x 10M int64 unique-key inner join: ``join_indices`` (gather maps) and
  ``merge``; time, input tuples/s (probe + build rows / time), % of the copy bandwidth (bytes
  read and written: the keys and the maps; for ``merge`` the input and output tables), and the
  ratio to a CuPy sort-based join (argsort + searchsorted) timed in the same run, whose answer
  is also the reference: row count and an order-independent checksum of the (left, right) pairs.
  Targets: >= 6.5 G input tuples/s and >= 3x the CuPy join (``join_indices``).
* ``hash_partition``: 100M rows x 2 int64 into 64 partitions: GB/s (the table read and written),
  % of the copy bandwidth (target >= 50%), ratio to CuPy (hash, argsort, take). Checked: offsets
  against ``partition_ids``, every output row in its partition, column sums unchanged.
* ``to_torch``: 10M rows x 4 CUDA columns; time and zero-copy (each tensor's ``data_ptr`` is its
  column's; target: yes).
* ``groupby_sum``: ``groupby_agg(table, "k", {"s": ("v", "sum")})`` of 100M rows, an int64 key
  with 1M groups (rows / 100) and an int64 value: time, GB/s of the input bytes (key + value
  columns), % of the copy bandwidth, ratio to a CuPy sort-based groupby-sum (argsort of the keys,
  take, the segment sums as differences of the running sum at the segments' ends) timed in the
  same run, whose answer is the reference: the same groups and per-group sums (compared after
  sorting gpuframe's groups by key: the figure does not depend on the group order).
* ``sort``: ``sort_indices(table, "k")`` of 100M int64 keys (full-range values, each drawn about
  twice, so ties exist): GB/s (keys read + permutation written), % of the copy bandwidth, ratio
  to ``cupy.argsort`` (stable: Thrust's ``stable_sort_by_key``, a CUB radix sort for int64) in the
  same run; and ``sort`` of the table (key + an int64 value) against ``cupy.argsort`` + two
  ``take`` (GB/s: the input and output tables). Checked: the permutation is one (every row once),
  the permuted keys never decrease and tied keys keep their input order (which makes it *the*
  stable permutation); ``sort``'s columns are the keys and values taken by it.
* ``join_many``: 10M probe rows x 10M build rows with 4 rows per key (40M output rows);
  ``join_hot``: 10M x 10M unique build keys, half the probe rows on one key;
  ``join_string``: 5M x 1M string keys (16-24 bytes), ``join_indices`` and ``merge``;
  ``outer_nullable``: a 10M x 10M outer ``merge``, 5% null keys and 10% null payloads, checked
  against counts computed from the generator.

Every operation also reports its host<->device traffic per call (gpuframe's transfer counter,
:func:`gpuframe.core.memory.count_transfers`), against the target "O(1) bytes": at most
:data:`O1_BYTES` whatever the rows (a copy proportional to the rows is megabytes here).

Timing: ``cupy.cuda.Event`` around each call on the current stream (the one gpuframe launches
on), median of ``--runs`` after ``--warmup`` calls (the first compiles the kernels); each round's
output is kept alive until the next round has run, so no free lands inside a timing.

Each figure is independent: an exception, a mismatch or its time limit is recorded with the error
text and the next figure runs; when ``--budget-s`` is spent the remaining figures are recorded as
``skipped: budget``; SIGTERM (``timeout``) records the running figure and skips the rest.
``summary.json`` and ``summary.txt`` (one screen: operations, then targets with pass / FAIL /
unmeasured) are rewritten in ``--out`` after every figure.

Exit status: 0 when every figure was measured and checked (or cannot be measured here, such as
``to_torch`` without a CUDA torch), whatever the targets' verdicts, which the summary gives; 1 when
a figure failed, ran out of time or was skipped; 2 without a GPU (the summary then lists every
figure as skipped).

``--simulator`` (with ``NUMBA_ENABLE_CUDASIM=1``) runs the same code with NumPy in place of CuPy on
numba's simulator, to exercise the script without a GPU: its numbers are not GPU figures.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import signal
import statistics
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from .common import ResultMismatch, format_rows, format_seconds

EXIT_OK, EXIT_FAILED, EXIT_NO_GPU = 0, 1, 2

TARGET_JOIN_TUPLES_PER_S = 6.5e9
TARGET_JOIN_VS_CUPY = 3.0
TARGET_PARTITION_PCT_COPY = 50.0
O1_BYTES = 64 * 1024  # "O(1) host traffic": this many bytes per call at most, whatever the rows
NUM_PARTITIONS = 64

# sizes at --scale 1, and the smallest each may shrink to
BASE_SIZES = {
    "copy_bytes": 1 << 30,
    "join_rows": 10_000_000,
    "many_probe_rows": 10_000_000,
    "many_keys": 2_500_000,          # x 4 build rows each
    "hot_rows": 10_000_000,
    "string_probe_rows": 5_000_000,
    "string_build_rows": 1_000_000,
    "outer_rows": 10_000_000,
    "partition_rows": 100_000_000,
    "torch_rows": 10_000_000,
    "groupby_rows": 100_000_000,
    "groupby_groups": 1_000_000,     # rows / 100
    "sort_rows": 100_000_000,
}
MIN_SIZES = {
    "copy_bytes": 1 << 12, "join_rows": 64, "many_probe_rows": 64, "many_keys": 16, "hot_rows": 64,
    "string_probe_rows": 64, "string_build_rows": 16, "outer_rows": 64, "partition_rows": 256, "torch_rows": 64,
    "groupby_rows": 256, "groupby_groups": 8, "sort_rows": 64,
}
# a figure is not started with less than this many seconds of the budget left
MIN_START_S = 2.0

OK, ERROR, SKIPPED, UNMEASURED = "ok", "error", "skipped", "unmeasured"
PASS, FAIL = "pass", "fail"


def figure_sizes(scale: float) -> dict[str, int]:
    """Every size of :data:`BASE_SIZES` times ``scale`` (at least :data:`MIN_SIZES`)."""
    if not isinstance(scale, (int, float)) or not (scale > 0) or scale != scale:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    out = {k: max(MIN_SIZES[k], int(round(v * scale))) for k, v in BASE_SIZES.items()}
    out["copy_bytes"] -= out["copy_bytes"] % 8
    return out


# =========================================================================== pure: rows, targets, summary
class Unmeasured(Exception):
    """A figure that cannot be measured here (no torch with CUDA, the simulator...)."""


class FigureTimeout(Exception):
    """A figure ran past its time limit (or the process was asked to stop)."""


@dataclass(frozen=True)
class TargetSpec:
    name: str        # the key the figure's ``values`` gives
    label: str       # what the summary prints
    op: str          # ">=", "<=" or "=="
    threshold: Any
    text: str        # the target as printed: ">= 6.5 G/s"
    unit: str = ""   # how to print the value: "G/s" (value / 1e9), "x", "%", "bool", "B"


def evaluate(value: Any, op: str, threshold: Any) -> str:
    """``pass``, ``fail`` or ``unmeasured`` (no value)."""
    if value is None:
        return UNMEASURED
    if op == ">=":
        return PASS if value >= threshold else FAIL
    if op == "<=":
        return PASS if value <= threshold else FAIL
    if op == "==":
        return PASS if value == threshold else FAIL
    raise ValueError(f"unknown comparison {op!r}")


def format_value(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "G/s":
        return f"{value / 1e9:.2f} G/s"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "bool":
        return "yes" if value else "no"
    if unit == "B":
        return format_bytes(value)
    if unit == "GB/s":
        return format_rate_bytes(value)
    return f"{value:.3g}"


def format_bytes(n: Optional[float]) -> str:
    if n is None:
        return "-"
    n = float(n)
    for div, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {suffix}"
    return f"{int(n)} B"


def format_rate_bytes(bps: Optional[float]) -> str:
    if bps is None:
        return "-"
    if bps >= 1e12:
        return f"{bps / 1e12:.2f} TB/s"
    if bps >= 1e9:
        return f"{bps / 1e9:.0f} GB/s"
    return f"{bps / 1e6:.1f} MB/s"


def target_rows(specs: Sequence[TargetSpec], values: dict[str, Any], figure: str) -> list[dict]:
    """One row per target of a figure; a value the figure did not give is ``unmeasured``."""
    rows = []
    for s in specs:
        v = values.get(s.name)
        rows.append({"figure": figure, "name": s.name, "label": s.label, "value": v,
                     "display": format_value(v, s.unit), "target": s.text, "op": s.op,
                     "threshold": s.threshold, "verdict": evaluate(v, s.op, s.threshold)})
    return rows


def host_o1_row(figure: str, op_label: str, host: Optional[dict]) -> dict:
    """The "host traffic per operation O(1)" target for one operation."""
    v = None if host is None else int(host["bytes"])
    return {"figure": figure, "name": "host_bytes_per_call", "kind": "host_o1", "label": f"{op_label}: host bytes/call",
            "value": v, "display": format_bytes(v), "target": f"O(1) (<= {format_bytes(O1_BYTES)})", "op": "<=",
            "threshold": O1_BYTES, "verdict": evaluate(v, "<=", O1_BYTES)}


def op_row(label: str, time_s: Optional[float], *, tuples: Optional[int] = None, bytes_moved: Optional[int] = None,
           copy_bw: Optional[float] = None, ref_s: Optional[float] = None, ref_label: Optional[str] = None,
           host: Optional[dict] = None, show: str = "tuples", checked: Optional[str] = None,
           times_s: Optional[Sequence[float]] = None, walls_s: Optional[Sequence[float]] = None,
           **extra: Any) -> dict:
    """One measured operation: its time and what follows from it (rates, % of the copy
    bandwidth, the ratio to a reference timed in the same run)."""
    ok_t = time_s is not None and time_s > 0
    tps = tuples / time_s if (ok_t and tuples) else None
    bps = bytes_moved / time_s if (ok_t and bytes_moved) else None
    pct = 100.0 * bps / copy_bw if (bps is not None and copy_bw) else None
    vs = ref_s / time_s if (ok_t and ref_s) else None
    return {"label": label, "time_s": time_s, "tuples": tuples, "tuples_per_s": tps, "bytes_moved": bytes_moved,
            "bytes_per_s": bps, "pct_copy": pct, "ref": ref_label, "ref_time_s": ref_s, "vs_ref": vs,
            "host": host, "show": show, "checked": checked,
            "times_s": None if times_s is None else [round(t, 9) for t in times_s],
            "walls_s": None if walls_s is None else [round(t, 9) for t in walls_s], **extra}


def figure_record(key: str, title: str, status: str, *, ops: Sequence[dict] = (), targets: Sequence[dict] = (),
                  error: Optional[str] = None, seconds: Optional[float] = None, params: Optional[dict] = None,
                  notes: Sequence[str] = (), trace: Optional[str] = None) -> dict:
    return {"figure": key, "title": title, "status": status, "error": error, "seconds": seconds,
            "params": dict(params or {}), "ops": list(ops), "targets": list(targets), "notes": list(notes),
            "traceback": trace}


def _fmt_time(t: Optional[float]) -> str:
    return format_seconds(t) if t is not None else "-"


def _fmt_rate(op: dict) -> str:
    if op.get("show") == "bytes":
        return format_rate_bytes(op.get("bytes_per_s"))
    tps = op.get("tuples_per_s")
    return "-" if tps is None else f"{tps / 1e9:.2f} G tup/s"


def _fmt_host(host: Optional[dict]) -> str:
    if host is None:
        return "-"
    b = int(host["bytes"])
    return f"{format_bytes(b)} {'ok' if b <= O1_BYTES else 'BIG'}"


def counts(records: Sequence[dict]) -> dict[str, int]:
    """Verdicts of every target row and statuses of every figure."""
    out = {PASS: 0, FAIL: 0, UNMEASURED: 0, OK: 0, ERROR: 0, SKIPPED: 0, "figures_unmeasured": 0}
    for r in records:
        out[r["status"] if r["status"] != UNMEASURED else "figures_unmeasured"] += 1
        for t in r["targets"]:
            out[t["verdict"]] += 1
    return out


def format_summary(records: Sequence[dict], meta: dict) -> str:
    """The one-screen text: a line per operation, a line per target, the totals."""
    w = 44
    lines = []
    head = " | ".join(str(x) for x in (meta.get("device", "?"), f"scale {meta.get('scale', '?')}",
                                       f"runs {meta.get('runs', '?')}", meta.get("created", ""),
                                       f"{meta.get('seconds', 0):.0f} s of {meta.get('budget_s', 0):.0f} s budget"))
    lines.append(f"gpuframe GPU figures: {head}")
    if meta.get("simulator"):
        lines.append("CUDA SIMULATOR (NumPy in place of CuPy): these numbers are NOT GPU figures")
    if meta.get("error"):
        lines.append(f"NOT MEASURED: {meta['error']}")
    lines.append(f"{'operation':<{w}} {'time':>9} {'rate':>13} {'%copy':>6} {'vs ref':>7} {'host/call':>12}")
    for r in records:
        if r["status"] in (OK,) or r["ops"]:
            for op in r["ops"]:
                pct = "-" if op.get("pct_copy") is None else f"{op['pct_copy']:.1f}"
                vs = "-" if op.get("vs_ref") is None else f"{op['vs_ref']:.2f}x"
                lines.append(f"{op['label'][:w]:<{w}} {_fmt_time(op.get('time_s')):>9} {_fmt_rate(op):>13} "
                             f"{pct:>6} {vs:>7} {_fmt_host(op.get('host')):>12}")
        if r["status"] != OK:
            why = r.get("error") or ""
            lines.append(f"{(r['status'].upper() + ' ' + r['title'])[:w]:<{w}} {why}"[:120])
    lines.append("")
    lines.append(f"{'target':<{w + 12}} {'measured':>12} {'target':>16}  verdict")
    host_rows = []
    for r in records:
        for t in r["targets"]:
            if t.get("kind") == "host_o1":
                host_rows.append(t)
                continue
            lines.append(f"{t['label'][:w + 12]:<{w + 12}} {t['display']:>12} {t['target']:>16}  "
                         f"{t['verdict'].upper() if t['verdict'] == FAIL else t['verdict']}")
    if host_rows:
        measured = [t for t in host_rows if t["value"] is not None]
        worst = max(measured, key=lambda t: t["value"]) if measured else None
        fails = [t for t in host_rows if t["verdict"] == FAIL]
        verdict = FAIL.upper() if fails else (PASS if measured else UNMEASURED)
        label = f"host traffic O(1) per operation ({len(measured)} ops)"
        disp = "-" if worst is None else f"max {worst['display']}"
        lines.append(f"{label:<{w + 12}} {disp:>12} {'<= ' + format_bytes(O1_BYTES):>16}  {verdict}")
        for t in fails:
            lines.append(f"    {t['label']}: {t['display']}")
    c = counts(records)
    lines.append(f"targets: {c[PASS]} pass, {c[FAIL]} fail, {c[UNMEASURED]} unmeasured | figures: {c[OK]} ok, "
                 f"{c[ERROR]} error, {c[SKIPPED]} skipped, {c['figures_unmeasured']} unmeasured")
    return "\n".join(lines) + "\n"


def write_summary(records: Sequence[dict], out_dir: str, meta: dict) -> dict:
    """Write ``summary.json`` and ``summary.txt`` into ``out_dir``; return the JSON document."""
    os.makedirs(out_dir, exist_ok=True)
    doc = {"meta": dict(meta), "counts": counts(records), "figures": list(records),
           "targets": [t for r in records for t in r["targets"]]}
    text = format_summary(records, meta)
    tmp = os.path.join(out_dir, ".summary.json.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    os.replace(tmp, os.path.join(out_dir, "summary.json"))
    with open(os.path.join(out_dir, "summary.txt"), "w") as f:
        f.write(text)
    return doc


# =========================================================================== devices
@dataclass
class Timing:
    times: list[float]          # seconds per timed call (CUDA events on a GPU)
    walls: list[float]          # host wall seconds of the same calls
    out: Any                    # the last call's output

    @property
    def median(self) -> float:
        return statistics.median(self.times)


class CupyEnv:
    """A real GPU: CuPy arrays, CUDA-event timing."""

    simulated = False

    def __init__(self) -> None:
        import cupy

        self.xp = cupy

    def sync(self) -> None:
        self.xp.cuda.Device().synchronize()

    def device_name(self) -> str:
        cp = self.xp
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)

    def as_xp(self, arr: Any) -> Any:
        return self.xp.asarray(arr)

    def to_numpy(self, arr: Any) -> np.ndarray:
        return self.xp.asnumpy(arr)

    def table(self, cols: dict[str, Any]) -> Any:
        """A CUDA gpuframe Table over these CuPy arrays (no copy)."""
        import gpuframe

        return gpuframe.Table([(name, gpuframe.from_dlpack(arr)) for name, arr in cols.items()])

    def free(self) -> None:
        gc.collect()
        self.xp.get_default_memory_pool().free_all_blocks()

    def measure(self, fn: Callable[[], Any], runs: int, warmup: int) -> Timing:
        cp = self.xp
        out = None
        for _ in range(warmup):
            out = fn()
        self.sync()
        gc.collect()
        keep = out
        times, walls = [], []
        enabled = gc.isenabled()
        for _ in range(runs):
            start, end = cp.cuda.Event(), cp.cuda.Event()
            self.sync()
            gc.disable()
            try:
                t0 = time.perf_counter()
                start.record()
                out = fn()
                end.record()
                end.synchronize()
                walls.append(time.perf_counter() - t0)
            finally:
                if enabled:
                    gc.enable()
            times.append(cp.cuda.get_elapsed_time(start, end) / 1e3)
            keep = out  # the previous round's output goes only now, after this round's timing
        del keep
        return Timing(times, walls, out)

    def copy_bandwidth(self, nbytes: int, runs: int, warmup: int) -> dict:
        cp = self.xp
        src = cp.arange(nbytes // 8, dtype=cp.int64)
        dst = cp.empty_like(src)
        t_kernel = self.measure(lambda: cp.copyto(dst, src), runs, warmup)
        stream = cp.cuda.get_current_stream().ptr
        kind = getattr(cp.cuda.runtime, "memcpyDeviceToDevice", 3)   # cudaMemcpyDeviceToDevice
        t_memcpy = self.measure(lambda: cp.cuda.runtime.memcpyAsync(dst.data.ptr, src.data.ptr, src.nbytes, kind,
                                                                    stream), runs, warmup)
        if not bool((dst[-16:] == src[-16:]).all()):
            raise ResultMismatch("the device copy did not copy")
        return {"bytes": int(src.nbytes), "copyto": t_kernel, "memcpy": t_memcpy}


class SimEnv:
    """numba's CUDA simulator with NumPy in place of CuPy: exercises the script, measures nothing."""

    simulated = True

    def __init__(self) -> None:
        self.xp = np

    def sync(self) -> None:
        pass

    def device_name(self) -> str:
        return "CUDA simulator"

    def as_xp(self, arr: Any) -> Any:
        from gpuframe.core import memory

        return np.asarray(memory.to_host(arr))

    def to_numpy(self, arr: Any) -> np.ndarray:
        return np.asarray(arr)

    def table(self, cols: dict[str, Any]) -> Any:
        import gpuframe
        from gpuframe.core.column import Column

        return gpuframe.Table([(name, Column.from_numpy(np.ascontiguousarray(arr), device="cuda"))
                               for name, arr in cols.items()])

    def free(self) -> None:
        gc.collect()

    def measure(self, fn: Callable[[], Any], runs: int, warmup: int) -> Timing:
        out = None
        for _ in range(warmup):
            out = fn()
        keep = out
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
            keep = out
        del keep
        return Timing(times, list(times), out)

    def copy_bandwidth(self, nbytes: int, runs: int, warmup: int) -> dict:
        src = np.arange(nbytes // 8, dtype=np.int64)
        dst = np.empty_like(src)
        t = self.measure(lambda: np.copyto(dst, src), runs, warmup)
        return {"bytes": int(src.nbytes), "copyto": t, "memcpy": t}


def transfers(env: Any, fn: Callable[[], Any]) -> dict:
    """Host<->device copies gpuframe makes during one call of ``fn``."""
    from gpuframe.core import memory

    env.sync()
    with memory.count_transfers() as t:
        out = fn()
        env.sync()
    del out
    return {"h2d_calls": t.h2d_calls, "h2d_bytes": t.h2d_bytes, "d2h_calls": t.d2h_calls,
            "d2h_bytes": t.d2h_bytes, "bytes": t.bytes}


# =========================================================================== data and references
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: Any) -> Any:
    """splitmix64 of a uint64 array (NumPy or CuPy): a bijection, so distinct inputs stay distinct."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _ids(xp: Any, n: int, salt: int) -> Any:
    return xp.arange(n, dtype=xp.uint64) + np.uint64(salt << 40)


def unique_keys(xp: Any, n: int, salt: int) -> Any:
    """``n`` distinct int64 keys spread over the whole int64 range."""
    return mix64(_ids(xp, n, salt)).view(xp.int64)


def codes(xp: Any, n: int, m: int, salt: int) -> Any:
    """``n`` pseudo-random int64 codes in ``[0, m)``."""
    return (mix64(_ids(xp, n, salt)) % np.uint64(m)).astype(xp.int64)


def payload(xp: Any, n: int, salt: int) -> Any:
    return (mix64(_ids(xp, n, salt)) >> np.uint64(44)).astype(xp.int64)


def wsum(xp: Any, a: Any) -> int:
    """Sum of a 64-bit integer array modulo 2**64 (any order)."""
    return int(xp.ascontiguousarray(a).view(xp.uint64).sum(dtype=xp.uint64))


def pair_checksum(xp: Any, li: Any, ri: Any) -> int:
    """An order-independent checksum of the pairs ``(li[k], ri[k])`` (-1 allowed)."""
    lo = li.astype(xp.int64).view(xp.uint64) if li.dtype != xp.uint64 else li
    hi = ri.astype(xp.int64).view(xp.uint64) if ri.dtype != xp.uint64 else ri
    return int(mix64(lo * np.uint64(0x100000001B3) + mix64(hi)).sum(dtype=xp.uint64))


def sort_join_unique(xp: Any, pk: Any, bk: Any) -> tuple[Any, Any]:
    """CuPy (or NumPy) sort-based inner join with unique build keys: gather maps."""
    order = xp.argsort(bk)
    sk = bk[order]
    pos = xp.searchsorted(sk, pk)
    pos = xp.minimum(pos, sk.shape[0] - 1)
    li = xp.flatnonzero(sk[pos] == pk)
    return li, order[pos[li]]


def sort_join(xp: Any, pk: Any, bk: Any) -> tuple[Any, Any]:
    """CuPy (or NumPy) sort-based inner join, any number of build rows per key: gather maps."""
    order = xp.argsort(bk)
    sk = bk[order]
    lo = xp.searchsorted(sk, pk, side="left")
    hi = xp.searchsorted(sk, pk, side="right")
    cnt = (hi - lo).astype(xp.int64)
    ends = xp.cumsum(cnt)
    total = int(ends[-1]) if ends.shape[0] else 0
    pos = xp.arange(total, dtype=xp.int64)
    li = xp.searchsorted(ends, pos, side="right").astype(xp.int64)
    ri = order[lo[li] + (pos - (ends[li] - cnt[li]))]
    return li, ri


def sort_partition(xp: Any, a: Any, b: Any, n: int) -> tuple[Any, Any, Any]:
    """CuPy's hash partition: hash the key, argsort the partition ids, take both columns."""
    pid = (mix64(a.view(xp.uint64)) % np.uint64(n)).astype(xp.int32)
    order = xp.argsort(pid)
    offsets = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(xp.bincount(pid, minlength=n))])
    return xp.take(a, order), xp.take(b, order), offsets


def stable_argsort(xp: Any, a: Any) -> Any:
    """The stable sort permutation of ``a``: ``cupy.argsort`` is stable (Thrust's
    ``stable_sort_by_key``, a CUB radix sort for numbers); NumPy needs ``kind="stable"``."""
    return xp.argsort(a, kind="stable") if xp is np else xp.argsort(a)


def sort_groupby_sum(xp: Any, k: Any, v: Any) -> tuple[Any, Any]:
    """CuPy's (or NumPy's) sort-based groupby-sum: argsort the keys, take keys and values, then
    each segment's sum as the difference of the running sum at its end and at the previous
    segment's end (exact for integers: the running sum wraps modulo 2**64, the differences do
    not). The distinct keys ascending and their sums."""
    order = xp.argsort(k)
    sk, sv = xp.take(k, order), xp.take(v, order)
    n = int(sk.shape[0])
    if n == 0:
        return sk, sv
    last = xp.empty(n, dtype=xp.bool_)
    last[:-1] = sk[1:] != sk[:-1]
    last[-1] = True
    ends = xp.flatnonzero(last)
    run = xp.cumsum(sv)[ends]
    sums = run.copy()
    sums[1:] -= run[:-1]
    return sk[ends], sums


def check_sort_permutation(xp: Any, keys: Any, perm: Any) -> dict[str, int]:
    """What is wrong with ``perm`` as the stable ascending sort permutation of ``keys``: rows
    (should be ``len(keys)``), ``out_of_range``, ``missing`` rows (with the rows in range and as
    many as the keys, none missing means a permutation), ``descents`` (adjacent sorted keys that
    decrease), ``unstable`` (tied adjacent keys whose rows are not in input order) and ``ties``
    (adjacent equal keys: what the stability check had to check). All zero but ``rows`` and
    ``ties`` is *the* stable permutation."""
    n, rows = int(keys.shape[0]), int(perm.shape[0])
    out = {"rows": rows, "out_of_range": 0, "missing": 0, "descents": 0, "unstable": 0, "ties": 0}
    if rows != n or n == 0:
        return out
    perm = perm.astype(xp.int64, copy=False)
    out["out_of_range"] = int(((perm < 0) | (perm >= n)).sum())
    if out["out_of_range"]:
        return out
    seen = xp.zeros(n, dtype=xp.bool_)
    seen[perm] = True
    out["missing"] = n - int(xp.count_nonzero(seen))
    del seen
    sk = xp.take(keys, perm)
    out["descents"] = int((sk[1:] < sk[:-1]).sum())
    tie = sk[1:] == sk[:-1]
    out["unstable"] = int((tie & (perm[1:] < perm[:-1])).sum())
    out["ties"] = int(tie.sum())
    return out


def _check(what: str, got: Any, want: Any) -> None:
    if got != want:
        raise ResultMismatch(f"{what}: gpuframe answered {got}, the reference {want}")


# =========================================================================== figures
@dataclass
class Ctx:
    env: Any
    sizes: dict[str, int]
    runs: int = 5
    warmup: int = 1
    copy_bw: Optional[float] = None
    say: Callable[[str], None] = lambda m: None
    stop_reason: Optional[str] = None


def _result(ops: list, values: dict, params: dict, notes: Sequence[str] = ()) -> dict:
    return {"ops": ops, "values": values, "params": params, "notes": list(notes)}


def fig_copy(ctx: Ctx) -> dict:
    res = ctx.env.copy_bandwidth(ctx.sizes["copy_bytes"], ctx.runs, ctx.warmup)
    nb = res["bytes"]
    ops = []
    best = 0.0
    for name in ("copyto", "memcpy"):
        t = res[name]
        bw = 2 * nb / max(t.median, 1e-9)
        best = max(best, bw)
        ops.append(op_row(f"D2D copy {format_bytes(nb)} ({'cupy.copyto' if name == 'copyto' else 'memcpyAsync'})",
                          t.median, bytes_moved=2 * nb, show="bytes", times_s=t.times, walls_s=t.walls))
    ctx.copy_bw = best
    for op in ops:
        op["pct_copy"] = 100.0 * op["bytes_per_s"] / best
    return _result(ops, {"copy_bandwidth": best}, {"bytes": nb, "bandwidth_counts": "bytes read + bytes written"})


def _join_maps_op(ctx: Ctx, label: str, probe: Any, build: Any, ref: Timing, want: tuple, key_bytes: int) -> dict:
    import gpuframe

    env, xp = ctx.env, ctx.env.xp
    t = env.measure(lambda: gpuframe.join_indices(probe, build, on="k"), ctx.runs, ctx.warmup)
    li, ri = t.out
    _check(f"{label} rows and pair checksum",
           (int(li.shape[0]), pair_checksum(xp, env.as_xp(li), env.as_xp(ri))), want)
    t.out = li = ri = None
    host = transfers(env, lambda: gpuframe.join_indices(probe, build, on="k"))
    return op_row(label, t.median, tuples=probe.num_rows + build.num_rows, bytes_moved=key_bytes + 16 * want[0],
                  copy_bw=ctx.copy_bw, ref_s=ref.median, ref_label="cupy sort join", host=host,
                  checked="rows + pair checksum = CuPy sort join", times_s=t.times, walls_s=t.walls,
                  ref_times_s=ref.times, output_rows=want[0])


def fig_join_unique(ctx: Ctx) -> dict:
    import gpuframe

    env, xp, n = ctx.env, ctx.env.xp, ctx.sizes["join_rows"]
    ctx.say(f"join_unique: {format_rows(n)} x {format_rows(n)} int64")
    bk = unique_keys(xp, n, 1)
    pk = bk[codes(xp, n, n, 2)]
    pa_, bb = payload(xp, n, 3), payload(xp, n, 4)
    probe, build = env.table({"k": pk, "a": pa_}), env.table({"k": bk, "b": bb})
    ref = env.measure(lambda: sort_join_unique(xp, pk, bk), ctx.runs, ctx.warmup)
    want = (int(ref.out[0].shape[0]), pair_checksum(xp, *ref.out))
    ref.out = None
    label = f"join {format_rows(n)}x{format_rows(n)} int64 unique: join_indices"
    maps = _join_maps_op(ctx, label, probe, build, ref, want, 2 * n * 8)

    def cupy_merge() -> tuple:
        li, ri = sort_join_unique(xp, pk, bk)
        return pk[li], pa_[li], bb[ri]

    mref = env.measure(cupy_merge, ctx.runs, ctx.warmup)
    want_m = (int(mref.out[0].shape[0]),) + tuple(wsum(xp, c) for c in mref.out)
    mref.out = None
    m = env.measure(lambda: gpuframe.merge(probe, build, on="k"), ctx.runs, ctx.warmup)
    out = m.out
    _check("merge rows and column sums",
           (out.num_rows,) + tuple(wsum(xp, env.as_xp(out[c].values())) for c in ("k", "a", "b")), want_m)
    moved = probe.nbytes + build.nbytes + out.nbytes
    m.out = out = None
    host = transfers(env, lambda: gpuframe.merge(probe, build, on="k"))
    merge = op_row(f"join {format_rows(n)}x{format_rows(n)} int64 unique: merge", m.median,
                   tuples=2 * n, bytes_moved=moved, copy_bw=ctx.copy_bw, ref_s=mref.median,
                   ref_label="cupy sort join + take", host=host, checked="rows + column sums = CuPy",
                   times_s=m.times, walls_s=m.walls, ref_times_s=mref.times)
    values = {"join_tuples_per_s": maps["tuples_per_s"], "join_vs_cupy": maps["vs_ref"]}
    return _result([maps, merge], values, {"probe_rows": n, "build_rows": n, "output_rows": want[0],
                                           "bytes_model": "join_indices: keys read + maps written; "
                                                          "merge: input + output tables"})


def fig_join_many(ctx: Ctx) -> dict:
    env, xp = ctx.env, ctx.env.xp
    n, k = ctx.sizes["many_probe_rows"], ctx.sizes["many_keys"]
    ctx.say(f"join_many: {format_rows(n)} x {format_rows(4 * k)} int64, 4 build rows per key")
    keys = unique_keys(xp, k, 6)
    shuffle = xp.argsort(mix64(_ids(xp, 4 * k, 7)))
    bk = xp.tile(keys, 4)[shuffle]
    pk = keys[codes(xp, n, k, 8)]
    probe, build = env.table({"k": pk, "a": payload(xp, n, 9)}), env.table({"k": bk, "b": payload(xp, 4 * k, 10)})
    ref = env.measure(lambda: sort_join(xp, pk, bk), ctx.runs, ctx.warmup)
    want = (int(ref.out[0].shape[0]), pair_checksum(xp, *ref.out))
    ref.out = None
    if want[0] != 4 * n:
        raise ResultMismatch(f"the CuPy reference found {want[0]} rows, expected {4 * n}")
    op = _join_maps_op(ctx, f"join {format_rows(n)}x{format_rows(4 * k)} 4 rows/key: join_indices",
                       probe, build, ref, want, (n + 4 * k) * 8)
    return _result([op], {}, {"probe_rows": n, "build_rows": 4 * k, "output_rows": want[0]})


def fig_join_hot(ctx: Ctx) -> dict:
    env, xp, n = ctx.env, ctx.env.xp, ctx.sizes["hot_rows"]
    ctx.say(f"join_hot: {format_rows(n)} x {format_rows(n)} int64, half the probe rows on one key")
    bk = unique_keys(xp, n, 11)
    c = codes(xp, n, n, 12)
    hot = (mix64(_ids(xp, n, 13)) & np.uint64(1)) == 0
    pk = bk[xp.where(hot, 0, c)]
    probe, build = env.table({"k": pk, "a": payload(xp, n, 14)}), env.table({"k": bk, "b": payload(xp, n, 15)})
    ref = env.measure(lambda: sort_join_unique(xp, pk, bk), ctx.runs, ctx.warmup)
    want = (int(ref.out[0].shape[0]), pair_checksum(xp, *ref.out))
    ref.out = None
    op = _join_maps_op(ctx, f"join {format_rows(n)}x{format_rows(n)} one hot key: join_indices",
                       probe, build, ref, want, 2 * n * 8)
    return _result([op], {}, {"probe_rows": n, "build_rows": n, "hot_fraction": 0.5})


def fig_join_string(ctx: Ctx) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc

    import gpuframe

    from .join import _string_keys

    env, xp = ctx.env, ctx.env.xp
    n_probe, n_build = ctx.sizes["string_probe_rows"], ctx.sizes["string_build_rows"]
    ctx.say(f"join_string: {format_rows(n_probe)} x {format_rows(n_build)} string keys")
    rng = np.random.default_rng(17)
    names = pa.array(_string_keys(n_build, rng), pa.string())
    pcodes = rng.integers(0, n_build, n_probe)
    a = rng.integers(0, 1000, n_probe, dtype=np.int64)
    b = rng.integers(0, 1000, n_build, dtype=np.int64)
    probe_h = pa.table({"k": names.take(pa.array(pcodes)), "a": a})
    probe = gpuframe.from_arrow(probe_h, device="cuda")
    build = gpuframe.from_arrow(pa.table({"k": names, "b": b}), device="cuda")
    want = (n_probe, pair_checksum(np, np.arange(n_probe, dtype=np.int64), pcodes.astype(np.int64)))
    key_bytes = probe["k"].nbytes + build["k"].nbytes
    t = env.measure(lambda: gpuframe.join_indices(probe, build, on="k"), ctx.runs, ctx.warmup)
    li, ri = t.out
    _check("string join_indices rows and pair checksum",
           (int(li.shape[0]), pair_checksum(xp, env.as_xp(li), env.as_xp(ri))), want)
    t.out = li = ri = None
    host = transfers(env, lambda: gpuframe.join_indices(probe, build, on="k"))
    label = f"join {format_rows(n_probe)}x{format_rows(n_build)} string: "
    maps = op_row(label + "join_indices", t.median, tuples=n_probe + n_build, bytes_moved=key_bytes + 16 * n_probe,
                  copy_bw=ctx.copy_bw, host=host, checked="rows + pair checksum = generator",
                  times_s=t.times, walls_s=t.walls)
    key_len = int(pc.sum(pc.binary_length(probe_h.column("k"))).as_py() or 0)
    want_m = (n_probe, key_len, int(a.sum()), int(b[pcodes].sum()))
    m = env.measure(lambda: gpuframe.merge(probe, build, on="k"), ctx.runs, ctx.warmup)
    out = m.out
    offs = env.as_xp(out["k"].offsets_view())
    got_m = (out.num_rows, int(offs[-1]) - int(offs[0]) if out.num_rows else 0,
             wsum(xp, env.as_xp(out["a"].values())), wsum(xp, env.as_xp(out["b"].values())))
    _check("string merge rows, key bytes and column sums", got_m, want_m)
    moved = probe.nbytes + build.nbytes + out.nbytes
    m.out = out = None
    host_m = transfers(env, lambda: gpuframe.merge(probe, build, on="k"))
    merge = op_row(label + "merge", m.median, tuples=n_probe + n_build, bytes_moved=moved, copy_bw=ctx.copy_bw,
                   host=host_m, checked="rows, key bytes, column sums = generator", times_s=m.times,
                   walls_s=m.walls)
    return _result([maps, merge], {}, {"probe_rows": n_probe, "build_rows": n_build, "key_bytes": "16-24"})


def outer_reference(lcode: np.ndarray, lnull: np.ndarray, rcode: np.ndarray, rnull: np.ndarray,
                    a: np.ndarray, anull: np.ndarray, b: np.ndarray, bnull: np.ndarray) -> tuple[int, int, int, int]:
    """``(rows, sum of a, sum of b, nulls in a)`` of the outer merge of left ``(code, a)`` with
    right ``(code, b)`` on the codes, the right codes unique, null keys matching nothing."""
    n_right = len(rcode)
    top = int(max(lcode.max(initial=0), rcode.max(initial=0))) + 1
    cnt = np.bincount(lcode[~lnull], minlength=top)
    hits = np.where(rnull, 0, cnt[rcode])
    unmatched_right = hits == 0
    mult = np.maximum(hits, 1)
    rows = len(lcode) + int(unmatched_right.sum())
    sum_a = int(a[~anull].sum())
    sum_b = int((b * mult)[~bnull].sum())
    null_a = int(anull.sum()) + int(unmatched_right.sum())
    assert n_right == len(b)
    return rows, sum_a, sum_b, null_a


def fig_outer_nullable(ctx: Ctx) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc

    import gpuframe

    env, n = ctx.env, ctx.sizes["outer_rows"]
    ctx.say(f"outer_nullable: {format_rows(n)} x {format_rows(n)} outer merge with nulls")
    rng = np.random.default_rng(23)
    lcode, lnull = rng.integers(0, 2 * n, n), rng.random(n) < 0.05
    rcode, rnull = rng.permutation(n), rng.random(n) < 0.05
    a, anull = rng.integers(0, 1000, n, dtype=np.int64), rng.random(n) < 0.1
    b, bnull = rng.integers(0, 1000, n, dtype=np.int64), rng.random(n) < 0.1

    def key(c: np.ndarray) -> np.ndarray:
        return mix64(c.astype(np.uint64) + np.uint64(99 << 40)).view(np.int64)

    left = gpuframe.from_arrow(pa.table({"k": pa.array(key(lcode), mask=lnull), "a": pa.array(a, mask=anull)}),
                               device="cuda")
    right = gpuframe.from_arrow(pa.table({"k": pa.array(key(rcode), mask=rnull), "b": pa.array(b, mask=bnull)}),
                                device="cuda")
    want = outer_reference(lcode, lnull, rcode, rnull, a, anull, b, bnull)

    def run() -> Any:
        return gpuframe.merge(left, right, on="k", how="outer")

    t = env.measure(run, ctx.runs, ctx.warmup)
    out = t.out
    moved = left.nbytes + right.nbytes + out.nbytes
    o = out.to_arrow()
    got = (o.num_rows, int(pc.sum(o.column("a")).as_py() or 0), int(pc.sum(o.column("b")).as_py() or 0),
           o.column("a").null_count)
    _check("outer merge rows, sums and nulls", got, want)
    t.out = out = o = None
    host = transfers(env, run)
    op = op_row(f"outer merge {format_rows(n)}x{format_rows(n)} nullable", t.median, tuples=2 * n,
                bytes_moved=moved, copy_bw=ctx.copy_bw, host=host,
                checked="rows, column sums, null count = generator", times_s=t.times, walls_s=t.walls,
                output_rows=want[0])
    return _result([op], {}, {"left_rows": n, "right_rows": n, "null_keys": 0.05, "null_payloads": 0.1})


def fig_partition(ctx: Ctx) -> dict:
    import gpuframe
    from gpuframe.ops.partition import partition_ids

    env, xp, n, parts = ctx.env, ctx.env.xp, ctx.sizes["partition_rows"], NUM_PARTITIONS
    ctx.say(f"hash_partition: {format_rows(n)} rows x 2 int64 into {parts}")
    a = unique_keys(xp, n, 31)
    b = mix64(_ids(xp, n, 32)).view(xp.int64)
    table = env.table({"a": a, "b": b})
    t = env.measure(lambda: gpuframe.hash_partition(table, "a", parts), ctx.runs, ctx.warmup)
    out, offsets = t.out
    offsets = np.asarray(offsets)
    # checks: sizes from partition_ids, every row in its partition, the columns' sums unchanged
    pids = env.as_xp(partition_ids(table, "a", parts))
    _check("partition sizes", np.diff(offsets).tolist(),
           env.to_numpy(xp.bincount(pids.astype(xp.int64), minlength=parts)).tolist())
    pid_out = env.as_xp(partition_ids(out, "a", parts)).astype(xp.int64)
    seg = xp.searchsorted(xp.asarray(offsets[1:]), xp.arange(n, dtype=xp.int64), side="right")
    _check("rows outside their partition", int((pid_out != seg).sum()), 0)
    _check("column sums", (wsum(xp, env.as_xp(out["a"].values())), wsum(xp, env.as_xp(out["b"].values()))),
           (wsum(xp, a), wsum(xp, b)))
    t.out = out = pids = pid_out = seg = None
    host = transfers(env, lambda: gpuframe.hash_partition(table, "a", parts))
    ref = env.measure(lambda: sort_partition(xp, a, b, parts), ctx.runs, ctx.warmup)
    _check("CuPy partition rows", int(ref.out[2][-1]), n)
    ref.out = None
    moved = 2 * table.nbytes
    op = op_row(f"hash_partition {format_rows(n)}x2 int64 -> {parts}", t.median, tuples=n, bytes_moved=moved,
                copy_bw=ctx.copy_bw, ref_s=ref.median, ref_label="cupy hash + argsort + take", host=host,
                show="bytes", checked="offsets = partition_ids; rows in place; sums", times_s=t.times,
                walls_s=t.walls, ref_times_s=ref.times)
    return _result([op], {"partition_pct_copy": op["pct_copy"]},
                   {"rows": n, "partitions": parts, "bytes_model": "table read + table written"})


def fig_to_torch(ctx: Ctx) -> dict:
    env, n = ctx.env, ctx.sizes["torch_rows"]
    if env.simulated:
        raise Unmeasured("the CUDA simulator has no device memory to share with torch")
    try:
        import torch
    except ImportError:
        raise Unmeasured("torch is not installed") from None
    if not torch.cuda.is_available():
        raise Unmeasured("torch has no CUDA (torch.cuda.is_available() is False)")
    import gpuframe
    from gpuframe.core.memory import data_ptr

    from .dlpack import make_table

    ctx.say(f"to_torch: {format_rows(n)} rows x 4 columns")
    source = make_table(n)
    table = gpuframe.from_arrow(source, device="cuda")
    ptrs = {name: data_ptr(table[name].values()) for name in table.column_names}
    t = env.measure(lambda: table.to_torch(), ctx.runs, ctx.warmup)
    out = t.out
    zero_copy = (list(out) == table.column_names
                 and all(out[k].device.type == "cuda" and out[k].data_ptr() == ptrs[k] and out[k].shape[0] == n
                         for k in out))
    t.out = out = None
    host = transfers(env, lambda: table.to_torch())
    op = op_row(f"to_torch {format_rows(n)}x4 CUDA columns (zero-copy {'yes' if zero_copy else 'NO'})",
                t.median, host=host, checked="data_ptr of every tensor = its column's", times_s=t.times,
                walls_s=t.walls, zero_copy=zero_copy)
    return _result([op], {"zero_copy": zero_copy}, {"rows": n, "columns": table.column_names})


def fig_groupby_sum(ctx: Ctx) -> dict:
    import gpuframe

    env, xp = ctx.env, ctx.env.xp
    n, g = ctx.sizes["groupby_rows"], ctx.sizes["groupby_groups"]
    ctx.say(f"groupby_sum: {format_rows(n)} rows, int64 key with {format_rows(g)} groups, int64 sum")
    # g distinct full-range keys (each code's splitmix64), about n / g rows each; values < 2**20
    k = mix64(codes(xp, n, g, 51).view(xp.uint64)).view(xp.int64)
    v = payload(xp, n, 52)
    table = env.table({"k": k, "v": v})
    aggs = {"s": ("v", "sum")}

    def run() -> Any:
        return gpuframe.groupby_agg(table, "k", aggs)

    ref = env.measure(lambda: sort_groupby_sum(xp, k, v), ctx.runs, ctx.warmup)
    rk, rs = ref.out
    ref.out = None
    groups = int(rk.shape[0])
    t = env.measure(run, ctx.runs, ctx.warmup)
    out = t.out
    _check("groupby-sum groups, sum's type and nulls", (out.num_rows, str(out["s"].dtype), out["s"].null_count),
           (groups, "int64", 0))
    gk, gs = env.as_xp(out["k"].values()), env.as_xp(out["s"].values())
    o = xp.argsort(gk)   # the groups come in first-row order: compare them by key
    _check("groupby-sum keys and sums that differ from CuPy's (by key)",
           (int((xp.take(gk, o) != rk).sum()), int((xp.take(gs, o) != rs).sum())), (0, 0))
    t.out = out = gk = gs = o = rk = rs = None
    host = transfers(env, run)
    moved = table.nbytes
    op = op_row(f"groupby-sum {format_rows(n)} int64, {format_rows(g)} groups", t.median, tuples=n,
                bytes_moved=moved, copy_bw=ctx.copy_bw, ref_s=ref.median,
                ref_label="cupy argsort + take + cumsum at segment ends", host=host, show="bytes",
                checked="groups + per-group sums = CuPy sort groupby (by key)", times_s=t.times, walls_s=t.walls,
                ref_times_s=ref.times, output_rows=groups)
    return _result([op], {}, {"rows": n, "groups": groups, "key": "int64 (full range)", "value": "int64",
                              "bytes_model": "input bytes: key + value columns"})


def fig_sort(ctx: Ctx) -> dict:
    import gpuframe

    env, xp, n = ctx.env, ctx.env.xp, ctx.sizes["sort_rows"]
    ctx.say(f"sort: {format_rows(n)} int64 keys (sort_indices), and a {format_rows(n)} x 2 int64 table (sort)")
    # full-range keys drawn from about n / 2 values: every radix digit varies, and ties exist
    k = mix64(codes(xp, n, max(n // 2, 1), 61).view(xp.uint64)).view(xp.int64)
    v = payload(xp, n, 62)
    table = env.table({"k": k, "v": v})

    ref = env.measure(lambda: stable_argsort(xp, k), ctx.runs, ctx.warmup)
    ref_perm = ref.out
    ref.out = None
    t = env.measure(lambda: gpuframe.sort_indices(table, "k"), ctx.runs, ctx.warmup)
    perm = env.as_xp(t.out)
    t.out = None
    got = check_sort_permutation(xp, k, perm)
    ties = got.pop("ties")
    _check("sort_indices (rows, out of range, missing, descents, unstable ties)", got,
           {"rows": n, "out_of_range": 0, "missing": 0, "descents": 0, "unstable": 0})
    same = bool((perm == ref_perm).all())   # both stable, so equal unless cupy.argsort is not
    ref_perm = None
    host = transfers(env, lambda: gpuframe.sort_indices(table, "k"))
    idx = op_row(f"sort_indices {format_rows(n)} int64 keys", t.median, tuples=n, bytes_moved=16 * n,
                 copy_bw=ctx.copy_bw, ref_s=ref.median, ref_label="cupy.argsort (stable)", host=host, show="bytes",
                 checked="a permutation; keys non-decreasing; ties in input order", times_s=t.times,
                 walls_s=t.walls, ref_times_s=ref.times, ties=ties, same_as_ref=same)

    def cupy_sort() -> tuple:
        p = stable_argsort(xp, k)
        return xp.take(k, p), xp.take(v, p)

    mref = env.measure(cupy_sort, ctx.runs, ctx.warmup)
    mref.out = None
    m = env.measure(lambda: gpuframe.sort(table, "k"), ctx.runs, ctx.warmup)
    out = m.out
    ok_k = bool((env.as_xp(out["k"].values()) == xp.take(k, perm)).all())
    ok_v = bool((env.as_xp(out["v"].values()) == xp.take(v, perm)).all())
    _check("sort: rows, keys and values = the table taken by the checked permutation", (out.num_rows, ok_k, ok_v),
           (n, True, True))
    moved = table.nbytes + out.nbytes
    m.out = out = perm = None
    host_m = transfers(env, lambda: gpuframe.sort(table, "k"))
    full = op_row(f"sort {format_rows(n)}x2 int64 table", m.median, tuples=n, bytes_moved=moved,
                  copy_bw=ctx.copy_bw, ref_s=mref.median, ref_label="cupy.argsort + take x2", host=host_m,
                  show="bytes", checked="= the table taken by the checked permutation", times_s=m.times,
                  walls_s=m.walls, ref_times_s=mref.times)
    notes = [] if same else ["cupy.argsort's permutation differs from the stable one: CuPy's sort was not stable"]
    return _result([idx, full], {}, {"rows": n, "key": "int64 (full range, ~n/2 distinct)", "ties": ties,
                                     "cupy_argsort": "stable (Thrust stable_sort_by_key: CUB radix sort)",
                                     "bytes_model": "sort_indices: keys read + permutation written; "
                                                    "sort: input + output tables"}, notes)


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    fn: Callable[[Ctx], dict]
    limit_s: float                       # its own time limit (the budget may cut it shorter)
    targets: tuple[TargetSpec, ...] = field(default=())


# In run order: the figures with targets first, so a short budget still measures them, then issue
# 11's groupby and sort, then the other joins.
FIGURES: tuple[Figure, ...] = (
    Figure("copy", "D2D copy bandwidth", fig_copy, 15),
    Figure("join_unique", "10M x 10M int64 unique-key inner join", fig_join_unique, 45, (
        TargetSpec("join_tuples_per_s", "10Mx10M join_indices: input tuples/s", ">=", TARGET_JOIN_TUPLES_PER_S,
                   f">= {TARGET_JOIN_TUPLES_PER_S / 1e9:g} G/s", "G/s"),
        TargetSpec("join_vs_cupy", "10Mx10M join_indices vs CuPy sort join", ">=", TARGET_JOIN_VS_CUPY,
                   f">= {TARGET_JOIN_VS_CUPY:g}x", "x"),
    )),
    Figure("hash_partition", "hash_partition 100M x 2 int64 into 64", fig_partition, 40, (
        TargetSpec("partition_pct_copy", "hash_partition 100Mx2 int64: % of copy bandwidth", ">=",
                   TARGET_PARTITION_PCT_COPY, f">= {TARGET_PARTITION_PCT_COPY:g}%", "%"),
    )),
    Figure("to_torch", "to_torch on CUDA", fig_to_torch, 20, (
        TargetSpec("zero_copy", "to_torch on CUDA: zero-copy", "==", True, "yes", "bool"),
    )),
    Figure("groupby_sum", "groupby-sum 100M rows, 1M int64 groups", fig_groupby_sum, 35),
    Figure("sort", "sort 100M int64 keys", fig_sort, 35),
    Figure("join_many", "many-to-many join (4 rows per key)", fig_join_many, 30),
    Figure("join_hot", "join with one hot key", fig_join_hot, 25),
    Figure("join_string", "5M x 1M string-key join", fig_join_string, 40),
    Figure("outer_nullable", "10M-row nullable outer merge", fig_outer_nullable, 35),
)


def skipped_record(fig: Figure, reason: str) -> dict:
    return figure_record(fig.key, fig.title, SKIPPED, error=f"skipped: {reason}",
                         targets=target_rows(fig.targets, {}, fig.key))


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`FigureTimeout` in the main thread after ``seconds`` (no-op elsewhere)."""
    if seconds is None or threading.current_thread() is not threading.main_thread() \
            or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise FigureTimeout(f"time limit of {seconds:.0f} s reached")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_figure(fig: Figure, ctx: Ctx, limit_s: Optional[float]) -> dict:
    t0 = time.monotonic()
    try:
        with time_limit(limit_s):
            res = fig.fn(ctx)
    except Unmeasured as e:
        rec = figure_record(fig.key, fig.title, UNMEASURED, error=f"unmeasured: {e}",
                            targets=target_rows(fig.targets, {}, fig.key))
    except FigureTimeout as e:
        rec = figure_record(fig.key, fig.title, ERROR, error=f"{'terminated' if ctx.stop_reason else 'timeout'}: {e}",
                            targets=target_rows(fig.targets, {}, fig.key), trace=traceback.format_exc(limit=-6))
    except Exception as e:  # noqa: BLE001 - recorded; the next figure runs
        text = f"{type(e).__name__}: {e}".replace("\n", " ")
        rec = figure_record(fig.key, fig.title, ERROR, error=text[:400], targets=target_rows(fig.targets, {}, fig.key),
                            trace=traceback.format_exc(limit=-12))
    else:
        targets = target_rows(fig.targets, res["values"], fig.key)
        targets += [host_o1_row(fig.key, op["label"], op["host"]) for op in res["ops"] if op.get("host") is not None]
        rec = figure_record(fig.key, fig.title, OK, ops=res["ops"], targets=targets, params=res["params"],
                            notes=res["notes"])
    rec["seconds"] = round(time.monotonic() - t0, 2)
    try:
        ctx.env.free()
    except Exception:  # noqa: BLE001
        pass
    return rec


def run_figures(figures: Sequence[Figure], ctx: Ctx, budget_s: float,
                on_record: Optional[Callable[[list[dict]], None]] = None,
                records: Optional[list[dict]] = None) -> list[dict]:
    """Run ``figures`` in order within ``budget_s`` seconds, appending one record each to
    ``records`` (a new list by default; pass one to keep the records of an interrupted run)."""
    start = time.monotonic()
    records = [] if records is None else records
    for fig in figures:
        left = budget_s - (time.monotonic() - start)
        if ctx.stop_reason:
            records.append(skipped_record(fig, ctx.stop_reason))
        elif left < MIN_START_S:
            records.append(skipped_record(fig, "budget"))
        else:
            limit = min(fig.limit_s, left)
            ctx.say(f"[{fig.key}] start (limit {limit:.0f} s)")
            rec = run_figure(fig, ctx, limit)
            ctx.say(f"[{fig.key}] {rec['status']} in {rec['seconds']:.1f} s"
                    + (f": {rec['error']}" if rec.get("error") else ""))
            records.append(rec)
        if on_record is not None:
            on_record(records)
    return records


def exit_status(records: Sequence[dict]) -> int:
    """0 when every figure was measured and checked (or cannot be measured here, such as torch
    without CUDA), whatever the targets' verdicts (the summary shows them); 1 when a figure
    failed, was cut short or skipped."""
    c = counts(records)
    return EXIT_OK if (c[ERROR] == 0 and c[SKIPPED] == 0) else EXIT_FAILED


# =========================================================================== entry point
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gpuframe.benchmarks.gpu_figures",
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for summary.json and summary.txt")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every size (e.g. 0.001 for a quick run)")
    p.add_argument("--budget-s", type=float, default=150.0, help="start no figure after this many seconds")
    p.add_argument("--runs", type=int, default=5, help="timed calls per operation (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (the first compiles)")
    p.add_argument("--only", default=None, help="comma-separated figure keys: " + ",".join(f.key for f in FIGURES))
    p.add_argument("--simulator", action="store_true",
                   help="with NUMBA_ENABLE_CUDASIM=1: NumPy in place of CuPy on numba's simulator (no figures)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not (args.scale > 0):
        p.error(f"--scale must be positive, got {args.scale}")
    if args.runs < 1 or args.warmup < 0 or args.budget_s <= 0:
        p.error("--runs must be >= 1, --warmup >= 0 and --budget-s > 0")
    figures = list(FIGURES)
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        unknown = sorted(set(keys) - {f.key for f in FIGURES})
        if unknown:
            p.error(f"--only: unknown figures {unknown}; known: {[f.key for f in FIGURES]}")
        figures = [f for f in FIGURES if f.key in keys]
    t_start = time.monotonic()
    meta: dict[str, Any] = {"scale": args.scale, "runs": args.runs, "warmup": args.warmup, "budget_s": args.budget_s,
                            "sizes": figure_sizes(args.scale), "command": " ".join(sys.argv),
                            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                            "o1_bytes": O1_BYTES, "simulator": False, "device": "?", "seconds": 0.0}

    from gpuframe.core.device import CUDA_INSTALL_HINT, cudasim_enabled, gpu_count

    if args.simulator:
        if not cudasim_enabled():
            p.error("--simulator needs NUMBA_ENABLE_CUDASIM=1 in the environment")
        env: Any = SimEnv()
        meta["simulator"] = True
    elif gpu_count() == 0:
        msg = f"no CUDA GPU is visible to CuPy, so nothing was measured; {CUDA_INSTALL_HINT}"
        if cudasim_enabled():
            msg += " (NUMBA_ENABLE_CUDASIM is set: add --simulator to exercise the script)"
        print(f"gpu_figures: {msg}", file=sys.stderr)
        meta.update(error=msg, device="no GPU")
        write_summary([skipped_record(f, "no GPU") for f in figures], args.out, meta)
        return EXIT_NO_GPU
    else:
        env = CupyEnv()
    import gpuframe

    gpuframe.config.set(raise_on_fallback=True)
    try:
        meta["device"] = env.device_name()
    except Exception as e:  # noqa: BLE001
        meta["device"] = f"? ({type(e).__name__})"
    ctx = Ctx(env=env, sizes=figure_sizes(args.scale), runs=args.runs, warmup=args.warmup,
              say=lambda m: print(f"[gpu_figures {time.monotonic() - t_start:6.1f} s] {m}", file=sys.stderr,
                                  flush=True))

    def on_term(signum: int, frame: Any) -> None:
        if ctx.stop_reason is None:
            ctx.stop_reason = "terminated"
            raise FigureTimeout("terminated by a signal")

    old_term = signal.signal(signal.SIGTERM, on_term) if threading.current_thread() is threading.main_thread() else None

    def save(records: list[dict]) -> None:
        meta["seconds"] = round(time.monotonic() - t_start, 1)
        write_summary(records, args.out, meta)

    records: list[dict] = []
    try:
        run_figures(figures, ctx, args.budget_s, on_record=save, records=records)
    except FigureTimeout:   # a signal between two figures: the ones not run are skipped
        done = {r["figure"] for r in records}
        records += [skipped_record(f, "terminated") for f in figures if f.key not in done]
    finally:
        if old_term is not None:   # no signal while the last summary is written
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        save(records)
        print(format_summary(records, meta), end="")
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return exit_status(records)

if __name__ == "__main__":
    sys.exit(main())
