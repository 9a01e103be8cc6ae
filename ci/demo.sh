#!/usr/bin/env bash
# The README's main-job command: installs gpuframe, compiles the CPU kernels the demo runs (its
# joins on int64 keys and hash partitions; `gpuframe compile`, the install-time step) when their
# sources changed since the last compile, then runs `gpuframe demo` (extra args pass through).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
stamp="$ROOT/cuda_kernels/__pycache__/.gpuframe-compiled"   # goes with numba's cache
want="$(cat cuda_kernels/*.py gpuframe/precompile.py | sha256sum | cut -c1-16)-$(python -V 2>&1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  gpuframe compile --jobs join-inner,partition
  echo "$want" > "$stamp"
fi
exec gpuframe demo "$@"
