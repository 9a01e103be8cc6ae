"""Hash join on the CPU (radix-partitioned ``njit`` drivers) and on CUDA (one global table).

Registered operations (see :mod:`gpuframe.ops.join` for the public functions):

* ``"join"``: ``fn(req: JoinRequest) -> JoinResult``; with ``req.count_only`` only the number
  of output rows is computed (``join_size``).

Both backends take the same :class:`JoinRequest` (keys already normalised by
:mod:`gpuframe.ops.keys`) and return output *word rows*: one int64 array per requested output
row (see :data:`SRC_NONE` and friends), plus the left/right gather maps when asked for. The
build side is the smaller one (ties: the right side), for every ``how``; an outer side that is
the build side is tracked with matched flags.

Semi and anti joins return the selected left row numbers, in left order.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..core import memory
from ..core.device import Device
from ..ops.keys import SideKeys
from .registry import register

# Source codes of an output row, per side (the kernels' codes are derived from these).
SRC_NONE = -1   # nothing from this side
SRC_KEY = -2    # this side's key word (the fast path's key)
SRC_ONE = -4    # 1 when this side's row is present (a presence / validity word)

# Target rows per CPU partition: a partition's table, chains, keys and payload fit in L2.
_ROWS_PER_PARTITION = 4096
_MAX_PARTITION_BITS = 12


@dataclass
class JoinRequest:
    """What to join and what to produce.

    ``carry_left`` / ``carry_right``: int64 arrays (one word per row of that side) that
    output rows may take. ``rows``: ``(left_src, right_src, fill)`` per output row, where a
    source is an index into that side's carry list, :data:`SRC_KEY`, :data:`SRC_ONE` or
    :data:`SRC_NONE`; a row with a left side takes ``left_src`` (unless ``SRC_NONE``), else
    ``right_src``, else ``fill``. ``want_indices`` adds the left and right gather maps.
    ``on_count(total_rows)`` runs once the output size is known and before anything is
    allocated for it (it raises ``MemoryError`` when the output cannot fit).
    """

    left: SideKeys
    right: SideKeys
    how: str
    carry_left: list = field(default_factory=list)
    carry_right: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    want_indices: bool = False
    count_only: bool = False
    on_count: Optional[Callable[[int], None]] = None


@dataclass
class JoinResult:
    count: int
    rows: list                       # int64 arrays, one per requested row (on the device)
    left_idx: Any = None             # int64 gather maps (semi/anti: left rows; right_idx None)
    right_idx: Any = None


def _sides(req: JoinRequest) -> tuple[bool, bool, bool]:
    """``(build_left, emit_unmatched_probe, emit_unmatched_build)``."""
    build_left = req.left.n < req.right.n
    keep_left = req.how in ("left", "outer")
    keep_right = req.how in ("right", "outer")
    if build_left:
        return True, keep_right, keep_left
    return False, keep_left, keep_right


# =========================================================================== CPU
class _ScratchPool:
    """Host scratch buffers kept between joins.

    Fresh memory is expensive on many hosts (every page faults and is zeroed on first touch:
    about 0.35 s per GiB on the 2-core VM the benchmarks ran on), and a join's partitioned
    copy of the probe side is as large as the probe side itself. The pool keeps one buffer per
    role and hands out views of it; at most ``limit`` bytes are kept (a quarter of the host's
    memory by default), larger requests get fresh memory that is freed with the join. Each
    thread has its own pool (joins in several threads never share scratch).
    ``gpuframe.backends.impl_join.clear_scratch()`` gives this thread's memory back.
    """

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}
        self.limit: Optional[int] = None

    def _limit(self) -> int:
        if self.limit is None:
            try:
                import psutil

                total = int(psutil.virtual_memory().total)
            except Exception:
                total = 8 << 30
            self.limit = total // 4
        return self.limit

    def get(self, role: str, shape: tuple, dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        buf = self._bufs.get(role)
        if buf is not None and buf.nbytes >= nbytes:
            return buf[:nbytes].view(dtype).reshape(shape)
        self._bufs.pop(role, None)
        held = sum(b.nbytes for b in self._bufs.values())
        fresh = host_empty(max(nbytes, 1), np.uint8)
        if held + fresh.nbytes <= self._limit():
            self._bufs[role] = fresh
        return fresh[:nbytes].view(dtype).reshape(shape)

    def clear(self) -> None:
        self._bufs.clear()


def host_empty(n: int, dtype: Any) -> np.ndarray:
    """``np.empty`` without numpy's transparent-huge-page request: on hosts that compact memory
    for huge pages on demand, that request can stall the first touch for seconds."""
    try:
        from numpy._core.multiarray import _get_madvise_hugepage, _set_madvise_hugepage
    except ImportError:  # pragma: no cover - older numpy
        return np.empty(n, dtype=dtype)
    old = _get_madvise_hugepage()
    _set_madvise_hugepage(False)
    try:
        return np.empty(n, dtype=dtype)
    finally:
        _set_madvise_hugepage(old)


class _ThreadPools(threading.local):
    def __init__(self) -> None:
        self.pool = _ScratchPool()


_POOLS = _ThreadPools()


def _scratch() -> _ScratchPool:
    return _POOLS.pool


def clear_scratch() -> None:
    """Free the join scratch buffers this thread keeps between joins."""
    _POOLS.pool.clear()


def _cpu_kernels():
    from ..kernels import join_cpu

    return join_cpu


def _row_hash_cpu(sk: SideKeys) -> None:
    if sk.keys is None:
        K = _cpu_kernels()
        out = np.empty(sk.n, dtype=np.uint64)
        K.general_row_hash(_ro(sk.words), _ro(sk.starts), _ro(sk.ends), _ro(sk.chars), out)
        sk.keys = out


@dataclass
class _Part:
    keys: np.ndarray        # uint64, partition order
    pay: np.ndarray         # int64 [m, n]
    starts: np.ndarray      # int64 [npart + 1] (npart = real partitions + the never-matching one)
    orig: np.ndarray        # int64 original row of each position (or empty)


def _ro(a: np.ndarray) -> np.ndarray:
    """A read-only view: every input reaches the kernels with one numba type (arrays wrapping
    Arrow buffers are read-only already), so each kernel compiles once."""
    v = a.view()
    v.flags.writeable = False
    return v


_E64 = _ro(np.zeros(0, np.int64))


def _ro_side(sk: SideKeys) -> SideKeys:
    from dataclasses import replace

    return replace(sk, keys=_ro(sk.keys), valid=_ro(sk.valid), words=_ro(sk.words), starts=_ro(sk.starts),
                   ends=_ro(sk.ends), chars=_ro(sk.chars))


def _partition_cpu(sk: SideKeys, pbits: int, carry: Sequence[np.ndarray], iota: bool, role: str) -> _Part:
    K = _cpu_kernels()
    import numba

    n = sk.n
    pmask = np.uint64((1 << pbits) - 1)
    nchunks = max(1, min(numba.get_num_threads() * 4, n // 65536 + 1))
    hist = K.part_hist(sk.keys, sk.valid, sk.kmode, pmask, nchunks)
    cursors, starts = K.chunk_cursors(hist)
    m = len(carry) + (1 if iota else 0)
    keys = _scratch().get(role + ".keys", (n,), np.uint64)
    pay = _scratch().get(role + ".pay", (m, n), np.int64)
    iota_row = len(carry) if iota else -1
    cols = [_ro(np.ascontiguousarray(c, dtype=np.int64)) for c in carry]
    first = 0
    while True:
        group = cols[first:first + 4]
        pad = group + [_E64] * (4 - len(group))
        K.scatter(sk.keys, sk.valid, sk.kmode, pmask, cursors, first == 0, keys,
                  iota_row if first == 0 else -1, pad[0], pad[1], pad[2], pad[3], len(group), first, pay)
        first += 4
        if first >= len(cols):
            break
    orig = _ro(pay[iota_row]) if iota else _E64
    return _Part(keys, pay, starts, orig)


def _partition_bits(nbuild: int) -> int:
    if nbuild <= _ROWS_PER_PARTITION:
        return 0
    return min(_MAX_PARTITION_BITS, int(math.ceil(math.log2(nbuild / _ROWS_PER_PARTITION))))


def _scratch_tables(bstarts: np.ndarray, nparts: int) -> np.ndarray:
    import numba

    sizes = np.diff(bstarts[:nparts + 1])
    biggest = int(sizes.max()) if len(sizes) else 0
    bits = 4
    while (1 << bits) < 2 * biggest:
        bits += 1
    return np.empty((numba.get_num_threads(), 1 << bits), dtype=np.int64)


@register("cpu", "join")
def cpu_join(req: JoinRequest) -> JoinResult:
    K = _cpu_kernels()
    _row_hash_cpu(req.left)
    _row_hash_cpu(req.right)
    L, R = _ro_side(req.left), _ro_side(req.right)
    req.left, req.right = L, R
    if req.how in ("semi", "anti"):
        return _cpu_semi_anti(req)
    build_left, eup, eub = _sides(req)
    probe, build = (R, L) if build_left else (L, R)
    pcarry_src, bcarry_src = (req.carry_right, req.carry_left) if build_left else (req.carry_left, req.carry_right)
    verify = L.verify
    pbits = _partition_bits(build.n)
    nparts = 1 << pbits

    # output-row codes in probe/build terms; the probe's key is carried only when unmatched
    # probe rows need it (matched rows take the equal build key)
    pcarry = list(pcarry_src)
    src_p, src_b, fill = [], [], []
    probe_key_slot = -1
    for lsrc, rsrc, f in req.rows:
        ps, bs = (rsrc, lsrc) if build_left else (lsrc, rsrc)
        if ps == SRC_KEY:
            if eup:
                if probe_key_slot < 0:
                    probe_key_slot = len(pcarry)
                    pcarry.append(probe.keys.view(np.int64))
                ps = probe_key_slot
            else:
                ps = K.SRC_MATCH_KEY
        src_p.append(ps)
        src_b.append(K.SRC_BUILD_KEY if bs == SRC_KEY else bs)
        fill.append(f)
    want_idx = req.want_indices
    p_iota = want_idx or verify
    b_iota = want_idx or verify
    pp = _partition_cpu(probe, pbits, [] if req.count_only else pcarry, p_iota, "probe")
    bp = _partition_cpu(build, pbits, [] if req.count_only else list(bcarry_src), b_iota, "build")
    if want_idx:
        p_io, b_io = pp.pay.shape[0] - 1, bp.pay.shape[0] - 1
        lrow = (K.SRC_NONE, b_io) if build_left else (p_io, K.SRC_NONE)
        rrow = (p_io, K.SRC_NONE) if build_left else (K.SRC_NONE, b_io)
        for sp_, sb_ in (lrow, rrow):
            src_p.append(sp_)
            src_b.append(sb_)
            fill.append(-1)

    table = _scratch_tables(bp.starts, nparts)
    # chains hold partition-local row ids: int32 unless a partition could outgrow it
    nxt = _scratch().get("nxt", (build.n,), np.int32 if build.n < 2**31 - 1 else np.int64)
    bmatched = np.zeros(build.n if eub else 0, dtype=np.uint8)
    match = np.zeros(0, np.int64) if req.count_only else pp.keys.view(np.int64)  # in place: keys are consumed
    counts = K.count_partitions(
        _ro(pp.keys), pp.starts, _ro(bp.keys), bp.starts, nparts, probe.kmode, np.uint64(pbits), verify,
        pp.orig, bp.orig, probe.words, probe.starts, probe.ends, probe.chars,
        build.words, build.starts, build.ends, build.chars, eup, eub, bmatched, nxt, match, table)
    offsets = np.zeros(nparts + 2, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    if req.count_only:
        return JoinResult(total, [])
    if req.on_count is not None:
        req.on_count(total)
    del table
    nrows = len(src_p)
    out = host_empty(nrows * total, np.int64).reshape(nrows, total)
    if total and nrows:
        K.write_partitions(_ro(pp.pay), pp.starts, _ro(bp.keys), _ro(bp.pay), bp.starts, nparts, nxt, match,
                           eup, eub, bmatched, offsets, np.array(src_p, np.int64),
                           np.array(src_b, np.int64), np.array(fill, np.int64), out.reshape(-1), total)
    rows = [out[r] for r in range(nrows)]
    lidx = ridx = None
    if want_idx:
        lidx, ridx = rows[-2], rows[-1]
        rows = rows[:-2]
    return JoinResult(total, rows, lidx, ridx)


def _cpu_semi_anti(req: JoinRequest) -> JoinResult:
    K = _cpu_kernels()
    L, R = req.left, req.right
    build_left = L.n < R.n
    probe, build = (R, L) if build_left else (L, R)
    pbits = _partition_bits(build.n)
    nparts = 1 << pbits
    verify = L.verify
    pp = _partition_cpu(probe, pbits, [], True, "probe")
    bp = _partition_cpu(build, pbits, [], True, "build")
    table = _scratch_tables(bp.starts, nparts)
    nxt = np.empty(build.n, dtype=np.int32 if build.n < 2**31 - 1 else np.int64)
    pmatched = np.zeros(0 if build_left else probe.n, dtype=np.uint8)
    bmatched = np.zeros(build.n if build_left else 0, dtype=np.uint8)
    K.mark_partitions(_ro(pp.keys), pp.starts, _ro(bp.keys), bp.starts, nparts, probe.kmode, np.uint64(pbits),
                      verify, pp.orig, bp.orig, probe.words, probe.starts, probe.ends, probe.chars,
                      build.words, build.starts, build.ends, build.chars, pmatched, bmatched, nxt, table)
    flags = np.empty(L.n, dtype=np.uint8)
    if build_left:
        K.flags_to_rows(bmatched, bp.orig, flags)
    else:
        K.flags_to_rows(pmatched, pp.orig, flags)
    want = 1 if req.how == "semi" else 0
    sel = np.flatnonzero(flags == want).astype(np.int64)
    if req.count_only:
        return JoinResult(len(sel), [])
    if req.on_count is not None:
        req.on_count(len(sel))
    return JoinResult(len(sel), [], sel, None)


def host_available_bytes() -> int:
    """Memory the host can still give (psutil, else /proc/meminfo's MemAvailable)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


@register("cpu", "available_memory")
def cpu_available_memory(device: Device) -> int:
    return host_available_bytes()


# =========================================================================== CUDA
def _cuda():
    from ..kernels.join import cuda_kernels

    return cuda_kernels()


def _launch(kernel: Any, n: int, *args: Any) -> None:
    from ..kernels.launch import launch

    launch(kernel, n, *args)


def _scalar(arr: Any, i: int) -> int:
    return int(memory.to_host(arr[i:i + 1])[0])


def _row_hash_cuda(sk: SideKeys, dev: Device) -> None:
    if sk.keys is None:
        out = memory.empty(sk.n, np.uint64, dev)
        _launch(_cuda().row_hash, sk.n, sk.words, sk.starts, sk.ends, sk.chars, out)
        sk.keys = out


def _cuda_table(build: SideKeys, dev: Device) -> tuple[Any, Any, np.uint64]:
    from ..kernels.join import table_bits

    k = _cuda()
    bits = table_bits(build.n)
    size = 1 << bits
    table = memory.empty(size, np.int64, dev)
    _launch(k.fill, size, table, np.int64(-1))
    nxt = memory.empty(max(build.n, 1), np.int64, dev)
    _launch(k.fill, build.n, nxt, np.int64(-1))
    _launch(k.build, build.n, table, nxt, np.uint64(size - 1), np.uint64(0), build.keys, build.valid,
            build.kmode, build.verify, memory.to_device(_E64, dev), build.words, build.starts, build.ends,
            build.chars)
    return table, nxt, np.uint64(size - 1)


def _probe_args(table, nxt, tmask, build: SideKeys, probe: SideKeys, dev: Device) -> tuple:
    return (table, nxt, tmask, np.uint64(0), build.keys, build.kmode, build.verify,
            memory.to_device(_E64, dev), build.words, build.starts, build.ends, build.chars,
            probe.keys, probe.valid, probe.words, probe.starts, probe.ends, probe.chars)


def _select_rows(flags: Any, want: int, dev: Device) -> tuple[Any, int]:
    """Rows ``i`` with ``flags[i] == want``, in order, and their count (scan + scatter)."""
    k = _cuda()
    n = int(flags.shape[0])
    counts = memory.empty(n, np.int64, dev)
    _launch(k.flag_count, n, flags, np.uint8(want), counts)
    offs = memory.cumsum_exclusive(counts)
    total = _scalar(offs, n)
    out = memory.empty(total, np.int64, dev)
    _launch(k.flag_write, n, flags, np.uint8(want), offs, np.int64(0), memory.to_device(_E64, dev), out,
            np.int64(-1))
    return out, total


@register("cuda", "join")
def cuda_join(req: JoinRequest) -> JoinResult:
    from ..core.memory import array_device

    L, R = req.left, req.right
    dev = array_device(L.valid)
    k = _cuda()
    _row_hash_cuda(L, dev)
    _row_hash_cuda(R, dev)
    e8 = memory.to_device(np.zeros(0, np.uint8), dev)
    if req.how in ("semi", "anti"):
        build_left = L.n < R.n
        probe, build = (R, L) if build_left else (L, R)
        table, nxt, tmask = _cuda_table(build, dev)
        flags = memory.zeros(L.n, np.uint8, dev)
        args = _probe_args(table, nxt, tmask, build, probe, dev)
        if build_left:
            _launch(k.probe_mark, probe.n, *args, e8, flags)
        else:
            _launch(k.probe_mark, probe.n, *args, flags, e8)
        sel, total = _select_rows(flags, 1 if req.how == "semi" else 0, dev)
        if req.count_only:
            return JoinResult(total, [])
        if req.on_count is not None:
            req.on_count(total)
        return JoinResult(total, [], sel, None)

    build_left, eup, eub = _sides(req)
    probe, build = (R, L) if build_left else (L, R)
    table, nxt, tmask = _cuda_table(build, dev)
    args = _probe_args(table, nxt, tmask, build, probe, dev)
    bmatched = memory.zeros(build.n, np.uint8, dev) if eub else e8
    counts = memory.empty(probe.n, np.int64, dev)
    _launch(k.probe_count, probe.n, *args, eup, bmatched, counts)
    offs = memory.cumsum_exclusive(counts)
    total_p = _scalar(offs, probe.n)
    total_b = 0
    if eub:
        bcounts = memory.empty(build.n, np.int64, dev)
        _launch(k.flag_count, build.n, bmatched, np.uint8(0), bcounts)
        boffs = memory.cumsum_exclusive(bcounts)
        total_b = _scalar(boffs, build.n)
    total = total_p + total_b
    if req.count_only:
        return JoinResult(total, [])
    if req.on_count is not None:
        req.on_count(total)
    out_p = memory.empty(total, np.int64, dev)
    out_b = memory.empty(total, np.int64, dev)
    _launch(k.probe_write, probe.n, *args, eup, offs, out_p, out_b)
    if eub:
        _launch(k.flag_write, build.n, bmatched, np.uint8(0), boffs, np.int64(total_p), out_p, out_b,
                np.int64(-1))
    lidx = memory.empty(total, np.int64, dev)
    ridx = memory.empty(total, np.int64, dev)
    _launch(k.map_pairs, total, out_p, out_b, not build_left, lidx, ridx)
    del out_p, out_b
    rows = []
    for lsrc, rsrc, f in req.rows:
        out = memory.empty(total, np.int64, dev)
        la = req.carry_left[lsrc] if lsrc >= 0 else L.keys
        ra = req.carry_right[rsrc] if rsrc >= 0 else R.keys
        _launch(k.emit, total, lidx, ridx, la, L.keys, min(lsrc, 0) if lsrc >= 0 else lsrc,
                ra, R.keys, min(rsrc, 0) if rsrc >= 0 else rsrc, np.int64(f), out)
        rows.append(out)
    return JoinResult(total, rows, lidx, ridx)


@register("cuda", "available_memory")
def cuda_available_memory(device: Device) -> int:
    from ..core.device import cudasim_enabled

    if cudasim_enabled():
        return host_available_bytes()
    import cupy

    with cupy.cuda.Device(device.id):
        free, _total = cupy.cuda.runtime.memGetInfo()
    return int(free) + int(cupy.get_default_memory_pool().free_bytes())
