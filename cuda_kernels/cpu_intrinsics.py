"""LLVM intrinsics of the CPU drivers (``njit`` only): raw loads and stores at addresses,
non-temporal (streaming) stores, prefetch, the one byte copy, the atomic add from which the
join's threaded kernels claim their work items, and the call through an address by which they
run an item function compiled apart from them (:func:`call_entry`).

The CPU join passes its columns as tables of addresses (one compiled kernel then serves every
number of columns), writes large outputs with non-temporal stores and prefetches the string bytes
that a partition-ordered probe reads out of order; the CPU partition streams whole cache lines.
None of this has a CUDA counterpart: the CUDA kernels index arrays. The per-row functions that
both targets share read memory through :mod:`gpuframe.kernels.loads` instead.
"""
from __future__ import annotations

import zlib

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba._dispatcher import compute_fingerprint
from numba.core import cgutils
from numba.core.typing.typeof import Purpose, typeof
from numba.extending import intrinsic

from .jit_cache import compile_beside

__all__ = ["address", "call_entry", "claim", "claim_one", "copy_bytes", "copy_short", "entry_tag", "fetch_add_at",
           "load_f64", "load_i64", "load_u64_at", "load_u8_at", "native_entry", "native_entry_for", "prefetch",
           "store_fence", "store_i64", "store_i64_nt", "store_u64_at", "store_u8_at", "stream_line", "row_block",
           "LINE_BYTES", "ROW_BLOCK"]

LINE_BYTES = 64


def _ptr_codegen(builder, addr, idx, width):
    ptr = builder.inttoptr(addr, ir.IntType(width).as_pointer())
    return builder.gep(ptr, [idx])


def _nontemporal(builder, inst) -> None:
    inst.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))


@njit(inline="always")
def address(arr):
    """The address of ``arr``'s first element, as int64."""
    return np.int64(arr.ctypes.data)


@intrinsic
def load_i64(typingctx, addr, idx):
    """The int64 at ``addr + 8 * idx``."""
    sig = types.int64(types.int64, types.int64)

    def codegen(context, builder, signature, args):
        return builder.load(_ptr_codegen(builder, args[0], args[1], 64))

    return sig, codegen


@intrinsic
def load_f64(typingctx, addr, idx):
    """The float64 at ``addr + 8 * idx``."""
    sig = types.float64(types.int64, types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.DoubleType().as_pointer())
        return builder.load(builder.gep(ptr, [args[1]]))

    return sig, codegen


@intrinsic
def store_i64(typingctx, addr, idx, val):
    """``*(int64 *)(addr + 8 * idx) = val``."""
    sig = types.void(types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        builder.store(args[2], _ptr_codegen(builder, args[0], args[1], 64))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def store_i64_nt(typingctx, addr, idx, val):
    """``*(int64 *)(addr + 8 * idx) = val`` with a non-temporal store: the line bypasses the
    caches, which roughly triples the speed of streaming large outputs on this kind of machine."""
    sig = types.void(types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        _nontemporal(builder, builder.store(args[2], _ptr_codegen(builder, args[0], args[1], 64)))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def load_u64_at(typingctx, addr):
    """The (unaligned, little-endian) uint64 at byte address ``addr``."""
    sig = types.uint64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.load(builder.inttoptr(args[0], ir.IntType(64).as_pointer()), align=1)

    return sig, codegen


@intrinsic
def load_u8_at(typingctx, addr):
    """The byte at address ``addr``, as uint64."""
    sig = types.uint64(types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(8).as_pointer())
        return builder.zext(builder.load(ptr), ir.IntType(64))

    return sig, codegen


@intrinsic
def store_u64_at(typingctx, addr, val):
    """Store uint64 ``val`` at (unaligned) byte address ``addr``."""
    sig = types.void(types.int64, types.uint64)

    def codegen(context, builder, signature, args):
        builder.store(args[1], builder.inttoptr(args[0], ir.IntType(64).as_pointer()), align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def store_u8_at(typingctx, addr, val):
    """Store the low byte of ``val`` at address ``addr``."""
    sig = types.void(types.int64, types.uint64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(8).as_pointer())
        builder.store(builder.trunc(args[1], ir.IntType(8)), ptr)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def copy_bytes(typingctx, dst, src, n):
    """``memmove(dst, src, n)`` between raw addresses (int64; ranges may overlap). The one byte
    copy of the CPU kernels: pass ``address(arr) + offset``."""
    sig = types.void(types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        d = builder.inttoptr(args[0], i8p)
        s = builder.inttoptr(args[1], i8p)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i8p, ir.IntType(64), ir.IntType(1)])
        fn = builder.module.declare_intrinsic("llvm.memmove", [i8p, i8p, ir.IntType(64)], fnty)
        builder.call(fn, [d, s, args[2], ir.Constant(ir.IntType(1), 0)])
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def copy_short(dst, src, n):
    """Copy ``n`` bytes between non-overlapping addresses: words inline for short strings (a
    call to ``memmove`` costs more than the copy), :func:`copy_bytes` for long ones. Never
    touches a byte outside either range. A string of 8 to 32 bytes is four word copies at fixed
    places (0, 8 and 16, each at most the last word's place, and the last word, overlapping
    its neighbour), with no branch on its length: strings whose lengths vary row to row then
    do not mispredict a loop's exit each."""
    if n > 64:
        copy_bytes(dst, src, n)
        return
    if n >= 8:
        last = n - 8
        if n <= 32:
            w0 = load_u64_at(src)
            w1 = load_u64_at(src + min(8, last))
            w2 = load_u64_at(src + min(16, last))
            w3 = load_u64_at(src + last)
            store_u64_at(dst, w0)
            store_u64_at(dst + min(8, last), w1)
            store_u64_at(dst + min(16, last), w2)
            store_u64_at(dst + last, w3)
            return
        k = 0
        while k < last:
            store_u64_at(dst + k, load_u64_at(src + k))
            k += 8
        # the last 8 bytes, overlapping the ones just copied: one load and store for the tail
        store_u64_at(dst + last, load_u64_at(src + last))
        return
    k = 0
    while k < n:
        store_u8_at(dst + k, load_u8_at(src + k))
        k += 1


@intrinsic
def prefetch(typingctx, addr):
    """Hint the CPU to load the cache line at ``addr`` (never faults)."""
    sig = types.void(types.int64)

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        builder.call(fn, [builder.inttoptr(args[0], i8p), ir.Constant(i32, 0), ir.Constant(i32, 3),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def stream_line(typingctx, dst, dst_idx, src, src_idx):
    """Copy the 64 bytes at ``src[src_idx]`` to ``dst[dst_idx]`` (64-byte aligned) with a
    non-temporal store."""
    sig = types.void(dst, types.uint64, src, types.uint64)

    def codegen(context, builder, sig, args):
        d, di, s, si = args
        darr = context.make_array(sig.args[0])(context, builder, d)
        sarr = context.make_array(sig.args[2])(context, builder, s)
        line = ir.VectorType(ir.IntType(64), LINE_BYTES // 8)
        value = builder.load(builder.bitcast(builder.gep(sarr.data, [si]), line.as_pointer()), align=8)
        store = builder.store(value, builder.bitcast(builder.gep(darr.data, [di]), line.as_pointer()),
                              align=LINE_BYTES)
        _nontemporal(builder, store)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def fetch_add_at(typingctx, addr, val):
    """Add ``val`` to the int64 at (aligned) address ``addr`` atomically; returns the value
    before (``atomicrmw add``, monotonic: a counter that threads claim work from, no more)."""
    sig = types.int64(types.int64, types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.atomic_rmw("add", ptr, args[1], "monotonic")

    return sig, codegen


@njit(inline="always")
def claim(cursor, mine):
    """The next work item of a threaded kernel (``gpuframe.backends.cpu._target.run_threads``):
    the next one of the block of consecutive items this thread holds (``mine``, two int64:
    [next, end)), else the first of a block of ``cursor[1]`` items (at least one) claimed from
    ``cursor[0]``, which every thread running the kernel shares."""
    if mine[0] < mine[1]:
        it = mine[0]
    else:
        block = max(cursor[1], np.int64(1))
        it = fetch_add_at(address(cursor), block)
        mine[1] = it + block
    mine[0] = it + 1
    return it


# Rows of one work item of a threaded per-row kernel (``gpuframe.backends.cpu._target.run_rows``,
# which may ask for another number: the kernel reads it from ``cursor[1]``).
ROW_BLOCK = 1 << 14


@njit(inline="always")
def claim_one(cursor):
    """The next work item of a threaded kernel (``gpuframe.backends.cpu._target.run_threads``),
    one at a time from ``cursor[0]`` (its block size ignored): for kernels whose items are large
    (a chunk of rows per thread, a block of rows), and that allocate nothing (no ``mine`` array
    as :func:`claim`'s), so that they can be compiled without reference counting
    (``_nrt=False``): with it, a per-row function inlined into the loop increfs and decrefs its
    array arguments at every row (the sort's word kernel ran 10x slower, 24 -> 235 ms)."""
    return fetch_add_at(address(cursor), np.int64(1))


@njit(inline="always")
def row_block(cursor, n):
    """The rows ``lo, hi`` (uint64) of the next block of ``cursor[1]`` rows of a threaded per-row
    kernel's ``n`` rows that this thread claims (:func:`claim_one`); ``lo >= n``: none left.
    Unsigned, so that the loop's index is: numba then indexes arrays without its negative-index
    wraparound code (a group reduction's loop ran 2.2x faster, 208 -> 96 ms for 10M rows;
    numba's ``prange`` loops have unsigned indices too). The kernel's loop::

        lo, hi = row_block(cursor, n)
        while lo < n:
            for i in range(lo, hi): ...
            lo, hi = row_block(cursor, n)
    """
    block = max(cursor[1], np.int64(1))
    lo = claim_one(cursor) * block
    return np.uint64(lo), np.uint64(max(0, min(n, lo + block)))


@intrinsic
def store_fence(typingctx):
    """Order the non-temporal stores before anything after (``fence seq_cst``)."""
    sig = types.void()

    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen


def entry_tag(argtypes: tuple) -> int:
    """A tag of a tuple of numba types, the same in every process (CRC-32 of their names): what
    :func:`call_entry` checks an entry against."""
    return zlib.crc32("|".join(str(t) for t in argtypes).encode())


_NATIVE: dict = {}


def native_entry(disp, argtypes: tuple) -> tuple[int, int]:
    """``(address, tag)`` for :func:`call_entry`: the native function of ``njit`` dispatcher
    ``disp`` compiled (or loaded from numba's cache) for the numba types ``argtypes``, returning
    int64 (a result of another type is cast), and their :func:`entry_tag`. The dispatcher keeps
    the code alive."""
    key = (disp, argtypes)
    hit = _NATIVE.get(key)
    if hit is None:
        disp.compile(types.int64(*argtypes))
        cres = disp.overloads[argtypes]
        addr = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
        if not addr:
            raise RuntimeError(f"native_entry: no native code for {disp.py_func.__name__}{argtypes}")
        hit = _NATIVE[key] = (int(addr), entry_tag(argtypes))
    return hit


_NATIVE_FOR: dict = {}


_ENTRY_T = types.UniTuple(types.int64, 2)
_CURSOR_T = types.Array(types.int64, 1, "C")


def kernel_types(values: tuple) -> tuple:
    """The numba types a threaded kernel (``gpuframe.backends.cpu._target.run_threads``) is
    compiled for when called with ``values``: theirs, and its ``cursor``'s."""
    return tuple(typeof(v, Purpose.argument) for v in values) + (_CURSOR_T,)


_AHEAD_SEEN: set = set()


def compile_kernels_beside(jobs) -> object:
    """:func:`~gpuframe.kernels.jit_cache.compile_beside` for threaded kernels that will be
    called with the Python values of ``jobs`` (``(kernel, values)`` pairs: a kernel is called as
    ``kernel(*values, cursor)``), those whose types this process has not asked for before (a
    fingerprint each, microseconds: the types themselves take tens of them an array)."""
    todo = []
    for kernel, values in jobs:
        key = (kernel, compute_fingerprint(values))
        if key not in _AHEAD_SEEN:
            _AHEAD_SEEN.add(key)
            todo.append((kernel, kernel_types(values)))
    return compile_beside(todo)


def native_entry_for(disp, values: tuple, tail: tuple = (), kernel=None) -> tuple[int, int]:
    """:func:`native_entry` of ``disp`` for arguments ``values`` (Python values, typed as numba
    types a dispatcher's arguments: a kernel that forwards them passes them with those types)
    followed by arguments of the numba types ``tail`` (what the kernel makes itself: an item
    number, scratch). Looked up by numba's own type fingerprint of ``values`` (microseconds;
    ``numba.typeof`` takes tens of them an array).

    ``kernel``: the threaded kernel that will call the entry, as ``kernel(entry, *values,
    cursor)``; the first time, when neither is compiled or in numba's cache, it compiles in a
    child process while ``disp`` compiles here (:func:`~gpuframe.kernels.jit_cache.compile_beside`)."""
    key = (disp, compute_fingerprint(values), tail)
    hit = _NATIVE_FOR.get(key)
    if hit is None:
        argtypes = tuple(typeof(v, Purpose.argument) for v in values)
        beside = compile_beside([(kernel, (_ENTRY_T,) + argtypes + (_CURSOR_T,))] if kernel is not None else [])
        try:
            hit = _NATIVE_FOR[key] = native_entry(disp, argtypes + tuple(tail))
        finally:
            beside.wait()
    return hit


@intrinsic
def call_entry(typingctx, entry, args):
    """``f(*args)`` for the numba-compiled function ``f`` at address ``entry[0]`` (the native
    function of an ``njit`` dispatcher's overload, numba's calling convention), which returns
    an int64; ``entry[1]`` is the :func:`entry_tag` of the argument types ``f`` was compiled
    for, and must be that of ``args`` (else ``TypeError``: a call with other types would read
    its arguments wrongly).

    The caller then holds no copy of ``f``: numba links every function an ``njit`` function
    calls into its module, optimises it there again and generates its machine code again,
    which for the join's threaded kernels and their large item functions cost as much compile
    time as the item function itself. The call goes through a pointer, so it is never inlined:
    for functions that each run a whole work item, not per row. An error status of ``f`` is
    propagated."""
    if not (isinstance(entry, types.UniTuple) and entry.count == 2 and isinstance(entry.dtype, types.Integer)):
        return None
    if not isinstance(args, types.BaseTuple):
        return None
    argtys = tuple(args)
    tag = entry_tag(argtys)
    sig = types.int64(entry, args)

    def codegen(context, builder, signature, llargs):
        ent, tup = llargs
        addr = builder.sext(builder.extract_value(ent, 0), ir.IntType(64)) \
            if entry.dtype.bitwidth < 64 else builder.extract_value(ent, 0)
        got = builder.extract_value(ent, 1)
        want = ir.Constant(got.type, tag)
        with builder.if_then(builder.icmp_unsigned("!=", got, want), likely=False):
            context.call_conv.return_user_exc(
                builder, TypeError, ("call_entry: the entry was compiled for other argument types",))
        fnty = context.call_conv.get_function_type(types.int64, argtys)
        fn = builder.inttoptr(addr, fnty.as_pointer())
        values = cgutils.unpack_tuple(builder, tup, len(argtys))
        status, res = context.call_conv.call_function(builder, fn, types.int64, argtys, values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return res

    return sig, codegen
