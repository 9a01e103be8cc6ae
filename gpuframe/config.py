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

_settings: dict[str, Any] = {
    "raise_on_fallback": os.environ.get("GPUFRAME_RAISE_ON_FALLBACK", "0") not in ("", "0", "false", "False"),
}


def get(name: str) -> Any:
    try:
        return _settings[name]
    except KeyError:
        raise KeyError(f"unknown gpuframe setting {name!r}; known: {sorted(_settings)}") from None


def set(**kwargs: Any) -> None:  # noqa: A001 - mirrors dask.config.set
    for k, v in kwargs.items():
        get(k)
        _settings[k] = v


@contextlib.contextmanager
def options(**kwargs: Any) -> Iterator[None]:
    old = {k: get(k) for k in kwargs}
    set(**kwargs)
    try:
        yield
    finally:
        _settings.update(old)
