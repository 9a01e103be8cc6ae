"""``gpuframe compile`` (gpuframe/precompile.py): its jobs run every operation they name, and the
processes it starts share their compiles."""
from __future__ import annotations

import re

import pytest

from gpuframe import precompile
from gpuframe.cli import main


@pytest.mark.compile_jobs
def test_every_job_runs_in_process():
    times = precompile.run_jobs(sizes=(60, 600))
    names = [name for name, _ in precompile.JOBS]
    assert [name for name, _ in times] == [f"{j}@{n}" for n in (60, 600) for j in names]


def test_jobs_start_where_asked():
    seen = []
    jobs = [(f"job{i}", lambda n, i=i: seen.append((i, n))) for i in range(2)]
    original = precompile.JOBS
    precompile.JOBS = jobs
    try:
        times = precompile.run_jobs(start=1, sizes=(1, 2))
    finally:
        precompile.JOBS = original
    # every job at the first size, then at the second: the second process starts at a large size
    assert seen == [(1, 1), (0, 2), (1, 2), (0, 1)]
    assert [name for name, _ in times] == ["job1@1", "job0@2", "job1@2", "job0@1"]


@pytest.mark.timeout(300)
def test_compile_kernels_runs_its_processes():
    # the inner int64 join job, small tables, in two processes sharing their compiles: kernels the
    # join tests compile too (every job runs in process above, in the compile lane)
    lines = []
    res = precompile.compile_kernels(2, say=lines.append, sizes=(60, 600), jobs=["join-inner"])
    assert res["processes"] == 2 and res["jobs"] == 1
    assert len(lines) == 2
    assert all("join-inner@60" in line and "join-inner@600" in line and "compiled here" in line for line in lines)
    # both run the same units: whatever one compiled the other loaded (or both loaded what the
    # processes of an enclosing GPUFRAME_COMPILE_CLAIMS compiled)
    loaded = [int(re.search(r"(\d+) by another process", line).group(1)) for line in lines]
    assert sum(loaded) > 0


@pytest.mark.parametrize("bad", [["nope"], "sort", ["sort", 3]])
def test_jobs_must_be_named(bad):
    with pytest.raises(ValueError, match=r"jobs: expected a list of job names"):
        precompile.run_jobs(jobs=bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_compile_kernels_rejects_a_bad_process_count(bad):
    with pytest.raises(ValueError, match=r"processes: expected an int >= 1, got"):
        precompile.compile_kernels(bad)


def test_cli_compile_rejects_a_bad_process_count(capsys):
    assert main(["compile", "--processes", "0"]) == 2
    assert "--processes" in capsys.readouterr().err


def test_cli_job_names_are_the_jobs():
    from gpuframe import cli

    assert list(cli._JOB_NAMES) == [name for name, _ in precompile.JOBS]


def test_cli_compile_rejects_an_unknown_job(capsys):
    assert main(["compile", "--jobs", "join-int,nope"]) == 2
    err = capsys.readouterr().err
    assert "--jobs" in err and "nope" in err
