"""Hash-join benchmark: gpuframe against DuckDB, Polars (eager and streaming), pyarrow and pandas.

Cases (``--rows`` is the main size N; every other size derives from it):

* ``inner_int64_unique``: N probe rows x N/10 unique build keys (every probe row matches once),
  int64 keys spread over the whole int64 range (no dense-range shortcut), one int64 payload per
  side, every output column materialised. Target: >= 3x faster than the best peer.
* ``many_to_many_int64``: N/10 probe rows x N/10 build rows holding N/40 distinct keys, 4 copies
  each; every probe key is present, so the output has 4 x N/10 rows.
* ``zipf_int64``: N/10 probe rows drawn Zipf(1.3) from N/100 unique build keys (the hottest key
  is on about a quarter of the probe rows).
* ``string_unique``: N/20 probe rows x N/100 unique string build keys (16-24 bytes), uniform.
* ``many_to_many_string_zipf``: string keys, each build key 4 times, the probe side Zipf-skewed
  (N/20 probe rows over N/400 distinct keys); output ~4x the probe side.

* ``int_key_string_payload``: N/10 probe rows carrying three string columns (8-24, 5-15 and
  20-60 bytes) joined on an int64 key to a 10-row table; the strings are in the output.
* ``tiny_build``: the same N/10 x 10 join with int columns only (the probe's four int64 columns
  and the build's payload out).
* ``string_key_10k``: N/10 probe rows joined on a string key (16-24 bytes) to a 10k-row table
  (fewer when the probe side is smaller), int64 payloads; ``string_key_10k_payload``: the same
  with a string payload (8-24 bytes) on the build side, in the output.
* ``left_half_miss``: left join, N/10 int64 probe rows of which half find no key among N/100
  unique build keys (their build column is null).
* ``small_1m``: min(N, 1M) int64 probe rows x a tenth as many unique build keys, two columns a
  side (the ``inner_int64_unique`` shape at 1M probe rows whatever N is).

  Targets (speed-up against the best peer): at ``--rows full`` (every case's default size) 2x,
  3x for ``inner_int64_unique``; 1.5x at ``--rows moderate`` and for a case with at least 1M probe
  rows; no target below (the smoke size only checks that everything runs and agrees).
* ``compile_time`` (subprocesses): ``import gpuframe`` + a first 1k-row join, cold (empty numba
  cache), then ``gpuframe compile`` into another empty cache (the install-time step, timed:
  variant ``gpuframe compile``) and the first join after it (``after compile``), both not at the
  smoke size; and warm (cache reused). Targets: warm < 2 s; the first join after the install
  step <= 5 s (issue 12).
* ``peak_memory/<case>`` (subprocesses): peak RSS of one gpuframe merge of each case against
  (inputs + output) bytes, one fresh process per case (at the smoke size one process runs them
  all, one after the other). Target: < 1.5x from the moderate size on (below, the interpreter,
  its libraries and kernels, ~0.2-0.3 GB, make the ratio meaningless); the record also gives the
  ratio without that baseline.

``--cases a,b`` runs only those cases (names as above; ``compile_time`` and ``peak_memory`` are
cases too).

``--device cuda`` runs gpuframe on a GPU instead: N x N int64 inner join (gather maps, and
materialised), a CuPy sort-based join in the same run, and the device's copy bandwidth; without
a GPU it stops with :class:`gpuframe.NoGPUError`.

Every engine's answer is checked (row count, column sums, string lengths and null counts)
before its time is reported. Every output of every engine is kept alive until the case's last
round (``common.OutputKeeper``): each call writes its result into fresh memory, as a program that
keeps its results does, and the record says whether all were kept (``outputs_kept``).
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa

from .common import (SIZES, BenchConfig, OutputKeeper, ResultMismatch, arg_parser, config_from_args, make_record,
                     peer_available, summarize, time_runs, write_results)

BENCH = "join"


# --------------------------------------------------------------------------- data
def int64_unique_case(n_probe: int, seed: int = 42) -> tuple[pa.Table, pa.Table]:
    """``(probe, build)``: unique build keys spread over int64, every probe row matches once."""
    n_build = max(1, n_probe // 10)
    rng = np.random.default_rng(seed)
    bkeys = _spread_keys(n_build, rng)
    probe_keys = bkeys[rng.integers(0, n_build, n_probe)]
    build = pa.table({"k": bkeys, "b": rng.integers(0, 1000, n_build, dtype=np.int64)})
    probe = pa.table({"k": probe_keys, "a": rng.integers(0, 1000, n_probe, dtype=np.int64)})
    return probe, build


def _spread_keys(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct int64 keys spread over the whole int64 range, in random order."""
    return rng.permutation(n).astype(np.int64) * np.int64(0x9E3779B1) - np.int64(2**62)


def _zipf_codes(n: int, n_keys: int, rng: np.random.Generator, a: float = 1.3) -> np.ndarray:
    """``n`` Zipf(a)-distributed codes in ``[0, n_keys)`` (code 0 the hottest)."""
    return (rng.zipf(a, n) - 1) % n_keys


def int64_many_to_many_case(n: int, seed: int = 11) -> tuple[pa.Table, pa.Table]:
    """``(probe, build)``: N/10 build rows over N/40 int64 keys (4 copies each), N/10 probe rows
    drawn uniformly from those keys: every probe row has 4 matches."""
    rng = np.random.default_rng(seed)
    n_keys = max(1, n // 40)
    n_probe = max(4, n // 10)
    keys = _spread_keys(n_keys, rng)
    bkeys = np.repeat(keys, 4)
    rng.shuffle(bkeys)
    build = pa.table({"k": bkeys, "b": rng.integers(0, 1000, len(bkeys), dtype=np.int64)})
    probe = pa.table({"k": keys[rng.integers(0, n_keys, n_probe)],
                      "a": rng.integers(0, 1000, n_probe, dtype=np.int64)})
    return probe, build


def int64_zipf_case(n: int, seed: int = 13) -> tuple[pa.Table, pa.Table]:
    """``(probe, build)``: N/100 unique int64 build keys, N/10 probe rows Zipf(1.3) over them."""
    rng = np.random.default_rng(seed)
    n_keys = max(1, n // 100)
    n_probe = max(4, n // 10)
    keys = _spread_keys(n_keys, rng)
    probe = pa.table({"k": keys[_zipf_codes(n_probe, n_keys, rng)],
                      "a": rng.integers(0, 1000, n_probe, dtype=np.int64)})
    # the build rows in random order: key rank r (the r-th hottest) is not build row r
    build = pa.table({"k": keys[rng.permutation(n_keys)], "b": rng.integers(0, 1000, n_keys, dtype=np.int64)})
    return probe, build


def _string_keys(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct strings of 16 to 24 bytes (object array)."""
    ids = rng.permutation(n)
    widths = rng.integers(0, 9, n)
    return np.array([f"user-{i:011d}-" + "abcdefgh"[:w] for i, w in zip(ids.tolist(), widths.tolist())],
                    dtype=object)


def string_unique_case(n: int, seed: int = 17) -> tuple[pa.Table, pa.Table]:
    """``(probe, build)``: N/100 unique string build keys, N/20 probe rows drawn uniformly."""
    rng = np.random.default_rng(seed)
    n_keys = max(1, n // 100)
    n_probe = max(4, n // 20)
    names = pa.array(_string_keys(n_keys, rng), pa.string())
    build = pa.table({"k": names, "b": rng.integers(0, 1000, n_keys, dtype=np.int64)})
    probe = pa.table({"k": names.take(pa.array(rng.integers(0, n_keys, n_probe))),
                      "a": rng.integers(0, 1000, n_probe, dtype=np.int64)})
    return probe, build


def string_zipf_case(n: int, seed: int = 7) -> tuple[pa.Table, pa.Table]:
    """``(probe, build)``: string keys, 4 build rows per key, Zipf-skewed probe keys."""
    rng = np.random.default_rng(seed)
    n_keys = max(4, n // 400)
    n_probe = max(8, n // 20)
    names = np.array([f"customer-{i:09d}" for i in range(n_keys)], dtype=object)
    build_codes = np.repeat(np.arange(n_keys), 4)
    rng.shuffle(build_codes)
    probe_codes = _zipf_codes(n_probe, n_keys, rng)
    build = pa.table({"k": pa.array(names[build_codes], pa.string()),
                      "b": rng.integers(0, 1000, len(build_codes), dtype=np.int64)})
    probe = pa.table({"k": pa.array(names[probe_codes], pa.string()),
                      "a": rng.integers(0, 1000, n_probe, dtype=np.int64)})
    return probe, build


def _string_column(n: int, pool: int, lo: int, hi: int, rng: np.random.Generator, prefix: str) -> pa.Array:
    """``n`` strings of ``lo`` to ``hi`` bytes drawn from ``pool`` distinct ones."""
    pool = max(1, min(pool, n))
    widths = rng.integers(lo, hi + 1, pool)
    fill = "abcdefghijklmnopqrstuvwxyz0123456789" * (hi // 36 + 2)
    words = [(f"{prefix}{i:07d}" + fill)[:w] for i, w in enumerate(widths.tolist())]
    return pa.array(words, pa.string()).take(pa.array(rng.integers(0, pool, n)))


def _tiny_keys(rng: np.random.Generator, n_probe: int) -> tuple[np.ndarray, np.ndarray]:
    """``(build keys, probe keys)`` of a 10-row build side: every probe row matches once."""
    bkeys = _spread_keys(10, rng)
    return bkeys, bkeys[rng.integers(0, 10, n_probe)]


def int_key_string_payload_case(n: int, seed: int = 19) -> tuple[pa.Table, pa.Table]:
    """``(probe, build)``: N/10 probe rows with three string columns, int64 key, 10 build rows."""
    rng = np.random.default_rng(seed)
    n_probe = max(8, n // 10)
    bkeys, pkeys = _tiny_keys(rng, n_probe)
    probe = pa.table({"k": pkeys,
                      "name": _string_column(n_probe, 100_000, 8, 24, rng, "n"),
                      "city": _string_column(n_probe, 1_000, 5, 15, rng, "c"),
                      "comment": _string_column(n_probe, 100_000, 20, 60, rng, "m")})
    build = pa.table({"k": bkeys, "b": rng.integers(0, 1000, 10, dtype=np.int64)})
    return probe, build


def tiny_build_case(n: int, seed: int = 23) -> tuple[pa.Table, pa.Table]:
    """``(probe, build)``: N/10 probe rows of four int64 columns, int64 key, 10 build rows."""
    rng = np.random.default_rng(seed)
    n_probe = max(8, n // 10)
    bkeys, pkeys = _tiny_keys(rng, n_probe)
    probe = pa.table({"k": pkeys, "a": rng.integers(0, 1000, n_probe, dtype=np.int64),
                      "c": rng.integers(-2**40, 2**40, n_probe, dtype=np.int64),
                      "d": rng.integers(0, 2**62, n_probe, dtype=np.int64)})
    build = pa.table({"k": bkeys, "b": rng.integers(0, 1000, 10, dtype=np.int64)})
    return probe, build


def _string_key_10k(n: int, seed: int, payload: bool) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    n_probe = max(8, n // 10)
    n_keys = 10_000 if n_probe >= 100_000 else max(4, n_probe // 10)
    names = pa.array(_string_keys(n_keys, rng), pa.string())
    cols = {"k": names, "b": rng.integers(0, 1000, n_keys, dtype=np.int64)}
    if payload:
        cols["label"] = _string_column(n_keys, n_keys, 8, 24, rng, "l")
    build = pa.table(cols)
    probe = pa.table({"k": names.take(pa.array(rng.integers(0, n_keys, n_probe))),
                      "a": rng.integers(0, 1000, n_probe, dtype=np.int64)})
    return probe, build


def string_key_10k_case(n: int, seed: int = 29) -> tuple[pa.Table, pa.Table]:
    """``(probe, build)``: N/10 probe rows on a string key, 10k unique build keys, int64 payloads."""
    return _string_key_10k(n, seed, payload=False)


def string_key_10k_payload_case(n: int, seed: int = 31) -> tuple[pa.Table, pa.Table]:
    """:func:`string_key_10k_case` with a string payload column (``label``) on the build side."""
    return _string_key_10k(n, seed, payload=True)


def left_half_miss_case(n: int, seed: int = 37) -> tuple[pa.Table, pa.Table]:
    """``(probe, build)`` for a left join: N/100 unique build keys, N/10 probe rows, half of them
    drawn from the build keys and half from as many other keys (no match)."""
    rng = np.random.default_rng(seed)
    n_keys = max(2, n // 100)
    n_probe = max(8, n // 10)
    keys = _spread_keys(2 * n_keys, rng)
    hit, miss = keys[:n_keys], keys[n_keys:]
    pkeys = np.where(np.arange(n_probe) % 2 == 0, hit[rng.integers(0, n_keys, n_probe)],
                     miss[rng.integers(0, n_keys, n_probe)])
    rng.shuffle(pkeys)
    build = pa.table({"k": hit, "b": rng.integers(0, 1000, n_keys, dtype=np.int64)})
    probe = pa.table({"k": pkeys, "a": rng.integers(0, 1000, n_probe, dtype=np.int64)})
    return probe, build


def small_1m_case(n: int, seed: int = 41) -> tuple[pa.Table, pa.Table]:
    """``(probe, build)``: :func:`int64_unique_case` at min(N, 1M) probe rows."""
    return int64_unique_case(min(n, 1_000_000), seed)


@dataclass(frozen=True)
class Case:
    """A join case: its data generator, the join type, and its target at its default size."""

    name: str
    make: Callable[[int], tuple[pa.Table, pa.Table]]
    how: str = "inner"
    full_target: float = 2.0  # speed-up against the best peer at --rows full

    def target(self, rows: int, probe_rows: int) -> Optional[float]:
        """The target speed-up at ``--rows rows`` (see the module docstring)."""
        if rows >= SIZES["full"]:
            return self.full_target
        if rows >= SIZES["moderate"] or probe_rows >= 1_000_000:
            return 1.5
        return None


# in run order
CASES: list[Case] = [
    Case("inner_int64_unique", int64_unique_case, full_target=3.0),
    Case("many_to_many_int64", int64_many_to_many_case),
    Case("zipf_int64", int64_zipf_case),
    Case("string_unique", string_unique_case),
    Case("many_to_many_string_zipf", string_zipf_case),
    Case("int_key_string_payload", int_key_string_payload_case),
    Case("tiny_build", tiny_build_case),
    Case("string_key_10k", string_key_10k_case),
    Case("string_key_10k_payload", string_key_10k_payload_case),
    Case("left_half_miss", left_half_miss_case, how="left"),
    Case("small_1m", small_1m_case),
]
# cases measured in subprocesses (``--cases`` names them too)
EXTRA_CASES = ["compile_time", "peak_memory"]


def case_by_name(name: str) -> Case:
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(f"no join case {name!r}; the cases are {[c.name for c in CASES] + EXTRA_CASES}")


# --------------------------------------------------------------------------- answers
def _wrapping_sum(arr: Any) -> int:
    """Sum of an integer column modulo 2**64 (the same whatever the engine's order), nulls as 0;
    a string column gives its total length in characters."""
    if isinstance(arr, pa.ChunkedArray):
        return sum(_wrapping_sum(c) for c in arr.chunks) % 2**64
    if pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.large_string())
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return int(pa.compute.sum(pa.compute.utf8_length(arr)).as_py() or 0)
    if arr.null_count:
        arr = arr.fill_null(0)
    return int(np.asarray(arr.to_numpy(zero_copy_only=False)).astype(np.int64).view(np.uint64).sum(dtype=np.uint64))


def answer(table: pa.Table, columns: tuple[str, ...] = ("k", "a", "b")) -> tuple:
    """``(rows, sum of each of columns)``; string columns contribute their total length."""
    return (table.num_rows,) + tuple(_wrapping_sum(table.column(c)) for c in columns)


def case_answer(table: pa.Table, columns: list[str]) -> tuple:
    """:func:`answer` over ``columns`` plus their null counts (a left join's misses)."""
    return answer(table, tuple(columns)) + (tuple(table.column(c).null_count for c in columns),)


def _check(engine: str, got: tuple, want: tuple, case: str) -> None:
    if got != want:
        raise ResultMismatch(f"{case}: {engine} answered {got}, gpuframe answered {want}")


# --------------------------------------------------------------------------- peers
_ARROW_HOW = {"inner": "inner", "left": "left outer"}


def peer_runners(probe: pa.Table, build: pa.Table, peers: list[str],
                 how: str = "inner") -> dict[tuple[str, str], Callable[[], Any]]:
    """``{(engine, variant): fn}``: each ``fn()`` joins ``probe`` and ``build`` on ``k`` (``how``:
    inner or left) and returns its engine's own result (an Arrow table, a Polars or pandas frame);
    :func:`to_arrow` converts it, outside the timing, for the answer check."""
    runners: dict[tuple[str, str], Callable[[], Any]] = {}
    if "duckdb" in peers and peer_available("duckdb"):
        import duckdb

        con = duckdb.connect()
        con.register("probe", probe)
        con.register("build", build)
        cols = ", ".join([f'probe."{c}"' for c in probe.column_names]
                         + [f'build."{c}"' for c in build.column_names if c != "k"])
        q = f"select {cols} from probe {'left ' if how == 'left' else ''}join build on probe.k = build.k"
        runners[("duckdb", "")] = lambda: con.sql(q).to_arrow_table()
    if "polars" in peers and peer_available("polars"):
        import polars as pl

        pp, pb = pl.from_arrow(probe), pl.from_arrow(build)
        runners[("polars", "eager")] = lambda: pp.join(pb, on="k", how=how)
        runners[("polars", "streaming")] = lambda: (pp.lazy().join(pb.lazy(), on="k", how=how)
                                                    .collect(engine="streaming"))
    if "pyarrow" in peers:
        runners[("pyarrow", "")] = lambda: probe.join(build, "k", join_type=_ARROW_HOW[how])
    if "pandas" in peers and peer_available("pandas") and probe.num_rows <= 20_000_000:
        dp, db = probe.to_pandas(), build.to_pandas()
        runners[("pandas", "")] = lambda: dp.merge(db, on="k", how=how)
    return runners


def to_arrow(result: Any) -> pa.Table:
    """An engine's result as an Arrow table (for the answer check, outside the timing)."""
    if isinstance(result, pa.Table):
        return result
    if hasattr(result, "to_arrow"):  # gpuframe, polars
        return result.to_arrow()
    return pa.Table.from_pandas(result, preserve_index=False)


def run_case(cfg: BenchConfig, case: Case, probe: pa.Table, build: pa.Table) -> dict:
    """Time gpuframe and every peer on one case, in rounds.

    Every engine runs ``cfg.warmup`` untimed calls first (its answer is checked against
    gpuframe's); then each of ``cfg.runs`` rounds times one call of every engine, one engine
    after the other, the order rotated by one each round. Interleaving the engines spreads a
    change in the machine's load (other work on a shared host) over all of them instead of
    charging it to whichever engine ran during it, and rotating them spreads the cost of
    running after the others' allocations; each engine's median over the rounds is reported.

    Every output, warm-up ones included, stays alive until the last round ends (an
    :class:`~common.OutputKeeper`): no call writes into a freed result's pages, and the first
    timed round counts like the others.
    """
    import gpuframe

    name, how = case.name, case.how
    gp, gb = gpuframe.from_arrow(probe), gpuframe.from_arrow(build)

    def ours() -> Any:
        return gpuframe.merge(gp, gb, on="k", how=how)

    runners = peer_runners(probe, build, cfg.peers, how)
    warmup = max(0, cfg.warmup - 1)  # time_runs(fn, 1, warmup): max(1, cfg.warmup) untimed calls
    keep = OutputKeeper(warmup + 1 + cfg.runs, fraction=cfg.keep_fraction)
    cfg.say(f"[{name}] {probe.num_rows:,} x {build.num_rows:,}: warm-up and answers")
    load_before = _loadavg()
    # untimed (the one "timed" call of a warm-up is thrown away): no collection needed before it
    _t, out = time_runs(ours, 1, warmup, keep=keep, engine=("gpuframe", ""), collect=False)
    columns = list(out.column_names)
    want = case_answer(out.to_arrow(), columns)
    out_rows, out_bytes = want[0], out.nbytes
    del out
    engines: list[tuple[str, str, Callable[[], Any]]] = [("gpuframe", "", ours)]
    for (engine, variant), fn in runners.items():
        _t, res = time_runs(fn, 1, warmup, keep=keep, engine=(engine, variant), collect=False)
        _check(f"{engine}/{variant}" if variant else engine, case_answer(to_arrow(res), columns), want, name)
        del res
        engines.append((engine, variant, fn))
    times: dict[tuple[str, str], list[float]] = {(e, v): [] for e, v, _ in engines}
    for rnd in range(cfg.runs):
        cfg.say(f"[{name}] round {rnd + 1}/{cfg.runs}")
        gc.collect()
        # the order rotates each round: the engine that runs after the others' allocations
        # (page faults under memory pressure, fragmentation) changes, as in benchmarks.groupby
        k = rnd % len(engines)
        for engine, variant, fn in engines[k:] + engines[:k]:
            t, res = time_runs(fn, 1, 0, keep=keep, engine=(engine, variant), collect=False)
            del res
            times[(engine, variant)].extend(t)
    kept = keep.info()
    keep.release()
    results = [summarize(e, times[(e, v)], out_rows, v) for e, v, _ in engines]
    params = {"probe_rows": probe.num_rows, "build_rows": build.num_rows, "output_rows": out_rows, "how": how,
              "probe_columns": probe.column_names, "build_columns": build.column_names,
              "input_bytes": probe.nbytes + build.nbytes, "output_bytes": out_bytes,
              "threads": _threads(), "timing": "interleaved rounds, order rotated per round",
              "loadavg_1min": [load_before, _loadavg()]}
    return make_record(BENCH, name, params, results, checked=True,
                       target_ratio=case.target(cfg.rows, probe.num_rows), **kept)


def _loadavg() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not on every platform
        return None


def _threads() -> int:
    try:
        import numba

        return int(numba.get_num_threads())
    except Exception:  # pragma: no cover
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- subprocess cases
_FIRST_JOIN = """
import time, sys
t0 = time.perf_counter()
import numpy as np, pyarrow as pa
import gpuframe
l = gpuframe.from_arrow(pa.table({"k": np.arange(1000) % 97, "a": np.arange(1000)}))
r = gpuframe.from_arrow(pa.table({"k": np.arange(500) % 89, "b": np.arange(500)}))
n = gpuframe.merge(l, r, on="k").num_rows
m = gpuframe.merge(l, r, on="k", how="outer").num_rows
print(time.perf_counter() - t0)
"""


def compile_time(cfg: BenchConfig) -> dict:
    """Cold (empty numba cache) and warm (reused cache) ``import gpuframe`` + first joins.

    At the smoke size (CI) the cold run, a full compile of every kernel (~35 s on 2 cores), is
    left out: the warm runs then reuse the process's own cache, which the cases above filled.
    """
    results = []
    cold = cfg.rows > SIZES["smoke"]

    def first_join(label: str, env: dict) -> None:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _FIRST_JOIN], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"compile-time subprocess failed: {proc.stderr[-2000:]}")
        results.append({"engine": "gpuframe", "variant": label, "wall_s": wall,
                        "in_process_s": float(proc.stdout.strip().splitlines()[-1])})

    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache) if cold else dict(os.environ)
        if cold:
            env.pop("GPUFRAME_COMPILE_CLAIMS", None)   # nothing shared with other processes' compiles
            first_join("cold", env)
            with tempfile.TemporaryDirectory() as installed:
                env_installed = dict(env, NUMBA_CACHE_DIR=installed)
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "gpuframe.cli", "compile"], env=env_installed,
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"gpuframe compile failed: {proc.stderr[-2000:]}")
                results.append({"engine": "gpuframe", "variant": "gpuframe compile",
                                "wall_s": time.perf_counter() - t0})
                first_join("after compile", env_installed)
        for label in ("warm", "warm"):
            first_join(label, env)
    warm = min(r["wall_s"] for r in results if r["variant"] == "warm")
    after = [r["wall_s"] for r in results if r["variant"] == "after compile"]
    met = warm < 2.0 and all(a <= 5.0 for a in after)
    params = {"rows": 1000, "cold_measured": cold, "target_after_compile_s": 5.0}
    return {"benchmark": BENCH, "case": "compile_time", "params": params, "results": results,
            "checked": True, "target_s": 2.0, "target_met": met}


_PEAK_MEMORY = """
import gc, json, resource, sys
import numpy as np, pyarrow as pa
sys.path.insert(0, {root!r})
from gpuframe.benchmarks.join import case_by_name
import gpuframe

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return -1

for name in {names!r}:
    case = case_by_name(name)
    # the process with the library loaded and this case's kernels compiled: the baseline
    p0, b0 = case.make(2000)
    gpuframe.merge(gpuframe.from_arrow(p0), gpuframe.from_arrow(b0), on="k", how=case.how)
    del p0, b0
    gc.collect()
    baseline = status("VmRSS")
    probe, build = case.make({rows})
    gp, gb = gpuframe.from_arrow(probe), gpuframe.from_arrow(build)
    gc.collect()
    # forget the peak of the data generation: the high-water mark restarts from the current RSS
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    before = status("VmRSS")
    out = gpuframe.merge(gp, gb, on="k", how=case.how)
    peak = status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({{"case": name, "inputs": probe.nbytes + build.nbytes, "output": out.nbytes,
                       "peak_rss": peak, "rss_before_join": before, "baseline_rss": baseline, "peak_reset": reset,
                       "rows": out.num_rows}}),
          flush=True)
    del out, gp, gb, probe, build
    gc.collect()
"""


def peak_memory(cfg: BenchConfig, names: Optional[list[str]] = None) -> list[dict]:
    """One ``peak_memory/<case>`` record per case: peak RSS of a gpuframe merge against (inputs +
    output) bytes, each case in a fresh process (at the smoke size one process runs them all).

    The target (< 1.5x) is on the whole peak RSS, the process's own memory included: it applies
    from the moderate size on (below, the interpreter, its libraries and the compiled kernels,
    ~0.2-0.3 GB, decide the ratio). ``peak_above_baseline_over_inputs_plus_output`` leaves out
    that baseline (the RSS after a 2k-row join of the same case, before the data is made)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = [c.name for c in CASES] if names is None else names
    one_process = cfg.rows <= SIZES["smoke"]
    groups = [names] if one_process else [[n] for n in names]
    measured = []
    for group in groups:
        cfg.say(f"[peak_memory] subprocess: {', '.join(group)}")
        proc = subprocess.run([sys.executable, "-c", _PEAK_MEMORY.format(root=root, rows=cfg.rows, names=group)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"peak-memory subprocess ({', '.join(group)}) failed: {proc.stderr[-2000:]}")
        measured += [json.loads(line) for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    records = []
    for m in measured:
        data = m["inputs"] + m["output"]
        ratio = m["peak_rss"] / data
        target = 1.5 if cfg.rows >= SIZES["moderate"] else None
        records.append({
            "benchmark": BENCH, "case": f"peak_memory/{m['case']}",
            "params": {"rows": cfg.rows, "join_case": m["case"], "process": "shared" if one_process else "fresh"},
            "results": [m], "checked": True, "peak_over_inputs_plus_output": ratio,
            "peak_above_baseline_over_inputs_plus_output": (m["peak_rss"] - m["baseline_rss"]) / data,
            "join_growth_over_output": (m["peak_rss"] - m["rss_before_join"]) / max(m["output"], 1),
            "target_ratio_max": target, "target_met": None if target is None else ratio < target})
    return records


# --------------------------------------------------------------------------- CUDA
def run_cuda(cfg: BenchConfig) -> list[dict]:
    """N x N int64 inner join on the GPU: gather maps, materialised, a CuPy sort-based join
    and the device copy bandwidth, all in one run."""
    from gpuframe.core.device import CUDA_INSTALL_HINT, NoGPUError, gpu_count

    if gpu_count() == 0:
        raise NoGPUError(f"--device cuda needs a CUDA GPU and CuPy, and none was found; {CUDA_INSTALL_HINT}")
    import cupy as cp

    import gpuframe

    n = cfg.rows
    rng = np.random.default_rng(1)
    bkeys = rng.permutation(n).astype(np.int64) * np.int64(0x9E3779B1) - np.int64(2**62)
    build = pa.table({"k": bkeys, "b": rng.integers(0, 1000, n, dtype=np.int64)})
    probe = pa.table({"k": bkeys[rng.integers(0, n, n)], "a": rng.integers(0, 1000, n, dtype=np.int64)})
    gp, gb = gpuframe.from_arrow(probe, device="cuda"), gpuframe.from_arrow(build, device="cuda")

    def sync() -> None:
        cp.cuda.runtime.deviceSynchronize()

    # every output stays on the device until the end, within a share of the device's free memory
    keep = OutputKeeper(cfg.warmup + cfg.runs, budget_bytes=int(cp.cuda.runtime.memGetInfo()[0] * cfg.keep_fraction),
                        fraction=cfg.keep_fraction)

    def timed(fn: Callable[[], Any]) -> tuple[list[float], Any]:
        def run() -> Any:
            r = fn()
            sync()
            return r
        return time_runs(run, cfg.runs, cfg.warmup, keep=keep, engine=fn)

    t_maps, maps = timed(lambda: gpuframe.join_indices(gp, gb, on="k"))
    n_out = int(maps[0].shape[0])
    t_merge, out = timed(lambda: gpuframe.merge(gp, gb, on="k"))
    want = answer(out.to_arrow())
    del out

    pk = cp.asarray(probe.column("k").to_numpy())
    pa_ = cp.asarray(probe.column("a").to_numpy())
    bk = cp.asarray(build.column("k").to_numpy())
    bb = cp.asarray(build.column("b").to_numpy())

    def cupy_sort_join() -> tuple:
        order = cp.argsort(bk)
        sk = bk[order]
        pos = cp.searchsorted(sk, pk)
        pos = cp.minimum(pos, sk.shape[0] - 1)
        hit = sk[pos] == pk
        ridx = order[pos[hit]]
        return pk[hit], pa_[hit], bb[ridx]

    t_cupy, res = timed(cupy_sort_join)
    got = (int(res[0].shape[0]),) + tuple(int(cp.asnumpy(x).view(np.uint64).sum(dtype=np.uint64)) for x in res)
    _check("cupy sort-join", got, want, "cuda_int64")
    del res
    peer_results = [summarize("cupy", t_cupy, n_out, "sort_join")]
    if "cudf" in cfg.peers and peer_available("cudf"):
        import cudf

        cp_, cb_ = cudf.DataFrame.from_arrow(probe), cudf.DataFrame.from_arrow(build)
        t_cudf, res = timed(lambda: cp_.merge(cb_, on="k", how="inner"))
        _check("cudf", answer(res.to_arrow()), want, "cuda_int64")
        del res, cp_, cb_
        peer_results.append(summarize("cudf", t_cudf, n_out, "merge"))

    big = cp.empty(1 << 27, dtype=cp.int64)  # 1 GiB
    dst = cp.empty_like(big)
    t_copy, _ = timed(lambda: dst.__setitem__(slice(None), big))
    bw = 2 * big.nbytes / min(t_copy)
    results = [summarize("gpuframe", t_maps, n_out, "gather_maps"),
               summarize("gpuframe", t_merge, n_out, "materialised")] + peer_results
    name = cp.cuda.runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    kept = keep.info()
    keep.release()
    return [make_record(BENCH, "cuda_int64_inner", {"rows": n, "device": name,
                                                    "copy_bandwidth_gb_s": bw / 1e9},
                        results, checked=True, target_ratio=None, **kept)]


# --------------------------------------------------------------------------- entry points
def selected(cfg: BenchConfig) -> list[str]:
    """The case names ``cfg.cases`` asks for (all by default); an unknown name is a ``ValueError``."""
    every = [c.name for c in CASES] + EXTRA_CASES
    if not cfg.cases:
        return every
    unknown = [n for n in cfg.cases if n not in every]
    if unknown:
        raise ValueError(f"unknown join case(s) {unknown}; the cases are {','.join(every)}")
    return [n for n in every if n in cfg.cases]


def run(cfg: BenchConfig) -> list[dict]:
    if cfg.device == "cuda":
        return run_cuda(cfg)
    names = selected(cfg)
    records = []
    for case in CASES:
        if case.name not in names:
            continue
        probe, build = case.make(cfg.rows)
        records.append(run_case(cfg, case, probe, build))
        del probe, build
    if "compile_time" in names:
        cfg.say("[compile_time] subprocesses")
        records.append(compile_time(cfg))
    if "peak_memory" in names:
        joins = [n for n in names if n not in EXTRA_CASES] if cfg.cases else None
        records += peak_memory(cfg, joins or None)
    return records


def main(argv: Optional[list[str]] = None) -> dict:
    parser = arg_parser(__doc__.splitlines()[0], default_rows="small")
    parser.add_argument("--cases", default=None, metavar="LIST",
                        help="comma-separated cases to run (default: all): "
                             + ",".join([c.name for c in CASES] + EXTRA_CASES))
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    if args.cases:
        cfg.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
        selected(cfg)
    records = run(cfg)
    doc = write_results(records, cfg.out)
    for r in records:
        line = {k: r.get(k) for k in ("case", "best_peer", "speedup_vs_best_peer", "target_met", "outputs_kept",
                                      "peak_over_inputs_plus_output")}
        line["times"] = {f"{x['engine']}{'/' + x['variant'] if x.get('variant') else ''}":
                         round(x.get("median_s", x.get("wall_s", 0)), 3) for x in r["results"] if "engine" in x}
        print(json.dumps(line, default=str))
    return doc


if __name__ == "__main__":
    main()
