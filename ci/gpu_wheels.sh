#!/usr/bin/env bash
# Download the pure-Python wheels that ci/gpu_check.sh installs on a GPU machine with no network
# (its image has CuPy, numba-cuda, torch, pyarrow and pandas, but not dask/distributed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p .gpu-wheels
python3 -m pip download -q -d .gpu-wheels --only-binary=:all: --python-version 3.12 --no-deps \
  "dask==2026.7.1" "distributed==2026.7.1" toolz partd locket zict tblib sortedcontainers cloudpickle
du -sh .gpu-wheels
