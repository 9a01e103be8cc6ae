"""One kernel source: every per-row function is defined once, in the module of its family, and
compiles for both targets: ``njit`` for the CPU (called by name, and as the inlined copy the CPU
drivers run, ``per_row.cpu``) and NVVM for CUDA (``cuda.compile_ptx``, no GPU needed: numba-cuda
is told the current device is sm_90).

Where a target brings its own implementation of a name (the byte loads of
:mod:`gpuframe.kernels.loads`, the slot writes of :mod:`gpuframe.kernels.hashtable`), the
CPU's result is checked against the plain-Python one, which is what the CUDA simulator runs
(tests/cudasim runs the CUDA kernels on it, with the CPU result as the oracle).
"""
from __future__ import annotations

import ast
import warnings
from pathlib import Path

import numpy as np
import pytest
from numba import njit, types

from gpuframe.kernels import gather, group, hashing, hashtable, join, join_cpu, keys, loads, slot_table
from gpuframe.kernels.per_row import cpu

from .common.hashref import bytes_hash

KERNELS_DIR = Path(hashing.__file__).resolve().parent


def _arr(dt, nd=1):
    return types.Array(dt, nd, "C")


u64, i64, u8, b1 = types.uint64, types.int64, types.uint8, types.boolean
W2, S2, CH = _arr(u64, 2), _arr(i64, 2), _arr(u8)  # general keys: words, spans, bytes
VERIFY = (b1, _arr(i64), W2, S2, S2, CH)          # verify, borig, vb_w, vb_st, vb_en, vb_ch
PROBE = (W2, S2, S2, CH)                          # vp_w, vp_st, vp_en, vp_ch

# family module -> per-row function -> one argument signature to compile it with
PER_ROW = {
    hashing: {
        "fmix64": (u64,), "hash_u64": (u64, u64), "hash_combine": (u64, u64), "null_hash": (u64,),
        "partition_of": (u64, u64), "canonical_f64_bits": (u64,), "f32_bits_to_f64_bits": (u64,),
        "hash_fixed": (u64, i64, u64), "bit_is_set": (CH, i64), "hash_bytes": (CH, i64, i64, u64),
        "store_hash": (_arr(u64), i64, u64, b1),
        "fixed_row": (_arr(types.int32), i64, CH, b1, i64, u64, b1, _arr(u64), i64),
        "bool_row": (CH, i64, CH, b1, i64, u64, b1, _arr(u64), i64),
        "string_row": (_arr(types.int32), CH, CH, b1, i64, u64, b1, _arr(u64), i64),
        "dictionary_row": (_arr(types.int32), _arr(u64), CH, b1, i64, u64, b1, _arr(u64), i64),
    },
    loads: {"load_word": (CH, i64), "load_tail": (CH, i64, i64)},
    keys: {
        "canon_word": (u64, i64), "word_hash": (u64,), "orig_row": (_arr(i64), i64),
        "spans_equal": (CH, i64, i64, CH, i64, i64), "rows_equal": (W2, S2, S2, CH, i64, W2, S2, S2, CH, i64),
        "row_hash": (W2, S2, S2, CH, i64), "key_bytes_hash": (CH, i64, i64), "key_bytes_step": (u64, u64),
        "key_word_row": (_arr(u64), i64, CH, b1, _arr(u64), _arr(u64), b1, CH, b1, i64),
        "string_span_row": (_arr(types.int32), CH, b1, _arr(i64), _arr(i64), _arr(u64), b1, CH, b1, i64),
    },
    hashtable: {
        "claim_slot": (_arr(i64), i64, i64), "push_slot": (_arr(i64), i64, i64),
        "slot_of": (u64, u64, u64), "table_bits": (i64,),
        "same_key": (_arr(u64), i64, u64, i64) + VERIFY + PROBE + (i64,),
        "ht_insert": (_arr(i64), i64, u64, u64, _arr(i64), _arr(u64), i64, i64, i64) + VERIFY,
        "ht_walk": (_arr(i64), i64, u64, i64, i64, _arr(u64), i64, u64, i64) + VERIFY + PROBE + (i64,),
        "ht_find": (_arr(i64), i64, u64, u64, _arr(u64), i64, u64, u64, i64) + VERIFY + PROBE + (i64,),
    },
    slot_table: {
        "claim_pair": (_arr(u64), i64, i64), "add_count": (_arr(i64), i64, i64),
        "slot_insert": (_arr(u64), u64, _arr(u64), i64, i64, b1, W2, S2, S2, CH),
        "slot_find": (_arr(u64), u64, u64, b1, W2, S2, S2, CH) + PROBE + (i64,),
        "segment_of": (_arr(i64), i64, i64),
    },
    group: {"value_less": (types.float64, types.float64), "span_cmp": (_arr(types.int32), CH, i64, i64)},
    gather: {"gathered_bit": (CH, i64, b1, _arr(i64), i64), "gathered_byte": (CH, i64, b1, _arr(i64), i64, i64)},
}
CASES = [(mod, name, sig) for mod, fns in PER_ROW.items() for name, sig in fns.items()]
IDS = [f"{mod.__name__.rsplit('.', 1)[-1]}.{name}" for mod, name, _ in CASES]


def _cpu_wrapper(fn, nargs):
    """An ``njit`` function calling ``fn`` (a per-row function is not a dispatcher itself)."""
    params = ", ".join(f"a{i}" for i in range(nargs))
    ns = {"fn": fn}
    exec(f"def wrapper({params}):\n    return fn({params})\n", ns)
    return njit(ns["wrapper"])


def test_each_per_row_function_is_defined_once():
    names = {name for _, name, _ in CASES} | {"bytes_hash", "bytes_hash_cpu", "rows_equal_cpu",
                                              "spans_equal_cpu", "load_le", "copy_bytes"}
    where: dict[str, list[str]] = {}
    for path in sorted(KERNELS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in names:
                where.setdefault(node.name, []).append(path.name)
    twice = {n: files for n, files in where.items() if len(files) > 1}
    assert not twice, f"defined more than once: {twice}"
    for stale in ("bytes_hash", "bytes_hash_cpu", "rows_equal_cpu", "spans_equal_cpu", "load_le"):
        assert stale not in where, f"{stale} is back: byte hashing and equality have one definition"
    # the CUDA kernels call the family modules' functions, the CPU drivers their CPU copies
    for mod, name, _ in CASES:
        if hasattr(join, name):
            assert getattr(join, name) is getattr(mod, name), f"join.{name} is not {mod.__name__}.{name}"
        if hasattr(join_cpu, name):
            assert getattr(join_cpu, name) is cpu(getattr(mod, name)), f"join_cpu.{name} is another copy"


CPU_CASES = [c for c in CASES if c[0] is not gather]  # gather's are called by name only
CPU_IDS = [i for c, i in zip(CASES, IDS) if c[0] is not gather]


@pytest.mark.parametrize("mod, name, sig", CASES, ids=IDS)
def test_compiles_for_the_cpu(mod, name, sig):
    w = _cpu_wrapper(getattr(mod, name), len(sig))
    w.compile(sig)
    assert w.signatures


@pytest.mark.parametrize("mod, name, sig", CPU_CASES, ids=CPU_IDS)
def test_cpu_copy_compiles(mod, name, sig):
    w = _cpu_wrapper(cpu(getattr(mod, name)), len(sig))
    w.compile(sig)
    assert w.signatures


@pytest.fixture(scope="module")
def compile_cuda():
    from numba import cuda
    import numba.cuda.dispatcher as dispatcher

    from gpuframe.kernels.compat import numba_cuda_compat

    numba_cuda_compat()
    hashing.cuda_kernels()  # registers the CUDA implementations of the per-target names
    join.cuda_kernels()
    hashtable.register_cuda_overloads()  # the CPU drivers' table: compiles for CUDA too (one source)
    real = dispatcher.get_current_device
    sm90 = type("FakeSM90", (), {"compute_capability": (9, 0)})()
    dispatcher.get_current_device = lambda: sm90  # compile without a driver (no GPU here)
    try:
        yield lambda fn, sig: cuda.compile_ptx(fn, sig, device=True, cc=(9, 0))[0]
    finally:
        dispatcher.get_current_device = real


@pytest.mark.parametrize("mod, name, sig", CASES, ids=IDS)
def test_compiles_for_cuda(mod, name, sig, compile_cuda):
    ptx = compile_cuda(getattr(mod, name), sig)
    assert ".func" in ptx


# --------------------------------------------------------------------------- same results
def _quiet(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # uint64 wrap-around in plain Python
        return fn(*args)


def _strings(rng):
    strs = ["", "a", "abcdefg", "abcdefgh", "abcdefghi", "ß" * 9, "x" * 23, "abcdefgh" * 3 + "z"]
    strs += ["".join(map(chr, rng.integers(97, 100, int(k)))) for k in rng.integers(0, 20, 60)]
    chars = np.frombuffer("".join(strs).encode(), np.uint8).copy()
    offs = np.concatenate([[0], np.cumsum([len(s.encode()) for s in strs])]).astype(np.int64)
    return strs, chars, offs


def test_loads_cpu_equal_python():
    rng = np.random.default_rng(1)
    chars = rng.integers(0, 256, 37, dtype=np.uint8)
    word, tail = _cpu_wrapper(cpu(loads.load_word), 2), _cpu_wrapper(cpu(loads.load_tail), 3)
    strided = np.repeat(chars, 2)[::2]  # a non-contiguous layout takes the byte loop
    for p in range(len(chars) - 8 + 1):
        want = int.from_bytes(chars[p:p + 8].tobytes(), "little")
        assert int(word(chars, p)) == int(loads.load_word(chars, p)) == want
    for p in range(len(chars)):
        for end in range(p + 1, min(p + 8, len(chars) + 1)):  # tails up to the array's last byte
            want = int.from_bytes(chars[p:end].tobytes(), "little")
            assert int(tail(chars, p, end)) == int(loads.load_tail(chars, p, end)) == want
            assert int(tail(strided, p, end)) == want


def test_hash_bytes_cpu_equal_python_and_reference():
    rng = np.random.default_rng(2)
    strs, chars, offs = _strings(rng)
    hb = _cpu_wrapper(cpu(hashing.hash_bytes), 4)
    for seed in (0, 7, int(keys.JOIN_SEED)):
        for i, s in enumerate(strs):
            want = bytes_hash(s.encode(), seed)
            assert int(hb(chars, offs[i], offs[i + 1], np.uint64(seed))) == want
            assert int(_quiet(hashing.hash_bytes, chars, offs[i], offs[i + 1], np.uint64(seed))) == want


def test_key_equality_and_row_hash_cpu_equal_python():
    rng = np.random.default_rng(3)
    strs, chars, offs = _strings(rng)
    n = len(strs)
    st, en = offs[:-1].reshape(1, n), offs[1:].reshape(1, n)
    words = rng.integers(0, 2, (1, n)).astype(np.uint64)
    eq = _cpu_wrapper(cpu(keys.rows_equal), 10)
    rh = _cpu_wrapper(cpu(keys.row_hash), 5)
    for ia in range(n):
        assert int(rh(words, st, en, chars, ia)) == int(_quiet(keys.row_hash, words, st, en, chars, ia))
        for ib in range(n):
            want = strs[ia] == strs[ib] and words[0, ia] == words[0, ib]
            args = (words, st, en, chars, ia, words, st, en, chars, ib)
            assert eq(*args) == keys.rows_equal(*args) == want


def test_spans_equal_and_key_bytes_hash_at_every_length_and_byte():
    # spans of 8 to 32 bytes compare and hash four words at fixed places (the last overlapping
    # its neighbour), longer ones word by word, shorter ones as a tail: every length around
    # those bounds, a one-byte difference at every position, the same bytes at another offset
    rng = np.random.default_rng(6)
    eq = _cpu_wrapper(cpu(keys.spans_equal), 6)
    kh = _cpu_wrapper(cpu(keys.key_bytes_hash), 3)
    rows_eq = _cpu_wrapper(cpu(keys.rows_equal), 10)
    for n in list(range(0, 42)) + [47, 48, 49, 63, 64, 65]:
        base = rng.integers(0, 256, n, dtype=np.uint8)
        variants = [base.copy()]
        for k in range(n):
            v = base.copy()
            v[k] ^= np.uint8(1 << int(rng.integers(0, 8)))
            variants.append(v)
        # the base again at an odd offset, then every variant; a one-byte pad ends the array
        chars = np.concatenate([np.zeros(3, np.uint8), base] + variants + [np.zeros(1, np.uint8)])
        starts = [3] + [3 + n * (j + 1) for j in range(len(variants))]
        st = np.array(starts, np.int64).reshape(1, -1)
        en = st + n
        w0 = np.zeros((0, st.shape[1]), np.uint64)
        hashes = [int(kh(chars, s0, s0 + n)) for s0 in starts]
        for j, s0 in enumerate(starts):
            assert hashes[j] == int(_quiet(keys.key_bytes_hash, chars, s0, s0 + n))
            want = j <= 1   # the base twice, then one-byte variants
            assert eq(chars, 3, 3 + n, chars, s0, s0 + n) == keys.spans_equal(chars, 3, 3 + n, chars, s0, s0 + n) \
                == want, (n, j)
            assert rows_eq(w0, st, en, chars, 0, w0, st, en, chars, j) == want, (n, j)
            if n:   # a span one byte shorter or longer is never equal
                assert not eq(chars, 3, 3 + n, chars, s0, s0 + n - 1)
        assert hashes[0] == hashes[1]
        assert len(set(hashes[1:])) == len(hashes) - 1, n   # one flipped bit changes the hash


def test_hash_table_cpu_equal_python():
    # the same inserts in the same order give the same table and chains on both targets (the
    # CPU's plain slot writes and the atomic ones the simulator runs), and the same finds
    rng = np.random.default_rng(4)
    n = 300
    bkeys = rng.integers(0, 120, n).astype(np.uint64)
    bits = hashtable.table_bits(n)
    tmask = np.uint64((1 << bits) - 1)
    ew, es, ec = np.zeros((0, n), np.uint64), np.zeros((0, n), np.int64), np.zeros(0, np.uint8)
    e64 = np.zeros(0, np.int64)

    insert, find, word_hash = cpu(hashtable.ht_insert), cpu(hashtable.ht_find), cpu(keys.word_hash)

    @njit
    def build_cpu(table, nxt):
        chained = 0
        for j in range(n):
            chained += insert(table, 0, tmask, np.uint64(0), nxt, bkeys, 0, j, 0, False, e64, ew, es, es, ec)
        return chained

    @njit
    def find_cpu(w):
        return find(t_cpu, 0, tmask, np.uint64(0), bkeys, 0, w, word_hash(w), 0, False,
                    e64, ew, es, es, ec, ew, es, es, ec, 0)

    t_cpu, nxt_cpu = np.full(1 << bits, -1, np.int64), np.full(n, -1, np.int64)
    t_py, nxt_py = t_cpu.copy(), nxt_cpu.copy()
    chained = build_cpu(t_cpu, nxt_cpu)
    chained_py = 0
    for j in range(n):
        chained_py += _quiet(hashtable.ht_insert, t_py, 0, tmask, np.uint64(0), nxt_py, bkeys, 0, j, 0, False,
                             e64, ew, es, es, ec)
    assert chained == chained_py == n - len(set(bkeys.tolist()))
    assert t_cpu.tolist() == t_py.tolist() and nxt_cpu.tolist() == nxt_py.tolist()
    for w in range(130):
        got = find_cpu(np.uint64(w))
        assert got == _quiet(hashtable.ht_find, t_py, 0, tmask, np.uint64(0), bkeys, 0, np.uint64(w),
                             _quiet(keys.word_hash, np.uint64(w)), 0, False, e64, ew, es, es, ec, ew, es, es, ec, 0)
        chain = []
        while got >= 0:
            chain.append(int(got))
            got = nxt_cpu[got]
        assert sorted(chain) == np.flatnonzero(bkeys == w).tolist()


def test_slot_table_cpu_equal_python():
    # the GPU's table: the same inserts in the same order give the same slots on both targets,
    # every row's representative is the first row of its key, and a find returns it; a general
    # key (verify) tells apart two keys with the same word
    rng = np.random.default_rng(5)
    n = 300
    strs, chars, offs = _strings(rng)
    pick = rng.integers(0, 40, n)
    st, en = offs[pick].reshape(1, n), offs[pick + 1].reshape(1, n)
    ew = np.zeros((0, n), np.uint64)
    bkeys = (np.array([len(strs[p]) for p in pick]) % 7).astype(np.uint64)  # colliding words
    bits = hashtable.table_bits(n)
    tmask = np.uint64((1 << bits) - 1)
    insert, find = cpu(slot_table.slot_insert), cpu(slot_table.slot_find)

    @njit
    def build_cpu(slots, brep):
        for j in range(n):
            brep[j] = insert(slots, tmask, bkeys, j, 0, True, ew, st, en, chars)

    s_cpu, r_cpu = np.zeros(2 << bits, np.uint64), np.zeros(n, np.int64)
    s_py, r_py = s_cpu.copy(), r_cpu.copy()
    build_cpu(s_cpu, r_cpu)
    for j in range(n):
        r_py[j] = _quiet(slot_table.slot_insert, s_py, tmask, bkeys, j, 0, True, ew, st, en, chars)
    assert s_cpu.tolist() == s_py.tolist() and r_cpu.tolist() == r_py.tolist()
    first = {}
    for j in range(n):
        first.setdefault((int(bkeys[j]), strs[pick[j]]), j)
    assert r_cpu.tolist() == [first[(int(bkeys[j]), strs[pick[j]])] for j in range(n)]
    assert int(np.count_nonzero(s_cpu[1::2])) == len(first)
    for j in range(n):
        args = (s_cpu, tmask, bkeys[j], True, ew, st, en, chars, ew, st, en, chars, j)
        assert find(*args) == _quiet(slot_table.slot_find, *args) == r_cpu[j]
    other = np.array([[offs[0]]]), np.array([[offs[1] + 1 if offs[1] < len(chars) else 0]])
    assert _quiet(slot_table.slot_find, s_cpu, tmask, np.uint64(99), True, ew, st, en, chars,
                  np.zeros((0, 1), np.uint64), other[0], other[1], chars, 0) == -1


def test_segment_of_finds_the_probe_row_of_every_output_row():
    counts = np.array([0, 3, 0, 0, 1, 2, 0, 5, 0], np.int64)
    offs = np.concatenate([[0], np.cumsum(counts)])
    seg = _cpu_wrapper(cpu(slot_table.segment_of), 3)
    want = np.repeat(np.arange(len(counts)), counts)
    for o in range(int(offs[-1])):
        assert seg(offs, len(counts), o) == slot_table.segment_of(offs, len(counts), o) == want[o]
