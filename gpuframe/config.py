"""Process-wide settings.

Set them with ``gpuframe.config.set(name=value)``, the ``with gpuframe.config.options(...)``
context manager, or the environment variable named below (read once, at import).

``raise_on_fallback`` (``GPUFRAME_RAISE_ON_FALLBACK=1``): when True, an operation that would
fall back from the CUDA backend to the CPU raises :class:`gpuframe.FallbackError` instead of
warning.

``host_pool_limit`` (``GPUFRAME_HOST_POOL_LIMIT``): the most idle memory the host allocator
(:mod:`gpuframe.core.hostalloc`) keeps for reuse. A byte count (``1073741824``, ``"512MiB"``,
``"2GB"``), a fraction of the host's memory (``0.05``, ``"0.05"``) or a percentage (``"5%"``);
``0`` turns reuse off. ``None`` (the default): the smaller of 1 GiB and 1/16 of the memory this
process may use (physical memory, or the cgroup limit when it is lower).

``host_pool_idle_s`` (``GPUFRAME_HOST_POOL_IDLE_S``): seconds an idle buffer is kept before it
goes back to the operating system (default 5).

``host_huge_pages`` (``GPUFRAME_HOST_HUGE_PAGES``): ask for transparent huge pages
(``madvise(MADV_HUGEPAGE)``) on the host allocator's buffers of 4 MiB or more (default off). Where
the kernel hands out huge pages freely, first touches are several times faster; but with the
common ``defrag=madvise`` setting a page fault in such a mapping compacts memory synchronously,
and on the benchmark VM, with memory fragmented by other work, that made the 10M x 100M join's
fresh output 3x slower (5.4 s against 1.9 s with the setting off, same session).

``exchange_memory_budget`` (``GPUFRAME_EXCHANGE_MEMORY_BUDGET``): the memory a shuffle's exchange
may hold on each worker (:mod:`gpuframe._bounded`: its send queues, receive buffers and the
received rows it keeps; the rest spills to disk). A byte count or a size string as above, a
fraction of the worker's memory (a Dask worker's ``memory_limit``; outside Dask, the memory this
process may use), or ``0``: no budget (one exchange, everything in memory). ``None`` (the
default): a quarter of the worker's memory limit in ``gpuframe.dask.shuffle``, no budget in
``gpuframe.distributed.shuffle``. Read when the operation is built (``gpuframe.dask``) or called.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import sys
from typing import Any, Callable, Iterator, Optional, Union


def _env_flag(name: str) -> bool:
    """An on/off environment variable: unset, "", 0, false, no and off (any case) are off."""
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no", "off")


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z%]*)\s*$")


def parse_memory_size(value: Any, name: str) -> Optional[Union[int, float]]:
    """A memory size setting: ``None`` (the default), an int number of bytes, or a float in
    ``(0, 1]`` (a fraction of the host's memory). Strings take units (``"512MiB"``, ``"2GB"``,
    ``"1e9"``) or a percentage (``"5%"``); a plain number in ``(0, 1)`` is a fraction. Raises
    ``ValueError``/``TypeError`` naming ``name``, what is accepted and what was given."""
    expected = (f"{name} must be a byte count (e.g. 1073741824, '512MiB', '2GB'), a fraction of the "
                f"host's memory in (0, 1] (e.g. 0.05) or a percentage (e.g. '5%'), or None for the default")
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{expected}; got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{expected}; got {value!r}")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{expected}; got {value!r}")
        if value == 0:
            return 0
        if value <= 1:
            return float(value)
        if value.is_integer():
            return int(value)
        raise ValueError(f"{expected}; got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none", "default"):
            return None
        m = _SIZE_RE.match(text)
        if m is None:
            raise ValueError(f"{expected}; got {value!r}")
        number, unit = float(m.group(1)), m.group(2).lower()
        if unit == "%":
            if not 0 <= number <= 100:
                raise ValueError(f"{expected}; got {value!r} (a percentage must be in [0, 100])")
            return 0 if number == 0 else number / 100
        if unit == "" and 0 < number < 1:
            return number
        if unit not in _UNITS:
            raise ValueError(f"{expected}; got {value!r} (unknown unit {m.group(2)!r}; known: "
                             f"{', '.join(u for u in _UNITS if u)}, %)")
        return int(number * _UNITS[unit])
    raise TypeError(f"{expected}; got {value!r} ({type(value).__name__})")


def _parse_seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"{name} must be a number of seconds >= 0, got {value!r}")
    try:
        out = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}") from None
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return out


def _parse_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"gpuframe setting {name!r} must be a bool, got {value!r}")
    return value


def _from_env(var: str, parse: Callable[[Any, str], Any], default: Any) -> Any:
    raw = os.environ.get(var)
    if raw is None or not raw.strip():
        return default
    return parse(raw, var)


# name -> parser(value, name) returning the stored value (raises TypeError/ValueError)
_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "raise_on_fallback": _parse_bool,
    "host_pool_limit": parse_memory_size,
    "host_pool_idle_s": _parse_seconds,
    "host_huge_pages": _parse_bool,
    "exchange_memory_budget": parse_memory_size,
}

_settings: dict[str, Any] = {
    "raise_on_fallback": _env_flag("GPUFRAME_RAISE_ON_FALLBACK"),
    "host_pool_limit": _from_env("GPUFRAME_HOST_POOL_LIMIT", parse_memory_size, None),
    "host_pool_idle_s": _from_env("GPUFRAME_HOST_POOL_IDLE_S", _parse_seconds, 5.0),
    "host_huge_pages": _env_flag("GPUFRAME_HOST_HUGE_PAGES") if os.environ.get("GPUFRAME_HOST_HUGE_PAGES")
    else False,
    "exchange_memory_budget": _from_env("GPUFRAME_EXCHANGE_MEMORY_BUDGET", parse_memory_size, None),
}


def get(name: str) -> Any:
    try:
        return _settings[name]
    except KeyError:
        raise KeyError(f"unknown gpuframe setting {name!r}; known: {sorted(_settings)}") from None


def _apply(values: dict[str, Any]) -> None:
    _settings.update(values)
    if any(k.startswith("host_") for k in values):
        # the host allocator applies a lower limit (or a shorter idle time) at once
        hostalloc = sys.modules.get("gpuframe.core.hostalloc")
        if hostalloc is not None:
            hostalloc.settings_changed()


def set(**kwargs: Any) -> None:  # noqa: A001 - mirrors dask.config.set
    parsed = {}
    for k, v in kwargs.items():  # validate everything before changing anything
        get(k)
        parsed[k] = _PARSERS[k](v, k)
    _apply(parsed)


@contextlib.contextmanager
def options(**kwargs: Any) -> Iterator[None]:
    old = {k: get(k) for k in kwargs}
    set(**kwargs)
    try:
        yield
    finally:
        _apply(old)
