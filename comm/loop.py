"""The event loop that communicators run on, and closing them at interpreter exit.

Communicators created outside an event loop share one :class:`EventLoopThread` per process.
Live communicators are tracked (weakly) so that, once that thread exists, an exit hook closes
those still open and then runs the hooks transports register (:func:`at_exit`; the UCX transport
stops the ucxx notifier thread it started).
"""
from __future__ import annotations

import asyncio
import atexit
import threading
import weakref
from typing import Any, Callable, ClassVar, Optional


class EventLoopThread:
    """An asyncio event loop running in a daemon thread.

    Communicators created outside an event loop (plain scripts, one rank per process) share
    one of these per process: UCX binds its completion notifications to one loop.
    """

    _shared: ClassVar[Optional["EventLoopThread"]] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str = "gpuframe-comm") -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()
        ready.wait()

    @classmethod
    def shared(cls) -> "EventLoopThread":
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
                atexit.register(_close_live_communicators)
            return cls._shared


_LIVE: "weakref.WeakSet[Any]" = weakref.WeakSet()  # communicators not closed yet
_EXIT_HOOKS: list[Callable[[], None]] = []


def track(comm: Any) -> None:
    """Close ``comm`` at interpreter exit unless it is closed (or collected) before."""
    _LIVE.add(comm)


def untrack(comm: Any) -> None:
    _LIVE.discard(comm)


def at_exit(hook: Callable[[], None]) -> None:
    """Run ``hook()`` at interpreter exit, after the live communicators are closed."""
    _EXIT_HOOKS.append(hook)


def _close_live_communicators() -> None:
    for comm in list(_LIVE):
        try:
            comm.close(timeout=5)
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass
    for hook in _EXIT_HOOKS:
        hook()


def consume_exception(task: "asyncio.Future[Any]") -> None:
    """Done-callback: mark a task's exception as seen (it is reported another way, or moot)."""
    if not task.cancelled():
        task.exception()
