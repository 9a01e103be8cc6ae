"""Distributed groupby-aggregate and sort: ``gpuframe.dask.groupby_agg`` and ``gpuframe.dask.sort``
against Dask's own (``ddf.groupby(...).agg(..., split_out=workers)`` and ``ddf.sort_values``).

One Dask DataFrame of ``cfg.rows`` rows (int64 ``key`` and int64 ``v``), generated on the workers
and persisted before anything is timed, on ``cfg.workers`` worker processes (UCX when ucxx is
installed; see :mod:`benchmarks.shuffle`):

* ``groupby_sum_mean``: sum and mean of ``v`` by ``key`` drawn from :data:`GROUPS` values (1M
  groups). Checked: the groups, the sum of the sums (exact) and of the means (to 1e-9).
* ``sort_int64``: the rows sorted by ``key`` (drawn from ``[0, rows)``). Checked: every partition
  sorted, the partitions in order, and the rows the input's (order-free checksums).

Each engine is timed as persist-and-wait (gpuframe's functions return their result persisted),
median of ``cfg.runs`` after ``cfg.warmup``, the previous result released first. Target (issue
12): at least 3x Dask's own on 2 workers.

``python -m gpuframe.benchmarks.dask_ops --rows 20M --workers 2 --runs 3 --out dask_ops.json``
"""
from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

import numpy as np

try:  # installed as gpuframe.benchmarks, or run as a script from benchmarks/
    from .common import (BenchConfig, ResultMismatch, arg_parser, config_from_args, format_rows, make_record,
                         summarize, write_results)
    from .shuffle import (PARTITION_ROWS, _dask_peers, _protocol, add_cluster_args, apply_cluster_args,
                          bench_cluster, check, dask_protocol, fingerprint, make_frame, release, split_summary,
                          timed_persist, timed_with_stats)
except ImportError:  # pragma: no cover - script mode
    from common import (BenchConfig, ResultMismatch, arg_parser, config_from_args,  # type: ignore[no-redef]
                        format_rows, make_record, summarize, write_results)
    from shuffle import (PARTITION_ROWS, _dask_peers, _protocol, add_cluster_args,  # type: ignore[no-redef]
                         apply_cluster_args, bench_cluster, check, dask_protocol, fingerprint, make_frame,
                         release, split_summary, timed_persist, timed_with_stats)

BENCHMARK = "dask_ops"
GROUPS = 1_000_000
TARGET_VS_DASK = 3.0
CASES = ("groupby_sum_mean", "sort_int64")


# ------------------------------------------------------------------------------ checks
def _group_summary(ddf: Any, key: str, s: str, m: str) -> dict:
    """Order-free figures of a grouped result: groups, distinct keys, the sums' and means' sums."""
    import dask

    n, nkeys, total, means = dask.compute(ddf.shape[0], ddf[key].nunique(), ddf[s].sum(), ddf[m].sum())
    return {"groups": int(n), "keys": int(nkeys), "sum": int(total), "means": float(means)}


def _check_groups(name: str, got: dict, expect: dict) -> None:
    exact = {k: got[k] for k in ("groups", "keys", "sum")}
    if exact != {k: expect[k] for k in exact} or not np.isclose(got["means"], expect["means"], rtol=1e-9):
        raise ResultMismatch(f"{name}: the answer differs from gpuframe's: {got} vs {expect}")


def _partition_bounds(df: Any, key: str) -> Any:
    import pandas as pd

    k = df[key].to_numpy()
    ordered = bool(np.all(k[1:] >= k[:-1])) if len(k) > 1 else True
    return pd.DataFrame({"rows": [len(k)], "first": [k[0] if len(k) else 0], "last": [k[-1] if len(k) else 0],
                         "ordered": [ordered]})


def _check_sorted(name: str, ddf: Any, key: str, expect: dict) -> None:
    """``ddf`` in order by ``key`` (within and across its partitions), holding ``expect``'s rows."""
    import pandas as pd

    meta = pd.DataFrame({"rows": pd.Series([], dtype="int64"), "first": pd.Series([], dtype="int64"),
                         "last": pd.Series([], dtype="int64"), "ordered": pd.Series([], dtype="bool")})
    b = ddf.map_partitions(_partition_bounds, key, meta=meta).compute()
    b = b[b["rows"] > 0]
    if not b["ordered"].all() or not np.all(b["first"].to_numpy()[1:] >= b["last"].to_numpy()[:-1]):
        raise ResultMismatch(f"{name}: the rows are not in order by {key!r}")
    check(name, fingerprint(ddf), expect)


# ------------------------------------------------------------------------------ cases
def _dask_peer(cfg: BenchConfig, client: Any, variant: str, build: Any, verify: Any) -> list[dict]:
    """Dask's own operation ``build()`` timed (persist and wait), its answer ``verify``-ed, then
    released; nothing when the peers leave Dask out."""
    if not _dask_peers(cfg):
        return []
    cfg.say(f"dask_ops: dask {variant}")
    t, res = timed_persist(client, build, cfg.runs, cfg.warmup)
    verify(res)
    box = [res]
    del res
    release(client, box)
    return [summarize("dask", t, cfg.rows, variant)]


def _groupby_case(cfg: BenchConfig, client: Any, workers: int) -> dict:
    import gpuframe.dask as gdask

    cfg.say(f"dask_ops: groupby, {format_rows(cfg.rows)} rows, {GROUPS:,} groups")
    ddf = make_frame(client, cfg.rows, value="v", seed=5, key_range=GROUPS, unique=False, device=cfg.device)
    times, result, runs = timed_with_stats(
        client, lambda st: gdask.groupby_agg(ddf, "key", {"s": ("v", "sum"), "m": ("v", "mean")}, client=client,
                                             stats=st), cfg)
    expect = _group_summary(result, "key", "s", "m")
    results = [summarize("gpuframe", times, cfg.rows, "dask.groupby_agg", split=split_summary(runs))]
    box = [result]
    del result
    release(client, box)
    results += _dask_peer(
        cfg, client, f"groupby.agg(split_out={workers})",
        lambda: ddf.groupby("key").agg(s=("v", "sum"), m=("v", "mean"), split_out=workers).reset_index(),
        lambda res: _check_groups("dask/groupby", _group_summary(res, "key", "s", "m"), expect))
    box = [ddf]
    del ddf
    release(client, box)
    return _record("groupby_sum_mean", cfg, workers, results, groups=GROUPS)


def _sort_case(cfg: BenchConfig, client: Any, workers: int) -> dict:
    import gpuframe.dask as gdask

    cfg.say(f"dask_ops: sort, {format_rows(cfg.rows)} rows")
    ddf = make_frame(client, cfg.rows, value="v", seed=6, key_range=max(cfg.rows, 1), unique=False,
                     device=cfg.device)
    expect = fingerprint(ddf)
    times, result, runs = timed_with_stats(client, lambda st: gdask.sort(ddf, "key", client=client, stats=st), cfg)
    _check_sorted("gpuframe/sort", result, "key", expect)
    results = [summarize("gpuframe", times, cfg.rows, "dask.sort", split=split_summary(runs))]
    box = [result]
    del result
    release(client, box)
    results += _dask_peer(cfg, client, "sort_values", lambda: ddf.sort_values("key"),
                          lambda res: _check_sorted("dask/sort_values", res, "key", expect))
    box = [ddf]
    del ddf
    release(client, box)
    return _record("sort_int64", cfg, workers, results)


def _record(case: str, cfg: BenchConfig, workers: int, results: list[dict], **params: Any) -> dict:
    ours, peers = results[0], [r for r in results if r["engine"] == "dask"]
    vs = peers[0]["median_s"] / ours["median_s"] if peers else None
    return make_record(BENCHMARK, case, {"rows": cfg.rows, "workers": workers, "device": cfg.device,
                                         "protocol": _protocol(), "dask_protocol": dask_protocol(cfg.device),
                                         "partition_rows": PARTITION_ROWS, **params},
                       results, checked=True, speedup_vs_dask=vs, target_vs_dask=TARGET_VS_DASK,
                       target_vs_dask_met=None if vs is None else vs >= TARGET_VS_DASK)


def run(cfg: BenchConfig, cases: Sequence[str] = CASES) -> list[dict]:
    with bench_cluster(cfg) as client:
        workers = len(client.nthreads())
        records = []
        if "groupby_sum_mean" in cases:
            records.append(_groupby_case(cfg, client, workers))
        if "sort_int64" in cases:
            records.append(_sort_case(cfg, client, workers))
    return records


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = arg_parser("gpuframe.dask.groupby_agg and gpuframe.dask.sort against Dask's groupby-agg and sort_values.",
                   default_rows="small")
    add_cluster_args(p)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {list(CASES)}")
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad:
        p.error(f"--cases: unknown {bad}; expected some of {list(CASES)}")
    apply_cluster_args(args)
    cfg = config_from_args(args)
    doc = write_results(run(cfg, cases), cfg.out)
    for rec in doc["records"]:
        line = ", ".join(f"{r['engine']}/{r['variant']} {r['median_s']:.3f} s" for r in rec["results"])
        ratio = rec["speedup_vs_dask"]
        versus = f"x{ratio:.2f} vs Dask" if ratio is not None else "Dask not measured"
        print(f"{rec['case']} ({format_rows(rec['params']['rows'])} rows, {rec['params']['workers']} workers): {line}; "
              f"{versus} (target x{TARGET_VS_DASK:g})", file=sys.stderr)


if __name__ == "__main__":
    main()
