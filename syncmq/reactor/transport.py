"""The reactor's view of one client connection (:class:`Transport`) and what it calls on the
connection's handler (:class:`Handler`).

Who owns what (the output fields are :class:`~.outbuf.OutBuffer`'s, under ``out_lock``):

=====================  ======================================================================
owner                  fields
=====================  ======================================================================
set once               ``reactor``, ``fd``, ``peer``, ``sockname``, ``worker``, ``handler``,
                       ``tls``, ``created``; ``peer_cert`` (the reactor, after the TLS
                       handshake, before any input reaches the worker)
reactor thread         ``sock`` (a worker's direct send uses it only under ``out_lock``; the
                       reactor closes it under the lock), ``inbuf``, ``header_done``,
                       ``writing``, ``registered_events``, ``paused_flow``, ``paused_by``,
                       ``heartbeat``, ``last_recv``, ``bytes_in``, ``tls_handshaking``,
                       ``tls_retry``, ``close_when_flushed``, ``light_need``, ``standing_in`` (set only while
                       it runs the connection's input in the idle worker's place; read then
                       by that input's handler, and ``rest`` read by the reactor only while the
                       lane is idle, to stand in only at a frame boundary)
the worker             ``rest``, ``rest_len``, ``rest_need`` (a partial frame between inputs),
                       ``frame_max`` (written after tune-ok, read when cutting frames); the
                       worker's tasks (``Worker.busy``), which the reactor thread may run in
                       an idle worker's place (``Worker.stand_in``)
``out_lock``           ``inflight`` (input batches handed to the worker: the reactor counts
                       up, the worker down), ``inq`` and ``in_scheduled`` (the input lane,
                       ``Reader._submit``; the reactor, which alone submits and sets
                       ``in_scheduled``, reads it without the lock: clear, it stays clear
                       until the reactor sets it), and the :class:`~.outbuf.OutBuffer` fields
plain flags            ``discard_input`` (set by either thread: drop input from now on),
                       ``opened`` (the worker, read by the handshake timer), ``aborted`` (any
                       thread; read by the direct send under ``out_lock``): one-way flags whose
                       stale read costs at most one more frame or send
=====================  ======================================================================
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from threading import get_ident
from typing import TYPE_CHECKING, Any, Protocol

from ..wire.errors import AMQPConnectionError
from ..workers import Worker, current_worker
from .outbuf import OutBuffer

if TYPE_CHECKING:
    from .loop import Reactor

log = logging.getLogger("syncmq.reactor")

HANDSHAKE_FRAME_MAX = 4096  # frame_max before tune-ok (spec: FRAME_MIN_SIZE)
TLS_SEND_MAX = 256 * 1024  # bytes joined per SSLSocket.send (TLS cannot scatter/gather)
# Deferred (``Worker.defer``) by the reactor standing in when it sent a task's first write at
# once (``Transport._wake``): the task's later writes see a deferred list that is not empty
# and wait for the end of the task, and the end has nothing to send for it
# (``Sender._flush_later`` skips it; what that send left is the reactor's flush's already)
SENT_AT_ONCE = object()


class Handler(Protocol):
    """What the reactor calls on a connection's handler; every call runs on its worker."""

    def connection_made(self) -> None: ...
    def frames_received(self, frames: list) -> None: ...
    def frame_error(self, exc: AMQPConnectionError) -> None: ...
    def connection_lost(self) -> None: ...
    def output_drained(self) -> None: ...


class Transport(OutBuffer):
    """One client connection: its socket, its input state and (inherited) its output buffer.
    See the module docstring for which thread owns which field."""

    __slots__ = (
        "reactor", "sock", "fd", "peer", "sockname", "worker", "handler", "inbuf",
        "header_done", "discard_input", "close_when_flushed", "writing", "frame_max",
        "heartbeat", "last_recv", "opened", "bytes_in", "created", "tls", "tls_handshaking",
        "peer_cert", "tls_retry", "inflight", "paused_flow", "paused_by",
        "registered_events", "rest", "rest_len", "rest_need", "aborted", "unread_in",
        "inq", "in_scheduled", "standing_in", "light_need",
    )

    def __init__(self, reactor: Reactor, sock: socket.socket, peer: Any, worker: Worker) -> None:
        super().__init__(reactor.out_high, reactor.out_low)
        self.reactor = reactor
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.sockname = sock.getsockname()
        self.worker = worker
        self.handler: Handler | None = None
        self.inbuf = bytearray()  # the protocol header while it is incomplete (reactor)
        # A partial frame after the last input handled (the worker's): its chunks, their total
        # size and the size of the whole frame (or 7 while its header is incomplete).
        self.rest: list[bytes] = []
        self.rest_len = 0
        self.rest_need = 0
        self.aborted = False  # abort() was called: no more direct sends
        self.header_done = False
        self.discard_input = False
        self.close_when_flushed = False
        self.writing = False
        self.frame_max = HANDSHAKE_FRAME_MAX
        self.heartbeat = 0
        self.opened: bool | None = False  # None once lost (Reactor._count_lock)
        self.unread_in = 0  # kernel-queued input last seen while paused for output (reactor)
        now = time.monotonic()
        self.last_recv = now
        self.created = now
        self.bytes_in = 0
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.tls_handshaking = self.tls
        self.peer_cert: dict | None = None  # the verified client certificate, after handshake
        self.tls_retry = 0  # length of a TLS write that must be retried with the same bytes
        # Frame batches handed to the worker and not yet handled; guarded by ``out_lock``
        # (incremented by the reactor, decremented by the worker).
        self.inflight = 0
        # The connection's input lane (under ``out_lock``): whether a turn is queued on the
        # worker or running, and the tasks (input batches, then connection_lost) that wait
        # behind it, run one per worker turn (Reader._submit, Reader._input_turn): at most
        # one task of this connection is in the worker's queue, so a flooding publisher's
        # backlog never sits in front of another connection's input (its handshake).
        self.inq: deque = deque()
        self.in_scheduled = False
        self.paused_flow = False  # reactor thread only
        # Set by the reactor thread while it runs this connection's input in the idle
        # worker's place (Reader._read), read by the handler's task meanwhile: what may
        # cost more than a message's worth is handed back to the worker (methods.hand_over).
        self.standing_in = False
        self.light_need = 0  # reactor thread only (Reader._read)
        # why reading is paused by the session ("alarm", "credit"): reactor thread only
        self.paused_by: set[str] = set()
        self.registered_events = selectors.EVENT_READ  # what the selector watches for us

    # ---- called from any thread ----

    def _wake(self) -> None:
        """Get a sender for what was just queued (``out`` was empty). On a worker: at the end
        of its task (``Worker.defer``: one send per task, however many writes). On the
        reactor thread standing in for an idle worker (``Worker.stand_in``): the task's first
        wake-up is sent now, with the direct send (a lone delivery leaves at its write, not
        after the rest of the task); what that send leaves (a partial send, EAGAIN, an error,
        TLS, paused output: it then returns False with chunks left in ``sending`` or ``out``)
        goes to the reactor's flush, as ``Reactor._flush_later`` does. ``SENT_AT_ONCE`` is
        deferred in the transport's place, so every later write of the task waits for the end
        of the task, as on a worker (a read of 40 publishes to a queue with two consumers is
        one or two ``sendmsg`` calls, not 40), and the end of the task has nothing to send
        for it. On any other thread (the reactor's own tasks included): the reactor's
        flush."""
        w = current_worker()
        if w is None:
            self.reactor.call_soon(self.reactor._flush, self)
            return
        deferred = w.deferred
        if deferred or get_ident() != self.reactor.ident:
            deferred.append(self)  # (``Worker.defer``, inlined)
            return
        deferred.append(SENT_AT_ONCE)
        reactor = self.reactor
        if not reactor._send_direct(self):  # (the rest: see Sender._send_direct)
            reactor.call_soon(reactor._flush, self)

    def close_after_flush(self) -> None:
        """Close the socket once everything written so far has been sent. Thread-safe."""
        self.reactor.call_soon(self.reactor._close_after_flush, self)

    def abort(self) -> None:
        """Close the socket now, dropping unsent data. Thread-safe."""
        self.aborted = True  # what is written after this is not sent directly either
        self.reactor.call_soon(self.reactor._lost, self)

    def stop_reading(self) -> None:
        """From now on read and drop whatever the peer sends (the connection is closing and
        nothing it says matters any more). Thread-safe."""
        self.reactor.call_soon(self.reactor._discard_input, self)

    def pause_reading(self, reason: str = "alarm") -> None:
        """Stop reading from this connection for ``reason``: ``"alarm"`` (a resource alarm
        blocks a publisher) or ``"credit"`` (a queue it publishes to is behind, see
        ``methods.credit``). It is read again once every reason was withdrawn with
        :meth:`resume_reading`. Thread-safe."""
        self.reactor.call_soon(self.reactor._set_pause, self, reason, True)

    def resume_reading(self, reason: str = "alarm") -> None:
        """Withdraw ``reason`` given to :meth:`pause_reading`. Thread-safe."""
        self.reactor.call_soon(self.reactor._set_pause, self, reason, False)

    def set_frame_max(self, frame_max: int) -> None:
        self.frame_max = frame_max

    def set_heartbeat(self, seconds: int) -> None:
        """Start heartbeats (0 disables). Thread-safe."""
        self.reactor.call_soon(self.reactor._start_heartbeat, self, seconds)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the reactor thread after ``delay`` seconds. Thread-safe."""
        self.reactor.call_later(delay, fn, *args)

    def mark_open(self) -> bool | None:
        """The handshake completed: count the connection as open (no longer against the
        pre-handshake bound; cancels the handshake timeout). False, and nothing changed, if
        ``--max-connections`` open connections exist already; None if the connection is lost
        already (closed by the handshake timeout, or by the peer). Thread-safe."""
        return self.reactor._mark_open(self)


    # ---- the reactor's ----

    def _send_tls(self, batch: list) -> int:
        """Send the first chunks of ``batch`` joined (up to ``TLS_SEND_MAX``) on the TLS
        socket: an ``SSLSocket`` cannot scatter/gather, and OpenSSL wants a retried write to
        carry the same bytes (``tls_retry``). Reactor thread only."""
        buf = _join_upto(batch, TLS_SEND_MAX)
        if self.tls_retry:
            buf = memoryview(buf)[: self.tls_retry]
        self.tls_retry = len(buf)
        n = self.sock.send(buf)
        self.tls_retry = 0
        return n


HandlerFactory = Callable[[Transport], Handler]


def _join_upto(chunks: list, limit: int) -> bytes:
    """The first chunks joined, up to about ``limit`` bytes (at least one whole chunk)."""
    out = []
    size = 0
    for c in chunks:
        out.append(c)
        size += len(c)
        if size >= limit:
            break
    return out[0] if len(out) == 1 else b"".join(out)


def _fmt_peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
