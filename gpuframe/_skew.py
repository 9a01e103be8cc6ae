"""Heavy-hitter keys in a distributed merge: found from a sample, joined where their rows are.

A hash shuffle sends every row of a key to one rank, so a key that holds a large share of a
side's rows gives that rank that share of the work and of the output. :func:`gpuframe.distributed.merge_pieces`
(hence ``gpuframe.distributed.merge`` and ``gpuframe.dask.merge``) handles such keys apart:

1. **Sample.** Each rank hashes a sample of each side's keys (:data:`SAMPLE_ROWS` rows, with the
   row hash the shuffle uses, so that equal keys of both sides hash alike) and sends every rank
   its most frequent hashes with their counts and its row counts (one small all-to-all). Every
   rank then holds the same estimates and takes the same decisions.
2. **Decide.** A hash whose estimated rows on one side reach ``heavy_share`` times that side's
   fair share (its rows / ranks), and at least :data:`MIN_HEAVY_ROWS`, is *heavy*, provided
   that shuffling the heavy hashes would leave some rank more than :data:`TOLERANCE` times its
   fair share of a side's rows (two hot keys may well land on two ranks). For each
   heavy hash the side with more of its rows *stays*: those rows do not move; the other side's
   rows with that hash are sent to every rank. (When the ranks hold very unequal numbers of the
   staying rows, the inputs being unevenly placed, those are dealt evenly to every rank instead,
   in the shuffle's own exchange: :attr:`Plan.spread`; for the join types joined apart, below,
   each rank then takes them out of what it received by their hash.) (``semi`` and ``anti`` joins keep only the left
   side's heavy hashes: their output is left rows, which must each be decided once.)
3. **Join.** One scatter per table cuts it into the hash buckets and the two heavy groups (the
   CPU backend's ``hash_partition_heavy``; other devices filter the groups out first). Light
   and heavy rows never match each other (their hashes differ), so where ``how`` never emits a
   broadcast row unmatched (``inner``; ``left``, ``semi``, ``anti`` with left rows staying;
   ``right`` with right rows staying) and each rank owns one bucket, the heavy rows simply
   travel in the shuffle's own exchanges (the staying ones to their own rank, the broadcast ones
   to every rank) and one local join per rank answers for both: no extra exchange, no extra
   copy (:func:`in_the_exchange`). Otherwise the broadcast rows are gathered on every rank and
   joined with the staying rows with the join type that keeps the staying side's unmatched
   rows when ``how`` keeps them; a broadcast row is on every rank, so whether it matched
   anything is decided across the ranks: each rank sends the others a bitmap of the broadcast
   rows it matched, and rank 0 adds those that no rank matched, when ``how`` keeps the
   broadcast side's unmatched rows (:func:`heavy_join`; appended to the first bucket's table).

Hashes are classified, not keys: two keys with one hash are handled together, which moves
where their rows are joined, never the answer (every join compares the keys themselves).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa

from .comm import Communicator, exchange_tables
from .comm.errors import ProtocolError
from .core import memory
from .core.table import Table

__all__ = ["DEFAULT_HEAVY_SHARE", "check_heavy_share", "Plan", "plan", "route", "split", "heavy_join"]

DEFAULT_HEAVY_SHARE = 0.125
MIN_HEAVY_ROWS = 1024   # fewer rows than this never make a key heavy, whatever its share
SAMPLE_ROWS = 16384     # rows sampled per side on each rank
CANDIDATES = 1024       # most frequent sampled hashes a rank reports per side
TOLERANCE = 1.2         # heavy keys are handled apart only if shuffling them would give a rank more
                        # than this times its fair share of one side's rows
SPREAD = 1.25           # the staying rows are dealt to every rank when one rank holds more than
                        # this times the ranks' mean of them

_STAY, _AWAY = 1, 2     # a row's role in split(): 0 is a light row (shuffled as usual)


def check_heavy_share(value: Any) -> Optional[float]:
    """``heavy_share`` checked: a positive finite number, or None (no skew handling)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"heavy_share must be a positive number (a share of a side's rows per rank) or None, "
                         f"got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Plan:
    """The heavy hashes (sorted uint64): ``left_stay``'s left rows stay and their right rows go to
    every rank; ``right_stay`` the other way round."""

    left_stay: np.ndarray
    right_stay: np.ndarray
    #: the ranks hold very different numbers of the staying rows (their inputs are unevenly
    #: placed): rather than stay, they are dealt evenly to every rank (in the shuffle's exchange)
    spread: bool = False

    @property
    def keys(self) -> int:
        return len(self.left_stay) + len(self.right_stay)


_NONE = Plan(np.empty(0, np.uint64), np.empty(0, np.uint64))


# ----------------------------------------------------------------------------- sample and decide
def _sample(tables: Sequence[Table], keys: list[str], seed: int,
            rng: np.random.Generator) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(rows, rows sampled, the sampled hashes' most frequent values, their counts)."""
    from .ops.gather import take
    from .ops.hashing import hash_rows

    n = sum(t.num_rows for t in tables)
    hashes = []
    for t in tables:
        if t.num_rows == 0:
            continue
        sub = t.select(keys)
        if n > SAMPLE_ROWS:
            k = max(1, round(SAMPLE_ROWS * t.num_rows / n))
            sub = take(sub, np.sort(rng.integers(0, t.num_rows, k)))
        hashes.append(np.asarray(memory.to_host(hash_rows(sub, keys, seed)), dtype=np.uint64))
    if not hashes:
        return n, 0, np.empty(0, np.uint64), np.empty(0, np.int64)
    h = np.concatenate(hashes)
    uniq, counts = np.unique(h, return_counts=True)
    if len(uniq) > CANDIDATES:
        top = np.sort(np.argsort(-counts, kind="stable")[:CANDIDATES])
        uniq, counts = uniq[top], counts[top]
    return n, int(len(h)), uniq, counts.astype(np.int64)


def _decode(header: Any, peer: int) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """A peer's sample message, checked (a peer's bytes are never trusted)."""
    def bad(what: str) -> ProtocolError:
        return ProtocolError(f"a malformed heavy-key sample in a distributed merge: {what}", peer=peer)

    if not isinstance(header, dict) or set(header) != {"n", "s", "h", "c"}:
        raise bad("expected a map with keys n, s, h, c")
    out = []
    for side in (0, 1):
        try:
            n, s, hb, cb = (header[k][side] for k in ("n", "s", "h", "c"))
        except (TypeError, IndexError, KeyError):
            raise bad("every entry must be a list of two values (left, right)") from None
        if isinstance(n, bool) or isinstance(s, bool) or not isinstance(n, int) or not isinstance(s, int) \
                or n < 0 or s < 0 or (s == 0) != (n == 0):
            raise bad(f"row counts must be ints >= 0, sampled rows 0 exactly when rows are, got {n!r} and {s!r}")
        if not isinstance(hb, bytes) or not isinstance(cb, bytes) or len(hb) % 8 or len(hb) != len(cb) \
                or len(hb) > 8 * CANDIDATES:
            raise bad(f"hashes and counts must be bytes of the same length, at most {CANDIDATES} 8-byte values")
        h = np.frombuffer(hb, dtype="<u8").astype(np.uint64)
        c = np.frombuffer(cb, dtype="<i8").astype(np.int64)
        if len(c) and (c.min() < 1 or c.max() > s):
            raise bad(f"sample counts must be in [1, {s}]")
        out.append((n, s, h, c))
    return out


def _estimates(samples: list[tuple[int, int, np.ndarray, np.ndarray]]) -> tuple[int, np.ndarray, np.ndarray]:
    """Every rank's sample of one side: (rows in all, hashes, estimated rows of each)."""
    total = sum(n for n, _, _, _ in samples)
    hs = [h for n, s, h, c in samples if s]
    ws = [c * (n / s) for n, s, h, c in samples if s]
    if not hs:
        return total, np.empty(0, np.uint64), np.empty(0, np.float64)
    uniq, inv = np.unique(np.concatenate(hs), return_inverse=True)
    return total, uniq, np.bincount(inv, weights=np.concatenate(ws), minlength=len(uniq))


def _at(uniq: np.ndarray, est: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """``est`` of each of ``hashes`` (0 where it was not sampled)."""
    if not len(uniq):
        return np.zeros(len(hashes))
    pos = np.minimum(np.searchsorted(uniq, hashes), len(uniq) - 1)
    return np.where(uniq[pos] == hashes, est[pos], 0.0)


def _imbalance(total: int, hashes: np.ndarray, est: np.ndarray, size: int, buckets: int) -> float:
    """The largest rank's rows over the fair share (``total / size``) if ``hashes`` (with ``est``
    rows each) were shuffled with the rest spread evenly."""
    if total <= 0:
        return 1.0
    bucket = ((hashes.astype(np.uint64) >> np.uint64(32)) * np.uint64(buckets)) >> np.uint64(32)
    rank = bucket.astype(np.int64) * size // buckets
    load = np.bincount(rank, weights=est, minlength=size) + max(total - float(est.sum()), 0.0) / size
    return float(load.max()) / (total / size)


def plan(comm: Communicator, left: Sequence[Table], lkeys: list[str], right: Sequence[Table],
         rkeys: list[str], *, how: str, share: float, seed: int, buckets: int, tag: Optional[int],
         timeout: Optional[float]) -> Plan:
    """The heavy hashes of a merge, the same on every rank (one all-to-all of the samples); none
    unless shuffling them would leave a rank more than :data:`TOLERANCE` times its fair share
    of one side's rows (the split costs a few percent: two hot keys on two ranks may balance)."""
    rng = np.random.default_rng([int(seed) % 2**63, comm.rank])
    mine = [_sample(left, lkeys, seed, rng), _sample(right, rkeys, seed, rng)]
    header = {"n": [m[0] for m in mine], "s": [m[1] for m in mine],
              "h": [m[2].astype("<u8").tobytes() for m in mine], "c": [m[3].astype("<i8").tobytes() for m in mine]}
    got = comm.all_to_all([(header, [])] * comm.size, tag=tag, timeout=timeout)
    samples = [_decode(h, peer) for peer, (h, _frames) in enumerate(got)]
    (nl, ul, el), (nr, ur, er) = (_estimates([s[side] for s in samples]) for side in (0, 1))
    hot_l = ul[el >= max(share * nl / comm.size, MIN_HEAVY_ROWS)]
    hot_r = ur[er >= max(share * nr / comm.size, MIN_HEAVY_ROWS)] if how not in ("semi", "anti") else hot_l[:0]
    hot = np.union1d(hot_l, hot_r)
    at_l, at_r = _at(ul, el, hot), _at(ur, er, hot)
    if not len(hot) or max(_imbalance(nl, hot, at_l, comm.size, buckets),
                           _imbalance(nr, hot, at_r, comm.size, buckets)) <= TOLERANCE:
        return _NONE
    if how in ("semi", "anti"):
        stay_l, stay_r = hot_l, _NONE.right_stay
    else:
        left_more = at_l >= at_r
        stay_l, stay_r = hot[left_more], hot[~left_more]
    loads = _stay_loads([s[0] for s in samples], stay_l) + _stay_loads([s[1] for s in samples], stay_r)
    spread = bool(loads.sum() > 0 and loads.max() > SPREAD * loads.mean())
    return Plan(stay_l, stay_r, spread)


def _stay_loads(samples: list[tuple[int, int, np.ndarray, np.ndarray]], stay: np.ndarray) -> np.ndarray:
    """Each rank's estimated rows of the ``stay`` hashes (from its own sample of one side)."""
    loads = np.zeros(len(samples))
    for rank, (n, s, hashes, counts) in enumerate(samples):
        if s and len(stay) and len(hashes):
            loads[rank] = counts[np.isin(hashes, stay)].sum() * (n / s)
    return loads


# ----------------------------------------------------------------------------- split the rows
def _roles(hashes: Any, heavy: np.ndarray, codes: np.ndarray) -> Any:
    """Each row's role code (0 light), on the hashes' device."""
    if memory.is_host_array(hashes):
        from .backends.cpu._target import run_rows
        from .kernels import partition as PK

        out = np.empty(len(hashes), np.int8)   # one light partition: its id is 0, the others the codes
        run_rows(PK.pids_from_hashes_heavy, len(out), np.ascontiguousarray(hashes, dtype=np.uint64), 1, heavy, codes,
                 out)
        return out
    if type(hashes).__module__.split(".")[0] == "cupy":
        import cupy

        hv = cupy.asarray(heavy)
        pos = cupy.minimum(cupy.searchsorted(hv, hashes), len(heavy) - 1)
        return cupy.where(hv[pos] == hashes, cupy.asarray(codes)[pos], 0).astype(cupy.int8)
    # numba's CUDA simulator: its arrays live on the host anyway (filter() moves the masks)
    return _roles(np.asarray(memory.to_host(hashes)), heavy, codes)


def _heavy_codes(stay: np.ndarray, away: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The heavy hashes sorted, and each one's role code."""
    heavy = np.concatenate([stay, away]).astype(np.uint64)
    codes = np.concatenate([np.full(len(stay), _STAY, np.int8), np.full(len(away), _AWAY, np.int8)])
    order = np.argsort(heavy, kind="stable")
    return np.ascontiguousarray(heavy[order]), np.ascontiguousarray(codes[order])


def route(tables: Sequence[Table], keys: list[str], size: int, *, buckets: int, seed: int,
          keep: Optional[Sequence[str]], stay: np.ndarray,
          away: np.ndarray) -> tuple[list[list[Table]], list[Table], list[Table]]:
    """:func:`gpuframe.distributed.route` of the light rows, and the staying and broadcast rows
    (``keep``: the columns of every piece, as there). Where the backend can (the CPU's
    ``hash_partition_heavy``), one scatter cuts a table into the buckets and the two heavy
    groups; elsewhere the rows are filtered into the three groups first (:func:`split`)."""
    from .backends.registry import capability
    from .distributed import deal, owned_buckets
    from .distributed import route as plain_route
    from .ops.hashing import check_seed, key_columns

    heavy, codes = _heavy_codes(stay, away)
    bounds = [owned_buckets(p, size, buckets) for p in range(size)]
    out: list[list[Table]] = [[] for _ in range(size)]
    staying: list[Table] = []
    going: list[Table] = []
    elsewhere: list[Table] = []
    for t in tables:
        if t.num_rows == 0:
            continue
        fn = capability("hash_partition_heavy", t.device)
        if fn is None:
            elsewhere.append(t)
            continue
        parted, offsets = fn(t, key_columns(t, keys, t.device), buckets, check_seed(seed), heavy, codes)
        offsets = np.asarray(offsets, dtype=np.int64)
        if keep is not None:
            parted = parted.select(list(keep))
        deal(parted, offsets, bounds, out)
        # the heavy groups: partitions buckets (staying) and buckets + 1 (broadcast), when present
        extra = [(buckets + code - 1, buckets + code) for code in (_STAY, _AWAY) if buckets + code < len(offsets)]
        deal(parted, offsets, extra, [staying, going][:len(extra)])
    if elsewhere:
        light, st, go = split(elsewhere, keys, seed=seed, stay=stay, away=away)
        for p, pieces in enumerate(plain_route(light, keys, size, buckets=buckets, seed=seed, keep=keep)):
            out[p].extend(pieces)
        staying += [t if keep is None else t.select(list(keep)) for t in st]
        going += [t if keep is None else t.select(list(keep)) for t in go]
    return out, staying, going


def in_the_exchange(the_plan: Plan, how: str, buckets: int, size: int) -> bool:
    """Whether the heavy rows can travel in the shuffle's exchanges and be joined with the light
    rows in one local join: the staying rows sent to this rank itself, the broadcast rows to every
    rank. Light and heavy rows never match each other (their hashes differ), so the one join's
    pairs are both joins' pairs; its unmatched rows are right when ``how`` never emits a broadcast
    row unmatched (each rank would emit it once). One bucket per rank, so that the received rows
    are not cut into buckets by their hash again."""
    if buckets != size:
        return False
    if len(the_plan.left_stay) and how not in ("inner", "left", "semi", "anti"):
        return False
    return not (len(the_plan.right_stay) and how not in ("inner", "right"))


def fold(outgoing: list[list[Table]], rank: int, staying: list[Table], going: list[Table],
         spread: bool = False) -> None:
    """Add the staying pieces to what this rank sends itself (``spread``: cut into even slices,
    one to every rank), the broadcast ones to every rank."""
    if spread:
        deal_evenly(outgoing, staying)
    else:
        outgoing[rank].extend(staying)
    for pieces in outgoing:
        pieces.extend(going)


def deal_evenly(outgoing: list[list[Table]], tables: list[Table]) -> None:
    """Cut each of ``tables`` into even contiguous slices, one more piece for every rank."""
    size = len(outgoing)
    for t in tables:
        n = t.num_rows
        for r in range(size):
            lo, hi = r * n // size, (r + 1) * n // size
            if hi > lo:
                outgoing[r].append(t.slice(lo, hi - lo))


def note(stats: Optional[dict], the_plan: Plan, staying: list[Table], going: list[Table], size: int) -> None:
    if stats is not None:
        stats["heavy_keys"] = the_plan.keys
        stats["heavy_spread"] = the_plan.spread
        stats["heavy_rows_kept"] = sum(t.num_rows for t in staying)
        stats["heavy_rows_sent"] = size * sum(t.num_rows for t in going)


def split(tables: Sequence[Table], keys: list[str], *, seed: int, stay: np.ndarray,
          away: np.ndarray) -> tuple[list[Table], list[Table], list[Table]]:
    """Each table's rows cut into (light, staying, broadcast) rows by their key hash."""
    from .ops.hashing import hash_rows
    from .ops.select import filter as filter_rows

    heavy, codes = _heavy_codes(stay, away)
    light: list[Table] = []
    staying: list[Table] = []
    going: list[Table] = []
    for t in tables:
        if t.num_rows == 0:
            light.append(t)
            continue
        roles = _roles(hash_rows(t, keys, seed), heavy, codes)
        counts = np.bincount(roles, minlength=3) if memory.is_host_array(roles) else _cupy_counts(roles)
        if counts[0] == t.num_rows:
            light.append(t)
            continue
        light.append(filter_rows(t, roles == 0))
        if counts[_STAY]:
            staying.append(filter_rows(t, roles == _STAY))
        if counts[_AWAY]:
            going.append(filter_rows(t, roles == _AWAY))
    return light, staying, going


def _cupy_counts(roles: Any) -> np.ndarray:
    import cupy

    return np.asarray(cupy.bincount(roles.astype(cupy.int32), minlength=3).get())


# ----------------------------------------------------------------------------- join the heavy rows
def _one(pieces: Sequence[Table], schema: pa.Schema, device: Any) -> Table:
    """The pieces as one table of ``schema``'s columns (an empty one when there are none)."""
    from .interop.arrow import from_arrow
    from .ops.select import concat

    pieces = [t.select(schema.names) for t in pieces if t.num_rows]
    if not pieces:
        return from_arrow(schema.empty_table(), device)
    return pieces[0] if len(pieces) == 1 else concat(pieces)


def _unmatched(comm: Communicator, everywhere: Table, mine: Table, keys_everywhere: list[str],
               keys_mine: list[str], nulls_equal: bool, tag: Optional[int], timeout: Optional[float]) -> np.ndarray:
    """Rows of ``everywhere`` (the same table on every rank) that match no rank's ``mine``."""
    from .ops.join import join_indices

    n = everywhere.num_rows
    matched = np.zeros(n, dtype=bool)
    if n and mine.num_rows:
        idx, _ = join_indices(everywhere, mine, left_on=keys_everywhere, right_on=keys_mine, how="semi",
                              nulls_equal=nulls_equal)
        matched[np.asarray(memory.to_host(idx), dtype=np.int64)] = True
    bits = np.packbits(matched).tobytes()
    got = comm.all_to_all([({"m": bits}, [])] * comm.size, tag=tag, timeout=timeout)
    for peer, (header, _frames) in enumerate(got):
        theirs = header.get("m") if isinstance(header, dict) else None
        if not isinstance(theirs, bytes) or len(theirs) != len(bits):
            raise ProtocolError(f"a malformed match bitmap in a distributed merge: expected {len(bits)} bytes",
                                peer=peer)
        matched |= np.unpackbits(np.frombuffer(theirs, np.uint8), count=n).astype(bool)
    return np.flatnonzero(~matched)


def _conform(table: Table, schema: pa.Schema) -> Table:
    """``table`` with each column cast to ``schema``'s type where the join type made another (an
    inner join's merged key takes the left key's type, a right join's the right one's)."""
    from .ops.select import _cast

    for field in schema:
        if table[field.name].dtype != field.type:
            table = table.with_column(field.name, _cast(table[field.name], field.type))
    return table


_LEFT_STAY_HOW = {"inner": "inner", "left": "left", "right": "inner", "outer": "left", "semi": "semi", "anti": "anti"}
_RIGHT_STAY_HOW = {"inner": "inner", "left": "inner", "right": "right", "outer": "right"}


def heavy_join(comm: Communicator, the_plan: Plan, *, lstay: list[Table], laway: list[Table],
               rstay: list[Table], raway: list[Table], left_schema: pa.Schema, right_schema: pa.Schema,
               lkeys: list[str], rkeys: list[str], kw: dict, out_schema: pa.Schema, tag: Optional[int],
               timeout: Optional[float], device: Any, stats: Optional[dict]) -> list[Table]:
    """This rank's share of the heavy rows' join (tags ``tag`` .. ``tag + 3``)."""
    from .ops.gather import take
    from .ops.join import merge as local_merge

    how, nulls_equal = kw["how"], kw["nulls_equal"]
    rest = {k: v for k, v in kw.items() if k != "how"}
    parts: list[Table] = []

    def tagged(i: int) -> Optional[int]:
        return None if tag is None else tag + i

    schemas, keys, stay, away = (left_schema, right_schema), (lkeys, rkeys), (lstay, rstay), (laway, raway)

    def one_way(side: int, first_tag: int) -> None:
        """``side``'s staying rows joined with the other side's broadcast rows (side 0: left)."""
        other = 1 - side
        everywhere = exchange_tables(comm, [[_one(away[other], schemas[other], device)]] * comm.size,
                                     schema=schemas[other], tag=tagged(first_tag), timeout=timeout, device=device,
                                     stats=stats)
        mine = _one(stay[side], schemas[side], device)
        ordered = (lambda a, b: (a, b)) if side == 0 else (lambda a, b: (b, a))   # (left, right)
        parts.append(local_merge(*ordered(mine, everywhere), how=(_LEFT_STAY_HOW, _RIGHT_STAY_HOW)[side][how],
                                 **rest))
        if how in ("outer", ("right", "left")[side]):   # the broadcast side's unmatched rows are kept
            lost = _unmatched(comm, everywhere, mine, keys[other], keys[side], nulls_equal, tagged(first_tag + 1),
                              timeout)
            if comm.rank == 0 and len(lost):
                parts.append(local_merge(*ordered(_one([], schemas[side], device), take(everywhere, lost)), how=how,
                                         **rest))

    if len(the_plan.left_stay):
        one_way(0, 0)
    if len(the_plan.right_stay):
        one_way(1, 2)
    note(stats, the_plan, lstay + rstay, laway + raway, comm.size)
    return [_conform(p, out_schema) for p in parts]
