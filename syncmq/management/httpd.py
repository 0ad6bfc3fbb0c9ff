"""The management HTTP server: waitress (a WSGI server) serving :mod:`.wsgi`'s application.

waitress parses HTTP on one I/O thread (``syncmq-management``, an asyncore loop over
``poll``) and runs the application on a fixed pool of ``threads`` worker threads; it decodes
chunked bodies, refuses bodies over its limit, and caps open connections (beyond
``connection_limit`` it stops accepting: later clients wait in the kernel's backlog and hold
no file descriptor of ours). Three hooks are added here, each on the I/O thread:

- **The gate before the body.** As soon as a request's headers are parsed, the application's
  :meth:`~.wsgi.App.admit` authenticates it and picks its body limit. A refused request is
  answered (401, 413, 415) without reading one byte of its body: the parser drops the body,
  no ``100 Continue`` is sent, every later byte on that connection is discarded and the
  connection closes after the answer (so nothing in the unread body can be taken for a
  second request). A chunked body is cut at the endpoint's limit as it arrives; a request
  with both Content-Length and chunked Transfer-Encoding is refused (400) the same way.
- **Read and idle timeouts.** A request whose headers and body have not all arrived within
  ``read_timeout`` of its first byte is dropped (slowloris), and a connection with no
  request in flight is closed after ``idle_timeout``.
- **Accept back-off.** EMFILE/ENFILE on accept pauses accepting for one second and logs one
  line per pause with the count, instead of spinning (RabbitMQ's acceptor does the same).

Errors found by waitress itself (a malformed request line, a bad chunk) are answered in
RabbitMQ's JSON error shape, never with waitress's text page or a traceback.
"""

from __future__ import annotations

import copy
import errno
import functools
import json
import logging
import os
import threading
import time
from dataclasses import dataclass

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask
from waitress.trigger import trigger as _WaitressTrigger

from .errors import bad_request
from .state import Context
from .wsgi import App

log = logging.getLogger("syncmq.management")

ACCEPT_PAUSE = 1.0  # seconds without accepting after EMFILE/ENFILE


@dataclass
class HTTPSettings:
    """The management listener's limits (``--management-*`` options)."""

    max_body: int = 1024 * 1024  # every request body but a definitions import
    max_definitions_body: int = 64 * 1024 * 1024
    read_timeout: float = 30.0  # whole request (headers and body) from its first byte
    idle_timeout: float = 60.0  # a kept-alive connection with no request
    max_connections: int = 100
    threads: int = 4
    metrics_auth: str = "per-object"  # which /metrics endpoints need credentials
    cors_origins: tuple[str, ...] = ()


class _Parser(HTTPRequestParser):
    refusal = None
    user = None

    def __init__(self, adj: Adjustments, channel: _Channel) -> None:
        super().__init__(adj)
        self.channel = channel

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        ch = self.channel
        admission = ch.server.gate.admit(
            self.command, self.request_uri, self.headers, self.content_length, ch.addr)
        if self.chunked and "CONTENT_LENGTH" in self.headers:
            # two framings: the classic request-smuggling set-up (RFC 9112 6.1), refused
            admission.refusal = bad_request("both Content-Length and Transfer-Encoding")
        self.user = admission.user
        if admission.refusal is not None:
            # Answered from the headers alone: drop the body unread and everything after it.
            self.refusal = admission.refusal
            self.body_rcv = None
            self.content_length = 0
            self.headers.pop("CONTENT_LENGTH", None)
            self.expect_continue = False
            self.connection_close = True
            self.headers["CONNECTION"] = "close"  # waitress closes after the answer
            ch.discarding = True
        elif admission.limit + 1 < self.adj.max_request_body_size:
            self.adj = copy.copy(self.adj)  # this request's limit (chunked bodies included)
            self.adj.max_request_body_size = admission.limit + 1

    def received(self, data: bytes) -> int:
        n = super().received(data)
        return len(data) if self.refusal is not None else n


class _Task(WSGITask):
    def get_environment(self) -> dict:
        environ = super().get_environment()
        environ["syncmq.user"] = self.request.user
        environ["syncmq.refusal"] = self.request.refusal
        return environ


class _ErrorTask(ErrorTask):
    """waitress's own refusals (malformed HTTP, a body over the limit) in RabbitMQ's shape."""

    def execute(self) -> None:
        e = self.request.error
        status = f"{e.code} {e.reason}"
        error = "bad_request" if e.code == 400 else e.reason
        body = json.dumps({"error": error, "reason": e.body}).encode()
        self.status = status
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    task_class = _Task
    error_task_class = _ErrorTask
    discarding = False  # a refused request's body and anything after it is dropped
    request_started = 0.0

    def __init__(self, server, sock, addr, adj, map=None) -> None:  # noqa: A002 (waitress)
        self.parser_class = functools.partial(_Parser, channel=self)
        super().__init__(server, sock, addr, adj, map=map)

    def received(self, data: bytes) -> bool:
        if self.discarding:
            return True
        if self.request is None:
            self.request_started = time.time()
        return super().received(data)


class _Trigger(_WaitressTrigger):
    """waitress's wake-up pipe, safe to pull after it is closed.

    Any thread pulls it (request threads when a response is ready, :meth:`ManagementServer.stop`
    with ``close_all``); only the I/O thread closes it, in ``close_all``. waitress appends a
    thunk, *then* writes to the pipe: a wake-up already pending can run the thunk, and a
    ``close_all`` close the pipe, before that write, which then fails with EBADF (or, once
    the fd number is reused, writes ``x`` into someone else's file). Here the write and the
    close hold ``_pull_lock``, and a pull after the close is a no-op (``close_all`` is the
    last thunk: nothing after it needs running). Lock order: waitress's ``lock`` (held by the
    I/O thread while it runs thunks, ``close`` included) before ``_pull_lock``; a pull never
    holds both. The write end is non-blocking: a full pipe already holds wake-ups, so a pull
    never blocks under the lock."""

    def __init__(self, map) -> None:  # noqa: A002 (waitress's name)
        self._pull_lock = threading.Lock()
        super().__init__(map)
        os.set_blocking(self.trigger, False)

    def pull_trigger(self, thunk=None) -> None:
        if thunk:
            with self.lock:
                self.thunks.append(thunk)
        with self._pull_lock:
            if self._closed:
                return
            try:
                self._physical_pull()
            except BlockingIOError:
                pass

    def close(self) -> None:
        with self._pull_lock:
            super().close()


class _Server(TcpWSGIServer):
    channel_class = _Channel
    settings: HTTPSettings
    gate: App
    _paused_until = 0.0
    _refused_accepts = 0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.trigger.close()  # waitress's, not yet polled: replaced by one safe after close
        self.trigger = _Trigger(self._map)

    def maintenance(self, now: float) -> None:
        """Close connections idle past ``idle_timeout`` and requests still arriving after
        ``read_timeout`` (runs on the I/O thread every ``cleanup_interval``)."""
        s = self.settings
        for ch in list(self.active_channels.values()):
            if ch.requests:
                continue  # a request is being answered
            if ch.request is not None:
                if ch.request_started < now - s.read_timeout:
                    ch.will_close = True
            elif ch.last_activity < now - s.idle_timeout:
                ch.will_close = True

    def readable(self) -> bool:
        ok = super().readable()
        return ok and time.time() >= self._paused_until

    def handle_accept(self) -> None:
        try:
            pair = self.socket.accept()
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self._refused_accepts += 1
                if time.time() >= self._paused_until:
                    log.error("management listener cannot accept connections (%s): pausing "
                              "accepts for %.0f s", e.strerror, ACCEPT_PAUSE,
                              extra={"refused_accepts": self._refused_accepts})
                    self._refused_accepts = 0
                self._paused_until = time.time() + ACCEPT_PAUSE
            return
        conn, addr = pair
        try:
            self.set_socket_options(conn)
        except OSError:  # the peer already went away
            conn.close()
            return
        self.channel_class(self, conn, addr, self.adj, map=self._map)


class ManagementServer:
    """The HTTP listener; :meth:`start` binds and serves in thread ``name``.

    Without ``app`` it builds and owns the management :class:`~.wsgi.App` (and its history
    sampler). With one (the Prometheus port: a :class:`~.wsgi.MetricsOnly` around the
    management listener's App, or around an App never started when the management API is
    off) it only serves it."""

    def __init__(self, ctx: Context, host: str, port: int,
                 settings: HTTPSettings | None = None, app=None,
                 name: str = "syncmq-management") -> None:
        self.ctx = ctx
        self.host = host
        self.port = port
        self.settings = settings or HTTPSettings()
        self.app = app
        self.owns_app = app is None
        self.name = name
        self.server: _Server | None = None
        self.thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    def start(self) -> tuple[str, int]:
        """Bind (port 0 = ephemeral) and serve; returns the bound address. Raises OSError."""
        s = self.settings
        adj = Adjustments(
            host=self.host, port=self.port, threads=s.threads,
            connection_limit=s.max_connections + 2,  # waitress counts its listener and trigger
            channel_timeout=max(s.idle_timeout, s.read_timeout),
            cleanup_interval=max(0.2, min(s.read_timeout, s.idle_timeout) / 4),
            max_request_body_size=max(s.max_body, s.max_definitions_body) + 1,
            max_request_header_size=64 * 1024, asyncore_use_poll=True,
            ident=self.name, expose_tracebacks=False, log_socket_errors=False,
            asyncore_loop_timeout=1)  # waitress takes whole seconds (0.5 became 0: a busy loop)
        if self.owns_app:
            self.app = App(self.ctx, s)
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(s.threads)
        server = _Server(self.app, {}, dispatcher=dispatcher, adj=adj, sockinfo=adj.listen[0])
        server.settings, server.gate = s, self.app
        self.server = server
        self.address = (server.effective_host, int(server.effective_port))
        if self.owns_app:
            self.app.start()
        self.thread = threading.Thread(target=server.run, name=self.name, daemon=True)
        self.thread.start()
        return self.address

    def threads(self) -> list[threading.Thread]:
        """The listener's and the history sampler's threads (waitress's request threads are
        joined by ``stop``: its task dispatcher's shutdown)."""
        if self.app is None or self.thread is None:
            return []
        if not self.owns_app:
            return [self.thread]
        return [self.thread, self.app.api.history.thread]

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        if self.app is not None and self.owns_app:
            self.app.stop()
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=2)

        def close_all() -> None:  # on the I/O thread: its map empties and its loop ends
            for obj in list(server._map.values()):
                if isinstance(obj, HTTPChannel):
                    obj.handle_close()  # under its outbuf lock: a late request thread's
                    # write then sees it closed (ClientDisconnected), never a closed socket
            server.close()  # the listener, then the trigger (no pull reaches it after)

        server.trigger.pull_trigger(close_all)
        if self.thread is not None:
            self.thread.join(timeout=5)
