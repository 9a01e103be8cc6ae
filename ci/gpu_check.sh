#!/usr/bin/env bash
# One script for a person (or the device machine) with a CUDA GPU: the GPU test lane plus the GPU
# benchmarks, sized to finish in about 8 minutes on one H100. Results go to the folder given as $1
# (default: $OUT, else ./gpu-results).
#
# It uses the python3 already on the machine (CuPy, numba-cuda, torch, pyarrow, pandas, pytest
# there) and installs gpuframe itself without touching the network. Missing pure-Python packages
# (dask, distributed, ...) can come as wheels in ./.gpu-wheels (make them with ci/gpu_wheels.sh).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RES="${1:-${OUT:-$ROOT/gpu-results}}"
mkdir -p "$RES"
PY="${PYTHON:-python3}"
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$RES/gpu_check.log"; }

log "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
if [ -d .gpu-wheels ]; then
  $PY -m pip install -q --no-index --find-links .gpu-wheels .gpu-wheels/*.whl >>"$RES/gpu_check.log" 2>&1 \
    || log "some wheels in .gpu-wheels did not install (see log)"
fi
$PY -m pip install -q --no-deps --no-build-isolation -e . >>"$RES/gpu_check.log" 2>&1 || { log "pip install of gpuframe failed"; exit 1; }
$PY -c "import gpuframe; print(gpuframe.info())" >"$RES/info.txt" 2>&1 || true
$PY -c "import sys; from gpuframe.core.device import gpu_count; sys.exit(0 if gpu_count() else 1)" \
  || { log "no CUDA GPU visible to CuPy: nothing to check"; exit 1; }

status=0
step() {  # name, seconds, command...
  local name="$1" secs="$2"; shift 2
  local t0=$SECONDS rc=0
  log "start $name"
  timeout "$secs" "$@" >"$RES/$name.log" 2>&1 || rc=$?
  log "end $name: exit $rc in $((SECONDS - t0)) s"
  tail -n 5 "$RES/$name.log" | sed 's/^/    /' | tee -a "$RES/gpu_check.log"
  [ $rc -eq 0 ] || status=1
}

export GPUFRAME_RAISE_ON_FALLBACK=1
# tests/gpu only: the rest of tests/ imports hypothesis, duckdb, polars..., which the GPU machine lacks
step gpu-tests 180 $PY -m pytest -q -p no:cacheprovider -m gpu tests/gpu --junitxml="$RES/gpu-tests.xml"
# the simulator lane's tests on the real GPU: every kernel family (hashing, partition, join, gather)
# compiled by NVVM and run on small data, the CPU backend as the oracle
step cudasim-on-gpu 240 $PY -m pytest -q -p no:cacheprovider --timeout 120 tests/cudasim -rfE --junitxml="$RES/cudasim-on-gpu.xml"
step bench-join-gpu 150 $PY -m gpuframe.benchmarks.join --device cuda --rows 10M --runs 5 --peers cupy,cudf --out "$RES/join_gpu.json"
step bench-partition-gpu 150 $PY -m gpuframe.benchmarks.partition --device cuda --rows 50M --runs 5 --peers none --out "$RES/partition_gpu.json"
step bench-dlpack-gpu 60 $PY -m gpuframe.benchmarks.dlpack --device cuda --rows 10M --runs 5 --peers none --out "$RES/dlpack_gpu.json"
log "done: exit $status; results in $RES"
exit $status
