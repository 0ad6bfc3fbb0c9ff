"""The reactor: the one thread that owns the selector, every socket, outbound buffer and timer.

What it does, per wake-up (each bounded):

- readable listener: ``accept`` every pending connection, make a :class:`Transport` for it, pin it
  to a worker and ask the server's handler factory for its protocol handler.
- readable connection: ``recv`` once (up to ``RECV_SIZE``), check the 8-byte protocol header on a
  new connection and hand what came to the connection's worker in one ``submit``; the worker
  cuts out every complete frame with :func:`syncmq.wire.frames.parse_frames` (``_handle_data``),
  so that a publisher's large read does not hold up the reactor's turn for everyone else.
- writable connection / wake-up: write the connection's pending chunks with ``socket.sendmsg``
  (scatter/gather; bodies are never joined into one buffer).
- due timers: heartbeats (send when idle, close when the peer has been silent for two intervals)
  and the handshake timeout.

Workers talk to the reactor only through :class:`Transport` methods, which append to the
transport's outbound list under its ``out_lock``. When that list goes from empty to non-empty on
a worker, the transport is deferred to the end of the worker's task; then the worker sends it
itself (:meth:`Reactor._send_direct`: plain TCP, only while the reactor has nothing of it to
send and is not flushing it, one non-blocking ``sendmsg`` under ``out_lock``) and wakes the
reactor through the one wake-up pipe only for what is left (a partial send, EAGAIN, TLS, a
paused or closing connection). This saves the wake-up and the hand-off to the reactor thread
on every delivery at low rates. The reactor never runs broker logic: handler callbacks are
always submitted to the connection's worker.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
import queue
import selectors
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from .wire.errors import AMQPConnectionError
from .wire.frames import HEARTBEAT_FRAME, PROTOCOL_HEADER, split_frames
from .workers import Worker, WorkerPool, current_worker

log = logging.getLogger("syncmq.reactor")

RECV_SIZE = 256 * 1024
IOV_MAX = 512  # chunks per sendmsg call (Linux allows 1024)
HANDSHAKE_FRAME_MAX = 4096  # frame_max before tune-ok (spec: FRAME_MIN_SIZE)
# Protocol headers we speak: 0-9-1, and the 0-9 header, which rabbit_reader
# version_negotiation({1, 1, 0, 9}) "can safely treat as though it were 0-9-1". Any other
# header is answered with the 0-9-1 one and the socket closed.
ACCEPTED_HEADERS = (PROTOCOL_HEADER, b"AMQP\x01\x01\x00\x09")
# Octets a frame may exceed frame_max by: rabbit_reader's ?FRAME_SIZE_FUDGE (= the 8 octets of
# an empty frame), "since quite a few [clients] get it wrong - off-by 1 or 8".
FRAME_MAX_SLACK = 8


class _Listener:
    """Selector data of a listening socket: plain (``ssl_context`` None) or TLS."""

    __slots__ = ("ssl_context",)

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        self.ssl_context = ssl_context


# Flow control: a connection whose worker has FLOW_HIGH reads not yet handled stops
# being read until the backlog is down to FLOW_LOW. A publisher that floods faster than the
# broker routes is slowed to the broker's pace instead of filling memory with unparsed frames
# (RabbitMQ's credit flow between reader and channel plays the same part).
FLOW_HIGH = 8
FLOW_LOW = 2
# Output back-pressure (docs/architecture.md, "Flow control"): a connection with more than
# OUT_HIGH bytes written but not yet sent gets no more deliveries (``Channel.deliver`` says "no
# credit") and is not read (its own requests, such as mandatory publishes that come back as
# basic.return, would add more output) until the reactor has sent enough of it to be down to
# OUT_LOW; then its consumers are refilled on its worker. A consumer or publisher that never
# reads its socket costs the broker at most about OUT_HIGH (plus one message) of memory.
# Configurable with the hidden --max-pending-output option (OUT_LOW is a quarter of it).
OUT_HIGH = 8 * 1024 * 1024
OUT_LOW = 2 * 1024 * 1024
TLS_SEND_MAX = 256 * 1024  # bytes joined per SSLSocket.send (TLS cannot scatter/gather)
_WAKE = object()
_FRAME_SIZE = struct.Struct(">I").unpack_from  # a frame header's payload size, at offset 3


class Handler(Protocol):
    """What the reactor calls on a connection's handler; every call runs on its worker."""

    def connection_made(self) -> None: ...
    def frames_received(self, frames: list) -> None: ...
    def frame_error(self, exc: AMQPConnectionError) -> None: ...
    def connection_lost(self) -> None: ...
    def output_drained(self) -> None: ...


class Transport:
    """The reactor's view of one client connection.

    Ownership: ``sock`` (but see below), ``inbuf`` and the timestamps belong to the reactor
    thread; ``rest``, ``rest_len`` and ``rest_need`` (a partial frame between two inputs) to the
    connection's worker.
    ``out`` is shared: workers append, the reactor (or a worker sending directly) drains;
    ``out_lock`` guards it, together with ``pending_out`` (bytes in ``out`` and ``sending``:
    added by :meth:`write`, subtracted by whoever sends), ``bytes_out``, ``throttled``,
    ``inflight``, ``flushing``, and the writes of ``closed`` and ``paused_output``.
    ``sending`` (chunks taken from ``out``, the first maybe partly sent) and sending on ``sock``
    belong to the reactor while ``flushing`` is set (it sets and clears it under ``out_lock``
    around :meth:`Reactor._flush`'s sends); otherwise to whoever holds ``out_lock``: a worker
    sends directly (:meth:`Reactor._send_direct`) only under the lock, with ``flushing`` clear
    and ``sending`` empty, so the two never send at once and never out of order. The reactor
    closes the socket under the lock too, so a direct send never uses a closed (or reused) fd.
    ``frame_max`` is written by the worker after tune-ok and read by the reactor; a plain int
    attribute store, so a stale read only means one more frame checked against the old limit.
    ``pending_out`` is also read without the lock by :meth:`output_full`'s callers (one int
    comparison per delivery); a stale read is settled under the lock by :meth:`throttle`.
    """

    __slots__ = (
        "reactor", "sock", "fd", "peer", "sockname", "worker", "handler", "inbuf", "out",
        "out_lock", "sending", "header_done", "discard_input", "closed", "close_when_flushed",
        "writing", "frame_max", "heartbeat", "last_recv", "last_send", "opened", "bytes_in",
        "bytes_out", "created", "tls", "tls_handshaking", "peer_cert",
        "tls_retry", "inflight", "paused_flow", "paused_alarm", "registered_events",
        "pending_out", "out_high", "out_low", "throttled", "paused_output", "rest", "rest_len",
        "rest_need", "flushing", "aborted",
    )

    def __init__(self, reactor: Reactor, sock: socket.socket, peer: Any, worker: Worker) -> None:
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
        self.out: list = []
        # Guards ``out`` only: workers of several connections may append deliveries to this
        # transport at once (a publish on one connection delivers to consumers on others).
        self.out_lock = threading.Lock()
        self.sending: deque = deque()
        self.flushing = False  # the reactor is in _flush's sends (set/cleared under out_lock)
        self.aborted = False  # abort() was called: no more direct sends
        self.header_done = False
        self.discard_input = False
        self.closed = False
        self.close_when_flushed = False
        self.writing = False
        self.frame_max = HANDSHAKE_FRAME_MAX
        self.heartbeat = 0
        self.opened = False
        now = time.monotonic()
        self.last_recv = now
        self.last_send = now
        self.created = now
        self.bytes_in = 0
        self.bytes_out = 0
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.tls_handshaking = self.tls
        self.peer_cert: dict | None = None  # the verified client certificate, after handshake
        self.tls_retry = 0  # length of a TLS write that must be retried with the same bytes
        # Frame batches handed to the worker and not yet handled; guarded by ``out_lock``
        # (incremented by the reactor, decremented by the worker).
        self.inflight = 0
        self.paused_flow = False  # reactor thread only
        self.paused_alarm = False  # reactor thread only
        self.registered_events = selectors.EVENT_READ  # what the selector watches for us
        # Output back-pressure (see OUT_HIGH): unsent bytes, the watermarks, whether a delivery
        # was refused since the last drain (so the reactor must trigger a refill; guarded by
        # ``out_lock``), and whether reading is paused for it (reactor thread only).
        self.pending_out = 0
        self.out_high = reactor.out_high
        self.out_low = reactor.out_low
        self.throttled = False
        self.paused_output = False

    # ---- called from any thread ----

    def write(self, chunks: list) -> None:
        """Queue ``chunks`` (bytes or memoryviews) for sending, in order. Thread-safe."""
        if self.closed:
            return
        n = 0
        for c in chunks:
            n += len(c)
        with self.out_lock:
            was_empty = not self.out
            self.out.extend(chunks)
            self.pending_out += n
        if was_empty:
            self._wake()

    def write1(self, data: bytes) -> None:
        """Queue one chunk. Thread-safe."""
        if self.closed:
            return
        with self.out_lock:
            was_empty = not self.out
            self.out.append(data)
            self.pending_out += len(data)
        if was_empty:
            self._wake()

    def throttle(self) -> bool:
        """Called when ``pending_out > out_high`` was read without the lock (a consumer is about
        to get a delivery): True if the output really is over the high watermark, and then the
        reactor will call the handler's ``output_drained`` on our worker once it is down to
        ``out_low``; False (deliver) otherwise. Thread-safe."""
        if self.throttled:
            return True  # set under the lock; cleared (and the refill queued) by the reactor
        with self.out_lock:
            if self.pending_out > self.out_high and not self.closed:
                self.throttled = True
                return True
        return False

    def _wake(self) -> None:
        """Get the reactor to flush us: at the end of the current worker task if called on a
        worker (one wake-up per batch), else now."""
        w = current_worker()
        if w is not None:
            w.defer(self)
        else:
            self.reactor.call_soon(self.reactor._flush, self)

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

    def pause_reading(self) -> None:
        """Stop reading from this connection (resource alarm: a blocked publisher). Thread-safe."""
        self.reactor.call_soon(self.reactor._set_alarm_pause, self, True)

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading`. Thread-safe."""
        self.reactor.call_soon(self.reactor._set_alarm_pause, self, False)

    def set_frame_max(self, frame_max: int) -> None:
        self.frame_max = frame_max

    def set_heartbeat(self, seconds: int) -> None:
        """Start heartbeats (0 disables). Thread-safe."""
        self.reactor.call_soon(self.reactor._start_heartbeat, self, seconds)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the reactor thread after ``delay`` seconds. Thread-safe."""
        self.reactor.call_later(delay, fn, *args)

    def mark_open(self) -> None:
        """The handshake completed: cancel the handshake timeout."""
        self.opened = True

    def pending_bytes(self) -> int:
        """Unsent bytes (for metrics)."""
        return self.pending_out


HandlerFactory = Callable[[Transport], Handler]


class Reactor:
    """Owner of the selector. ``run()`` is the thread body (thread name ``syncmq-reactor``)."""

    def __init__(
        self,
        pool: WorkerPool,
        handler_factory: HandlerFactory,
        handshake_timeout: float = 10.0,
        max_connections: int = 0,
        max_pending_output: int = OUT_HIGH,
    ) -> None:
        self.pool = pool
        self.out_high = max_pending_output
        self.out_low = max_pending_output // 4
        self.handler_factory = handler_factory
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections  # 0: no limit
        self.selector = selectors.DefaultSelector()
        self.listeners: list[socket.socket] = []
        self.transports: dict[int, Transport] = {}
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # Guards ``_woken`` and the wake pipe's content together: ``_woken`` is True exactly
        # when a byte is in the pipe, so concurrent callers write at most one byte per wake-up.
        self._wake_lock = threading.Lock()
        self._woken = False
        self.selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._timers: list = []  # heap of (deadline, seq, fn, args); reactor thread only
        self._timer_seq = itertools.count()
        self._running = False
        self._accepting = True
        self.thread: threading.Thread | None = None
        pool.set_on_deferred(self._flush_later)

    # ---- set-up ----

    def listen(
        self, host: str, port: int, backlog: int = 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> tuple[str, int]:
        """Bind a listening socket (before ``start``); returns the address actually bound.

        With ``ssl_context`` every accepted connection does a non-blocking TLS handshake
        (driven by the selector) before the AMQP protocol header is read."""
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, type_, proto, _, addr = infos[0]
        s = socket.socket(family, type_, proto)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
        s.listen(backlog)
        s.setblocking(False)
        self.listeners.append(s)
        self.selector.register(s, selectors.EVENT_READ, _Listener(ssl_context))
        return s.getsockname()[:2]

    def start(self) -> None:
        self._running = True
        self.thread = threading.Thread(target=self.run, name="syncmq-reactor", daemon=True)
        self.thread.start()

    # ---- cross-thread entry points ----

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the reactor thread, in call order. Thread-safe."""
        self._calls.put((fn, args))
        if threading.get_ident() == self._ident():
            return  # the loop drains _calls before it sleeps again
        with self._wake_lock:
            if self._woken:
                return
            self._woken = True
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the reactor thread after ``delay`` seconds. Thread-safe."""
        self.call_soon(self._add_timer, time.monotonic() + delay, fn, args)

    def _flush_later(self, transports: list) -> None:
        """A worker's batch left output for ``transports`` (called on that worker): send what
        can be sent now from this thread, and wake the reactor for the rest."""
        left = [t for t in transports if not self._send_direct(t)]
        if left:
            self.call_soon(self._flush_many, left)

    def _send_direct(self, t: Transport) -> bool:
        """On a worker, at the end of its task: send ``t``'s output with non-blocking
        ``sendmsg`` calls from this thread, saving the reactor's wake-up and thread hand-off.
        True when the reactor has nothing to do for it; False when it must flush ``t`` (as
        before this existed): TLS (an SSLSocket is the reactor's alone), the reactor is
        flushing it or has chunks of it pending (they go first), reading is paused for output
        (only the reactor's flush resumes it), the connection is closing or aborted, or
        something is left (a partial send, EAGAIN, an error for the reactor to handle).

        Everything happens under ``out_lock``: the reactor takes it before it touches
        ``sending`` or sends (and sets ``flushing`` while it sends without it), and closes the
        socket under it, so the reactor and a worker never send on one socket at once."""
        if t.tls:
            return False
        with t.out_lock:
            out = t.out
            if not out or t.closed:
                return True  # someone else took it (and handles the rest) or it is gone
            if t.flushing or t.sending or t.paused_output or t.close_when_flushed or t.aborted:
                return False
            sock = t.sock
            sent = 0
            left: list = []
            error = False
            while out:
                batch = out if len(out) <= IOV_MAX else out[:IOV_MAX]
                try:
                    n = sock.sendmsg(batch)
                except (BlockingIOError, InterruptedError):
                    left = out
                    break
                except OSError:
                    left = out  # the reactor gets the same error and closes
                    error = True
                    break
                sent += n
                i = 0
                nb = len(batch)
                while i < nb:
                    size = len(batch[i])
                    if size > n:
                        break
                    n -= size
                    i += 1
                if i < nb:
                    # partial: the kernel buffer is full; the reactor sends the rest
                    left = out[i:]
                    if n:
                        left[0] = memoryview(left[0])[n:]
                    break
                del out[:nb]
            if left:
                t.sending.extend(left)
                out.clear()
            if sent:
                t.bytes_out += sent
                t.last_send = time.monotonic()
                t.pending_out = pending = t.pending_out - sent
                drained = t.throttled and pending <= t.out_low
                if drained:
                    t.throttled = False
            else:
                drained = False
        if drained:
            t.worker.submit(t.handler.output_drained)
        return not left and not error

    def _flush_many(self, transports: list) -> None:
        for t in transports:
            self._flush(t)

    def stop_accepting(self) -> None:
        self.call_soon(self._stop_accepting)

    def stop(self) -> None:
        """Stop the loop and close every socket (after the server closed connections)."""
        self.call_soon(self._stop)
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(10)

    def _ident(self) -> int | None:
        t = self.thread
        return t.ident if t is not None else None

    # ---- the loop ----

    def run(self) -> None:
        select = self.selector.select
        calls = self._calls
        while self._running:
            timeout = None
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            if not calls.empty():
                timeout = 0
            try:
                events = select(timeout)
            except InterruptedError:
                continue
            for key, mask in events:
                data = key.data
                if data is _WAKE:
                    self._drain_wake()
                elif type(data) is _Listener:
                    self._accept(key.fileobj, data.ssl_context)
                elif data.tls_handshaking:
                    if not data.closed:
                        self._tls_handshake(data)
                else:
                    if mask & selectors.EVENT_READ and not data.closed:
                        self._read(data)
                    if mask & selectors.EVENT_WRITE and not data.closed:
                        self._flush(data)
            self._run_calls()
            if self._timers:
                self._run_timers()
        self._shutdown_sockets()

    def _drain_wake(self) -> None:
        # Drain and clear the flag in one critical section (writers write under the same lock):
        # clearing first and draining after would swallow a byte written in between and leave
        # the flag set with an empty pipe, and every later call_soon would then skip its wake-up.
        with self._wake_lock:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            self._woken = False

    def _run_calls(self) -> None:
        calls = self._calls
        # Bounded: only what was queued before we started, so a flood cannot starve I/O.
        for _ in range(calls.qsize()):
            try:
                fn, args = calls.get_nowait()
            except queue.Empty:
                return
            try:
                fn(*args)
            except Exception:
                log.exception("unhandled error in reactor call %r", fn)

    def _add_timer(self, deadline: float, fn: Callable[..., Any], args: tuple) -> None:
        heapq.heappush(self._timers, (deadline, next(self._timer_seq), fn, args))

    def _run_timers(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, fn, args = heapq.heappop(timers)
            try:
                fn(*args)
            except Exception:
                log.exception("unhandled error in timer %r", fn)

    # ---- connections ----

    def _accept(self, lsock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        for _ in range(256):
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("cannot accept connection: %s", e.strerror)
                    return
                raise
            if not self._accepting:
                sock.close()
                continue
            if self.max_connections and len(self.transports) >= self.max_connections:
                log.warning("connection from %s refused: the limit of %d connections is "
                            "reached", _fmt_peer(peer), self.max_connections)
                sock.close()
                continue
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            if ssl_context is not None:
                try:
                    sock = ssl_context.wrap_socket(sock, server_side=True,
                                                   do_handshake_on_connect=False)
                except (OSError, ValueError) as e:
                    log.info("TLS set-up failed for %s: %s", _fmt_peer(peer), e)
                    sock.close()
                    continue
            worker = self.pool.assign()
            t = Transport(self, sock, peer, worker)
            try:
                t.handler = self.handler_factory(t)
            except Exception:
                log.exception("handler factory failed")
                self.pool.release(worker)
                sock.close()
                continue
            self.transports[t.fd] = t
            self.selector.register(sock, selectors.EVENT_READ, t)
            if self.handshake_timeout:
                self._add_timer(
                    time.monotonic() + self.handshake_timeout, self._check_handshake, (t,)
                )

    def _check_handshake(self, t: Transport) -> None:
        if not t.closed and not t.opened:
            log.info(
                "closing connection from %s: handshake not completed within %.0fs",
                _fmt_peer(t.peer), self.handshake_timeout,
            )
            self._lost(t)

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
        t.last_recv = time.monotonic()
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
            t.worker.submit(t.handler.connection_made)
            data = data[8:]
            if not data:
                return
        self._submit_data(t, data)

    def _submit_data(self, t: Transport, data: bytes) -> None:
        """Hand what was received to the connection's worker, which cuts it into frames: the
        reactor's turn stays short (a publisher's 256 KiB is thousands of frames), so the
        other connections' reads and writes are not kept waiting behind it."""
        with t.out_lock:
            t.inflight += 1
            pause = t.inflight >= FLOW_HIGH
        t.worker.submit(self._handle_data, t, data)
        if pause and not t.paused_flow:
            t.paused_flow = True
            self._update_events(t)

    def _handle_data(self, t: Transport, data: bytes) -> None:
        """On the connection's worker: cut ``data`` (after the partial frame left by the last
        call, ``t.rest``, which only this worker touches) into frames and hand them over; a
        framing error hands over the complete frames before it, then reports it, and every
        later input is dropped. Then account for the batch (flow).

        A frame larger than one read is collected in ``t.rest`` (a list of chunks) until its
        declared size is there (``t.rest_need``), then joined once: O(frame size), however
        many reads it spans."""
        try:
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
            frames, consumed, error = split_frames(data, t.frame_max, slack=FRAME_MAX_SLACK)
            if error is not None:
                t.discard_input = True  # read by the reactor: drop what comes next
                t.rest = []
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
        finally:
            with t.out_lock:
                t.inflight -= 1
                resume = t.inflight <= FLOW_LOW
            if resume and t.paused_flow:
                self.call_soon(self._resume_flow, t)

    def _resume_flow(self, t: Transport) -> None:
        if t.paused_flow and not t.closed:
            t.paused_flow = False
            self._update_events(t)

    def _set_alarm_pause(self, t: Transport, paused: bool) -> None:
        if t.closed or t.paused_alarm == paused:
            return
        t.paused_alarm = paused
        self._update_events(t)

    def _update_events(self, t: Transport) -> None:
        """Make the selector watch what ``t`` needs: reads unless paused, writes while output
        is pending. Reactor thread only."""
        events = 0 if (t.paused_flow or t.paused_alarm or t.paused_output) \
            else selectors.EVENT_READ
        if t.writing:
            events |= selectors.EVENT_WRITE
        old = t.registered_events
        if events == old or t.closed:
            return
        if not old:
            self.selector.register(t.sock, events, t)
        elif not events:
            self.selector.unregister(t.sock)
        else:
            self.selector.modify(t.sock, events, t)
        t.registered_events = events
        if events & selectors.EVENT_READ and t.tls and not t.tls_handshaking and \
                t.sock.pending():
            self._read(t)  # TLS may hold decrypted bytes the selector cannot see

    def _discard_input(self, t: Transport) -> None:
        t.discard_input = True
        t.inbuf = bytearray()

    def _bad_header(self, t: Transport) -> None:
        """A wrong protocol header: answer with ours and close, as the spec says."""
        log.info("bad AMQP protocol header from %s", _fmt_peer(t.peer))
        t.discard_input = True
        t.inbuf = bytearray()
        with t.out_lock:
            t.out.append(PROTOCOL_HEADER)
            t.pending_out += len(PROTOCOL_HEADER)
        self._close_after_flush(t)

    def _flush(self, t: Transport) -> None:
        if t.closed:
            return
        with t.out_lock:
            t.flushing = True  # sending and sock are ours until we clear it (_send_direct)
            if t.out:
                t.sending.extend(t.out)
                t.out.clear()
        sending = t.sending
        sock = t.sock
        sent = 0
        while sending:
            batch = list(itertools.islice(sending, IOV_MAX)) if len(sending) > 1 else [sending[0]]
            try:
                if t.tls:
                    buf = _join_upto(batch, TLS_SEND_MAX)
                    if t.tls_retry:
                        # OpenSSL wants a retried write to carry the same bytes
                        buf = memoryview(buf)[: t.tls_retry]
                    t.tls_retry = len(buf)
                    n = sock.send(buf)
                    t.tls_retry = 0
                else:
                    n = sock.sendmsg(batch)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError,
                    ssl.SSLWantReadError):
                break
            except OSError:
                self._lost(t)
                return
            sent += n
            t.last_send = time.monotonic()
            while n:
                c = sending[0]
                size = len(c)
                if size <= n:
                    sending.popleft()
                    n -= size
                else:
                    sending[0] = memoryview(c)[n:]
                    n = 0
            if sending:
                # partial write: the kernel buffer is full, wait for EVENT_WRITE
                break
            with t.out_lock:
                if t.out:
                    sending.extend(t.out)
                    t.out.clear()
        update = False
        with t.out_lock:
            t.flushing = False
            t.bytes_out += sent
            t.pending_out = pending = t.pending_out - sent
            drained = t.throttled and pending <= t.out_low
            if drained:
                t.throttled = False
            # decided under the lock: _send_direct leaves a paused transport to us
            if t.paused_output:
                if pending <= t.out_low:
                    t.paused_output = False
                    update = True
            elif pending > t.out_high:
                t.paused_output = True
                update = True
        if drained:
            t.worker.submit(t.handler.output_drained)
        if update:
            self._update_events(t)
        if sending:
            if not t.writing:
                t.writing = True
                self._update_events(t)
        else:
            if t.writing:
                t.writing = False
                self._update_events(t)
            if t.close_when_flushed:
                self._lost(t)

    def _close_after_flush(self, t: Transport) -> None:
        if t.closed:
            return
        t.close_when_flushed = True
        self._flush(t)

    def _lost(self, t: Transport) -> None:
        """Close the socket (once) and tell the handler on its worker."""
        if t.closed:
            return
        self.transports.pop(t.fd, None)
        try:
            if t.registered_events:
                self.selector.unregister(t.sock)
        except (KeyError, ValueError):
            pass
        # under out_lock: a worker's direct send (which checks ``closed`` under it) never
        # runs on a closed socket, nor on another connection that reused its fd
        with t.out_lock:
            t.closed = True
            try:
                t.sock.close()
            except OSError:
                pass
        self.pool.release(t.worker)
        if t.handler is not None:
            t.worker.submit(t.handler.connection_lost)

    # ---- heartbeats ----

    def _start_heartbeat(self, t: Transport, seconds: int) -> None:
        t.heartbeat = seconds
        if seconds > 0 and not t.closed:
            self._add_timer(time.monotonic() + seconds / 2, self._heartbeat_tick, (t,))

    def _heartbeat_tick(self, t: Transport) -> None:
        if t.closed or t.heartbeat <= 0:
            return
        now = time.monotonic()
        hb = t.heartbeat
        if t.paused_output and now - t.last_send > 2 * hb:
            # we stopped reading because the peer does not read: it has not taken a byte
            # for two intervals (not even our heartbeats), so it is as dead as a silent one
            log.warning(
                "client %s has not read anything for %ds (heartbeat timeout %ds); closing "
                "connection", _fmt_peer(t.peer), int(now - t.last_send), hb,
            )
            self._lost(t)
            return
        if t.paused_flow or t.paused_alarm or t.paused_output:
            t.last_recv = now  # we are not reading: silence is ours, not the peer's
        elif now - t.last_recv > 2 * hb:
            log.warning(
                "missed heartbeats from client %s, timeout: %ds; closing connection",
                _fmt_peer(t.peer), hb,
            )
            self._lost(t)
            return
        if now - t.last_send >= hb / 2:
            with t.out_lock:
                t.out.append(HEARTBEAT_FRAME)
                t.pending_out += len(HEARTBEAT_FRAME)
            self._flush(t)
        self._add_timer(now + hb / 2, self._heartbeat_tick, (t,))

    # ---- shutdown ----

    def _stop_accepting(self) -> None:
        self._accepting = False
        for s in self.listeners:
            try:
                self.selector.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self.listeners = []

    def _stop(self) -> None:
        self._running = False

    def _shutdown_sockets(self) -> None:
        for t in list(self.transports.values()):
            self._lost(t)
        for s in self.listeners:
            s.close()
        self.selector.close()
        # A call_soon racing with the shutdown (e.g. stop() itself: its _stop can run and the
        # loop end between its put and its write) must not write to a closed (or reused) fd:
        # _woken stays True from now on, so call_soon never writes again.
        with self._wake_lock:
            self._woken = True
            os.close(self._wake_r)
            os.close(self._wake_w)


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
