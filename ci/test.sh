#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every lane.
#   lanes: cpu, cudasim (NUMBA_ENABLE_CUDASIM=1, separate process; records every kernel launch's
#   argument types), ptx (every recorded kernel signature compiled by the real NVVM for sm_80 and
#   sm_90 and assembled by ptxas, no GPU needed), distributed (local Dask clusters over UCX and
#   TCP), gpu (skipped without a GPU), bench-smoke (every benchmark at the smoke size, answers
#   checked).
# Usage: bash ci/test.sh [lane ...]     (default: all lanes)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

lanes=("$@")
# ptx just before bench-smoke: it then runs beside it (see the ptx lane)
[ ${#lanes[@]} -eq 0 ] && lanes=(cpu cudasim distributed gpu ptx bench-smoke)
launches="$(mktemp -d)/launches.json"  # kernel signatures the cudasim lane records for the ptx lane
export GPUFRAME_RAISE_ON_FALLBACK=1
results=()
fail=0

run_pytest() {  # name, then pytest args; pytest's exit 5 (no tests collected) is a failure
  local name="$1"; shift
  local t0=$SECONDS rc=0
  echo "== lane $name: pytest $*"
  python -m pytest -q -p no:cacheprovider "$@" || rc=$?
  if [ $rc -eq 5 ]; then echo "lane $name collected no tests: failing"; fi
  results+=("$name: exit $rc in $((SECONDS - t0)) s")
  [ $rc -eq 0 ] || fail=1
}

ptx_pid=""
for i in "${!lanes[@]}"; do
  lane="${lanes[$i]}"
  case "$lane" in
    cpu)
      # two processes, one per core: most of a cold lane is numba compiling kernels, one core
      # each; the join/partition/per-row files in one, the rest (table operations, interop,
      # core, CLI...) in the other
      t0=$SECONDS; rc=0; rc2=0
      cpuA=(tests/test_join.py tests/test_join_hypothesis.py tests/test_join_keys.py tests/test_range_check_nulls.py
            tests/test_partition.py tests/test_gather.py tests/test_hashing.py tests/test_one_source.py
            tests/test_per_row_targets.py tests/test_keyprep_per_row.py tests/test_assemble_per_row.py
            tests/test_kernel_records.py tests/test_numba_cuda_compat.py tests/test_cpu_threads.py)
      cpuB=()
      for f in tests/test_*.py; do
        case " ${cpuA[*]} " in *" $f "*) ;; *) cpuB+=("$f") ;; esac
      done
      echo "== lane cpu: pytest in two processes: ${cpuA[*]} | the other ${#cpuB[@]} files"
      logA="$(mktemp)"
      python -m pytest -q -p no:cacheprovider -m "not distributed" "${cpuA[@]}" >"$logA" 2>&1 &
      pidA=$!
      python -m pytest -q -p no:cacheprovider -m "not distributed" "${cpuB[@]}" || rc=$?
      wait $pidA || rc2=$?
      echo "-- cpu, first process:"; cat "$logA"; rm -f "$logA"
      for r in $rc $rc2; do [ "$r" -eq 5 ] && echo "lane cpu collected no tests: failing"; done
      results+=("cpu: exit $rc/$rc2 in $((SECONDS - t0)) s")
      { [ $rc -eq 0 ] && [ $rc2 -eq 0 ]; } || fail=1 ;;
    cudasim)
      # two processes, one per core: the simulator runs kernels as Python, on one core each.
      # Each records its launches; the ptx lane gets them merged.
      t0=$SECONDS; rc=0; rc2=0
      simA=(tests/cudasim/test_transfers_sim.py tests/cudasim/test_exchange_device_sim.py
            tests/cudasim/test_gpu_scripts_sim.py tests/cudasim/test_keyprep_sim.py
            tests/cudasim/test_core_review_sim.py tests/cudasim/test_validation_sim.py
            tests/cudasim/test_interop_sim.py tests/cudasim/test_partition_sim.py tests/cudasim/test_groups_sim.py
            tests/cudasim/test_join_table_sim.py tests/cudasim/test_streams_sim.py)
      simB=()
      for f in tests/cudasim/test_*.py; do
        case " ${simA[*]} " in *" $f "*) ;; *) simB+=("$f") ;; esac
      done
      echo "== lane cudasim: pytest in two processes: ${simA[*]} | the other ${#simB[@]} files"
      logA="$(mktemp)"
      NUMBA_ENABLE_CUDASIM=1 GPUFRAME_RECORD_LAUNCHES="$launches.a" \
        python -m pytest -q -p no:cacheprovider "${simA[@]}" >"$logA" 2>&1 &
      pidA=$!
      NUMBA_ENABLE_CUDASIM=1 GPUFRAME_RECORD_LAUNCHES="$launches.b" \
        python -m pytest -q -p no:cacheprovider "${simB[@]}" || rc=$?
      wait $pidA || rc2=$?
      echo "-- cudasim, first process:"; cat "$logA"; rm -f "$logA"
      python - "$launches" "$launches.a" "$launches.b" <<'PY' || rc=1
import json, os, sys
out, parts = sys.argv[1], sys.argv[2:]
merged = {}
for p in parts:
    if os.path.exists(p):
        for k, v in json.load(open(p)).items():
            merged.setdefault(k, set()).update(v)
json.dump({k: sorted(v) for k, v in sorted(merged.items())}, open(out, "w"), indent=1)
PY
      for r in $rc $rc2; do [ "$r" -eq 5 ] && echo "lane cudasim collected no tests: failing"; done
      results+=("cudasim: exit $rc/$rc2 in $((SECONDS - t0)) s")
      { [ $rc -eq 0 ] && [ $rc2 -eq 0 ]; } || fail=1 ;;
    ptx)
      t0=$SECONDS; rc=0
      echo "== lane ptx: python ci/ptx_lane.py (NVVM + ptxas, sm_80 and sm_90)"
      if [ "${lanes[$((i + 1))]:-}" = bench-smoke ]; then
        # NVVM compiles on one core; the bench-smoke lane (answers checked, no timing asserted)
        # leaves one idle much of the time: the two run side by side, the ptx output after
        ptx_t0=$SECONDS
        ptx_log="$(mktemp)"
        python ci/ptx_lane.py --signatures "$launches" >"$ptx_log" 2>&1 &
        ptx_pid=$!
        echo "(runs beside bench-smoke; its output follows that lane's)"
      else
        python ci/ptx_lane.py --signatures "$launches" || rc=$?
        results+=("ptx: exit $rc in $((SECONDS - t0)) s")
        [ $rc -eq 0 ] || fail=1
      fi ;;
    distributed) run_pytest distributed tests/distributed tests/test_demo.py -m distributed ;;
    gpu)
      if python -c "import sys; from gpuframe.core.device import gpu_count; sys.exit(0 if gpu_count() else 1)"; then
        run_pytest gpu tests/gpu tests -m gpu
      else
        echo "== lane gpu: skipped (no CUDA GPU found; run ci/gpu_check.sh on a GPU machine)"
        results+=("gpu: skipped, no GPU")
      fi ;;
    bench-smoke)
      t0=$SECONDS; rc=0
      out="$(mktemp -d)"
      echo "== lane bench-smoke: gpuframe bench all --rows smoke --runs 1"
      gpuframe bench all --rows smoke --runs 1 --out "$out/smoke.json" && \
        gpuframe bench report "$out/smoke.json" --out-dir "$out" || rc=$?
      rm -rf "$out"
      results+=("bench-smoke: exit $rc in $((SECONDS - t0)) s")
      [ $rc -eq 0 ] || fail=1 ;;
    *) echo "unknown lane $lane (expected cpu, cudasim, ptx, distributed, gpu, bench-smoke)"; exit 2 ;;
  esac
done

if [ -n "$ptx_pid" ]; then
  rc=0
  wait "$ptx_pid" || rc=$?
  echo "-- lane ptx (beside bench-smoke):"; cat "$ptx_log"; rm -f "$ptx_log"
  results+=("ptx: exit $rc in $((SECONDS - ptx_t0)) s, beside bench-smoke")
  [ $rc -eq 0 ] || fail=1
fi

echo "== summary"
printf '  %s\n' "${results[@]}"
exit $fail
