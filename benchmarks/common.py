"""Shared configuration and helpers for every benchmark script.

Contract for a benchmark module ``benchmarks/<op>.py``:

* ``run(cfg: BenchConfig) -> list[dict]`` returns one *record* per case, built with
  :func:`make_record`; every peer's answer is checked against gpuframe's before any time is
  reported (``checked=True``), a mismatch raises :class:`ResultMismatch`.
* ``main(argv=None)`` parses :func:`arg_parser` options, calls ``run`` and :func:`write_results`.

A results file is ``{"machine": machine_info(), "created": ..., "command": ...,
"records": [record, ...]}``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

SIZES = {
    # name: rows of the main side; every script scales its other sides from it
    "smoke": 20_000,
    "small": 1_000_000,
    "moderate": 10_000_000,
    "full": 100_000_000,
}
DEFAULT_PEERS = ["pandas", "polars", "duckdb", "pyarrow"]


class ResultMismatch(AssertionError):
    """A peer's answer differs from gpuframe's: no time is reported for that case."""


@dataclass
class BenchConfig:
    rows: int = SIZES["small"]
    runs: int = 5
    warmup: int = 1
    device: str = "cpu"
    peers: list[str] = field(default_factory=lambda: list(DEFAULT_PEERS))
    workers: int = 2
    out: Optional[str] = None
    progress: Optional[Callable[[str], None]] = None  # called with a short status line

    def say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)


def parse_rows(text: str | int) -> int:
    """``"10M"``, ``"2.5k"``, ``"1G"``, ``"smoke"`` or an int -> rows."""
    if isinstance(text, int):
        return text
    t = str(text).strip()
    if t in SIZES:
        return SIZES[t]
    mult = {"k": 10**3, "K": 10**3, "m": 10**6, "M": 10**6, "g": 10**9, "G": 10**9, "b": 10**9, "B": 10**9}
    try:
        if t and t[-1] in mult:
            return int(float(t[:-1]) * mult[t[-1]])
        return int(t)
    except ValueError:
        raise ValueError(f"rows must be an int, a size like '10M', or one of {sorted(SIZES)}, got {text!r}") from None


def time_runs(fn: Callable[[], Any], runs: int, warmup: int = 1) -> tuple[list[float], Any]:
    """Call ``fn`` ``warmup`` times untimed then ``runs`` times; return (seconds list, last result)."""
    result = None
    for _ in range(warmup):
        result = fn()
        del result
        gc.collect()
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        if _ is not runs - 1:
            del result
    return times, result


def summarize(engine: str, times: list[float], tuples: int, variant: str = "", **extra: Any) -> dict:
    med = statistics.median(times)
    return {
        "engine": engine, "variant": variant, "times_s": [round(t, 6) for t in times],
        "median_s": med, "min_s": min(times), "max_s": max(times),
        "tuples_per_s": tuples / med if med > 0 else None, **extra,
    }


def make_record(benchmark: str, case: str, params: dict, results: list[dict], *, checked: bool,
                target_ratio: Optional[float] = None, ours: str = "gpuframe", **extra: Any) -> dict:
    """One case: gpuframe's and the peers' summaries, the best peer and the speed-up against it."""
    mine = [r for r in results if r["engine"] == ours]
    peers = [r for r in results if r["engine"] != ours]
    best_mine = min(mine, key=lambda r: r["median_s"]) if mine else None
    best_peer = min(peers, key=lambda r: r["median_s"]) if peers else None
    ratio = (best_peer["median_s"] / best_mine["median_s"]) if (best_mine and best_peer) else None
    for r in results:
        r["ratio_vs_gpuframe"] = (r["median_s"] / best_mine["median_s"]) if best_mine else None
    return {
        "benchmark": benchmark, "case": case, "params": params, "results": results, "checked": checked,
        "best_peer": None if best_peer is None else f"{best_peer['engine']}{'/' + best_peer['variant'] if best_peer['variant'] else ''}",
        "speedup_vs_best_peer": ratio, "target_speedup": target_ratio,
        "target_met": None if (ratio is None or target_ratio is None) else ratio >= target_ratio,
        **extra,
    }


def machine_info() -> dict:
    info: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "cpu_model": _cpu_model(),
    }
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        pass
    versions = {}
    for mod in ("gpuframe", "numpy", "pyarrow", "numba", "numba_cuda", "pandas", "polars", "duckdb",
                "dask", "distributed", "ucxx", "torch", "cupy", "cudf"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "?")
        except Exception:
            continue
    info["versions"] = versions
    info["gpus"] = _gpu_names()
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpu_names() -> list[str]:
    from gpuframe.core.device import gpu_count

    n = gpu_count()
    if not n:
        return []
    import cupy

    names = []
    for i in range(n):
        props = cupy.cuda.runtime.getDeviceProperties(i)
        name = props["name"]
        names.append(name.decode() if isinstance(name, bytes) else str(name))
    return names


def arg_parser(description: str, default_rows: str = "small") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--rows", default=default_rows, help=f"rows, e.g. 10M, or one of {sorted(SIZES)}")
    p.add_argument("--runs", type=int, default=5, help="timed runs per engine (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--peers", default=",".join(DEFAULT_PEERS), help="comma-separated peers")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON results file (default: print only)")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    return BenchConfig(rows=parse_rows(args.rows), runs=args.runs, warmup=args.warmup, device=args.device,
                       peers=peers, workers=args.workers, out=args.out, progress=lambda m: print(m, file=sys.stderr))


def write_results(records: Iterable[dict], out: Optional[str], command: Optional[str] = None) -> dict:
    doc = {
        "machine": machine_info(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv),
        "records": list(records),
    }
    if out:
        d = os.path.dirname(os.path.abspath(out))
        os.makedirs(d, exist_ok=True)
        with open(out, "w") as f:
            json.dump(doc, f, indent=2, default=str)
    return doc


def peer_available(name: str) -> bool:
    mod = {"pyarrow": "pyarrow", "pandas": "pandas", "polars": "polars", "duckdb": "duckdb",
           "cudf": "cudf", "dask": "dask"}.get(name, name)
    try:
        __import__(mod)
        return True
    except Exception:
        return False
