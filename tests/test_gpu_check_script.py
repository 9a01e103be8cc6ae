"""ci/gpu_check.sh runs only on a GPU machine: check here that every benchmark command in it is one
the benchmark's options accept (a bad --peers or --rows would only show on the GPU machine)."""
from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

from gpuframe.benchmarks.common import parse_peers, parse_rows

SCRIPT = Path(__file__).resolve().parents[1] / "ci" / "gpu_check.sh"


def _bench_commands() -> list[tuple[str, list[str]]]:
    out = []
    for line in SCRIPT.read_text().splitlines():
        m = re.search(r"-m (gpuframe\.benchmarks\.\w+) (.*)$", line)
        if m:
            out.append((m.group(1), shlex.split(m.group(2).replace('"$RES/', '"RES/'))))
    return out


def test_gpu_check_benchmark_commands_parse():
    cmds = _bench_commands()
    assert {m for m, _ in cmds} >= {"gpuframe.benchmarks.join", "gpuframe.benchmarks.partition"}
    for module, args in cmds:
        importlib.import_module(module)  # the module exists and imports without a GPU
        opts = dict(zip(args[::2], args[1::2]))
        assert set(opts) <= {"--device", "--rows", "--runs", "--peers", "--out", "--workers", "--warmup"}, args
        assert opts.get("--device") == "cuda", (module, args)
        parse_rows(opts["--rows"])
        parse_peers(opts.get("--peers", "none"))
        int(opts.get("--runs", "1"))
