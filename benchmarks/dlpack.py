"""Hand-off to PyTorch: a gpuframe Table -> torch tensors through DLPack, against the usual paths.

gpuframe's ``Table.to_torch()`` gives one tensor per column that shares the table's memory (no
copy), so its time should not grow with the number of rows. The peers, measured on the same data
in the same process:

* ``pandas/to_numpy``: ``torch.from_numpy(df.to_numpy())``, the common idiom (a copy into one
  float64 matrix when the column types differ, as they do here);
* ``pyarrow/to_numpy``: ``torch.from_numpy(column.to_numpy())`` per column (zero-copy on the CPU
  for null-free primitive columns, so on the CPU this is the fair "no copy" baseline);
* ``polars/to_torch``: ``DataFrame.to_torch(return_type="dict")``;
* ``duckdb/torch``: ``con.sql("SELECT * FROM t").torch()``.

With ``--device cuda`` the gpuframe table lives on the GPU and every peer's tensors are moved
there (``.to("cuda")``), as a training loop would need. Every output is compared with the source
data before any time is kept; each result records whether its tensors share the source memory
(``zero_copy``).
"""
from __future__ import annotations

import sys
import warnings
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa

try:  # installed as gpuframe.benchmarks, or run as a script from benchmarks/
    from .common import (BenchConfig, ResultMismatch, arg_parser, config_from_args, format_rows, make_record,
                         summarize, time_runs, write_results)
except ImportError:  # pragma: no cover - script mode
    from common import (BenchConfig, ResultMismatch, arg_parser, config_from_args,  # type: ignore[no-redef]
                        format_rows, make_record, summarize, time_runs, write_results)

BENCHMARK = "dlpack"
# A typical feature table: ids, a code, two measurements (mixed types, as real data has).
SCHEMA = pa.schema([("user_id", pa.int64()), ("category", pa.int32()), ("dwell_s", pa.float32()),
                    ("price", pa.float64())])
# On a GPU every peer pays a host->device copy that gpuframe does not: ask for 10x at the main size.
CUDA_TARGET = 10.0


def make_table(rows: int, seed: int = 0) -> pa.Table:
    """``rows`` rows of :data:`SCHEMA` (no nulls: DLPack has no validity mask)."""
    rng = np.random.default_rng(seed)
    return pa.table({
        "user_id": rng.integers(0, 2**40, rows, dtype=np.int64),
        "category": rng.integers(0, 500, rows, dtype=np.int32),
        "dwell_s": rng.lognormal(2.0, 1.0, rows).astype(np.float32),
        "price": np.round(rng.gamma(2.0, 20.0, rows), 2),
    }, schema=SCHEMA)


def sizes_for(rows: int) -> list[int]:
    """Three sizes, 1/100, 1/10 and all of ``rows``, to show whether time grows with size."""
    return sorted({max(rows // 100, 100), max(rows // 10, 100), rows})


def _host(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy()


def _check_columns(engine: str, out: dict, source: pa.Table) -> None:
    if list(out) != source.column_names:
        raise ResultMismatch(f"{engine}: columns {list(out)} differ from {source.column_names}")
    for name in source.column_names:
        want = source.column(name).to_numpy()
        got = _host(out[name])
        if got.dtype != want.dtype or not np.array_equal(got, want):
            raise ResultMismatch(f"{engine}: column {name!r} differs from the source "
                                 f"(dtype {got.dtype} vs {want.dtype})")


def _check_matrix(engine: str, out: Any, source: pa.Table) -> None:
    got = _host(out)
    if got.shape != (source.num_rows, source.num_columns):
        raise ResultMismatch(f"{engine}: shape {got.shape}, expected {(source.num_rows, source.num_columns)}")
    for j, name in enumerate(source.column_names):
        want = source.column(name).to_numpy().astype(got.dtype)
        if not np.array_equal(got[:, j], want):
            raise ResultMismatch(f"{engine}: column {j} ({name!r}) differs from the source")


def _sync(device: str) -> Callable[[], None]:
    if device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


def _arrow_ptrs(tbl: pa.Table) -> dict[str, int]:
    ptrs = {}
    for name in tbl.column_names:
        chunk = tbl.column(name).chunk(0)
        ptrs[name] = chunk.buffers()[1].address + chunk.offset * chunk.type.byte_width
    return ptrs


def run(cfg: BenchConfig) -> list[dict]:
    """One record per size in :func:`sizes_for` (``cfg.rows``), gpuframe and each requested peer."""
    try:
        import torch
    except ImportError:
        raise ImportError("the dlpack benchmark needs PyTorch: pip install 'gpuframe[torch]'") from None
    import gpuframe
    from gpuframe.core.memory import data_ptr

    dev = cfg.device
    if dev == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda needs a CUDA build of PyTorch (torch.cuda.is_available() is False)")
    sync = _sync(dev)
    records = []
    for n in sizes_for(cfg.rows):
        case = f"{format_rows(n)} rows x {len(SCHEMA)} columns"
        cfg.say(f"{case}: preparing")
        source = make_table(n)
        table = gpuframe.from_arrow(source, device=dev)
        engines: list[tuple[str, str, Callable[[], Any], Callable[[Any], None], Callable[[Any], Optional[bool]]]] = []

        col_ptrs = {name: data_ptr(table[name].values()) for name in table.column_names}

        def ours() -> dict:
            out = table.to_torch()
            sync()
            return out

        engines.append(("gpuframe", "to_torch", ours, lambda o: _check_columns("gpuframe", o, source),
                        lambda o: all(o[k].data_ptr() == col_ptrs[k] for k in o)))
        if "pandas" in cfg.peers:
            df = source.to_pandas()

            def pandas_path() -> Any:
                out = torch.from_numpy(df.to_numpy())
                out = out.to(dev) if dev == "cuda" else out
                sync()
                return out

            engines.append(("pandas", "to_numpy", pandas_path, lambda o: _check_matrix("pandas", o, source),
                            lambda o: False if dev == "cuda" else any(
                                np.may_share_memory(o.numpy(), df[c].to_numpy()) for c in df.columns)))
        if "pyarrow" in cfg.peers:
            src_ptrs = _arrow_ptrs(source)

            def pyarrow_path() -> dict:
                with warnings.catch_warnings():
                    # read-only Arrow memory: torch warns that writes would be undefined behaviour
                    warnings.simplefilter("ignore", UserWarning)
                    out = {name: torch.from_numpy(source.column(name).to_numpy()) for name in source.column_names}
                if dev == "cuda":
                    out = {k: v.to(dev) for k, v in out.items()}
                sync()
                return out

            engines.append(("pyarrow", "to_numpy", pyarrow_path, lambda o: _check_columns("pyarrow", o, source),
                            lambda o: all(o[k].data_ptr() == src_ptrs[k] for k in o)))
        if "polars" in cfg.peers:
            import polars as pl

            pdf = pl.from_arrow(source)

            def polars_path() -> dict:
                out = pdf.to_torch(return_type="dict")
                if dev == "cuda":
                    out = {k: v.to(dev) for k, v in out.items()}
                sync()
                return out

            engines.append(("polars", "to_torch", polars_path, lambda o: _check_columns("polars", o, source),
                            lambda o: None))
        if "duckdb" in cfg.peers:
            import duckdb

            con = duckdb.connect()
            con.register("t", source)

            def duckdb_path() -> dict:
                out = con.sql("SELECT * FROM t").torch()
                if dev == "cuda":
                    out = {k: v.to(dev) for k, v in out.items()}
                sync()
                return out

            engines.append(("duckdb", "torch", duckdb_path, lambda o: _check_columns("duckdb", o, source),
                            lambda o: False))

        results = []
        for engine, variant, fn, check, zero_copy in engines:
            cfg.say(f"{case}: {engine}")
            times, out = time_runs(fn, cfg.runs, cfg.warmup)
            check(out)
            results.append(summarize(engine, times, n, variant, zero_copy=zero_copy(out)))
            del out
        records.append(make_record(
            BENCHMARK, case, {"rows": n, "columns": len(SCHEMA), "bytes": source.nbytes, "device": dev},
            results, checked=True, target_ratio=CUDA_TARGET if (dev == "cuda" and n == cfg.rows) else None))
    return records


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = arg_parser("gpuframe Table -> PyTorch through DLPack, against pandas/pyarrow/polars/duckdb.").parse_args(argv)
    cfg = config_from_args(args)
    doc = write_results(run(cfg), cfg.out)
    for rec in doc["records"]:
        line = ", ".join(f"{r['engine']}/{r['variant']} {r['median_s'] * 1e3:.3f} ms"
                         f"{' (zero-copy)' if r.get('zero_copy') else ''}" for r in rec["results"])
        print(f"{rec['case']}: {line}", file=sys.stderr)


if __name__ == "__main__":
    main()
