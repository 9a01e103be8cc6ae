"""ci/gpu_check.sh and its Python parts run only on a GPU machine: check here, without a GPU or
CuPy, what can be checked (the script's syntax, step order and time limits; that every command
in it parses; the figures' pure logic, the summary, the budget and error handling; the
kernel check's compile-failure test; the no-GPU exits; the install fallback)."""
from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from gpuframe.benchmarks import gpu_figures as gf
from gpuframe.benchmarks import gpu_kernel_check as kc
from gpuframe.core.device import gpu_count

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "ci" / "gpu_check.sh"
TEXT = SCRIPT.read_text()


def _logical_lines() -> list[str]:
    return TEXT.replace("\\\n", " ").splitlines()


def _caps() -> dict[str, int]:
    return {name: int(secs) for name, secs in re.findall(r"^(\w+)=\$\(cap (\d+)\)", TEXT, re.M)}


# --------------------------------------------------------------------------- the script
def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_steps_in_order_within_eight_minutes():
    caps = _caps()
    steps = re.findall(r'^\s*step ([\w-]+) "\$(\w+)"', TEXT, re.M)
    assert [s for s, _ in steps] == ["kernel-check", "gpu-tests", "cudasim-on-gpu", "figures"]
    assert all(var in caps for _, var in steps), (steps, caps)
    # every other command that may wait is under a literal timeout; the install check runs twice
    # at worst (after pip, after the fallback)
    literal = [int(s) for s in re.findall(r"(?<![-\w])timeout (?:-k \d+ )?(\d+) ", TEXT)]
    importable_calls = len(re.findall(r"(?:&&\s*|^\s*)importable(?=\s*(?:;|&&|$))", TEXT, re.M))
    assert importable_calls == 2
    importable_s = int(re.search(r"importable\(\) \{.*?\n\s*timeout (\d+)", TEXT, re.S).group(1))
    worst = sum(literal) + (importable_calls - 1) * importable_s + sum(caps.values())
    limit = int(re.search(r"^LIMIT_S=(\d+)", TEXT, re.M).group(1))
    assert limit == 480 and worst <= limit, (literal, caps, worst)
    # and whatever the nominal limits, each step is cut to the deadline less a reserve that
    # covers its kill grace and the summary
    reserve = int(re.search(r"^RESERVE_S=(\d+)", TEXT, re.M).group(1))
    grace = int(re.search(r'timeout -k (\d+) "\$secs"', TEXT).group(1))
    summary_s = int(re.search(r'timeout (\d+) "\$PY" - "\$RES"', TEXT).group(1))
    assert reserve >= grace + summary_s
    assert "secs=$(cap \"$2\")" in TEXT
    # the figures, last, also take what the steps before them left unused: still cut to the
    # deadline less the reserve (cap), so never past the limit
    extend = re.search(r'^fig_s=\$\(cap \d+\).*\n^rest=\$\(\(DEADLINE - SECONDS - RESERVE_S\)\)\n'
                       r'^\[ "\$rest" -gt "\$fig_s" \] && fig_s=\$rest\b.*\n^step figures "\$fig_s"', TEXT, re.M)
    assert extend, "the figures step should extend its share to the time left"


def test_keeps_results_folder_logs_wheels_and_fallback_flag():
    assert 'RES="${1:-${OUT:-$ROOT/gpu-results}}"' in TEXT
    assert "gpu_check.log" in TEXT and ".gpu-wheels" in TEXT
    assert "export GPUFRAME_RAISE_ON_FALLBACK=1" in TEXT
    assert "unset NUMBA_ENABLE_CUDASIM" in TEXT
    assert "--no-index" in TEXT and "ci/gpuframe_path.py" in TEXT
    # the script stops early only when the kernel check says kernels do not compile
    assert re.search(r"if \[ \$rc -eq %d \] \|\|" % kc.EXIT_COMPILE, TEXT)
    assert f'"status": "{kc.COMPILE}"' in TEXT   # the records of a kernel check cut short say so too
    assert TEXT.count("\n  finish\n") == 3 and TEXT.rstrip().endswith("finish")
    assert "summary.txt" in TEXT and "summary.json" in TEXT


def _module_commands() -> list[tuple[str, list[str]]]:
    caps = _caps()
    out = []
    for line in _logical_lines():
        m = re.search(r'-m (gpuframe\.benchmarks\.\w+) (.*)$', line)
        if not m:
            continue
        args = m.group(2).split("||")[0]
        args = re.sub(r"\$\(\((\w+) - (\d+)\)\)", lambda g: str(caps[g.group(1)] - int(g.group(2))), args)
        args = args.replace('"$RES/', '"RES/').replace('"${GPU_CHECK_SCALE:-1}"', "1")
        assert "$" not in args, args
        out.append((m.group(1), shlex.split(args)))
    return out


def test_every_python_command_in_the_script_parses():
    cmds = _module_commands()
    assert [m for m, _ in cmds] == ["gpuframe.benchmarks.gpu_kernel_check", "gpuframe.benchmarks.gpu_figures"]
    for module, args in cmds:
        mod = importlib.import_module(module)  # imports without a GPU or CuPy
        ns = mod.build_parser().parse_args(args)
        assert ns.budget_s > 0
    fig = gf.build_parser().parse_args(cmds[1][1])
    assert fig.budget_s <= _caps()["fig_s"] - 15 and fig.scale == 1.0


# --------------------------------------------------------------------------- figures: pure parts
def test_scale_shrinks_every_size():
    full = gf.figure_sizes(1.0)
    assert full == gf.BASE_SIZES
    small = gf.figure_sizes(0.01)
    for k, v in full.items():
        assert small[k] <= v
        if v * 0.01 > gf.MIN_SIZES[k]:
            assert small[k] < v
    assert gf.figure_sizes(1e-12) == {**gf.MIN_SIZES, "copy_bytes": gf.MIN_SIZES["copy_bytes"]}
    assert gf.figure_sizes(0.3)["copy_bytes"] % 8 == 0
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            gf.figure_sizes(bad)


def test_groupby_and_sort_figures_at_full_scale():
    full = gf.figure_sizes(1.0)
    assert full["groupby_rows"] == 100_000_000 and full["groupby_groups"] == full["groupby_rows"] // 100
    assert full["sort_rows"] == 100_000_000
    keys = [f.key for f in gf.FIGURES]
    # the figures with targets first, then issue 11's groupby and sort, before the other joins
    with_targets = [f.key for f in gf.FIGURES if f.targets]
    assert keys[:len(with_targets) + 3] == ["copy"] + with_targets + ["groupby_sum", "sort"]
    assert len(set(keys)) == len(keys)
    # every figure has its own limit, and the ones that run in the worst case fit the budget the
    # script gives the figures when every step before ran to its limit
    figs = {f.key: f for f in gf.FIGURES}
    assert figs["groupby_sum"].limit_s <= 40 and figs["sort"].limit_s <= 40
    budget = _caps()["fig_s"] - 20
    assert budget >= 110
    small = gf.figure_sizes(1e-9)
    assert small["groupby_groups"] < small["groupby_rows"] and small["sort_rows"] >= 2


def test_op_row_rates_and_targets():
    host = {"h2d_calls": 0, "h2d_bytes": 0, "d2h_calls": 1, "d2h_bytes": 8, "bytes": 8}
    op = gf.op_row("x", 0.004, tuples=20_000_000, bytes_moved=640_000_000, copy_bw=4e12, ref_s=0.008, host=host)
    assert op["tuples_per_s"] == pytest.approx(5e9) and op["bytes_per_s"] == pytest.approx(1.6e11)
    assert op["pct_copy"] == pytest.approx(4.0) and op["vs_ref"] == pytest.approx(2.0)
    none = gf.op_row("y", None, tuples=10)
    assert none["tuples_per_s"] is None and none["vs_ref"] is None and none["pct_copy"] is None
    assert gf.evaluate(6.5e9, ">=", 6.5e9) == "pass" and gf.evaluate(5e9, ">=", 6.5e9) == "fail"
    assert gf.evaluate(None, ">=", 1) == "unmeasured" and gf.evaluate(True, "==", True) == "pass"
    fig = dict((f.key, f) for f in gf.FIGURES)
    rows = gf.target_rows(fig["join_unique"].targets, {"join_tuples_per_s": 7e9}, "join_unique")
    assert [r["verdict"] for r in rows] == ["pass", "unmeasured"]
    assert rows[0]["display"] == "7.00 G/s" and rows[0]["target"] == ">= 6.5 G/s"
    assert gf.host_o1_row("f", "op", host)["verdict"] == "pass"
    assert gf.host_o1_row("f", "op", dict(host, bytes=80_000_000))["verdict"] == "fail"
    assert gf.host_o1_row("f", "op", None)["verdict"] == "unmeasured"
    # the three targets of the issue are declared, each on the figure that measures it
    declared = {t.name: (t.op, t.threshold) for f in gf.FIGURES for t in f.targets}
    assert declared["join_tuples_per_s"] == (">=", 6.5e9) and declared["join_vs_cupy"] == (">=", 3.0)
    assert declared["partition_pct_copy"] == (">=", 50.0)


def _records() -> list[dict]:
    figs = {f.key: f for f in gf.FIGURES}
    host = {"h2d_calls": 0, "h2d_bytes": 0, "d2h_calls": 1, "d2h_bytes": 8, "bytes": 8}
    big = dict(host, d2h_bytes=160_000_000, bytes=160_000_000)
    maps = gf.op_row("join 10Mx10M int64 unique: join_indices", 0.004, tuples=20_000_000, bytes_moved=480_000_000,
                     copy_bw=4e12, ref_s=0.00408, host=host)
    part = gf.op_row("hash_partition 100Mx2 int64 -> 64", 0.004, tuples=10**8, bytes_moved=3_200_000_000,
                     copy_bw=4e12, ref_s=0.01, host=big, show="bytes")
    return [
        gf.figure_record("join_unique", "join", "ok", ops=[maps],
                         targets=gf.target_rows(figs["join_unique"].targets,
                                                {"join_tuples_per_s": 7e9, "join_vs_cupy": 1.02}, "join_unique")
                         + [gf.host_o1_row("join_unique", maps["label"], host)]),
        gf.figure_record("hash_partition", "partition", "ok", ops=[part],
                         targets=gf.target_rows(figs["hash_partition"].targets, {"partition_pct_copy": 80.0},
                                                "hash_partition") + [gf.host_o1_row("p", part["label"], big)]),
        gf.figure_record("to_torch", "to_torch", "unmeasured", error="unmeasured: torch has no CUDA",
                         targets=gf.target_rows(figs["to_torch"].targets, {}, "to_torch")),
        gf.figure_record("join_string", "string join", "error", error="ResultMismatch: rows 3 vs 4"),
        gf.skipped_record(figs["outer_nullable"], "budget"),
    ]


def test_summary_text_and_json(tmp_path):
    meta = {"device": "NVIDIA H200", "scale": 1.0, "runs": 5, "created": "2026-12-04 21:00 UTC", "seconds": 99.0,
            "budget_s": 90.0}
    doc = gf.write_summary(_records(), str(tmp_path), meta)
    text = (tmp_path / "summary.txt").read_text()
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(doc, default=str))
    assert doc["counts"] == {"pass": 3, "fail": 2, "unmeasured": 1, "ok": 2, "error": 1, "skipped": 1,
                             "figures_unmeasured": 1}
    assert [t["verdict"] for t in doc["targets"]] == ["pass", "fail", "pass", "pass", "fail", "unmeasured"]
    lines = text.splitlines()
    assert len(lines) <= 30 and max(map(len, lines)) <= 120, text   # one screen
    assert "NVIDIA H200" in lines[0]
    assert re.search(r"join_indices\s+4 ms\s+5.00 G tup/s\s+3.0\s+1.02x\s+8 B ok", text), text
    assert re.search(r"vs CuPy sort join\s+1.02x\s+>= 3x\s+FAIL", text), text
    assert re.search(r"input tuples/s\s+7.00 G/s\s+>= 6.5 G/s\s+pass", text), text
    assert re.search(r"zero-copy\s+-\s+yes\s+unmeasured", text), text
    assert "ERROR string join" in text and "ResultMismatch: rows 3 vs 4" in text
    assert "SKIPPED" in text and "skipped: budget" in text
    assert "UNMEASURED to_torch" in text
    assert re.search(r"host traffic O\(1\) per operation \(2 ops\)\s+max 152.6 MiB\s+<= 64.0 KiB\s+FAIL", text), text
    assert lines[-1] == "targets: 3 pass, 2 fail, 1 unmeasured | figures: 2 ok, 1 error, 1 skipped, 1 unmeasured"
    assert gf.exit_status(_records()) == gf.EXIT_FAILED
    assert gf.exit_status(_records()[:3]) == gf.EXIT_OK   # unmet targets alone do not fail the run


class _FakeEnv:
    simulated = True

    def free(self):
        pass


def test_figures_are_independent_and_budgeted():
    def ok(ctx):
        return gf._result([gf.op_row("fine", 0.001, tuples=10)], {"join_tuples_per_s": 1e10, "join_vs_cupy": 4.0}, {})

    def boom(ctx):
        raise ValueError("bad\nthing")

    def slow(ctx):
        time.sleep(5)

    def burn(ctx):
        time.sleep(0.5)
        return gf._result([], {}, {})

    def none(ctx):
        raise gf.Unmeasured("no torch")

    targets = dict((f.key, f) for f in gf.FIGURES)["join_unique"].targets
    figs = [gf.Figure("a", "A", boom, 10), gf.Figure("b", "B", ok, 10, targets),
            gf.Figure("c", "C", slow, 0.3, targets), gf.Figure("d", "D", none, 10), gf.Figure("e", "E", burn, 10),
            gf.Figure("f", "F", ok, 10, targets)]
    ctx = gf.Ctx(env=_FakeEnv(), sizes=gf.figure_sizes(1e-6))
    seen = []
    t0 = time.monotonic()
    recs = gf.run_figures(figs, ctx, budget_s=gf.MIN_START_S + 0.7, on_record=lambda r: seen.append(len(r)))
    assert time.monotonic() - t0 < 3
    assert [r["status"] for r in recs] == ["error", "ok", "error", "unmeasured", "ok", "skipped"]
    assert recs[0]["error"] == "ValueError: bad thing" and "Traceback" in recs[0]["traceback"]
    assert [t["verdict"] for t in recs[1]["targets"]] == ["pass", "pass"]
    assert recs[2]["error"].startswith("timeout") and [t["verdict"] for t in recs[2]["targets"]] == ["unmeasured"] * 2
    assert recs[3]["error"] == "unmeasured: no torch"
    assert recs[5]["error"] == "skipped: budget" and [t["verdict"] for t in recs[5]["targets"]] == ["unmeasured"] * 2
    assert seen == [1, 2, 3, 4, 5, 6]   # the summary is rewritten after every figure


# --------------------------------------------------------------------------- references (NumPy in for CuPy)
def test_sort_joins_match_a_plain_join():
    rng = np.random.default_rng(0)
    bk = gf.unique_keys(np, 50, 1)
    pk = np.concatenate([bk[rng.integers(0, 50, 70)], gf.unique_keys(np, 5, 9)])   # 5 probe keys miss
    li, ri = gf.sort_join_unique(np, pk, bk)
    want = {(i, int(np.flatnonzero(bk == k)[0])) for i, k in enumerate(pk) if k in set(bk.tolist())}
    assert set(zip(li.tolist(), ri.tolist())) == want and len(li) == 70
    bk4 = np.tile(bk[:10], 4)[rng.permutation(40)]
    li, ri = gf.sort_join(np, pk, bk4)
    brute = Counter((i, j) for i in range(len(pk)) for j in range(len(bk4)) if pk[i] == bk4[j])
    assert Counter(zip(li.tolist(), ri.tolist())) == brute
    assert gf.pair_checksum(np, li, ri) == gf.pair_checksum(np, li[::-1].copy(), ri[::-1].copy())
    assert gf.pair_checksum(np, li, ri) != gf.pair_checksum(np, ri, li)
    e = np.zeros(0, np.int64)
    assert [len(x) for x in gf.sort_join(np, e, bk)] == [0, 0]


def test_sort_partition_and_keys():
    a, b = gf.unique_keys(np, 1000, 3), gf.payload(np, 1000, 4)
    assert len(set(a.tolist())) == 1000 and a.dtype == np.int64 and a.min() < 0 < a.max()
    pa_, pb, offsets = gf.sort_partition(np, a, b, 64)
    assert offsets[0] == 0 and offsets[-1] == 1000 and len(offsets) == 65
    pid = (gf.mix64(pa_.view(np.uint64)) % np.uint64(64)).astype(np.int64)
    assert (np.diff(pid) >= 0).all() and gf.wsum(np, pa_) == gf.wsum(np, a) and gf.wsum(np, pb) == gf.wsum(np, b)
    c = gf.codes(np, 500, 7, 5)
    assert c.min() >= 0 and c.max() < 7


def test_sort_groupby_sum_matches_a_plain_groupby():
    rng = np.random.default_rng(11)
    k = gf.mix64(gf.codes(np, 500, 37, 3).view(np.uint64)).view(np.int64)
    v = rng.integers(-1000, 1000, 500).astype(np.int64)
    want: dict[int, int] = {}
    for key, val in zip(k.tolist(), v.tolist()):
        want[key] = want.get(key, 0) + val
    rk, rs = gf.sort_groupby_sum(np, k, v)
    assert rk.tolist() == sorted(want) and rs.tolist() == [want[x] for x in sorted(want)]
    assert rk.min() < 0 < rk.max()   # full-range keys
    one = gf.sort_groupby_sum(np, np.array([5], np.int64), np.array([7], np.int64))
    assert [a.tolist() for a in one] == [[5], [7]]
    assert [len(a) for a in gf.sort_groupby_sum(np, np.zeros(0, np.int64), np.zeros(0, np.int64))] == [0, 0]
    # a running sum that wraps still gives exact segment sums
    big = np.array([2**62, 2**62, 2**62 - 1, -5], np.int64)
    rk, rs = gf.sort_groupby_sum(np, np.array([1, 2, 3, 4], np.int64), big)
    assert rs.tolist() == big.tolist()


def test_sort_permutation_check():
    k = gf.mix64(gf.codes(np, 300, 120, 5).view(np.uint64)).view(np.int64)
    perm = gf.stable_argsort(np, k)
    got = gf.check_sort_permutation(np, k, perm)
    assert got["ties"] > 0
    assert {**got, "ties": 0} == {"rows": 300, "out_of_range": 0, "missing": 0, "descents": 0, "unstable": 0,
                                  "ties": 0}
    sk = k[perm]
    tie = int(np.flatnonzero(sk[1:] == sk[:-1])[0])
    swapped = perm.copy()
    swapped[[tie, tie + 1]] = swapped[[tie + 1, tie]]
    assert gf.check_sort_permutation(np, k, swapped)["unstable"] == 1
    assert gf.check_sort_permutation(np, k, swapped)["descents"] == 0
    assert gf.check_sort_permutation(np, k, perm[::-1].copy())["descents"] > 0
    dup = perm.copy()
    dup[0] = dup[1]
    assert gf.check_sort_permutation(np, k, dup)["missing"] == 1
    bad = perm.copy()
    bad[3] = 300
    assert gf.check_sort_permutation(np, k, bad)["out_of_range"] == 1
    assert gf.check_sort_permutation(np, k, perm[:-1])["rows"] == 299
    # NumPy's stand-in for cupy.argsort is the stable sort
    assert (gf.stable_argsort(np, np.array([3, 1, 3, 1, 2])) == [1, 3, 4, 0, 2]).all()


def test_outer_reference_matches_a_plain_outer_join():
    rng = np.random.default_rng(5)
    n = 60
    lcode, lnull = rng.integers(0, 2 * n, n), rng.random(n) < 0.2
    rcode, rnull = rng.permutation(n), rng.random(n) < 0.2
    a, anull = rng.integers(0, 100, n), rng.random(n) < 0.2
    b, bnull = rng.integers(0, 100, n), rng.random(n) < 0.2
    rows, matched = [], set()
    for i in range(n):
        hits = [] if lnull[i] else [j for j in range(n) if not rnull[j] and rcode[j] == lcode[i]]
        rows += [(i, j) for j in hits] or [(i, None)]
        matched.update(hits)
    rows += [(None, j) for j in range(n) if j not in matched]
    a_vals = [None if (i is None or anull[i]) else int(a[i]) for i, _ in rows]
    b_vals = [None if (j is None or bnull[j]) else int(b[j]) for _, j in rows]
    want = (len(rows), sum(v for v in a_vals if v is not None), sum(v for v in b_vals if v is not None),
            sum(v is None for v in a_vals))
    assert gf.outer_reference(lcode, lnull, rcode, rnull, a, anull, b, bnull) == want


# --------------------------------------------------------------------------- kernel check
def test_kernel_check_tells_compile_failures_apart():
    import numba

    @numba.njit
    def bad(x):
        return x.no_such_attribute

    with pytest.raises(Exception) as info:
        bad(1)
    assert kc.is_compile_error(info.value)
    assert not kc.is_compile_error(ValueError("a wrong answer"))
    assert kc.is_compile_error(RuntimeError("cuModuleLoadDataEx: CUDA_ERROR_INVALID_PTX"))
    try:
        try:
            bad(2)
        except Exception as e:
            raise RuntimeError("while launching") from e
    except RuntimeError as outer:
        assert kc.is_compile_error(outer)
    recs = [{"status": kc.OK}, {"status": kc.SKIPPED}]
    assert kc.exit_status(recs) == kc.EXIT_OK
    assert kc.exit_status(recs + [{"status": kc.DIFFERS}]) == kc.EXIT_FAILED
    assert kc.exit_status(recs + [{"status": kc.DIFFERS}, {"status": kc.COMPILE}]) == kc.EXIT_COMPILE
    assert "1 differ, 1 compile failed" in kc.summary_line(recs + [{"status": kc.DIFFERS}, {"status": kc.COMPILE}])


def test_kernel_check_covers_every_family_and_how():
    cases = kc.cases()
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids))
    assert [c.family for c in cases[:5]] == ["hashing", "partition", "gather", "join", "merged_key"]
    for how in kc.HOWS:
        for shape in ("int64_dups_nulls", "string", "multi_int_string", "multi_fixed", "int32_vs_int64"):
            assert any(c.name == f"{shape}/{how}" for c in cases), (shape, how)
    assert {n for n in kc.ALL_TYPES} <= {c.name for c in cases if c.family == "hashing"}
    # the table operations' kernels: grouping, sorting, selection
    assert {"group", "sort", "select", "exchange", "keyprep"} <= {c.family for c in cases}


def _env_without_gpu() -> dict:
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    return env


@pytest.mark.skipif(gpu_count() > 0, reason="a GPU is present")
def test_without_a_gpu_both_scripts_say_so_and_exit_2(tmp_path):
    out = tmp_path / "figs"
    r = subprocess.run([sys.executable, "-m", "gpuframe.benchmarks.gpu_figures", "--out", str(out), "--scale", "0.001"],
                       capture_output=True, text=True, env=_env_without_gpu(), timeout=60)
    assert r.returncode == gf.EXIT_NO_GPU, r.stderr
    assert "no CUDA GPU" in r.stderr and "Traceback" not in r.stderr
    doc = json.loads((out / "summary.json").read_text())
    assert {f["status"] for f in doc["figures"]} == {"skipped"} and len(doc["figures"]) == len(gf.FIGURES)
    assert "NOT MEASURED" in (out / "summary.txt").read_text()
    r = subprocess.run([sys.executable, "-m", "gpuframe.benchmarks.gpu_kernel_check"], capture_output=True, text=True,
                       env=_env_without_gpu(), timeout=60)
    assert r.returncode == kc.EXIT_NO_GPU and "no CUDA GPU" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- the install fallback
_WITHOUT_INSTALL = r"""
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__ + repr(f)]
sys.path_hooks[:] = [h for h in sys.path_hooks if "editable" not in repr(h)]
sys.path_importer_cache.clear()
sys.path[:] = [p for p in sys.path if p not in ("", ROOT)]
try:
    import gpuframe
    sys.exit("gpuframe importable without the hook: the test cannot tell")
except ImportError:
    pass
exec(HOOK)
import gpuframe, gpuframe.kernels.join, gpuframe.benchmarks.gpu_figures, gpuframe.comm
print(gpuframe.kernels.join.__file__, gpuframe.benchmarks.gpu_figures.__file__)
"""


def test_install_fallback_maps_the_packages(tmp_path):
    sys.path.insert(0, str(ROOT / "ci"))
    try:
        import gpuframe_path
    finally:
        sys.path.remove(str(ROOT / "ci"))
    assert gpuframe_path.package_dirs(str(ROOT))["gpuframe.kernels"] == str(ROOT / "cuda_kernels")
    code = f"ROOT = {str(ROOT)!r}\nHOOK = {gpuframe_path.hook_code(str(ROOT))!r}\n" + _WITHOUT_INSTALL
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr + r.stdout
    assert r.stdout.split() == [str(ROOT / "cuda_kernels" / "join.py"), str(ROOT / "benchmarks" / "gpu_figures.py")]
    pth = gpuframe_path.write_pth(str(ROOT), [str(tmp_path / "site")])
    assert Path(pth).read_text().startswith("import ") and Path(pth).read_text().count("\n") == 1
    folder = gpuframe_path.write_sitecustomize(str(ROOT), str(tmp_path / "pypath"))
    assert "_m.install(" in (Path(folder) / "sitecustomize.py").read_text()
