"""The time and size limits a communicator enforces: defaults, environment variables, checks.

Every wait on a peer is bounded by a timeout, and everything a peer can make us hold (pending
handshakes, parked hellos, envelope bytes, frames per message) by a fixed limit; see
docs/security.md.
"""
from __future__ import annotations

import os
from typing import Optional

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_CONNECT_TIMEOUT_S = 30.0
DEFAULT_HANDSHAKE_TIMEOUT_S = 10.0
DEFAULT_MAX_CONTROL_BYTES = 64 << 20
MAX_FRAMES_PER_MESSAGE = 1 << 20
MAX_PENDING_HANDSHAKES = 64   # incoming connections not yet past their hello, at once
MAX_PARKED_PER_RANK = 4       # hellos parked before connect(), per claimed rank (distinct tokens)
MAX_PARKED = 64               # hellos parked before connect(), in all


def _env_float(name: str, default: float) -> float:
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be a number of seconds, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"environment variable {name} must be > 0, got {text!r}")
    return value


def default_timeout() -> float:
    """Seconds a communicator waits for one phase of an operation (``GPUFRAME_COMM_TIMEOUT``)."""
    return _env_float("GPUFRAME_COMM_TIMEOUT", DEFAULT_TIMEOUT_S)


def default_handshake_timeout() -> float:
    """Seconds an incoming connection has to introduce itself (``GPUFRAME_COMM_HANDSHAKE_TIMEOUT``,
    default 10); TLS handshake included."""
    return _env_float("GPUFRAME_COMM_HANDSHAKE_TIMEOUT", DEFAULT_HANDSHAKE_TIMEOUT_S)


def default_max_control_bytes() -> int:
    """Largest envelope accepted from a peer (``GPUFRAME_COMM_MAX_CONTROL_BYTES``, default 64 MiB)."""
    text = os.environ.get("GPUFRAME_COMM_MAX_CONTROL_BYTES", "")
    if not text:
        return DEFAULT_MAX_CONTROL_BYTES
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"environment variable GPUFRAME_COMM_MAX_CONTROL_BYTES must be an int (bytes), "
                         f"got {text!r}") from None
    if value < 1024:
        raise ValueError(f"environment variable GPUFRAME_COMM_MAX_CONTROL_BYTES must be >= 1024, got {text!r}")
    return value


def check_timeout(value: Optional[float], name: str, default: float) -> float:
    """``value`` as a float when it is a positive number of seconds, ``default`` when None."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)

