"""Groupby-aggregate: the db-benchmark groupby questions, gpuframe against DuckDB and Polars.

Data: db-benchmark's G1 table (``groupby-datagen.R``), N rows, K = 100, no NAs, made with numpy
(same distributions, not the same rows as R's generator): ``id1``, ``id2`` strings ``id001`` ..
``id100`` (K values), ``id3`` strings ``id0000000001`` .. (N/K values), ``id4``, ``id5`` int64
1..K, ``id6`` int64 1..N/K, ``v1`` int64 1..5, ``v2`` int64 1..15, ``v3`` float64 uniform
[0, 100) rounded to 6 decimals. N = ``--rows`` / 10: 10M at ``--rows full``, 1M at
``moderate``, 2k at ``smoke``. Integers are int64 as Polars and DuckDB read db-benchmark's CSV;
the id1..id3 strings are ``pa.string()`` and every engine gets them as plain strings (no
Polars Categorical or DuckDB ENUM; db-benchmark's Polars script casts them to Categorical, which
is left out here so that every engine groups the same strings).

Questions (cases; ``--cases q1,q3``):

* ``q1``: sum v1 by id1; ``q2``: sum v1 by id1, id2; ``q3``: sum v1, mean v3 by id3;
* ``q4``: mean v1, v2, v3 by id4; ``q5``: sum v1, v2, v3 by id6;
* ``q6``: median v3, sd v3 by id4, id5;
* ``q7``: max v1, min v2 by id3 (db-benchmark asks for max(v1) - min(v2): here every engine
  computes the max and the min and none takes the difference);
* ``q8``: sum v3, count v1 by id1, id2, id3, id4, id5, id6.

Engines, on the same Arrow table in the same process: gpuframe ``groupby_agg(table, by, aggs)``
on a table made once with ``gpuframe.from_arrow`` (not timed); DuckDB SQL over the registered
Arrow table (``con.sql(...).to_arrow_table()``, ``SET threads`` to ``--workers``); Polars eager
``df.group_by(by).agg(...)`` and lazy ``df.lazy().group_by(by).agg(...).collect(engine="streaming")``.
Other names in ``--peers`` (pandas, pyarrow) are ignored (a note in the record).

Every peer's answer is checked against gpuframe's before any time is kept, order-free (the
group order is unspecified): same number of groups, and after sorting every answer by its key
columns the keys equal and every aggregate equal (integers exactly, floats to 1e-9 relative).

Target (issue 11, CPU): every question >= 1.5x faster than the best peer (at ``--rows moderate``
and above). Every output of every engine, warm-up calls included, stays alive until the case's
last round (``common.OutputKeeper``); rounds are interleaved (every engine once per round, the
order rotated). ``gpuframe_peak_rss`` is the process's peak RSS during gpuframe's first call
(the high-water mark reset just before it; the interpreter and the input table included);
``peak_minus_before`` is only a lower bound of the call's working memory: pages the process
already holds (freed by earlier cases, kept by the allocator) are reused without raising RSS, so
only the first case of a run measures from a clean slate (``benchmarks/join.py``'s
``peak_memory`` cases, one fresh process each, are the exact measure).

``--device cuda``: gpuframe's table is moved to the GPU once (not timed) and its answers copied
back for the check (not timed); no target there.
"""
from __future__ import annotations

import functools
import gc
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa

try:  # installed as gpuframe.benchmarks, or run as a script from benchmarks/
    from .common import (SIZES, BenchConfig, OutputKeeper, ResultMismatch, arg_parser, config_from_args,
                         format_rows, make_record, peer_available, summarize, write_results)
except ImportError:  # pragma: no cover - script mode
    from common import (SIZES, BenchConfig, OutputKeeper, ResultMismatch, arg_parser,  # type: ignore[no-redef]
                        config_from_args, format_rows, make_record, peer_available, summarize, write_results)

BENCHMARK = "groupby"
TARGET = 1.5
K = 100
PEERS = ("duckdb", "polars")

# name -> (by, {output: (column, op)})
QUESTIONS: dict[str, tuple[list[str], dict[str, tuple[str, str]]]] = {
    "q1": (["id1"], {"v1": ("v1", "sum")}),
    "q2": (["id1", "id2"], {"v1": ("v1", "sum")}),
    "q3": (["id3"], {"v1": ("v1", "sum"), "v3": ("v3", "mean")}),
    "q4": (["id4"], {"v1": ("v1", "mean"), "v2": ("v2", "mean"), "v3": ("v3", "mean")}),
    "q5": (["id6"], {"v1": ("v1", "sum"), "v2": ("v2", "sum"), "v3": ("v3", "sum")}),
    "q6": (["id4", "id5"], {"median_v3": ("v3", "median"), "sd_v3": ("v3", "std")}),
    "q7": (["id3"], {"max_v1": ("v1", "max"), "min_v2": ("v2", "min")}),
    "q8": (["id1", "id2", "id3", "id4", "id5", "id6"], {"v3": ("v3", "sum"), "count": ("v1", "count")}),
}
CASES = tuple(QUESTIONS)
_SQL_OP = {"sum": "sum", "mean": "avg", "median": "median", "std": "stddev_samp", "max": "max", "min": "min",
           "count": "count"}


# --------------------------------------------------------------------------- data
def _ids(rng: np.random.Generator, n: int, values: int, width: int) -> pa.Array:
    """``n`` strings ``id`` + a zero-padded number in 1..values, drawn uniformly (pa.string())."""
    pool = pa.array([f"id{i:0{width}d}" for i in range(1, values + 1)], pa.string())
    return pool.take(pa.array(rng.integers(0, values, n, dtype=np.int32)))


def make_g1(n: int, seed: int = 108) -> pa.Table:
    """db-benchmark's G1 table of ``n`` rows, K = 100, no NAs (see the module docstring)."""
    rng = np.random.default_rng(seed)
    nk = max(1, n // K)
    return pa.table({
        "id1": _ids(rng, n, K, 3),
        "id2": _ids(rng, n, K, 3),
        "id3": _ids(rng, n, nk, 10),
        "id4": rng.integers(1, K + 1, n, dtype=np.int64),
        "id5": rng.integers(1, K + 1, n, dtype=np.int64),
        "id6": rng.integers(1, nk + 1, n, dtype=np.int64),
        "v1": rng.integers(1, 6, n, dtype=np.int64),
        "v2": rng.integers(1, 16, n, dtype=np.int64),
        "v3": np.round(rng.uniform(0, 100, n), 6),
    })


# --------------------------------------------------------------------------- answers
def to_arrow(result: Any) -> pa.Table:
    """An engine's result as an Arrow table (outside the timing, for the check)."""
    if isinstance(result, pa.Table):
        return result
    return result.to_arrow()


def normalize(table: pa.Table, keys: Sequence[str], types: dict[str, pa.DataType]) -> pa.Table:
    """``table`` with gpuframe's column names and types (large strings for string keys, every
    engine's integer/decimal/float types cast to gpuframe's), sorted by ``keys``."""
    cols = {}
    for name, want in types.items():
        col = table.column(name)
        if pa.types.is_string(want) or pa.types.is_large_string(want) or pa.types.is_string_view(col.type):
            want = pa.large_string()
        if col.type != want:
            col = col.cast(want)
        cols[name] = col
    t = pa.table(cols)
    try:
        import polars as pl

        return pl.from_arrow(t).sort(list(keys)).to_arrow().cast(t.schema)
    except ImportError:  # pragma: no cover - polars is a peer, normally present
        return t.sort_by([(k, "ascending") for k in keys])


class Check:
    """gpuframe's answer, normalised, and the comparison a peer's answer must pass."""

    def __init__(self, ours: pa.Table, keys: Sequence[str], rtol: float = 1e-9) -> None:
        self.keys = list(keys)
        self.types = {f.name: f.type for f in ours.schema}
        self.want = normalize(ours, self.keys, self.types)
        self.rtol = rtol

    def __call__(self, engine: str, got: pa.Table) -> None:
        if got.num_rows != self.want.num_rows:
            raise ResultMismatch(f"{engine}: {got.num_rows} groups, gpuframe has {self.want.num_rows}")
        missing = [c for c in self.types if c not in got.column_names]
        if missing:
            raise ResultMismatch(f"{engine}: no column(s) {missing} in {got.column_names}")
        g = normalize(got, self.keys, self.types)
        for name in self.types:
            a, b = self.want.column(name), g.column(name)
            if pa.types.is_floating(a.type):
                x = a.to_numpy()
                y = b.to_numpy()
                if not np.allclose(x, y, rtol=self.rtol, atol=0.0, equal_nan=True):
                    bad = int(np.argmax(~np.isclose(x, y, rtol=self.rtol, atol=0.0, equal_nan=True)))
                    raise ResultMismatch(f"{engine}: column {name!r} differs from gpuframe's, e.g. sorted row "
                                         f"{bad}: {y[bad]!r} against {x[bad]!r}")
            elif not a.equals(b):
                raise ResultMismatch(f"{engine}: column {name!r} differs from gpuframe's (sorted by the keys)")


# --------------------------------------------------------------------------- timing
class Engine:
    def __init__(self, engine: str, variant: str, fn: Callable[[], Any]) -> None:
        self.engine, self.variant, self.fn = engine, variant, fn
        self.times: list[float] = []

    @property
    def label(self) -> str:
        return f"{self.engine}/{self.variant}" if self.variant else self.engine


def time_interleaved(cfg: BenchConfig, case: str, engines: list[Engine],
                     verify: Callable[[Engine, Any], None], first_result: Any = None) -> dict:
    """Check every engine's answer (``verify`` on its first warm-up call, untimed), then time
    them in ``cfg.runs`` interleaved rounds (the order rotated per round), every output (warm-up
    ones included) kept alive until the last round; returns the keeper's info. ``first_result``:
    an output of ``engines[0]`` already made (its first warm-up call)."""
    warmup = max(cfg.warmup, 1)
    keep = OutputKeeper(warmup + cfg.runs, fraction=cfg.keep_fraction)
    for i, e in enumerate(engines):
        cfg.say(f"{case}: {e.label}: warm-up and check")
        for w in range(warmup):
            if i == 0 and w == 0 and first_result is not None:
                res, first_result = first_result, None
            else:
                res = e.fn()
            if w == 0:
                verify(e, res)
            keep.keep(e, res)
            del res
            gc.collect()
    for r in range(cfg.runs):
        cfg.say(f"{case}: round {r + 1}/{cfg.runs}")
        for j in range(len(engines)):
            e = engines[(j + r) % len(engines)]
            gc.collect()
            enabled = gc.isenabled()
            gc.disable()
            try:
                t0 = time.perf_counter()
                res = e.fn()
                e.times.append(time.perf_counter() - t0)
            finally:
                if enabled:
                    gc.enable()
            keep.keep(e, res)
            del res
    info = keep.info()
    keep.release()
    return info


def _status(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return None


def peak_rss_of(fn: Callable[[], Any]) -> tuple[Any, dict]:
    """``(fn(), {"rss_before", "peak_rss", "peak_reset"})``: the process's RSS before the call and
    its high-water mark during it (reset first through ``/proc/self/clear_refs``; where that is
    not possible, the process's lifetime peak, ``peak_reset`` False)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    before = _status("VmRSS")
    out = fn()
    peak = _status("VmHWM")
    if not reset or peak is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out, {"rss_before": before, "peak_rss": peak, "peak_reset": reset}


def _threads() -> int:
    try:
        import numba

        return int(numba.get_num_threads())
    except Exception:  # pragma: no cover
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)
def code_version() -> dict:
    """(Once per process, at the start of a run.) The commit of the checkout the library was imported from and its modified library files
    (the measured code, when others edit the tree), or ``{}`` outside a git checkout."""
    import subprocess

    import gpuframe

    root = os.path.dirname(os.path.dirname(os.path.abspath(gpuframe.__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "gpuframe", "cuda_kernels"],
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": head, "modified": [ln[3:] for ln in dirty if ln.strip()]} if head else {}


def _loadavg() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        return None


# --------------------------------------------------------------------------- cases
def sql(by: Sequence[str], aggs: dict[str, tuple[str, str]], table: str = "x") -> str:
    keys = ", ".join(by)
    cols = ", ".join(f"{_SQL_OP[op]}({col}) AS {name}" for name, (col, op) in aggs.items())
    return f"SELECT {keys}, {cols} FROM {table} GROUP BY {keys}"


def polars_exprs(aggs: dict[str, tuple[str, str]]) -> list:
    import polars as pl

    out = []
    for name, (col, op) in aggs.items():
        c = pl.col(col)
        expr = {"sum": c.sum, "mean": c.mean, "median": c.median, "std": c.std, "max": c.max, "min": c.min,
                "count": c.count}[op]()
        out.append(expr.alias(name))
    return out


def run_question(cfg: BenchConfig, q: str, source: pa.Table, table: Any, con: Any, df: Any,
                 target: Optional[float]) -> dict:
    import gpuframe

    by, aggs = QUESTIONS[q]

    def ours() -> Any:
        return gpuframe.groupby_agg(table, by, aggs)

    load_before = _loadavg()
    cfg.say(f"{q}: gpuframe first call (peak RSS)")
    first, rss = peak_rss_of(ours)
    check = Check(first.to("cpu").to_arrow(), by)
    groups = first.num_rows
    engines = [Engine("gpuframe", "groupby_agg", ours)]
    if con is not None:
        query = sql(by, aggs)
        engines.append(Engine("duckdb", "SQL GROUP BY", lambda: con.sql(query).to_arrow_table()))
    if df is not None:
        exprs = polars_exprs(aggs)
        engines.append(Engine("polars", "eager", lambda: df.group_by(by).agg(exprs)))
        engines.append(Engine("polars", "lazy streaming",
                              lambda: df.lazy().group_by(by).agg(exprs).collect(engine="streaming")))

    def verify(e: Engine, res: Any) -> None:
        if e.engine != "gpuframe":
            check(e.label, to_arrow(res))

    kept = time_interleaved(cfg, q, engines, verify, first_result=first)
    del first
    results = [summarize(e.engine, e.times, source.num_rows, e.variant) for e in engines]
    rss["peak_minus_before"] = (None if rss["rss_before"] is None or rss["peak_rss"] is None
                                else rss["peak_rss"] - rss["rss_before"])
    params = {"rows": source.num_rows, "k": K, "by": by, "aggs": {n: list(s) for n, s in aggs.items()},
              "groups": groups, "input_bytes": source.nbytes, "string_keys": "pa.string() (plain, every engine)",
              "device": cfg.device, "runs": cfg.runs, "warmup": cfg.warmup, "threads": _threads(),
              "timing": "interleaved rounds, order rotated per round", "loadavg_1min": [load_before, _loadavg()]}
    if con is not None:
        params["duckdb_sql"] = sql(by, aggs)
    return make_record(BENCHMARK, q, params, results, checked=True, target_ratio=target,
                       gpuframe_peak_rss=rss, code=code_version(), check="order-free: sorted by the keys; ints exact, floats rtol 1e-9",
                       **kept)


def selected(cfg: BenchConfig) -> list[str]:
    wanted = cfg.cases or list(CASES)
    unknown = [c for c in wanted if c not in CASES]
    if unknown:
        raise ValueError(f"groupby cases must be among {list(CASES)}, got {unknown}")
    return [c for c in CASES if c in wanted]


def rows_for(cfg: BenchConfig) -> int:
    """N of the G1 table: a tenth of ``--rows`` (10M at full, 1M at moderate, 2k at smoke)."""
    return max(cfg.rows // 10, 1000)


def run(cfg: BenchConfig) -> list[dict]:
    import gpuframe

    names = selected(cfg)
    code_version()
    target = TARGET if (cfg.device == "cpu" and cfg.rows >= SIZES["moderate"]) else None
    n = rows_for(cfg)
    cfg.say(f"G1 data: {format_rows(n)} rows, K={K}")
    source = make_g1(n)
    table = gpuframe.from_arrow(source).to(cfg.device)
    con = df = None
    if "duckdb" in cfg.peers and peer_available("duckdb"):
        import duckdb

        con = duckdb.connect()
        con.execute(f"SET threads TO {max(cfg.workers, 1)}")
        con.register("x", source)
    if "polars" in cfg.peers and peer_available("polars"):
        import polars as pl

        df = pl.from_arrow(source)
    ignored = [p for p in cfg.peers if p not in PEERS]
    records = []
    for q in names:
        rec = run_question(cfg, q, source, table, con, df, target)
        if ignored:
            rec["notes"] = [f"peers {ignored} are not part of this benchmark: ignored"]
        records.append(rec)
        gc.collect()
    if con is not None:
        con.close()
    return records


def print_summary(records: list[dict]) -> None:
    for rec in records:
        line = ", ".join(f"{r['engine']}/{r['variant']} {r['median_s']:.3f} s" for r in rec["results"])
        sp = rec.get("speedup_vs_best_peer")
        print(f"{rec['case']} ({format_rows(rec['params']['rows'])} rows): {line}; "
              f"x{sp if sp is not None else float('nan'):.2f} vs {rec.get('best_peer')}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = arg_parser(__doc__.splitlines()[0], default_rows="small")
    p.add_argument("--cases", default=None, help=f"comma-separated questions (default: all of {','.join(CASES)})")
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    if args.cases:
        cfg.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
        selected(cfg)
    doc = write_results(run(cfg), cfg.out)
    print_summary(doc["records"])
    return doc


if __name__ == "__main__":
    main()
