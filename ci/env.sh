# Sourced by the ci/ scripts: create (once) and activate the project's virtual environment.
# Re-installs only when pyproject.toml changes. Set GPUFRAME_VENV to use another folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GPUFRAME_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
EXTRAS="${GPUFRAME_EXTRAS:-test,dask,ucx,torch,bench}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "ci: creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"

stamp="$VENV/.gpuframe-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)-$EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "ci: installing gpuframe[$EXTRAS] (editable)"
  python -m pip install -q --upgrade pip
  # torch first, pinned: 2.13.0 is the CPU build on this machine's disk; an unpinned torch
  # would download a multi-GB CUDA build.
  if [[ ",$EXTRAS," == *",torch,"* ]] && ! python -c "import torch" 2>/dev/null; then
    python -m pip install -q "torch==2.13.0"
  fi
  python -m pip install -q -e "$ROOT[$EXTRAS]"
  echo "$want" > "$stamp"
fi
export PYTHONDONTWRITEBYTECODE=0
