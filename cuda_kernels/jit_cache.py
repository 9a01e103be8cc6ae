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

Processes on one machine that start on a cold cache also compile the same kernels, each its own
copy: :func:`share_compiles` has one of them compile each signature and the others load it.
Within one process numba compiles one signature at a time: :func:`compile_beside` compiles some
in a forked child while the process compiles others.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numba
from numba.core import sigutils
from numba.core.caching import IndexDataCacheFile
from numba.core.compiler_lock import global_compiler_lock
from numba.core.dispatcher import Dispatcher

try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows: numba's own behaviour
    _fcntl = None

__all__ = ["Beside", "LockedCacheFile", "compile_beside", "njit", "harden_cache", "share_compiles", "shared_compiles"]

_WAIT_S = 180.0      # longest wait for a signature another process is compiling; then it compiles here
_POLL_S = 0.02


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




def share_compiles(folder: str) -> None:
    """Share this process's numba compiles with the other processes that call this with the same
    ``folder`` (and the same numba cache): of a kernel signature several of them need, the first
    to take the ``flock`` on ``<key>.lock`` in ``folder`` compiles it (numba saves it in its
    cache), creates ``<key>.done`` and lets the lock go; the others wait for the lock and, with
    ``.done`` there, let numba load the signature from the cache (compiling it themselves if
    loading fails). A process that dies while compiling releases its lock with it: the next one
    compiles. Only compiles called from Python are shared (a kernel's callees compile inside it);
    where the folder cannot be used (no ``fcntl``, removed, read-only) a compile is not shared.

    ``gpuframe compile`` uses it, and so does every process whose environment names a folder in
    ``GPUFRAME_COMPILE_CLAIMS`` when it first imports a kernel (the workers of a
    Dask cluster starting on a cold cache). Once a process, one folder."""
    if _fcntl is None:  # pragma: no cover - Windows: compiles are not shared
        return
    folder = os.path.realpath(folder)
    # the state hangs on the patched method, not on this module: it can be imported under two
    # names (gpuframe.kernels.jit_cache and cuda_kernels.jit_cache), and two patches, one inside
    # the other, would wait for their own claims
    installed = getattr(Dispatcher.compile, "_gpuframe_claims", None)
    if installed is not None:
        if installed["folder"] != folder:
            raise RuntimeError(f"share_compiles: already sharing through {installed['folder']!r}, "
                               f"asked for {folder!r}")
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        pass   # each compile then finds no folder and is not shared
    original = Dispatcher.compile
    local = threading.local()
    state = {"folder": folder, "compiled": 0, "loaded": 0}

    def compile(disp: Any, sig: Any) -> Any:
        depth = getattr(local, "depth", 0)
        cache = getattr(disp, "_cache", None)
        if depth or cache is None or type(cache).__name__ == "NullCache":
            return original(disp, sig)
        args, _ = sigutils.normalize_signature(sig)
        if args in disp.overloads:
            return original(disp, sig)
        fn = disp.py_func
        where = getattr(getattr(cache, "_cache_file", None), "_index_path", "")
        text = f"{where}:{fn.__module__}.{fn.__qualname__}:{args!r}"
        path = os.path.join(folder, hashlib.sha256(text.encode()).hexdigest()[:32])
        try:
            fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return original(disp, sig)
        local.depth = depth + 1
        try:
            _lock_or_wait(fd, path + ".done")
            mine = not os.path.exists(path + ".done")
            try:
                return original(disp, sig)
            finally:
                state["compiled" if mine else "loaded"] += 1
                if mine:   # also when compiling failed: the others then fail as this one did
                    _create(path + ".done")
        finally:
            local.depth = depth
            os.close(fd)   # lets the lock go

    compile._gpuframe_claims = state  # type: ignore[attr-defined]
    Dispatcher.compile = compile


def _lock_or_wait(fd: int, done: str) -> None:
    """Take the ``flock`` on ``fd``, waiting while another process holds it (at most ``_WAIT_S``
    seconds, then go on without it)."""
    end = time.monotonic() + _WAIT_S
    while True:
        try:
            _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= end:
                return
            time.sleep(_POLL_S)
        except OSError:
            return


def _create(path: str) -> None:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    except OSError:
        pass


def shared_compiles() -> dict[str, int]:
    """Signatures this process compiled under :func:`share_compiles` (``compiled``) and loaded
    after another process compiled them (``loaded``)."""
    state = getattr(Dispatcher.compile, "_gpuframe_claims", None) or {}
    return {"compiled": state.get("compiled", 0), "loaded": state.get("loaded", 0)}


_BESIDE = {"in_child": False, "started": 0, "gave_up": 0}
# how long a waiter gives a child that is not done when this process is: at least this long,
# and at least what this process took since the fork
_BESIDE_MIN_WAIT_S = 10.0


class Beside:
    """A compile running in a child process (:func:`compile_beside`): ``started`` (False: none
    was started, and :meth:`wait` returns at once), :meth:`running`, :meth:`wait`."""

    def __init__(self, pid: int = 0) -> None:
        self.pid = pid
        self.started = pid > 0
        self._forked = time.monotonic()

    def running(self) -> bool:
        """Whether the child is still compiling."""
        if self.pid <= 0:
            return False
        try:
            if os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                return True
        except ChildProcessError:   # reaped already (a SIGCHLD handler)
            pass
        self.pid = 0
        return False

    def wait(self) -> None:
        """Wait for the child: at least :data:`_BESIDE_MIN_WAIT_S` seconds, or as long as this
        process took since the fork, then kill it (its compile then happens here, at the call)."""
        now = time.monotonic()
        end = now + max(_BESIDE_MIN_WAIT_S, now - self._forked)
        while self.running():
            if time.monotonic() >= end:
                _BESIDE["gave_up"] += 1
                try:
                    os.kill(self.pid, 9)
                    os.waitpid(self.pid, 0)
                except (ChildProcessError, ProcessLookupError):
                    pass
                self.pid = 0
                return
            time.sleep(0.002)


def compile_beside(jobs: Any) -> Beside:
    """Compile ``njit`` dispatchers in a forked child process, into numba's on-disk cache, while
    this process compiles something else: ``jobs`` is a list of ``(dispatcher, argtypes)`` (numba
    types), compiled in that order. Call the result's :meth:`Beside.wait` before calling them:
    they then load those signatures from the cache. numba compiles under one lock a process, so
    this is how two compiles overlap: a first join on an empty cache compiles its threaded
    kernels beside their item functions and beside each other.

    Starts nothing (a :class:`Beside` whose ``wait`` returns at once; each dispatcher compiles at
    its call, as always) where it cannot help or might not be safe: every job's signature is
    compiled already or in the dispatcher's disk cache (or it has none); off the main thread (a
    Dask worker's task threads: the child would start without the threads that hold whatever
    locks they hold); while numba's compiler lock is taken (this thread holds it across the
    fork, so the child starts with it free for itself); not on Linux; in such a child itself;
    with ``GPUFRAME_COMPILE_BESIDE=0``. A child that fails or hangs costs its time
    (:meth:`Beside.wait` gives up on it), and the dispatcher compiles here."""
    if (_BESIDE["in_child"] or not sys.platform.startswith("linux") or not hasattr(os, "fork")
            or threading.current_thread() is not threading.main_thread()
            or os.environ.get("GPUFRAME_COMPILE_BESIDE", "1").strip().lower() in ("0", "false", "no", "off")):
        return Beside()
    todo = [(d, tuple(t)) for d, t in jobs if _uncompiled(d, tuple(t))]
    if not todo or not global_compiler_lock._lock.acquire(blocking=False):
        return Beside()
    try:
        with warnings.catch_warnings():   # Python >= 3.12 warns of fork() beside threads
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:   # the child: compile (numba saves each in the cache) and leave, no cleanup
            code = 1
            try:
                _BESIDE["in_child"] = True
                for disp, argtypes in todo:
                    disp.compile(argtypes)
                code = 0
            finally:
                os._exit(code)
    except OSError:
        return Beside()
    finally:
        global_compiler_lock._lock.release()
    _BESIDE["started"] += 1
    return Beside(pid)


# (dispatcher, argtypes) pairs compile_beside has looked at: each only once a process (reading a
# dispatcher's cache index took 0.26 ms, and a grouping asks for its chunk function at every
# call), also when no child compiled it (it was cached, or it compiled here at its call)
_LOOKED_AT: set = set()


def _uncompiled(disp: Any, argtypes: tuple) -> bool:
    # neither compiled in this process nor in the dispatcher's disk cache (and it has one), the
    # first time this process asks
    if (disp, argtypes) in _LOOKED_AT:
        return False
    _LOOKED_AT.add((disp, argtypes))
    cache = getattr(disp, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    if cache_file is None or argtypes in disp.overloads:
        return False
    try:
        return cache._index_key(argtypes, disp.targetctx.codegen()) not in cache_file._load_index()
    except Exception:   # numba's cache internals moved: compile as numba would
        return False


if os.environ.get("GPUFRAME_COMPILE_CLAIMS"):
    share_compiles(os.environ["GPUFRAME_COMPILE_CLAIMS"])
