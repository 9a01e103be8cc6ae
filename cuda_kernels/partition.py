"""Hash-partition kernels: partition ids, histograms and the scatter into partition order.

The partition id of a row is :func:`partition_of` of its row hash (see
:mod:`gpuframe.kernels.hashing` for the hash contract): ``((h >> 32) * n) >> 32``, the HIGH bits,
because the join kernels radix-partition on the low bits.

CPU (``@njit``): the rows are cut into ``nchunks`` contiguous chunks (one per thread); each chunk
gets its own histogram and its own write cursors, so the scatter keeps the input order inside
every partition (stable) without atomics. Partition ids are stored in the narrowest unsigned type
that holds them (uint8 up to 256 partitions) to keep the extra pass cheap. Every column is
*scattered* (input read in order, one write stream per partition): fixed-width values directly,
two columns of one width per pass; strings as lengths, a scan, then bytes; bitmaps as one byte
per row, then packed (two threads cannot share an output byte).

CUDA (built lazily by :func:`cuda_kernels`), stable too, so both devices return the same table:
each block owns a contiguous range of rows and walks it in tiles of ``blockDim.x`` rows (at most
:data:`TILE_MAX`, one row per thread). ``block_counts_*`` compute the ids and each block's
histogram (``counts[p * nblocks + block]``: in shared memory with shared atomics when the
partitions fit, :data:`SHARED_HIST_MAX`; ``block_counts_fixed`` hashes a single fixed-width key
itself, without a hash array); the launcher scans the counts once (exclusive, in that
partition-major order, so ``scan[p * nblocks + b]`` is where block ``b``'s rows of partition ``p``
start). ``scatter_*`` then rank every tile stably: a row's rank is the number of earlier rows of
its group of :data:`GROUP` threads with the same id (a loop over the group's ids in shared memory,
GROUP iterations: the simulator has no ``match_any``), plus those of the earlier groups (one
shared histogram row per group), plus the block's running cursor for the id; it writes up to two
fixed-width columns of one width straight to their output rows, and the scatter map when other
columns need it. No per-row global atomics. With more partitions than fit in shared memory the
cursors stay in global memory (each block owns its own) and the rank is a loop over the whole
tile (at most TILE_MAX iterations).

Both run the same per-row functions (:func:`partition_of` of the row hash of
:mod:`gpuframe.kernels.hashing`), inside the algorithm each device wants: a CPU has a few threads
and caches that reward sequential writes, so each thread owns a chunk and its cursors; a GPU has
tens of thousands of threads, so each block owns a range, ranks its rows in shared memory tile by
tile and writes each row once to its final place.
"""
from __future__ import annotations

import functools

import numpy as np
from numba.extending import register_jitable

from .cpu_intrinsics import (LINE_BYTES, address, claim_one, copy_bytes, copy_short, row_block,  # noqa: F401
                             store_fence, stream_line)
from .hashing import bit_is_set, hash_fixed, null_hash, partition_of  # noqa: F401  (re-exported)
from .jit_cache import njit
from .kernel_set import KernelSet

# Partitions that a per-block shared-memory histogram can hold (static shared array size).
SHARED_HIST_MAX = 1024


# numba.cuda, bound by the first cuda_kernels() call: a module global, because the simulator
# runs kernels by swapping the numba.cuda module in their globals.
cuda = None

# --------------------------------------------------------------------------- CPU kernels
# Threaded kernels (``gpuframe.backends.cpu._target.run_threads``, ``run_rows`` for the per-row
# ones): each claims blocks of rows, or chunks, through ``cursor``, its last argument. As numba
# ``prange`` loops they compiled 1-3 s longer for each signature (``pids_from_fixed`` has one
# per key type).
_OPTS = dict(cache=True, nogil=True)
_NO_NRT = dict(_OPTS, _nrt=False)    # kernels that allocate nothing (see cpu_intrinsics.claim_one)


@njit(**_NO_NRT)
def pids_from_fixed(values, kind, validity, vbit, seed, nparts, pids, cursor):
    """Partition ids of a single fixed-width key column, hash fused in (no hash array)."""
    n = values.shape[0]
    nh = partition_of(null_hash(seed), nparts)
    lo, hi = row_block(cursor, n)
    while lo < n:
        if validity.shape[0] > 0:
            for i in range(lo, hi):
                if bit_is_set(validity, vbit + i) == 0:
                    pids[i] = nh
                else:
                    pids[i] = partition_of(hash_fixed(values[i], kind, seed), nparts)
        else:
            for i in range(lo, hi):
                pids[i] = partition_of(hash_fixed(values[i], kind, seed), nparts)
        lo, hi = row_block(cursor, n)


@njit(**_NO_NRT)
def pids_from_hashes(hashes, nparts, pids, cursor):
    n = hashes.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            pids[i] = partition_of(hashes[i], nparts)
        lo, hi = row_block(cursor, n)


U0 = np.uint64(0)
HEAVY_SCAN = 32   # heavy hashes scanned one by one up to this many, binary-searched above


@register_jitable
def heavy_code_scan(h, heavy, codes):
    """The code of ``h`` among ``heavy`` (0 when absent) by a branch-free scan: a hot key's rows
    are scattered, so a branch per row would be mispredicted; vectorises."""
    code = U0
    for j in range(heavy.shape[0]):
        code |= np.uint64(codes[j]) * np.uint64(heavy[j] == h)
    return code


@register_jitable
def heavy_code_search(h, heavy, codes):
    """:func:`heavy_code_scan` by binary search (``heavy`` sorted; many heavy hashes)."""
    lo = 0
    hi = heavy.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if heavy[mid] < h:
            lo = mid + 1
        else:
            hi = mid
    return np.uint64(codes[lo]) if lo < heavy.shape[0] and heavy[lo] == h else U0


@register_jitable
def heavy_pid(h, code, nparts):
    """``partition_of(h, nparts)``, or ``nparts - 1 + code`` for a heavy hash (all uint64: numba
    would unify a uint64 and an int64 branch as float64)."""
    p = partition_of(h, nparts)
    return p if code == U0 else np.uint64(nparts) - U1 + code


@njit(**_NO_NRT)
def pids_from_hashes_heavy(hashes, nparts, heavy, codes, pids, cursor):
    """:func:`pids_from_hashes`, except that a row whose hash is ``heavy[j]`` (sorted) gets
    ``nparts - 1 + codes[j]``: the skewed-merge split of ``gpuframe._skew`` in the id pass."""
    n = hashes.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        if heavy.shape[0] <= HEAVY_SCAN:
            for i in range(lo, hi):
                h = hashes[i]
                pids[i] = heavy_pid(h, heavy_code_scan(h, heavy, codes), nparts)
        else:
            for i in range(lo, hi):
                h = hashes[i]
                pids[i] = heavy_pid(h, heavy_code_search(h, heavy, codes), nparts)
        lo, hi = row_block(cursor, n)


@njit(**_NO_NRT)
def pids_from_fixed_heavy(values, kind, validity, vbit, seed, nparts, heavy, codes, pids, cursor):
    """:func:`pids_from_fixed` with the heavy hashes' own partitions (as
    :func:`pids_from_hashes_heavy`)."""
    n = values.shape[0]
    nh = null_hash(seed)
    nh_pid = heavy_pid(nh, heavy_code_search(nh, heavy, codes), nparts)
    scan = heavy.shape[0] <= HEAVY_SCAN
    lo, hi = row_block(cursor, n)
    while lo < n:
        if validity.shape[0] > 0:
            for i in range(lo, hi):
                if bit_is_set(validity, vbit + i) == 0:
                    pids[i] = nh_pid
                else:
                    h = hash_fixed(values[i], kind, seed)
                    code = heavy_code_scan(h, heavy, codes) if scan else heavy_code_search(h, heavy, codes)
                    pids[i] = heavy_pid(h, code, nparts)
        elif scan:
            for i in range(lo, hi):
                h = hash_fixed(values[i], kind, seed)
                pids[i] = heavy_pid(h, heavy_code_scan(h, heavy, codes), nparts)
        else:
            for i in range(lo, hi):
                h = hash_fixed(values[i], kind, seed)
                pids[i] = heavy_pid(h, heavy_code_search(h, heavy, codes), nparts)
        lo, hi = row_block(cursor, n)


# Unsigned indices and cursors: numba then emits no negative-index wraparound code, which halves
# the instructions of the scatter loops (they run at memory speed only without it).
U1 = np.uint64(1)
U3 = np.uint64(3)
U4 = np.uint64(4)
U7 = np.uint64(7)


@register_jitable
def chunk_bounds(n, c, nchunks):
    """Rows ``[lo, hi)`` of chunk ``c`` of ``nchunks`` (as uint64)."""
    return np.uint64(n * c // nchunks), np.uint64(n * (c + 1) // nchunks)


@register_jitable
def bit_u(bits, pos):
    """Bit ``pos`` (uint64) of an LSB-first bitmap, as uint8 0/1."""
    return np.uint8((np.uint64(bits[pos >> U3]) >> (pos & U7)) & U1)


@njit(**_OPTS)
def histogram(pids, hist, cursor):
    """Rows per partition in each of ``hist.shape[0]`` contiguous chunks of the rows:
    ``hist[chunk, partition]``, for the chunks it claims."""
    n = pids.shape[0]
    nchunks, nparts = hist.shape
    c = claim_one(cursor)
    while c < nchunks:
        lo, hi = chunk_bounds(n, c, nchunks)
        # four interleaved counters break the store-to-load chain on repeated ids
        h0 = np.zeros(nparts, np.int64)
        h1 = np.zeros(nparts, np.int64)
        h2 = np.zeros(nparts, np.int64)
        h3 = np.zeros(nparts, np.int64)
        i = lo
        while i + U4 <= hi:
            h0[pids[i]] += 1
            h1[pids[i + U1]] += 1
            h2[pids[i + np.uint64(2)]] += 1
            h3[pids[i + U3]] += 1
            i += U4
        while i < hi:
            h0[pids[i]] += 1
            i += U1
        for p in range(nparts):
            hist[c, p] = h0[p] + h1[p] + h2[p] + h3[p]
        c = claim_one(cursor)


# In the scatter kernels ``cursors[chunk, p]`` (uint64) is the output row of chunk ``chunk``'s first
# row of partition ``p``: the chunks write disjoint ranges, and each keeps its input order.
@njit(**_OPTS)
def scatter_fixed(values, pids, cursors, out, cursor):
    """``out[cursor] = values[i]``: one fixed-width column in partition order (stable)."""
    n = values.shape[0]
    nchunks = cursors.shape[0]
    c = claim_one(cursor)
    while c < nchunks:
        lo, hi = chunk_bounds(n, c, nchunks)
        cur = cursors[c].copy()
        for i in range(lo, hi):
            p = pids[i]
            k = cur[p]
            out[k] = values[i]
            cur[p] = k + U1
        c = claim_one(cursor)


@njit(**_OPTS)
def scatter_fixed2(values_a, values_b, pids, cursors, out_a, out_b, cursor):
    """:func:`scatter_fixed` of two columns of one width in one pass over the ids."""
    n = values_a.shape[0]
    nchunks = cursors.shape[0]
    c = claim_one(cursor)
    while c < nchunks:
        lo, hi = chunk_bounds(n, c, nchunks)
        cur = cursors[c].copy()
        for i in range(lo, hi):
            p = pids[i]
            k = cur[p]
            out_a[k] = values_a[i]
            out_b[k] = values_b[i]
            cur[p] = k + U1
        c = claim_one(cursor)


# Write-combining scatter (CPU). Each chunk keeps, per partition, a 64-byte line of values in a
# small buffer (L1/L2 resident) and writes a full line with one non-temporal store: the output is
# written without being read first (no read-for-ownership), which is most of the memory traffic of
# a plain scatter. Lines shared with another chunk's range (at most two per chunk and partition)
# and the unfinished tail lines are written element by element. Outputs must be 64-byte aligned.
STREAM_MAX_PARTITIONS = 1024


@njit(**_OPTS)
def scatter_fixed2_stream(values_a, values_b, pids, cursors, out_a, out_b, bufs, cursor):
    """:func:`scatter_fixed2` with write-combining buffers and streaming stores.

    ``out_a``/``out_b``: 64-byte aligned, one element width ``w``; ``bufs``:
    ``(nchunks, 2, nparts * 64 / w)`` of that width, each row 64-byte aligned.
    """
    n = values_a.shape[0]
    nchunks = cursors.shape[0]
    nparts = cursors.shape[1]
    per_line = np.uint64(LINE_BYTES // out_a.itemsize)
    mask = per_line - U1
    c = claim_one(cursor)
    while c < nchunks:
        lo, hi = chunk_bounds(n, c, nchunks)
        start = cursors[c].copy()
        cur = cursors[c].copy()
        buf_a = bufs[c, 0]
        buf_b = bufs[c, 1]
        for i in range(lo, hi):
            p = np.uint64(pids[i])
            k = cur[p]
            slot = k & mask
            base = p * per_line
            buf_a[base + slot] = values_a[i]
            buf_b[base + slot] = values_b[i]
            k += U1
            cur[p] = k
            if slot == mask:
                first = k - per_line
                if first >= start[p]:
                    stream_line(out_a, first, buf_a, base)
                    stream_line(out_b, first, buf_b, base)
                else:
                    for j in range(start[p], k):
                        out_a[j] = buf_a[base + (j & mask)]
                        out_b[j] = buf_b[base + (j & mask)]
        for q in range(nparts):
            p = np.uint64(q)
            k = cur[p]
            first = max(k - (k & mask), start[p])
            base = p * per_line
            for j in range(first, k):
                out_a[j] = buf_a[base + (j & mask)]
                out_b[j] = buf_b[base + (j & mask)]
        store_fence()
        c = claim_one(cursor)


@njit(**_OPTS)
def scatter_fixed_stream(values, pids, cursors, out, bufs, cursor):
    """:func:`scatter_fixed` with write-combining buffers and streaming stores (see
    :func:`scatter_fixed2_stream`; ``bufs``: ``(nchunks, 1, nparts * 64 / w)``)."""
    n = values.shape[0]
    nchunks = cursors.shape[0]
    nparts = cursors.shape[1]
    per_line = np.uint64(LINE_BYTES // out.itemsize)
    mask = per_line - U1
    c = claim_one(cursor)
    while c < nchunks:
        lo, hi = chunk_bounds(n, c, nchunks)
        start = cursors[c].copy()
        cur = cursors[c].copy()
        buf = bufs[c, 0]
        for i in range(lo, hi):
            p = np.uint64(pids[i])
            k = cur[p]
            slot = k & mask
            base = p * per_line
            buf[base + slot] = values[i]
            k += U1
            cur[p] = k
            if slot == mask:
                first = k - per_line
                if first >= start[p]:
                    stream_line(out, first, buf, base)
                else:
                    for j in range(start[p], k):
                        out[j] = buf[base + (j & mask)]
        for q in range(nparts):
            p = np.uint64(q)
            k = cur[p]
            first = max(k - (k & mask), start[p])
            base = p * per_line
            for j in range(first, k):
                out[j] = buf[base + (j & mask)]
        store_fence()
        c = claim_one(cursor)


@njit(**_OPTS)
def scatter_bits(bits, bit_off, pids, cursors, out_bytes, cursor):
    """A bitmap (validity or bool data) in partition order, one uint8 0/1 per output row (bits
    cannot be scattered from several threads: neighbouring rows share a byte); pack it with
    :func:`pack_bytes`."""
    n = pids.shape[0]
    nchunks = cursors.shape[0]
    off = np.uint64(bit_off)
    c = claim_one(cursor)
    while c < nchunks:
        lo, hi = chunk_bounds(n, c, nchunks)
        cur = cursors[c].copy()
        for i in range(lo, hi):
            p = pids[i]
            k = cur[p]
            out_bytes[k] = bit_u(bits, off + i)
            cur[p] = k + U1
        c = claim_one(cursor)


@njit(**_NO_NRT)
def pack_bytes(values, out, cursor):
    """Pack 0/1 bytes into an LSB-first bitmap of ``ceil(n / 8)`` bytes (``run_rows`` over the
    output bytes); returns the number of 1s in the blocks it claimed."""
    n = values.shape[0]
    nb = out.shape[0]
    ones = 0
    lo, hi = row_block(cursor, nb)
    while lo < nb:
        for b in range(lo, hi):
            base = b * 8
            byte = 0
            for k in range(min(8, n - base)):
                byte |= np.int64(values[base + k]) << k
            out[b] = byte
            ones += (byte & 1) + ((byte >> 1) & 1) + ((byte >> 2) & 1) + ((byte >> 3) & 1) \
                + ((byte >> 4) & 1) + ((byte >> 5) & 1) + ((byte >> 6) & 1) + ((byte >> 7) & 1)
        lo, hi = row_block(cursor, nb)
    return ones


@njit(**_OPTS)
def scatter_string_lengths(offsets, pids, cursors, out_offsets, cursor):
    """``out_offsets[k + 1] = len(string i)`` for input row ``i`` going to output row ``k`` (and
    ``out_offsets[0] = 0``); returns the total number of bytes of the chunks it claimed (the
    caller adds the threads' totals up). An inclusive scan of
    ``out_offsets`` then gives the partitioned column's offsets."""
    n = pids.shape[0]
    nchunks = cursors.shape[0]
    total = 0
    out_offsets[0] = 0
    c = claim_one(cursor)
    while c < nchunks:
        lo, hi = chunk_bounds(n, c, nchunks)
        cur = cursors[c].copy()
        part = 0
        for i in range(lo, hi):
            p = pids[i]
            k = cur[p]
            ln = np.int64(offsets[i + U1]) - np.int64(offsets[i])
            out_offsets[k + U1] = ln
            cur[p] = k + U1
            part += ln
        total += part
        c = claim_one(cursor)
    return total


@njit(**_OPTS)
def scatter_string_chars(offsets, chars, pids, cursors, out_offsets, out_chars, cursor):
    """Copy each input string to its output row's place (sequential reads, one write stream per
    partition)."""
    n = pids.shape[0]
    nchunks = cursors.shape[0]
    src = address(chars)
    out = address(out_chars)
    c = claim_one(cursor)
    while c < nchunks:
        lo, hi = chunk_bounds(n, c, nchunks)
        cur = cursors[c].copy()
        for i in range(lo, hi):
            p = pids[i]
            k = cur[p]
            cur[p] = k + U1
            dst = np.int64(out_offsets[k])
            copy_short(out + dst, src + np.int64(offsets[i]), np.int64(out_offsets[k + U1]) - dst)
        c = claim_one(cursor)


# --------------------------------------------------------------------------- CUDA kernels
# The GPU partition (see the module docstring). Each block owns a contiguous range of rows and
# walks it in tiles of ``blockDim.x`` rows (one row per thread, at most TILE_MAX); the static
# shared arrays below are sized for the largest tile.
TILE_MAX = 256
# Rows ranked together by a plain loop over the ids in shared memory (a warp's worth; no warp
# intrinsics, so it runs in the simulator too): the loop is bounded by GROUP iterations.
GROUP = 32
GROUPS_MAX = TILE_MAX // GROUP


@register_jitable
def put_row(i, pos, a, b, out_a, out_b, ncols, dest, want_dest):
    """Row ``i`` to output row ``pos``: up to two fixed-width columns directly, and the scatter map."""
    if ncols > 0:
        out_a[pos] = a[i]
    if ncols > 1:
        out_b[pos] = b[i]
    if want_dest:
        dest[i] = pos


@functools.lru_cache(maxsize=None)
def cuda_kernels() -> KernelSet:
    """The CUDA partition kernels (built on first use; numba caches each signature's compile)."""
    global cuda
    from numba import cuda

    @cuda.jit
    def pids_kernel(hashes, nparts, pids):
        i = cuda.grid(1)
        if i < hashes.shape[0]:
            pids[i] = partition_of(hashes[i], nparts)

    @cuda.jit
    def block_counts_shared(hashes, nparts, rows_per_block, pids, counts):
        # ids of the block's rows and their histogram in shared memory (order does not matter
        # for counting, so shared atomics); counts[p * nblocks + block], plain stores
        local = cuda.shared.array(SHARED_HIST_MAX, np.int32)
        t = cuda.threadIdx.x
        nt = cuda.blockDim.x
        blk = cuda.blockIdx.x
        nb = cuda.gridDim.x
        for p in range(t, nparts, nt):
            local[p] = 0
        cuda.syncthreads()
        lo = blk * rows_per_block
        hi = min(hashes.shape[0], lo + rows_per_block)
        for i in range(lo + t, hi, nt):
            p = np.int32(partition_of(hashes[i], nparts))
            pids[i] = p
            cuda.atomic.add(local, p, 1)
        cuda.syncthreads()
        for p in range(t, nparts, nt):
            counts[p * nb + blk] = local[p]

    @cuda.jit
    def block_counts_fixed(values, kind, validity, has_valid, vbit, seed, nparts, rows_per_block, pids, counts):
        # block_counts_shared of a single fixed-width key column, hash fused in (no hash array;
        # the same ids as pids_from_fixed on the CPU)
        local = cuda.shared.array(SHARED_HIST_MAX, np.int32)
        t = cuda.threadIdx.x
        nt = cuda.blockDim.x
        blk = cuda.blockIdx.x
        nb = cuda.gridDim.x
        for p in range(t, nparts, nt):
            local[p] = 0
        cuda.syncthreads()
        nh = np.int32(partition_of(null_hash(seed), nparts))
        lo = blk * rows_per_block
        hi = min(values.shape[0], lo + rows_per_block)
        for i in range(lo + t, hi, nt):
            if has_valid and bit_is_set(validity, vbit + i) == 0:
                p = nh
            else:
                p = np.int32(partition_of(hash_fixed(values[i], kind, seed), nparts))
            pids[i] = p
            cuda.atomic.add(local, p, 1)
        cuda.syncthreads()
        for p in range(t, nparts, nt):
            counts[p * nb + blk] = local[p]

    @cuda.jit
    def block_counts_global(hashes, nparts, rows_per_block, pids, counts):
        # more partitions than a shared histogram holds: counted per tile without atomics, the
        # last row of each id in the tile adding the tile's count to the block's own counter
        # (a loop over the tile's ids: at most TILE_MAX iterations)
        spid = cuda.shared.array(TILE_MAX, np.int32)
        t = cuda.threadIdx.x
        nt = cuda.blockDim.x
        blk = cuda.blockIdx.x
        nb = cuda.gridDim.x
        for p in range(t, nparts, nt):
            counts[p * nb + blk] = 0
        cuda.syncthreads()
        lo = blk * rows_per_block
        hi = min(hashes.shape[0], lo + rows_per_block)
        for start in range(lo, hi, nt):
            i = start + t
            p = np.int32(-1)
            if i < hi:
                p = np.int32(partition_of(hashes[i], nparts))
                pids[i] = p
            spid[t] = p
            cuda.syncthreads()
            if p >= 0:
                before = 0
                total = 0
                for j in range(nt):
                    if spid[j] == p:
                        if j < t:
                            before += 1
                        total += 1
                if before + 1 == total:
                    counts[p * nb + blk] += total
            cuda.syncthreads()

    @cuda.jit
    def scatter_shared(pids, cursors, nparts, rows_per_block, a, b, out_a, out_b, ncols, dest, want_dest):
        # cursors[p * nblocks + block]: the output row of the block's first row of partition p
        # (the exclusive scan of the counts). Stable ranks per tile: a row's rank among the
        # earlier rows of its group with its id (a loop over the group, GROUP iterations), plus
        # the counts of the earlier groups (ghist, one row per group), plus the block's cursor.
        spid = cuda.shared.array(TILE_MAX, np.int32)
        ghist = cuda.shared.array((GROUPS_MAX, SHARED_HIST_MAX), np.int16)
        base = cuda.shared.array(SHARED_HIST_MAX, np.int64)
        t = cuda.threadIdx.x
        nt = cuda.blockDim.x
        blk = cuda.blockIdx.x
        nb = cuda.gridDim.x
        g = t // GROUP
        g0 = g * GROUP
        g1 = min(g0 + GROUP, nt)
        ngroups = (nt + GROUP - 1) // GROUP
        for p in range(t, nparts, nt):
            base[p] = cursors[p * nb + blk]
            for w in range(GROUPS_MAX):
                ghist[w, p] = 0
        lo = blk * rows_per_block
        hi = min(pids.shape[0], lo + rows_per_block)
        for start in range(lo, hi, nt):
            i = start + t
            p = np.int32(-1)
            if i < hi:
                p = pids[i]
            spid[t] = p
            cuda.syncthreads()  # ids written; the previous tile's cursors and ghist settled
            r = 0
            last = True
            if p >= 0:
                for j in range(g0, g1):
                    if spid[j] == p:
                        if j < t:
                            r += 1
                        elif j > t:
                            last = False
                if last:
                    ghist[g, p] = r + 1
            cuda.syncthreads()  # group counts written
            rank = 0
            total = 0
            if p >= 0:
                rank = r
                for w in range(ngroups):
                    c = ghist[w, p]
                    if w < g:
                        rank += c
                    total += c
                put_row(i, base[p] + rank, a, b, out_a, out_b, ncols, dest, want_dest)
            cuda.syncthreads()  # every row has read the cursors and group counts
            if p >= 0 and last:
                ghist[g, p] = 0
                if rank + 1 == total:
                    base[p] += total

    @cuda.jit
    def scatter_global(pids, cursors, nparts, rows_per_block, a, b, out_a, out_b, ncols, dest, want_dest):
        # more partitions than shared memory holds: the block's cursors stay in global memory
        # (each block owns its own), and a row's rank in the tile is a loop over the tile's ids
        # (at most TILE_MAX iterations). ``cursors`` is advanced in place.
        spid = cuda.shared.array(TILE_MAX, np.int32)
        t = cuda.threadIdx.x
        nt = cuda.blockDim.x
        blk = cuda.blockIdx.x
        nb = cuda.gridDim.x
        lo = blk * rows_per_block
        hi = min(pids.shape[0], lo + rows_per_block)
        for start in range(lo, hi, nt):
            i = start + t
            p = np.int32(-1)
            if i < hi:
                p = pids[i]
            spid[t] = p
            cuda.syncthreads()
            rank = 0
            total = 0
            if p >= 0:
                for j in range(nt):
                    if spid[j] == p:
                        if j < t:
                            rank += 1
                        total += 1
                put_row(i, cursors[p * nb + blk] + rank, a, b, out_a, out_b, ncols, dest, want_dest)
            cuda.syncthreads()
            if p >= 0 and rank + 1 == total:
                cursors[p * nb + blk] += total

    @cuda.jit
    def scatter_by_dest(a, b, ncols, dest, out_a, out_b):
        # further fixed-width columns (two of one width per pass) through the scatter map
        i = cuda.grid(1)
        if i < dest.shape[0]:
            k = dest[i]
            out_a[k] = a[i]
            if ncols > 1:
                out_b[k] = b[i]

    @cuda.jit
    def invert_dest(dest, perm):
        # the gather map (output row -> input row) of the scatter map, for bitmaps and strings
        i = cuda.grid(1)
        if i < dest.shape[0]:
            perm[dest[i]] = i

    return KernelSet(pids=pids_kernel, block_counts_shared=block_counts_shared, block_counts_fixed=block_counts_fixed,
                     block_counts_global=block_counts_global, scatter_shared=scatter_shared,
                     scatter_global=scatter_global, scatter_by_dest=scatter_by_dest, invert_dest=invert_dest)
