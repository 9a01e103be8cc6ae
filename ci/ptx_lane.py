"""The ptx lane: compile every CUDA kernel, with every argument signature the test suite launches
it with, by the real NVVM, and assemble the PTX with ptxas for each target architecture. No GPU
is needed: numba-cuda[cu12] brings NVVM and ptxas, and numba-cuda is told that the current
device has the architecture being compiled for.

NVVM compiles each signature once, for the oldest architecture named (sm_80 by default: PTX is
forward compatible), and ptxas assembles that PTX for every architecture named, as a driver
would for a newer GPU. (Compiling by NVVM once per architecture doubled the lane, 2 x 154
compiles at about 0.43 s each on this 2-core VM, for PTX that differed only in its target line.)

Signatures come from the simulator suite (tests/cudasim) run with ``GPUFRAME_RECORD_LAUNCHES``
(``tests/cudasim/conftest.py`` records each launch's argument types); ``ci/test.sh`` records them
in its cudasim lane and passes the file here, and this script runs the recording itself when it
gets none. It prints one row per kernel (signatures, registers, spills, shared memory, stack)
and exits non-zero if any signature fails to compile or assemble.

    python ci/ptx_lane.py [--signatures FILE] [--arch sm_80,sm_90] [--out-dir DIR]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACTORIES = ("cuda_kernels", "_kernels")  # module-level functions that build a module's kernels
# every module that builds CUDA kernels: a kernel no test launches is reported as uncovered
KERNEL_MODULES = ("gpuframe.kernels.gather", "gpuframe.kernels.hashing", "gpuframe.kernels.join",
                  "gpuframe.kernels.partition", "gpuframe.kernels.checks", "gpuframe.kernels.keyprep",
                  "gpuframe.kernels.assemble", "gpuframe.kernels.group", "gpuframe.kernels.sort")


def record(path: Path) -> None:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", GPUFRAME_RECORD_LAUNCHES=str(path))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/cudasim"]
    print("ptx lane: recording kernel launches:", " ".join(cmd[2:]), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    if rc != 0 or not path.exists():
        sys.exit(f"ptx lane: recording the launches failed (pytest exit {rc})")


def numba_type(desc: list):
    import numpy as np
    import numba
    from numba import types

    kind = desc[0]
    if kind == "array":
        return types.Array(numba.from_dtype(np.dtype(desc[1])), desc[2], desc[3])
    if kind == "bool":
        return types.boolean
    if kind == "scalar":
        return numba.from_dtype(np.dtype(desc[1]))
    if kind == "int":
        return types.int64
    if kind == "float":
        return types.float64
    if kind == "tuple":
        return types.Tuple([numba_type(d) for d in desc[1]])
    if kind == "namedtuple":
        # a kernel's argument record: the class by its import path, then the fields' types
        module_name, qualname = desc[1].split(":", 1)
        cls = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        return types.NamedTuple([numba_type(d) for d in desc[2]], cls)
    raise ValueError(f"unknown recorded argument {desc!r}")


def find_kernels(module_name: str) -> dict:
    """``{qualname: dispatcher}`` of the kernels a module's factories build."""
    mod = importlib.import_module(module_name)
    found = {}
    for name in FACTORIES:
        factory = getattr(mod, name, None)
        if callable(factory):
            built = factory()
            for disp in (built.values() if isinstance(built, Mapping) else vars(built).values()):
                py_func = getattr(disp, "py_func", None)
                if py_func is not None:
                    found[py_func.__qualname__] = disp
    return found


def ptxas_path() -> str:
    try:
        import nvidia.cuda_nvcc as nvcc

        cand = Path(list(nvcc.__path__)[0]) / "bin" / "ptxas"
        if cand.exists():
            return str(cand)
    except ImportError:
        pass
    found = shutil.which("ptxas")
    if not found:
        sys.exit("ptx lane: ptxas not found: pip install 'numba-cuda[cu12]' (brings NVVM and ptxas)")
    return found


_REGS = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")
_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


@dataclass
class Row:
    kernel: str
    signatures: int = 0
    registers: int = 0
    spill_bytes: int = 0
    smem_bytes: int = 0
    stack_bytes: int = 0
    errors: list = field(default_factory=list)


def assemble(ptxas: str, ptx: str, arch: str, workdir: Path, row: Row) -> None:
    src = workdir / "k.ptx"
    src.write_text(ptx)
    res = subprocess.run([ptxas, f"-arch={arch}", "--verbose", "-o", str(workdir / "k.cubin"), str(src)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        row.errors.append(f"{arch}: ptxas: {res.stderr.strip()[-500:]}")
        return
    info = res.stdout + res.stderr
    row.registers = max([row.registers] + [int(m) for m in _REGS.findall(info)])
    row.smem_bytes = max([row.smem_bytes] + [int(m) for m in _SMEM.findall(info)])
    for stack, stores, loads in _STACK.findall(info):
        row.stack_bytes = max(row.stack_bytes, int(stack))
        row.spill_bytes = max(row.spill_bytes, int(stores) + int(loads))


def _compute_capability(arch: str) -> tuple[int, int]:
    """``(9, 0)`` of ``"sm_90"``."""
    return int(arch[3:-1]), int(arch[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--signatures", type=Path, help="recorded launches (JSON); recorded now if absent")
    ap.add_argument("--arch", default="sm_80,sm_90", help="target architectures (default sm_80,sm_90)")
    ap.add_argument("--out-dir", type=Path, help="also write table.md and results.json here")
    args = ap.parse_args(argv)
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        sys.exit("ptx lane: unset NUMBA_ENABLE_CUDASIM: the compile needs the real numba.cuda")
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    for a in archs:
        if not re.fullmatch(r"sm_\d\d+", a):
            sys.exit(f"ptx lane: --arch expects names like sm_90, got {a!r}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sig_path = args.signatures
        if sig_path is None or not sig_path.exists():
            sig_path = tmp / "launches.json"
            record(sig_path)
        recorded = json.loads(sig_path.read_text())
        if not recorded:
            sys.exit("ptx lane: no kernel launch was recorded")

        from numba import cuda
        import numba.cuda.dispatcher as dispatcher

        from gpuframe.kernels.compat import numba_cuda_compat

        numba_cuda_compat()
        ptxas = ptxas_path()
        real_current_device = dispatcher.get_current_device
        # NVVM compiles for the oldest architecture: what numba-cuda asks the current device for
        oldest = min(archs, key=_compute_capability)
        cc = _compute_capability(oldest)
        device = type("FakeDevice", (), {"compute_capability": cc})()
        dispatcher.get_current_device = lambda: device
        rows: dict[str, Row] = {}
        kernels_of: dict[str, dict] = {}
        t0 = time.perf_counter()
        try:
            for key, sigs in recorded.items():
                module_name, qualname = key.split(":", 1)
                short = f"{module_name.rsplit('.', 1)[-1]}.{qualname.rsplit('.', 1)[-1]}"
                row = rows.setdefault(short, Row(short))
                if module_name not in kernels_of:
                    kernels_of[module_name] = find_kernels(module_name)
                disp = kernels_of[module_name].get(qualname)
                if disp is None:
                    row.errors.append(f"no kernel {qualname} among {module_name}'s factories {FACTORIES}")
                    continue
                for sig in sigs:
                    argtypes = tuple(numba_type(d) for d in json.loads(sig))
                    row.signatures += 1
                    try:
                        ptx, _ = cuda.compile_ptx(disp.py_func, argtypes, cc=cc)
                    except Exception as exc:  # noqa: BLE001 - every failure is reported
                        row.errors.append(f"{oldest} {argtypes}: {type(exc).__name__}: {str(exc)[:500]}")
                        continue
                    for arch in archs:
                        assemble(ptxas, ptx, arch, tmp, row)
        finally:
            dispatcher.get_current_device = real_current_device
        elapsed = time.perf_counter() - t0
        launched = set(recorded)
        uncovered = []
        for module_name in KERNEL_MODULES:
            if module_name not in kernels_of:
                kernels_of[module_name] = find_kernels(module_name)
            uncovered += [f"{module_name}:{q}" for q in kernels_of[module_name] if f"{module_name}:{q}" not in launched]

    lines = ["| kernel | signatures | registers (max) | spill bytes | shared mem bytes | stack bytes | result |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in sorted(rows.values(), key=lambda r: r.kernel):
        lines.append(f"| {r.kernel} | {r.signatures} | {r.registers} | {r.spill_bytes} | {r.smem_bytes} | "
                     f"{r.stack_bytes} | {'FAILED' if r.errors else 'ok'} |")
    nsig = sum(r.signatures for r in rows.values())
    failed = [r for r in rows.values() if r.errors]
    summary = (f"ptx lane: {len(rows)} kernels, {nsig} signatures, each compiled by NVVM for {oldest} and "
               f"assembled by ptxas for {', '.join(archs)} in {elapsed:.0f} s: {len(failed)} kernels failed")
    print("\n".join(lines))
    print(summary)
    for r in failed:
        for e in r.errors:
            print(f"  {r.kernel}: {e}")
    if uncovered:
        print(f"ptx lane: {len(uncovered)} kernels no test launches (not compiled): {', '.join(sorted(uncovered))}")
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "table.md").write_text("\n".join(lines + ["", summary]) + "\n")
        (args.out_dir / "results.json").write_text(json.dumps([vars(r) for r in rows.values()], indent=1))
    return 1 if failed or not rows or uncovered else 0


if __name__ == "__main__":
    sys.exit(main())
