"""The records ``gpuframe.ops`` hands to a backend (what a backend's operations take).

The backend operations and their signatures (every registered name is listed in
:mod:`gpuframe.backends.registry`):

``join(left_keys, right_keys, pairs, how, nulls_equal, on_count=None) -> (left_idx, right_idx)``
    Gather maps of the join of the key columns (one list per side, pairwise ``pairs``), int64 on
    the inputs' device. ``-1`` marks the missing side of an unmatched row of a left, right or
    outer join; for ``semi``/``anti`` ``left_idx`` lists the selected left rows in left order and
    ``right_idx`` is ``None``. ``on_count(total_rows)`` runs once the output size is known and
    before anything is allocated for it (it raises ``MemoryError``).
``join_size(left_keys, right_keys, pairs, how, nulls_equal) -> int``
    The number of rows ``join`` would return.
``merged_key(left_key, right_key, pair, dtype, left_idx, right_idx) -> Column``
    A coalesced key column of ``dtype``: the key of whichever side a row of the gather maps has.
``join_fused(left, right, pairs, how, nulls_equal, columns, op) -> (list[Column], rows)``
    *Optional* (a capability, registered by the CPU backend only): the join and the output
    columns ``columns`` (:class:`OutputColumn`) in one pass, without gather maps in between.
``hash_partition_heavy(table, key_columns, num_partitions, seed, heavy, codes) -> (Table, offsets)``
    *Optional* (CPU only): ``hash_partition`` with rows whose hash is in ``heavy`` (sorted uint64)
    sent to the extra partitions ``num_partitions - 1 + code`` (the skewed merge's split, see
    :mod:`gpuframe._skew`).
``first_rows(columns, pairs) -> rows``
    *Optional* (CPU only): ``group_ids(columns, pairs)[1]`` (every group's first row, ascending
    int64) without the group ids (``unique``).
``distinct_rows(left_keys, right_keys, pairs, how) -> rows or None``
    *Optional* (CPU only): the first row of every distinct left row (rows compared as
    ``group_ids`` compares them) with an equal right row (``how="semi"``: ``intersect``) or
    without one (``"anti"``: ``difference``), ascending int64, in one pass over each side;
    ``None`` where the backend's general path is the faster one (``unique``, then the join).
``dense_groups(columns, pairs, key_order) -> DenseGroups or None``
    *Optional* (CPU only): the groups of integer key columns whose values span few slots,
    without group ids: ``groups`` and ``slots`` go to ``group_reduce`` in place of the group ids
    and their number (one value per slot), ``order`` picks the slots that hold rows in the
    output's order (the first rows' order, or the keys' with ``key_order``), ``first`` their
    first rows, ``row_groups()`` every row's slot; ``None`` for other keys (``group_ids`` then).
``sort_keyed(columns, descending, nulls_last, carry) -> (perm, Column or None, Column or None)``
    *Optional* (CPU only): ``sort_indices`` (int64, or uint32 where the backend made it so:
    a permutation, so every row number is in bounds), the first key column already in
    sorted order where the sort yields it without a gather (a single integer key without
    nulls), else ``None``, and ``carry`` (a Column or ``None``: the table's one other column)
    in sorted order where the sort moved it with its rows, ``perm`` then ``None``, else ``None``.
``merge_indices(columns, descending, nulls_last, starts) -> perm``
    *Optional* (CPU only): ``sort_indices`` of rows that are sorted runs already (rows
    ``starts[r]`` to ``starts[r + 1] - 1``, each sorted stably), by merging them (ties: the
    earlier run's rows first); a distributed sort's received pieces.
``gather_column(column, indices, missing) -> Column``, ``check_indices(indices, num_rows)``,
``hash_rows``, ``partition_ids``, ``hash_partition``: see :mod:`gpuframe.ops.gather`,
:mod:`gpuframe.ops.hashing` and :mod:`gpuframe.ops.partition`.

Key normalisation (multi-column keys, strings, dictionaries, nulls, float canonicalisation,
promotion to one comparable word) is the backend's: ``ops`` only checks the key types and says
how they pair (:class:`KeyPair`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyarrow as pa

__all__ = ["KeyPair", "OutputColumn"]


@dataclass(frozen=True)
class KeyPair:
    """One left key column and its right partner, with the type family they are compared in.

    ``family`` is one of ``int``, ``float``, ``bool``, ``date32``, ``timestamp``, ``string``
    (see :mod:`gpuframe.ops.keys` for the type rules).
    """

    left: str
    right: str
    left_type: pa.DataType
    right_type: pa.DataType
    family: str
    out_type: pa.DataType          # type of a merged (coalesced) key column
    range_checked: bool = False    # uint64 with a signed integer: rows >= 2**63 / < 0 never match

    @property
    def is_string(self) -> bool:
        return self.family == "string"


@dataclass(frozen=True)
class OutputColumn:
    """One column of a merge's result, as ``ops`` names and types it.

    ``source`` is ``"left"`` or ``"right"`` (column ``column`` of that side, rows from that
    side's gather map, null where the side is missing) or ``"key"`` (the merged key of
    ``pairs[pair]``: the key of whichever side is present, as ``dtype``). A left or right
    column that is itself a key of ``pairs[pair]`` carries ``pair`` too (else ``None``).
    """

    name: str
    source: str
    column: str
    dtype: pa.DataType
    pair: Optional[int] = None
