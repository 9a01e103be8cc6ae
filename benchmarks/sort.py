"""Sort: ``gpuframe.sort(table, by)`` against the peers' sorts, side by side on the same data.

Cases (each a record; ``cfg.rows`` rows for the integer cases, a tenth for the string cases):

* ``int64``: one int64 key, uniform over the whole range (the radix sort's worst case: every
  digit varies), with an int32 payload column.
* ``int64,int32``: two keys, an int64 with about ``rows / 8`` distinct values (ties, so the second
  key matters) and an int32 over its whole range.
* ``string``: one string key, random lowercase words of 4 to 20 letters (almost all distinct),
  with an int64 payload.
* ``string,string``: two string keys, a category of 1000 distinct words first, the random word
  second.

Target (issue 11, CPU): at least 2x faster than Polars' ``df.sort`` (``speedup_vs_polars`` and
``target_vs_polars_met`` in the record: Polars' fastest variant against gpuframe; ``target_met``
compares with the fastest peer of all).

Peers, on the same data in the same process, each answer checked against gpuframe's before any
time is kept: stable peers exactly (every column); unstable ones (rows with equal keys in any
order) by their key columns exactly and every payload column's sum:

* ``polars``: eager ``df.sort(by)`` (not stable), eager ``df.sort(by, maintain_order=True)``
  (stable, like gpuframe), and lazy ``df.lazy().sort(by).collect(engine="streaming")``;
* ``duckdb``: ``SELECT * FROM t ORDER BY ...`` over the registered Arrow table, to an Arrow
  table (not stable), ``SET threads`` to ``--workers``;
* ``pyarrow``: ``table.sort_by(...)`` (stable);
* ``pandas``: ``sort_values(by, kind="stable")``.

Every output of every engine, warm-up calls included, stays alive until the case's last round
(``common.OutputKeeper``); the record says whether all were kept. Rounds are interleaved (every
engine once per round, the order rotated), so a burst of load on a shared machine hits all alike.
"""
from __future__ import annotations

import gc
import sys
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa

try:  # installed as gpuframe.benchmarks, or run as a script from benchmarks/
    from .common import (SIZES, BenchConfig, OutputKeeper, ResultMismatch, arg_parser, config_from_args,
                         format_rows, make_record, summarize, write_results)
except ImportError:  # pragma: no cover - script mode
    from common import (SIZES, BenchConfig, OutputKeeper, ResultMismatch, arg_parser,  # type: ignore[no-redef]
                        config_from_args, format_rows, make_record, summarize, write_results)

BENCHMARK = "sort"
TARGET_VS_POLARS = 2.0
CASES = ("int64", "int64,int32", "string", "string,string")
NOTES = [
    "polars: df.sort is not stable by default (maintain_order=False): checked by key columns and payload sums; "
    "maintain_order=True is stable and checked exactly",
    "duckdb: ORDER BY is not stable: checked by key columns and payload sums",
    "pyarrow: sort_by is stable: checked exactly",
]


def _random_words(rng: np.random.Generator, rows: int, lo: int, hi: int) -> pa.Array:
    """``rows`` random lowercase words of ``lo`` to ``hi`` letters, built straight into Arrow buffers."""
    lengths = rng.integers(lo, hi + 1, rows)
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    chars = rng.integers(ord("a"), ord("z") + 1, int(offsets[-1]), dtype=np.uint8)
    large = pa.LargeStringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(chars))
    return large.cast(pa.string())


def make_table(case: str, rows: int, seed: int = 0) -> tuple[pa.Table, list[str]]:
    """The case's table and its sort keys."""
    rng = np.random.default_rng(seed)
    if case == "int64":
        return pa.table({"a": rng.integers(-2**63, 2**63 - 1, rows, dtype=np.int64),
                         "p": rng.integers(-2**31, 2**31 - 1, rows, dtype=np.int32)}), ["a"]
    if case == "int64,int32":
        span = max(rows // 16, 1)
        return pa.table({"a": rng.integers(-span, span, rows, dtype=np.int64),
                         "b": rng.integers(-2**31, 2**31 - 1, rows, dtype=np.int32)}), ["a", "b"]
    words = _random_words(rng, rows, 4, 20)
    if case == "string":
        return pa.table({"s": words, "p": rng.integers(0, 2**40, rows, dtype=np.int64)}), ["s"]
    if case == "string,string":
        cats = _random_words(rng, 1000, 6, 14).to_numpy(zero_copy_only=False)
        cat = pa.array(cats[rng.integers(0, len(cats), rows)], pa.string())
        return pa.table({"c": cat, "s": words, "p": rng.integers(0, 2**40, rows, dtype=np.int64)}), ["c", "s"]
    raise ValueError(f"case must be one of {CASES}, got {case!r}")


class _Check:
    """gpuframe's sorted table and the checks a peer's answer must pass."""

    def __init__(self, ours: pa.Table, keys: list[str]) -> None:
        self.ours = ours
        self.keys = keys
        self.payload = [c for c in ours.column_names if c not in keys]
        self.sums = {c: self._sum(ours.column(c)) for c in self.payload}

    @staticmethod
    def _sum(col: Any) -> int:
        import pyarrow.compute as pc

        return int(pc.sum(col.cast(pa.int64())).as_py() or 0)

    def _column(self, engine: str, got: pa.Table, name: str) -> Any:
        a = self.ours.column(name)
        b = got.column(name)
        if b.type != a.type:
            b = b.cast(a.type)
        return a, b

    def exact(self, engine: str, got: pa.Table) -> None:
        for name in self.ours.column_names:
            a, b = self._column(engine, got, name)
            if not a.equals(b):
                raise ResultMismatch(f"{engine}: column {name!r} differs from gpuframe's sorted table")

    def keys_and_sums(self, engine: str, got: pa.Table) -> None:
        if got.num_rows != self.ours.num_rows:
            raise ResultMismatch(f"{engine}: {got.num_rows} rows, gpuframe has {self.ours.num_rows}")
        for name in self.keys:
            a, b = self._column(engine, got, name)
            if not a.equals(b):
                raise ResultMismatch(f"{engine}: key column {name!r} is not in gpuframe's order")
        for name in self.payload:
            if self._sum(got.column(name)) != self.sums[name]:
                raise ResultMismatch(f"{engine}: payload column {name!r} sums differ from gpuframe's")


class _Engine:
    def __init__(self, engine: str, variant: str, fn: Callable[[], Any], verify: Callable[[Any], None],
                 how: str) -> None:
        self.engine, self.variant, self.fn, self.verify, self.how = engine, variant, fn, verify, how
        self.times: list[float] = []


def _time_interleaved(cfg: BenchConfig, case: str, engines: list[_Engine]) -> dict:
    """Check every engine's answer (untimed, on its warm-up call), then time them in interleaved
    rounds with every output kept alive until the last round; returns the keeper's info."""
    warmup = max(cfg.warmup, 1)
    keep = OutputKeeper(warmup + cfg.runs, fraction=cfg.keep_fraction)
    for e in engines:
        cfg.say(f"{case}: {e.engine}/{e.variant}: checking")
        for w in range(warmup):
            res = e.fn()
            if w == 0:
                e.verify(res)
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


def _case(cfg: BenchConfig, case: str, rows: int, target: Optional[float]) -> dict:
    import gpuframe

    cfg.say(f"{case}: {format_rows(rows)} rows, preparing")
    source, keys = make_table(case, rows)
    table = gpuframe.from_arrow(source).to(cfg.device)

    def ours() -> Any:
        return gpuframe.sort(table, keys)

    out = ours()
    ours_arrow = out.to("cpu").to_arrow()
    del out
    check = _Check(ours_arrow, keys)
    engines = [_Engine("gpuframe", "sort", ours, lambda r: None, "reference")]

    if "polars" in cfg.peers:
        import polars as pl

        df = pl.from_arrow(source)
        engines.append(_Engine("polars", "sort", lambda: df.sort(keys),
                               lambda r: check.keys_and_sums("polars", r.to_arrow()), "keys exactly, payload sums"))
        engines.append(_Engine("polars", "sort(maintain_order=True)", lambda: df.sort(keys, maintain_order=True),
                               lambda r: check.exact("polars", r.to_arrow()), "exact (stable)"))
        engines.append(_Engine("polars", "lazy streaming", lambda: df.lazy().sort(keys).collect(engine="streaming"),
                               lambda r: check.keys_and_sums("polars", r.to_arrow()), "keys exactly, payload sums"))
    con = None
    if "duckdb" in cfg.peers:
        import duckdb

        con = duckdb.connect()
        con.register("src", source)
        con.execute(f"SET threads TO {max(cfg.workers, 1)}")
        order = ", ".join(f'"{k}"' for k in keys)
        query = f"SELECT * FROM src ORDER BY {order}"
        engines.append(_Engine("duckdb", "ORDER BY", lambda: con.sql(query).to_arrow_table(),
                               lambda r: check.keys_and_sums("duckdb", r), "keys exactly, payload sums"))
    if "pyarrow" in cfg.peers:
        engines.append(_Engine("pyarrow", "sort_by", lambda: source.sort_by([(k, "ascending") for k in keys]),
                               lambda r: check.exact("pyarrow", r), "exact (stable)"))
    if "pandas" in cfg.peers:
        pdf = source.to_pandas()
        engines.append(_Engine(
            "pandas", "sort_values(stable)", lambda: pdf.sort_values(keys, kind="stable"),
            lambda r: check.exact("pandas", pa.Table.from_pandas(r, preserve_index=False, schema=source.schema)),
            "exact (stable)"))

    kept = _time_interleaved(cfg, case, engines)
    if con is not None:
        con.close()
    results = [summarize(e.engine, e.times, rows, e.variant, check=e.how,
                         **({"device": cfg.device} if e.engine == "gpuframe" else {})) for e in engines]
    polars = [r for r in results if r["engine"] == "polars"]
    mine = results[0]["median_s"]
    vs_polars = min(r["median_s"] for r in polars) / mine if polars else None
    return make_record(
        BENCHMARK, case,
        {"rows": rows, "keys": keys, "columns": source.column_names,
         "types": [str(t) for t in source.schema.types], "device": cfg.device, "runs": cfg.runs,
         "warmup": cfg.warmup, "timing": "interleaved rounds, order rotated per round"},
        results, checked=True, target_ratio=target, speedup_vs_polars=vs_polars,
        target_vs_polars_met=None if (vs_polars is None or target is None) else vs_polars >= target,
        peer_checks={f"{e.engine}/{e.variant}": e.how for e in engines[1:]}, notes=NOTES, **kept,
    )


def run(cfg: BenchConfig) -> list[dict]:
    """Records for the integer cases (``cfg.rows`` rows) and the string cases (a tenth)."""
    # the target is stated for 100M rows (10M strings) on the CPU; smaller sizes have none
    target = TARGET_VS_POLARS if (cfg.device == "cpu" and cfg.rows >= SIZES["full"]) else None
    wanted = cfg.cases or list(CASES)
    unknown = [c for c in wanted if c not in CASES]
    if unknown:
        raise ValueError(f"sort cases must be among {list(CASES)}, got {unknown}")
    records = []
    for case in wanted:
        rows = cfg.rows if case.startswith("int") else max(cfg.rows // 10, 1000)
        records.append(_case(cfg, case, rows, target))
        gc.collect()
    return records


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = arg_parser("gpuframe.sort against Polars (eager and streaming), DuckDB, pyarrow and pandas.")
    p.add_argument("--cases", default=None,
                   help=f"comma-separated cases (default: all of {', '.join(CASES)})")
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    cfg.cases = None if args.cases is None else _parse_cases(args.cases)
    doc = write_results(run(cfg), cfg.out)
    for rec in doc["records"]:
        line = ", ".join(f"{r['engine']}/{r['variant']} {r['median_s']:.3f} s" for r in rec["results"])
        print(f"{rec['case']} ({format_rows(rec['params']['rows'])} rows): {line}; "
              f"x{rec['speedup_vs_polars'] or float('nan'):.2f} vs polars", file=sys.stderr)


def _parse_cases(text: str) -> list[str]:
    """``"int64,string"`` -> ``["int64", "string"]``; the names themselves may hold commas
    (``"int64,int32"``), so the longest known name is matched first."""
    out: list[str] = []
    rest = text.strip()
    while rest:
        for name in sorted(CASES, key=len, reverse=True):
            if rest == name or rest.startswith(name + ","):
                out.append(name)
                rest = rest[len(name):].lstrip(",")
                break
        else:
            raise ValueError(f"--cases: unknown case at {rest!r}; cases: {list(CASES)}")
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    main()
