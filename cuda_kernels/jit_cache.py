"""``njit`` with an on-disk cache that several processes can fill at once.

numba's ``cache=True`` keeps, per function, an index (signature -> data file) and one data file
per compiled signature. Saving a new signature reads the index, picks the first free data-file
name, writes the index back and then the data file, with no lock. Two processes compiling
*different* signatures of one function at the same moment (Dask workers on one machine, pytest
in two processes, a user's process pool on a cold cache) can both pick ``<name>.1.nbc``: the
index then maps one signature to the other's machine code, and every later process that loads
it runs the wrong code for its argument types, silently (``f(float32(2.5))`` answered ``3``
with the ``int64`` code in a reproduction) or with a crash (array layouts). Lost index entries
are the mild form: a signature compiled again by every process.

This module's :func:`njit` is numba's, and for ``cache=True`` it swaps the dispatcher's cache
file for :class:`LockedCacheFile`, which holds an exclusive ``flock`` on ``<index>.lock`` while
it reads and rewrites the index and writes the data file, and a shared one while it reads them:
a reader sees an index and data files written by one writer, and no writer loses another's
entry. Where locking is impossible (no ``fcntl``, a read-only cache folder) it behaves as numba.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numba
from numba.core.caching import IndexDataCacheFile

try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows: numba's own behaviour
    _fcntl = None

__all__ = ["LockedCacheFile", "njit", "harden_cache"]


@contextlib.contextmanager
def _locked(path: str, exclusive: bool) -> Iterator[None]:
    """Hold ``flock`` on *path* (created if missing); without a lock where none can be had."""
    fd = -1
    if _fcntl is not None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # the cache folder is missing (nothing to read yet) or read-only
            fd = -1
    try:
        if fd >= 0:
            _fcntl.flock(fd, _fcntl.LOCK_EX if exclusive else _fcntl.LOCK_SH)
        yield
    finally:
        if fd >= 0:
            os.close(fd)  # closing releases the lock


class LockedCacheFile(IndexDataCacheFile):
    """numba's index + data cache files, read and written under a per-function file lock."""

    def _lock_path(self) -> str:
        return self._index_path + ".lock"

    def save(self, key: Any, data: Any) -> None:
        with _locked(self._lock_path(), exclusive=True):
            super().save(key, data)

    def load(self, key: Any) -> Any:
        with _locked(self._lock_path(), exclusive=False):
            return super().load(key)

    def flush(self) -> None:
        with _locked(self._lock_path(), exclusive=True):
            super().flush()


def harden_cache(dispatcher: Any) -> Any:
    """Make a caching numba dispatcher's cache file a :class:`LockedCacheFile`; returns it."""
    cache = getattr(dispatcher, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    if isinstance(cache_file, IndexDataCacheFile) and not isinstance(cache_file, LockedCacheFile):
        cache_file.__class__ = LockedCacheFile
    return dispatcher


def njit(*args: Any, **options: Any) -> Any:
    """``numba.njit`` with the same arguments; a ``cache=True`` function gets a locked cache."""
    if not options.get("cache"):
        return numba.njit(*args, **options)
    if args and callable(args[0]):  # @njit(cache=True) is always called with options first
        return harden_cache(numba.njit(*args, **options))
    decorate = numba.njit(*args, **options)
    return lambda func: harden_cache(decorate(func))
