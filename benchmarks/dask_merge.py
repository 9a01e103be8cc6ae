"""Distributed merge: ``gpuframe.dask.merge`` against Dask's merge with its p2p and tasks shuffles.

Two Dask DataFrames of ``cfg.rows`` rows each and two int64 columns, generated on the workers and
persisted before anything is timed: ``left`` (``key`` drawn from ``[0, rows)``, duplicates,
``a``) and ``right`` (every key of ``[0, rows)`` once, ``b``), so the inner join on ``key`` has
exactly ``rows`` rows. On ``cfg.workers`` worker processes (UCX protocol when ucxx is installed;
on ``--device cuda`` one worker per GPU and cuDF partitions, see :mod:`benchmarks.shuffle`).

Each engine is timed as persist-and-wait of the joined DataFrame (gpuframe's merge returns it
persisted), median of ``cfg.runs`` after ``cfg.warmup``; every answer is checked against
gpuframe's before any time is kept (row count and order-free checksums of every column and of the
rows). Peers: ``dd.merge(..., shuffle_method="p2p")`` with the p2p store on disk (Dask's default)
and in memory, and ``shuffle_method="tasks"``. Target: at least 3x faster than p2p (its better
variant). gpuframe's time is split into partitioning, exchange and local join (the slowest
worker's, median over runs).

``python -m gpuframe.benchmarks.dask_merge --rows 20M --workers 2 --runs 3 --out merge.json``
"""
from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

try:  # installed as gpuframe.benchmarks, or run as a script from benchmarks/
    from .common import BenchConfig, arg_parser, config_from_args, format_rows, make_record, summarize, write_results
    from . import shuffle as shuffle_mod
    from .shuffle import (PARTITION_ROWS, _protocol, add_cluster_args, apply_cluster_args, bench_cluster,
                          dask_variant_results, fingerprint, make_frame, release, split_summary, timed)
except ImportError:  # pragma: no cover - script mode
    from common import (BenchConfig, arg_parser, config_from_args, format_rows,  # type: ignore[no-redef]
                        make_record, summarize, write_results)
    import shuffle as shuffle_mod  # type: ignore[no-redef]
    from shuffle import (PARTITION_ROWS, _protocol, add_cluster_args,  # type: ignore[no-redef]
                         apply_cluster_args, bench_cluster, dask_variant_results, fingerprint, make_frame,
                         release, split_summary, timed)

BENCHMARK = "dask_merge"
TARGET_VS_P2P = 3.0


def run(cfg: BenchConfig) -> list[dict]:
    import dask.dataframe as dd

    import gpuframe.dask as gdask

    with bench_cluster(cfg) as client:
        workers = len(client.nthreads())
        cfg.say(f"dask_merge: {workers} workers, generating 2 x {format_rows(cfg.rows)} rows")
        left = make_frame(client, cfg.rows, value="a", seed=2, key_range=cfg.rows, unique=False, device=cfg.device)
        right = make_frame(client, cfg.rows, value="b", seed=3, key_range=cfg.rows, unique=True, device=cfg.device)
        stats_runs: list[dict] = []

        def ours() -> Any:
            st: dict = {}
            out = gdask.merge(left, right, on="key", client=client, stats=st)
            stats_runs.append(st)
            return out

        cfg.say("dask_merge: gpuframe")
        times, result = timed(client, ours, cfg.runs, cfg.warmup)
        expect = fingerprint(result)
        if expect["rows"] != cfg.rows:
            raise AssertionError(f"gpuframe's merge has {expect['rows']} rows, the data makes {cfg.rows}")
        split = split_summary(stats_runs[cfg.warmup:])
        results = [summarize("gpuframe", times, cfg.rows, "dask.merge", split=split)]
        box = [result]
        del result
        release(client, box)
        results += dask_variant_results(cfg, client, "dask_merge",
                                        lambda m: dd.merge(left, right, on="key", shuffle_method=m), expect)
        params = {"rows": cfg.rows, "right_rows": cfg.rows, "columns": 2, "workers": workers,
                  "device": cfg.device, "protocol": _protocol(), "ucx_progress": shuffle_mod.UCX_PROGRESS,
                  "partition_rows": PARTITION_ROWS}
        p2p = [r for r in results if r["engine"] == "dask" and r["variant"].startswith("p2p")]
        best_p2p = min(p2p, key=lambda r: r["median_s"]) if p2p else None
        vs_p2p = best_p2p["median_s"] / results[0]["median_s"] if best_p2p else None
        record = make_record(BENCHMARK, "int64x2", params, results, checked=True, split=split,
                             speedup_vs_p2p=vs_p2p, target_vs_p2p=TARGET_VS_P2P,
                             target_vs_p2p_met=None if vs_p2p is None else vs_p2p >= TARGET_VS_P2P)
    return [record]


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = arg_parser("gpuframe.dask.merge against Dask's merge (p2p and tasks shuffles).", default_rows="small")
    add_cluster_args(p)
    args = p.parse_args(argv)
    apply_cluster_args(args)
    cfg = config_from_args(args)
    doc = write_results(run(cfg), cfg.out)
    for rec in doc["records"]:
        line = ", ".join(f"{r['engine']}/{r['variant']} {r['median_s']:.3f} s" for r in rec["results"])
        ratio = rec["speedup_vs_p2p"]
        print(f"{rec['case']} ({format_rows(rec['params']['rows'])} rows, {rec['params']['workers']} workers): {line}; "
              f"x{ratio if ratio is not None else float('nan'):.2f} vs p2p (target x{TARGET_VS_P2P:g}); "
              f"split {rec['split']}", file=sys.stderr)


if __name__ == "__main__":
    main()
