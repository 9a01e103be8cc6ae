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
    from .shuffle import (HOT_SHARE, PARTITION_ROWS, ZIPF_A, _protocol, add_cluster_args, apply_cluster_args,
                          bench_cluster, check, dask_variant_results, fingerprint, make_frame, release,
                          split_summary, timed_with_stats)
except ImportError:  # pragma: no cover - script mode
    from common import (BenchConfig, arg_parser, config_from_args, format_rows,  # type: ignore[no-redef]
                        make_record, summarize, write_results)
    import shuffle as shuffle_mod  # type: ignore[no-redef]
    from shuffle import (HOT_SHARE, PARTITION_ROWS, ZIPF_A, _protocol,  # type: ignore[no-redef]
                         add_cluster_args, apply_cluster_args, bench_cluster, check, dask_variant_results,
                         fingerprint, make_frame, release, split_summary, timed_with_stats)

BENCHMARK = "dask_merge"
TARGET_VS_P2P = 3.0
TARGET_OUTPUT_VS_FAIR = 1.5   # issue 12: no worker holds more than 1.5x its fair share of the output


def _balance(stats_runs: list[dict], rows: int, workers: int) -> float:
    """The largest worker output over the fair share (rows / workers), worst run."""
    fair = rows / workers
    return max(max(w.get("rows_out", 0) for w in st["workers"]) / fair for st in stats_runs)


def run(cfg: BenchConfig, skew: str = "none") -> list[dict]:
    import dask.dataframe as dd

    import gpuframe.dask as gdask

    with bench_cluster(cfg) as client:
        workers = len(client.nthreads())
        cfg.say(f"dask_merge: {workers} workers, generating 2 x {format_rows(cfg.rows)} rows (left keys: {skew})")
        left = make_frame(client, cfg.rows, value="a", seed=2, key_range=cfg.rows, unique=False, device=cfg.device,
                          skew=skew)
        right = make_frame(client, cfg.rows, value="b", seed=3, key_range=cfg.rows, unique=True, device=cfg.device)
        results: list[dict] = []
        expect: Optional[dict] = None
        split: dict = {}
        # with skewed keys, also the plain shuffle (heavy keys not handled apart): the balance the
        # heavy-key path buys, and what it costs; both sides shuffled even when one is a single
        # partition (a small run on one worker), which a merge would otherwise broadcast
        variants = [("dask.merge", {})] + ([("no-heavy-keys", {"heavy_share": None})] if skew != "none" else [])
        for variant, extra in variants:
            cfg.say(f"dask_merge: gpuframe {variant}")
            times, result, timed_runs = timed_with_stats(
                client, lambda st, extra=extra: gdask.merge(left, right, on="key", client=client, stats=st, broadcast=False,
                                                         **extra),
                cfg)
            got = fingerprint(result)
            if got["rows"] != cfg.rows:
                raise AssertionError(f"gpuframe's merge has {got['rows']} rows, the data makes {cfg.rows}")
            if expect is None:
                expect = got
                split = split_summary(timed_runs)
            else:
                check(f"gpuframe/{variant}", got, expect)
            results.append(summarize("gpuframe", times, cfg.rows, variant, split=split_summary(timed_runs),
                                     max_output_vs_fair=round(_balance(timed_runs, cfg.rows, workers), 4),
                                     heavy_keys=max((w.get("heavy_keys", 0) for st in timed_runs
                                                     for w in st["workers"]), default=0)))
            box = [result]
            del result
            release(client, box)
        results += dask_variant_results(cfg, client, "dask_merge",
                                        lambda m: dd.merge(left, right, on="key", shuffle_method=m), expect)
        params = {"rows": cfg.rows, "right_rows": cfg.rows, "columns": 2, "workers": workers,
                  "device": cfg.device, "protocol": _protocol(), "dask_protocol": shuffle_mod.dask_protocol(cfg.device),
                  "ucx_progress": shuffle_mod.UCX_PROGRESS,
                  "partition_rows": PARTITION_ROWS, "left_keys": skew}
        if skew != "none":
            params["left_keys_param"] = ZIPF_A if skew == "zipf" else HOT_SHARE
        p2p = [r for r in results if r["engine"] == "dask" and r["variant"].startswith("p2p")]
        best_p2p = min(p2p, key=lambda r: r["median_s"]) if p2p else None
        vs_p2p = best_p2p["median_s"] / results[0]["median_s"] if best_p2p else None
        case = "int64x2" if skew == "none" else f"int64x2_{skew}"
        balance = results[0]["max_output_vs_fair"]
        record = make_record(BENCHMARK, case, params, results, checked=True, split=split,
                             speedup_vs_p2p=vs_p2p, target_vs_p2p=TARGET_VS_P2P,
                             target_vs_p2p_met=None if vs_p2p is None else vs_p2p >= TARGET_VS_P2P,
                             max_output_vs_fair=balance, target_output_vs_fair=TARGET_OUTPUT_VS_FAIR,
                             target_output_vs_fair_met=balance <= TARGET_OUTPUT_VS_FAIR)
    return [record]


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = arg_parser("gpuframe.dask.merge against Dask's merge (p2p and tasks shuffles).", default_rows="small")
    add_cluster_args(p)
    p.add_argument("--skew", default="none", choices=shuffle_mod.SKEWS,
                   help=f"the left side's keys: uniform (none), Zipf({ZIPF_A}) or one key with "
                        f"{HOT_SHARE * 100:.0f}%% of the rows (hot); the right side's keys are unique")
    args = p.parse_args(argv)
    apply_cluster_args(args)
    cfg = config_from_args(args)
    doc = write_results(run(cfg, args.skew), cfg.out)
    for rec in doc["records"]:
        line = ", ".join(f"{r['engine']}/{r['variant']} {r['median_s']:.3f} s" for r in rec["results"])
        ratio = rec["speedup_vs_p2p"]
        print(f"{rec['case']} ({format_rows(rec['params']['rows'])} rows, {rec['params']['workers']} workers): {line}; "
              f"x{ratio if ratio is not None else float('nan'):.2f} vs p2p (target x{TARGET_VS_P2P:g}); "
              f"largest worker output {rec['max_output_vs_fair']:.2f}x its fair share (target <= "
              f"{TARGET_OUTPUT_VS_FAIR:g}); split {rec['split']}", file=sys.stderr)


if __name__ == "__main__":
    main()
