"""The per-row functions that assemble a received device table (:mod:`gpuframe.kernels.assemble`:
``piece_at``, ``bitmap_byte``, ``rebased_offset``, ``shift_index_row``, ``differs_from_first``)
are one source for both targets: each compiles with ``njit`` (and as its inlined CPU copy) and for
CUDA (``compile_ptx``, sm_90, no GPU needed). Run as plain Python (what the CUDA simulator runs)
and as the compiled CPU copy, over random pieces (every first bit, empty pieces, pieces without
a bitmap), they give what the exchange's host path gives (``comm.exchange._concat_bitmaps``,
``_concat_offsets``, the dictionary index shift)."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit, types

from gpuframe.comm import device_assembly
from gpuframe.comm.exchange import _concat_bitmaps, _concat_offsets
from gpuframe.kernels import assemble
from gpuframe.kernels.per_row import cpu


def _arr(dt, nd=1):
    return types.Array(dt, nd, "C")


i64, u8, i32, b1 = types.int64, types.uint8, types.int32, types.boolean
D = _arr(i64, 2)

SIGS = {
    "piece_at": (D, i64),
    "bitmap_byte": (D, _arr(u8), i64, i64),
    "rebased_offset": (D, _arr(i32), i64, i64, i64),
    "shift_index_row": (D, _arr(types.int8), _arr(i32), _arr(u8), b1, i64),
    "differs_from_first": (D, _arr(i64), i64, i64),
}


def _wrapper(fn, nargs):
    params = ", ".join(f"a{i}" for i in range(nargs))
    ns = {"fn": fn}
    exec(f"def wrapper({params}):\n    return fn({params})\n", ns)
    return njit(ns["wrapper"])


@pytest.mark.parametrize("name", list(SIGS))
def test_compiles_for_the_cpu(name):
    sig = SIGS[name]
    for fn in (getattr(assemble, name), cpu(getattr(assemble, name))):
        w = _wrapper(fn, len(sig))
        w.compile(sig)
        assert w.signatures


@pytest.fixture(scope="module")
def compile_cuda():
    from numba import cuda
    import numba.cuda.dispatcher as dispatcher

    from gpuframe.kernels.compat import numba_cuda_compat

    numba_cuda_compat()
    real = dispatcher.get_current_device
    sm90 = type("FakeSM90", (), {"compute_capability": (9, 0)})()
    dispatcher.get_current_device = lambda: sm90  # compile without a driver (no GPU here)
    try:
        yield lambda fn, sig: cuda.compile_ptx(fn, sig, device=True, cc=(9, 0))[0]
    finally:
        dispatcher.get_current_device = real


@pytest.mark.parametrize("name", list(SIGS))
def test_compiles_for_cuda(name, compile_cuda):
    assert ".func" in compile_cuda(getattr(assemble, name), SIGS[name])


def _targets(name):
    """The plain-Python function (the simulator's) and its compiled CPU copy."""
    fn = getattr(assemble, name)
    return [fn, _wrapper(cpu(fn), len(SIGS[name]))]


def _pieces(rng, npieces):
    """Random piece lengths (some empty) and their first rows."""
    ns = [int(rng.integers(0, 30)) if rng.random() > 0.2 else 0 for _ in range(npieces)]
    rows = np.concatenate([[0], np.cumsum(ns)[:-1]]).astype(np.int64) if ns else np.zeros(0, np.int64)
    return ns, rows, int(sum(ns))


@pytest.mark.parametrize("seed", range(6))
def test_bitmaps_equal_the_host_concatenation(seed):
    rng = np.random.default_rng(seed)
    ns, rows, total = _pieces(rng, int(rng.integers(1, 6)))
    if total == 0:
        ns[0], total = 9, 9 + total
        rows = np.concatenate([[0], np.cumsum(ns)[:-1]]).astype(np.int64)
    host_parts, scratch, src, bits = [], [], [], []
    start = 0
    for n, row in zip(ns, rows):
        bit = int(rng.integers(0, 8))
        if rng.random() < 0.3:              # no bitmap: every row set
            host_parts.append((None, None, n, int(row)))
            src.append(-1)
            bits.append(0)
            continue
        frame = rng.integers(0, 256, (bit + n + 7) // 8).astype(np.uint8)
        host_parts.append((frame, bit, n, int(row)))
        scratch.append(frame)
        src.append(start)
        bits.append(bit)
        start += len(frame)
    want = _concat_bitmaps(host_parts, total)
    desc = device_assembly.descriptors(rows, total, src=src, bit=bits)
    scratch = np.concatenate(scratch) if scratch else np.zeros(1, np.uint8)
    for f in _targets("bitmap_byte"):
        got = np.array([f(desc, scratch, np.int64(total), np.int64(j)) for j in range(len(want))], np.uint8)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("odt", [np.int32, np.int64])
@pytest.mark.parametrize("seed", range(4))
def test_offsets_equal_the_host_rebasing(seed, odt):
    rng = np.random.default_rng(100 + seed)
    ns, rows, total = _pieces(rng, int(rng.integers(1, 5)))
    host_parts, scratch, src, bases, chars = [], [], [], [], []
    start = char = 0
    for n in ns:
        base = int(rng.integers(0, 1000))
        offs = (base + np.concatenate([[0], np.cumsum(rng.integers(0, 6, n))])).astype(odt)
        host_parts.append((offs, base, char, n))
        scratch.append(offs)
        src.append(start)
        bases.append(base)
        chars.append(char)
        start += n + 1
        char += int(offs[-1]) - base
    want = _concat_offsets(host_parts, total, np.dtype(odt), char)
    desc = device_assembly.descriptors(rows, total, src=src, bit=bases, add=chars)
    scratch = np.concatenate(scratch)
    for f in [assemble.rebased_offset, _wrapper(cpu(assemble.rebased_offset), 5)]:
        got = np.array([f(desc, scratch, np.int64(total), np.int64(char), np.int64(r)) for r in range(total + 1)], odt)
        np.testing.assert_array_equal(got, want)


def test_index_shift_and_check():
    sizes = [3, 0, 4, 2]                    # each piece's dictionary
    ns = [5, 0, 6, 4]
    rows = np.array([0, 5, 5, 11], np.int64)
    starts = np.array([0, 3, 3, 7], np.int64)
    rng = np.random.default_rng(3)
    src = np.concatenate([rng.integers(0, max(s, 1), n) for s, n in zip(sizes, ns)]).astype(np.int8)
    valid = np.packbits(rng.random(15) > 0.3, bitorder="little")
    desc = device_assembly.descriptors(rows, 15, add=starts, lim=sizes)
    want = src.astype(np.int32) + np.repeat(starts, ns).astype(np.int32)
    for f in _targets("shift_index_row"):
        out = np.zeros(15, np.int32)
        bad = [f(desc, src, out, valid, True, np.int64(r)) for r in range(15)]
        np.testing.assert_array_equal(out, want)
        assert not any(bad)
    # row 12 (piece 3, 2 entries) holds 5: refused when valid, ignored when null
    src[12] = 5
    for has_valid, row_valid in ((False, 1), (True, 1), (True, 0)):
        v = valid.copy()
        v[1] = (int(v[1]) & 0xEF) | (row_valid << 4)
        for f in _targets("shift_index_row"):
            out = np.zeros(15, np.int32)
            bad = [int(f(desc, src, out, v, has_valid, np.int64(r))) for r in range(15)]
            assert bad[12] == (4 if (row_valid or not has_valid) else 0) and sum(bad) == bad[12]


def test_piece_at_skips_empty_pieces():
    desc = device_assembly.descriptors([0, 0, 3, 3, 3, 7], 9)
    for f in _targets("piece_at"):
        assert [int(f(desc, np.int64(r))) for r in range(9)] == [1, 1, 1, 4, 4, 4, 4, 5, 5]


def test_differs_from_first():
    arr = np.array([10, 11, 13, 20, 21, 23, 5, 6, 9], np.int64)   # three pieces of 3, bases 10, 20, 5
    same = device_assembly.descriptors([0, 0, 0], 0, src=[0, 3, 6], bit=[10, 20, 5])
    for f in _targets("differs_from_first"):
        flags = [bool(f(same, arr, np.int64(3), np.int64(t))) for t in range(6)]
        assert flags == [False, False, False, False, False, True]   # piece 2's last: 9 - 5 != 13 - 10


def test_descriptors_check_their_fields():
    with pytest.raises(ValueError, match="expected 2 values per field"):
        device_assembly.descriptors([0, 4], 9, src=[1])
