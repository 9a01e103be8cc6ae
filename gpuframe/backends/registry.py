"""Backend registry: which implementation of an operation runs for a device.

Implementations are named in a declarative table, :data:`LAZY`: ``(backend, op)`` ->
``"module:attribute"``, imported with :mod:`importlib` the first time that operation runs on
that backend (in the spirit of Dask's ``Dispatch.register_lazy``). Importing gpuframe, or
running on the CPU, therefore never imports the CUDA backend's modules or ``numba.cuda``; and
the backends import nothing from here for their registration.

The device of the inputs picks the ordered list of backends to try (``cuda`` then ``cpu`` for
CUDA inputs); running anywhere but the first choice is a *fallback*, which warns with
:class:`PerformanceWarning` or, with ``gpuframe.config.set(raise_on_fallback=True)``, raises
:class:`FallbackError`. An *optional* operation (a capability, such as the CPU's ``join_fused``)
is asked for with :func:`capability`, which never falls back.
"""
from __future__ import annotations

import importlib
import threading
import warnings
from typing import Any, Callable, Dict, Optional, Tuple

from .. import config
from ..core.device import CPU, Device
from ..errors import FallbackError, PerformanceWarning

__all__ = ["FallbackError", "PerformanceWarning", "LAZY", "register", "register_lazy", "resolve",
           "capability", "implemented", "backends_for"]

BACKENDS = ("cpu", "cuda")

# (backend, operation) -> "module:attribute"; the contract of each operation is in
# gpuframe.backends.contract
LAZY: Dict[Tuple[str, str], str] = {
    ("cpu", "hash_rows"): "gpuframe.backends.cpu.hashing:hash_rows",
    ("cpu", "partition_ids"): "gpuframe.backends.cpu.partition:partition_ids",
    ("cpu", "hash_partition"): "gpuframe.backends.cpu.partition:hash_partition",
    ("cpu", "check_indices"): "gpuframe.backends.cpu.gather:check_indices",
    ("cpu", "gather_column"): "gpuframe.backends.cpu.gather:gather_column",
    ("cpu", "join"): "gpuframe.backends.cpu.join:join",
    ("cpu", "join_size"): "gpuframe.backends.cpu.join:join_size",
    ("cpu", "merged_key"): "gpuframe.backends.cpu.join:merged_key",
    ("cpu", "join_fused"): "gpuframe.backends.cpu.join:join_fused",
    ("cpu", "hash_partition_heavy"): "gpuframe.backends.cpu.partition:hash_partition_heavy",
    ("cuda", "hash_rows"): "gpuframe.backends.cuda.hashing:hash_rows",
    ("cuda", "partition_ids"): "gpuframe.backends.cuda.partition:partition_ids",
    ("cuda", "hash_partition"): "gpuframe.backends.cuda.partition:hash_partition",
    ("cuda", "check_indices"): "gpuframe.backends.cuda.gather:check_indices",
    ("cuda", "gather_column"): "gpuframe.backends.cuda.gather:gather_column",
    ("cuda", "join"): "gpuframe.backends.cuda.join:join",
    ("cuda", "join_size"): "gpuframe.backends.cuda.join:join_size",
    ("cuda", "merged_key"): "gpuframe.backends.cuda.join:merged_key",
    ("cpu", "sort_indices"): "gpuframe.backends.cpu.sort:sort_indices",
    ("cpu", "sort_keyed"): "gpuframe.backends.cpu.sort:sort_keyed",
    ("cpu", "merge_indices"): "gpuframe.backends.cpu.sort:merge_indices",
    ("cpu", "group_ids"): "gpuframe.backends.cpu.groups:group_ids",
    ("cpu", "group_reduce"): "gpuframe.backends.cpu.groups:group_reduce",
    ("cpu", "last_rows"): "gpuframe.backends.cpu.groups:last_rows",
    ("cpu", "first_rows"): "gpuframe.backends.cpu.groups:first_rows",
    ("cpu", "distinct_rows"): "gpuframe.backends.cpu.groups:distinct_rows",
    ("cpu", "dense_groups"): "gpuframe.backends.cpu.groups:dense_groups",
    ("cpu", "group_reduce_many"): "gpuframe.backends.cpu.groups:group_reduce_many",
    ("cpu", "mask_rows"): "gpuframe.backends.cpu.select:mask_rows",
    ("cpu", "concat_columns"): "gpuframe.backends.cpu.select:concat_columns",
    ("cuda", "group_ids"): "gpuframe.backends.cuda.groups:group_ids",
    ("cuda", "group_reduce"): "gpuframe.backends.cuda.groups:group_reduce",
    ("cuda", "last_rows"): "gpuframe.backends.cuda.groups:last_rows",
    ("cuda", "mask_rows"): "gpuframe.backends.cuda.select:mask_rows",
    ("cuda", "concat_columns"): "gpuframe.backends.cuda.select:concat_columns",
    ("cpu", "cross_maps"): "gpuframe.backends.cpu.select:cross_maps",
    ("cpu", "cast_column"): "gpuframe.backends.cpu.select:cast_column",
    ("cpu", "valid_rows"): "gpuframe.backends.cpu.select:valid_rows",
    ("cuda", "valid_rows"): "gpuframe.backends.cuda.select:valid_rows",
    ("cuda", "cast_column"): "gpuframe.backends.cuda.select:cast_column",
    ("cuda", "cross_maps"): "gpuframe.backends.cuda.select:cross_maps",
    ("cuda", "sort_indices"): "gpuframe.backends.cuda.sort:sort_indices",
}

_IMPLS: Dict[str, Dict[str, Callable[..., Any]]] = {name: {} for name in BACKENDS}
_LOCK = threading.Lock()


def _check_backend(backend: str) -> None:
    if backend not in _IMPLS:
        raise ValueError(f"backend must be one of {sorted(_IMPLS)}, got {backend!r}")


def register(backend: str, op: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``fn`` implements operation ``op`` on ``backend`` ("cpu" or "cuda") (it takes
    precedence over an entry of :data:`LAZY`)."""
    _check_backend(backend)

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _IMPLS[backend][op] = fn
        return fn

    return deco


def register_lazy(backend: str, op: str, target: str) -> None:
    """Name the implementation of ``op`` on ``backend`` as ``"module:attribute"``; it is imported
    when the operation first runs there."""
    _check_backend(backend)
    module, sep, attr = target.partition(":")
    if not (module and sep and attr):
        raise ValueError(f"target must be 'module:attribute', got {target!r}")
    with _LOCK:
        LAZY[(backend, op)] = target
        _IMPLS[backend].pop(op, None)


def _lookup(backend: str, op: str) -> Optional[Callable[..., Any]]:
    fn = _IMPLS[backend].get(op)
    if fn is not None:
        return fn
    target = LAZY.get((backend, op))
    if target is None:
        return None
    module, _, attr = target.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    with _LOCK:
        _IMPLS[backend].setdefault(op, fn)
    return fn


def backends_for(device: Device) -> list[str]:
    return ["cuda", "cpu"] if device.is_cuda else ["cpu"]


def resolve(op: str, device: Device) -> Tuple[Callable[..., Any], Device]:
    """The implementation of ``op`` for inputs on ``device``, and the device it runs on."""
    order = backends_for(device)
    for name in order:
        fn = _lookup(name, op)
        if fn is not None:
            break
    else:
        raise NotImplementedError(f"no backend implements {op!r} (tried {order})")
    if name != order[0]:
        msg = (f"{op!r} has no {order[0]} implementation; it runs on the {name} backend "
               f"and the data moves from {device} to the host and back")
        if config.get("raise_on_fallback"):
            raise FallbackError(msg)
        warnings.warn(msg, PerformanceWarning, stacklevel=3)
        return fn, CPU
    return fn, device


def capability(op: str, device: Device) -> Optional[Callable[..., Any]]:
    """The implementation of the optional operation ``op`` by the backend that runs inputs on
    ``device`` (the first of :func:`backends_for`), or ``None`` when that backend has none.
    Never a fallback: an op asks for a capability and takes its general path without it."""
    return _lookup(backends_for(device)[0], op)


def implemented(backend: str) -> list[str]:
    """The operations ``backend`` implements (registered or named in :data:`LAZY`)."""
    _check_backend(backend)
    return sorted(set(_IMPLS[backend]) | {op for (name, op) in LAZY if name == backend})
