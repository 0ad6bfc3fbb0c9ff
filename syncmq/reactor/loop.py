"""The reactor: the one thread that owns the selector, every socket, outbound buffer and timer.

Here: the loop, cross-thread calls (``call_soon``), timers, accepting connections, the
selector's interest per connection, closing a connection and shutdown. The receive side is
``reading.py`` (:class:`~.reading.Reader`), the send side ``sending.py``
(:class:`~.sending.Sender`); both are mixins of :class:`Reactor` and run on its thread except
where they say otherwise. ``_timers``, ``transports``, the selector and the listeners are the
reactor thread's; ``_calls`` is a thread-safe queue; ``_wake_lock`` guards ``_woken`` and the
wake pipe's content together.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import os
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from ..workers import WorkerPool
from .poller import EVENT_READ, EVENT_WRITE, READ_BITS, WRITE_BITS, Poller
from .reading import Reader
from .sending import Sender
from .transport import HandlerFactory, Transport, _fmt_peer, log

# accept(2) errors that belong to one pending connection (Linux reports such a connection's
# network error from accept itself; the next accept is unaffected); any other error pauses
# the listener (Reactor._pause_accepting)
_ACCEPT_PEER_ERRORS = frozenset({
    errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.ENOPROTOOPT,
    errno.EHOSTDOWN, errno.ENONET, errno.EHOSTUNREACH, errno.EOPNOTSUPP, errno.ENETUNREACH,
    errno.ETIMEDOUT, errno.ECONNRESET,
})


class _Listener:
    """Selector data of a listening socket: plain (``ssl_context`` None) or TLS."""

    __slots__ = ("sock", "ssl_context")

    def __init__(self, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        self.sock = sock
        self.ssl_context = ssl_context


# Output back-pressure (docs/architecture.md, "Flow control"): a connection with more than
# OUT_HIGH bytes written but not yet sent gets no more deliveries (``Channel.deliver`` says "no
# credit") and is not read (its own requests, such as mandatory publishes that come back as
# basic.return, would add more output) until the reactor has sent enough of it to be down to
# OUT_LOW; then its consumers are refilled on its worker. A consumer or publisher that never
# reads its socket costs the broker at most about OUT_HIGH (plus one message) of memory.
# Configurable with the hidden --max-pending-output option (OUT_LOW is a quarter of it).
OUT_HIGH = 8 * 1024 * 1024
OUT_LOW = 2 * 1024 * 1024
_WAKE = object()


class Reactor(Reader, Sender):
    """Owner of the selector. ``run()`` is the thread body (thread name ``syncmq-reactor``)."""

    def __init__(
        self,
        pool: WorkerPool,
        handler_factory: HandlerFactory,
        handshake_timeout: float = 10.0,
        max_connections: int = 0,
        max_pending_output: int = OUT_HIGH,
        max_handshakes: int = 0,
    ) -> None:
        self.pool = pool
        self.out_high = max_pending_output
        self.out_low = max_pending_output // 4
        self.handler_factory = handler_factory
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections  # open connections; 0: no limit
        # Accepted sockets that have not completed the AMQP handshake are bounded on their own
        # (and by the handshake timeout), so idle sockets cannot keep real clients out.
        self.max_handshakes = max_handshakes  # 0: no limit
        # Guards n_handshaking, n_open and every transport's ``opened`` (leaf lock): accept
        # and _lost run on the reactor, mark_open on a worker (connection.open).
        self._count_lock = threading.Lock()
        self.n_handshaking = 0
        self.n_open = 0
        self.selector = Poller()
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
        self.selector.register(self._wake_r, EVENT_READ, _WAKE)
        self._timers: list = []  # heap of (deadline, seq, fn, args); reactor thread only
        self._timer_seq = itertools.count()
        self._running = False
        self._accepting = True
        self.thread: threading.Thread | None = None
        # The reactor thread's ident once it runs (None before): call_soon from this thread
        # needs no wake-up, and a stand-in's first write is sent at once (Transport._wake)
        self.ident: int | None = None
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
        self.selector.register(s, EVENT_READ, _Listener(s, ssl_context))
        return s.getsockname()[:2]

    def start(self) -> None:
        self._running = True
        self.thread = threading.Thread(target=self.run, name="syncmq-reactor", daemon=True)
        self.thread.start()

    # ---- cross-thread entry points ----

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the reactor thread, in call order. Thread-safe."""
        self._calls.put((fn, args))
        if threading.get_ident() == self.ident:
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

    def stop_accepting(self) -> None:
        self.call_soon(self._stop_accepting)

    def stop(self) -> None:
        """Stop the loop and close every socket (after the server closed connections)."""
        self.call_soon(self._stop)
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(10)

    # ---- the loop ----

    def run(self) -> None:
        self.ident = threading.get_ident()
        poll = self.selector.poll
        registered = self.selector.data
        calls = self._calls
        timers = self._timers  # (the same list for the reactor's life)
        monotonic = time.monotonic
        while self._running:
            timeout = None
            if timers:
                timeout = max(0.0, timers[0][0] - monotonic())
            if not calls.empty():
                timeout = 0
            try:
                events = poll(timeout)
            except InterruptedError:
                continue
            for fd, bits in events:
                data = registered.get(fd)
                if data is None:
                    continue  # unregistered by an earlier event of this turn
                if data is _WAKE:
                    self._drain_wake()
                elif type(data) is _Listener:
                    self._accept(data.sock, data.ssl_context)
                elif data.tls_handshaking:
                    if not data.closed:
                        self._tls_handshake(data)
                else:
                    ev = data.registered_events  # (an error or hang-up sets every bit)
                    if bits & READ_BITS and ev & EVENT_READ and not data.closed:
                        self._read(data)
                    if bits & WRITE_BITS and ev & EVENT_WRITE and not data.closed:
                        self._flush(data)
            if not calls.empty():
                self._run_calls()
            if timers and timers[0][0] <= monotonic():
                self._run_timers()
        self._shutdown_sockets()
        self.ident = None  # (a later thread may get the same ident)

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

    # Out of file descriptors (EMFILE/ENFILE): the listener is not polled for ACCEPT_PAUSE
    # (the pending connection stays in the kernel's backlog; open connections keep being
    # served), and one line is logged per ACCEPT_REPORT with the count of refused accepts,
    # instead of a line per loop turn (RabbitMQ's acceptor also sleeps and retries).
    ACCEPT_PAUSE = 0.1
    ACCEPT_REPORT = 5.0
    _accept_refused = 0
    _accept_report_at = 0.0

    def _pause_accepting(self, lsock: socket.socket, err: OSError) -> None:
        now = time.monotonic()
        self._accept_refused += 1
        if now >= self._accept_report_at:
            log.error("cannot accept connections: %s; retrying every %.1f s", err.strerror,
                      self.ACCEPT_PAUSE, extra={"refused_accepts": self._accept_refused,
                                                "interval_s": self.ACCEPT_REPORT})
            self._accept_refused = 0
            self._accept_report_at = now + self.ACCEPT_REPORT
        data = self.selector.data_of(lsock)
        self.selector.unregister(lsock)
        self._add_timer(now + self.ACCEPT_PAUSE, self._resume_accepting, (lsock, data))

    def _resume_accepting(self, lsock: socket.socket, data: Any) -> None:
        if self._accepting and lsock in self.listeners:
            self.selector.register(lsock, EVENT_READ, data)

    def _accept(self, lsock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        for _ in range(256):
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _ACCEPT_PEER_ERRORS:
                    continue  # that one connection failed before we took it: take the next
                # out of fds or memory, or anything else: never end the reactor thread;
                # stop polling the listener for a moment and log once per interval
                self._pause_accepting(lsock, e)
                return
            if not self._accepting:
                sock.close()
                continue
            refused = self._count_accepted()
            if refused:
                log.warning("connection from %s refused: the limit of %d %s is reached",
                            _fmt_peer(peer), *refused)
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
                with self._count_lock:
                    self.n_handshaking -= 1
                sock.close()
                continue
            self.transports[t.fd] = t
            self.selector.register(sock, EVENT_READ, t)
            if self.handshake_timeout:
                self._add_timer(
                    time.monotonic() + self.handshake_timeout, self._check_handshake, (t,)
                )

    def _count_accepted(self) -> tuple[int, str] | None:
        """Count a new socket as handshaking, or say which limit refuses it."""
        with self._count_lock:
            if self.max_connections and self.n_open >= self.max_connections:
                return self.max_connections, "connections"
            if self.max_handshakes and self.n_handshaking >= self.max_handshakes:
                return self.max_handshakes, "connections in the handshake"
            self.n_handshaking += 1
        return None

    def _mark_open(self, t: Transport) -> bool | None:
        with self._count_lock:
            if t.opened is not False:
                return t.opened  # True: open already; None: lost
            if self.max_connections and self.n_open >= self.max_connections:
                return False
            t.opened = True
            self.n_handshaking -= 1
            self.n_open += 1
        return True

    def _check_handshake(self, t: Transport) -> None:
        if not t.closed and not t.opened:
            log.info(
                "closing connection from %s: handshake not completed within %.0fs",
                _fmt_peer(t.peer), self.handshake_timeout,
            )
            self._lost(t)

    def _update_events(self, t: Transport) -> None:
        """Make the selector watch what ``t`` needs: reads unless paused, writes while output
        is pending. Reactor thread only."""
        events = 0 if (t.paused_flow or t.paused_by or t.paused_output) \
            else EVENT_READ
        if t.writing:
            events |= EVENT_WRITE
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
        if events & EVENT_READ and t.tls and not t.tls_handshaking and \
                t.sock.pending():
            self._read(t)  # TLS may hold decrypted bytes the selector cannot see

    def _lost(self, t: Transport) -> None:
        """Close the socket (once) and tell the handler on its worker."""
        if t.closed:
            return
        self.transports.pop(t.fd, None)
        with self._count_lock:
            if t.opened:
                self.n_open -= 1
            elif t.opened is False:
                self.n_handshaking -= 1
            t.opened = None  # counted out (a late mark_open sees it)
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
            # after the input already handed over (the lane keeps the order)
            self._submit(t, t.handler.connection_lost, ())

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
