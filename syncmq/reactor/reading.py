"""The reactor's receive side (a mixin of :class:`~.loop.Reactor`): the TLS handshake, reads,
the protocol header, handing input to the connection's worker (which cuts it into frames,
:meth:`Reader._handle_data`) and the input flow control (``FLOW_HIGH``/``FLOW_LOW``).

Everything here runs on the reactor thread except :meth:`Reader._input_turn` and
:meth:`Reader._handle_data`, which run as a task of the connection's worker (on its thread)
and own ``Transport.rest``/``rest_len``/``rest_need``. A small light read into an idle lane
skips them: the reactor cuts it itself (``_light``) and hands the frames to the handler in
the idle worker's place (:meth:`Reader._read`).
"""

from __future__ import annotations

import selectors
import ssl
import struct
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

from ..wire._spec import FRAME_MIN_SIZE
from ..wire.frames import PROTOCOL_HEADER, split_frames
from .transport import Transport, _fmt_peer, log

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..workers import WorkerPool

RECV_SIZE = 256 * 1024
# Protocol headers we speak: 0-9-1, and the 0-9 header, which rabbit_reader
# version_negotiation({1, 1, 0, 9}) "can safely treat as though it were 0-9-1". Any other
# header is answered with the 0-9-1 one and the socket closed.
ACCEPTED_HEADERS = (PROTOCOL_HEADER, b"AMQP\x01\x01\x00\x09")
# Octets a frame may exceed frame_max by: rabbit_reader's ?FRAME_SIZE_FUDGE (= the 8 octets of
# an empty frame), "since quite a few [clients] get it wrong - off-by 1 or 8".
FRAME_MAX_SLACK = 8
# A large read of small frames is cut and handed to the handler SLICE octets at a time
# (Reader._handle_slices), not whole: the frames and messages of a 256 KiB read of 16 B
# publishes are ~10,000 objects, ~1.8 MB, more than a core's L2 (1 MiB here), so cutting it
# all before handling any wrote them out of the cache and handling them read them back.
# A slice of fewer than SLICE_MIN_FRAMES frames (messages of ~256 B and more) ends the
# slicing: the rest of the read is cut whole as before (issue #22, S5).
SLICE = 32 * 1024
SLICE_MIN_FRAMES = 384
# Before any slice is cut, the first DENSITY_PROBE frame headers of the read are looked at: if
# they average more than SLICE // SLICE_MIN_FRAMES octets a frame, no slice would hold enough
# frames and the read is cut whole at once (S3's 1 KiB publishes were cut twice: a 32 KiB
# slice found too few frames, then the whole read again; 13 % of S3's GIL samples in
# split_frames).
DENSITY_PROBE = 4
# Flow control: a connection whose worker has FLOW_HIGH reads not yet handled stops
# being read until the backlog is down to FLOW_LOW. A publisher that floods faster than the
# broker routes is slowed to the broker's pace instead of filling memory with unparsed frames
# (RabbitMQ's credit flow between reader and channel plays the same part).
FLOW_HIGH = 8
FLOW_LOW = 2
# A read of at most this many bytes that holds only light frames (_light), for a connection
# with nothing waiting in its lane, is handled on the reactor thread when every worker is
# idle (Reader._read): a few dozen small messages at most, so the reactor's turn stays
# short.
INLINE_MAX = 4096
assert INLINE_MAX <= FRAME_MIN_SIZE  # (_light: no frame of such a read exceeds frame_max)
_FRAME_SIZE = struct.Struct(">I").unpack_from  # a frame header's payload size, at offset 3
_FRAME_HEAD = struct.Struct(">BHI").unpack_from  # type, channel, payload size
_METHOD_ID = struct.Struct(">I").unpack_from  # class id << 16 | method id
_BODY_SIZE = struct.Struct(">Q").unpack_from  # a content header's body size (payload + 4)
_METHOD_HEAD = struct.Struct(">BHII").unpack_from  # a method frame's head and method id
# from a frame's end octet: that octet, the next frame's head and (a header frame's) body size
_END_HEADER = struct.Struct(">BBHI4xQ").unpack_from
_END_HEAD = struct.Struct(">BBHI").unpack_from  # from a frame's end octet: it, the next head
_PUBLISH = (60 << 16) | 40
# the shortest read of one publish with a body: method (9-octet payload), header, 1 octet
_TRIO_MIN = 17 + 22 + 9
_ACK_LEN = 21  # a basic.ack frame: header, class and method ids, tag, bits, end octet
# a whole basic.ack frame: type, channel, size, class and method ids, the bits, the end octet
_ACK_FRAME = struct.Struct(">BHII8xBB").unpack
# basic.publish and basic.ack: the per-message methods, whose cost is one message's. Not
# basic.reject or basic.nack (their requeue=false dead-letters: one more publish, to as many
# queues as the dead-letter exchange routes to), nor any other method (a purge, requeue,
# delete or settle of unbounded size)
_LIGHT_METHODS = frozenset(((60 << 16) | 40, (60 << 16) | 80))
_ACK = (60 << 16) | 80
# ... and an ack only without ``multiple`` (it settles any number of messages): the bit is the
# first of the octet after the 8-octet delivery tag, 19 octets from the frame's start
_MULTIPLE_AT = 19


def _light(data: bytes, need: int = 0) -> tuple[int, list | None]:
    """Whether ``data`` may be handled by the reactor standing in, and its frames:
    ``(need, frames)``, ``(-1, None)`` if not. ``need`` is then the body octets of a small
    content still to come after ``data`` (0: it ends at a content's end), ``frames`` what
    :func:`~syncmq.wire.frames.split_frames` cuts from ``data``: ``[(type, channel,
    payload), ...]``, the payloads ``bytes`` slices (the stand-in hands them to the handler
    without cutting the read a second time).

    The ``need`` argument: what the previous read left of a small content (-1: not known,
    that read was not looked at here). ``data`` is light if it is whole frames (none cut
    short, each with its end octet), each a light method (``_LIGHT_METHODS``, an ack without
    ``multiple``), a content header that declares at most ``INLINE_MAX`` body octets, a body
    frame of such a content (begun in this read, or in the previous one as ``need`` says),
    or a heartbeat without payload. So the reactor never collects a large body (the read
    that completes a 100 MiB body would join it on the reactor thread), nor handles a frame
    whose start it has not seen. Whatever ``split_frames`` would call an error (a bad end
    octet, a heartbeat with a payload, an unknown type) is not light: the worker cuts that
    read and reports the error. No frame of a read of at most ``INLINE_MAX`` octets can
    exceed ``frame_max`` (at least ``FRAME_MIN_SIZE``), so its bound needs no check here.
    O(frames); reads only frame headers, method ids, declared body sizes and end octets.

    A read that is exactly one publish (method, header, one body frame: a lone message, S8)
    or one ack is checked in one straight run first, without the loop."""
    n = len(data)
    if n == _ACK_LEN and need <= 0:  # (a method frame starts afresh: need 0 or unknown)
        t1, c1, s1, method, bits, end = _ACK_FRAME(data)
        if t1 == 1 and s1 == 13 and method == _ACK and not bits & 1 and end == 206:
            return 0, [(1, c1, data[7:20])]
    elif n >= _TRIO_MIN and need <= 0:
        t1, c1, s1, method = _METHOD_HEAD(data, 0)
        e1 = s1 + 7  # the method frame's end octet
        # (a method frame shorter than its id would end inside it: ``end1`` would be one of
        # the publish id's octets, none of which is 206)
        if t1 == 1 and method == _PUBLISH and e1 + 20 <= n:
            end1, t2, c2, s2, size = _END_HEADER(data, e1)
            e2 = e1 + s2 + 8  # the header frame's end octet
            if end1 == 206 and t2 == 2 and s2 >= 12 and 0 < size <= INLINE_MAX and \
                    e2 + size + 9 == n:
                end2, t3, c3, s3 = _END_HEAD(data, e2)
                if end2 == 206 and t3 == 3 and s3 == size and data[-1] == 206:
                    return 0, [(1, c1, data[7:e1]), (2, c2, data[e1 + 8:e2]),
                               (3, c3, data[e2 + 8:-1])]
    pos = 0
    frames: list = []
    append = frames.append
    while pos + 7 <= n:
        ftype, channel, size = _FRAME_HEAD(data, pos)
        end = pos + size + 7  # (the end octet's position)
        if end >= n or data[end] != 206:
            return -1, None
        if ftype == 3:
            if size > need:  # (need -1: a body whose header this side did not see)
                return -1, None
            need -= size
        elif need > 0:
            return -1, None  # (a frame between a header and the end of its body)
        elif ftype == 1:
            if size < 4:
                return -1, None
            method = _METHOD_ID(data, pos + 7)[0]
            if method not in _LIGHT_METHODS or (
                    method == _ACK and (size < 13 or data[pos + _MULTIPLE_AT] & 1)):
                return -1, None
            need = 0
        elif ftype == 2:
            if size < 12:
                return -1, None
            need = _BODY_SIZE(data, pos + 11)[0]
            if need > INLINE_MAX:
                return -1, None
        elif ftype != 8 or size:
            return -1, None
        append((ftype, channel, data[pos + 7:end]))
        pos = end + 1
    if pos != n:
        return -1, None
    return need, frames


class Reader:
    """The receive half of the reactor."""

    __slots__ = ()

    call_soon: Callable[..., None]
    pool: WorkerPool
    _lost: Callable[[Transport], None]
    _update_events: Callable[[Transport], None]
    _bad_header: Callable[[Transport], None]

    def _tls_handshake(self, t: Transport) -> None:
        """One non-blocking step of the server-side TLS handshake."""
        try:
            t.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(t, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._want(t, selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        except (OSError, ValueError) as e:
            log.info("TLS handshake with %s failed: %s", _fmt_peer(t.peer),
                     getattr(e, "reason", None) or e)
            self._lost(t)
            return
        t.tls_handshaking = False
        try:
            t.peer_cert = t.sock.getpeercert() or None
        except (OSError, ValueError):
            t.peer_cert = None
        self._want(t, selectors.EVENT_READ)
        if t.sock.pending():
            self._read(t)

    def _want(self, t: Transport, events: int) -> None:
        t.writing = bool(events & selectors.EVENT_WRITE)
        self._update_events(t)

    def _recv_tls(self, t: Transport) -> bytes | None:
        """Everything TLS has decrypted for us now (b"" on EOF, None if nothing yet)."""
        parts = []
        sock = t.sock
        try:
            while True:
                chunk = sock.recv(RECV_SIZE)
                if not chunk:
                    if parts:
                        break
                    return b""
                parts.append(chunk)
                if not sock.pending():
                    break
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            if not parts:
                return None
        return b"".join(parts) if len(parts) > 1 else parts[0]

    def _read(self, t: Transport) -> None:
        """Read what ``t``'s socket has (reactor thread), check the protocol header, and hand
        the rest to the connection's worker through its input lane (:meth:`_submit`).

        Except a small read (<= INLINE_MAX) of light frames (``_light``: publishes, acks,
        content) at a frame boundary (nothing left in ``t.rest``) into an idle lane while
        every worker is idle (``WorkerPool.idle``; the connection's own is checked again by
        ``Worker.stand_in``): the reactor hands its frames to the connection's handler here,
        as a task of the worker, in its place (the stand-in, here rather than in a function
        of its own: one call less on the lone message's path). A lone message at a low rate
        (S8) skips the wake-up of the worker and the GIL's hand-over to it. If the worker
        turns out busy, the read goes to it as usual, first in the lane. Only this thread
        sets ``in_scheduled`` (:meth:`_submit`) and a worker clears it at the end of a turn,
        so a clear ``in_scheduled`` read here without the lock stays clear until this thread
        sets it: the lane is idle (no turn queued or running, ``inq`` empty) for the whole
        stand-in, which therefore needs neither the lane nor ``inflight``. What
        :meth:`_handle_data` does besides cutting frames has nothing to do then:
        ``discard_input`` is clear (checked here, and only this thread sets it while the lane
        is idle), nothing is left over and there is no error (``_light``)."""
        try:
            if t.tls:
                data = self._recv_tls(t)
                if data is None:
                    return
            else:
                data = t.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._lost(t)
            return
        if not data:
            self._lost(t)
            return
        t.last_recv = _monotonic()
        t.bytes_in += len(data)
        if t.discard_input:
            return
        if not t.header_done:
            if t.inbuf:
                t.inbuf += data
                data = bytes(t.inbuf)
            if len(data) < 8:
                if not t.inbuf:
                    t.inbuf += data
                head = bytes(t.inbuf[:8])
                if not any(h.startswith(head) for h in ACCEPTED_HEADERS):
                    self._bad_header(t)
                return
            t.inbuf = bytearray()
            if bytes(data[:8]) not in ACCEPTED_HEADERS:
                self._bad_header(t)
                return
            t.header_done = True
            self._submit(t, t.handler.connection_made, ())
            data = data[8:]
            if not data:
                return
        if not t.in_scheduled and len(data) <= INLINE_MAX and not t.rest and self.pool.idle():
            need, frames = _light(data, t.light_need)
            if frames is not None:  # the stand-in: ``t.standing_in`` tells the handler,
                # which hands what may cost more than a message's worth back to the worker
                # (``methods.hand_over``)
                t.standing_in = True
                try:
                    done = t.worker.stand_in(t.handler.frames_received, frames)
                finally:
                    t.standing_in = False
                if done:
                    t.light_need = need
                    return
        t.light_need = -1  # (read by the worker, not here: what it leaves is unknown)
        self._submit(t, None, data)

    def _submit(self, t: Transport, fn: Callable[..., None] | None, arg: object) -> None:
        """Queue a task in ``t``'s input lane (reactor thread): with ``fn`` None, ``arg`` is
        what was received, which the worker cuts into frames (:meth:`_handle_data`): the
        reactor's turn stays short (a publisher's 256 KiB is thousands of frames), so the
        other connections' reads and writes are not kept waiting behind it; else
        ``fn(*arg)`` runs on the worker after the input handed over before it.

        The lane (under ``out_lock``): ``in_scheduled`` is set while a turn of ``t`` is
        queued on its worker or running, and ``inq`` holds, in order, the tasks that arrived
        meanwhile (empty whenever ``in_scheduled`` is clear). An idle lane's task goes to the
        worker at once, as the turn's argument.

        What was received comes here unless the reactor stood in for the worker
        (:meth:`_read`). Only this thread (the reactor's) submits and sets
        ``in_scheduled``; a worker clears it at the end of a turn."""
        with t.out_lock:
            if fn is None:
                t.inflight += 1
                pause = t.inflight >= FLOW_HIGH
            else:
                pause = False
            if t.in_scheduled:
                t.inq.append((fn, arg))
                schedule = False
            else:
                t.in_scheduled = schedule = True
        if schedule:
            t.worker.submit(self._input_turn, t, fn, arg)
        if pause and not t.paused_flow:
            t.paused_flow = True
            self._update_events(t)

    def _input_turn(self, t: Transport, fn: Callable[..., None] | None, arg: object) -> None:
        """On the worker: run one task of ``t``'s input lane (see :meth:`_submit`), then
        queue the lane's next task, if any, as a turn at the back of the worker's queue.
        Each connection thus holds at most one place in its worker's FIFO, and the worker
        serves the connections pinned to it round robin, one input batch (one ``recv``,
        <= RECV_SIZE) each: a new connection's handshake waits for at most one batch of each
        other connection per round trip, however far ahead a flooding publisher has been
        read (FLOW_HIGH). The end of the turn takes ``out_lock`` once, for the batch's
        ``inflight`` and the lane."""
        try:
            if fn is None:
                self._handle_data(t, arg)
            else:
                fn(*arg)
        finally:
            resume = False
            with t.out_lock:
                if fn is None:
                    t.inflight -= 1
                    resume = t.inflight <= FLOW_LOW
                if t.inq:
                    nxt = t.inq.popleft()
                else:
                    nxt = None
                    t.in_scheduled = False
            if nxt is not None:
                t.worker.submit(self._input_turn, t, *nxt)
            if resume and t.paused_flow:
                self.call_soon(self._resume_flow, t)

    def _handle_data(self, t: Transport, data: bytes) -> None:
        """On the connection's worker: cut ``data`` (after the partial frame left by the last
        call, ``t.rest``, which only this worker touches) into frames and hand them over; a
        framing error hands over the complete frames before it, then reports it, and every
        later input is dropped (the caller, :meth:`_input_turn`, then accounts for the batch:
        ``inflight``, flow).

        A frame larger than one read is collected in ``t.rest`` (a list of chunks) until its
        declared size is there (``t.rest_need``), then joined once: O(frame size), however
        many reads it spans."""
        if t.discard_input:
            return
        rest = t.rest
        if rest:
            rest.append(data)
            t.rest_len += len(data)
            if t.rest_len < t.rest_need:
                return  # the partial frame is still incomplete
            data = b"".join(rest)
            t.rest = []
            t.rest_len = 0  # (memory.connection_memory counts it while partial)
        if len(data) > 2 * SLICE:
            data = _handle_slices(t, data)
            if data is None:
                return
        frames, consumed, error = split_frames(data, t.frame_max, slack=FRAME_MAX_SLACK)
        if error is not None:
            t.discard_input = True  # read by the reactor: drop what comes next
            t.rest = []
            t.rest_len = 0
            # The complete frames before the bad one still count, in order (RabbitMQ
            # handles every frame before the one it cannot parse).
            if frames:
                t.handler.frames_received(frames)
            t.handler.frame_error(error)
            return
        if consumed < len(data):
            left = data[consumed:]
            t.rest = [left]
            t.rest_len = len(left)
            # the whole frame (header, payload, end octet) once its header is there
            t.rest_need = _FRAME_SIZE(left, 3)[0] + 8 if len(left) >= 7 else 7
        if frames:
            t.handler.frames_received(frames)

    def _resume_flow(self, t: Transport) -> None:
        if t.paused_flow and not t.closed:
            t.paused_flow = False
            self._update_events(t)

    def _set_pause(self, t: Transport, reason: str, paused: bool) -> None:
        """The session's pause for ``reason`` (Transport.pause_reading/resume_reading)."""
        if t.closed or (reason in t.paused_by) == paused:
            return
        if paused:
            t.paused_by.add(reason)
        else:
            t.paused_by.discard(reason)
        self._update_events(t)

    def _discard_input(self, t: Transport) -> None:
        t.discard_input = True
        t.inbuf = bytearray()


def _handle_slices(t: Transport, data: bytes) -> bytes | None:
    """Part of :meth:`Reader._handle_data` (same thread, same ownership): hand the complete
    frames of ``data``, which starts at a frame boundary, to the handler SLICE octets at
    a time while more than two slices are left; return what is left, from a frame
    boundary, for ``_handle_data`` to cut whole (None: input is being discarded).

    A slice's frames are exactly the frames a read of those octets would have brought
    (TCP may cut a stream anywhere; the handler takes frames in any number of calls).
    The slicing stops, leaving the rest to the whole cut, at a slice with an error (the
    whole cut finds it again, with the frames before it, and reports it as before), with
    no complete frame (one larger than a slice) or with fewer than SLICE_MIN_FRAMES
    frames (large messages: their objects are few, and a batch ends per call). Before any
    slice, :func:`_dense` looks at the first frames' headers: a read whose first frames are
    large is cut whole at once (a heuristic: a read that starts with one larger message and
    goes on with tiny frames is then cut whole too, as before slicing existed)."""
    if not _dense(data):
        return data
    pos = 0
    last = len(data) - 2 * SLICE
    frame_max = t.frame_max
    while pos < last:
        frames, consumed, error = split_frames(data[pos:pos + SLICE], frame_max,
                                               slack=FRAME_MAX_SLACK)
        if error is not None or len(frames) < SLICE_MIN_FRAMES:
            break
        pos += consumed
        t.handler.frames_received(frames)
        if t.discard_input:
            return None
        frame_max = t.frame_max  # (a tune-ok in the slice sets it, as for a later read)
    return data[pos:] if pos else data


def _dense(data: bytes) -> bool:
    """Whether the first :data:`DENSITY_PROBE` frames of ``data`` (a frame boundary first;
    ``len(data) > 2 * SLICE``) average at most ``SLICE // SLICE_MIN_FRAMES`` octets, i.e.
    whether slicing can pay. Only frame headers are read, nothing is checked or consumed:
    a bad header just answers False and the whole cut reports it."""
    pos = 0
    for _ in range(DENSITY_PROBE):
        pos += 8 + _FRAME_HEAD(data, pos)[2]
        if pos > DENSITY_PROBE * (SLICE // SLICE_MIN_FRAMES):
            return False
    return True
