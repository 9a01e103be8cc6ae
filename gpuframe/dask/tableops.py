"""Table operations on Dask DataFrames: unique, union, intersect, difference, groupby_agg, sort
and the cross product, on the per-rank functions of :mod:`gpuframe.distributed`.

They run as :func:`gpuframe.dask.merge` does (see :mod:`gpuframe.dask.core` and
:mod:`gpuframe.dask._lazy`): the arguments are checked on the collections' ``_meta`` (with
gpuframe's own local functions on empty tables, so the rules and messages are the local ones)
before anything is built; the result is a lazy collection, of the input's partition type, with
a default index and unknown divisions. When it runs, one task per worker, pinned to it,
concatenates the partitions staged there into one Table per input and calls the
``gpuframe.distributed`` function over the workers' communicator.

Order. ``gpuframe.distributed`` answers as the local function does on the ranks' tables
concatenated in *rank* order, but a Dask DataFrame's order is its *partition* order, and a
worker's partitions are not a contiguous range of it. Where the order shows in the answer
(``sort``'s ties, ``first``/``last`` aggregations), every row is tagged with its partition
number: ``sort`` breaks ties by that hidden column (a partition lies on one worker, where the
distributed sort keeps its rows in order; so it is stable in partition order, as
:func:`gpuframe.sort` is on the concatenated partitions), and a ``groupby_agg`` with ``first``
or ``last`` first sample-sorts the rows by it, so that rank order is partition order. The
hidden column never leaves the tasks, and is not made at all when the partitions lie on the
workers in order (each worker a contiguous range of them, the workers in rank order): rank
order is partition order then.

Output partitions: one per worker (workers sorted by address, rank order), except
``merge(how="cross", npartitions=n)``. For ``sort``, partition ``r`` holds the ``r``-th range of
the sorted rows: the partitions in order are the sorted table.
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa

from gpuframe.comm.wire import schema_from_bytes, schema_to_bytes

from . import _convert, _lazy
from .core import _check_ddf, _check_seed, _device, _params

__all__ = ["unique", "union", "intersect", "difference", "groupby_agg", "sort"]

_PART = "__gpuframe_dask_part"
_ORDERED_OPS = ("first", "last")       # groupby ops whose answer depends on the row order
_NEVER_NULL = ("count", "size", "nunique")


# ----------------------------------------------------------------------------- worker side
def _hidden(name: str, taken: Sequence[str]) -> str:
    while name in taken:
        name += "_"
    return name


def _tag_rows(table: Any, part: int, names: tuple[str]) -> Any:
    """``table`` with its partition number as one more column (int32)."""
    from gpuframe.core.column import Column

    n = table.num_rows
    pcol = Column.from_numpy(np.full(n, part, dtype=np.int32), pa.int32()).to(table.device)
    return table.with_column(names[0], pcol)


def _in_rank_order(placement: Sequence[tuple[int, int]]) -> bool:
    """Whether the partitions that hold rows lie on the ranks in partition order (each rank's
    a contiguous range of them, the ranks in order): then the ranks' rows concatenated in rank
    order are the collection's rows in order, and nothing needs the hidden columns.
    ``placement[i]``: partition ``i``'s (rank, rows), the same on every rank."""
    ranks = [r for r, rows in placement if rows]
    return all(a <= b for a, b in zip(ranks, ranks[1:]))


def _one_table(tables: list[Any], schema: pa.Schema, device: Any) -> Any:
    """The worker's partitions of one input as one Table (an empty one when it holds none)."""
    from gpuframe.interop.arrow import from_arrow
    from gpuframe.ops.select import concat

    tables = [t for t in tables if t.num_rows] or tables[:1]
    if not tables:
        return from_arrow(schema.empty_table(), device)
    return tables[0] if len(tables) == 1 else concat(tables)


def _ops_body(comm: Any, tag: int, spec: dict, sides: Sequence[Sequence[Any]], layout: dict) -> dict:
    import gpuframe.distributed as gd

    stats: dict = {"rank": comm.rank, "rows_in": sum(len(p) for side in sides for p in side)}
    kind, op, args = spec["kind"], spec["op"], spec["args"]
    schemas = [schema_from_bytes(s) for s in spec["schemas"]]
    hidden = spec.get("hidden")
    if hidden and _in_rank_order(layout["placement"][0]):
        hidden = None     # rank order is partition order already: no tie-breakers to carry
    stats["order_columns"] = bool(hidden)
    t0 = time.perf_counter()
    tables = [[_convert.to_table(p, kind, schema) for p in side] for side, schema in zip(sides, schemas)]
    device = _device([t for side in tables for t in side], kind)
    if hidden:   # the left side's rows tagged with their place in the collection
        tables[0] = [_tag_rows(t, i, hidden) for t, i in zip(tables[0], layout["index"])]
        schemas[0] = schemas[0].append(pa.field(hidden[0], pa.int32()))
    stats["convert_s"] = time.perf_counter() - t0
    common = {"comm": comm, "tag": tag, "timeout": spec["timeout"], "stats": stats}
    if op == "cross" or (op == "union" and not args["distinct"]):
        # whole partitions to the worker of their output partition: what each output partition
        # holds depends on the inputs alone, not on where Dask put them
        pieces = _by_blocks(op, comm, tag, tables, schemas, device, layout, spec, stats)
        return _parts(pieces, kind, spec["meta"], stats)
    ones = [_one_table(ts, schema, device) for ts, schema in zip(tables, schemas)]
    # the hash-placed operations hash rows to the output partitions (buckets), not to the
    # workers: a partition holds the same rows whatever the number of workers of the run
    buckets = layout["buckets"]
    if op == "unique":
        pieces = gd.unique(ones[0], args["subset"], keep="any", seed=spec["seed"], _buckets=buckets, **common)
    elif op == "union":
        pieces = gd.union(ones[0], ones[1], distinct=True, seed=spec["seed"], _buckets=buckets, **common)
    elif op in ("intersect", "difference"):
        pieces = getattr(gd, op)(ones[0], ones[1], seed=spec["seed"], _buckets=buckets, **common)
    elif op == "groupby_agg":
        table = ones[0]
        if hidden:   # rank order made partition order: first/last then follow the collection's order
            used = list(dict.fromkeys(list(args["by"]) + [c for c, _op in args["aggs"].values()]))
            table = gd.sort(table.select(used + list(hidden)), list(hidden), _ordered_tail=1, _drop_tail=True,
                            **common)
            common["tag"] = tag + 2
        pieces = gd.groupby_agg(table, args["by"], args["aggs"], dropna=args["dropna"], seed=spec["seed"],
                                _buckets=buckets, **common)
    elif op == "sort":
        by = list(args["by"]) + (list(hidden) if hidden else [])
        desc = args["descending"]
        if hidden:
            desc = (list(desc) if isinstance(desc, (list, tuple)) else [bool(desc)] * len(args["by"])) + [False]
        # a worker's partitions are concatenated in partition order: the hidden partition
        # column ascends along its rows, and its local sort can leave it out (within a
        # partition, all on one worker, the sort's own tie-breakers keep the row order)
        out = gd.sort(ones[0], by, descending=desc, nulls_last=args["nulls_last"],
                      _ordered_tail=1 if hidden else 0, _drop_tail=bool(hidden), **common)
        # partitions of exactly even sizes: each a function of the input rows alone (whatever the
        # placement), so partitions of two runs always fit together
        common["tag"] = tag + 2
        pieces = gd.split_ordered(out, buckets=buckets, **common)
    else:  # pragma: no cover - the client side names only the ops above
        raise ValueError(f"internal error: unknown gpuframe.dask operation {op!r}")
    return _parts(pieces, kind, spec["meta"], stats)


def _parts(pieces: list[Any], kind: str, meta: Any, stats: dict) -> dict:
    """The body's answer: this worker's output partitions as the collection's partition type."""
    t0 = time.perf_counter()
    parts = [_convert.from_table(t, kind, meta) for t in pieces]
    stats["convert_s"] = stats.get("convert_s", 0.0) + time.perf_counter() - t0
    stats["rows_out"] = sum(t.num_rows for t in pieces)
    return {"parts": parts, "stats": stats}


def _move_partitions(comm: Any, tag: int, tables: Sequence[Any], placement: Sequence[tuple[int, int]],
                     dest: Any, schema: pa.Schema, device: Any, timeout: Optional[float], stats: dict) -> dict:
    """Whole input partitions of one side sent to the ranks ``dest(i)`` names for partition ``i``.

    ``placement[i]`` is partition ``i``'s (rank, rows) on every rank (the stage tokens), so each
    rank knows what arrives from whom and cuts the received rows back into partitions. Returns
    the partitions this rank gets, by index (its own without a copy).
    """
    from gpuframe.comm import ProtocolError, exchange_tables

    size, rank = comm.size, comm.rank
    mine = [i for i, (r, _rows) in enumerate(placement) if r == rank]     # the order ``tables`` are in
    outgoing: list[list[Any]] = [[] for _ in range(size)]
    got = {}
    for i, t in zip(mine, tables):
        for d in dest(i):
            if d == rank:
                got[i] = t
            else:
                outgoing[d].append(t)
    received = exchange_tables(comm, outgoing, schema=schema, tag=tag, timeout=timeout, device=device, stats=stats)
    arriving = [i for src in range(size) if src != rank
                for i, (r, _rows) in enumerate(placement) if r == src and rank in dest(i)]
    expected = sum(placement[i][1] for i in arriving)
    if received.num_rows != expected:
        raise ProtocolError(f"gpuframe.dask: expected {expected} rows of whole partitions from the peers, "
                            f"got {received.num_rows}")
    at = 0
    for i in arriving:
        got[i] = received.slice(at, placement[i][1])
        at += placement[i][1]
    return got


def _by_blocks(op: str, comm: Any, tag: int, tables: list, schemas: list, device: Any, layout: dict, spec: dict,
               stats: dict) -> list[Any]:
    """``union(distinct=False)`` and the cross merge by whole partitions: output partition ``b``
    of ``B`` is made from input partitions in a contiguous block (``i * B // count == b``) in
    order, so it holds the same rows in every run whatever the placement (Dask may compute one
    output partition in one run and another in the next).

    union: partition ``b`` is its block of the left partitions, then of the right ones (the
    left's partitions come first), united. cross: the side with fewer rows in all is gathered on
    every worker that owns an output partition, in partition order; the other side's block is
    crossed with it (left-major, as the local cross merge).
    """
    from gpuframe.distributed import owned_buckets
    from gpuframe.ops.join import merge as local_merge
    from gpuframe.ops.setops import union as local_union

    size, rank, buckets, placement = comm.size, comm.rank, layout["buckets"], layout["placement"]
    timeout = spec["timeout"]
    lo, hi = owned_buckets(rank, size, buckets)
    owners = sorted({b * size // buckets for b in range(buckets)})      # the ranks that own an output partition
    t0 = time.perf_counter()

    def block(count: int, offset: int = 0) -> Any:
        return lambda i: (offset + i) * buckets // count

    def ordered(got: dict, bucket_of: Any, b: Optional[int], side: int) -> Any:
        return _one_table([got[i] for i in sorted(got) if b is None or bucket_of(i) == b], schemas[side], device)

    if op == "union":
        count = len(placement[0]) + len(placement[1])
        of = [block(count), block(count, len(placement[0]))]
        got = [_move_partitions(comm, tag + side, tables[side], placement[side],
                                lambda i, f=of[side]: [f(i) * size // buckets], schemas[side], device, timeout, stats)
               for side in (0, 1)]
        t1 = time.perf_counter()
        pieces = [local_union(ordered(got[0], of[0], b, 0), ordered(got[1], of[1], b, 1), distinct=False)
                  for b in range(lo, hi)]
        stats["exchange_s"] = t1 - t0
        stats["local_s"] = time.perf_counter() - t1
        return pieces
    totals = [sum(rows for _r, rows in side) for side in placement]
    big = 0 if totals[1] <= totals[0] else 1          # as gpuframe.distributed's cross merge chooses
    small = 1 - big
    of = block(len(placement[big]))
    got_big = _move_partitions(comm, tag, tables[big], placement[big], lambda i: [of(i) * size // buckets],
                               schemas[big], device, timeout, stats)
    got_small = _move_partitions(comm, tag + 1, tables[small], placement[small], lambda i: owners, schemas[small],
                                 device, timeout, stats)
    t1 = time.perf_counter()
    everything = ordered(got_small, None, None, small)

    def crossed(part: Any) -> Any:
        pair = (part, everything) if big == 0 else (everything, part)
        return local_merge(*pair, how="cross", suffixes=spec["args"]["suffixes"])

    pieces = [crossed(ordered(got_big, of, b, big)) for b in range(lo, hi)]
    stats["exchange_s"] = t1 - t0
    stats["merge_s"] = time.perf_counter() - t1
    return pieces


# ----------------------------------------------------------------------------- client side
def _empty(schema: pa.Schema) -> Any:
    from gpuframe.interop.arrow import from_arrow

    return from_arrow(schema.empty_table())


def _pair(left: Any, right: Any) -> tuple[str, pa.Schema, pa.Schema]:
    lkind = _check_ddf(left, "left")
    rkind = _check_ddf(right, "right")
    if lkind != rkind:
        raise TypeError(f"left and right must have the same partition type, got {lkind} and {rkind}")
    return lkind, _convert.schema_of(left._meta, lkind), _convert.schema_of(right._meta, rkind)


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def _nullable(meta: Any, columns: Sequence[str]) -> Any:
    """``meta`` with the integer and bool ``columns`` made pandas nullable (``Int64``, ``boolean``)."""
    if not columns or _convert.frame_kind(meta) != _convert.PANDAS:
        return meta
    fix = {c: _convert._masked_of(meta.dtypes[c]) for c in columns}
    fix = {c: d for c, d in fix.items() if d != meta.dtypes[c]}
    return meta.astype(fix) if fix else meta


def _masked_in(meta: Any) -> list[str]:
    return [c for c in meta.columns if _convert._is_masked(meta.dtypes[c])]


def _same_type_meta(out_schema: pa.Schema, kind: str, source: Any, also_null: Sequence[str] = ()) -> Any:
    """Output meta of ``out_schema``: ``source``'s dtypes for its columns whose Arrow type is kept,
    the output conversion's otherwise; integer and bool columns made pandas nullable where
    ``source``'s are, and for ``also_null``."""
    meta = _convert.empty_frame(out_schema, kind)
    if kind != _convert.PANDAS:
        return meta
    src = _convert.schema_of(source, kind)
    keep = {c: source.dtypes[c] for c in meta.columns
            if c in src.names and src.field(c).type == out_schema.field(c).type}
    meta = meta.astype(keep) if keep else meta
    return _nullable(meta, [c for c in list(also_null) + _masked_in(source) if c in meta.columns])


def _launch(what: str, frames: list[Any], args: dict, *, client: Any, backend: Optional[str], seed: int,
            timeout: Optional[float], stats: Optional[dict], npartitions: Optional[int] = None) -> Any:
    """The lazy collection of table operation ``what`` (its arguments checked already)."""
    params = _params(client, npartitions, backend, timeout, args=args, seed=seed)
    return _lazy.collection(what, frames, params, stats, client)


def _plan(what: str) -> Any:
    def plan(metas: list[Any], params: dict) -> tuple[dict, Any]:
        meta, hidden = _PLANNERS[what](metas, params["args"])
        kind = _convert.frame_kind(metas[0])
        schemas = [_convert.schema_of(m, kind) for m in metas]
        spec = {"kind": kind, "op": what, "args": params["args"], "seed": params["seed"],
                "timeout": params["timeout"], "meta": meta, "schemas": [schema_to_bytes(s) for s in schemas],
                "hidden": hidden}
        return spec, meta
    return plan


def _meta_unique(metas: list[Any], args: dict) -> tuple[Any, None]:
    return _convert.shuffle_meta(metas[0]), None


def _meta_setop(what: str) -> Any:
    def meta_of(metas: list[Any], args: dict) -> tuple[Any, None]:
        from gpuframe.ops import setops

        kind = _convert.frame_kind(metas[0])
        lschema, rschema = (_convert.schema_of(m, kind) for m in metas)
        out_schema = getattr(setops, what)(_empty(lschema), _empty(rschema), **args).schema
        if what == "union":   # right's values land in the left's columns: nullable where either side is
            return _same_type_meta(out_schema, kind, metas[0], _masked_in(metas[1]) + _masked_in(metas[0])), None
        return _same_type_meta(out_schema, kind, metas[0]), None
    return meta_of


def _meta_groupby(metas: list[Any], args: dict) -> tuple[Any, Optional[tuple[str]]]:
    from gpuframe.ops.groupby import groupby_agg as local_gb

    kind = _convert.frame_kind(metas[0])
    schema = _convert.schema_of(metas[0], kind)
    out_schema = local_gb(_empty(schema), args["by"], args["aggs"], dropna=args["dropna"]).schema
    # the keys keep their dtypes; integer and bool aggregates that can be null are nullable
    meta = _same_type_meta(out_schema, kind, metas[0][list(args["by"])],
                           [out for out, (_c, op) in args["aggs"].items() if op not in _NEVER_NULL])
    hidden = None
    if any(op in _ORDERED_OPS for _c, op in args["aggs"].values()):
        hidden = (_hidden(_PART, schema.names),)
    return meta, hidden


def _meta_sort(metas: list[Any], args: dict) -> tuple[Any, tuple[str]]:
    names = list(metas[0].columns)
    return _convert.shuffle_meta(metas[0]), (_hidden(_PART, names),)


def _meta_cross(metas: list[Any], args: dict) -> tuple[Any, None]:
    from gpuframe.distributed import check_merge

    kind = _convert.frame_kind(metas[0])
    lschema, rschema = (_convert.schema_of(m, kind) for m in metas)
    out_schema = check_merge(lschema, rschema, how="cross", suffixes=args["suffixes"])
    return _convert.merge_meta(out_schema, kind, metas[0], metas[1], "inner", args["suffixes"]), None


_PLANNERS = {"unique": _meta_unique, "union": _meta_setop("union"), "intersect": _meta_setop("intersect"),
             "difference": _meta_setop("difference"), "groupby_agg": _meta_groupby, "sort": _meta_sort,
             "cross": _meta_cross}


def _project_unique(expr: Any, columns: list[Any]) -> Optional[list[list[Any]]]:
    args = expr.operand("params")["args"]
    if not args["explicit"]:
        return None     # every column makes rows equal: none can go
    return [list(args["subset"]) + list(columns)]


def _project_union(expr: Any, columns: list[Any]) -> Optional[list[list[Any]]]:
    if expr.operand("params")["args"]["distinct"]:
        return None     # every column makes rows equal
    return [list(columns), list(columns)]


def _project_groupby(expr: Any, columns: list[Any]) -> Optional[tuple[list[list[Any]], dict]]:
    params = expr.operand("params")
    args = params["args"]
    kept = {out: agg for out, agg in args["aggs"].items() if out in columns}
    if not kept:        # only keys selected: one aggregation still makes the groups
        first = next(iter(args["aggs"]))
        kept = {first: args["aggs"][first]}
    if len(kept) == len(args["aggs"]):
        return None
    new = dict(params, args=dict(args, aggs=kept))
    return [list(args["by"]) + [c for c, _op in kept.values()]], new


def _project_sort(expr: Any, columns: list[Any]) -> list[list[Any]]:
    return [list(expr.operand("params")["args"]["by"]) + list(columns)]


def _project_cross(expr: Any, columns: list[Any]) -> Optional[list[list[Any]]]:
    from .core import project_join

    needs = project_join(expr, columns, [], [], expr.operand("params")["args"]["suffixes"])
    left, right = (f._meta for f in expr._frames)
    small, _ = _meta_cross([left[needs[0]], right[needs[1]]], expr.operand("params")["args"])
    return needs if set(columns) <= set(small.columns) else None


for _what, _project in (("unique", _project_unique), ("union", _project_union), ("intersect", None),
                        ("difference", None), ("groupby_agg", _project_groupby), ("sort", _project_sort),
                        ("cross", _project_cross)):
    _lazy.register(_what, _ops_body, _plan(_what), _project)


# ----------------------------------------------------------------------------- operations
def unique(ddf: Any, subset: Any = None, *, client: Any = None, backend: Optional[str] = None, seed: int = 0,
           timeout: Optional[float] = None, stats: Optional[dict] = None) -> Any:
    """One row per distinct value of the ``subset`` columns, across the workers.

    :func:`gpuframe.unique` with ``keep="any"``: the rows are shuffled by ``subset`` between the
    workers, and each keeps one row per distinct value of the rows it received.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
        Partitions are pandas (CPU) or cuDF (GPU) DataFrames.
    subset : str or list of str, optional
        The columns that make rows equal (default: every column).
    client, backend, seed, timeout, stats
        As in :func:`gpuframe.dask.shuffle` (``stats`` also gets ``local_s``).

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy, one partition per worker, default index, the
        input's columns and dtypes. Its rows are those of ``gpuframe.unique(t, subset)`` for
        ``t`` the concatenated partitions, up to which row of each group is kept and the order.

    Raises
    ------
    KeyError, TypeError, ValueError
        Bad arguments (checked on ``ddf._meta`` before anything runs on the cluster).
    gpuframe.comm.CommError
        A worker failed, left or timed out.
    """
    from gpuframe.ops.setops import _subset, unique as local_unique

    kind = _check_ddf(ddf, "ddf")
    schema = _convert.schema_of(ddf._meta, kind)
    empty = _empty(schema)
    local_unique(empty, subset)                       # gpuframe's own checks of subset
    names = _subset(empty, subset)
    seed = _check_seed(seed)
    return _launch("unique", [ddf], {"subset": names, "explicit": subset is not None}, client=client,
                   backend=backend, seed=seed, timeout=timeout, stats=stats)


def _setop(what: str, left: Any, right: Any, args: dict, client: Any, backend: Optional[str], seed: int,
           timeout: Optional[float], stats: Optional[dict]) -> Any:
    from gpuframe.ops import setops

    kind, lschema, rschema = _pair(left, right)
    getattr(setops, what)(_empty(lschema), _empty(rschema), **args)    # names, types: gpuframe's checks
    seed = _check_seed(seed)
    return _launch(what, [left, right], args, client=client, backend=backend, seed=seed, timeout=timeout,
                   stats=stats)


def union(left: Any, right: Any, *, distinct: bool = True, client: Any = None, backend: Optional[str] = None,
          seed: int = 0, timeout: Optional[float] = None, stats: Optional[dict] = None) -> Any:
    """The rows of both DataFrames (SQL ``UNION`` or, with ``distinct=False``, ``UNION ALL``).

    :func:`gpuframe.union` semantics: columns matched by name (the left's order), types promoted.
    ``distinct=True`` shuffles both sides by every column; ``distinct=False`` moves nothing
    (each worker's output partition holds the rows it had of both sides).

    Parameters
    ----------
    left, right : dask.dataframe.DataFrame
        Of the same partition type (pandas or cuDF) and the same column names.
    distinct : bool, default True
        Keep one row per distinct row (both sides hashed by every column). ``False``: every
        row; output partition ``b`` of ``p`` is the input partitions ``i`` (of all ``count``,
        the left's first) with ``i * p // count == b``, moved there whole, in order: the same
        rows in every run, wherever Dask put the inputs.
    client, backend, seed, timeout, stats
        As in :func:`gpuframe.dask.shuffle`.

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy, one partition per worker, default index; its rows are those of
        ``gpuframe.union`` of the concatenated partitions of each side (in another order).
        Integer and bool columns are pandas nullable where either side's is.

    Raises
    ------
    KeyError, TypeError, ValueError
        Other column names (``ValueError`` listing the difference), types that cannot be
        combined (``TypeError`` naming the column), ``distinct`` not a bool; checked on the
        ``_meta`` of both sides before anything runs on the cluster.
    gpuframe.comm.CommError
        A worker failed, left or timed out.
    """
    distinct = _check_bool(distinct, "distinct")
    return _setop("union", left, right, {"distinct": distinct}, client, backend, seed, timeout, stats)


def intersect(left: Any, right: Any, *, client: Any = None, backend: Optional[str] = None, seed: int = 0,
              timeout: Optional[float] = None, stats: Optional[dict] = None) -> Any:
    """The distinct rows of ``left`` found in ``right`` (SQL ``INTERSECT``), across the workers.

    Parameters
    ----------
    left, right : dask.dataframe.DataFrame
        Of the same partition type and column names; columns compared as in :func:`gpuframe.union`.
    client, backend, seed, timeout, stats
        As in :func:`gpuframe.dask.shuffle`.

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy, one partition per worker, default index, the left's dtypes; its rows
        are those of ``gpuframe.intersect`` of the concatenated partitions (in another order).

    Raises
    ------
    KeyError, TypeError, ValueError
        As :func:`union` (checked on the ``_meta`` before anything runs).
    gpuframe.comm.CommError
        A worker failed, left or timed out.
    """
    return _setop("intersect", left, right, {}, client, backend, seed, timeout, stats)


def difference(left: Any, right: Any, *, client: Any = None, backend: Optional[str] = None, seed: int = 0,
               timeout: Optional[float] = None, stats: Optional[dict] = None) -> Any:
    """The distinct rows of ``left`` not found in ``right`` (SQL ``EXCEPT``), across the workers.

    Parameters
    ----------
    left, right : dask.dataframe.DataFrame
        Of the same partition type and column names; columns compared as in :func:`gpuframe.union`.
    client, backend, seed, timeout, stats
        As in :func:`gpuframe.dask.shuffle`.

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy, one partition per worker, default index, the left's dtypes; its rows
        are those of ``gpuframe.difference`` of the concatenated partitions (in another order).

    Raises
    ------
    KeyError, TypeError, ValueError
        As :func:`union` (checked on the ``_meta`` before anything runs).
    gpuframe.comm.CommError
        A worker failed, left or timed out.
    """
    return _setop("difference", left, right, {}, client, backend, seed, timeout, stats)


def _check_aggs_mapping(aggs: Any) -> dict[str, tuple[str, str]]:
    if not isinstance(aggs, Mapping) or not aggs:
        raise TypeError("aggs must be a non-empty mapping {output name: (column, op)}, got "
                        f"{type(aggs).__name__} {aggs!r}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in aggs.items()}


def groupby_agg(ddf: Any, by: Any, aggs: Mapping[str, tuple[str, str]], *, dropna: bool = False,
                client: Any = None, backend: Optional[str] = None, seed: int = 0, timeout: Optional[float] = None,
                stats: Optional[dict] = None) -> Any:
    """Aggregate columns per group of the ``by`` columns, across the workers.

    :func:`gpuframe.groupby_agg` semantics (null keys one group unless ``dropna``; SQL null
    handling; the output types). Each worker pre-aggregates its rows, the partial aggregates are
    shuffled by the keys and combined (``median``/``nunique``: the rows travel). ``first`` and
    ``last`` follow the collection's order (partition 0's rows first): when they are asked for,
    the rows are first sample-sorted by (partition, row) between the workers, one more exchange.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
        Partitions are pandas (CPU) or cuDF (GPU) DataFrames.
    by : str or list of str
        The key columns.
    aggs : mapping of str to (str, str)
        ``{output name: (column, op)}``, ``op`` one of :func:`gpuframe.groupby_agg`'s.
    dropna : bool, default False
        Leave out the rows whose key has a null.
    client, backend, seed, timeout, stats
        As in :func:`gpuframe.dask.shuffle` (``stats`` also gets ``local_s``).

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy, one partition per worker, default index: the key columns, then one
        column per aggregation. Its rows are those of ``gpuframe.groupby_agg`` of the
        concatenated partitions (groups in another order; float sums and moments may differ in
        the last bits). Integer and bool results that can be null (every op but ``count``,
        ``size`` and ``nunique``) are pandas nullable (``Int64``, ``boolean``).

    Raises
    ------
    KeyError, TypeError, ValueError
        Unknown key or aggregated columns, unknown ops, ops a type does not support (checked on
        ``ddf._meta`` before anything runs on the cluster).
    gpuframe.comm.CommError
        A worker failed, left or timed out.
    """
    from gpuframe.ops.groupby import groupby_agg as local_gb
    from gpuframe.ops.setops import _subset

    kind = _check_ddf(ddf, "ddf")
    schema = _convert.schema_of(ddf._meta, kind)
    aggs = _check_aggs_mapping(aggs)
    dropna = _check_bool(dropna, "dropna")
    empty = _empty(schema)
    local_gb(empty, by, aggs, dropna=dropna)                           # every check, gpuframe's own
    names = _subset(empty, by, "by")
    seed = _check_seed(seed)
    used = list(dict.fromkeys(names + [c for c, _op in aggs.values()]))
    if len(used) < len(ddf.columns):     # only the keys and the aggregated columns travel
        ddf = ddf[used]
    return _launch("groupby_agg", [ddf], {"by": names, "aggs": aggs, "dropna": dropna}, client=client,
                   backend=backend, seed=seed, timeout=timeout, stats=stats)


def sort(ddf: Any, by: Any, *, descending: Any = False, nulls_last: bool = True, client: Any = None,
         backend: Optional[str] = None, timeout: Optional[float] = None, stats: Optional[dict] = None) -> Any:
    """Sort a Dask DataFrame by the ``by`` columns across the workers (a sample sort).

    :func:`gpuframe.sort` semantics, stable in the collection's order: ties keep the order of
    the input (partition 0's rows first), as :func:`gpuframe.sort` of the concatenated
    partitions does.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
        Partitions are pandas (CPU) or cuDF (GPU) DataFrames.
    by : str or list of str
        The sort keys.
    descending : bool or list of bool, default False
        One for all keys, or one per key.
    nulls_last : bool, default True
        Nulls after every value (before them when False).
    client, backend, timeout, stats
        As in :func:`gpuframe.dask.shuffle` (``stats`` also gets ``local_s``).

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy, one partition per worker, default index, the input's columns and
        dtypes: its partitions, in order, are ``gpuframe.sort`` of the concatenated input
        partitions, row for row, of equal sizes (partition ``b`` of ``p`` holds sorted rows
        ``[b * n // p, (b + 1) * n // p)``, whatever worker held which input, so partitions
        computed in separate runs fit together). Divisions are unknown.

    Raises
    ------
    KeyError, TypeError, ValueError
        Unknown or unsortable key columns, a bad ``descending`` or ``nulls_last`` (checked on
        ``ddf._meta`` before anything runs on the cluster).
    gpuframe.comm.CommError
        A worker failed, left or timed out.
    """
    from gpuframe.ops.sort import _check_by, _check_descending, sort_indices

    kind = _check_ddf(ddf, "ddf")
    schema = _convert.schema_of(ddf._meta, kind)
    empty = _empty(schema)
    sort_indices(empty, by, descending=descending, nulls_last=nulls_last)   # every check, gpuframe's own
    names = _check_by(empty, by)
    desc = _check_descending(descending, len(names))
    return _launch("sort", [ddf], {"by": names, "descending": desc, "nulls_last": nulls_last}, client=client,
                   backend=backend, seed=0, timeout=timeout, stats=stats)


def cross(left: Any, right: Any, *, kind: str, lschema: pa.Schema, rschema: pa.Schema, out_schema: pa.Schema,
          suffixes: tuple[str, str], npartitions: Optional[int], client: Any, backend: Optional[str],
          timeout: Optional[float], stats: Optional[dict]) -> Any:
    """``gpuframe.dask.merge(how="cross")`` once checked: the side with fewer rows in all is
    gathered on every worker and crossed with the worker's rows of the other."""
    return _launch("cross", [left, right], {"suffixes": tuple(suffixes)}, client=client, backend=backend, seed=0,
                   timeout=timeout, stats=stats, npartitions=npartitions)
