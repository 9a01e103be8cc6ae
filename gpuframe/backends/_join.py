"""What both join backends share: the request their drivers take, the result, who builds."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from gpuframe.kernels.join import SRC_KEY, SRC_NONE, SRC_ONE  # noqa: F401  (output-row source codes)

from ._keys import SideKeys


@dataclass
class JoinRequest:
    """What to join and what to produce.

    ``carry_left`` / ``carry_right``: int64 arrays (one word per row of that side) that
    output rows may take. ``rows``: ``(left_src, right_src, fill)`` per output row, where a
    source is an index into that side's carry list, ``SRC_KEY`` (the side's key word),
    ``SRC_ONE`` (1 where the side is present) or ``SRC_NONE``; a row with a left side takes ``left_src`` (unless ``SRC_NONE``), else
    ``right_src``, else ``fill``. ``want_indices`` adds the left and right gather maps.
    ``on_count(total_rows)`` runs once the output size is known and before anything is
    allocated for it (it raises ``MemoryError`` when the output cannot fit).

    ``views`` / ``string_views``: what the caller can do without when the output turns out to
    be one side's rows in their own order (output row ``o`` is that side's row ``o``, for every
    ``o``): ``{row index: sides}`` of ``rows`` and ``{position in string_keys: sides}``, the
    sides (``"left"``, ``"right"``) whose own column the caller takes instead, zero-copy. A
    backend that finds such an order sets :attr:`JoinResult.identity` to the side and leaves
    the rows and string keys listed for it (and that side's gather map) ``None``; ``views``
    ``None`` (the default): everything is always made.
    """

    left: SideKeys
    right: SideKeys
    how: str
    carry_left: list = field(default_factory=list)
    carry_right: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    want_indices: bool = False
    count_only: bool = False
    string_keys: list = field(default_factory=list)
    on_count: Optional[Callable[[int], None]] = None
    views: Optional[dict] = None
    string_views: dict = field(default_factory=dict)


@dataclass
class JoinResult:
    count: int
    rows: list                       # int64 arrays, one per requested row (on the device; None: see views)
    left_idx: Any = None             # int64 gather maps (semi/anti: left rows; right_idx None)
    right_idx: Any = None
    strings: list = field(default_factory=list)   # (int64 offsets [count + 1], uint8 bytes) per string key, or None
    identity: Optional[str] = None   # "left"/"right": output row o is that side's row o (JoinRequest.views)


def _sides(req: JoinRequest) -> tuple[bool, bool, bool]:
    """``(build_left, emit_unmatched_probe, emit_unmatched_build)``."""
    build_left = req.left.n < req.right.n
    keep_left = req.how in ("left", "outer")
    keep_right = req.how in ("right", "outer")
    if build_left:
        return True, keep_right, keep_left
    return False, keep_left, keep_right
