#!/usr/bin/env bash
# One script for a person (or the device machine) with a CUDA GPU, at most 8 minutes on one
# H100/H200 (LIMIT_S), no network. In order, each step under `timeout` and cut to the time left:
#
#   1. install: gpuframe from this checkout (pip install -e, offline; when pip cannot, a path
#      hook from ci/gpuframe_path.py), checked by importing it; .gpu-wheels/*.whl first if present
#   2. kernel-check: every CUDA kernel family on tiny data, GPU answer == CPU answer
#      (gpuframe.benchmarks.gpu_kernel_check); the script stops here only when kernels do not compile
#   3. gpu-tests: tests/gpu
#   4. cudasim-on-gpu: the whole simulator suite (tests/cudasim) on the real GPU
#   5. figures: the GPU figures against their targets (gpuframe.benchmarks.gpu_figures, with a
#      time budget): copy bandwidth, joins, hash_partition, to_torch, groupby-sum of 100M rows
#      into 1M groups, sort of 100M int64 keys; written to RES/figures/summary.{txt,json}. Its
#      limit is its own share (fig_s) plus whatever the steps before it left of theirs
#   6. the one-screen summary: RES/summary.txt (printed) and RES/summary.json
#
# Results go to the folder given as $1 (default: $OUT, else ./gpu-results): a log per step,
# gpu_check.log, steps.tsv, JUnit XML of the test steps, kernel_check.json, figures/.
#
# The machine's image is expected to have python3 with numba-cuda, CuPy, torch, pyarrow, pandas,
# pytest and hypothesis (not dask, ucxx, polars, duckdb or cuDF: tests/gpu and tests/cudasim do
# not need them). Missing pure-Python wheels can come in ./.gpu-wheels (ci/gpu_wheels.sh).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RES="${1:-${OUT:-$ROOT/gpu-results}}"
mkdir -p "$RES"
RES="$(cd "$RES" && pwd)"
PY="${PYTHON:-python3}"
LIMIT_S=480        # the whole script
RESERVE_S=15       # kept back for the summary
DEADLINE=$((SECONDS + LIMIT_S))
STEPS="$RES/steps.tsv"
: >"$STEPS"
: >"$RES/gpu_check.log"
rm -rf "$RES/figures" "$RES/kernel_check.json" "$RES/summary.txt" "$RES/summary.json"   # no stale results
unset NUMBA_ENABLE_CUDASIM   # the real GPU, never the simulator
export GPUFRAME_RAISE_ON_FALLBACK=1   # a CUDA operation may never quietly run on the CPU
status=0

log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$RES/gpu_check.log"; }
# seconds left for a step: the deadline less the reserve, at most $1
cap() { local left=$((DEADLINE - SECONDS - RESERVE_S)); [ "$1" -lt "$left" ] && echo "$1" || echo "$left"; }

# step NAME SECONDS COMMAND...: COMMAND under timeout (SECONDS, cut to the time left), its output
# in RES/NAME.log, one line in steps.tsv (name, exit status, seconds, its log's last line);
# returns the command's exit status (124: stopped by the time limit; 125: no time left)
step() {
  local name="$1" secs t0=$SECONDS rc=0
  secs=$(cap "$2"); shift 2
  if [ "$secs" -lt 5 ]; then
    log "skip $name: no time left"
    printf '%s\t%s\t%s\t%s\n' "$name" skipped 0 "no time left of the $LIMIT_S s" >>"$STEPS"
    return 125
  fi
  log "start $name (at most $secs s)"
  timeout -k 5 "$secs" "$@" >"$RES/$name.log" 2>&1 || rc=$?
  [ $rc -eq 124 ] && echo "[gpu_check] $name: stopped at its time limit of $secs s" >>"$RES/$name.log"
  log "end $name: exit $rc in $((SECONDS - t0)) s"
  tail -n 5 "$RES/$name.log" | sed 's/^/    /' | tee -a "$RES/gpu_check.log"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" \
    "$(grep -v '^[[:space:]]*$' "$RES/$name.log" | tail -n 1 | tr '\t' ' ' | cut -c1-100)" >>"$STEPS"
  return $rc
}

finish() {
  local gpu="${GPU_NAME:-no GPU seen}"
  {
    echo "gpu_check: $(date -u '+%Y-%m-%d %H:%M UTC') | $gpu | $SECONDS s of $LIMIT_S s | exit $status"
    printf '%-15s %7s %5s  %s\n' step exit secs "last line of its log"
    while IFS=$'\t' read -r n rc s last; do printf '%-15s %7s %5s  %s\n' "$n" "$rc" "$s" "$last"; done <"$STEPS"
    echo
    if [ -f "$RES/figures/summary.txt" ]; then cat "$RES/figures/summary.txt"; else echo "figures: not run"; fi
  } >"$RES/summary.txt"
  timeout 8 "$PY" - "$RES" "$status" "$gpu" <<'EOF' || log "summary.json not written"
import json, os, sys
res, status, gpu = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(name):
    try:
        with open(os.path.join(res, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
steps = []
with open(os.path.join(res, "steps.tsv")) as f:
    for line in f:
        n, rc, s, last = (line.rstrip("\n").split("\t") + ["", "", "", ""])[:4]
        steps.append({"step": n, "exit": rc, "seconds": s, "last_line": last})
kc = load("kernel_check.json")
doc = {"exit": status, "gpu": gpu, "steps": steps,
       "kernel_check": None if kc is None else {"summary": kc.get("summary"), "seconds": kc.get("seconds")},
       "figures": load(os.path.join("figures", "summary.json"))}
with open(os.path.join(res, "summary.json"), "w") as f:
    json.dump(doc, f, indent=1)
EOF
  echo
  cat "$RES/summary.txt"
  log "done: exit $status in $SECONDS s; results in $RES"
  exit $status
}

# --------------------------------------------------------------------------- 1. install
GPU_NAME="$(timeout 5 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  | head -1)"
GPU_NAME="${GPU_NAME:-nvidia-smi: no answer}"
log "machine: $GPU_NAME"
if [ -d .gpu-wheels ]; then
  timeout 15 "$PY" -m pip install -q --no-index --find-links .gpu-wheels .gpu-wheels/*.whl >>"$RES/install.log" 2>&1 \
    || log "some wheels in .gpu-wheels did not install (see install.log)"
fi
importable() {  # in a new process, as every later step will
  timeout 12 "$PY" -c "import gpuframe, gpuframe.kernels.join, gpuframe.benchmarks.gpu_figures; print(gpuframe.info())" \
    >"$RES/info.txt" 2>&1
}
installed=""
if timeout 20 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . >>"$RES/install.log" 2>&1 \
    && importable; then
  installed="pip install -e"
else
  log "pip install -e . did not give an importable gpuframe (see install.log): falling back to a path hook"
  how="$(timeout 8 "$PY" ci/gpuframe_path.py "$ROOT" --fallback-dir "$RES/.pypath" 2>>"$RES/install.log" | tail -n 1)"
  case "$how" in
    "pythonpath "*) export PYTHONPATH="${how#pythonpath }${PYTHONPATH:+:$PYTHONPATH}" ;;
  esac
  importable && installed="path hook (${how:-none})"
fi
if [ -z "$installed" ]; then
  log "gpuframe is not importable (see install.log and info.txt)"
  printf '%s\t%s\t%s\t%s\n' install 1 "$SECONDS" "gpuframe is not importable" >>"$STEPS"
  status=1
  finish
fi
printf '%s\t%s\t%s\t%s\n' install 0 "$SECONDS" "gpuframe installed: $installed" >>"$STEPS"
log "gpuframe installed: $installed"
if ! timeout 8 "$PY" -c "import sys; from gpuframe.core.device import gpu_count; sys.exit(0 if gpu_count() else 1)"; then
  log "no CUDA GPU visible to CuPy: nothing to check"
  status=1
  finish
fi
# pytest's own limits when pytest-timeout is there (a hung test fails alone; at the session limit
# pytest stops and still writes its report); the step's timeout stays the hard limit
PYTEST_HELP="$(timeout 8 "$PY" -m pytest --help 2>/dev/null)"
pytest_limits() {  # step seconds
  case "$PYTEST_HELP" in *--session-timeout*) echo "--timeout 100 --session-timeout $(($1 - 15))" ;;
    *--timeout*) echo "--timeout 100" ;; esac
}

# --------------------------------------------------------------------------- 2. kernel families
kc_s=$(cap 60)
step kernel-check "$kc_s" "$PY" -m gpuframe.benchmarks.gpu_kernel_check --out "$RES/kernel_check.json" \
  --budget-s $((kc_s - 15))
rc=$?
# 3: a kernel did not compile; after the time limit (124) the records written so far may say so
if [ $rc -eq 3 ] || { [ $rc -eq 124 ] && grep -qs '"status": "compile failed"' "$RES/kernel_check.json"; }; then
  log "CUDA kernels do not compile: stopping here (kernel-check.log names them)"
  status=1
  finish
fi
[ $rc -eq 0 ] || status=1

# --------------------------------------------------------------------------- 3, 4. test suites
gpu_s=$(cap 45)
# shellcheck disable=SC2046
step gpu-tests "$gpu_s" "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/gpu -rfE $(pytest_limits "$gpu_s") \
  --junitxml="$RES/gpu-tests.xml" || status=1
sim_s=$(cap 145)
# shellcheck disable=SC2046
step cudasim-on-gpu "$sim_s" "$PY" -m pytest -q -p no:cacheprovider tests/cudasim -rfE $(pytest_limits "$sim_s") \
  --junitxml="$RES/cudasim-on-gpu.xml" || status=1

# --------------------------------------------------------------------------- 5. figures
fig_s=$(cap 134)   # its share when every step before it ran to its limit
rest=$((DEADLINE - SECONDS - RESERVE_S))
[ "$rest" -gt "$fig_s" ] && fig_s=$rest   # and the time those steps left unused (never past the deadline)
step figures "$fig_s" "$PY" -m gpuframe.benchmarks.gpu_figures --out "$RES/figures" --budget-s $((fig_s - 20)) \
  --scale "${GPU_CHECK_SCALE:-1}" || status=1

# --------------------------------------------------------------------------- 6. summary
finish
