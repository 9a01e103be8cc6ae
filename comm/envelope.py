"""Envelopes and tags: what travels ahead of a message's frames, and how messages are matched.

An envelope is the message's header plus each frame's :class:`~gpuframe.comm.frames.FrameSpec`,
encoded with msgpack (plain data only: nothing received is unpickled or evaluated). A decoded
envelope is checked: a map with exactly the keys ``h`` and ``f``, at most
``MAX_FRAMES_PER_MESSAGE`` frames, every spec valid. Tags are tuples of ints naming one message
of one operation on a connection.
"""
from __future__ import annotations

import hashlib
import struct
from typing import Any, Sequence

import numpy as np

from .frames import Frame, FrameSpec, frame_spec
from .limits import MAX_FRAMES_PER_MESSAGE


def _msgpack():
    try:
        import msgpack
    except ImportError as exc:  # pragma: no cover - msgpack ships with distributed
        raise ImportError("gpuframe.comm needs msgpack: pip install msgpack") from exc
    return msgpack


def encode_envelope(header: Any, frames: Sequence[Frame]) -> bytes:
    """The envelope of a message: its header and its frames' specs, msgpack-encoded."""
    specs = [frame_spec(f).to_wire() for f in frames]
    try:
        return _msgpack().packb({"h": header, "f": specs}, use_bin_type=True)
    except TypeError as exc:
        raise TypeError(f"a message header must be msgpack-serialisable (dict, list, str, bytes, numbers): {exc}") from None


def decode_envelope(payload: Any, max_frames: int = MAX_FRAMES_PER_MESSAGE) -> tuple[Any, list[FrameSpec]]:
    """Header and frame specs of a received envelope; ``ValueError`` saying what is wrong.

    msgpack decodes plain data only (no objects are built from the bytes); every frame spec is
    checked (:meth:`FrameSpec.from_wire`).
    """
    msgpack = _msgpack()
    try:
        doc = msgpack.unpackb(bytes(payload) if not isinstance(payload, bytes) else payload,
                              raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types (ExtraData, FormatError, ValueError...)
        raise ValueError(f"the envelope is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict) or set(doc) != {"h", "f"}:
        raise ValueError(f"an envelope must be a map with keys 'h' and 'f', got {doc!r:.100}")
    specs = doc["f"]
    if not isinstance(specs, list):
        raise ValueError(f"an envelope's frame list must be a list, got {type(specs).__name__}")
    if len(specs) > max_frames:
        raise ValueError(f"an envelope announces {len(specs)} frames, more than the limit of {max_frames}")
    return doc["h"], [FrameSpec.from_wire(s) for s in specs]


def tag_to_int(tag: tuple[int, ...]) -> int:
    """A stable 63-bit integer for a tuple of ints (the same in every process)."""
    digest = hashlib.blake2b(struct.pack(f"<{len(tag)}q", *tag), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def check_tag(tag: Any) -> None:
    """A user tag must be an int in [0, 2**62)."""
    if isinstance(tag, bool) or not isinstance(tag, (int, np.integer)) or not 0 <= int(tag) < 2**62:
        raise ValueError(f"tag must be an int in [0, 2**62), got {tag!r}")

