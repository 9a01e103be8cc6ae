"""What this installation of gpuframe has: package versions, backends, devices, transports.

``gpuframe.info()`` returns a plain dict (JSON-serialisable) and :func:`format_info` renders it
for people (module ``gpuframe.sysinfo``, so that the name ``gpuframe.info`` stays the function);
the ``gpuframe info`` command prints ``format_info(info())``.
"""
from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any, Optional

__all__ = ["format_info", "info"]

# key -> distribution names to try, in order (the first one installed wins)
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "pyarrow": ("pyarrow",),
    "numba": ("numba",),
    "numba-cuda": ("numba-cuda", "numba_cuda"),
    "cupy": ("cupy", "cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x"),
    "torch": ("torch",),
    "pandas": ("pandas",),
    "dask": ("dask",),
    "distributed": ("distributed",),
    "ucxx": ("ucxx", "ucxx-cu13", "ucxx-cu12"),
    "distributed-ucxx": ("distributed-ucxx", "distributed-ucxx-cu13", "distributed-ucxx-cu12"),
    "cudf": ("cudf", "cudf-cu13", "cudf-cu12"),
}


def _version(dists: tuple[str, ...]) -> Optional[str]:
    for name in dists:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _versions() -> dict[str, Optional[str]]:
    from . import __version__

    out: dict[str, Optional[str]] = {"gpuframe": __version__}
    out.update({key: _version(dists) for key, dists in _DISTRIBUTIONS.items()})
    return out


def _cpu() -> dict[str, Any]:
    model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cpu: dict[str, Any] = {
        "model": model or platform.processor() or platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": None,
        "memory_bytes": None,
    }
    try:
        import psutil

        cpu["physical_cores"] = psutil.cpu_count(logical=False)
        cpu["memory_bytes"] = int(psutil.virtual_memory().total)
    except Exception:  # psutil is optional
        try:
            cpu["memory_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            pass
    return cpu


def _gpus() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from .core.device import gpu_count

    gpus: list[dict[str, Any]] = []
    cuda: dict[str, Any] = {"runtime_version": None, "driver_version": None, "error": None}
    if gpu_count() == 0:
        try:
            import cupy  # noqa: F401
        except ImportError:
            cuda["error"] = "CuPy is not installed"
        except Exception as exc:  # noqa: BLE001 - report, never fail
            cuda["error"] = f"{type(exc).__name__}: {exc}"
        else:
            cuda["error"] = "CuPy sees no CUDA GPU"
        return gpus, cuda
    try:
        import cupy

        rt = cupy.cuda.runtime
        cuda["runtime_version"] = int(rt.runtimeGetVersion())
        cuda["driver_version"] = int(rt.driverGetVersion())
        for i in range(gpu_count()):
            props = rt.getDeviceProperties(i)
            name = props["name"]
            gpus.append({
                "id": i,
                "name": name.decode() if isinstance(name, bytes) else str(name),
                "memory_bytes": int(props["totalGlobalMem"]),
                "compute_capability": f"{props['major']}.{props['minor']}",
                "multiprocessors": int(props["multiProcessorCount"]),
            })
    except Exception as exc:  # noqa: BLE001
        cuda["error"] = f"{type(exc).__name__}: {exc}"
    return gpus, cuda


def _backends() -> dict[str, Any]:
    from .backends import registry

    try:
        return {name: registry.implemented(name) for name in ("cpu", "cuda")}
    except Exception as exc:  # noqa: BLE001 - a broken backend module must not hide the rest
        return {"cpu": [], "cuda": [], "error": f"{type(exc).__name__}: {exc}"}


def _transports(versions: dict[str, Optional[str]]) -> dict[str, Any]:
    tcp = versions["distributed"] is not None
    ucx: dict[str, Any] = {"available": False, "error": None}
    try:
        import ucxx  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or a UCX library that fails to load
        ucx["error"] = f"{type(exc).__name__}: {exc}"
    else:
        ucx["available"] = True
    return {"tcp": {"available": tcp, "error": None if tcp else "distributed is not installed"}, "ucx": ucx}


def _memory() -> dict[str, Any]:
    """The host allocator's holdings and the host memory limits (see ``gpuframe.core.hostalloc``)."""
    from .core import hostalloc, memlimits

    out: dict[str, Any] = {"host_allocator": None, "host_limits": None, "error": None}
    try:
        stats = hostalloc.get_host_allocator().stats()
        out["host_allocator"] = stats
        hm = memlimits.host_memory(reusable=int(stats.get("idle_bytes") or 0))
        cg = hm.cgroup
        out["host_limits"] = {
            "total_bytes": hm.total,
            "available_bytes": hm.available,
            "limited_by": hm.limited_by,
            "system_available_bytes": hm.system_available,
            "cgroup_limit_bytes": None if cg is None else cg.limit,
            "cgroup_usage_bytes": None if cg is None else cg.usage,
            "dask_worker_limit_bytes": hm.worker_limit,
        }
    except Exception as exc:  # noqa: BLE001 - report, never fail
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def info() -> dict[str, Any]:
    """A description of this installation, as a JSON-serialisable dict.

    Returns
    -------
    dict
        ``versions``: gpuframe and its (optional) dependencies, ``None`` when not installed;
        ``python``, ``platform``; ``backends``: the operations each backend (``cpu``, ``cuda``)
        implements; ``devices``: ``cpu`` (model, cores, memory), ``gpus`` (id, name, memory,
        compute capability, as CuPy sees them), ``cuda`` (runtime/driver versions, or why there
        is no GPU), ``cuda_simulator`` (``NUMBA_ENABLE_CUDASIM`` is on) and ``cuda_available``;
        ``transports``: ``tcp`` (Dask distributed) and ``ucx`` (ucxx importable), each with
        ``available`` and ``error``; ``memory``: ``host_allocator`` (what the host allocator holds:
        ``idle_bytes``, ``in_use_bytes``, ``limit_bytes``, ``idle_release_s`` and more, see
        ``HostAllocator.stats``) and ``host_limits`` (total and available host memory, what limits
        it, the cgroup and Dask worker limits).
    """
    from .core.device import cuda_available, cudasim_enabled

    versions = _versions()
    gpus, cuda = _gpus()
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backends": _backends(),
        "devices": {
            "cpu": _cpu(),
            "gpus": gpus,
            "cuda": cuda,
            "cuda_simulator": cudasim_enabled(),
            "cuda_available": cuda_available(),
        },
        "transports": _transports(versions),
        "memory": _memory(),
    }


def _gib(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def format_info(d: dict[str, Any]) -> str:
    """Render :func:`info`'s dict as aligned text for a terminal."""
    lines = [f"gpuframe {d['versions'].get('gpuframe')}  (Python {d.get('python')}, {d.get('platform')})", "",
             "packages:"]
    width = max(len(k) for k in d["versions"])
    for name, ver in d["versions"].items():
        if name != "gpuframe":
            lines.append(f"  {name.ljust(width)}  {ver or '-'}")
    dev = d["devices"]
    cpu = dev["cpu"]
    cores = f"{cpu.get('logical_cores')} logical"
    if cpu.get("physical_cores"):
        cores += f" / {cpu['physical_cores']} physical"
    lines += ["", "devices:", f"  cpu   {cpu.get('model')}, {cores} cores, {_gib(cpu.get('memory_bytes'))}"]
    for g in dev["gpus"]:
        lines.append(f"  cuda:{g['id']}  {g['name']}, {_gib(g['memory_bytes'])}, "
                     f"compute capability {g['compute_capability']}, {g['multiprocessors']} SMs")
    cuda = dev["cuda"]
    if cuda.get("runtime_version"):
        lines.append(f"  CUDA runtime {cuda['runtime_version']}, driver {cuda['driver_version']}")
    if not dev["gpus"]:
        lines.append(f"  no CUDA GPU ({cuda.get('error') or 'none found'})")
    if dev["cuda_simulator"]:
        lines.append("  CUDA simulator: ON (NUMBA_ENABLE_CUDASIM=1): 'cuda' tables run on the CPU simulator")
    be = d["backends"]
    lines += ["", "backends:"]
    for name in ("cpu", "cuda"):
        ops = be.get(name) or []
        lines.append(f"  {name.ljust(4)}  {', '.join(ops) if ops else '(no operations registered)'}")
    if be.get("error"):
        lines.append(f"  error loading backends: {be['error']}")
    lines += ["", "transports:"]
    for name, t in d["transports"].items():
        state = "available" if t["available"] else f"unavailable ({t['error']})"
        lines.append(f"  {name.ljust(4)}  {state}")
    mem = d.get("memory")
    if mem is not None:
        lines += ["", "memory:"]
        a, lim = mem.get("host_allocator"), mem.get("host_limits")
        if a is not None:
            held = (f"{_size(a.get('idle_bytes'))} idle ({a.get('idle_blocks')} blocks), "
                    f"{_size(a.get('in_use_bytes'))} in use ({a.get('in_use_blocks')} blocks)")
            lines.append(f"  host allocator  {held}")
            lines.append(f"                  idle limit {_size(a.get('limit_bytes'))}"
                         + (f" (now {_size(a['effective_limit_bytes'])}: Dask worker headroom)"
                            if a.get("effective_limit_bytes") != a.get("limit_bytes") else "")
                         + f", released after {a.get('idle_release_s')} s idle"
                         + (", huge pages" if a.get("huge_pages") else ""))
        if lim is not None:
            lines.append(f"  host memory     {_size(lim['available_bytes'])} available of {_size(lim['total_bytes'])} "
                         f"(limited by {lim['limited_by']})")
        if mem.get("error"):
            lines.append(f"  error reading memory: {mem['error']}")
    return "\n".join(lines)


def _size(n: Optional[int]) -> str:
    if n is None:
        return "?"
    if n < 2**20:
        return f"{n / 2**10:.0f} KiB"
    if n < 2**30:
        return f"{n / 2**20:.1f} MiB"
    return f"{n / 2**30:.2f} GiB"

