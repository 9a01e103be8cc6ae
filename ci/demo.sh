#!/usr/bin/env bash
# The README's main-job command: installs gpuframe, compiles its CPU kernels when their sources
# changed since the last compile (`gpuframe compile`: the install-time step, about 2 minutes on 2
# cores on a fresh machine), then runs `gpuframe demo` (extra args pass through).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
stamp="$ROOT/cuda_kernels/__pycache__/.gpuframe-compiled"   # goes with numba's cache
want="$(cat cuda_kernels/*.py gpuframe/precompile.py | sha256sum | cut -c1-16)-$(python -V 2>&1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  gpuframe compile
  echo "$want" > "$stamp"
fi
exec gpuframe demo "$@"
