#!/usr/bin/env bash
# The README's main-job command: installs gpuframe, then runs `gpuframe demo` (extra args pass through).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec gpuframe demo "$@"
