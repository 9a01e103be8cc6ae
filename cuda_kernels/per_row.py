"""Per-row functions: one definition, compiled for each target.

A per-row function is a plain Python function in the module of its family (hashing, keys,
hashtable, loads). It reaches each target like this:

* ``cuda.jit`` kernels and any ``njit`` code call it by its name: :func:`per_row` registers it
  with ``register_jitable`` (a call, not inlined; NVVM inlines device functions itself);
* the CPU drivers call :func:`cpu` copies: ``njit(inline="always")`` dispatchers of the same
  code object whose calls to other per-row functions go to *their* CPU copies, so a driver's
  whole per-row path is inlined into its loop in numba's IR. Left as calls (``register_jitable``
  alone), with their many array arguments, they made the CPU join of 2M x 10M int64 keys 8 to
  10 times slower (4.3-6.1 s against 0.5 s, same machine);
* plain Python, which is what the CUDA simulator runs.

Where the targets must differ (an atomic, a wide unaligned load), :func:`per_target` gives one
name a CPU implementation; its own body serves CUDA (registered by the module's
``register_cuda_overloads``) and the simulator.

The CPU copies are separate objects from the functions the CUDA kernels call: a CPU
``overload(fn, inline="always")`` on the shared function leaves numba-core IR in the template's
inline cache, which numba-cuda (0.30.4) then inlined into CUDA kernels and failed with
``assert isinstance(inst, Stmt)`` (first real-GPU run; tests/test_per_row_targets.py).
"""
from __future__ import annotations

import types
from typing import Any, Callable

from numba import njit
from numba.extending import overload, register_jitable

__all__ = ["cpu", "cpu_variant", "per_row", "per_target", "register_cuda_bodies"]

_DEFINED: dict[str, Callable] = {}   # name -> the one definition
_CPU_IMPL: dict[str, Callable] = {}  # name -> CPU implementation of a per-target name
_CPU: dict[str, Any] = {}            # name -> its CPU copy (njit, inline="always")
_CUDA_BODIES: set[str] = set()       # per-target names whose own body is registered for CUDA
_VARIANTS: dict[tuple[int, str], Any] = {}   # (id of a dispatcher, variant) -> its variant


def _register(fn: Callable) -> None:
    name = fn.__name__
    if name in _DEFINED and _DEFINED[name] is not fn:
        raise ValueError(f"per-row function {name!r} defined twice: {_DEFINED[name].__module__} and "
                         f"{fn.__module__}")
    _DEFINED[name] = fn


def per_row(fn: Callable) -> Callable:
    """Declare ``fn`` a per-row function (callable from ``njit`` and ``cuda.jit`` code)."""
    _register(fn)
    register_jitable(fn)
    return fn


def _returns(impl: Callable) -> Callable:
    def typer(*args: Any, **kws: Any) -> Callable:
        return impl

    return typer


def per_target(cpu_impl: Callable) -> Callable[[Callable], Callable]:
    """Declare the decorated function a per-row name whose CPU implementation is ``cpu_impl``
    (same arguments); its own body is the CUDA and simulator implementation."""
    def wrap(fn: Callable) -> Callable:
        _register(fn)
        _CPU_IMPL[fn.__name__] = cpu_impl
        overload(fn, target="cpu", strict=False)(_returns(cpu_impl))
        return fn

    return wrap


def register_cuda_bodies(*fns: Callable) -> None:
    """Register the bodies of per-target names ``fns`` as their CUDA implementations
    (idempotent; imports ``numba.cuda``: called by the CUDA kernel factories, so that importing a
    kernel module never does)."""
    todo = [fn for fn in fns if fn.__name__ not in _CUDA_BODIES]
    if not todo:
        return
    from numba.cuda.extending import overload as cuda_overload

    for fn in todo:
        if fn.__name__ not in _CPU_IMPL or _DEFINED.get(fn.__name__) is not fn:
            raise TypeError(f"{getattr(fn, '__qualname__', fn)!r} is not a per-target function")
        cuda_overload(fn, target="cuda", strict=False)(_returns(fn))
        _CUDA_BODIES.add(fn.__name__)


def _is_per_row(value: Any) -> bool:
    return isinstance(value, types.FunctionType) and _DEFINED.get(value.__name__) is value


def cpu(fn: Callable) -> Any:
    """The CPU drivers' copy of per-row function ``fn`` (see the module docstring)."""
    if not _is_per_row(fn):
        raise TypeError(f"{getattr(fn, '__qualname__', fn)!r} is not a per-row function")
    name = fn.__name__
    if name in _CPU:
        return _CPU[name]
    src = _CPU_IMPL.get(name, fn)
    env = dict(src.__globals__)
    copy = types.FunctionType(src.__code__, env, name, src.__defaults__, src.__closure__)
    copy.__qualname__ = src.__qualname__
    disp = njit(inline="always")(copy)
    _CPU[name] = disp
    for key, value in list(env.items()):
        if _is_per_row(value):
            env[key] = cpu(value)
    return disp


def cpu_variant(disp: Any, variant: str, replace: dict[str, Any]) -> Any:
    """A copy of CPU dispatcher ``disp`` (a kernel, an item function or an inlined helper) in
    which the global names ``replace`` lists are bound to other functions, in its own code and
    in every dispatcher it calls that reaches one of them (copied the same way, inlined as
    before); ``disp`` itself if nothing it reaches uses those names.

    The join's kernels compile a word-key variant this way (``join_cpu.for_keys``): the general
    keys' comparison, hash, one-row lookups and string-key output (``join_cpu._WORD_KEYS``)
    bound to stubs, which a word key never calls (its ``verify`` is false), so that numba types
    and inlines none of that code. The copy is named ``<name>__<variant>``: a caching kernel's
    copy has a disk cache of its own (numba names the cache files after the qualified name)."""
    key = (id(disp), variant)
    if key in _VARIANTS:
        return _VARIANTS[key]
    py = disp.py_func
    env = dict(py.__globals__)
    changed = False
    for name in py.__code__.co_names:
        if name in replace:
            env[name] = replace[name]
            changed = True
        elif hasattr(env.get(name), "py_func") and hasattr(env[name], "targetoptions"):
            sub = cpu_variant(env[name], variant, replace)
            if sub is not env[name]:
                env[name] = sub
                changed = True
    if not changed:
        _VARIANTS[key] = disp
        return disp
    copy = types.FunctionType(py.__code__, env, f"{py.__name__}__{variant}", py.__defaults__, py.__closure__)
    copy.__qualname__ = f"{py.__qualname__}__{variant}"
    copy.__doc__ = py.__doc__
    opts = {k: v for k, v in disp.targetoptions.items() if k not in ("nopython", "boundscheck")}
    if type(getattr(disp, "_cache", None)).__name__ != "NullCache":
        from .jit_cache import njit as cached_njit
        out = cached_njit(cache=True, **opts)(copy)
    else:
        out = njit(**opts)(copy)
    _VARIANTS[key] = out
    return out
