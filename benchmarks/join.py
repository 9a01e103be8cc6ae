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

  The last four: target not slower than the best peer (ratio >= 1).
* ``compile_time`` (subprocesses): ``import gpuframe`` + a first 1k-row join, cold (empty numba
  cache; not at the smoke size) and warm (cache reused). Target: warm < 2 s.
* ``peak_memory`` (a subprocess): peak RSS of one ``inner_int64_unique`` merge against
  (inputs + output) bytes. Target: < 1.5x.

``--device cuda`` runs gpuframe on a GPU instead: N x N int64 inner join (gather maps, and
materialised), a CuPy sort-based join in the same run, and the device's copy bandwidth; without
a GPU it stops with :class:`gpuframe.NoGPUError`.

Every engine's answer is checked (row count and column sums) before its time is reported.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa

from .common import (SIZES, BenchConfig, ResultMismatch, arg_parser, config_from_args, make_record, peer_available,
                     summarize, time_runs, write_results)

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


# (case name, data generator, target speed-up against the best peer), in run order
CASES: list[tuple[str, Callable[[int], tuple[pa.Table, pa.Table]], float]] = [
    ("inner_int64_unique", int64_unique_case, 3.0),
    ("many_to_many_int64", int64_many_to_many_case, 1.0),
    ("zipf_int64", int64_zipf_case, 1.0),
    ("string_unique", string_unique_case, 1.0),
    ("many_to_many_string_zipf", string_zipf_case, 1.0),
]


# --------------------------------------------------------------------------- answers
def _wrapping_sum(arr: Any) -> int:
    """Sum of an integer column modulo 2**64 (the same whatever the engine's order)."""
    if isinstance(arr, pa.ChunkedArray):
        return sum(_wrapping_sum(c) for c in arr.chunks) % 2**64
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return int(pa.compute.sum(pa.compute.utf8_length(arr)).as_py() or 0)
    return int(np.asarray(arr.to_numpy(zero_copy_only=False)).astype(np.int64).view(np.uint64).sum(dtype=np.uint64))


def answer(table: pa.Table) -> tuple:
    """``(rows, sum of k, sum of a, sum of b)``; string keys contribute their total length."""
    return (table.num_rows,) + tuple(_wrapping_sum(table.column(c)) for c in ("k", "a", "b"))


def _check(engine: str, got: tuple, want: tuple, case: str) -> None:
    if got != want:
        raise ResultMismatch(f"{case}: {engine} answered {got}, gpuframe answered {want}")


# --------------------------------------------------------------------------- peers
def peer_runners(probe: pa.Table, build: pa.Table, peers: list[str]) -> dict[tuple[str, str], Callable[[], pa.Table]]:
    runners: dict[tuple[str, str], Callable[[], pa.Table]] = {}
    if "duckdb" in peers and peer_available("duckdb"):
        import duckdb

        con = duckdb.connect()
        con.register("probe", probe)
        con.register("build", build)
        q = "select probe.k, probe.a, build.b from probe join build on probe.k = build.k"
        runners[("duckdb", "")] = lambda: con.sql(q).to_arrow_table()
    if "polars" in peers and peer_available("polars"):
        import polars as pl

        pp, pb = pl.from_arrow(probe), pl.from_arrow(build)
        runners[("polars", "eager")] = lambda: pp.join(pb, on="k", how="inner").to_arrow()
        runners[("polars", "streaming")] = lambda: (pp.lazy().join(pb.lazy(), on="k", how="inner")
                                                    .collect(engine="streaming").to_arrow())
    if "pyarrow" in peers:
        runners[("pyarrow", "")] = lambda: probe.join(build, "k", join_type="inner")
    if "pandas" in peers and peer_available("pandas") and probe.num_rows <= 20_000_000:
        dp, db = probe.to_pandas(), build.to_pandas()
        runners[("pandas", "")] = lambda: pa.Table.from_pandas(dp.merge(db, on="k", how="inner"), preserve_index=False)
    return runners


def run_case(cfg: BenchConfig, case: str, probe: pa.Table, build: pa.Table, target: Optional[float]) -> dict:
    """Time gpuframe and every peer on one case, in rounds.

    Every engine runs ``cfg.warmup`` untimed calls first (its answer is checked against
    gpuframe's); then each of ``cfg.runs`` rounds times one call of every engine, one engine
    after the other. Interleaving the engines spreads a change in the machine's load (other
    work on a shared host) over all of them instead of charging it to whichever engine ran
    during it; each engine's median over the rounds is reported.
    """
    import gpuframe

    gp, gb = gpuframe.from_arrow(probe), gpuframe.from_arrow(build)
    cfg.say(f"[{case}] {probe.num_rows:,} x {build.num_rows:,}: warm-up and answers")
    load_before = _loadavg()
    _t, out = time_runs(lambda: gpuframe.merge(gp, gb, on="k", how="inner"), 1, max(0, cfg.warmup - 1))
    want = answer(out.to_arrow())
    out_rows = want[0]
    del out
    engines: list[tuple[str, str, Callable[[], Any]]] = [
        ("gpuframe", "", lambda: gpuframe.merge(gp, gb, on="k", how="inner"))]
    for (engine, variant), fn in peer_runners(probe, build, cfg.peers).items():
        _t, res = time_runs(fn, 1, max(0, cfg.warmup - 1))
        _check(f"{engine}/{variant}" if variant else engine, answer(res), want, case)
        del res
        engines.append((engine, variant, fn))
    times: dict[tuple[str, str], list[float]] = {(e, v): [] for e, v, _ in engines}
    for rnd in range(cfg.runs):
        cfg.say(f"[{case}] round {rnd + 1}/{cfg.runs}")
        for engine, variant, fn in engines:
            t, res = time_runs(fn, 1, 0)
            del res
            times[(engine, variant)].extend(t)
    results = [summarize(e, times[(e, v)], out_rows, v) for e, v, _ in engines]
    params = {"probe_rows": probe.num_rows, "build_rows": build.num_rows, "output_rows": out_rows,
              "threads": _threads(), "loadavg_1min": [load_before, _loadavg()]}
    return make_record(BENCH, case, params, results, checked=True, target_ratio=target)


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
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache) if cold else dict(os.environ)
        for label in (["cold"] if cold else []) + ["warm", "warm"]:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _FIRST_JOIN], env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"compile-time subprocess failed: {proc.stderr[-2000:]}")
            results.append({"engine": "gpuframe", "variant": label, "wall_s": wall,
                            "in_process_s": float(proc.stdout.strip().splitlines()[-1])})
    warm = min(r["wall_s"] for r in results if r["variant"] == "warm")
    params = {"rows": 1000, "cold_measured": cold}
    return {"benchmark": BENCH, "case": "compile_time", "params": params, "results": results,
            "checked": True, "target_s": 2.0, "target_met": warm < 2.0}


_PEAK_MEMORY = """
import json, resource, sys, gc
import numpy as np, pyarrow as pa
sys.path.insert(0, {root!r})
from gpuframe.benchmarks.join import int64_unique_case
import gpuframe

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return -1

probe, build = int64_unique_case({rows})
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
out = gpuframe.merge(gp, gb, on="k")
peak = status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"inputs": probe.nbytes + build.nbytes, "output": out.nbytes, "peak_rss": peak,
                   "rss_before_join": before, "peak_reset": reset, "rows": out.num_rows}}))
"""


def peak_memory(cfg: BenchConfig) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", _PEAK_MEMORY.format(root=root, rows=cfg.rows)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"peak-memory subprocess failed: {proc.stderr[-2000:]}")
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    ratio = m["peak_rss"] / (m["inputs"] + m["output"])
    return {"benchmark": BENCH, "case": "peak_memory", "params": {"probe_rows": cfg.rows}, "results": [m],
            "checked": True, "peak_over_inputs_plus_output": ratio, "target_ratio_max": 1.5,
            "target_met": ratio < 1.5}


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

    def timed(fn: Callable[[], Any]) -> tuple[list[float], Any]:
        def run() -> Any:
            r = fn()
            sync()
            return r
        return time_runs(run, cfg.runs, cfg.warmup)

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
    return [make_record(BENCH, "cuda_int64_inner", {"rows": n, "device": name,
                                                    "copy_bandwidth_gb_s": bw / 1e9},
                        results, checked=True, target_ratio=None)]


# --------------------------------------------------------------------------- entry points
def run(cfg: BenchConfig) -> list[dict]:
    if cfg.device == "cuda":
        return run_cuda(cfg)
    records = []
    for case, make, target in CASES:
        probe, build = make(cfg.rows)
        records.append(run_case(cfg, case, probe, build, target))
        del probe, build
    cfg.say("[compile_time] subprocesses")
    records.append(compile_time(cfg))
    cfg.say("[peak_memory] subprocess")
    records.append(peak_memory(cfg))
    return records


def main(argv: Optional[list[str]] = None) -> dict:
    parser = arg_parser(__doc__.splitlines()[0], default_rows="small")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    records = run(cfg)
    doc = write_results(records, cfg.out)
    for r in records:
        line = {k: r.get(k) for k in ("case", "best_peer", "speedup_vs_best_peer", "target_met",
                                      "peak_over_inputs_plus_output")}
        line["times"] = {f"{x['engine']}{'/' + x['variant'] if x.get('variant') else ''}":
                         round(x.get("median_s", x.get("wall_s", 0)), 3) for x in r["results"] if "engine" in x}
        print(json.dumps(line, default=str))
    return doc


if __name__ == "__main__":
    main()
