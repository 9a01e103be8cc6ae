"""How much host memory this process may still use: the system, its cgroup, its Dask worker.

``psutil``'s available memory is what the machine has; a container or a batch job usually
gets less (its cgroup's ``memory.max``), and a Dask worker less again (its ``memory_limit``, past
which the nanny restarts it). :func:`host_memory` reports all three and the tightest of them;
:func:`gpuframe.core.memory.ensure_available` and the host allocator's idle limit use it.

Everything here reads files or asks psutil, never imports ``distributed`` (a worker is only
looked for when the process already imported it).
"""
from __future__ import annotations

import os
import sys
import time
import weakref
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["CgroupMemory", "HostMemory", "cgroup_memory", "dask_worker_memory", "host_memory",
           "process_rss", "system_memory"]

# cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX * page size)
_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class CgroupMemory:
    """The tightest memory limit among this process's cgroup and its ancestors."""

    limit: int          # bytes
    usage: int          # bytes charged to that cgroup, reclaimable page cache excluded
    path: str           # the directory the limit was read from
    version: int        # 1 or 2

    @property
    def headroom(self) -> int:
        return max(0, self.limit - self.usage)


@dataclass(frozen=True)
class HostMemory:
    """``available``: bytes this process may still allocate (the tightest of the sources);
    ``limited_by``: which source that is, with its numbers, for error messages."""

    total: int
    available: int
    limited_by: str
    system_total: int
    system_available: int
    cgroup: Optional[CgroupMemory]
    worker_limit: Optional[int]
    worker_available: Optional[int]


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= _UNLIMITED else value


def _stat_value(path: str, keys: tuple[str, ...]) -> int:
    """The first of ``keys`` found in a cgroup ``memory.stat`` file (0 when none)."""
    try:
        with open(path, encoding="ascii") as f:
            values = dict(line.split()[:2] for line in f if len(line.split()) >= 2)
    except (OSError, UnicodeDecodeError, ValueError):
        return 0
    for k in keys:
        if k in values:
            try:
                return int(values[k])
            except ValueError:
                return 0
    return 0


def _ancestors(root: str, rel: str) -> list[str]:
    """``root/rel`` and every directory above it up to ``root``, deepest first (those that exist)."""
    parts = [p for p in rel.strip("/").split("/") if p and p not in (".", "..")]
    out = []
    for k in range(len(parts), -1, -1):
        d = os.path.join(root, *parts[:k])
        if os.path.isdir(d):
            out.append(d)
    return out


def _limited_groups(proc_cgroup: str, sys_root: str) -> list[tuple[int, str, int]]:
    """``(version, directory, limit)`` of this process's cgroup and its ancestors that set a
    memory limit (see :func:`cgroup_memory`)."""
    try:
        with open(proc_cgroup, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    v2_path = v1_path = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    candidates: list[tuple[int, str]] = []
    if v1_path is not None:
        candidates += [(1, d) for d in _ancestors(os.path.join(sys_root, "memory"), v1_path)]
    if v2_path is not None or not lines:
        base = sys_root
        if os.path.isfile(os.path.join(base, "unified", "cgroup.controllers")) and \
                not os.path.isfile(os.path.join(base, "cgroup.controllers")):
            base = os.path.join(base, "unified")   # hybrid hierarchy
        candidates += [(2, d) for d in _ancestors(base, v2_path or "/")]
    out = []
    for version, d in candidates:
        limit = _read_int(os.path.join(d, "memory.max" if version == 2 else "memory.limit_in_bytes"))
        if limit is not None:
            out.append((version, d, limit))
    return out


# (proc_cgroup, sys_root) -> (time read, groups): limits are re-read every _GROUPS_TTL_S seconds
_GROUPS_CACHE: dict[tuple[str, str], tuple[float, list]] = {}
_GROUPS_TTL_S = 30.0


def cgroup_memory(proc_cgroup: str = "/proc/self/cgroup", sys_root: str = "/sys/fs/cgroup"
                  ) -> Optional[CgroupMemory]:
    """The cgroup memory limit that binds this process first (least headroom), or None.

    cgroup v2: ``memory.max`` and ``memory.current`` of the process's group (from
    ``proc_cgroup``'s ``0::/path`` line) and of every ancestor under ``sys_root``; v1: the memory
    controller's ``memory.limit_in_bytes`` and ``memory.usage_in_bytes`` under
    ``sys_root/memory``. Inactive page cache (``inactive_file``), which the kernel reclaims before
    it kills anything, is not counted as used. Inside a container whose ``/proc/self/cgroup``
    names a path that is not mounted, the mount's root is read instead. Which groups set a
    limit, and the limits, are re-read every 30 seconds; the usage on every call.
    """
    key = (proc_cgroup, sys_root)
    now = time.monotonic()
    hit = _GROUPS_CACHE.get(key)
    if hit is None or now - hit[0] > _GROUPS_TTL_S:
        hit = (now, _limited_groups(proc_cgroup, sys_root))
        _GROUPS_CACHE[key] = hit
    best: Optional[CgroupMemory] = None
    for version, d, limit in hit[1]:
        if version == 2:
            usage = _read_int(os.path.join(d, "memory.current"))
            cache = _stat_value(os.path.join(d, "memory.stat"), ("inactive_file",))
        else:
            usage = _read_int(os.path.join(d, "memory.usage_in_bytes"))
            cache = _stat_value(os.path.join(d, "memory.stat"), ("total_inactive_file", "inactive_file"))
        cg = CgroupMemory(limit, max(0, (usage or 0) - cache), d, version)
        if best is None or cg.headroom < best.headroom:
            best = cg
    return best


def process_rss() -> int:
    """Resident memory of this process, in bytes."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - psutil is optional
        return 0


def system_memory() -> tuple[int, int]:
    """``(total, available)`` bytes of the machine (psutil, else /proc/meminfo, else sysconf)."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except Exception:  # noqa: BLE001 - psutil is optional
        pass
    total = avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                elif line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = 8 << 30
    return int(total), int(avail if avail is not None else total)


# Dask workers seen by the host allocator (``distributed.get_worker()`` answers only on a task's
# thread; the allocator's release thread reads them from here).
_workers: "weakref.WeakSet[Any]" = weakref.WeakSet()


def note_current_worker() -> None:
    """Remember the Dask worker running the current task, if any (cheap when there is none)."""
    dist = sys.modules.get("distributed")
    if dist is None:
        return
    try:
        w = dist.get_worker()
    except Exception:  # noqa: BLE001 - ValueError: not in a task
        return
    if w not in _workers:
        _workers.add(w)


def _worker_fractions() -> tuple[float, float]:
    """``(keep_below, hard)``: Dask's spill (else pause) fraction, above which the worker spills
    its data to disk, and its terminate fraction, above which the nanny restarts it."""
    try:
        import dask

        get = dask.config.get
        spill = get("distributed.worker.memory.spill", 0.7) or get("distributed.worker.memory.pause", 0.8) or 0.7
        hard = get("distributed.worker.memory.terminate", 0.95) or 1.0
        return float(spill), float(hard)
    except Exception:  # noqa: BLE001
        return 0.7, 0.95


def dask_worker_memory() -> Optional[tuple[int, float, float]]:
    """``(memory_limit, spill_fraction, terminate_fraction)`` of the tightest Dask worker in this
    process, or None outside a worker (or for a worker without a memory limit)."""
    note_current_worker()
    limits = []
    for w in list(_workers):
        mm = getattr(w, "memory_manager", None)
        limit = getattr(mm, "memory_limit", None) if mm is not None else getattr(w, "memory_limit", None)
        if limit:
            limits.append(int(limit))
    if not limits:
        return None
    spill, hard = _worker_fractions()
    return min(limits), spill, hard


def host_memory(reusable: int = 0) -> HostMemory:
    """The host memory this process may still use, from every source that limits it.

    ``reusable``: bytes this process holds that it could hand out again (the host allocator's
    idle buffers), added to each source's headroom.
    """
    sys_total, sys_avail = system_memory()
    total = sys_total
    avail = sys_avail + reusable
    limited_by = f"the system's available memory ({sys_avail:,} bytes)"
    cg = cgroup_memory()
    if cg is not None:
        total = min(total, cg.limit)
        if cg.headroom + reusable < avail:
            avail = cg.headroom + reusable
            limited_by = (f"the cgroup memory limit of {cg.limit:,} bytes with {cg.usage:,} in use "
                          f"({cg.path})")
    worker_limit = worker_avail = None
    wm = dask_worker_memory()
    if wm is not None:
        worker_limit, _spill, hard = wm
        total = min(total, worker_limit)
        rss = process_rss()
        worker_avail = max(0, int(worker_limit * hard) - rss) + reusable
        if worker_avail < avail:
            avail = worker_avail
            limited_by = (f"the Dask worker's memory limit of {worker_limit:,} bytes (restarted at "
                          f"{hard:.0%}; the process uses {rss:,})")
    return HostMemory(total, max(0, avail), limited_by, sys_total, sys_avail, cg, worker_limit, worker_avail)
