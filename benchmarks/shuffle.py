"""Distributed shuffle: ``gpuframe.dask.shuffle`` against Dask's own shuffles, and against the wire.

One Dask cluster of ``cfg.workers`` worker processes (UCX protocol when ucxx is installed), one
DataFrame of ``cfg.rows`` rows and two int64 columns (``key``, ``value``), generated on the
workers and persisted before anything is timed. Cases (records):

* ``shuffle``: ``gpuframe.dask.shuffle(ddf, "key")`` (one output partition per worker) against
  ``ddf.shuffle("key", shuffle_method="p2p")`` (on disk, Dask's default, and in memory) and
  ``shuffle_method="tasks"``, each timed as persist-and-wait. Every answer is checked before any
  time is kept: same rows as the input (row count and order-free checksums of every column and
  of the rows). gpuframe's time is split into partitioning, the exchange (its first phase, which
  also absorbs the wait for the slowest worker, and the data transfer), and conversions.
* ``bounded``: the shuffle under a memory budget (``--memory-budget``, default a quarter of the
  data each worker holds, so that it must run in rounds and spill): each worker's peak resident
  memory while the exchange runs (until the operation's task on that worker ends; the inputs
  persisted before; sampled every 2 ms by a thread in the worker), over its resident memory
  just before, against the budget (issue 12's target: within 1.2x); then the peak while the
  output partitions are made (read back from disk) and checked one by one, the rounds, the
  bytes spilled, and the same figures for the one-shot shuffle (``memory_budget=0``) beside it.
* ``wire``: the raw ucxx point-to-point bandwidth between the same worker processes, measured in
  the same run with bare ucxx endpoints (64 MiB messages, one way and both ways at once), and the
  shuffle's throughput per worker (bytes each worker sends to the others / the data-transfer
  phase) as a fraction of it. Target: at least 50% of the two-way figure (in an all-to-all every
  worker sends and receives at the same time).

The cluster: ``LocalCluster`` on a CPU machine; with ``--device cuda``, one worker per GPU
(dask-cuda's ``LocalCUDACluster`` when installed, else one Nanny per GPU with
``CUDA_VISIBLE_DEVICES`` set), and the partitions are cuDF DataFrames (needs cuDF). The same
command that runs 2 workers here runs 8 GPUs there: ``--workers 8 --device cuda``.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import statistics
import sys
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

try:  # installed as gpuframe.benchmarks, or run as a script from benchmarks/
    from .common import (BenchConfig, ResultMismatch, arg_parser, config_from_args, format_rows, make_record,
                         summarize, write_results)
except ImportError:  # pragma: no cover - script mode
    from common import (BenchConfig, ResultMismatch, arg_parser, config_from_args,  # type: ignore[no-redef]
                        format_rows, make_record, summarize, write_results)

BENCHMARK = "shuffle"
TARGET_WIRE_FRACTION = 0.5
TARGET_BUDGET_RATIO = 1.2
PARTITION_ROWS = 2_500_000
MESSAGE_BYTES = 64 * 2**20
DASK_VARIANTS = [("p2p", {"distributed.p2p.storage.disk": True}, "p2p-disk"),
                 ("p2p", {"distributed.p2p.storage.disk": False}, "p2p-memory"),
                 ("tasks", {}, "tasks")]


# ------------------------------------------------------------------------------ cluster
def _protocol() -> str:
    try:
        import distributed_ucxx  # noqa: F401
        import ucxx  # noqa: F401
        return "ucx"
    except ImportError:
        return "tcp"


UCX_PROGRESS = "blocking"  # ucxx progress mode of the benchmark cluster (--ucx-progress); Dask's default
# Dask's own messages (--dask-comm): "auto" is TCP for CPU workers, UCX (when installed) for GPU
# workers. gpuframe's communicators use UCX whenever ucxx imports, whatever Dask uses. Measured on
# the 2-core development VM: an idle distributed-ucxx process (worker, scheduler, client) keeps
# 60-70% of a core busy progressing UCX, in every progress mode ("blocking" included); two
# workers and the client then leave the kernels about a third of the machine (gpuframe's
# groupby and sort and Dask's own ran 2.2-3x slower on a UCX cluster than on a TCP one).
DASK_COMM = "auto"


def dask_protocol(device: str) -> str:
    """The protocol of the benchmark cluster's Dask comms (see :data:`DASK_COMM`)."""
    if DASK_COMM != "auto":
        return DASK_COMM
    return _protocol() if device == "cuda" else "tcp"


@contextlib.contextmanager
def bench_cluster(cfg: BenchConfig) -> Iterator[Any]:
    """A client on ``cfg.workers`` worker processes: CPU workers, or one worker per GPU.

    With UCX, every process of the cluster (this one: client and scheduler; the workers) runs
    ucxx in the progress mode :data:`UCX_PROGRESS` (``UCXPY_PROGRESS_MODE``): Dask's default is
    ``blocking`` (the event loop progresses UCX), ``thread`` gives a progress thread, measured
    about 3x faster for large messages between two workers on a 2-core VM. Every engine of a run
    uses the same cluster.
    """
    from distributed import Client, LocalCluster

    protocol = dask_protocol(cfg.device)
    env = {"UCXPY_PROGRESS_MODE": UCX_PROGRESS} if protocol == "ucx" else {}
    os.environ.update(env)
    if cfg.device == "cuda":
        cluster = _gpu_cluster(cfg.workers, protocol, env)
    else:
        threads = max(1, (os.cpu_count() or 1) // cfg.workers)
        cluster = LocalCluster(n_workers=cfg.workers, threads_per_worker=threads, processes=True,
                               protocol=protocol, dashboard_address=":0", memory_limit=0, env=env)
    try:
        with Client(cluster) as client:
            client.wait_for_workers(cfg.workers, timeout=120)
            yield client
    finally:
        # worker processes that take long to stop (a loaded machine: the CI runs the smoke
        # benchmarks beside the tests, at nice 19) are killed by their nannies after 4 s; a close
        # that still times out comes after the measurements: a warning, the results stand
        try:
            cluster.close(timeout=120)
        except (TimeoutError, asyncio.TimeoutError) as exc:
            print(f"warning: closing the benchmark's Dask cluster timed out ({exc!r}) after "
                  "the measurements", file=sys.stderr)


def _gpu_cluster(workers: int, protocol: str, env: dict) -> Any:
    try:
        import cudf  # noqa: F401
    except Exception as exc:
        raise RuntimeError("--device cuda runs the Dask benchmarks on cuDF partitions: "
                           "pip install 'gpuframe[cudf]' (and dask-cuda for LocalCUDACluster)") from exc
    try:
        from dask_cuda import LocalCUDACluster

        return LocalCUDACluster(n_workers=workers, protocol=protocol, dashboard_address=":0", env=env)
    except ImportError:
        from distributed import Nanny, Scheduler, SpecCluster

        workers_spec = {i: {"cls": Nanny, "options": {"nthreads": 1, "env": {**env, "CUDA_VISIBLE_DEVICES": str(i)},
                                                      "protocol": protocol}} for i in range(workers)}
        return SpecCluster(scheduler={"cls": Scheduler, "options": {"protocol": protocol, "dashboard_address": ":0"}},
                           workers=workers_spec)


# ------------------------------------------------------------------------------ data
def _make_part(spec: tuple) -> Any:
    """One partition: ``rows`` rows of int64 ``key`` and one int64 value column (made on a worker)."""
    import pandas as pd

    seed, rows, key_range, value, unique_base, device = spec[:6]
    skew = spec[6] if len(spec) > 6 else None
    rng = np.random.default_rng(seed)
    if unique_base is not None:  # the unique side of a merge: a permutation block of the key range
        keys = unique_base + rng.permutation(rows).astype(np.int64)
    else:
        keys = skewed_keys(rng, rows, key_range, skew)
    df = pd.DataFrame({"key": keys, value: rng.integers(-2**40, 2**40, rows, dtype=np.int64)})
    if device == "cuda":
        import cudf

        return cudf.from_pandas(df)
    return df


SKEWS = ("none", "zipf", "hot")
ZIPF_A = 1.3      # --skew zipf: Zipf(1.3) keys, the most frequent holding about 25% of the rows
HOT_SHARE = 0.3   # --skew hot: one key holds 30% of the rows, the others are uniform


def skewed_keys(rng: np.random.Generator, rows: int, key_range: int, skew: Optional[str]) -> np.ndarray:
    """``rows`` keys in ``[0, key_range)``: uniform, Zipf(ZIPF_A) ranks scattered over the range by
    an odd multiplier (so the hot keys are not 0, 1, 2 ...), or uniform with one key (the middle
    of the range) taking HOT_SHARE of the rows."""
    if skew in (None, "none"):
        return rng.integers(0, key_range, rows, dtype=np.int64)
    if skew == "zipf":
        ranks = (rng.zipf(ZIPF_A, rows) - 1).astype(np.uint64) % np.uint64(key_range)
        return ((ranks * np.uint64(0x9E3779B1)) % np.uint64(key_range)).astype(np.int64)
    if skew == "hot":
        keys = rng.integers(0, key_range, rows, dtype=np.int64)
        keys[rng.random(rows) < HOT_SHARE] = key_range // 2
        return keys
    raise ValueError(f"skew must be one of {SKEWS}, got {skew!r}")


def make_frame(client: Any, rows: int, *, value: str, seed: int, key_range: int, unique: bool,
               device: str, skew: Optional[str] = None) -> Any:
    """A persisted Dask DataFrame generated on the workers (nothing large goes through the client);
    ``skew`` draws the (non-unique) keys as :func:`skewed_keys` does."""
    import dask.dataframe as dd
    import pandas as pd
    from distributed import wait

    nparts = max(len(client.nthreads()), -(-rows // PARTITION_ROWS))
    bounds = [rows * i // nparts for i in range(nparts + 1)]
    specs = [(seed * 100_003 + i, bounds[i + 1] - bounds[i], key_range, value,
              bounds[i] if unique else None, device, skew) for i in range(nparts)]
    meta = pd.DataFrame({"key": pd.Series([], dtype="int64"), value: pd.Series([], dtype="int64")})
    if device == "cuda":
        import cudf

        meta = cudf.from_pandas(meta)
    ddf = dd.from_map(_make_part, specs, meta=meta, enforce_metadata=False).persist()
    wait(ddf)
    return ddf


# ------------------------------------------------------------------------------ checks
_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9)


def _fingerprint_part(df: Any) -> Any:
    """Order-free checksums of one partition: rows, wrapping sums of each column and of a row mix."""
    import pandas as pd

    if type(df).__module__.startswith("cudf"):
        df = df.to_pandas()
    cols = sorted(df.columns)
    out = {"rows": np.uint64(len(df))}
    mix = np.zeros(len(df), np.uint64)
    for i, c in enumerate(cols):
        v = df[c].to_numpy(dtype=np.int64, na_value=0).view(np.uint64)
        with np.errstate(over="ignore"):
            out[f"sum_{c}"] = v.sum(dtype=np.uint64)
            mix ^= v * (_M1, _M2, _M3)[i % 3] + np.uint64(i)
    with np.errstate(over="ignore"):
        out["rowmix"] = ((mix >> np.uint64(7)) * _M2).sum(dtype=np.uint64)
    return pd.DataFrame({k: [np.uint64(v)] for k, v in out.items()})


def fingerprint(ddf: Any) -> dict:
    """Checksums of a whole (persisted) Dask DataFrame, computed where the partitions live."""
    import pandas as pd

    meta = pd.DataFrame({k: pd.Series([], dtype="uint64")
                         for k in ["rows"] + [f"sum_{c}" for c in sorted(ddf.columns)] + ["rowmix"]})
    parts = ddf.map_partitions(_fingerprint_part, meta=meta).compute()
    with np.errstate(over="ignore"):
        return {k: int(parts[k].to_numpy(np.uint64).sum(dtype=np.uint64)) for k in parts.columns}


def check(name: str, got: dict, expect: dict) -> None:
    if got != expect:
        diff = {k: (got.get(k), expect.get(k)) for k in set(got) | set(expect) if got.get(k) != expect.get(k)}
        raise ResultMismatch(f"{name}: the answer differs from gpuframe's: {diff}")


def release(client: Any, box: list) -> None:
    """Drop the result held in ``box`` (its only reference) and wait until the workers freed it."""
    from distributed import futures_of

    if not box:
        return
    keys = {f.key for f in futures_of(box[0])}
    box.clear()
    deadline = time.monotonic() + 30
    while keys and time.monotonic() < deadline:
        held = client.run_on_scheduler(lambda dask_scheduler, keys=keys: sum(k in dask_scheduler.tasks for k in keys))
        if not held:
            break
        time.sleep(0.05)


def timed(client: Any, fn: Any, runs: int, warmup: int) -> tuple[list[float], Any]:
    """Times of ``fn()`` (which returns a persisted, computed result), median-able; the last result.

    Like ``common.time_runs`` (warm-up calls, one full collection, the collector off while a
    call is timed), except that the previous result is released, untimed, before each call, so
    that results do not pile up in the workers' memory and no engine pays for freeing another's.
    """
    box: list = []
    for _ in range(warmup):
        box.append(fn())
        release(client, box)
    times = []
    for _ in range(runs):
        release(client, box)
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
        box.append(result)
        del result
    return times, box.pop()


def timed_persist(client: Any, build: Any, runs: int, warmup: int) -> tuple[list[float], Any]:
    """:func:`timed` of ``build().persist()`` and a wait for it."""
    from distributed import wait

    def once() -> Any:
        out = build().persist()
        wait(out)
        return out

    return timed(client, once, runs, warmup)


def timed_with_stats(client: Any, call: Any, cfg: BenchConfig) -> tuple[list[float], Any, list[dict]]:
    """:func:`timed` of ``call(stats).persist()`` (a lazy ``gpuframe.dask`` operation filling the
    dict ``stats`` when it runs),
    ``cfg.runs`` runs after ``cfg.warmup``: the times, the last result and the timed runs' stats."""
    stats_runs: list[dict] = []

    from distributed import wait

    from gpuframe.dask import wait_stats

    def once() -> Any:
        st: dict = {}
        out = call(st).persist()          # lazy: persisted as a user would, and waited for
        wait(out)
        stats_runs.append(wait_stats(st))
        return out

    times, result = timed(client, once, cfg.runs, cfg.warmup)
    return times, result, stats_runs[cfg.warmup:]


def split_summary(stats_runs: list[dict]) -> dict:
    """Medians over runs of gpuframe's per-phase times (the slowest worker's each)."""
    keys = ["partition_s", "sizes_s", "data_s", "exchange_s", "merge_s", "local_s", "skew_s", "convert_s"]
    return {k: statistics.median(s.get(k, 0.0) for s in stats_runs) for k in keys if any(k in s for s in stats_runs)}


# ------------------------------------------------------------------------------ memory under a budget
def _rss_start(dask_worker: Any = None) -> int:
    """Free what can be freed, then sample this process's resident memory every 2 ms (a thread)."""
    import ctypes
    import threading

    import psutil

    from gpuframe.core.hostalloc import get_host_allocator

    gc.collect()
    get_host_allocator().release()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    proc = psutil.Process()
    state = {"base": proc.memory_info().rss, "timeline": [], "stop": False}

    def sample() -> None:
        while not state["stop"]:
            state["timeline"].append((time.time(), proc.memory_info().rss))
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    dask_worker.gpuframe_rss_sampler = (state, thread)   # on the worker: this module may be __main__
    return state["base"]


def _rss_stop(dask_worker: Any = None) -> tuple[int, list]:
    state, thread = dask_worker.gpuframe_rss_sampler
    del dask_worker.gpuframe_rss_sampler
    state["stop"] = True
    thread.join()
    return state["base"], state["timeline"]


def _peaks(base: int, timeline: list, ended_at: float) -> tuple[int, int]:
    """The most resident memory over ``base`` until the operation's task ended (the exchange),
    and after it (the output partitions made and checked one by one)."""
    during = max((rss for t, rss in timeline if t <= ended_at), default=base)
    after = max((rss for t, rss in timeline if t > ended_at), default=base)
    return max(during - base, 0), max(after - base, 0)


def bounded_memory(cfg: BenchConfig, client: Any, ddf: Any, expect: dict, budget: int) -> dict:
    """The ``bounded`` case: time and per-worker peak memory of the shuffle under ``budget`` and of
    the one-shot shuffle, each computed through the order-free checksums partition by partition."""
    import gpuframe.dask as gdask

    out: dict = {}
    for label, setting in (("bounded", budget), ("one-shot", 0)):
        times, during, after, stats_runs = [], [], [], []
        for i in range(cfg.warmup + cfg.runs):
            st: dict = {}
            client.run(_rss_start)
            t0 = time.perf_counter()
            got = fingerprint(gdask.shuffle(ddf, "key", client=client, memory_budget=setting, stats=st))
            elapsed = time.perf_counter() - t0
            rss = client.run(_rss_stop)
            check(f"gpuframe ({label})", got, expect)
            gdask.wait_stats(st)
            if i >= cfg.warmup:
                times.append(elapsed)
                ended = {w["worker"]: w["ended_at"] for w in st["workers"]}
                peaks = [_peaks(base, line, ended[addr]) for addr, (base, line) in rss.items()]
                during.append(max(p[0] for p in peaks))
                after.append(max(p[1] for p in peaks))
                stats_runs.append(st)
        out[label] = {"times": times, "peak_over_base": max(during), "outputs_peak_over_base": max(after),
                      "rounds": max(s["rounds"] for s in stats_runs),
                      "spilled_bytes": statistics.median(s["spilled_bytes"] for s in stats_runs)}
        cfg.say(f"shuffle ({label}, budget {setting / 2**20:.0f} MiB): {statistics.median(times):.3f} s, peak "
                f"{out[label]['peak_over_base'] / 2**20:.0f} MiB over the resident memory before while exchanging, "
                f"{out[label]['outputs_peak_over_base'] / 2**20:.0f} MiB while the outputs were made and checked, "
                f"{out[label]['rounds']} rounds, {out[label]['spilled_bytes'] / 2**20:.0f} MiB spilled")
    return out


# ------------------------------------------------------------------------------ raw ucxx
_BW: dict = {}
_BW_CONNECT_S = 60.0    # the bare-ucxx probe's connect timeout (ucxx's default: 5 s)


async def _bw_listen(nbytes: int, chunks: int, iters: int, both: bool, dask_worker: Any = None) -> int:
    import ucxx

    size = nbytes // chunks
    bufs = [np.empty(size, np.uint8) for _ in range(chunks)]
    data = [np.ones(size, np.uint8) for _ in range(chunks)]
    done = asyncio.Event()

    async def handler(ep: Any) -> None:
        _BW["ep"] = ep  # kept open until the client has the ack (then _bw_close closes it)
        for _ in range(iters):
            recvs = [ep.recv(b, tag=i) for i, b in enumerate(bufs)]
            sends = [ep.send(d, tag=i) for i, d in enumerate(data)] if both else []
            await asyncio.gather(*recvs, *sends)
        await ep.send(np.zeros(1, np.uint8))  # completion ack
        done.set()

    # the peer-info exchange gets _BW_CONNECT_S, not ucxx's 5 s: a loaded machine (the test
    # suite's benchmark smoke lane beside its distributed lane) took longer, and the wire-up is
    # not what this measures
    listener = ucxx.create_listener(handler, connect_timeout=_BW_CONNECT_S)
    _BW["listener"], _BW["done"] = listener, done
    return listener.port


async def _bw_connect(host: str, port: int, nbytes: int, chunks: int, iters: int, both: bool,
                      dask_worker: Any = None) -> float:
    import ucxx

    ep = await ucxx.create_endpoint(host, port, connect_timeout=_BW_CONNECT_S)
    size = nbytes // chunks
    bufs = [np.empty(size, np.uint8) for _ in range(chunks)]
    data = [np.ones(size, np.uint8) for _ in range(chunks)]
    ack = np.empty(1, np.uint8)
    t0 = time.perf_counter()
    for i in range(iters):
        if i == 1:
            t0 = time.perf_counter()  # the first round (registration, wire-up) is the warm-up
        sends = [ep.send(d, tag=j) for j, d in enumerate(data)]
        recvs = [ep.recv(b, tag=j) for j, b in enumerate(bufs)] if both else []
        await asyncio.gather(*sends, *recvs)
    await ep.recv(ack)
    elapsed = time.perf_counter() - t0
    await ep.close()
    return size * chunks * (iters - 1) / elapsed


async def _bw_close(dask_worker: Any = None) -> None:
    listener = _BW.pop("listener", None)
    done = _BW.pop("done", None)
    if done is not None:
        await asyncio.wait_for(done.wait(), 60)
    ep = _BW.pop("ep", None)
    if ep is not None:
        await ep.close()
    if listener is not None:
        listener.close()


def raw_ucx_bandwidth(client: Any, *, both: bool, nbytes: int = MESSAGE_BYTES, iters: int = 7) -> Optional[float]:
    """Bytes/s one way between the first two workers with bare ucxx (``both``: each way at once).

    The best of one message of ``nbytes`` and 16 concurrent messages of ``nbytes / 16`` (a
    window, as ``ucx_perftest`` keeps), per round.
    """
    if _protocol() != "ucx":   # ucxx not installed
        return None
    from distributed.comm import get_address_host

    a, b = sorted(client.nthreads())[:2]
    rates = []
    for chunks in (1, 16):
        port = client.run(_bw_listen, nbytes, chunks, iters, both, workers=[b])[b]
        rates.append(client.run(_bw_connect, get_address_host(b), port, nbytes, chunks, iters, both,
                                workers=[a])[a])
        client.run(_bw_close, workers=[b])
    return float(max(rates))


# ------------------------------------------------------------------------------ the benchmark
def _dask_peers(cfg: BenchConfig) -> bool:
    return "dask" in cfg.peers or set(cfg.peers) >= {"pandas", "polars", "duckdb", "pyarrow"}


def dask_variant_results(cfg: BenchConfig, client: Any, label: str, op: Callable[[str], Any],
                         expect: dict) -> list[dict]:
    """Time Dask's own operation ``op(shuffle_method)`` with every variant of
    :data:`DASK_VARIANTS` (when the peers include dask), each answer checked against ``expect``."""
    import dask

    out: list[dict] = []
    if not _dask_peers(cfg):
        return out
    for method, conf, name in DASK_VARIANTS:
        cfg.say(f"{label}: dask {name}")
        with dask.config.set({"dataframe.shuffle.method": method, **conf}):
            t, res = timed_persist(client, lambda m=method: op(m), cfg.runs, cfg.warmup)
            check(f"dask/{name}", fingerprint(res), expect)
            box = [res]
            del res
            release(client, box)
        out.append(summarize("dask", t, cfg.rows, name))
    return out


def run(cfg: BenchConfig) -> list[dict]:
    import gpuframe.dask as gdask

    records = []
    with bench_cluster(cfg) as client:
        workers = len(client.nthreads())
        cfg.say(f"shuffle: {workers} workers, generating {format_rows(cfg.rows)} rows")
        ddf = make_frame(client, cfg.rows, value="value", seed=1, key_range=max(cfg.rows, 1), unique=False,
                         device=cfg.device)
        expect = fingerprint(ddf)
        cfg.say("shuffle: gpuframe")
        times, result, timed_stats = timed_with_stats(
            client, lambda st: gdask.shuffle(ddf, "key", client=client, stats=st), cfg)
        check("gpuframe", fingerprint(result), expect)
        split = split_summary(timed_stats)
        results = [summarize("gpuframe", times, cfg.rows, "dask.shuffle", split=split)]
        box = [result]
        del result
        release(client, box)
        results += dask_variant_results(cfg, client, "shuffle", lambda m: ddf.shuffle("key", shuffle_method=m),
                                        expect)
        params = {"rows": cfg.rows, "columns": 2, "workers": workers, "device": cfg.device,
                  "protocol": _protocol(), "dask_protocol": dask_protocol(cfg.device), "ucx_progress": UCX_PROGRESS,
                  "partition_rows": PARTITION_ROWS}
        records.append(make_record(BENCHMARK, "shuffle", params, results, checked=True))

        setting = getattr(cfg, "memory_budget", "auto")
        if setting != "none":
            per_worker = cfg.rows * 16 // workers
            budget = max(per_worker // 4, 1) if setting == "auto" else _parse_budget(setting)
            mem = bounded_memory(cfg, client, ddf, expect, budget)
            ratio = mem["bounded"]["peak_over_base"] / budget
            records.append(make_record(
                BENCHMARK, "bounded", dict(params, memory_budget=budget, input_bytes_per_worker=per_worker),
                [summarize("gpuframe", mem["bounded"]["times"], cfg.rows, "budget"),
                 summarize("gpuframe-one-shot", mem["one-shot"]["times"], cfg.rows, "no budget")],
                checked=True, memory=mem, peak_budget_ratio=ratio, target_budget_ratio=TARGET_BUDGET_RATIO,
                budget_target_met=ratio <= TARGET_BUDGET_RATIO))

        # The wire: bytes each worker sends to the others, over the data-transfer phase.
        bytes_per_worker = statistics.median(s["bytes_sent"] / workers for s in timed_stats)
        data_s = split.get("data_s") or float("nan")
        shuffle_rate = bytes_per_worker / data_s if data_s == data_s and data_s > 0 else None
        end_to_end = bytes_per_worker / statistics.median(times)
        one_way = raw_ucx_bandwidth(client, both=False) if workers >= 2 else None
        two_way = raw_ucx_bandwidth(client, both=True) if workers >= 2 else None
        wire = {
            "bytes_sent_per_worker": bytes_per_worker,
            "shuffle_transfer_bytes_per_s": shuffle_rate,
            "shuffle_end_to_end_bytes_per_s": end_to_end,
            "raw_ucx_one_way_bytes_per_s": one_way,
            "raw_ucx_two_way_bytes_per_s": two_way,
            "fraction_of_two_way": (shuffle_rate / two_way) if (shuffle_rate and two_way) else None,
            "fraction_of_one_way": (shuffle_rate / one_way) if (shuffle_rate and one_way) else None,
            "message_bytes": MESSAGE_BYTES,
        }
        frac = wire["fraction_of_two_way"]
        records.append({
            "benchmark": BENCHMARK, "case": "wire", "params": params, "results": [], "checked": True,
            "wire": wire, "split": split, "target_fraction": TARGET_WIRE_FRACTION,
            "target_met": None if frac is None else frac >= TARGET_WIRE_FRACTION,
            "best_peer": None, "speedup_vs_best_peer": None, "target_speedup": None,
        })
    return records


def _gb(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x / 1e9:.2f} GB/s"


def add_cluster_args(p: Any) -> None:
    p.add_argument("--ucx-progress", default=UCX_PROGRESS, choices=["thread", "blocking", "polling"],
                   help="ucxx progress mode of every process of the benchmark cluster (Dask's default: blocking)")
    p.add_argument("--dask-comm", default=DASK_COMM, choices=["auto", "tcp", "ucx"],
                   help="protocol of Dask's own comms (auto: tcp for CPU workers, ucx for GPU workers); "
                        "gpuframe's communicators use UCX whenever ucxx is installed")


def apply_cluster_args(args: Any) -> None:
    global UCX_PROGRESS, DASK_COMM
    UCX_PROGRESS = args.ucx_progress
    DASK_COMM = args.dask_comm


def _parse_budget(text: str) -> int:
    from gpuframe.config import parse_memory_size

    value = parse_memory_size(text, "--memory-budget")
    if not isinstance(value, int) or value <= 0:
        raise SystemExit(f"--memory-budget must be a size in bytes (e.g. 64MiB), auto or none; got {text!r}")
    return value


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = arg_parser("gpuframe.dask.shuffle against Dask's p2p and tasks shuffles, and the raw ucxx bandwidth.",
                   default_rows="small")
    add_cluster_args(p)
    p.add_argument("--memory-budget", default="auto",
                   help="the bounded case's budget per worker: a size (64MiB), auto (a quarter of the data each "
                        "worker holds) or none (skip the case)")
    args = p.parse_args(argv)
    apply_cluster_args(args)
    if args.memory_budget not in ("auto", "none"):
        _parse_budget(args.memory_budget)
    cfg = config_from_args(args)
    cfg.memory_budget = args.memory_budget
    doc = write_results(run(cfg), cfg.out)
    for rec in doc["records"]:
        if rec["case"] == "bounded":
            m = rec["memory"]
            print(f"bounded (budget {rec['params']['memory_budget'] / 2**20:.0f} MiB a worker, "
                  f"{rec['params']['input_bytes_per_worker'] / 2**20:.0f} MiB of input a worker): "
                  f"{statistics.median(m['bounded']['times']):.3f} s, peak {m['bounded']['peak_over_base'] / 2**20:.0f} MiB "
                  f"= {rec['peak_budget_ratio']:.2f}x the budget (target {TARGET_BUDGET_RATIO}x) while exchanging, "
                  f"{m['bounded']['outputs_peak_over_base'] / 2**20:.0f} MiB making the outputs, "
                  f"{m['bounded']['rounds']} rounds, {m['bounded']['spilled_bytes'] / 2**20:.0f} MiB spilled; "
                  f"one-shot {statistics.median(m['one-shot']['times']):.3f} s, peak "
                  f"{m['one-shot']['peak_over_base'] / 2**20:.0f} MiB", file=sys.stderr)
            continue
        if rec["case"] == "wire":
            w = rec["wire"]
            print(f"wire: shuffle {_gb(w['shuffle_transfer_bytes_per_s'])} per worker (transfer phase), "
                  f"raw ucxx {_gb(w['raw_ucx_one_way_bytes_per_s'])} one way, {_gb(w['raw_ucx_two_way_bytes_per_s'])} "
                  f"each way at once -> {w['fraction_of_two_way'] or float('nan'):.0%} (target "
                  f"{TARGET_WIRE_FRACTION:.0%}); split {rec['split']}", file=sys.stderr)
            continue
        line = ", ".join(f"{r['engine']}/{r['variant']} {r['median_s']:.3f} s" for r in rec["results"])
        print(f"{rec['case']} ({format_rows(rec['params']['rows'])} rows): {line}", file=sys.stderr)


if __name__ == "__main__":
    main()
