"""Heavy-hitter keys in gpuframe.distributed.merge (gpuframe._skew): the answer is the local
merge's on the ranks' inputs concatenated, whichever side stays, for every join type, with null
and NaN keys, keys of different types on the two sides and several key columns; the heavy rows
stay where they are, so no rank holds a hot key's output alone; malformed samples from a peer
and bad ``heavy_share`` values are refused.

The thread meshes run 2 ranks over UCX and 3 over TCP; ``MIN_HEAVY_ROWS`` is lowered for them
(the data are a few thousand rows) and each test asserts that heavy keys were found, so that it
cannot pass by shuffling everything."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401
import pytest

import gpuframe
import gpuframe._skew as skew
import gpuframe.distributed as gd
from gpuframe.comm import ProtocolError, local_mesh

from .helpers import concat, mesh_fixture, plain, run_ranks

pytestmark = pytest.mark.distributed

HOWS = ["inner", "left", "right", "outer", "semi", "anti"]


# both transports and both sizes, in two meshes (the heavy-key logic above the transport is the same)
MESHES = [("ucx", 2), ("tcp", 3)]


mesh = mesh_fixture(MESHES)


@pytest.fixture
def small_heavy(monkeypatch):
    """Heavy keys from 20 rows on, handled apart however they would land."""
    monkeypatch.setattr(skew, "MIN_HEAVY_ROWS", 20)
    monkeypatch.setattr(skew, "TOLERANCE", 0.0)


def side(n: int, seed: int, hot: dict, *, card: int = 60, nulls: float = 0.05, key_type=pa.int64()) -> pa.Table:
    """``n`` rows: key ``k`` (``hot`` maps a key value, or None for null, to its share of the
    rows; the rest spread over ``card`` values, some null) and a payload ``v``."""
    rng = np.random.default_rng(seed)
    keys: list = rng.integers(0, card, n).tolist()
    u = rng.random(n)
    lo = 0.0
    for value, share in hot.items():
        for i in np.flatnonzero((u >= lo) & (u < lo + share)):
            keys[i] = value
        lo += share
    for i in np.flatnonzero(rng.random(n) < nulls):
        keys[i] = None
    if pa.types.is_floating(key_type):
        keys = [None if x is None else float(x) for x in keys]
        for i in np.flatnonzero(rng.random(n) < 0.02):
            keys[i] = math.nan
    return pa.table({"k": pa.array(keys, key_type), "v": pa.array(rng.integers(0, 1000, n), pa.int64())})


SHAPES = {
    # the left side holds a hot key (its rows stay, the right side's go everywhere)
    "left_hot": (lambda r: side(500 + 60 * r, r, {7: 0.4}), lambda r: side(300 + 40 * r, 50 + r, {})),
    # the right side holds it
    "right_hot": (lambda r: side(300 + 40 * r, r, {}), lambda r: side(500 + 60 * r, 50 + r, {9: 0.45})),
    # both at once, on different keys, and one key hot on both sides
    "both": (lambda r: side(600, r, {7: 0.3, 3: 0.2}), lambda r: side(500 + 50 * r, 50 + r, {9: 0.3, 3: 0.1})),
    # null keys are a third of each side
    "null_hot": (lambda r: side(500, r, {None: 0.35}), lambda r: side(400 + 30 * r, 50 + r, {None: 0.3})),
}


def local_answer(left: list[pa.Table], right: list[pa.Table], **kw) -> pa.Table:
    return gpuframe.merge(gpuframe.from_arrow(concat(left)), gpuframe.from_arrow(concat(right)), **kw).to_arrow()


def _canon(v):
    if v is None:
        return (2, 0)
    if isinstance(v, float) and math.isnan(v):
        return (1, 0)
    return (0, v)


def rows(table: pa.Table) -> list[tuple]:
    cols = [plain(table.column(i)).to_pylist() for i in range(table.num_columns)]
    return sorted(tuple(_canon(v) for v in r) for r in zip(*cols)) if cols else []


def run_merge(comms, left, right, **kw):
    size = len(comms)
    stats = [{} for _ in range(size)]
    out = run_ranks(lambda r: gd.merge(gpuframe.from_arrow(left[r]), gpuframe.from_arrow(right[r]),
                                       comm=comms[r], stats=stats[r], **kw), size)
    return [t.to_arrow() for t in out], stats


def assert_same(got: list[pa.Table], expect: pa.Table) -> None:
    whole = pa.concat_tables(got)
    assert whole.schema.names == expect.schema.names
    assert [f.type for f in whole.schema] == [f.type for f in expect.schema]
    assert whole.num_rows == expect.num_rows
    assert rows(whole) == rows(expect)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("how", HOWS)
def test_heavy_keys_match_local(mesh, small_heavy, shape, how):
    size = len(mesh)
    make_left, make_right = SHAPES[shape]
    left = [make_left(r) for r in range(size)]
    right = [make_right(r) for r in range(size)]
    for nulls_equal in (False, True):
        got, stats = run_merge(mesh, left, right, on="k", how=how, nulls_equal=nulls_equal)
        assert_same(got, local_answer(left, right, on="k", how=how, nulls_equal=nulls_equal))
        if how in ("semi", "anti") and shape == "right_hot":
            # their output is left rows: only the left side's heavy keys are handled apart
            assert all("heavy_keys" not in s for s in stats), stats
            continue
        assert all(s.get("heavy_keys", 0) >= 1 for s in stats), stats
        assert len({s["heavy_keys"] for s in stats}) == 1   # every rank took the same decision


@pytest.mark.parametrize("how", ["inner", "right", "outer"])
def test_both_sides_stay_in_one_merge(mesh, small_heavy, how):
    """A key hot on the left and another hot on the right: rows stay on both sides at once."""
    size = len(mesh)
    make_left, make_right = SHAPES["both"]
    left = [make_left(r) for r in range(size)]
    right = [make_right(r) for r in range(size)]
    lh, rh = [], []
    orig = skew.plan

    def spy(*a, **k):
        p = orig(*a, **k)
        lh.append(len(p.left_stay))
        rh.append(len(p.right_stay))
        return p

    skew_plan = pytest.MonkeyPatch()
    skew_plan.setattr(skew, "plan", spy)
    try:
        got, _ = run_merge(mesh, left, right, on="k", how=how)
    finally:
        skew_plan.undo()
    assert min(lh) >= 1 and min(rh) >= 1, (lh, rh)
    assert_same(got, local_answer(left, right, on="k", how=how))


@pytest.mark.parametrize("how", ["inner", "left", "right"])
def test_heavy_keys_of_different_types_and_several_columns(mesh, small_heavy, how):
    """An int32 key joined with a float64 key (hashed as float64 on both sides), and a two-column
    key with a string: equal keys of both sides are classified alike."""
    size = len(mesh)
    left = [side(500, r, {7: 0.4}, key_type=pa.int32()) for r in range(size)]
    right = [side(400, 50 + r, {7: 0.1}, key_type=pa.float64()) for r in range(size)]
    got, stats = run_merge(mesh, left, right, on="k", how=how)
    assert_same(got, local_answer(left, right, on="k", how=how))
    assert all(s.get("heavy_keys", 0) >= 1 for s in stats)

    def two(t: pa.Table, seed: int) -> pa.Table:
        rng = np.random.default_rng(seed)
        s = np.where(rng.random(t.num_rows) < 0.9, "héavy", [f"s{i}" for i in rng.integers(0, 3, t.num_rows)])
        return t.append_column("s", pa.array(s.tolist(), pa.string()))

    left2 = [two(side(500, r, {7: 0.5}), r) for r in range(size)]
    right2 = [two(side(300, 50 + r, {7: 0.2}), 9 + r).rename_columns(["k", "w", "s"]) for r in range(size)]
    got, stats = run_merge(mesh, left2, right2, on=["k", "s"], how=how)
    assert_same(got, local_answer(left2, right2, on=["k", "s"], how=how))
    assert all(s.get("heavy_keys", 0) >= 1 for s in stats)


def test_hot_key_output_is_spread(mesh):
    """A key with 60% of the left rows (unique right keys): with heavy keys handled no rank holds
    more than 1.5x its fair share of the output; shuffled as before, the key's rank holds it all.
    Default thresholds (the hot key has well over MIN_HEAVY_ROWS rows)."""
    size = len(mesh)
    n = 12_000
    left = []
    for r in range(size):
        rng = np.random.default_rng(r)
        k = rng.integers(0, 4_000, n)
        k[rng.random(n) < 0.6] = 123
        left.append(pa.table({"k": k, "v": rng.integers(0, 9, n)}))
    right = [pa.table({"k": np.arange(r, 4_000, size), "w": np.arange(r, 4_000, size) * 2}) for r in range(size)]
    expect = local_answer(left, right, on="k")
    fair = expect.num_rows / size
    got, stats = run_merge(mesh, left, right, on="k")
    assert_same(got, expect)
    assert max(t.num_rows for t in got) <= 1.5 * fair, [t.num_rows for t in got]
    assert all(s["heavy_keys"] == 1 for s in stats)
    assert sum(s["heavy_rows_sent"] for s in stats) == size   # key 123's one right row, to every rank
    assert sum(s["heavy_rows_kept"] for s in stats) == sum(int(pa.compute.sum(pa.compute.equal(t["k"], 123)).as_py())
                                                          for t in left)
    plain_got, plain_stats = run_merge(mesh, left, right, on="k", heavy_share=None)
    assert "heavy_keys" not in plain_stats[0]
    assert max(t.num_rows for t in plain_got) > 1.5 * fair   # what the heavy-key path prevents


@pytest.mark.parametrize("how,right_hot", [("inner", False), ("left", False), ("semi", False), ("anti", False),
                                           ("right", True), ("right", False), ("outer", False), ("left", True)])
def test_unevenly_placed_hot_rows_are_dealt_to_every_rank(mesh, how, right_hot):
    """Rank 0 holds most of the rows, and so of a 60% key's: its staying rows would keep the
    output there; they are dealt evenly to every rank instead, in the shuffle's exchange (and,
    for the join types joined apart, taken out of what each rank received by their hash)."""
    size = len(mesh)
    left, right = [], []
    for r in range(size):
        rng = np.random.default_rng(40 + r)
        n = 12_000 if r == 0 else 1_500
        k = rng.integers(0, 4_000, n)
        k[rng.random(n) < 0.6] = 123
        left.append(pa.table({"k": k, "v": rng.integers(0, 9, n)}))
        right.append(pa.table({"k": np.arange(r, 4_000, size), "w": np.arange(r, 4_000, size) * 2}))
    if right_hot:          # the hot key on the right side, whose rows then stay
        left, right = ([t.rename_columns(["k", "w"]) for t in right], [t.rename_columns(["k", "v"]) for t in left])
    expect = local_answer(left, right, on="k", how=how)
    got, stats = run_merge(mesh, left, right, on="k", how=how)
    assert_same(got, expect)
    assert all(s["heavy_keys"] == 1 and s["heavy_spread"] for s in stats), stats
    if how != "anti":
        assert max(t.num_rows for t in got) <= 1.5 * expect.num_rows / size, [t.num_rows for t in got]


def test_no_heavy_keys_below_the_row_floor(mesh):
    """A key with every row of a small table is not heavy: fewer than MIN_HEAVY_ROWS rows."""
    size = len(mesh)
    left = [side(200, r, {5: 0.9}) for r in range(size)]
    right = [side(200, 50 + r, {}) for r in range(size)]
    got, stats = run_merge(mesh, left, right, on="k")
    assert_same(got, local_answer(left, right, on="k"))
    assert all("heavy_keys" not in s for s in stats)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "0.1", [0.1]])
def test_bad_heavy_share_raises_before_exchanging(bad):
    comms = local_mesh(2, "tcp", timeout=30)
    try:
        t = gpuframe.from_arrow(pa.table({"k": [1, 2], "v": [3, 4]}))
        with pytest.raises(ValueError, match="heavy_share must be a positive number"):
            gd.merge(t, t, on="k", comm=comms[0], heavy_share=bad)
        assert not comms[0].closed   # nothing was sent: the communicator is still usable
    finally:
        for c in comms:
            c.close()


def _header(**change):
    h = {"n": [10, 0], "s": [10, 0], "h": [np.array([5, 9], "<u8").tobytes(), b""],
         "c": [np.array([3, 4], "<i8").tobytes(), b""]}
    h.update(change)
    return h


@pytest.mark.parametrize("header,what", [
    ([1, 2], "expected a map"),
    ({"n": [1, 2]}, "expected a map"),
    (_header(n=[10]), "list of two values"),
    (_header(n=[-1, 0]), "row counts must be ints"),
    (_header(s=[0, 0]), "row counts must be ints"),
    (_header(n=[10, True]), "row counts must be ints"),
    (_header(h=[b"\0" * 12, b""]), "hashes and counts must be bytes"),
    (_header(h=["ab", b""]), "hashes and counts must be bytes"),
    (_header(h=[b"\0" * 8 * (skew.CANDIDATES + 1), b""], c=[b"\1" * 8 * (skew.CANDIDATES + 1), b""]),
     "hashes and counts must be bytes"),
    (_header(c=[np.array([3, 11], "<i8").tobytes(), b""]), r"sample counts must be in \[1, 10\]"),
    (_header(c=[np.array([0, 1], "<i8").tobytes(), b""]), r"sample counts must be in \[1, 10\]"),
])
def test_malformed_sample_is_a_protocol_error(header, what):
    with pytest.raises(ProtocolError, match=what) as info:
        skew._decode(header, 1)
    assert info.value.peer == 1
    assert len(skew._decode(_header(), 0)) == 2   # the well-formed one is accepted


def test_imbalance_predicts_where_shuffled_hot_keys_land():
    """Two hot keys of 30% each: on one rank of two, that rank holds 0.6 + 0.4 / 2 = 80% of the
    rows (1.6x); on different ranks 50% each (1.0x); the split is skipped in the second case."""
    def bucket_hash(b: int, buckets: int) -> int:   # a hash whose high 32 bits put it in bucket b
        return ((2 * b + 1) * 2**32 // (2 * buckets)) << 32

    same = np.array([bucket_hash(0, 2), bucket_hash(0, 2) + 1], np.uint64)
    apart = np.array([bucket_hash(0, 2), bucket_hash(1, 2)], np.uint64)
    est = np.array([300.0, 300.0])
    assert skew._imbalance(1000, same, est, 2, 2) == pytest.approx(1.6)
    assert skew._imbalance(1000, apart, est, 2, 2) == pytest.approx(1.0)
    # four buckets on two ranks: buckets 0 and 1 are rank 0's
    assert skew._imbalance(1000, np.array([bucket_hash(0, 4), bucket_hash(1, 4)], np.uint64), est, 2, 4) \
        == pytest.approx(1.6)
    assert skew._imbalance(0, same, est, 2, 2) == 1.0


def test_plan_scales_each_ranks_sample_to_its_rows():
    """Rank 0 sampled 100 of its 1,000,000 rows and saw hash 5 in 40; rank 1 holds 100 rows, 90
    of them hash 9: hash 5 is estimated at 400,000 rows, hash 9 at 90 (not heavy)."""
    samples = [(1_000_000, 100, np.array([5, 9], np.uint64), np.array([40, 1])),
               (100, 100, np.array([9], np.uint64), np.array([90]))]
    total, hashes, est = skew._estimates(samples)
    assert total == 1_000_100
    assert hashes.tolist() == [5, 9]
    assert est.tolist() == pytest.approx([400_000, 10_000 + 90])


@pytest.mark.parametrize("how", ["inner", "outer", "anti"])
def test_devices_without_the_one_scatter_split_filter(mesh, small_heavy, monkeypatch, how):
    """A backend without ``hash_partition_heavy`` (CUDA) filters the heavy rows out first and
    routes the light ones: the same answer (shown on the CPU with the capability hidden)."""
    import gpuframe.backends.registry as registry

    real = registry.capability
    asked = []

    def no_heavy_split(op, device):
        asked.append(op)
        return None if op == "hash_partition_heavy" else real(op, device)

    monkeypatch.setattr(registry, "capability", no_heavy_split)
    size = len(mesh)
    make_left, make_right = SHAPES["both"]
    left = [make_left(r) for r in range(size)]
    right = [make_right(r) for r in range(size)]
    got, stats = run_merge(mesh, left, right, on="k", how=how)
    assert_same(got, local_answer(left, right, on="k", how=how))
    assert "hash_partition_heavy" in asked and all(s.get("heavy_keys", 0) >= 1 for s in stats)
