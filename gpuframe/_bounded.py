"""The bounded exchange: a hash shuffle in rounds under a per-rank memory budget, the received
rows that do not fit kept on disk until they are asked for.

A one-shot shuffle holds at once, on every rank, a partitioned copy of its input, the receive
buffers of everything sent to it, and (for several output buckets a rank) a copy cut into
buckets: about three times the data. :func:`shuffle_rounds` instead

1. cuts its input into chunks of at most ``budget / ROUND_SHARE`` bytes and hash-partitions one
   chunk at a time, only when some destination has less than a round's share queued and the
   partitioned copies still held (a copy is held until its last slice has gone out) are under
   a round's worth, so at most two rounds' worth of copies however unevenly the keys fall;
2. sends in rounds: in each, at most ``budget / (ROUND_SHARE * size)`` bytes to every rank, so
   that no rank receives more than ``budget / ROUND_SHARE`` bytes a round however the keys fall
   (a heavy key makes more rounds, not bigger ones). Every message says whether its sender has
   more to send; the rounds end when no rank has, the same round on every rank;
3. cuts each round's received rows into this rank's buckets and gives them to a
   :class:`BucketStore`, which keeps them in memory while the kept rounds hold at most what the
   rounds in flight leave of the budget (:func:`keep_bytes`: the budget less five round sizes)
   and writes later rounds to Arrow IPC files, one per bucket.

So the transient memory (the converted chunk, up to two rounds' worth of partitioned copies,
one round's receive buffers and their cut into buckets: five round sizes, 5/8 of the budget)
and the kept rows (the other 3/8) stay within the budget. Bytes are row bytes: a dictionary
column's dictionary (sent with every piece) is not counted. A round moves ``MIN_ROUND`` bytes
at least, so budgets under ``8 * MIN_ROUND`` (512 KiB) behave as that much.
Each bucket's rows come back by :meth:`BucketStore.read` (in round order, and within a round in
rank order) and go with :meth:`BucketStore.drop`; ``gpuframe.dask.shuffle`` does both in the
output partition's task, so the outputs are read from disk one by one as Dask asks for them.
"""
from __future__ import annotations

import collections
import contextlib
import os
import shutil
import tempfile
import threading
import time
import weakref
from typing import Any, Iterable, Iterator, Optional, Sequence

import pyarrow as pa

from .comm.exchange import start_exchange
from .core.table import Table

ROUND_SHARE = 8          # a rank sends (and receives) at most budget / ROUND_SHARE bytes a round
# a round's transient memory, in round sizes: the converted chunk, its partitioned copy, the send
# queues, the round's receive buffers and their cut into buckets
TRANSIENT_ROUNDS = 5
MIN_ROUND = 64 << 10     # however small the budget, a round may move this much
_ROUND_TAG_STEP = 1 << 43    # round r of an exchange tagged t uses tag t + r * step (mod 2**62)


DEFAULT_FRACTION = 0.25     # gpuframe.dask's default budget: this share of a worker's memory limit


def budget_setting(value: Any, param: str = "memory_budget") -> Any:
    """``value`` checked (bytes, a size string, a fraction in (0, 1], 0 for none), or the
    ``exchange_memory_budget`` setting when ``value`` is None (itself None for the default)."""
    from . import config

    if value is None:
        return config.get("exchange_memory_budget")
    return config.parse_memory_size(value, param)


def budget_bytes(setting: Any, limit: int, default: Optional[float]) -> int:
    """The budget in bytes (0: none) of a checked ``setting``: fractions are of ``limit``;
    ``None`` takes the fraction ``default`` (None: no budget)."""
    if setting is None:
        setting = default
    if setting is None or setting == 0:
        return 0
    if isinstance(setting, float):
        return max(1, int(setting * limit))
    return int(setting)


def round_bytes(budget: int) -> int:
    """The most bytes a rank sends in one round under ``budget``."""
    return max(int(budget) // ROUND_SHARE, MIN_ROUND)


def keep_bytes(budget: int) -> int:
    """The received rounds a rank keeps in memory under ``budget``: what the rounds in flight leave."""
    return max(int(budget) - TRANSIENT_ROUNDS * round_bytes(budget), 0)


def _round_tag(tag: Optional[int], rnd: int) -> Optional[int]:
    return None if tag is None else (int(tag) + rnd * _ROUND_TAG_STEP) % (1 << 62)


class BucketStore:
    """The rows this rank receives for its buckets: in memory up to ``memory`` bytes (``None``:
    no limit), later rounds in Arrow IPC stream files (one per bucket) in a fresh folder under
    ``directory`` (made at the first spill, removed when the store is closed or collected).

    Rounds are kept or spilled whole: a round's pieces share its receive buffers, so keeping one
    of them keeps the memory of all.
    """

    def __init__(self, buckets: Iterable[int], schema: pa.Schema, device: Any, *, memory: Optional[int] = None,
                 directory: Optional[str] = None) -> None:
        self.schema = schema
        self.device = device
        self._memory = memory
        self._parent = directory
        self._dir: Optional[str] = None
        self._cleanup: Optional[weakref.finalize] = None
        # per bucket, in arrival order: a Table kept in memory, or the number of a batch in its file
        self._pieces: dict[int, list[Any]] = {b: [] for b in buckets}
        self._lock = threading.Lock()
        self._rows = {b: 0 for b in self._pieces}
        self._writers: dict[int, tuple[Any, Any, int]] = {}   # bucket -> (file, writer, batches)
        self._files: dict[int, str] = {}
        self.kept_bytes = 0          # kept in memory (until taken)
        self.spilled_bytes = 0       # written to disk (Arrow IPC bytes)
        self.spilled_rounds = 0

    # ------------------------------------------------------------------ filling
    def add_round(self, pieces: dict[int, Table], nbytes: int) -> None:
        """One round's rows, cut into buckets (``pieces[b]``); ``nbytes``: the memory they hold."""
        if self._memory is None or self._parent is None or self.kept_bytes + nbytes <= self._memory:
            for b, t in pieces.items():
                if t.num_rows:
                    self._pieces[b].append(t)
                    self._rows[b] += t.num_rows
            self.kept_bytes += nbytes
            return
        self.spilled_rounds += 1
        for b, t in pieces.items():
            if t.num_rows:
                self._spill(b, t)

    def _spill(self, bucket: int, table: Table) -> None:
        if self._dir is None:
            os.makedirs(self._parent, exist_ok=True)
            self._dir = tempfile.mkdtemp(prefix="gpuframe-spill-", dir=self._parent)
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)
        arrow = table.to_arrow()
        if bucket not in self._writers:
            path = os.path.join(self._dir, f"bucket-{bucket}.arrows")
            sink = pa.OSFile(path, "wb")
            self._writers[bucket] = (sink, pa.ipc.new_stream(sink, arrow.schema), 0)
            self._files[bucket] = path
        sink, writer, count = self._writers[bucket]
        before = sink.tell()
        writer.write_table(arrow)
        self.spilled_bytes += sink.tell() - before
        self._writers[bucket] = (sink, writer, count + 1)
        self._pieces[bucket].append(count)
        self._rows[bucket] += table.num_rows

    def finish(self) -> None:
        """Close the spill files (every round added)."""
        for sink, writer, _count in self._writers.values():
            writer.close()
            sink.close()
        self._writers.clear()

    # ------------------------------------------------------------------ reading
    def rows(self, bucket: int) -> int:
        return self._rows[bucket]

    def read(self, bucket: int) -> Table:
        """Bucket ``bucket``'s rows as one table (read back, memory-mapped, where spilled),
        leaving the bucket in the store (:meth:`drop` it once its output is made, so that a
        failure in between can read it again). Different buckets may be read from several
        threads at once (Dask's output tasks)."""
        from .ops.select import concat

        with self._lock:
            if bucket not in self._pieces:
                raise KeyError(f"bucket {bucket} is not in this store (it holds {sorted(self._pieces)}), or was dropped")
            pieces = list(self._pieces[bucket])
            path = self._files.get(bucket)
        tables: list[Table] = []
        if path is not None:
            from .interop.arrow_import import from_arrow

            # the batches read the page cache: no copy until the concatenation
            spilled = iter(list(pa.ipc.open_stream(pa.memory_map(path))))
        for p in pieces:
            if isinstance(p, Table):
                tables.append(p)
            else:
                tables.append(from_arrow(pa.Table.from_batches([next(spilled)]), self.device))
        if not tables:
            return _empty(self.schema, self.device)
        return tables[0] if len(tables) == 1 else concat(tables)

    def drop(self, bucket: int) -> None:
        """Forget bucket ``bucket`` (its file goes; a memory-mapped read of it stays valid); the
        last one closes the store."""
        with self._lock:
            self._pieces.pop(bucket, None)
            path = self._files.pop(bucket, None)
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            last = not self._pieces
        if last:
            self.close()

    def take(self, bucket: int) -> Table:
        """:meth:`read`, then :meth:`drop`."""
        out = self.read(bucket)
        self.drop(bucket)
        return out

    def close(self) -> None:
        """Drop every piece and remove the spill folder."""
        self.finish()
        self._pieces.clear()
        if self._cleanup is not None:
            self._cleanup()


def _empty(schema: pa.Schema, device: Any) -> Table:
    from .interop.arrow_import import from_arrow

    return from_arrow(schema.empty_table(), device)


def data_bytes(table: Table) -> int:
    """The bytes of ``table``'s rows: :attr:`Table.nbytes` without the dictionaries of dictionary
    columns (a slice reports its whole dictionary; the wire sends it with every piece, outside
    the budget's reckoning, which sizes rounds by rows)."""
    return sum(c.nbytes - (c.dictionary.nbytes if c.dictionary is not None else 0) for c in table.columns)


def chunks(tables: Iterable[Table], nbytes: int) -> Iterator[Table]:
    """Zero-copy row slices of ``tables`` of about ``nbytes`` bytes each (one row at least)."""
    for t in tables:
        n = t.num_rows
        if not n:
            continue
        size = data_bytes(t)
        if size <= nbytes:
            yield t
            continue
        step = max(1, n * nbytes // size)
        for start in range(0, n, step):
            yield t.slice(start, step)


class _Copy:
    """A chunk's partitioned copy: its bytes stay held until every slice of it has been sent."""

    __slots__ = ("nbytes", "slices")

    def __init__(self, nbytes: int, slices: int) -> None:
        self.nbytes, self.slices = nbytes, slices


def _take(queue: collections.deque, cap: int) -> tuple[list[Table], int, list[_Copy]]:
    """Pop up to ``cap`` bytes of rows (one row at least) from the front of ``queue`` (entries
    ``(table, bytes, copy)``); the copies whose last slice went out are returned too."""
    out: list[Table] = []
    done: list[_Copy] = []
    taken = 0
    while queue and taken < cap:
        t, nb, copy = queue[0]
        if taken + nb <= cap:
            queue.popleft()
            out.append(t)
            taken += nb
            copy.slices -= 1
            if not copy.slices:
                done.append(copy)
            continue
        rows = (cap - taken) * t.num_rows // max(nb, 1)
        if not out:
            rows = max(rows, 1)
        if rows > 0:
            head = t.slice(0, rows)
            hb = data_bytes(head)
            queue[0] = (t.slice(rows), max(nb - hb, 0), copy)
            out.append(head)
            taken += hb
        break
    return out, taken, done


def shuffle_rounds(sources: Iterable[Table], keys: Sequence[str], comm: Any, *, schema: pa.Schema, buckets: int,
                   seed: int, budget: int, store: BucketStore, tag: Optional[int] = None,
                   timeout: Optional[float] = None, device: Any = None, stats: Optional[dict] = None) -> int:
    """Hash-shuffle the tables ``sources`` yields (consumed lazily) into ``store``, in rounds
    under ``budget`` bytes; returns the number of rounds (the same on every rank).

    Every rank calls it together with the same ``keys``, ``buckets``, ``seed`` and ``budget``
    (the per-round limits must agree for the receive bound to hold). ``stats`` gains
    ``partition_s``, ``exchange_s``, ``rounds``, ``spilled_bytes``, ``round_received_max`` (the
    most bytes this rank received in one round) and the exchange's byte counts. A failure here
    (a full disk, a peer lost) closes ``comm``, so that the peers fail at once instead of at
    their timeout, and the store.
    """
    try:
        return _rounds(sources, keys, comm, schema=schema, buckets=buckets, seed=seed, budget=budget, store=store,
                       tag=tag, timeout=timeout, device=device, stats=stats)
    except BaseException:
        store.close()
        comm.close()
        raise


def _rounds(sources: Iterable[Table], keys: Sequence[str], comm: Any, *, schema: pa.Schema, buckets: int, seed: int,
            budget: int, store: BucketStore, tag: Optional[int], timeout: Optional[float], device: Any,
            stats: Optional[dict]) -> int:
    from .distributed import _split_owned, owned_buckets, route

    size = comm.size
    send_cap = round_bytes(budget)
    per_dest = max(send_cap // size, 1)
    lo, hi = owned_buckets(comm.rank, size, buckets)
    queues: list[collections.deque] = [collections.deque() for _ in range(size)]
    queued = [0] * size
    held = 0            # bytes of the partitioned copies with a slice still queued or in flight
    source = chunks(sources, send_cap)
    exhausted = False
    rnd = 0
    part_s = exch_s = 0.0
    most = 0            # the most bytes received in a round
    while True:
        t0 = time.perf_counter()
        # refill, a chunk at a time, while some destination has less than a round's share waiting
        # and the copies held stay under a round's worth: at most two rounds' worth of copies,
        # however unevenly the keys fall
        while not exhausted and held < send_cap and any(q < per_dest for q in queued):
            chunk = next(source, None)
            if chunk is None:
                exhausted = True
                break
            routed = route([chunk], keys, size, buckets=buckets, seed=seed)
            sizes = [[data_bytes(t) for t in pieces] for pieces in routed]
            copy = _Copy(sum(map(sum, sizes)), sum(map(len, sizes)))
            held += copy.nbytes
            for p, (pieces, nbs) in enumerate(zip(routed, sizes)):
                for t, nb in zip(pieces, nbs):
                    queues[p].append((t, nb, copy))
                    queued[p] += nb
            del chunk, routed
        outgoing = []
        sent: list[_Copy] = []
        for p in range(size):
            tables, nb, done = _take(queues[p], per_dest)
            queued[p] -= nb
            outgoing.append(tables)
            sent += done
        more = not exhausted or any(queues)
        t1 = time.perf_counter()
        pending = start_exchange(comm, outgoing, schema=schema, tag=_round_tag(tag, rnd), timeout=timeout,
                                 device=device, stats=stats, more=more)
        received = pending.result()
        del outgoing
        held -= sum(c.nbytes for c in sent)     # their last slices have gone: the copies are free
        t2 = time.perf_counter()
        got = data_bytes(received)
        most = max(most, got)
        pieces = _split_owned(received, keys, comm, buckets, seed)
        store.add_round(dict(zip(range(lo, hi), pieces)), got)
        del received, pieces
        part_s += (t1 - t0) + (time.perf_counter() - t2)
        exch_s += t2 - t1
        rnd += 1
        if not pending.more:
            break
    store.finish()
    if stats is not None:
        stats["partition_s"] = stats.get("partition_s", 0.0) + part_s
        stats["exchange_s"] = stats.get("exchange_s", 0.0) + exch_s
        stats["rounds"] = stats.get("rounds", 0) + rnd
        stats["spilled_bytes"] = stats.get("spilled_bytes", 0) + store.spilled_bytes
        stats["round_received_max"] = max(stats.get("round_received_max", 0), most)
    return rnd
