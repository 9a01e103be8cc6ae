"""numba's on-disk cache filled by several processes at once (cuda_kernels/jit_cache.py).

Without the lock, four processes compiling four signatures of one ``cache=True`` function at the
same moment lose index entries and can map a signature to another signature's machine code (the
reproduction behind this test answered ``f(float32(2.5)) == 3`` from the ``int64`` code). The
processes here widen numba's window between reading and writing the index, so that the race is
certain without the lock; a fifth process then loads every signature from the cache.
"""
from __future__ import annotations

import importlib
import multiprocessing as mp
import pkgutil
import sys
import time

import numpy as np
import pytest

import cuda_kernels
from cuda_kernels.jit_cache import LockedCacheFile

TOY = '''
from cuda_kernels.jit_cache import njit

@njit(cache=True)
def plus_one(x):
    return x + 1
'''
ARGS = [np.int64(3), np.float64(3.5), np.int32(3), np.float32(2.5)]


def _compile_one(folder, i, barrier):
    import numba.core.caching as caching

    save_index, save_data = caching.IndexDataCacheFile._save_index, caching.IndexDataCacheFile._save_data

    def slow_index(self, overloads):  # every process has read the index before any writes it
        time.sleep(0.2)
        save_index(self, overloads)

    def slow_data(self, name, data):  # the later index writers write their data files first
        time.sleep((3 - i) * 0.2)
        save_data(self, name, data)

    caching.IndexDataCacheFile._save_index = slow_index
    caching.IndexDataCacheFile._save_data = slow_data
    sys.path.insert(0, folder)
    import toy_jit_cache

    barrier.wait()
    time.sleep(i * 0.05)
    toy_jit_cache.plus_one(ARGS[i])


def _load_all(folder, q):
    sys.path.insert(0, folder)
    import toy_jit_cache

    f = toy_jit_cache.plus_one
    got = [f(a) for a in ARGS]
    q.put(([float(g) for g in got], sorted(str(s) for s in f.signatures), len(f.stats.cache_hits),
           sorted(str(k) for k in f.stats.cache_misses)))


@pytest.mark.timeout(180)
def test_concurrent_compiles_of_one_function_share_the_cache(tmp_path, monkeypatch):
    (tmp_path / "toy_jit_cache.py").write_text(TOY)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))  # the children inherit it
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(ARGS))
    procs = [ctx.Process(target=_compile_one, args=(str(tmp_path), i, barrier)) for i in range(len(ARGS))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(150)
    assert [p.exitcode for p in procs] == [0] * len(ARGS)
    q = ctx.Queue()
    p = ctx.Process(target=_load_all, args=(str(tmp_path), q))
    p.start()
    got, sigs, hits, misses = q.get(timeout=120)
    p.join(30)
    assert got == [float(a) + 1 for a in ARGS]
    assert sigs == sorted(f"({type(a).__name__},)" for a in ARGS)
    assert (hits, misses) == (len(ARGS), []), "every signature comes from the cache, none compiled again"


def test_every_cached_kernel_has_the_locked_cache():
    hardened = []
    for info in pkgutil.iter_modules(cuda_kernels.__path__):
        module = importlib.import_module(f"cuda_kernels.{info.name}")
        for name, obj in vars(module).items():
            cache_file = getattr(getattr(obj, "_cache", None), "_cache_file", None)
            if cache_file is not None and getattr(obj, "__module__", None) == module.__name__:
                assert isinstance(cache_file, LockedCacheFile), f"{module.__name__}.{name}"
                hardened.append(name)
    assert len(hardened) > 40, hardened  # the join, partition, sort, group, gather and hash drivers


SHARED_TOY = '''
from cuda_kernels.jit_cache import njit

@njit(cache=True)
def times_two(x):
    return x * 2

@njit(cache=True)
def no_strings(x):
    return x - 1
'''


def _share_one(folder, barrier, q):
    # GPUFRAME_COMPILE_CLAIMS (inherited) has the kernel import install the sharing
    sys.path.insert(0, folder)
    import toy_shared_jit
    from cuda_kernels.jit_cache import shared_compiles

    barrier.wait()
    f = toy_shared_jit.times_two
    got = [float(f(np.int64(3))), float(f(np.float64(1.5)))]
    t0 = time.monotonic()
    try:
        toy_shared_jit.no_strings("a")
        failed = ""
    except Exception as exc:  # noqa: BLE001 - the typing error every process must see
        failed = type(exc).__name__
    q.put((got, shared_compiles(), failed, time.monotonic() - t0,
           len(f.stats.cache_hits), len(f.stats.cache_misses)))


@pytest.fixture
def shared_toy(tmp_path, monkeypatch):
    """``toy_shared_jit`` in ``tmp_path``, a numba cache and a claims folder of its own (the
    children inherit the environment)."""
    (tmp_path / "toy_shared_jit.py").write_text(SHARED_TOY)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GPUFRAME_COMPILE_CLAIMS", str(tmp_path / "claims"))
    return tmp_path


@pytest.mark.timeout(180)
def test_processes_sharing_compiles_compile_each_signature_once(shared_toy):
    tmp_path = shared_toy
    ctx = mp.get_context("spawn")
    n = 3
    barrier, q = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_share_one, args=(str(tmp_path), barrier, q)) for _ in range(n)]
    for p in procs:
        p.start()
    out = [q.get(timeout=150) for _ in procs]
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * n
    assert [o[0] for o in out] == [[6.0, 3.0]] * n
    # three signatures (two that compile, one that fails typing), each compiled by one process
    assert sum(o[1]["compiled"] for o in out) == 3
    assert sum(o[1]["loaded"] for o in out) == 3 * (n - 1)
    # numba's own account: two compiles in all, every other process loaded both from the cache
    assert sum(o[5] for o in out) == 2 and sum(o[4] for o in out) == 2 * (n - 1)
    # a compile that fails releases its claim: every process fails the same way, none waits it out
    assert {o[2] for o in out} == {"TypingError"}
    assert max(o[3] for o in out) < 60


def _share_under_both_names(folder, q):
    import cuda_kernels.jit_cache as one
    import gpuframe.kernels.jit_cache as other

    assert one is not other  # the package-dir mapping: two module objects, one source
    one.share_compiles(folder + "/claims")
    other.share_compiles(folder + "/claims")
    sys.path.insert(0, folder)
    import toy_shared_jit

    q.put((float(toy_shared_jit.times_two(np.int64(4))), one.shared_compiles(), other.shared_compiles()))


@pytest.mark.timeout(120)
def test_sharing_installed_under_both_module_names_compiles_once(tmp_path, monkeypatch):
    (tmp_path / "toy_shared_jit.py").write_text(SHARED_TOY)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GPUFRAME_COMPILE_CLAIMS", raising=False)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_share_under_both_names, args=(str(tmp_path), q))
    p.start()
    got, one, other = q.get(timeout=100)   # a second patch inside the first would wait on its own claim
    p.join(30)
    assert got == 8.0 and one == other == {"compiled": 1, "loaded": 0}


def _die_compiling(folder, q):
    import numba.core.compiler as compiler

    def stuck(*args, **kwargs):
        q.put("compiling")
        time.sleep(600)

    compiler.compile_extra = stuck
    sys.path.insert(0, folder)
    import toy_shared_jit

    toy_shared_jit.times_two(np.int64(3))


def _compile_after(folder, q):
    sys.path.insert(0, folder)
    import toy_shared_jit
    from cuda_kernels.jit_cache import shared_compiles

    t0 = time.monotonic()
    got = float(toy_shared_jit.times_two(np.int64(3)))
    q.put((got, time.monotonic() - t0, shared_compiles()))


@pytest.mark.timeout(120)
def test_a_process_killed_while_compiling_holds_nobody_up(shared_toy):
    tmp_path = shared_toy
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    dying = ctx.Process(target=_die_compiling, args=(str(tmp_path), q))
    dying.start()
    assert q.get(timeout=60) == "compiling"   # it holds the signature's lock now
    dying.kill()
    dying.join(30)
    q = ctx.Queue()   # a new one: the killed process may have died holding the first one's lock
    later = ctx.Process(target=_compile_after, args=(str(tmp_path), q))
    later.start()
    got, seconds, counts = q.get(timeout=90)
    later.join(30)
    assert got == 6.0 and counts == {"compiled": 1, "loaded": 0}
    assert seconds < 30, "the dead process's claim went with it (the wait would be 180 s)"


BESIDE_TOY = '''
import time

from numba import types
from numba.extending import overload

from cuda_kernels.jit_cache import njit


@njit(cache=True)
def square(x):
    return x * x


@njit(cache=True)
def broken(x):
    return x.no_such_attribute


def _stall():
    pass


@overload(_stall)
def _stall_impl():
    time.sleep(60)   # typing takes a minute: a child compiling it is given up on
    return lambda: 0


@njit(cache=True)
def stalls(x):
    _stall()
    return x
'''


def _beside_child(folder, q):
    import os
    import threading

    from numba.core.errors import TypingError

    sys.path.insert(0, folder)
    import toy_beside as toy
    from cuda_kernels import jit_cache
    from numba import types

    sig = (types.int64,)
    out = {}
    b = jit_cache.compile_beside([(toy.square, sig)])
    out["started"] = b.started
    b.wait()
    out["compiled_here"] = len(toy.square.overloads)          # the child compiled it, not this process
    out["value"] = int(toy.square(7))
    out["hits"] = len(toy.square.stats.cache_hits)            # ... and this process loaded it
    out["misses"] = len(toy.square.stats.cache_misses)
    # nothing to do: compiled (or cached) already
    out["again"] = jit_cache.compile_beside([(toy.square, sig)]).started
    # switched off, off the main thread, numba's compiler lock taken: none started
    os.environ["GPUFRAME_COMPILE_BESIDE"] = "0"
    out["off"] = jit_cache.compile_beside([(toy.square, (types.float64,))]).started
    del os.environ["GPUFRAME_COMPILE_BESIDE"]
    box = []
    t = threading.Thread(target=lambda: box.append(jit_cache.compile_beside([(toy.square, (types.float64,))]).started))
    t.start()
    t.join()
    out["thread"] = box[0]
    held, release = threading.Event(), threading.Event()

    def compiling():   # another thread inside numba's compiler
        with jit_cache.global_compiler_lock:
            held.set()
            release.wait(30)

    t = threading.Thread(target=compiling)
    t.start()
    held.wait(30)
    out["locked"] = jit_cache.compile_beside([(toy.square, (types.float64,))]).started
    release.set()
    t.join()
    # a child whose compile fails: this process compiles at the call, and fails as numba does
    b = jit_cache.compile_beside([(toy.broken, sig)])
    out["broken_started"] = b.started
    b.wait()
    try:
        toy.broken(1)
        out["broken"] = "no error"
    except TypingError:
        out["broken"] = "TypingError"
    # a child that does not finish: given up on (killed) after the shortest wait
    jit_cache._BESIDE_MIN_WAIT_S = 0.3
    b = jit_cache.compile_beside([(toy.stalls, sig)])
    t0 = time.monotonic()
    b.wait()
    out["stall_wait_s"] = time.monotonic() - t0
    out["stall_started"] = b.started
    out["gave_up"] = jit_cache._BESIDE["gave_up"]
    out["running_after"] = b.running()
    q.put(out)


@pytest.mark.timeout(180)
def test_compile_beside_compiles_in_a_child_that_this_process_loads(tmp_path, monkeypatch):
    (tmp_path / "toy_beside.py").write_text(BESIDE_TOY)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GPUFRAME_COMPILE_CLAIMS", raising=False)
    monkeypatch.delenv("GPUFRAME_COMPILE_BESIDE", raising=False)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_beside_child, args=(str(tmp_path), q))
    p.start()
    out = q.get(timeout=150)
    p.join(30)
    assert p.exitcode == 0
    assert out["started"] and out["compiled_here"] == 0
    assert out["value"] == 49 and out["hits"] == 1 and out["misses"] == 0
    assert not out["again"] and not out["off"] and not out["thread"] and not out["locked"]
    assert out["broken_started"] and out["broken"] == "TypingError"
    assert out["stall_started"] and out["gave_up"] == 1 and not out["running_after"]
    assert out["stall_wait_s"] < 10
