"""Distributed shuffle, merge and table operations for programs that hold one gpuframe Table per rank.

Every rank calls the same function at the same time with its own table and a connected
:class:`gpuframe.comm.Communicator` (see :func:`gpuframe.comm.local_mesh`, or
``gpuframe.dask``, which bootstraps one per Dask worker)::

    comm = gpuframe.comm.create_communicator()      # on every rank
    address = comm.start(host)                      # share the addresses out of band
    comm.connect(rank, addresses)
    mine = gpuframe.distributed.shuffle(table, "key", comm)
    joined = gpuframe.distributed.merge(left, right, on="key", comm=comm)

How it works: each rank hash-partitions its rows by the key (:func:`gpuframe.hash_partition`,
the canonical row hash, so equal keys of different integer widths or string types meet), sends
partition ``p`` to rank ``p`` in one all-to-all (:func:`gpuframe.comm.exchange_tables`, which
writes the received rows straight into one table), and, for a merge, joins what it received
locally with :func:`gpuframe.merge`. Each rank's result is its share; the union over ranks is
the answer.

The table operations :func:`unique`, :func:`union`, :func:`intersect`, :func:`difference`,
:func:`groupby_agg`, :func:`sort` and ``merge(how="cross")`` answer as the local functions do on
the ranks' inputs concatenated in rank order: the hash-based ones shuffle by their keys (every
column for the set operations) and finish locally, ``groupby_agg`` exchanges per-rank partial
aggregates, ``sort`` is a sample sort whose ranks' results, concatenated in rank order, are the
sorted table, and a cross product gathers the smaller side on every rank.

*Buckets*: the functions ending in ``_pieces`` (used by :mod:`gpuframe.dask`) take several
local tables and can cut the key space into more buckets than ranks: bucket ``b`` (rows with
``partition_of(hash, buckets) == b``) lives on rank ``b * size // buckets``
(:func:`owned_buckets`), and they return one table per owned bucket.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa

from . import _skew
from ._skew import DEFAULT_HEAVY_SHARE
from .comm import Communicator, exchange_tables
from .comm.exchange import start_exchange
from .core.table import Table

__all__ = ["shuffle", "merge", "route", "owned_buckets", "shuffle_pieces", "merge_pieces", "unique", "union",
           "intersect", "difference", "groupby_agg", "sort", "split_ordered"]


def owned_buckets(rank: int, size: int, buckets: int) -> tuple[int, int]:
    """The buckets ``[first, stop)`` that ``rank`` owns when ``buckets`` are spread over ``size`` ranks.

    Bucket ``b`` belongs to rank ``b * size // buckets``: contiguous ranges of ``buckets // size``
    or one more (no bucket for some ranks when ``buckets < size``).
    """
    return -(-rank * buckets // size), -(-(rank + 1) * buckets // size)


def route(tables: Sequence[Table], on: Sequence[str], size: int, *, buckets: Optional[int] = None,
          seed: int = 0, keep: Optional[Sequence[str]] = None) -> list[list[Table]]:
    """Hash-partition each table and group the slices by destination rank.

    Parameters
    ----------
    tables : sequence of Table
        The local pieces (e.g. the input partitions a Dask worker holds).
    on : list of str
        Key columns to hash.
    size : int
        Number of ranks.
    buckets : int, optional
        Hash buckets (default ``size``); bucket ``b`` goes to rank ``b * size // buckets``.
    seed : int
        Hash seed.
    keep : list of str, optional
        Columns to send (default all): hashing helper columns are dropped here.

    Returns
    -------
    list of lists of Table
        ``out[p]``: zero-copy slices (of one partitioned copy of each input) for rank ``p``.
    """
    from .ops.partition import hash_partition

    nb = size if buckets is None else buckets
    bounds = [owned_buckets(p, size, nb) for p in range(size)]
    out: list[list[Table]] = [[] for _ in range(size)]
    for t in tables:
        if t.num_rows == 0:
            continue
        parted, offsets = hash_partition(t, list(on), nb, seed=seed)
        if keep is not None:
            parted = parted.select(list(keep))
        deal(parted, offsets, bounds, out)
    return out


def deal(parted: Table, offsets: Any, bounds: Sequence[tuple[int, int]], out: list[list[Table]]) -> None:
    """Append to ``out[p]`` the zero-copy slice of ``parted`` holding rank ``p``'s buckets
    ``bounds[p]`` (``offsets``: where each bucket starts), when it has rows."""
    for p, (lo, hi) in enumerate(bounds):
        start, stop = int(offsets[lo]), int(offsets[hi])
        if stop > start:
            out[p].append(parted.slice(start, stop - start))


def _split_owned(table: Table, on: Sequence[str], comm: Communicator, buckets: int, seed: int) -> list[Table]:
    """The received rows cut into this rank's buckets (one table per owned bucket)."""
    lo, hi = owned_buckets(comm.rank, comm.size, buckets)
    if hi - lo <= 1:
        return [table] if hi > lo else []
    from .ops.partition import hash_partition

    parted, offsets = hash_partition(table, list(on), buckets, seed=seed)
    return [parted.slice(int(offsets[b]), int(offsets[b + 1] - offsets[b])) for b in range(lo, hi)]


def _check_comm(comm: Any) -> Communicator:
    if not isinstance(comm, Communicator):
        raise TypeError(f"comm must be a connected gpuframe.comm.Communicator, got {type(comm).__name__}")
    return comm


def _check_table(table: Any, name: str) -> Table:
    if not isinstance(table, Table):
        raise TypeError(f"{name} must be a gpuframe Table, got {type(table).__name__}")
    return table


def _check_buckets(buckets: Any, size: int) -> int:
    if buckets is None:
        return size
    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise ValueError(f"buckets must be a positive int or None, got {buckets!r}")
    return buckets


def _key_list(schema: pa.Schema, on: Any, param: str) -> list[str]:
    if isinstance(on, str):
        names = [on]
    elif isinstance(on, (list, tuple)) and on and all(isinstance(n, str) for n in on):
        names = list(on)
    else:
        raise TypeError(f"{param} must be a column name or a non-empty list of column names, got {on!r}")
    for n in names:
        if n not in schema.names:
            raise KeyError(f"{param}: no column named {n!r}; the table has {schema.names}")
    return names


def merge_keys(left: pa.Schema, right: pa.Schema, on: Any, left_on: Any, right_on: Any) -> tuple[list[str], list[str]]:
    """The key columns of each side, resolved as :func:`gpuframe.merge` resolves them.

    ``on`` names keys of both sides; else ``left_on`` and ``right_on`` pairwise; else the
    columns the two sides share.
    """
    if on is not None:
        if left_on is not None or right_on is not None:
            raise ValueError("pass either on= or left_on= and right_on=, not both; "
                             f"got on={on!r}, left_on={left_on!r}, right_on={right_on!r}")
        return _key_list(left, on, "on"), _key_list(right, on, "on")
    if left_on is not None or right_on is not None:
        if left_on is None or right_on is None:
            raise ValueError(f"left_on and right_on must be given together; got left_on={left_on!r}, "
                             f"right_on={right_on!r}")
        lk, rk = _key_list(left, left_on, "left_on"), _key_list(right, right_on, "right_on")
        if len(lk) != len(rk):
            raise ValueError(f"left_on and right_on must name the same number of columns, got {lk} and {rk}")
        return lk, rk
    common = [n for n in left.names if n in right.names]
    if not common:
        raise ValueError("no key columns: pass on= or left_on=/right_on= (the sides share no column names; "
                         f"left has {left.names}, right has {right.names})")
    return common, common


def check_merge(left: pa.Schema, right: pa.Schema, **kwargs: Any) -> pa.Schema:
    """Validate merge arguments against two schemas, as :func:`gpuframe.merge` would; return the
    output schema.

    Runs :func:`gpuframe.merge` on empty tables of the two schemas, so every check (key names,
    key types, ``how``, suffixes, name collisions) is gpuframe's own, and nothing is exchanged
    when one fails. Remembered per (schemas, arguments): repeated operations pay it once.
    """
    return _check_merge_cached(_freeze(left), _freeze(right), _freeze(kwargs))


def _freeze(value: Any) -> Any:
    if isinstance(value, pa.Schema):
        return ("schema", value.serialize().to_pybytes())
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__,) + tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple) and value and value[0] == "schema":
        return pa.ipc.read_schema(pa.py_buffer(value[1]))
    if isinstance(value, tuple) and value and value[0] in ("list", "tuple"):
        items = [_thaw(v) for v in value[1:]]
        return items if value[0] == "list" else tuple(items)
    return value


@functools.lru_cache(maxsize=256)
def _check_merge_cached(left: Any, right: Any, kwargs: Any) -> pa.Schema:
    from .interop.arrow import from_arrow
    from .ops.join import merge as local_merge

    kw = {k: _thaw(v) for k, v in kwargs}
    return local_merge(from_arrow(_thaw(left).empty_table()), from_arrow(_thaw(right).empty_table()), **kw).schema


def _add(stats: Optional[dict], key: str, value: float) -> None:
    if stats is not None:
        stats[key] = stats.get(key, 0) + value


# ------------------------------------------------------------------------------- shuffle
def shuffle_pieces(tables: Sequence[Table], on: Any, comm: Communicator, *, schema: pa.Schema,
                   buckets: Optional[int] = None, seed: int = 0, tag: Optional[int] = None,
                   timeout: Optional[float] = None, device: Any = None,
                   stats: Optional[dict] = None, memory_budget: Any = None) -> list[Table]:
    """Shuffle several local tables at once; one result table per bucket this rank owns.

    See :func:`shuffle`; ``schema`` is the schema of every table (needed when a rank holds none).
    """
    from ._bounded import BucketStore, budget_bytes, budget_setting, shuffle_rounds
    from .core.hostalloc import _memory_total

    comm = _check_comm(comm)
    nb = _check_buckets(buckets, comm.size)
    keys = _key_list(schema, on, "on")
    budget = budget_bytes(budget_setting(memory_budget), _memory_total(), None)
    if budget:
        if device is None:
            device = next((t.device for t in tables), None)
        lo, hi = owned_buckets(comm.rank, comm.size, nb)
        store = BucketStore(range(lo, hi), schema, device)   # no folder: the result is returned in memory
        shuffle_rounds(list(tables), keys, comm, schema=schema, buckets=nb, seed=seed, budget=budget, store=store,
                       tag=tag, timeout=timeout, device=device, stats=stats)
        return [store.take(b) for b in range(lo, hi)]
    t0 = time.perf_counter()
    outgoing = route(tables, keys, comm.size, buckets=nb, seed=seed)
    t1 = time.perf_counter()
    received = exchange_tables(comm, outgoing, schema=schema, tag=tag, timeout=timeout, device=device,
                               stats=stats)
    t2 = time.perf_counter()
    out = _split_owned(received, keys, comm, nb, seed)
    _add(stats, "partition_s", (t1 - t0) + (time.perf_counter() - t2))
    _add(stats, "exchange_s", t2 - t1)
    return out


def shuffle(table: Table, on: Any, comm: Communicator, *, seed: int = 0, tag: Optional[int] = None,
            timeout: Optional[float] = None, stats: Optional[dict] = None, memory_budget: Any = None) -> Table:
    """Hash-shuffle rows across ranks: each rank gets the rows whose key hashes to it.

    Parameters
    ----------
    table : Table
        This rank's rows; every rank's table has the same schema.
    on : str or list of str
        Key columns.
    comm : Communicator
        Connected; every rank calls ``shuffle`` together.
    seed : int, default 0
        Hash seed (the same on every rank).
    tag : int, optional
        Identifies this exchange when several run at once (see ``Communicator.all_to_all``).
    timeout : float, optional
        Seconds each phase of the exchange may wait for a peer.
    stats : dict, optional
        Filled with ``partition_s``, ``exchange_s``, ``bytes_sent``, ``bytes_received`` (and
        ``rounds`` under a budget).
    memory_budget : int, float or str, optional
        Exchange in rounds so that the partitioned copies and receive buffers in flight stay
        under this many bytes (a size string, or a fraction of the memory this process may
        use); the same on every rank. Default: the ``exchange_memory_budget`` setting
        (:mod:`gpuframe.config`), else none (one exchange). The result itself is in memory
        whatever the budget; ``gpuframe.dask.shuffle`` spills it to disk instead.

    Returns
    -------
    Table
        Every rank's rows with ``partition_of(hash_rows(key), comm.size) == comm.rank``, on this
        rank's device (rank 0's rows first, then rank 1's, ...; in rounds, round by round, each
        round's in that rank order).

    Raises
    ------
    gpuframe.comm.CommError
        A peer failed or timed out (the error names it); the communicator is closed afterwards.
    """
    table = _check_table(table, "table")
    (out,) = shuffle_pieces([table], on, comm, schema=table.schema, seed=seed, tag=tag, timeout=timeout,
                            device=table.device, stats=stats, memory_budget=memory_budget)
    return out


# ------------------------------------------------------------------------------- merge
def _merge_kwargs(on: Any, left_on: Any, right_on: Any, how: str, suffixes: Any, nulls_equal: bool) -> dict:
    return {"on": on, "left_on": left_on, "right_on": right_on, "how": how, "suffixes": suffixes,
            "nulls_equal": nulls_equal}


def hash_plan(left: pa.Schema, right: pa.Schema, lkeys: list[str],
              rkeys: list[str]) -> tuple[list[tuple[int, pa.DataType]], list[tuple[int, pa.DataType]]]:
    """The key columns each side must hash in another type so that equal keys meet.

    The row hash is canonical within a type family (every integer width, every string type), and
    :func:`gpuframe.ops.keys.resolve_key_pairs` says which families join: an integer key joined
    with a float key compares as float64, so the integer side is hashed as float64 (the float
    side's hash is that of its float64 value already). Raises ``TypeError`` for key types that
    cannot be joined.

    Returns
    -------
    (left casts, right casts)
        ``[(key position, type to hash as), ...]`` per side.
    """
    from .interop.arrow import from_arrow
    from .ops.keys import resolve_key_pairs

    pairs = resolve_key_pairs(from_arrow(left.empty_table()), from_arrow(right.empty_table()), lkeys, rkeys)
    lcast: list[tuple[int, pa.DataType]] = []
    rcast: list[tuple[int, pa.DataType]] = []
    for i, pair in enumerate(pairs):
        if pair.family == "float":
            if pa.types.is_integer(pair.left_type):
                lcast.append((i, pa.float64()))
            if pa.types.is_integer(pair.right_type):
                rcast.append((i, pa.float64()))
    return lcast, rcast


def _with_hash_keys(tables: Sequence[Table], keys: list[str], plan: list[tuple[int, pa.DataType]],
                    side: str) -> tuple[list[Table], list[str]]:
    """Add the cast key columns that ``plan`` asks for (the originals travel, these are dropped)."""
    if not plan:
        return list(tables), keys
    from .interop.arrow import from_arrow

    hash_keys = list(keys)
    for i, _typ in plan:
        hash_keys[i] = f"__gpuframe_hash_{side}{i}"
    out = []
    for t in tables:
        view = t
        for i, typ in plan:
            casted = from_arrow(pa.table({hash_keys[i]: t[keys[i]].to_arrow().cast(typ)}), t.device)
            view = view.with_column(hash_keys[i], casted[hash_keys[i]])
        out.append(view)
    return out, hash_keys


def _heavy_out(received: Table, keys: list[str], plan: list[tuple[int, pa.DataType]], side: str, seed: int,
               stay: np.ndarray, away: np.ndarray) -> tuple[Table, list[Table]]:
    """``received`` cut into its light rows and the staying heavy rows dealt to this rank."""
    names = received.column_names
    (view,), hash_keys = _with_hash_keys([received], keys, plan, side)
    (light,), staying, _going = _skew.split([view], hash_keys, seed=seed, stay=stay, away=away)
    return light.select(names), [t.select(names) for t in staying]


def merge_pieces(left: Sequence[Table], right: Sequence[Table], comm: Communicator, *,
                 left_schema: pa.Schema, right_schema: pa.Schema, on: Any = None, left_on: Any = None,
                 right_on: Any = None, how: str = "inner", suffixes: tuple[str, str] = ("_x", "_y"),
                 nulls_equal: bool = False, buckets: Optional[int] = None, seed: int = 0,
                 tag: Optional[int] = None, timeout: Optional[float] = None, device: Any = None,
                 stats: Optional[dict] = None, heavy_share: Optional[float] = DEFAULT_HEAVY_SHARE) -> list[Table]:
    """Merge several local tables of each side; one result per bucket this rank owns.

    See :func:`merge`. The exchanges use ``tag`` .. ``tag + 6``. Heavy keys (see ``heavy_share``
    in :func:`merge`) are handled apart when every rank owns a bucket; their rows of this rank's
    result are in its first bucket's table.
    """
    from .ops.join import merge as local_merge

    comm = _check_comm(comm)
    if how == "cross":
        raise ValueError("merge_pieces does not take how='cross' (a cross product is not hash-partitioned); "
                         "use gpuframe.distributed.merge(left, right, how='cross', comm=comm)")
    nb = _check_buckets(buckets, comm.size)
    share = _skew.check_heavy_share(heavy_share)
    kw = _merge_kwargs(on, left_on, right_on, how, suffixes, nulls_equal)
    out_schema = check_merge(left_schema, right_schema, **kw)
    lkeys, rkeys = merge_keys(left_schema, right_schema, on, left_on, right_on)
    lplan, rplan = hash_plan(left_schema, right_schema, lkeys, rkeys)
    t0 = time.perf_counter()
    lview, lhash = _with_hash_keys(left, lkeys, lplan, "l")
    rview, rhash = _with_hash_keys(right, rkeys, rplan, "r")
    heavy = None
    if share is not None and comm.size > 1 and nb >= comm.size:
        heavy = _guarded(comm, _skew.plan, comm, lview, lhash, rview, rhash, how=how, share=share, seed=seed,
                         buckets=nb, tag=_tag(tag, 2), timeout=timeout)
        if not heavy.keys:
            heavy = None
    # the heavy rows travel in the shuffle's own exchanges and are joined with the light ones,
    # where the join type allows (see gpuframe._skew.in_the_exchange)
    folded = heavy is not None and _skew.in_the_exchange(heavy, how, nb, comm.size)
    _add(stats, "skew_s", time.perf_counter() - t0)
    lstay: list[Table] = []
    laway: list[Table] = []
    rstay: list[Table] = []
    raway: list[Table] = []
    t0 = time.perf_counter()
    if heavy is None:
        lout = route(lview, lhash, comm.size, buckets=nb, seed=seed, keep=left_schema.names if lplan else None)
    else:
        lout, lstay, laway = _guarded(comm, _skew.route, lview, lhash, comm.size, buckets=nb, seed=seed,
                                      keep=left_schema.names if lplan else None, stay=heavy.left_stay,
                                      away=heavy.right_stay)
        if folded:
            _skew.fold(lout, comm.rank, lstay, laway, heavy.spread)
        elif heavy.spread:      # dealt evenly with the light rows; taken out again on arrival
            _skew.deal_evenly(lout, lstay)
            lstay = []
    t1 = time.perf_counter()
    tag2 = None if tag is None else tag + 1
    # The left side travels while this thread partitions the right side.
    lpending = start_exchange(comm, lout, schema=left_schema, tag=tag, timeout=timeout, device=device,
                              stats=stats)
    try:
        if heavy is None:
            rout = route(rview, rhash, comm.size, buckets=nb, seed=seed, keep=right_schema.names if rplan else None)
        else:
            rout, rstay, raway = _skew.route(rview, rhash, comm.size, buckets=nb, seed=seed,
                                             keep=right_schema.names if rplan else None, stay=heavy.right_stay,
                                             away=heavy.left_stay)
            if folded:
                _skew.fold(rout, comm.rank, rstay, raway, heavy.spread)
            elif heavy.spread:
                _skew.deal_evenly(rout, rstay)
                rstay = []
        t2 = time.perf_counter()
        rpending = start_exchange(comm, rout, schema=right_schema, tag=tag2, timeout=timeout, device=device,
                                  stats=stats)
    except BaseException:
        # A local failure between the two exchanges: close, so that the peers (waiting for our
        # right side) fail at once instead of at their timeout, as after any comm error.
        comm.close()
        _drain(lpending)
        raise
    lrecv = lpending.result()
    rrecv = rpending.result()
    if heavy is not None and not folded and heavy.spread:
        lrecv, lstay = _heavy_out(lrecv, lkeys, lplan, "l", seed, heavy.left_stay, heavy.right_stay)
        rrecv, rstay = _heavy_out(rrecv, rkeys, rplan, "r", seed, heavy.right_stay, heavy.left_stay)
    t3 = time.perf_counter()
    if nb == comm.size:
        lparts, rparts = [lrecv], [rrecv]
    else:
        (lrecv2,), lh = _with_hash_keys([lrecv], lkeys, lplan, "l")
        (rrecv2,), rh = _with_hash_keys([rrecv], rkeys, rplan, "r")
        lparts = [t.select(left_schema.names) for t in _split_owned(lrecv2, lh, comm, nb, seed)]
        rparts = [t.select(right_schema.names) for t in _split_owned(rrecv2, rh, comm, nb, seed)]
    t4 = time.perf_counter()
    out = [local_merge(lt, rt, **kw) for lt, rt in zip(lparts, rparts)]
    _add(stats, "partition_s", (t1 - t0) + (t2 - t1) + (t4 - t3))
    _add(stats, "exchange_s", t3 - t2)  # what the transfers cost beyond the overlapped partitioning
    _add(stats, "merge_s", time.perf_counter() - t4)
    if folded:
        _skew.note(stats, heavy, lstay + rstay, laway + raway, comm.size)
    elif heavy is not None:
        t5 = time.perf_counter()
        extra = _guarded(comm, _skew.heavy_join, comm, heavy, lstay=lstay, laway=laway, rstay=rstay,
                         raway=raway, left_schema=left_schema, right_schema=right_schema, lkeys=lkeys,
                         rkeys=rkeys, kw=kw, out_schema=out_schema, tag=_tag(tag, 3), timeout=timeout,
                         device=device, stats=stats)
        if extra:
            from .ops.select import concat

            out[0] = concat([out[0], *extra])
        _add(stats, "skew_s", time.perf_counter() - t5)
    return out


def _drain(pending: Any) -> None:
    """Wait for an exchange whose result is no longer wanted (closing cancels it)."""
    try:
        pending.result()
    except Exception:  # the error that made us drain is the one to report
        pass


def merge(left: Table, right: Table, on: Any = None, *, comm: Communicator, how: str = "inner",
          left_on: Any = None, right_on: Any = None, suffixes: tuple[str, str] = ("_x", "_y"),
          nulls_equal: bool = False, seed: int = 0, tag: Optional[int] = None,
          timeout: Optional[float] = None, stats: Optional[dict] = None,
          heavy_share: Optional[float] = DEFAULT_HEAVY_SHARE) -> Table:
    """Distributed :func:`gpuframe.merge`: shuffle both sides by their keys, then join locally.

    Heavy keys (skew): a key whose rows on one side reach ``heavy_share`` of that side's rows per
    rank (and at least 1,024 rows), estimated from a sample of each rank's keys, is not shuffled:
    the side with more of its rows keeps them where they are and the other side's rows of that
    key are sent to every rank (see :mod:`gpuframe._skew`). No rank then gets a hot key's rows all
    at once.

    ``how="cross"`` takes no keys: the side with fewer rows in all is gathered on every rank
    (tags ``tag`` for the row counts, ``tag + 1`` for the rows) and crossed with this rank's rows of
    the other side, nothing else moves (``stats``: ``exchange_s``, ``merge_s``, the bytes).

    Parameters
    ----------
    left, right : Table
        This rank's rows of each side (the same schemas on every rank).
    on, left_on, right_on, how, suffixes, nulls_equal
        As in :func:`gpuframe.merge`.
    comm : Communicator
        Connected; every rank calls ``merge`` together.
    seed, tag, timeout
        As in :func:`shuffle` (the exchanges use ``tag`` .. ``tag + 6``).
    stats : dict, optional
        Filled with ``partition_s``, ``exchange_s``, ``merge_s``, ``skew_s`` (sampling, splitting
        and joining the heavy keys' rows), ``bytes_sent``, ``bytes_received``; when heavy keys
        were found, ``heavy_keys``, ``heavy_rows_kept`` (this rank's rows that stayed) and
        ``heavy_rows_sent`` (the rows it sent to every rank, counted once per rank).
    heavy_share : float or None, default 0.125
        The share of a side's fair share (its rows / ranks) from which a key is heavy; ``None``
        shuffles every key (no sample is taken).

    Returns
    -------
    Table
        This rank's share of the join: the union over ranks equals :func:`gpuframe.merge` of the
        concatenated inputs (in another row order).

    Raises
    ------
    gpuframe.comm.CommError
        A peer failed or timed out (the error names it); the communicator is closed afterwards.
    """
    left = _check_table(left, "left")
    right = _check_table(right, "right")
    if how == "cross":
        return _cross_merge(left, right, _check_comm(comm), on=on, left_on=left_on, right_on=right_on,
                            suffixes=suffixes, tag=tag, timeout=timeout, stats=stats)
    (out,) = merge_pieces([left], [right], comm, left_schema=left.schema, right_schema=right.schema, on=on,
                          left_on=left_on, right_on=right_on, how=how, suffixes=suffixes,
                          nulls_equal=nulls_equal, seed=seed, tag=tag, timeout=timeout, device=left.device,
                          stats=stats, heavy_share=heavy_share)
    return out


# ------------------------------------------------------------------------------- table operations
# unique, union, intersect, difference, groupby_agg, sort and merge(how="cross") over one Table per
# rank: the answer is that of the local function on the ranks' inputs concatenated in rank order.
# Arguments are checked before anything is sent (an error then leaves the communicator open, as in
# merge); a failure of the local work between exchanges closes the communicator, so that the peers
# fail at once (PeerClosedError) instead of at their timeout.

def _tag(tag: Optional[int], i: int) -> Optional[int]:
    return None if tag is None else tag + i


def _guarded(comm: Communicator, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; on failure, close ``comm`` (the peers wait for us) and re-raise."""
    try:
        return fn(*args, **kwargs)
    except BaseException:
        comm.close()
        raise


def _fresh(taken: Sequence[str], stem: str) -> str:
    """A column name that is not in ``taken``."""
    name, i = stem, 0
    while name in taken:
        i += 1
        name = f"{stem}{i}"
    return name


def _hash_exchange(comm: Communicator, tables: Sequence[Table], keys: list[str], schema: pa.Schema,
                   plan: list[tuple[int, pa.DataType]], side: str, *, seed: int, tag: Optional[int],
                   timeout: Optional[float], device: Any, stats: Optional[dict], buckets: Optional[int] = None) -> Any:
    """Start the hash exchange of ``tables`` by ``keys`` (some hashed as other types, ``plan``;
    to ``buckets`` buckets spread over the ranks, one per rank by default); returns the pending
    exchange."""
    view, hkeys = _with_hash_keys(tables, keys, plan, side)
    t0 = time.perf_counter()
    out = route(view, hkeys, comm.size, buckets=buckets, seed=seed, keep=schema.names if plan else None)
    _add(stats, "partition_s", time.perf_counter() - t0)
    return start_exchange(comm, out, schema=schema, tag=tag, timeout=timeout, device=device, stats=stats)


def _exchange_both(comm: Communicator, left: Table, right: Table, names: list[str], *, seed: int,
                   tag: Optional[int], timeout: Optional[float], stats: Optional[dict],
                   buckets: Optional[int] = None) -> list[tuple[Table, Table]]:
    """Both sides hash-shuffled by every column in ``names`` (types that differ between the sides
    hashed as their common type, so that equal rows meet); tags ``tag`` and ``tag + 1``. One
    (left, right) pair per bucket this rank owns (``buckets``: spread over the ranks, one per
    rank by default)."""
    lplan, rplan = hash_plan(left.schema, right.schema, names, names)
    t0 = time.perf_counter()
    lpending = _guarded(comm, _hash_exchange, comm, [left], names, left.schema, lplan, "l", seed=seed, tag=tag,
                        timeout=timeout, device=left.device, stats=stats, buckets=buckets)
    try:
        rpending = _hash_exchange(comm, [right], names, right.schema, rplan, "r", seed=seed,
                                  tag=_tag(tag, 1), timeout=timeout, device=left.device, stats=stats,
                                  buckets=buckets)
    except BaseException:
        comm.close()
        _drain(lpending)
        raise
    lrecv, rrecv = lpending.result(), rpending.result()
    _add(stats, "exchange_s", time.perf_counter() - t0)
    if buckets is None:
        return [(lrecv, rrecv)]
    t1 = time.perf_counter()
    sides = []
    for recv, plan, side in ((lrecv, lplan, "l"), (rrecv, rplan, "r")):
        (view,), hkeys = _with_hash_keys([recv], names, plan, side)
        sides.append([t.select(recv.column_names) for t in _split_owned(view, hkeys, comm, buckets, seed)])
    _add(stats, "partition_s", time.perf_counter() - t1)
    return list(zip(*sides))


def _timed_local(stats: Optional[dict], fn: Any, *args: Any, **kwargs: Any) -> Any:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    _add(stats, "local_s", time.perf_counter() - t0)
    return out


def unique(table: Table, subset: Any = None, *, comm: Communicator, keep: str = "any", seed: int = 0,
           tag: Optional[int] = None, timeout: Optional[float] = None, stats: Optional[dict] = None,
           _buckets: Optional[int] = None) -> Any:
    """Distributed :func:`gpuframe.unique`: shuffle by the ``subset`` columns (every column by
    default), then keep one row per distinct value locally.

    Parameters
    ----------
    table : Table
        This rank's rows (the same schema on every rank).
    subset, keep
        As in :func:`gpuframe.unique`; ``keep="first"``/``"last"`` refer to the global order
        (rank 0's rows, then rank 1's, ...), which the exchange preserves.
    comm : Communicator
        Connected; every rank calls ``unique`` together.
    seed, tag, timeout, stats
        As in :func:`shuffle` (``stats`` also gets ``local_s``).

    Returns
    -------
    Table
        This rank's share: the distinct rows whose ``subset`` hashes to this rank. The union over
        ranks is :func:`gpuframe.unique` of the concatenated inputs (in another row order).
    """
    from .ops.setops import _subset, unique as local_unique

    table = _check_table(table, "table")
    comm = _check_comm(comm)
    local_unique(table.slice(0, 0), subset, keep=keep)      # checks subset and keep, sends nothing
    names = _subset(table, subset)
    t0 = time.perf_counter()
    pending = _guarded(comm, _hash_exchange, comm, [table], names, table.schema, [], "u", seed=seed, tag=tag,
                       timeout=timeout, device=table.device, stats=stats, buckets=_buckets)
    received = pending.result()
    _add(stats, "exchange_s", time.perf_counter() - t0)
    out = _timed_local(stats, local_unique, received, names, keep=keep)
    # gpuframe.dask's partitions (``_buckets``): this rank's buckets' rows, one table each
    return out if _buckets is None else _split_owned(out, names, comm, _buckets, seed)


def _check_pair(left: Any, right: Any, comm: Any, op: str) -> tuple[Table, Table, Communicator]:
    from .ops.setops import _pair_tables

    left = _check_table(left, "left")
    right = _check_table(right, "right")
    comm = _check_comm(comm)
    _pair_tables(left.slice(0, 0), right.slice(0, 0), op)   # same names, types that combine
    return left, right, comm


def union(left: Table, right: Table, *, comm: Communicator, distinct: bool = True, seed: int = 0,
          tag: Optional[int] = None, timeout: Optional[float] = None, stats: Optional[dict] = None,
          _buckets: Optional[int] = None) -> Any:
    """Distributed :func:`gpuframe.union`.

    ``distinct=True`` (SQL ``UNION``): both sides are shuffled by every column (tags ``tag`` and
    ``tag + 1``; columns whose types differ between the sides are hashed as their common type),
    then united locally: this rank gets the distinct rows that hash to it. ``distinct=False``
    (``UNION ALL``): this rank's left rows then its right rows, nothing exchanged. Either way the
    union over ranks is :func:`gpuframe.union` of the concatenated inputs (in another row order),
    with its column order and promoted types.
    """
    from .ops.setops import union as local_union

    if not isinstance(distinct, (bool, np.bool_)):
        raise TypeError(f"distinct must be a bool, got {distinct!r}")
    left, right, comm = _check_pair(left, right, comm, "union")
    if not distinct:
        return _timed_local(stats, local_union, left, right, distinct=False)
    return _set_op(left, right, comm, "union", seed, tag, timeout, stats, _buckets)


def _set_op(left: Table, right: Table, comm: Communicator, op: str, seed: int, tag: Optional[int],
            timeout: Optional[float], stats: Optional[dict], buckets: Optional[int] = None) -> Any:
    """``op`` of the hash-shuffled sides; with ``buckets`` (gpuframe.dask's partitions) one table
    per bucket this rank owns, each bucket's rows set-operated apart."""
    from .ops import setops

    left, right, comm = _check_pair(left, right, comm, op)
    pairs = _exchange_both(comm, left, right, list(left.column_names), seed=seed, tag=tag, timeout=timeout,
                           stats=stats, buckets=buckets)
    fn = getattr(setops, op)
    kw = {"distinct": True} if op == "union" else {}
    out = [_timed_local(stats, fn, lt, rt, **kw) for lt, rt in pairs]
    return out if buckets is not None else out[0]


def intersect(left: Table, right: Table, *, comm: Communicator, seed: int = 0, tag: Optional[int] = None,
              timeout: Optional[float] = None, stats: Optional[dict] = None,
              _buckets: Optional[int] = None) -> Any:
    """Distributed :func:`gpuframe.intersect`: both sides shuffled by every column (tags ``tag``
    and ``tag + 1``), then intersected locally. The union over ranks is :func:`gpuframe.intersect`
    of the concatenated inputs (the left's column types; another row order)."""
    return _set_op(left, right, comm, "intersect", seed, tag, timeout, stats, _buckets)


def difference(left: Table, right: Table, *, comm: Communicator, seed: int = 0, tag: Optional[int] = None,
               timeout: Optional[float] = None, stats: Optional[dict] = None,
               _buckets: Optional[int] = None) -> Any:
    """Distributed :func:`gpuframe.difference`: both sides shuffled by every column (tags ``tag``
    and ``tag + 1``), then subtracted locally. The union over ranks is
    :func:`gpuframe.difference` of the concatenated inputs (the left's column types; another row
    order)."""
    return _set_op(left, right, comm, "difference", seed, tag, timeout, stats, _buckets)


# ------------------------------------------------------------------------------- groupby
# How each op is pre-aggregated per rank ("partials") and how the partials combine.
_PARTIALS = {"sum": ("sum",), "count": ("count",), "size": ("size",), "min": ("min",), "max": ("max",),
             "first": ("first",), "last": ("last",), "mean": ("count", "mean"),
             "var": ("count", "mean", "var"), "std": ("count", "mean", "var")}
_ROW_OPS = ("median", "nunique")   # no partials: the rows travel
_COMBINE = {"sum": "sum", "count": "sum", "size": "sum", "min": "min", "max": "max", "first": "first",
            "last": "last"}


def groupby_agg(table: Table, by: Any, aggs: Any, *, comm: Communicator, dropna: bool = False, seed: int = 0,
                tag: Optional[int] = None, timeout: Optional[float] = None, stats: Optional[dict] = None,
                _buckets: Optional[int] = None) -> Any:
    """Distributed :func:`gpuframe.groupby_agg`: this rank gets the groups whose keys hash to it.

    Each rank pre-aggregates its rows per group (sum, count, size, min, max, first and last of
    the non-null values; mean from partial counts and means; var and std from partial counts,
    means and squared deviations, combined exactly with Chan et al.'s formula), the partial
    aggregates are shuffled by the keys, and aggregated again. ``first``/``last`` follow the
    global order (rank 0's rows, then rank 1's, ...): the exchange keeps the partials in rank
    order, so the first non-null partial is the first non-null value. When ``aggs`` holds a
    ``median`` or ``nunique``, which do not decompose, the rows themselves (the keys and those
    ops' columns) are shuffled by the keys too (tag ``tag``, the partials then ``tag + 1``) and
    those aggregates computed from them; the two results are lined up by sorting both by the keys
    (this rank's groups then come in key order).

    Parameters
    ----------
    table : Table
        This rank's rows (the same schema on every rank).
    by, aggs, dropna
        As in :func:`gpuframe.groupby_agg` (null keys are one group unless ``dropna``).
    comm : Communicator
        Connected; every rank calls ``groupby_agg`` together.
    seed, tag, timeout, stats
        As in :func:`shuffle` (``stats`` also gets ``local_s``, the local aggregations).

    Returns
    -------
    Table
        The key columns, then one column per aggregation, with the types of
        :func:`gpuframe.groupby_agg`; the union over ranks is :func:`gpuframe.groupby_agg` of the
        concatenated inputs (groups in another order; float sums and moments may differ in the
        last bits, being summed in another order).
    """
    from .ops.groupby import _check_aggs, _drop_null_keys, groupby_agg as local_gb
    from .ops.setops import _subset

    table = _check_table(table, "table")
    comm = _check_comm(comm)
    out_schema = local_gb(table.slice(0, 0), by, aggs, dropna=dropna).schema   # every check, nothing sent
    names = _subset(table, by, "by")
    specs = _check_aggs(table, names, aggs)
    exact = [spec for spec in specs if spec[2] in _ROW_OPS]
    part = [spec for spec in specs if spec[2] not in _ROW_OPS]
    t0 = time.perf_counter()

    def mine() -> Table:
        t = table.select(list(dict.fromkeys(names + [c for _, c, _ in specs])))
        return _drop_null_keys(t, names) if dropna else t

    base = _guarded(comm, mine)
    rows_pending = part_pending = None
    if exact:   # the rows themselves: the keys and the columns of median and nunique
        rows = base.select(list(dict.fromkeys(names + [c for _, c, _ in exact])))
        rows_pending = _guarded(comm, _hash_exchange, comm, [rows], names, rows.schema, [], "g", seed=seed,
                                tag=tag, timeout=timeout, device=table.device, stats=stats, buckets=_buckets)
    # the partial aggregates: one column per distinct (column, partial op)
    taken = list(table.column_names)
    pcols: dict[tuple[str, str], str] = {}
    for _, col, op in part:
        for pop in _PARTIALS[op]:
            if (col, pop) not in pcols:
                pcols[(col, pop)] = name = _fresh(taken, f"__gpuframe_{pop}_{col}")
                taken.append(name)
    if part:
        try:
            partials = local_gb(base, names, {p: (c, op) for (c, op), p in pcols.items()})
            part_pending = _hash_exchange(comm, [partials], names, partials.schema, [], "g", seed=seed,
                                          tag=_tag(tag, 1) if exact else tag, timeout=timeout,
                                          device=table.device, stats=stats, buckets=_buckets)
        except BaseException:
            comm.close()
            if rows_pending is not None:
                _drain(rows_pending)
            raise
    t1 = time.perf_counter()
    recv_rows = None if rows_pending is None else rows_pending.result()
    recv_part = None if part_pending is None else part_pending.result()
    t2 = time.perf_counter()
    _add(stats, "local_s", t1 - t0)
    _add(stats, "exchange_s", t2 - t1)
    out = None
    if part:
        fields = [out_schema.field(n) for n in names + [n for n, _, _ in part]]
        out = _combine_partials(recv_part, names, part, pcols, pa.schema(fields))
    if exact:
        # both in key order when they are joined: the same groups, distinct in the sort's order
        # too (NaN ties NaN, -0.0 ties 0.0, nulls tie), so the rows line up
        whole = local_gb(recv_rows, names, {n: (c, op) for n, c, op in exact}, sort=out is not None)
        if out is None:
            out = whole
        else:
            from .ops.sort import sort as local_sort

            out = local_sort(out, names)
            if out.num_rows != whole.num_rows:  # pragma: no cover - both group the same rows
                raise AssertionError(f"groupby_agg: {out.num_rows} groups of partials, {whole.num_rows} of rows")
            cols = dict(out.items())
            cols.update((n, whole[n]) for n, _, _ in exact)
            out = Table([(n, cols[n]) for n in out_schema.names], out.num_rows)
    _add(stats, "local_s", time.perf_counter() - t2)
    # gpuframe.dask's partitions (``_buckets``): this rank's buckets' groups, one table each
    return out if _buckets is None else _split_owned(out, names, comm, _buckets, seed)


def _host_values(col: Any, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """A numeric column's values (nulls as 0) and its validity, as host numpy arrays."""
    arr = col.to_arrow() if hasattr(col, "to_arrow") else col
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], type=arr.type)
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    values = np.asarray(arr.fill_null(0).to_numpy(zero_copy_only=False), dtype=dtype)
    return values, valid


def _combine_partials(received: Table, names: list[str], specs: list[tuple[str, str, str]],
                      pcols: dict[tuple[str, str], str], out_schema: pa.Schema) -> Table:
    """The final aggregation of the partials this rank received (rank order kept)."""
    from .core.column import Column
    from .ops.groupby import groupby_agg as local_gb
    from .ops.setops import group_keys

    dev = received.device
    # never empty: mean, var and std have a count partial
    final = {f"{p}~": (p, _COMBINE[op]) for (_, op), p in pcols.items() if op in _COMBINE}
    # one group per key: the keys are those of each group's first partial, i.e. of its first row
    try:
        combined = local_gb(received, names, final)
    except OverflowError as exc:
        cols = sorted({c for _, c, op in specs if op == "sum"})
        raise OverflowError(f"groupby_agg: the sum of column(s) {cols} overflows int64 once the ranks' partial "
                            "sums are added; cast to float64 first") from exc
    ngroups = combined.num_rows
    moments: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if any(op in ("mean", "var", "std") for _, _, op in specs):
        gid, _ = group_keys(received, names)
        from .core import memory

        gid = np.asarray(memory.to_host(gid), dtype=np.int64)
    out: list[tuple[str, Any]] = [(n, combined[n]) for n in names]
    for name, col, op in specs:
        if op in _COMBINE:
            column = combined[f"{pcols[(col, op)]}~"]
        elif op == "mean":
            mean, ok = _weighted_mean(received, gid, ngroups, pcols[(col, "count")], pcols[(col, "mean")])
            column = Column.from_numpy(mean, pa.float64(), valid=None if ok.all() else ok).to(dev)
        else:
            if col not in moments:
                moments[col] = _chan(received, gid, ngroups, *(pcols[(col, p)] for p in ("count", "mean", "var")))
            var, ok = moments[col]
            vals = np.sqrt(var) if op == "std" else var
            column = Column.from_numpy(vals, pa.float64(), valid=None if ok.all() else ok).to(dev)
        out.append((name, column))
    result = Table(out, ngroups)
    if result.schema.types != out_schema.types:  # pragma: no cover - the partials keep every type
        raise AssertionError(f"groupby_agg: combined types {result.schema} differ from {out_schema}")
    return result


def _weighted_mean(received: Table, gid: np.ndarray, ngroups: int, count: str,
                   mean: str) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the mean of partials ``(n_i, mean_i)``: ``sum n_i mean_i / sum n_i`` (in float64,
    as the local mean sums: no integer overflow); and where it is defined (``n > 0``)."""
    c, _ = _host_values(received[count], np.int64)
    m, _ = _host_values(received[mean], np.float64)
    cf = c.astype(np.float64)
    n = np.bincount(gid, weights=cf, minlength=ngroups)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.bincount(gid, weights=np.where(c > 0, cf * m, 0.0), minlength=ngroups) / n
    ok = n > 0
    return np.where(ok, out, 0.0), ok


def _chan(received: Table, gid: np.ndarray, ngroups: int, count: str, mean: str,
          var: str) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the variance (ddof 1) of partials ``(n_i, mean_i, var_i)`` combined exactly
    (Chan, Golub and LeVeque): ``n = sum n_i``, ``mean = sum n_i mean_i / n``,
    ``M2 = sum (M2_i + n_i (mean_i - mean)^2)`` with ``M2_i = var_i (n_i - 1)``; and where it is
    defined (``n > 1``)."""
    c, _ = _host_values(received[count], np.int64)
    m, _ = _host_values(received[mean], np.float64)
    v, _ = _host_values(received[var], np.float64)
    has = c > 0
    cf = c.astype(np.float64)
    n = np.bincount(gid, weights=cf, minlength=ngroups)
    with np.errstate(invalid="ignore", divide="ignore"):
        gmean = np.bincount(gid, weights=np.where(has, cf * m, 0.0), minlength=ngroups) / n
        dev = np.where(has, m - gmean[gid], 0.0)
        m2_i = np.where(c > 1, v * (cf - 1.0), 0.0) + np.where(has, cf * dev * dev, 0.0)
        m2 = np.bincount(gid, weights=m2_i, minlength=ngroups)
        var_out = m2 / (n - 1.0)
    ok = n > 1
    return np.where(ok, var_out, 0.0), ok


# ------------------------------------------------------------------------------- sort
SAMPLES_PER_RANK = 32   # regular samples each rank contributes per rank of the communicator


def sort(table: Table, by: Any, *, comm: Communicator, descending: Any = False, nulls_last: bool = True,
         tag: Optional[int] = None, timeout: Optional[float] = None, stats: Optional[dict] = None,
         _ordered_tail: int = 0, _drop_tail: bool = False) -> Table:
    """Distributed :func:`gpuframe.sort` (sample sort): rank ``r``'s rows all precede rank
    ``r + 1``'s, so the ranks' results concatenated in rank order are :func:`gpuframe.sort` of
    the concatenated inputs, row for row (stable: rows with equal keys keep the global order,
    rank 0's rows first, then rank 1's, ...).

    How: each rank sorts its rows locally and takes regular samples of its sorted keys, each
    tagged with its rank and sorted position; the samples are gathered on every rank (tag
    ``tag``) and sorted by (keys, rank, position), and ``size - 1`` evenly spaced samples become
    the splitters. Every row is ranked against the splitters by the same total order (a binary
    search of the sorted rows for every splitter at once, each step sorting the pairs (splitter,
    middle row) with that order), so rows with equal keys are cut by their global position:
    duplicates spread over ranks and stability holds. The ranges are exchanged (tag
    ``tag + 1``), and the pieces each rank receives, one sorted run from every rank, merged
    locally (ties in rank order). Keys order as in :func:`gpuframe.sort`
    (NaN after every number, before them when descending; ``-0.0`` ties ``0.0``; nulls last
    unless ``nulls_last=False``; strings by UTF-8 bytes; dictionaries by their values).

    Parameters
    ----------
    table : Table
        This rank's rows (the same schema on every rank).
    by, descending, nulls_last
        As in :func:`gpuframe.sort`.
    comm : Communicator
        Connected; every rank calls ``sort`` together.
    tag, timeout
        As in :func:`shuffle` (the exchanges use ``tag`` and ``tag + 1``).
    stats : dict, optional
        Filled with ``local_s`` (the local sorts and cuts), ``exchange_s``, ``bytes_sent``,
        ``bytes_received``.

    Returns
    -------
    Table
        This rank's range of the sorted rows (ranks hold about equal shares).
    """
    from .core import memory
    from .core.buffer import Buffer
    from .core.column import Column
    from .ops.gather import take
    from .ops.select import concat
    from .ops.sort import _check_by, _check_descending, _merge_runs, sort_indices
    from .ops.sort import sort as local_sort

    table = _check_table(table, "table")
    comm = _check_comm(comm)
    sort_indices(table.slice(0, 0), by, descending=descending, nulls_last=nulls_last)   # every check
    names = _check_by(table, by)
    desc = _check_descending(descending, len(names)) + [False, False]
    rank_col = _fresh(table.column_names, "__gpuframe_rank")
    pos_col = _fresh(table.column_names + [rank_col], "__gpuframe_pos")
    size, dev = comm.size, table.device
    order = names + [rank_col, pos_col]

    def tagged(keys: Table, rank: int, pos: Any) -> Table:
        """``keys`` with their rank and sorted positions (``None``: all of them, made on the
        device): the global order's tie-breakers."""
        n = keys.num_rows
        if pos is None:
            pos = memory.cumsum_exclusive(memory.full(n, 1, np.int64, dev))[:n]
        else:
            pos = memory.to_device(pos, dev)
        return Table(list(keys.items()) + [
            (rank_col, Column(pa.int32(), n, Buffer(memory.full(n, rank, np.int32, dev), dev))),
            (pos_col, Column(pa.int64(), n, Buffer(pos, dev)))], n)

    t0 = time.perf_counter()

    # gpuframe.dask's tie-breakers: the last ``_ordered_tail`` keys (ascending, never null) are
    # ascending in the table's row order already, so the stable local sort by the others gives
    # the order by all of them, at the price of a one-key sort
    lead = len(names) - _ordered_tail
    if _drop_tail and not 0 < _ordered_tail <= len(names):
        raise ValueError("internal error: _drop_tail needs an ordered tail of keys")

    def local_sort_and_sample() -> tuple[Table, Table]:
        srt = local_sort(table, names[:lead], descending=desc[:lead], nulls_last=nulls_last) if lead else table
        n = srt.num_rows
        k = min(n, SAMPLES_PER_RANK * size)
        pos = ((2 * np.arange(k, dtype=np.int64) + 1) * n) // (2 * k) if k else np.zeros(0, np.int64)
        keys = take(srt.select(names), memory.to_device(pos, dev))
        return srt, tagged(keys, comm.rank, pos)

    srt, sample = _guarded(comm, local_sort_and_sample)
    t1 = time.perf_counter()
    samples = exchange_tables(comm, [[sample]] * size, schema=sample.schema, tag=tag, timeout=timeout,
                              device=dev, stats=stats)
    t2 = time.perf_counter()
    m = samples.num_rows
    # ``_drop_tail``: the tail keys (gpuframe.dask's partition numbers) are not returned
    body = [c for c in table.column_names if c not in names[lead:]] if _drop_tail else table.column_names
    if m == 0:   # no rows anywhere (every rank sees the same samples)
        _add(stats, "local_s", t1 - t0)
        _add(stats, "exchange_s", t2 - t1)
        return srt.select(body)

    def cuts() -> list[int]:
        # every rank picks the same splitters from the same samples
        perm = sort_indices(samples, order, descending=desc, nulls_last=nulls_last)
        picks = np.array([(j + 1) * m // size for j in range(size - 1)], np.int64)
        splitters = take(samples, take_rows(perm, picks))
        n = srt.num_rows
        if n == 0 or size == 1:
            return [0] * (size - 1)
        return _rows_before(srt.select(names), splitters, order, desc, nulls_last,
                            lambda t, pos: tagged(t, comm.rank, pos))

    def take_rows(perm: Any, picks: np.ndarray) -> Any:
        host = np.asarray(memory.to_host(perm))
        return memory.to_device(host[picks], dev)

    def checked_cuts() -> list[int]:
        bounds = [0] + cuts() + [srt.num_rows]
        if any(b > c for b, c in zip(bounds, bounds[1:])):
            # a slice of negative length would drop rows silently: fail loudly (and the peers at once)
            raise RuntimeError(f"gpuframe.distributed.sort: internal error on rank {comm.rank}: the splitters cut "
                               f"its {srt.num_rows} sorted rows at non-increasing positions {bounds}; please report it")
        return bounds

    bounds = _guarded(comm, checked_cuts)
    outgoing = [[srt.slice(bounds[d], bounds[d + 1] - bounds[d])] for d in range(size)]
    t3 = time.perf_counter()
    pending = start_exchange(comm, outgoing, schema=table.schema, tag=_tag(tag, 1), timeout=timeout, device=dev,
                             stats=stats)
    received = pending.result()
    t4 = time.perf_counter()
    # each rank's piece is a sorted run (and rank order breaks ties): merged, not sorted again
    out = _merge_runs(received, names, np.cumsum([0] + pending.rows_from).tolist(), descending=desc[:-2],
                      nulls_last=nulls_last, columns=body)
    _add(stats, "local_s", (t1 - t0) + (t3 - t2) + (time.perf_counter() - t4))
    _add(stats, "exchange_s", (t2 - t1) + (t4 - t3))
    return out


def split_ordered(table: Table, *, comm: Communicator, buckets: int, tag: Optional[int] = None,
                  timeout: Optional[float] = None, stats: Optional[dict] = None) -> list[Table]:
    """Cut rows that lie across the ranks in a global order (rank 0's rows, then rank 1's, ...;
    e.g. :func:`sort`'s result) into ``buckets`` partitions of equal size (sizes differ by at most
    one row), each assembled on the rank that owns it (:func:`owned_buckets`).

    Partition ``b`` is rows ``[b * n // buckets, (b + 1) * n // buckets)`` of the ``n`` rows in
    that order: what a partition holds depends on the rows and their order only, not on how
    many each rank had, so two runs over differently spread inputs agree partition for
    partition (gpuframe.dask relies on it: Dask may compute one partition of a collection in one
    run and another in the next). The ranks all-to-all their row counts (tag ``tag``), then
    only the rows on the wrong side of a cut move (tag ``tag + 1``); nothing moves when every
    rank holds its partitions already.

    Parameters
    ----------
    table : Table
        This rank's rows (the same schema on every rank).
    comm : Communicator
        Connected; every rank calls ``split_ordered`` together.
    buckets : int
        The number of partitions (>= 1); a rank may own none when ``buckets < comm.size``.
    tag, timeout
        As in :func:`shuffle`.
    stats : dict, optional
        ``bytes_sent``, ``bytes_received``, ``exchange_s`` are added to it.

    Returns
    -------
    list of Table
        This rank's partitions in order (``owned_buckets(rank, size, buckets)``), possibly none.
    """
    from .comm import ProtocolError

    table = _check_table(table, "table")
    comm = _check_comm(comm)
    if isinstance(buckets, (bool, np.bool_)) or not isinstance(buckets, (int, np.integer)) or buckets < 1:
        raise ValueError(f"buckets must be an int >= 1, got {buckets!r}")
    buckets = int(buckets)
    size, rank = comm.size, comm.rank
    t0 = time.perf_counter()
    counts = comm.all_to_all([({"rows": table.num_rows}, [])] * size, tag=tag, timeout=timeout)
    sizes = []
    for peer, (header, _frames) in enumerate(counts):
        rows = header.get("rows") if isinstance(header, dict) else None
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise ProtocolError(f"a malformed row count in a distributed split: expected an int >= 0, got {rows!r}",
                                peer=peer)
        sizes.append(rows)
    total = sum(sizes)
    starts = np.cumsum([0] + sizes).tolist()           # global position of each rank's first row
    cut = [b * total // buckets for b in range(buckets + 1)]
    wanted = []                                        # the global rows each rank must end with
    for d in range(size):
        lo, hi = owned_buckets(d, size, buckets)
        wanted.append((cut[lo], cut[hi]) if hi > lo else (0, 0))

    def rows_for(src: int, dst: int) -> tuple[int, int]:
        a, b = max(starts[src], wanted[dst][0]), min(starts[src + 1], wanted[dst][1])
        return (a - starts[src], b - a) if b > a else (0, 0)

    moves = any(rows_for(src, dst)[1] for src in range(size) for dst in range(size) if src != dst)
    if moves:      # every rank sees the same counts, so all of them exchange or none does
        outgoing = [[table.slice(*rows_for(rank, d))] for d in range(size)]
        mine = exchange_tables(comm, outgoing, schema=table.schema, tag=_tag(tag, 1), timeout=timeout,
                               device=table.device, stats=stats)
    else:
        mine = table.slice(*rows_for(rank, rank))
    _add(stats, "exchange_s", time.perf_counter() - t0)
    lo, hi = owned_buckets(rank, size, buckets)
    first = cut[lo] if hi > lo else 0
    return [mine.slice(cut[b] - first, cut[b + 1] - cut[b]) for b in range(lo, hi)]


def _rows_before(keys: Table, splitters: Table, order: list[str], desc: list[bool], nulls_last: bool,
                 tagged: Any) -> list[int]:
    """For each splitter, how many of this rank's sorted rows (``keys``; ``tagged(rows,
    positions)`` adds this rank's number and the positions) sort before it in ``order``; a row
    equal to a splitter (the sampled row itself) sorts after it. A binary search for every
    splitter at once: each step sorts, per splitter, the pair (splitter, the row in the middle of
    its range), with a pair number as the first key, so a step costs one sort of
    ``2 * splitters`` rows whatever the rank's size."""
    from .core import memory
    from .core.buffer import Buffer
    from .core.column import Column
    from .ops.gather import take
    from .ops.select import concat
    from .ops.sort import sort_indices

    k, n, dev = splitters.num_rows, keys.num_rows, keys.device
    pair = _fresh(order, "__gpuframe_pair")
    lo = np.zeros(k, np.int64)
    hi = np.full(k, n, np.int64)

    def numbered(t: Table) -> Table:
        m = t.num_rows
        col = Column(pa.int64(), m, Buffer(memory.to_device(np.arange(m, dtype=np.int64), dev), dev))
        return Table([(pair, col)] + list(t.items()), m)

    while True:
        active = np.flatnonzero(lo < hi)
        if not len(active):
            return lo.tolist()
        mid = (lo[active] + hi[active]) // 2
        a = len(active)
        rows = tagged(take(keys, memory.to_device(mid, dev)), mid)   # with this rank's number and positions
        spl = take(splitters, memory.to_device(active, dev))
        both = concat([numbered(spl), numbered(rows)])
        perm = np.asarray(memory.to_host(sort_indices(both, [pair] + order, descending=[False] + desc,
                                                      nulls_last=nulls_last)), dtype=np.int64)
        row_first = perm[0::2] >= a          # in pair p, the row sorts before the splitter
        lo[active[row_first]] = mid[row_first] + 1
        hi[active[~row_first]] = mid[~row_first]


# ------------------------------------------------------------------------------- cross
def _cross_merge(left: Table, right: Table, comm: Communicator, *, on: Any, left_on: Any, right_on: Any,
                 suffixes: Any, tag: Optional[int], timeout: Optional[float], stats: Optional[dict]) -> Table:
    """``merge(how="cross")``: the smaller side (by its total rows) gathered on every rank, crossed
    with this rank's rows of the other side. Gathering the right side keeps the global
    left-major order: the ranks' results concatenated are the local cross product's rows in order."""
    from .ops.join import merge as local_merge

    check_merge(left.schema, right.schema, on=on, left_on=left_on, right_on=right_on, how="cross",
                suffixes=suffixes)
    t0 = time.perf_counter()
    counts = comm.all_to_all([({"rows": [left.num_rows, right.num_rows]}, [])] * comm.size, tag=tag,
                             timeout=timeout)
    total_left = sum(int(h["rows"][0]) for h, _ in counts)
    total_right = sum(int(h["rows"][1]) for h, _ in counts)
    if total_right <= total_left:
        everything = exchange_tables(comm, [[right]] * comm.size, schema=right.schema, tag=_tag(tag, 1),
                                     timeout=timeout, device=left.device, stats=stats)
        pair = (left, everything)
    else:
        everything = exchange_tables(comm, [[left]] * comm.size, schema=left.schema, tag=_tag(tag, 1),
                                     timeout=timeout, device=left.device, stats=stats)
        pair = (everything, right)
    t1 = time.perf_counter()
    _add(stats, "exchange_s", t1 - t0)
    out = local_merge(*pair, how="cross", suffixes=suffixes)
    _add(stats, "merge_s", time.perf_counter() - t1)
    return out
