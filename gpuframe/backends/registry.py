"""Backend registry: which implementation of an operation runs for a device.

Each backend registers implementations by operation name. The device of the inputs picks the
ordered list of backends to try (``cuda`` then ``cpu`` for CUDA inputs); running anywhere but
the first choice is a *fallback*, which warns with :class:`PerformanceWarning` or, with
``gpuframe.config.set(raise_on_fallback=True)``, raises :class:`FallbackError`.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Tuple

from .. import config
from ..core.device import CPU, Device

_IMPLS: Dict[str, Dict[str, Callable[..., Any]]] = {"cpu": {}, "cuda": {}}
_LOADED = False


class PerformanceWarning(UserWarning):
    """An operation ran on a slower path than the inputs asked for (a CUDA->CPU fallback)."""


class FallbackError(RuntimeError):
    """A fallback happened while ``raise_on_fallback`` was set."""


def register(backend: str, op: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``fn`` implements operation ``op`` on ``backend`` ("cpu" or "cuda")."""
    if backend not in _IMPLS:
        raise ValueError(f"backend must be one of {sorted(_IMPLS)}, got {backend!r}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _IMPLS[backend][op] = fn
        return fn

    return deco


def _load() -> None:
    global _LOADED
    if not _LOADED:
        from . import cpu, cuda  # noqa: F401  (registration side effects)

        _LOADED = True


def backends_for(device: Device) -> list[str]:
    return ["cuda", "cpu"] if device.is_cuda else ["cpu"]


def resolve(op: str, device: Device) -> Tuple[Callable[..., Any], Device]:
    """The implementation of ``op`` for inputs on ``device``, and the device it runs on."""
    _load()
    order = backends_for(device)
    for name in order:
        fn = _IMPLS[name].get(op)
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


def implemented(backend: str) -> list[str]:
    _load()
    return sorted(_IMPLS[backend])
