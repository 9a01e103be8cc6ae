"""Every benchmark's ``--help`` prints its options (argparse formats help strings with ``%``: a
literal percent sign must be written ``%%``, or ``--help`` raises)."""
from __future__ import annotations

import importlib

import pytest

MODULES = ["all", "dask_merge", "dask_ops", "dlpack", "fuzz_import", "gpu_figures", "gpu_kernel_check", "groupby",
           "join", "partition", "report", "setops", "shuffle", "sort"]


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_help(name, capsys):
    mod = importlib.import_module(f"gpuframe.benchmarks.{name}")
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0
    assert "--" in capsys.readouterr().out
