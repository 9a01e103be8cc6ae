"""Process-wide settings.

``raise_on_fallback``: when True, an operation that would fall back from the CUDA backend to
the CPU raises :class:`gpuframe.FallbackError` instead of warning. Set it with
``gpuframe.config.set(raise_on_fallback=True)``, the ``with gpuframe.config.options(...)``
context manager, or the environment variable ``GPUFRAME_RAISE_ON_FALLBACK=1``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator


def _env_flag(name: str) -> bool:
    """An on/off environment variable: unset, "", 0, false, no and off (any case) are off."""
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no", "off")


_settings: dict[str, Any] = {
    "raise_on_fallback": _env_flag("GPUFRAME_RAISE_ON_FALLBACK"),
}
_TYPES: dict[str, type] = {"raise_on_fallback": bool}


def get(name: str) -> Any:
    try:
        return _settings[name]
    except KeyError:
        raise KeyError(f"unknown gpuframe setting {name!r}; known: {sorted(_settings)}") from None


def set(**kwargs: Any) -> None:  # noqa: A001 - mirrors dask.config.set
    for k, v in kwargs.items():  # validate everything before changing anything
        get(k)
        if not isinstance(v, _TYPES[k]):
            raise TypeError(f"gpuframe setting {k!r} must be a {_TYPES[k].__name__}, got {v!r}")
    _settings.update(kwargs)


@contextlib.contextmanager
def options(**kwargs: Any) -> Iterator[None]:
    old = {k: get(k) for k in kwargs}
    set(**kwargs)
    try:
        yield
    finally:
        _settings.update(old)
