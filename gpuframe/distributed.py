"""Distributed shuffle and merge for programs that hold one gpuframe Table per rank.

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

*Buckets*: the functions ending in ``_pieces`` (used by :mod:`gpuframe.dask`) take several
local tables and can cut the key space into more buckets than ranks: bucket ``b`` (rows with
``partition_of(hash, buckets) == b``) lives on rank ``b * size // buckets``
(:func:`owned_buckets`), and they return one table per owned bucket.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Optional, Sequence

import pyarrow as pa

from .comm import Communicator, exchange_tables
from .comm.exchange import start_exchange
from .core.table import Table

__all__ = ["shuffle", "merge", "route", "owned_buckets", "shuffle_pieces", "merge_pieces"]


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
        for p, (lo, hi) in enumerate(bounds):
            start, stop = int(offsets[lo]), int(offsets[hi])
            if stop > start:
                out[p].append(parted.slice(start, stop - start))
    return out


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
                   stats: Optional[dict] = None) -> list[Table]:
    """Shuffle several local tables at once; one result table per bucket this rank owns.

    See :func:`shuffle`; ``schema`` is the schema of every table (needed when a rank holds none).
    """
    comm = _check_comm(comm)
    nb = _check_buckets(buckets, comm.size)
    keys = _key_list(schema, on, "on")
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
            timeout: Optional[float] = None, stats: Optional[dict] = None) -> Table:
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
        Filled with ``partition_s``, ``exchange_s``, ``bytes_sent``, ``bytes_received``.

    Returns
    -------
    Table
        Every rank's rows with ``partition_of(hash_rows(key), comm.size) == comm.rank``, on this
        rank's device (rank 0's rows first, then rank 1's, ...).

    Raises
    ------
    gpuframe.comm.CommError
        A peer failed or timed out (the error names it); the communicator is closed afterwards.
    """
    table = _check_table(table, "table")
    (out,) = shuffle_pieces([table], on, comm, schema=table.schema, seed=seed, tag=tag, timeout=timeout,
                            device=table.device, stats=stats)
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


def merge_pieces(left: Sequence[Table], right: Sequence[Table], comm: Communicator, *,
                 left_schema: pa.Schema, right_schema: pa.Schema, on: Any = None, left_on: Any = None,
                 right_on: Any = None, how: str = "inner", suffixes: tuple[str, str] = ("_x", "_y"),
                 nulls_equal: bool = False, buckets: Optional[int] = None, seed: int = 0,
                 tag: Optional[int] = None, timeout: Optional[float] = None, device: Any = None,
                 stats: Optional[dict] = None) -> list[Table]:
    """Merge several local tables of each side; one result per bucket this rank owns.

    See :func:`merge`. The exchanges use ``tag`` and ``tag + 1``.
    """
    from .ops.join import merge as local_merge

    comm = _check_comm(comm)
    nb = _check_buckets(buckets, comm.size)
    kw = _merge_kwargs(on, left_on, right_on, how, suffixes, nulls_equal)
    check_merge(left_schema, right_schema, **kw)
    lkeys, rkeys = merge_keys(left_schema, right_schema, on, left_on, right_on)
    lplan, rplan = hash_plan(left_schema, right_schema, lkeys, rkeys)
    t0 = time.perf_counter()
    lview, lhash = _with_hash_keys(left, lkeys, lplan, "l")
    rview, rhash = _with_hash_keys(right, rkeys, rplan, "r")
    lout = route(lview, lhash, comm.size, buckets=nb, seed=seed, keep=left_schema.names if lplan else None)
    t1 = time.perf_counter()
    tag2 = None if tag is None else tag + 1
    # The left side travels while this thread partitions the right side.
    lpending = start_exchange(comm, lout, schema=left_schema, tag=tag, timeout=timeout, device=device,
                              stats=stats)
    try:
        rout = route(rview, rhash, comm.size, buckets=nb, seed=seed, keep=right_schema.names if rplan else None)
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
          timeout: Optional[float] = None, stats: Optional[dict] = None) -> Table:
    """Distributed :func:`gpuframe.merge`: shuffle both sides by their keys, then join locally.

    Parameters
    ----------
    left, right : Table
        This rank's rows of each side (the same schemas on every rank).
    on, left_on, right_on, how, suffixes, nulls_equal
        As in :func:`gpuframe.merge`.
    comm : Communicator
        Connected; every rank calls ``merge`` together.
    seed, tag, timeout
        As in :func:`shuffle` (the exchanges use ``tag`` and ``tag + 1``).
    stats : dict, optional
        Filled with ``partition_s``, ``exchange_s``, ``merge_s``, ``bytes_sent``, ``bytes_received``.

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
    (out,) = merge_pieces([left], [right], comm, left_schema=left.schema, right_schema=right.schema, on=on,
                          left_on=left_on, right_on=right_on, how=how, suffixes=suffixes,
                          nulls_equal=nulls_equal, seed=seed, tag=tag, timeout=timeout, device=left.device,
                          stats=stats)
    return out
