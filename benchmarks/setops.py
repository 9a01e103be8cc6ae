"""Set operations: gpuframe ``unique``/``union``/``intersect``/``difference`` against DuckDB and Polars.

Data (two tables ``a`` and ``b`` of the same columns):

* ``int``: two int64 columns ``k1``, ``k2``; ``--rows`` / 10 rows a side (10M x 10M at
  ``--rows full``, 1M x 1M at ``moderate``, 2k at ``smoke``). Each side draws its rows uniformly
  (with replacement) from 0.8 x its row count distinct row values, ``b``'s value range shifted by
  half of ``a``'s: about half of each side's distinct rows are in the other side, and duplicates
  are present (~70% of a side's rows are distinct). A row value ``i`` is ``k1`` = ``i // 4``
  spread over the int64 range, ``k2`` = ``i % 4`` (times a constant): ``k1`` alone has ~4x fewer
  distinct values.
* ``string``: one string column ``s`` (``"key-"`` + 12 digits, 16 bytes, from ``i // 4``) and one
  int64 ``i`` (``i % 4``); ``--rows`` / 20 rows a side (5M x 5M at full).

Cases ``<data>/<op>`` (``--cases int/unique,string/union``): ``unique`` (distinct rows of ``a``,
all columns), ``unique_subset`` (one row of ``a`` per ``k1`` / ``s``, any of them), ``union``
(distinct rows of both), ``intersect`` (distinct rows of ``a`` in ``b``), ``difference``
(distinct rows of ``a`` not in ``b``).

Engines: gpuframe on tables made once with ``gpuframe.from_arrow`` (not timed): ``unique(a)``,
``unique(a, subset)``, ``union(a, b)``, ``intersect(a, b)``, ``difference(a, b)``; DuckDB SQL over
the registered Arrow tables (``SELECT DISTINCT``, ``SELECT DISTINCT ON (key)``, ``UNION``,
``INTERSECT``, ``EXCEPT``: set semantics), ``SET threads`` to ``--workers``; Polars eager and lazy
(``collect(engine="streaming")``): ``unique()``, ``unique(subset, keep="any")``,
``concat([a, b]).unique()``, ``a.join(b, on=all, how="semi").unique()``, the same with
``how="anti"``. Other ``--peers`` names are ignored.

Answers are checked against gpuframe's as multisets of rows: same row count, and the rows equal
once every answer is sorted by all its columns (``unique_subset``: the key column's values equal
as a multiset, every row a row of ``a``). Target (issue 11, CPU): >= 2x faster than the best
peer, at ``--rows moderate`` and above. Outputs kept alive, rounds interleaved, and gpuframe's
peak RSS per case as in ``benchmarks/groupby.py``; ``--device cuda`` as there (no target).
"""
from __future__ import annotations

import gc
import sys
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa

try:  # installed as gpuframe.benchmarks, or run as a script from benchmarks/
    from .common import (SIZES, BenchConfig, ResultMismatch, arg_parser, config_from_args, format_rows,
                         make_record, peer_available, summarize, write_results)
    from .groupby import Engine, _loadavg, code_version, _threads, peak_rss_of, time_interleaved, to_arrow
except ImportError:  # pragma: no cover - script mode
    from common import (SIZES, BenchConfig, ResultMismatch, arg_parser,  # type: ignore[no-redef]
                        config_from_args, format_rows, make_record, peer_available, summarize, write_results)
    from groupby import Engine, _loadavg, code_version, _threads, peak_rss_of, time_interleaved, to_arrow  # type: ignore

BENCHMARK = "setops"
TARGET = 2.0
PEERS = ("duckdb", "polars")
DATA = ("int", "string")
OPS = ("unique", "unique_subset", "union", "intersect", "difference")
CASES = tuple(f"{d}/{op}" for d in DATA for op in OPS)
SUBSET = {"int": "k1", "string": "s"}


# --------------------------------------------------------------------------- data
def _values(rng: np.random.Generator, n: int, lo: int) -> np.ndarray:
    """``n`` row values drawn uniformly from ``[lo, lo + 0.8 n)``."""
    span = max(1, int(n * 0.8))
    return rng.integers(lo, lo + span, n, dtype=np.int64)


def _int_table(ids: np.ndarray) -> pa.Table:
    k1 = (ids // 4) * np.int64(0x9E3779B1) - np.int64(2**62)
    k2 = (ids % 4) * np.int64(1_000_003) + np.int64(17)
    return pa.table({"k1": k1, "k2": k2})


def _string_table(ids: np.ndarray) -> pa.Table:
    """``s``: ``"key-"`` + the 12-digit ``ids // 4`` (16 bytes), built straight into Arrow buffers."""
    n = len(ids)
    q = ids // 4
    digits = np.empty((n, 12), dtype=np.uint8)
    for j in range(11, -1, -1):
        digits[:, j] = (q % 10).astype(np.uint8) + ord("0")
        q = q // 10
    chars = np.empty((n, 16), dtype=np.uint8)
    chars[:, :4] = np.frombuffer(b"key-", dtype=np.uint8)
    chars[:, 4:] = digits
    offsets = np.arange(0, 16 * (n + 1), 16, dtype=np.int32)
    s = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.reshape(-1)))
    return pa.table({"s": s, "i": ids % 4})


def make_pair(data: str, n: int, seed: int = 5) -> tuple[pa.Table, pa.Table]:
    """``(a, b)`` of ``n`` rows each (see the module docstring)."""
    rng = np.random.default_rng(seed)
    span = max(1, int(n * 0.8))
    ia = _values(rng, n, 0)
    ib = _values(rng, n, span // 2)
    make = _int_table if data == "int" else _string_table
    return make(ia), make(ib)


def rows_for(cfg: BenchConfig, data: str) -> int:
    """Rows a side: ``--rows`` / 10 for int64 rows, / 20 for string rows (at least 1000)."""
    return max(cfg.rows // (10 if data == "int" else 20), 1000)


# --------------------------------------------------------------------------- answers
def _sorted(t: pa.Table) -> pa.Table:
    cols = {}
    for f in t.schema:
        c = t.column(f.name)
        if pa.types.is_string(f.type) or pa.types.is_string_view(f.type):
            c = c.cast(pa.large_string())
        cols[f.name] = c
    t = pa.table(cols)
    try:
        import polars as pl

        return pl.from_arrow(t).sort(t.column_names).to_arrow().cast(t.schema)
    except ImportError:  # pragma: no cover
        return t.sort_by([(c, "ascending") for c in t.column_names])


class Check:
    """gpuframe's answer and the multiset comparison a peer's answer must pass."""

    def __init__(self, ours: pa.Table, subset: Optional[str], source: pa.Table) -> None:
        self.columns = ours.column_names
        self.subset = subset
        self.rows = ours.num_rows
        self.source = source
        if subset is None:
            self.want = _sorted(ours)
        else:
            self.want = _sorted(ours.select([subset]))
            self._in_source("gpuframe", ours)

    def _in_source(self, engine: str, got: pa.Table) -> None:
        import polars as pl

        g = pl.from_arrow(got.select(self.columns))
        src = pl.from_arrow(self.source.select(self.columns))
        n = g.join(src.unique(), on=self.columns, how="semi").height
        if n != got.num_rows:
            raise ResultMismatch(f"{engine}: {got.num_rows - n} of its rows are not rows of the input")

    def __call__(self, engine: str, got: pa.Table) -> None:
        if got.num_rows != self.rows:
            raise ResultMismatch(f"{engine}: {got.num_rows} rows, gpuframe has {self.rows}")
        got = got.select(self.columns)
        if self.subset is None:
            g = _sorted(got)
        else:
            g = _sorted(got.select([self.subset]))
            self._in_source(engine, got)
        if not g.equals(self.want):
            raise ResultMismatch(f"{engine}: rows differ from gpuframe's (as multisets)")


# --------------------------------------------------------------------------- engines
def engines_for(op: str, data: str, a: pa.Table, b: pa.Table, ga: Any, gb: Any, con: Any, pla: Any,
                plb: Any) -> list[Engine]:
    import gpuframe

    key = SUBSET[data]
    cols = a.column_names
    ours = {
        "unique": lambda: gpuframe.unique(ga),
        "unique_subset": lambda: gpuframe.unique(ga, subset=[key]),
        "union": lambda: gpuframe.union(ga, gb),
        "intersect": lambda: gpuframe.intersect(ga, gb),
        "difference": lambda: gpuframe.difference(ga, gb),
    }[op]
    out = [Engine("gpuframe", op, ours)]
    if con is not None:
        q = duckdb_sql(op, key)
        variant = {"unique": "SELECT DISTINCT", "unique_subset": "SELECT DISTINCT ON", "union": "UNION",
                   "intersect": "INTERSECT", "difference": "EXCEPT"}[op]
        out.append(Engine("duckdb", variant, lambda: con.sql(q).to_arrow_table()))
    if pla is not None:
        import polars as pl

        def eager() -> Any:
            if op == "unique":
                return pla.unique()
            if op == "unique_subset":
                return pla.unique(subset=[key], keep="any")
            if op == "union":
                return pl.concat([pla, plb]).unique()
            return pla.join(plb, on=cols, how="semi" if op == "intersect" else "anti").unique()

        def lazy() -> Any:
            la, lb = pla.lazy(), plb.lazy()
            if op == "unique":
                plan = la.unique()
            elif op == "unique_subset":
                plan = la.unique(subset=[key], keep="any")
            elif op == "union":
                plan = pl.concat([la, lb]).unique()
            else:
                plan = la.join(lb, on=cols, how="semi" if op == "intersect" else "anti").unique()
            return plan.collect(engine="streaming")

        out.append(Engine("polars", "eager", eager))
        out.append(Engine("polars", "lazy streaming", lazy))
    return out


def duckdb_sql(op: str, key: str) -> str:
    return {
        "unique": "SELECT DISTINCT * FROM a",
        "unique_subset": f"SELECT DISTINCT ON ({key}) * FROM a",
        "union": "SELECT * FROM a UNION SELECT * FROM b",
        "intersect": "SELECT * FROM a INTERSECT SELECT * FROM b",
        "difference": "SELECT * FROM a EXCEPT SELECT * FROM b",
    }[op]


def run_case(cfg: BenchConfig, data: str, op: str, a: pa.Table, b: pa.Table, ga: Any, gb: Any, con: Any,
             pla: Any, plb: Any, target: Optional[float]) -> dict:
    case = f"{data}/{op}"
    engines = engines_for(op, data, a, b, ga, gb, con, pla, plb)
    load_before = _loadavg()
    cfg.say(f"{case}: gpuframe first call (peak RSS)")
    first, rss = peak_rss_of(engines[0].fn)
    rss["peak_minus_before"] = (None if rss["rss_before"] is None or rss["peak_rss"] is None
                                else rss["peak_rss"] - rss["rss_before"])
    subset = SUBSET[data] if op == "unique_subset" else None
    check = Check(first.to("cpu").to_arrow(), subset, a)
    out_rows = first.num_rows

    def verify(e: Engine, res: Any) -> None:
        if e.engine != "gpuframe":
            check(e.label, to_arrow(res))

    kept = time_interleaved(cfg, case, engines, verify, first_result=first)
    del first
    in_rows = a.num_rows + (0 if op.startswith("unique") else b.num_rows)
    results = [summarize(e.engine, e.times, in_rows, e.variant) for e in engines]
    params = {"data": data, "op": op, "rows_a": a.num_rows, "rows_b": b.num_rows, "columns": a.column_names,
              "types": [str(t) for t in a.schema.types], "output_rows": out_rows,
              "subset": [subset] if subset else None, "input_bytes": a.nbytes + b.nbytes,
              "device": cfg.device, "runs": cfg.runs, "warmup": cfg.warmup, "threads": _threads(),
              "timing": "interleaved rounds, order rotated per round", "loadavg_1min": [load_before, _loadavg()]}
    if con is not None:
        params["duckdb_sql"] = duckdb_sql(op, SUBSET[data])
    how = ("row count; key column as a multiset; every row a row of a" if subset else
           "row count; rows as multisets (every answer sorted by all columns)")
    return make_record(BENCHMARK, case, params, results, checked=True, target_ratio=target,
                       gpuframe_peak_rss=rss, code=code_version(), check=how, **kept)


def selected(cfg: BenchConfig) -> list[str]:
    wanted = cfg.cases or list(CASES)
    unknown = [c for c in wanted if c not in CASES]
    if unknown:
        raise ValueError(f"setops cases must be among {list(CASES)}, got {unknown}")
    return [c for c in CASES if c in wanted]


def run(cfg: BenchConfig) -> list[dict]:
    import gpuframe

    names = selected(cfg)
    code_version()
    target = TARGET if (cfg.device == "cpu" and cfg.rows >= SIZES["moderate"]) else None
    ignored = [p for p in cfg.peers if p not in PEERS]
    records = []
    for data in DATA:
        ops = [c.split("/")[1] for c in names if c.startswith(data + "/")]
        if not ops:
            continue
        n = rows_for(cfg, data)
        cfg.say(f"{data}: {format_rows(n)} x {format_rows(n)} rows")
        a, b = make_pair(data, n)
        ga, gb = gpuframe.from_arrow(a).to(cfg.device), gpuframe.from_arrow(b).to(cfg.device)
        con = pla = plb = None
        if "duckdb" in cfg.peers and peer_available("duckdb"):
            import duckdb

            con = duckdb.connect()
            con.execute(f"SET threads TO {max(cfg.workers, 1)}")
            con.register("a", a)
            con.register("b", b)
        if "polars" in cfg.peers and peer_available("polars"):
            import polars as pl

            pla, plb = pl.from_arrow(a), pl.from_arrow(b)
        for op in ops:
            rec = run_case(cfg, data, op, a, b, ga, gb, con, pla, plb, target)
            if ignored:
                rec["notes"] = [f"peers {ignored} are not part of this benchmark: ignored"]
            records.append(rec)
            gc.collect()
        if con is not None:
            con.close()
        del a, b, ga, gb, con, pla, plb
        gc.collect()
    return records


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = arg_parser(__doc__.splitlines()[0], default_rows="small")
    p.add_argument("--cases", default=None, help=f"comma-separated cases (default: all of {','.join(CASES)})")
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    if args.cases:
        cfg.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
        selected(cfg)
    doc = write_results(run(cfg), cfg.out)
    for rec in doc["records"]:
        line = ", ".join(f"{r['engine']}/{r['variant']} {r['median_s']:.3f} s" for r in rec["results"])
        sp = rec.get("speedup_vs_best_peer")
        print(f"{rec['case']} ({format_rows(rec['params']['rows_a'])} rows a side): {line}; "
              f"x{sp if sp is not None else float('nan'):.2f} vs {rec.get('best_peer')}", file=sys.stderr)
    return doc


if __name__ == "__main__":
    main()
