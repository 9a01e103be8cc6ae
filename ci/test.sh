#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every lane.
#   lanes: cpu, cudasim (NUMBA_ENABLE_CUDASIM=1, separate process; records every kernel launch's
#   argument types), ptx (every recorded kernel signature compiled by the real NVVM for sm_80 and
#   sm_90 and assembled by ptxas, no GPU needed), distributed (local Dask clusters over UCX and
#   TCP), gpu (skipped without a GPU), bench-smoke (every benchmark at the smoke size, answers
#   checked); and, only when named, compile (every job of `gpuframe compile`, in process).
# Each pytest lane ends with its 15 slowest tests (the test command has a 20-minute budget).
# Usage: bash ci/test.sh [lane ...]     (default: every lane but compile)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

lanes=("$@")
# ptx and bench-smoke (no timing asserted in either) run niced in the background beside the lanes
# after them: the distributed lane leaves about a quarter of the two cores idle (alone, warm: 884
# CPU-seconds in 590 s), and at nice 19 they take little from it when it is busy
[ ${#lanes[@]} -eq 0 ] && lanes=(cpu cudasim ptx bench-smoke distributed gpu)
launches="$(mktemp -d)/launches.json"  # kernel signatures the cudasim lane records for the ptx lane
export GPUFRAME_RAISE_ON_FALLBACK=1
results=()
fail=0

run_pytest() {  # name, then pytest args; pytest's exit 5 (no tests collected) is a failure
  local name="$1"; shift
  local t0=$SECONDS rc=0
  echo "== lane $name: pytest $*"
  python -m pytest -q -p no:cacheprovider --durations=15 "$@" || rc=$?
  if [ $rc -eq 5 ]; then echo "lane $name collected no tests: failing"; fi
  results+=("$name: exit $rc in $((SECONDS - t0)) s")
  [ $rc -eq 0 ] || fail=1
}

lane_ptx() { python ci/ptx_lane.py --signatures "$launches"; }
lane_bench_smoke() {
  local out rc=0
  out="$(mktemp -d)"
  gpuframe bench all --rows smoke --runs 1 --out "$out/smoke.json" && \
    gpuframe bench report "$out/smoke.json" --out-dir "$out" || rc=$?
  rm -rf "$out"
  return $rc
}

lane_cudasim() {
  # the simulator runs kernels as Python, one core a process: two pytest-xdist workers, tests
  # dealt as they finish. Each worker records its launches (FILE.gw0, FILE.gw1), merged here for
  # the ptx lane.
  local rc=0
  echo "== lane cudasim: pytest -n 2 --dist worksteal tests/cudasim"
  NUMBA_ENABLE_CUDASIM=1 GPUFRAME_RECORD_LAUNCHES="$launches" \
    python -m pytest -q -p no:cacheprovider --durations=15 -n 2 --dist worksteal tests/cudasim || rc=$?
  if [ $rc -eq 5 ]; then echo "lane cudasim collected no tests: failing"; fi
  python - "$launches" "$launches".gw* <<'PY' || { [ $rc -ne 0 ] || rc=1; }
import json, os, sys
out, parts = sys.argv[1], sys.argv[2:]
merged = {}
for p in parts:
    if os.path.exists(p):
        for k, v in json.load(open(p)).items():
            merged.setdefault(k, set()).update(v)
if not merged:
    sys.exit("no kernel launch was recorded")
json.dump({k: sorted(v) for k, v in sorted(merged.items())}, open(out, "w"), indent=1)
PY
  return $rc
}

sim_pid=""
bg_names=(); bg_pids=(); bg_logs=(); bg_t0=()
run_lane() {  # name, function: in the background (niced) when a foreground lane follows, else now
  local name="$1" fn="$2" i="$3" later rc=0 t0=$SECONDS
  for later in "${lanes[@]:$((i + 1))}"; do
    case "$later" in ptx|bench-smoke) ;; *)
      local log; log="$(mktemp)"
      echo "== lane $name: in the background at nice 19 (its output follows the summary's lanes)"
      ( renice -n 19 -p "$BASHPID" >/dev/null; "$fn" ) >"$log" 2>&1 &
      bg_names+=("$name"); bg_pids+=($!); bg_logs+=("$log"); bg_t0+=("$t0")
      return 0 ;;
    esac
  done
  echo "== lane $name"
  "$fn" || rc=$?
  results+=("$name: exit $rc in $((SECONDS - t0)) s")
  [ $rc -eq 0 ] || fail=1
}

for i in "${!lanes[@]}"; do
  lane="${lanes[$i]}"
  case "$lane" in
    cpu)
      # two processes, one per core: most of a cold lane is numba compiling kernels, one core
      # each; the join/partition/per-row files in one, the rest (table operations, interop,
      # core, CLI...) in the other. Not pytest-xdist: dealing files as workers finish made both
      # compile most kernels (a fresh clone's lane took 345 s against 306 s this way). When the
      # simulator lane comes next, it starts as soon as either process ends (the other one took
      # 43 s longer in a fresh clone: a core left idle)
      t0=$SECONDS; rc=0; rc2=0
      cpuA=(tests/test_join.py tests/test_join_hypothesis.py tests/test_join_keys.py tests/test_range_check_nulls.py
            tests/test_partition.py tests/test_gather.py tests/test_hashing.py tests/test_one_source.py
            tests/test_per_row_targets.py tests/test_keyprep_per_row.py tests/test_assemble_per_row.py
            tests/test_kernel_records.py tests/test_numba_cuda_compat.py tests/test_cpu_threads.py)
      # the second process's files in name order, but those that join (set operations, the
      # benchmarks, the CLI, the demo...) last: the first process compiles the join's kernels
      # first, and the second, reaching them in its first minute, compiled the same kernels at
      # the same time (test_backend_registry.py's fresh interpreter took 69 s in a fresh clone,
      # the set operations' benchmark 65 s); last, they find them in numba's cache
      cpuLate=(tests/test_setops.py tests/test_streams.py tests/test_narrow_host.py tests/test_jit_cache.py
               tests/test_host_memory.py tests/test_bench_groupby_setops.py tests/test_bench_help.py
               tests/test_bench_keepalive.py tests/test_bench_report.py tests/test_cli.py tests/test_demo.py
               tests/test_backend_registry.py)
      cpuB=()
      for f in tests/test_*.py; do
        case " ${cpuA[*]} ${cpuLate[*]} " in *" $f "*) ;; *) cpuB+=("$f") ;; esac
      done
      cpuB+=("${cpuLate[@]}")
      echo "== lane cpu: pytest in two processes: ${cpuA[*]} | the other ${#cpuB[@]} files"
      logA="$(mktemp)"; logB="$(mktemp)"
      python -m pytest -q -p no:cacheprovider --durations=15 -m "not distributed and not compile_jobs" "${cpuA[@]}" >"$logA" 2>&1 &
      pidA=$!
      python -m pytest -q -p no:cacheprovider --durations=15 -m "not distributed and not compile_jobs" "${cpuB[@]}" >"$logB" 2>&1 &
      pidB=$!
      if [ "${lanes[$((i + 1))]:-}" = cudasim ]; then
        wait -n "$pidA" "$pidB" || true        # the statuses are collected below
        sim_log="$(mktemp)"; sim_t0=$SECONDS
        ( lane_cudasim ) >"$sim_log" 2>&1 &
        sim_pid=$!
      fi
      wait "$pidA" || rc2=$?
      wait "$pidB" || rc=$?
      echo "-- cpu, first process:"; cat "$logA"; echo "-- cpu, second process:"; cat "$logB"; rm -f "$logA" "$logB"
      for r in $rc $rc2; do [ "$r" -eq 5 ] && echo "lane cpu collected no tests: failing"; done
      results+=("cpu: exit $rc/$rc2 in $((SECONDS - t0)) s")
      { [ $rc -eq 0 ] && [ $rc2 -eq 0 ]; } || fail=1 ;;
    cudasim)
      rc=0
      if [ -n "$sim_pid" ]; then
        echo "== lane cudasim (started when the first cpu process ended)"
        wait "$sim_pid" || rc=$?
        cat "$sim_log"; rm -f "$sim_log"
        results+=("cudasim: exit $rc in $((SECONDS - sim_t0)) s, from the end of the first cpu process")
      else
        t0=$SECONDS
        lane_cudasim || rc=$?
        results+=("cudasim: exit $rc in $((SECONDS - t0)) s")
      fi
      [ $rc -eq 0 ] || fail=1 ;;
    ptx) run_lane ptx lane_ptx "$i" ;;           # NVVM + ptxas, sm_80 and sm_90
    bench-smoke) run_lane bench-smoke lane_bench_smoke "$i" ;;   # every benchmark, smoke size, answers checked
    distributed) run_pytest distributed tests/distributed tests/test_demo.py -m distributed ;;
    # gpuframe compile's jobs, every one (not a default lane: about 200 s more on 2 cores, most of
    # it compiling kernel signatures that only the jobs use; ci/demo.sh runs the real command)
    compile) run_pytest compile tests/test_precompile.py -m compile_jobs ;;
    gpu)
      if python -c "import sys; from gpuframe.core.device import gpu_count; sys.exit(0 if gpu_count() else 1)"; then
        run_pytest gpu tests/gpu tests -m gpu
      else
        echo "== lane gpu: skipped (no CUDA GPU found; run ci/gpu_check.sh on a GPU machine)"
        results+=("gpu: skipped, no GPU")
      fi ;;
    *) echo "unknown lane $lane (expected cpu, cudasim, ptx, distributed, gpu, bench-smoke, compile)"; exit 2 ;;
  esac
done

for k in "${!bg_pids[@]}"; do
  rc=0
  wait "${bg_pids[$k]}" || rc=$?
  echo "-- lane ${bg_names[$k]} (in the background):"; cat "${bg_logs[$k]}"; rm -f "${bg_logs[$k]}"
  results+=("${bg_names[$k]}: exit $rc in $((SECONDS - bg_t0[$k])) s, in the background")
  [ $rc -eq 0 ] || fail=1
done

echo "== summary"
printf '  %s\n' "${results[@]}"
exit $fail
