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
