"""Hash join on the CPU (partitioned ``njit`` drivers) and on CUDA (one global table).

Registered operations (see :mod:`gpuframe.ops.join` for the public functions):

* ``"join"``: ``fn(req: JoinRequest) -> JoinResult``; with ``req.count_only`` only the number
  of output rows is computed (``join_size``).

Both backends take the same :class:`JoinRequest` (keys already normalised by
:mod:`gpuframe.ops.keys`) and return output *word rows*: one int64 array per requested output
row (see :data:`SRC_NONE` and friends), plus the left/right gather maps when asked for; the CPU
backend also writes merged string keys (``req.string_keys``) itself. The build side is the
smaller one (ties: the right side), for every ``how``; an outer side that is the build side is
tracked with matched flags.

CPU (:func:`cpu_join`, kernels in :mod:`gpuframe.kernels.join_cpu`): the build side is
radix-partitioned (about :data:`_ROWS_PER_PARTITION` rows a partition) with everything that
verifying a key needs, and every partition gets its own table. The probe side is scattered
into the same partitions (in place for tiny build sides) and probed in work items of at most
:data:`_ITEM_ROWS` rows, so a hot key never serialises a join. Distinct build keys take one
pass (probe and write); repeated ones two (count, write). Large buffers, outputs included, come
from the host allocator (:func:`gpuframe.core.hostalloc.host_empty`).

Semi and anti joins return the selected left row numbers, in left order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..core import memory
from ..core.device import Device, launch_context
from ..core.hostalloc import host_empty
from ..ops.keys import SideKeys
from .registry import register

# Source codes of an output row, per side (the kernels' codes are derived from these).
SRC_NONE = -1   # nothing from this side
SRC_KEY = -2    # this side's key word (the fast path's key)
SRC_ONE = -4    # 1 when this side's row is present (a presence / validity word)



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
    string_keys: list = field(default_factory=list)
    on_count: Optional[Callable[[int], None]] = None


@dataclass
class JoinResult:
    count: int
    rows: list                       # int64 arrays, one per requested row (on the device)
    left_idx: Any = None             # int64 gather maps (semi/anti: left rows; right_idx None)
    right_idx: Any = None
    strings: list = field(default_factory=list)   # (int64 offsets [count + 1], uint8 bytes) per string key


def _sides(req: JoinRequest) -> tuple[bool, bool, bool]:
    """``(build_left, emit_unmatched_probe, emit_unmatched_build)``."""
    build_left = req.left.n < req.right.n
    keep_left = req.how in ("left", "outer")
    keep_right = req.how in ("right", "outer")
    if build_left:
        return True, keep_right, keep_left
    return False, keep_left, keep_right


# =========================================================================== CPU
def _cpu_kernels():
    from ..kernels import join_cpu

    return join_cpu


def _ro(a: np.ndarray) -> np.ndarray:
    """A read-only view: every input reaches the kernels with one numba type (arrays wrapping
    Arrow buffers are read-only already), so each kernel compiles once."""
    v = a.view()
    v.flags.writeable = False
    return v


_E64 = _ro(np.zeros(0, np.int64))
_E8 = _ro(np.zeros(0, np.uint8))
_E2 = _ro(np.zeros((0, 0), np.int64))

# Target build rows per CPU partition: a partition's table, chains and keys fit in L2.
_ROWS_PER_PARTITION = 4096
_MAX_PARTITION_BITS = 12
_BIG_PROBE_ROWS = 1 << 25
_BIG_PROBE_PARTITION_BITS = 9
# Probe rows per work item: small enough to spread a hot partition over every thread.
_ITEM_ROWS = 16384
# In-place probing (no probe scatter) when the build side's tables and keys take at most this
# many bytes: they then stay in cache while the probe streams past them.
_INPLACE_BUILD_BYTES = 1 << 20


def _span_rows(st: np.ndarray, en: np.ndarray, sel: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Byte spans ``[len(sel), n]`` of the string key columns ``sel`` (views when ``sel`` is
    every column in order)."""
    sel = list(sel)
    if not sel:
        return _E2, _E2
    if sel == list(range(st.shape[0])):
        return st, en
    return _ro(np.ascontiguousarray(st[sel])), _ro(np.ascontiguousarray(en[sel]))


def _row_hash_cpu(sk: SideKeys) -> None:
    if sk.keys is None:
        K = _cpu_kernels()
        out = host_empty(sk.n, np.uint64)
        K.general_row_hash(_ro(sk.words), _ro(sk.starts), _ro(sk.ends), _ro(sk.chars), out)
        sk.keys = out


def _ro_side(sk: SideKeys) -> SideKeys:
    from dataclasses import replace

    return replace(sk, keys=_ro(sk.keys), valid=_ro(sk.valid), words=_ro(sk.words), starts=_ro(sk.starts),
                   ends=_ro(sk.ends), chars=_ro(sk.chars))


def _ptrs(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The address table of 8-byte-word column arrays (the caller keeps the arrays alive)."""
    for a in arrays:
        if a.dtype.itemsize != 8 or not a.flags.c_contiguous:
            raise AssertionError(f"join column must be contiguous 8-byte words, got {a.dtype} {a.strides}")
    return _ro(np.array([a.ctypes.data for a in arrays], dtype=np.int64))


def _as_words(a: Any) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a if a.dtype == np.int64 else a.view(np.int64)


def _partition_bits(nbuild: int, nprobe: int) -> int:
    """Radix bits: partitions of about :data:`_ROWS_PER_PARTITION` build rows, but at most
    ``2**_MAX_PARTITION_BITS`` partitions, and fewer (``2**_BIG_PROBE_PARTITION_BITS``) for a
    probe side of more than :data:`_BIG_PROBE_ROWS` rows: scattering it into thousands of
    partitions then costs more than tables that outgrow the core's cache."""
    if nbuild <= _ROWS_PER_PARTITION:
        return 0
    cap = _BIG_PROBE_PARTITION_BITS if nprobe > _BIG_PROBE_ROWS else _MAX_PARTITION_BITS
    return min(cap, int(math.ceil(math.log2(nbuild / _ROWS_PER_PARTITION))))


def _index_dtype(n: int) -> Any:
    return np.int32 if n < 2**31 - 1 else np.int64


def _cursors(sk: SideKeys, pbits: int) -> tuple[np.ndarray, np.ndarray]:
    """Scatter cursors ``[chunks, partitions]`` and the ``nparts + 2`` partition starts."""
    import numba

    K = _cpu_kernels()
    nchunks = max(1, min(numba.get_num_threads() * 4, sk.n // 65536 + 1))
    hist = K.part_hist(sk.keys, sk.valid, sk.kmode, np.uint64((1 << pbits) - 1), nchunks)
    flat = hist.T.ravel()                       # partition-major
    cum = np.cumsum(flat)
    cursors = np.ascontiguousarray((cum - flat).reshape(hist.shape[1], nchunks).T)
    starts = np.zeros(hist.shape[1] + 1, np.int64)
    starts[1:] = cum[nchunks - 1::nchunks]
    return cursors, starts


def _scatter(sk: SideKeys, pbits: int, cursors: np.ndarray, keys_dst: Optional[np.ndarray],
             iota_dst: Optional[np.ndarray], src: Sequence[np.ndarray], dst: Sequence[np.ndarray]) -> None:
    K = _cpu_kernels()
    K.scatter(sk.keys, sk.valid, sk.kmode, np.uint64((1 << pbits) - 1), cursors,
              0 if keys_dst is None else keys_dst.ctypes.data, 0 if iota_dst is None else iota_dst.ctypes.data,
              _ptrs(src), _ptrs(dst))


def _verify_rows(sk: SideKeys, n: int) -> tuple[list, list, tuple]:
    """Scatter sources and fresh destinations of a general key's words and byte spans."""
    nw, ns = sk.words.shape[0], sk.starts.shape[0]
    w = host_empty((nw, n), np.uint64) if nw else sk.words
    st = host_empty((ns, n), np.int64) if ns else sk.starts
    en = host_empty((ns, n), np.int64) if ns else sk.ends
    src = [sk.words[r].view(np.int64) for r in range(nw)] + [sk.starts[r] for r in range(ns)] + \
        [sk.ends[r] for r in range(ns)]
    dst = [w[r].view(np.int64) for r in range(nw)] + [st[r] for r in range(ns)] + [en[r] for r in range(ns)]
    return src, dst, (w, st, en)


@dataclass
class _Build:
    keys: np.ndarray          # uint64 key words by build position
    valid: np.ndarray         # uint8 by position (unpartitioned build with null keys) or empty
    starts: np.ndarray        # int64 [nparts + 2]: partition p holds positions [starts[p], starts[p+1])
    orig: np.ndarray          # int64 original row of each position (empty: the identity)
    cols: list                # int64 payload columns by position
    w: np.ndarray             # general keys: words / byte spans / bytes, by position
    st: np.ndarray
    en: np.ndarray
    ch: np.ndarray
    tables: Optional[np.ndarray]
    toffs: np.ndarray
    nxt: np.ndarray
    unique: bool              # no key repeats: every chain has one row


def _build_side(sk: SideKeys, pbits: int, carry: Sequence[np.ndarray], need_orig: bool) -> _Build:
    """Partition (``pbits > 0``) the build side with its payload and, for general keys, its
    key words, byte spans and bytes (so that verifying a match reads partition-local memory),
    then build every partition's table."""
    K = _cpu_kernels()
    nparts = 1 << pbits
    n = sk.n
    carry = [_as_words(c) for c in carry]
    w, st, en, ch = sk.words, sk.starts, sk.ends, sk.chars
    if pbits == 0:
        keys, valid, orig, cols = sk.keys, sk.valid, _E64, carry
        starts = np.array([0, n, n], np.int64)
    else:
        cursors, starts = _cursors(sk, pbits)
        keys = host_empty(n, np.uint64)
        orig = host_empty(n, np.int64) if need_orig else None
        cols = [host_empty(n, np.int64) for _ in carry]
        src, dst = list(carry), list(cols)
        if sk.verify:
            vsrc, vdst, (w, st, en) = _verify_rows(sk, n)
            src += vsrc
            dst += vdst
        _scatter(sk, pbits, cursors, keys, orig, src, dst)
        if sk.verify and st.shape[0]:
            lens = en - st
            new_st = np.empty(lens.size, np.int64)
            np.cumsum(lens.ravel(), out=new_st)
            nbytes = int(new_st[-1]) if lens.size else 0
            new_st -= lens.ravel()
            ch = host_empty(nbytes, np.uint8)
            K.copy_spans(_ro(st.ravel()), _ro(en.ravel()), sk.chars, _ro(new_st), ch)
            st = new_st.reshape(st.shape)
            en = st + lens
            del lens
        keys, valid, orig = _ro(keys), _E8, (_E64 if orig is None else _ro(orig))
        cols = [_ro(c) for c in cols]
        w, st, en, ch = _ro(w), _ro(st), _ro(en), _ro(ch)
    sizes = np.diff(starts[:nparts + 1])
    if int(sizes.max(initial=0)) >= 2**31 - 1:
        raise MemoryError(f"one join partition has {int(sizes.max()):,} build rows (one key repeated that "
                          "often); at most 2**31 - 2 are supported")
    bits = np.maximum(4, np.ceil(np.log2(np.maximum(2 * sizes, 1))).astype(np.int64))
    slots = np.where(sizes > 0, np.left_shift(1, bits), 0)
    toffs = np.zeros(nparts + 1, np.int64)
    np.cumsum(slots, out=toffs[1:])
    tables = host_empty(int(toffs[-1]), np.int32)
    nxt = host_empty(n, _index_dtype(n))
    chained = K.build_tables(keys, valid, starts, nparts, sk.kmode, np.uint64(pbits), sk.verify,
                             w, st, en, ch, tables, toffs, nxt)
    return _Build(keys, valid, starts, orig, cols, w, st, en, ch, tables, toffs, _ro(nxt), chained == 0)


@dataclass
class _Probe:
    keys: Optional[np.ndarray]  # uint64 key words by probe position
    valid: np.ndarray         # uint8 (in-place) or empty
    orig: np.ndarray          # int64 original row of each position (empty: the identity)
    w: np.ndarray             # general keys: words and byte spans by position (bytes: the input's)
    st: np.ndarray
    en: np.ndarray
    ilo: np.ndarray           # work items: positions [ilo, ihi) of partition ipart (-1: any)
    ihi: np.ndarray
    ipart: np.ndarray
    inplace: bool
    cursors: Optional[np.ndarray] = None
    keys_buf: Optional[np.ndarray] = None


def _items(starts: np.ndarray, parts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Work items: every range ``[starts[k], starts[k + 1])`` (of partition ``parts[k]``) cut
    into pieces of at most :data:`_ITEM_ROWS` rows."""
    sizes = np.diff(starts)
    pieces = np.maximum(1, -(-sizes // _ITEM_ROWS))
    pieces[sizes == 0] = 0
    k = np.repeat(np.arange(len(sizes)), pieces)
    first = np.cumsum(pieces) - pieces
    j = np.arange(len(k)) - np.repeat(first, pieces)
    ilo = starts[k] + j * _ITEM_ROWS
    ihi = np.minimum(ilo + _ITEM_ROWS, starts[k + 1])
    return (_ro(ilo.astype(np.int64)), _ro(ihi.astype(np.int64)), _ro(parts[k].astype(np.int64)))


def _probe_side(sk: SideKeys, pbits: int, inplace: bool, need_orig: bool,
                extra_src: Sequence[np.ndarray] = (), extra_dst: Sequence[np.ndarray] = (),
                orig_dst: Optional[np.ndarray] = None, keys_dst: Optional[np.ndarray] = None) -> _Probe:
    """The probe side by position: unmoved (``inplace``) or scattered into partition order with
    the words and byte spans of a general key; ``extra_src`` columns are scattered to
    ``extra_dst``, the original row numbers to ``orig_dst`` (else, with ``need_orig``, to a
    scratch array) and the key words to ``keys_dst`` (else to a scratch array), in one pass."""
    n = sk.n
    if inplace:
        ilo, ihi, ipart = _items(np.array([0, n], np.int64), np.array([-1], np.int64))
        return _Probe(sk.keys, sk.valid, _E64, sk.words, sk.starts, sk.ends, ilo, ihi, ipart, True)
    cursors, starts = _cursors(sk, pbits)
    keys = keys_dst[:n].view(np.uint64) if keys_dst is not None else host_empty(n, np.uint64)
    orig = orig_dst if orig_dst is not None else (host_empty(n, np.int64) if need_orig else None)
    w, st, en = sk.words, sk.starts, sk.ends
    src: list = list(extra_src)
    dst: list = list(extra_dst)
    if sk.verify:
        vsrc, vdst, (w, st, en) = _verify_rows(sk, n)
        src += vsrc
        dst += vdst
    _scatter(sk, pbits, cursors, keys, orig, src, dst)
    ilo, ihi, ipart = _items(starts, np.arange(len(starts) - 1, dtype=np.int64))
    return _Probe(_ro(keys), _E8, _E64 if orig is None else _ro(orig), _ro(w), _ro(st), _ro(en),
                  ilo, ihi, ipart, False, cursors, keys)


def _use_inplace(build: SideKeys, pbits: int) -> bool:
    nb = build.n
    ws = 12 * nb + 8 * nb            # tables (about 3 int32 slots a row) and key words
    if build.verify:
        ws += 16 * nb + int(build.chars.nbytes) + 8 * int(build.words.shape[0]) * nb
    return pbits == 0 or ws <= _INPLACE_BUILD_BYTES


def _count(probe: SideKeys, P: _Probe, B: _Build, pbits: int, eup: bool, eub: bool, match: np.ndarray,
           out_spans: Optional[tuple] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    K = _cpu_kernels()
    nparts = 1 << pbits
    ost, oen = out_spans if out_spans is not None else (_E2, _E2)
    bmatched = np.zeros(len(B.keys) if eub else 0, dtype=np.uint8)
    counts = np.zeros(len(P.ilo), np.int64)
    sbytes = np.zeros((len(P.ilo), ost.shape[0]), np.int64)
    K.probe_count(P.keys, P.valid, probe.kmode, np.uint64(nparts - 1), np.uint64(pbits), nparts,
                  P.ilo, P.ihi, P.ipart, B.keys, B.starts, B.tables, B.toffs, B.nxt, B.unique, probe.verify,
                  P.w, P.st, P.en, probe.chars, B.w, B.st, B.en, B.ch,
                  eup, eub, bmatched, match, counts, ost, oen, sbytes)
    return counts, sbytes, bmatched


def _exclusive(x: np.ndarray, start: int = 0) -> tuple[np.ndarray, int]:
    out = np.empty(len(x), np.int64)
    if len(x):
        np.cumsum(x, out=out)
        total = int(out[-1])
        out -= x
    else:
        total = 0
    out += start
    return out, total + start


def _unmatched_build(B: _Build, bst: np.ndarray, ben: np.ndarray, bmatched: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Unmatched build rows and their string key bytes, per partition (every partition of
    ``B.starts``, the never-matching one included)."""
    z = bmatched == 0
    cz = np.zeros(len(z) + 1, np.int64)
    np.cumsum(z, out=cz[1:])
    counts = cz[B.starts[1:]] - cz[B.starts[:-1]]
    nstr = bst.shape[0]
    sb = np.zeros((len(counts), nstr), np.int64)
    for c in range(nstr):
        cl = np.zeros(len(z) + 1, np.int64)
        np.cumsum(np.where(z, ben[c] - bst[c], 0), out=cl[1:])
        sb[:, c] = cl[B.starts[1:]] - cl[B.starts[:-1]]
    return counts, sb


def _fits(on_count: Optional[Callable[[int], None]], rows: int) -> bool:
    if on_count is None:
        return True
    try:
        on_count(rows)
    except MemoryError:
        return False
    return True


@register("cpu", "join")
def cpu_join(req: JoinRequest) -> JoinResult:
    """The CPU join. The build side is partitioned and gets its tables first; then either

    * *direct* (every build key distinct: at most one output row per probe row): one pass
      probes and writes, each work item into the room of its own probe positions, and a
      compaction closes the gaps left by probe rows without a match (none in a join where
      every probe row matches). Scattered probe columns land directly in their output rows.
    * *two passes* (repeated build keys, and ``join_size``): count every item's rows, take
      the prefix sum, write.
    """
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
    count_only = req.count_only
    string_keys = [] if count_only else list(req.string_keys)
    want_idx = req.want_indices and not count_only
    pbits = _partition_bits(build.n, probe.n)
    inplace = _use_inplace(build, pbits)

    # output-row codes in probe/build terms; the probe's key is carried only when unmatched
    # probe rows need it (matched rows take the equal build key)
    pcarry = [_as_words(c) for c in pcarry_src]
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
    if want_idx:
        lrow = (K.SRC_NONE, K.SRC_ROW) if build_left else (K.SRC_ROW, K.SRC_NONE)
        rrow = (K.SRC_ROW, K.SRC_NONE) if build_left else (K.SRC_NONE, K.SRC_ROW)
        for sp_, sb_ in (lrow, rrow):
            src_p.append(sp_)
            src_b.append(sb_)
            fill.append(-1)
    B = _build_side(build, pbits, [] if count_only else bcarry_src, want_idx)
    cap = probe.n + (build.n if eub else 0)
    direct = B.unique and not count_only and _fits(req.on_count, cap)
    if direct:
        return _cpu_direct(req, probe, build, B, pbits, inplace, eup, eub, pcarry, src_p, src_b, fill,
                           string_keys, want_idx, cap)
    return _cpu_two_pass(req, probe, build, B, pbits, inplace, eup, eub, pcarry, src_p, src_b, fill,
                         string_keys, want_idx)


def _string_outputs(P: _Probe, B: _Build, string_keys: list) -> tuple:
    pst, pen = _span_rows(P.st, P.en, string_keys)
    bst, ben = _span_rows(B.st, B.en, string_keys)
    return pst, pen, bst, ben


def _addresses(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return _ro(np.array([a.ctypes.data for a in arrays], np.int64))


def _result(total: int, outs: list, want_idx: bool, soffs: list, schars: list) -> JoinResult:
    rows = outs
    lidx = ridx = None
    if want_idx:
        lidx, ridx = rows[-2], rows[-1]
        rows = rows[:-2]
    return JoinResult(total, rows, lidx, ridx, list(zip(soffs, schars)))


def _cpu_direct(req: JoinRequest, probe: SideKeys, build: SideKeys, B: _Build, pbits: int, inplace: bool,
                eup: bool, eub: bool, pcarry: list, src_p: list, src_b: list, fill: list,
                string_keys: list, want_idx: bool, cap: int) -> JoinResult:
    K = _cpu_kernels()
    nparts = 1 << pbits
    nrows = len(src_p)
    outs = [host_empty(cap, np.int64) for _ in range(nrows)]
    placed = np.zeros(nrows, np.uint8)
    if inplace:
        P = _probe_side(probe, pbits, True, False)
        pcols = pcarry
    else:
        # every probe column goes straight to the first output row that takes it
        home: dict[int, int] = {}
        for r, sp in enumerate(src_p):
            if sp >= 0 and sp not in home:
                home[sp] = r
        orig_row = next((r for r, sp in enumerate(src_p) if sp == K.SRC_ROW), -1)
        # a fast-path key equals the probe's own key word wherever it matches: the scatter
        # writes the probe keys straight into that output row, and the probe reads them there
        key_row = -1 if probe.verify else next((r for r, sp in enumerate(src_p) if sp == K.SRC_MATCH_KEY), -1)
        pcols = [outs[home[k]] if k in home else host_empty(probe.n, np.int64) for k in range(len(pcarry))]
        for r in list(home.values()) + [x for x in (orig_row, key_row) if x >= 0]:
            placed[r] = 1
        P = _probe_side(probe, pbits, False, False, pcarry, [c[:probe.n] for c in pcols],
                        outs[orig_row] if orig_row >= 0 else None, outs[key_row] if key_row >= 0 else None)
        src_p = list(src_p)
        for row in (orig_row, key_row):
            if row >= 0:
                # that output row now holds its value by probe position: a probe column
                code = src_p[row]
                src_p = [len(pcols) if sp == code else sp for sp in src_p]
                pcols = pcols + [outs[row]]
    pst, pen, bst, ben = _string_outputs(P, B, string_keys)
    nstr = len(string_keys)
    nitems = len(P.ilo)
    # string room: item ``it`` may write the bytes of all its probe keys from cap_bytes[it] on
    cap_bytes = np.zeros((nitems, nstr), np.int64)
    soffs, schars = [], []
    for c in range(nstr):
        cl = np.zeros(probe.n + 1, np.int64)
        np.cumsum(pen[c] - pst[c], out=cl[1:])
        cap_bytes[:, c] = cl[P.ilo]
        room = int(cl[-1]) + (int((ben[c] - bst[c]).sum()) if eub else 0)
        off = host_empty(cap + 1, np.int64)
        off[0] = 0
        soffs.append(off)
        schars.append(host_empty(room, np.uint8))
    bmatched = np.zeros(build.n if eub else 0, dtype=np.uint8)
    counts = np.zeros(nitems, np.int64)
    sbytes = np.zeros((nitems, nstr), np.int64)
    sp_arr = _ro(np.array(src_p, np.int64))
    sb_arr = _ro(np.array(src_b, np.int64))
    fill_arr = _ro(np.array(fill, np.int64))
    K.probe_direct(P.keys, P.valid, probe.kmode, np.uint64(nparts - 1), np.uint64(pbits), nparts,
                   P.ilo, P.ihi, P.ipart, B.keys, B.starts, B.tables, B.toffs, probe.verify,
                   P.w, P.st, P.en, probe.chars, B.w, B.st, B.en, B.ch,
                   eup, eub, bmatched, P.orig, B.orig, _ptrs(pcols), _ptrs(B.cols), sp_arr, sb_arr, fill_arr,
                   _ptrs(outs), _ro(np.flatnonzero(placed == 0).astype(np.int64)), not P.inplace,
                   pst, pen, bst, ben, _ro(cap_bytes),
                   _addresses(soffs), _addresses(schars), counts, sbytes)
    B.tables = None
    P.keys = P.keys_buf = None
    item_off, total = _exclusive(counts)
    item_bytes = np.zeros((nitems, nstr), np.int64)
    tbytes = []
    for c in range(nstr):
        item_bytes[:, c], tb = _exclusive(sbytes[:, c])
        tbytes.append(tb)
    if not (np.array_equal(item_off, P.ilo) and np.array_equal(item_bytes, cap_bytes)):
        K.compact_items(P.ilo, counts, item_off, _ptrs(outs), _ro(cap_bytes), _ro(sbytes), _ro(item_bytes),
                        _addresses(soffs), _addresses(schars))
    if eub:
        ub_counts, ub_bytes = _unmatched_build(B, bst, ben, bmatched)
        ub_off, total = _exclusive(ub_counts, total)
        for c in range(nstr):
            ub_bytes[:, c], tbytes[c] = _exclusive(ub_bytes[:, c], tbytes[c])
        if int(ub_counts.sum()):
            K.probe_write(_E64, _E64, np.zeros(0, _index_dtype(build.n)), B.nxt, eup, _E64, P.orig, B.orig,
                          _ptrs(pcols), _ptrs(B.cols), B.keys, sp_arr, sb_arr, fill_arr, _ptrs(outs),
                          pst, pen, probe.chars, bst, ben, B.ch, not P.inplace, _E2i(nstr),
                          _addresses(soffs), _addresses(schars), eub, B.starts, _ro(bmatched), _ro(ub_off),
                          _ro(ub_bytes))
    # right-size outputs that used less than half of their room
    if total < cap // 2:
        outs = [_shrink(o, total) for o in outs]
        soffs = [_shrink(o, total + 1) for o in soffs]
    else:
        outs = [o[:total] for o in outs]
        soffs = [o[:total + 1] for o in soffs]
    schars = [_shrink(ch, tb) if tb < len(ch) // 2 else ch[:tb] for ch, tb in zip(schars, tbytes)]
    return _result(total, outs, want_idx, soffs, schars)


def _E2i(nstr: int) -> np.ndarray:
    return _ro(np.zeros((0, nstr), np.int64))


def _shrink(a: np.ndarray, n: int) -> np.ndarray:
    out = host_empty(n, a.dtype)
    out[:] = a[:n]
    return out


def _cpu_two_pass(req: JoinRequest, probe: SideKeys, build: SideKeys, B: _Build, pbits: int, inplace: bool,
                  eup: bool, eub: bool, pcarry: list, src_p: list, src_b: list, fill: list,
                  string_keys: list, want_idx: bool) -> JoinResult:
    K = _cpu_kernels()
    count_only = req.count_only
    P = _probe_side(probe, pbits, inplace, want_idx)
    pst, pen, bst, ben = _string_outputs(P, B, string_keys)
    nstr = len(string_keys)
    idt = _index_dtype(build.n)
    match = np.zeros(0, idt) if count_only else host_empty(probe.n, idt)
    counts, sbytes, bmatched = _count(probe, P, B, pbits, eup, eub, match, (pst, pen))
    item_off, total = _exclusive(counts)
    if eub:
        ub_counts, ub_bytes = _unmatched_build(B, bst, ben, bmatched)
        ub_off, total = _exclusive(ub_counts, total)
    else:
        ub_off, ub_bytes = _E64, np.zeros((0, nstr), np.int64)
    if count_only:
        return JoinResult(total, [])
    if req.on_count is not None:
        req.on_count(total)
    B.tables = None                             # not needed any more: back to the allocator
    # the probe payload, by probe position
    if P.inplace:
        pcols = pcarry
    else:
        pcols = [P.keys_buf.view(np.int64) if k == 0 else host_empty(probe.n, np.int64)
                 for k in range(len(pcarry))]
        P.keys = None
        if pcarry:
            # the keys' buffer is free now that the matches are counted: it takes the first column
            _scatter(probe, pbits, P.cursors, None, None, pcarry, pcols)
        P.keys_buf = None
    nrows = len(src_p)
    outs = [host_empty(total, np.int64) for _ in range(nrows)]
    item_bytes = np.zeros((len(P.ilo), nstr), np.int64)
    soffs, schars = [], []
    for c in range(nstr):
        ib, tb = _exclusive(sbytes[:, c])
        item_bytes[:, c] = ib
        if eub:
            ub_bytes[:, c], tb = _exclusive(ub_bytes[:, c], tb)
        off = host_empty(total + 1, np.int64)
        off[0] = 0
        soffs.append(off)
        schars.append(host_empty(tb, np.uint8))
    if total and nrows + nstr:
        K.probe_write(P.ilo, P.ihi, _ro(match), B.nxt, eup, _ro(item_off), P.orig, B.orig,
                      _ptrs(pcols), _ptrs(B.cols), B.keys,
                      _ro(np.array(src_p, np.int64)), _ro(np.array(src_b, np.int64)),
                      _ro(np.array(fill, np.int64)), _ptrs(outs), pst, pen, probe.chars, bst, ben, B.ch,
                      not P.inplace, _ro(item_bytes), _addresses(soffs), _addresses(schars),
                      eub, B.starts, _ro(bmatched), _ro(ub_off), _ro(ub_bytes))
    return _result(total, outs, want_idx, soffs, schars)


def _cpu_semi_anti(req: JoinRequest) -> JoinResult:
    L, R = req.left, req.right
    build_left = L.n < R.n
    probe, build = (R, L) if build_left else (L, R)
    pbits = _partition_bits(build.n, probe.n)
    inplace = _use_inplace(build, pbits)
    B = _build_side(build, pbits, [], True)
    P = _probe_side(probe, pbits, inplace, True)
    flags = np.zeros(L.n, dtype=np.uint8)
    idt = _index_dtype(build.n)
    if build_left:
        _counts, _sb, bmatched = _count(probe, P, B, pbits, False, True, np.zeros(0, idt))
        if len(B.orig):
            flags[B.orig] = bmatched
        else:
            flags[:] = bmatched
    else:
        match = host_empty(probe.n, idt)
        _count(probe, P, B, pbits, False, False, match)
        hit = (match >= 0).view(np.uint8)
        if len(P.orig):
            flags[P.orig] = hit
        else:
            flags[:] = hit
    want = 1 if req.how == "semi" else 0
    sel = np.flatnonzero(flags == want).astype(np.int64)
    if req.count_only:
        return JoinResult(len(sel), [])
    if req.on_count is not None:
        req.on_count(len(sel))
    return JoinResult(len(sel), [], sel, None)


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

    dev = array_device(req.left.valid)
    with launch_context(dev):
        return _cuda_join(req, dev)


def _cuda_join(req: JoinRequest, dev: Device) -> JoinResult:
    L, R = req.left, req.right
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
