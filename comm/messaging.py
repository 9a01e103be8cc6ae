"""Messages: point-to-point send and receive, and the all-to-all-v collective.

Every message travels in two parts: an envelope (:mod:`gpuframe.comm.envelope`) and then the
frames. The receiver allocates the frames from the envelope before the data arrives, so the
transport writes straight into their final memory. :meth:`~Messaging.aall_to_all` does this for
all peers at once: every rank first learns the sizes of every message destined to it, allocates
(optionally through a caller's ``allocator``), then sends and receives all frames concurrently.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Optional, Sequence

import numpy as np

from gpuframe.core import memory
from gpuframe.core.device import CPU

from .envelope import check_tag, encode_envelope
from .errors import CommError, MismatchError
from .frames import Allocator, Frame, FrameSpec, Message, as_frame, copy_into, frame_spec
from .limits import check_timeout


class Messaging:
    """``asend``, ``arecv`` and ``aall_to_all``, with their tags and the allocation of received frames.

    A part of :class:`~gpuframe.comm.communicator.Communicator`, which holds the state used here
    (``_rank``, ``_size``, ``device``, the sequence counters) and the transport primitives
    (``_send_control``, ``_recv_control``, ``_send_frames``, ``_recv_frames``).
    """

    def _next_collective(self, tag: Optional[int]) -> tuple[int, int]:
        if tag is None:
            self._coll_seq += 1
            return (0, self._coll_seq)
        check_tag(tag)
        return (2, int(tag))

    # ------------------------------------------------------------------ messaging (async)
    async def asend(self, peer: int, header: Any, frames: Sequence[Frame], *, tag: int = 0,
                    timeout: Optional[float] = None) -> None:
        self._check_loop()
        self._check_open()
        self._check_peer(peer)
        check_tag(tag)
        frames = [as_frame(f) for f in frames]
        envelope = encode_envelope(header, frames)
        seq = self._p2p_send_seq[(peer, tag)]
        self._p2p_send_seq[(peer, tag)] = seq + 1
        base = (1, int(tag), seq)
        limit = check_timeout(timeout, "timeout", self.timeout)
        await self._run_all([(peer, self._send_control(peer, (*base, 1), envelope)),
                             (peer, self._send_frames(peer, (*base, 2), frames))], limit, "send")

    async def arecv(self, peer: int, *, tag: int = 0, timeout: Optional[float] = None) -> Message:
        self._check_loop()
        self._check_open()
        self._check_peer(peer)
        check_tag(tag)
        seq = self._p2p_recv_seq[(peer, tag)]
        self._p2p_recv_seq[(peer, tag)] = seq + 1
        base = (1, int(tag), seq)
        limit = check_timeout(timeout, "timeout", self.timeout)
        (payload,) = await self._run_all([(peer, self._recv_control(peer, (*base, 1)))],
                                         limit, "recv (envelope)")
        header, specs = await self._decode_or_break(peer, payload, "recv")
        buffers = [self._allocate(s) for s in specs]
        await self._run_all([(peer, self._recv_frames(peer, (*base, 2), buffers))],
                            limit, "recv (frames)")
        return header, buffers

    async def aall_to_all(self, messages: Sequence[Message], *, tag: Optional[int] = None,
                          allocator: Optional[Allocator] = None, timeout: Optional[float] = None,
                          stats: Optional[dict] = None) -> list[Message]:
        """Send ``messages[p]`` to every rank ``p`` and receive one message from each.

        Parameters
        ----------
        messages : sequence of (header, frames)
            One per rank, this rank's own included (it is returned as a copy).
        tag : int, optional
            Identifies this exchange. Without it, exchanges are numbered in call order, which
            must then be the same on every rank. Concurrent exchanges need distinct tags.
        allocator : callable, optional
            ``allocator([(header, [FrameSpec, ...]) per rank]) -> [[array, ...] per rank]``:
            called once every rank's sizes are known, returns the arrays that each incoming
            frame is written into (views into larger buffers are fine). Default: a fresh array
            per frame.
        timeout : float, optional
            Seconds each phase (sizes, then data) may wait; default ``self.timeout``.
        stats : dict, optional
            ``sizes_s`` (the first phase: it also absorbs the wait for the slowest rank to arrive)
            and ``data_s`` (allocation and the data transfer) are added to it.

        Returns
        -------
        list of (header, frames)
            ``result[p]`` is the message from rank ``p``.
        """
        self._check_loop()
        self._check_open()
        if len(messages) != self._size:
            raise ValueError(f"messages must hold one (header, frames) per rank ({self._size}), got {len(messages)}")
        out = []
        for p, msg in enumerate(messages):
            if not isinstance(msg, (tuple, list)) or len(msg) != 2:
                raise TypeError(f"messages[{p}] must be a (header, frames) pair, got {type(msg).__name__}")
            out.append((msg[0], [as_frame(f) for f in msg[1]]))
        op = self._next_collective(tag)
        limit = check_timeout(timeout, "timeout", self.timeout)
        loop = asyncio.get_running_loop()
        me = self._rank
        peers = [p for p in range(self._size) if p != me]

        # Phase 1: sizes. Each rank learns the header and frame sizes of every message to it.
        t0 = loop.time()
        envelopes = {p: encode_envelope(out[p][0], out[p][1]) for p in peers}
        jobs: list[tuple[int, Awaitable[Any]]] = []
        for p in peers:
            jobs.append((p, self._send_control(p, (*op, p, 1), envelopes[p])))
            jobs.append((p, self._recv_control(p, (*op, me, 1))))
        results = await self._run_all(jobs, limit, "all_to_all (sizes)")
        incoming: list[tuple[Any, list[FrameSpec]]] = [None] * self._size  # type: ignore[list-item]
        for i, p in enumerate(peers):
            incoming[p] = await self._decode_or_break(p, results[2 * i + 1], "all_to_all (sizes)")
        incoming[me] = (out[me][0], [frame_spec(f) for f in out[me][1]])
        t1 = loop.time()

        # Allocate every destination before any data moves. A failure here leaves the peers
        # waiting for our data: close, so that they learn it at once instead of timing out;
        # except for a mismatch that every rank sees in the sizes (MismatchError): every rank
        # raises it before posting any data, and closing here could break a peer's sizes phase
        # before it has seen the mismatch itself (it would then report our closing instead).
        try:
            if allocator is not None:
                dest = allocator(incoming)
                _check_destinations(dest, incoming)
            else:
                dest = [[self._allocate(s) for s in specs] for _h, specs in incoming]
        except MismatchError:
            raise
        except BaseException as exc:
            await self._break(exc)
            raise

        # Phase 2: data, all sends and receives at once; the local share is copied meanwhile.
        jobs = []
        for p in peers:
            jobs.append((p, self._send_frames(p, (*op, p, 2), out[p][1])))
            jobs.append((p, self._recv_frames(p, (*op, me, 2), dest[p])))
        local = asyncio.ensure_future(asyncio.to_thread(_copy_all, dest[me], out[me][1]))
        try:
            await self._run_all(jobs, limit, "all_to_all (data)")
        finally:
            await local
        if stats is not None:
            stats["sizes_s"] = stats.get("sizes_s", 0.0) + (t1 - t0)
            stats["data_s"] = stats.get("data_s", 0.0) + (loop.time() - t1)
        return [(incoming[p][0], dest[p]) for p in range(self._size)]

    def _allocate(self, spec: FrameSpec) -> Frame:
        device = self.device if spec.device == "cuda" else CPU
        return memory.empty(spec.count, np.dtype(spec.dtype), device)


def _check_destinations(dest: Any, incoming: list[tuple[Any, list[FrameSpec]]]) -> None:
    if not isinstance(dest, (list, tuple)) or len(dest) != len(incoming):
        raise CommError(f"the allocator must return one list of arrays per rank ({len(incoming)}), got {dest!r:.80}")
    for p, (bufs, (_h, specs)) in enumerate(zip(dest, incoming)):
        if len(bufs) != len(specs):
            raise CommError(f"the allocator returned {len(bufs)} arrays for rank {p}, which sends {len(specs)} frames")
        for i, (b, s) in enumerate(zip(bufs, specs)):
            if b.nbytes != s.nbytes:
                raise CommError(f"the allocator's array {i} for rank {p} has {b.nbytes} bytes, the frame has {s.nbytes}")


def _copy_all(dest: list[Frame], frames: list[Frame]) -> None:
    for d, f in zip(dest, frames):
        copy_into(d, f)
