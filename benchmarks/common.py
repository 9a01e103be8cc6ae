"""Shared configuration and helpers for every benchmark script.

Contract for a benchmark module ``benchmarks/<op>.py``:

* ``run(cfg: BenchConfig) -> list[dict]`` returns one *record* per case, built with
  :func:`make_record`; every peer's answer is checked against gpuframe's before any time is
  reported (``checked=True``), a mismatch raises :class:`ResultMismatch`.
* ``main(argv=None)`` parses :func:`arg_parser` options, calls ``run`` and :func:`write_results`.

A results file is ``{"machine": machine_info(), "created": ..., "command": ...,
"records": [record, ...]}``, plus, when ``benchmarks/all.py`` wrote it, ``"skipped"``
(``[{"benchmark", "reason"}]``: modules not present), ``"errors"`` (``[{"benchmark", "error"}]``),
``"seconds"`` (wall time of each benchmark module) and ``"notes"`` (free text lines, e.g. a peer
that is not installed).

Outputs are kept alive, as a program that uses the library keeps its results: every output of
every engine, warm-up calls included, stays referenced until the case's last timed round ends
(:class:`OutputKeeper`, :func:`time_runs`), so no call writes its result into the pages of an
earlier result that was freed (fresh pages cost 1.3-3.8 GB/s on the development VM, reused ones
22 GB/s), and the first timed call after the warm-up counts like every other. A record says so in
``"outputs_kept"`` (``True``: all of them kept) and ``"keep_alive"`` (how many outputs per engine
were kept, their estimated bytes, the memory budget, and a ``note`` whenever fewer were kept).
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
# Every peer a benchmark may be asked for (``--peers``); unknown names are a usage error.
KNOWN_PEERS = ["pandas", "polars", "duckdb", "pyarrow", "cudf", "dask", "cupy"]
# Benchmark modules (``benchmarks/<name>.py``) in the order ``benchmarks/all.py`` runs them.
BENCHMARKS = ["join", "partition", "shuffle", "dask_merge", "dask_ops", "dlpack", "groupby", "setops", "sort"]
# Kept outputs (with one more in flight) may take at most this fraction of the memory available
# when a case starts, the rest left to the engines' working memory; past it, fewer outputs per
# engine are kept (the record says so, see OutputKeeper). At 100M rows one round of the join's
# outputs (5 engines x 2.4 GB) fits 0.7 of the 24 GiB development VM's ~21 GB available.
KEEP_FRACTION = 0.7


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
    cases: Optional[list[str]] = None  # a benchmark's cases to run (None: all of them)
    keep_fraction: float = KEEP_FRACTION  # of available memory the kept outputs may take (OutputKeeper)

    def say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)


def parse_rows(text: str | int) -> int:
    """``"10M"``, ``"2.5k"``, ``"1G"``, ``"smoke"`` or an int -> rows."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 1:
            raise ValueError(f"rows must be at least 1, got {text!r}")
        return text
    t = str(text).strip()
    if t in SIZES:
        return SIZES[t]
    mult = {"k": 10**3, "K": 10**3, "m": 10**6, "M": 10**6, "g": 10**9, "G": 10**9, "b": 10**9, "B": 10**9}
    try:
        rows = int(float(t[:-1]) * mult[t[-1]]) if t and t[-1] in mult else int(t)
    except ValueError:
        raise ValueError(f"rows must be an int, a size like '10M', or one of {sorted(SIZES)}, got {text!r}") from None
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {text!r}")
    return rows


def available_memory() -> Optional[int]:
    """Bytes of memory available to new allocations (``MemAvailable``), or None if unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def output_bytes(obj: Any) -> int:
    """Estimated bytes an engine's output holds: ``nbytes`` (pyarrow, gpuframe, numpy, CuPy,
    torch), Polars' ``estimated_size()``, pandas' ``memory_usage()``, summed over containers."""
    if obj is None:
        return 0
    if isinstance(obj, dict):
        return sum(output_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(output_bytes(v) for v in obj)
    try:
        nb = getattr(obj, "nbytes", None)
        if nb is not None and not callable(nb):
            return int(nb)
        est = getattr(obj, "estimated_size", None)  # polars DataFrame
        if callable(est):
            return int(est())
        mu = getattr(obj, "memory_usage", None)  # pandas DataFrame
        if callable(mu):
            return int(mu(index=True, deep=False).sum())
    except Exception:
        pass
    return sys.getsizeof(obj)


def _mib(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / 2**20:,.1f} MiB"


class OutputKeeper:
    """Holds every output of a case's engines until its timing ends, within a memory budget.

    ``keep(engine, out)`` after every call (warm-up calls too), ``release()`` after the last
    round. ``per_engine`` is how many outputs each engine produces in the case (warm-up + timed).

    Memory stays bounded: the first output of each engine gives its size (:func:`output_bytes`),
    and each engine keeps its last ``limit`` outputs, ``limit`` the most that fit in
    ``budget_bytes`` (default :data:`KEEP_FRACTION` of :func:`available_memory` when the keeper is
    made) with one more output in flight. With ``limit >= 1`` every output still lives until its
    engine's next call; with ``limit == 0`` (one round of outputs does not fit) outputs are
    dropped at once. Either reduction is written in :meth:`info` (``outputs_kept`` False and a
    ``note``), never silent.
    """

    def __init__(self, per_engine: int, budget_bytes: Optional[int] = None,
                 fraction: float = KEEP_FRACTION) -> None:
        if per_engine < 1:
            raise ValueError(f"per_engine must be >= 1, got {per_engine!r}")
        self.per_engine = per_engine
        if budget_bytes is None:
            avail = available_memory()
            budget_bytes = None if avail is None else int(avail * fraction)
        self.budget = budget_bytes
        self.fraction = fraction
        self.limit = per_engine
        self.dropped = 0
        self._sizes: dict[Any, int] = {}
        self._held: dict[Any, list[Any]] = {}

    def keep(self, engine: Any, out: Any) -> None:
        """Hold ``out``, one output of ``engine`` (any hashable label)."""
        if engine not in self._sizes:
            self._sizes[engine] = output_bytes(out)
            self._set_limit()
        self._held.setdefault(engine, []).append(out)
        for held in self._held.values():
            while len(held) > self.limit:
                held.pop(0)
                self.dropped += 1

    def _set_limit(self) -> None:
        one_round = sum(self._sizes.values())
        if self.budget is None or one_round == 0:
            return
        room = self.budget - max(self._sizes.values())  # the call in flight writes one more output
        self.limit = min(self.limit, max(0, room // one_round))

    @property
    def held(self) -> int:
        """Outputs held now."""
        return sum(len(v) for v in self._held.values())

    def release(self) -> None:
        """Drop every held output (after the timing) and collect."""
        self._held.clear()
        gc.collect()

    def info(self) -> dict:
        """``{"outputs_kept": bool, "keep_alive": {...}}`` for a record (see the module docstring)."""
        one_round = sum(self._sizes.values())
        kept_all = self.limit >= self.per_engine
        d: dict[str, Any] = {"outputs_per_engine": self.per_engine, "kept_per_engine": self.limit,
                             "output_bytes_per_round": one_round, "budget_bytes": self.budget,
                             "budget_fraction_of_available": self.fraction, "dropped_early": self.dropped}
        if not kept_all:
            why = (f"one round of outputs of all engines ({_mib(one_round)}) with one more in flight exceeds "
                   f"the keep budget ({_mib(self.budget)}, {self.fraction:g} of available memory)")
            if self.limit == 0:
                d["note"] = f"outputs NOT kept alive: each was dropped after its call, {why}"
            else:
                d["note"] = (f"fewer outputs kept: the last {self.limit} of {self.per_engine} per engine "
                             f"(each output lived until its engine's next call), {why}")
        return {"outputs_kept": kept_all, "keep_alive": d}


def time_runs(fn: Callable[[], Any], runs: int, warmup: int = 1, *, keep: Optional[OutputKeeper] = None,
              engine: Any = None, collect: bool = True) -> tuple[list[float], Any]:
    """Call ``fn`` ``warmup`` times untimed then ``runs`` times; return (seconds list, last result).

    Every result, the warm-up ones too, stays alive until the last call is done: in ``keep``
    under the label ``engine`` when a keeper is given (its owner releases it after its last
    round), else in a keeper of this call's own, released before returning (the last result is
    returned). So each timed call, the first one after the warm-up included, writes into fresh
    memory, as in a program that keeps its results.

    One full garbage collection happens before the timed runs (unless ``collect`` is False: a
    caller timing one call of each engine per round collects once per round), and the collector
    is off during each timed call (as ``timeit`` does), so a collection of someone else's garbage
    never lands inside a measurement. (A full collection costs ~0.05 s with the peers imported,
    ~0.3 s once torch is.)
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs!r}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup!r}")
    own = keep is None
    keeper = OutputKeeper(warmup + runs) if keep is None else keep
    result = None
    for _ in range(warmup):
        result = fn()
        keeper.keep(engine, result)
        result = None
    if collect:
        gc.collect()
    times = []
    enabled = gc.isenabled()
    for i in range(runs):
        gc.disable()
        try:
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        finally:
            if enabled:
                gc.enable()
        keeper.keep(engine, result)
        if i != runs - 1:
            result = None
    if own:
        keeper.release()
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
    p.add_argument("--peers", default=",".join(DEFAULT_PEERS),
                   help="comma-separated peers, or 'none' (cupy: the CUDA join's sort-based join)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON results file (default: print only)")
    p.add_argument("--keep-fraction", type=float, default=KEEP_FRACTION, metavar="F",
                   help="outputs are kept alive until a case's timing ends, in at most this fraction of the "
                        "available memory; past it fewer are kept, and the record says so (default: %(default)s)")
    return p


def parse_peers(text: str) -> list[str]:
    """``"pandas,polars"`` -> ``["pandas", "polars"]``; ``"none"`` -> ``[]`` (gpuframe alone);
    unknown names raise ``ValueError``."""
    peers = [p.strip().lower() for p in str(text).split(",") if p.strip()]
    if peers == ["none"]:
        return []
    unknown = [p for p in peers if p not in KNOWN_PEERS]
    if unknown:
        raise ValueError(f"peers must be 'none' or a comma-separated subset of {','.join(KNOWN_PEERS)}, "
                         f"got {text!r}")
    return list(dict.fromkeys(peers))


def _freeze_start_heap() -> None:
    """The heap a benchmark starts with (modules, a test runner's objects) holds no garbage its
    rounds make: frozen, the rounds' full collections skip it (in a pytest process that had run
    other tests first, the set operations' smoke benchmark spent most of its 10 s in gc.collect).
    Never unfrozen: an object alive now and dropped later in a reference cycle stays until exit.
    Every benchmark's ``main`` reaches it through :func:`config_from_args`."""
    gc.collect()
    gc.freeze()


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    peers = parse_peers(args.peers)
    if args.runs < 1:
        raise ValueError(f"--runs must be >= 1, got {args.runs!r}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers!r}")
    keep_fraction = getattr(args, "keep_fraction", KEEP_FRACTION)
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"--keep-fraction must be in (0, 1], got {keep_fraction!r}")
    _freeze_start_heap()
    return BenchConfig(rows=parse_rows(args.rows), runs=args.runs, warmup=args.warmup, device=args.device,
                       peers=peers, workers=args.workers, out=args.out, progress=lambda m: print(m, file=sys.stderr),
                       keep_fraction=keep_fraction)


def write_results(records: Iterable[dict], out: Optional[str], command: Optional[str] = None,
                  **extra: Any) -> dict:
    """Build the results document (and write it as JSON to ``out`` when given).

    ``extra`` adds top-level keys such as ``skipped``, ``errors`` and ``notes``.
    """
    doc = {
        "machine": machine_info(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv),
        "records": list(records),
        **extra,
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


def load_results(path: str) -> dict:
    """Read a results file written by :func:`write_results`; a clear ``ValueError`` if it is not one."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"results file {path!r} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"results file {path!r} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("records"), list):
        got = type(doc).__name__ if not isinstance(doc, dict) else f"keys {sorted(doc)}"
        raise ValueError(f"results file {path!r} must be a JSON object with a 'records' list, got {got}")
    for i, rec in enumerate(doc["records"]):
        missing = [k for k in ("benchmark", "case", "results") if k not in rec]
        if missing:
            raise ValueError(f"record {i} of {path!r} lacks {missing}; is it a gpuframe benchmark results file?")
    return doc


def format_seconds(seconds: Optional[float]) -> str:
    """``0.000123`` -> ``"123 µs"``, ``0.0456`` -> ``"45.6 ms"``, ``3.2`` -> ``"3.20 s"``."""
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 100:
        return f"{seconds:.2f} s"
    return f"{seconds:.0f} s"


def format_rows(rows: int) -> str:
    """``20000`` -> ``"20k"``, ``10_000_000`` -> ``"10M"``."""
    for div, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if rows >= div and rows % (div // 10) == 0:
            return f"{rows / div:g}{suffix}"
    return str(rows)
