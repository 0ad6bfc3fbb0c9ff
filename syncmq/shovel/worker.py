"""One dynamic shovel at work: a thread that owns both ends' connections.

Threads and ownership. A :class:`ShovelWorker` has one thread, ``syncmq-shovel-<vhost>/<name>``,
which builds a :class:`_Link` per connection attempt: an IOLoop of pika's ``SelectConnection``
with the source and the destination connections on it. Everything of a link (connections,
channels, the delivery buffer, the map of unconfirmed publishes) is touched only by that
thread, inside pika's callbacks. Other threads (the management API, the parameter store's
``apply``, shutdown) touch only :attr:`ShovelWorker.status` (one attribute, replaced whole:
read without a lock) and ask the thread to stop through ``IOLoop.add_callback_threadsafe``
and an Event.

Acknowledgement (``ack-mode``): ``on-confirm`` publishes on a destination channel in confirm
mode and acks (or, for a nack, nacks with requeue) the source delivery only when the
destination's confirm for it arrives, mirroring ``multiple``; ``on-publish`` acks the source
once the publish is written; ``no-ack`` consumes without acks. Whatever is unacked when a link
fails is requeued by the source broker (and comes again flagged ``redelivered``).

Failures end the link with a reason; the thread then shows ``terminated`` with it, waits
``reconnect-delay`` seconds (0: stays terminated, as RabbitMQ's ``temporary`` child) and
starts a new link (``starting``). A destination ``connection.blocked`` holds deliveries in
a buffer (bounded by the source prefetch in the acking modes) until ``connection.unblocked``.
"""

from __future__ import annotations

import errno
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pika
from pika.adapters.select_connection import IOLoop, SelectConnection

from . import uri as urimod
from .definition import ShovelSpec
from .pikalog import THREAD_PREFIX

log = logging.getLogger("syncmq.shovel")

COMPLETED = "completed"  # src-delete-after reached: the shovel deletes itself
CLOSE_TIMEOUT = 10.0
OUT_LIMIT = 4 << 20  # on-publish: unsent bytes to the destination before acks wait


@dataclass(frozen=True)
class Status:
    """What ``/api/shovels`` shows; replaced whole (never mutated)."""

    state: str  # starting | running | terminated
    timestamp: float
    reason: str | None = None
    src_uri: str | None = None
    dest_uri: str | None = None


class LocalNode:
    """How ``amqp://`` (no host) reaches this broker: its listener and internal login."""

    def __init__(self, host: str, port: int, username: str, password: str) -> None:
        self.host, self.port, self.username, self.password = host, port, username, password


def connection_parameters(ep: urimod.Endpoint, local: LocalNode | None,
                          conn_name: str) -> pika.ConnectionParameters:
    q = ep.query
    kw: dict = {"client_properties": {"connection_name": conn_name,
                                      "product": "syncmq shovel"},
                "connection_attempts": 1}
    if "heartbeat" in q:
        kw["heartbeat"] = int(q["heartbeat"])
    if "connection_timeout" in q:
        kw["socket_timeout"] = max(int(q["connection_timeout"]) / 1000, 0.001)
        kw["stack_timeout"] = max(int(q["connection_timeout"]) / 1000, 0.001)
    if "channel_max" in q:
        kw["channel_max"] = int(q["channel_max"]) or 65535
    if "frame_max" in q and int(q["frame_max"]):
        kw["frame_max"] = int(q["frame_max"])
    if ep.local:
        if local is None:
            raise RuntimeError("amqp:// (this node) is not available here")
        # this node: as the trusted user none (RabbitMQ's rabbit_auth_backend_dummy user,
        # which may publish any user_id), or as the URI's user (its password checked, or
        # trusted when the URI gives none, as RabbitMQ's rabbit_direct:connect)
        username = ep.username if ep.user_given else local.username
        password = ep.password if ep.password_given else local.password
        return pika.ConnectionParameters(
            local.host, local.port, ep.vhost, pika.PlainCredentials(username, password), **kw)
    ctx = ep.tls_context()
    if ctx is not None:
        kw["ssl_options"] = pika.SSLOptions(ctx, ep.server_name())
    return pika.ConnectionParameters(ep.host, ep.port, ep.vhost,
                                     pika.PlainCredentials(ep.username, ep.password), **kw)


class ShovelWorker:
    """A shovel's thread and status. ``on_completed(vhost, name)`` is called (on the
    shovel's thread) when ``src-delete-after`` is reached; it should clear the parameter."""

    def __init__(self, spec: ShovelSpec, local: LocalNode | None, cluster_name: str,
                 on_completed: Callable[[str, str], None] | None = None) -> None:
        self.spec = spec
        self.local = local
        self.cluster_name = cluster_name
        self.on_completed = on_completed
        self.status = Status("starting", time.time())
        self._stopping = threading.Event()
        self._link: _Link | None = None  # the current link; set and cleared by the thread
        self.thread = threading.Thread(
            target=self._run, name=f"{THREAD_PREFIX}{spec.vhost}/{spec.name}", daemon=True)

    def start(self) -> ShovelWorker:
        self.thread.start()
        return self

    def stop(self, join: bool = True, timeout: float = CLOSE_TIMEOUT + 5) -> None:
        """Close both connections and end the thread (``join``: wait for it, unless called
        from it)."""
        self._stopping.set()
        link = self._link
        if link is not None:
            link.request_stop()
        if join and threading.current_thread() is not self.thread and self.thread.is_alive():
            self.thread.join(timeout)

    def _set(self, state: str, reason: str | None = None, link: _Link | None = None) -> None:
        self.status = Status(state, time.time(), reason,
                             link.src_uri if link else None, link.dest_uri if link else None)

    def _run(self) -> None:
        spec = self.spec
        while not self._stopping.is_set():
            self._set("starting")
            link = self._link = _Link(self)
            if self._stopping.is_set():
                # stop() ran between the loop's check and the line above: it saw no link to
                # tell (it sets the flag, then reads ``_link``; this publishes the link, then
                # reads the flag: one of the two sees the other)
                link.ioloop.close()
                self._link = None
                break
            try:
                reason = link.run()
            except Exception as e:  # a bug must not kill the thread silently
                log.exception("shovel link failed", extra={"shovel": spec.name})
                reason = f"{type(e).__name__}: {e}"
            self._link = None
            if self._stopping.is_set():
                break
            if reason == COMPLETED:
                log.info("shovel finished (src-delete-after) and deletes itself",
                         extra={"shovel": spec.name, "vhost": spec.vhost})
                self._set("terminated", COMPLETED)
                if self.on_completed is not None:
                    self.on_completed(spec.vhost, spec.name)
                return
            log.warning("shovel terminated: %s", reason,
                        extra={"shovel": spec.name, "vhost": spec.vhost})
            self._set("terminated", reason)
            if spec.reconnect_delay <= 0:
                return
            self._stopping.wait(spec.reconnect_delay)


class _Link:
    """One attempt: both connections on one IOLoop, from connect to the first failure.
    Every method runs on the shovel's thread (pika callbacks), except :meth:`request_stop`."""

    def __init__(self, worker: ShovelWorker) -> None:
        self.w = worker
        self.spec = worker.spec
        self.ioloop = IOLoop()
        self.reason: str | None = None  # set once: the link is ending
        self.stopping = False  # the shovel stops: connections still opening are dropped
        self.conns: dict[str, SelectConnection] = {}
        self.chans: dict[str, pika.channel.Channel] = {}
        self.src_uri = self.dest_uri = None
        self.src_queue: str | None = None
        self.consumer_tag: str | None = None
        self.blocked = False
        self.buffer: list = []  # deliveries held while the destination is blocked
        self.unconfirmed: dict[int, int] = {}  # destination publish seq -> source tag
        self.held_acks: list[int] = []  # on-publish: source tags waiting for output room
        self.seq = 0
        self.remaining: int | None = None  # src-delete-after: messages still to move
        self.remaining_unacked: int | None = None  # ... still to publish
        # a delivery was left unpublished (src-delete-after reached): a source ack may no
        # longer be ``multiple``, which would ack it too (lost) once a nacked message's
        # redelivery (a higher tag) is confirmed
        self.skipped = False

    # ---- life cycle ----

    def run(self) -> str:
        try:
            for end in ("src", "dest"):
                self._connect(end)
        except Exception as e:  # e.g. an amqps URI's certificate file cannot be read
            self.fail(f"{_side(end)}_conn_died: could not connect ({type(e).__name__}: {e})")
        if self.conns and not all(c.is_closed for c in self.conns.values()):
            self.ioloop.start()
        for c in self.conns.values():  # what did not close within CLOSE_TIMEOUT: drop it
            if not c.is_closed:
                try:
                    c._adapter_disconnect_stream()  # pika's own teardown of the socket
                except Exception:
                    pass
        self.ioloop.close()
        return self.reason or "stopped"

    def request_stop(self) -> None:
        """Any thread: end the link (the thread's stop flag is already set)."""
        try:
            self.ioloop.add_callback_threadsafe(self._stop)
        except Exception:  # the loop is closed: the link is over anyway
            pass

    def _stop(self) -> None:
        """The shovel stops (deleted, replaced, the broker stopping): open connections close
        (within CLOSE_TIMEOUT); one still opening is not waited for, as it is after a
        failure: its peer may never answer (silent, unreachable), and the thread must end
        within :meth:`ShovelWorker.stop`'s join. (Closing it would trip pika's connection
        workflow: the loop stops instead, and :meth:`run` drops it as after CLOSE_TIMEOUT.)"""
        self.stopping = True
        self.fail("stopped")
        self._maybe_stop()

    def fail(self, reason: str) -> None:
        """End the link: close what is open, stop the loop once all is closed."""
        if self.reason is not None:
            return
        self.reason = reason
        for c in list(self.conns.values()):
            # an opening connection is left to finish: ``_opened`` closes it, or it fails
            # (pika's own workflow trips over a close() in the middle of its handshake)
            if c.is_open:
                try:
                    c.close()
                except Exception:
                    pass
        self.ioloop.call_later(CLOSE_TIMEOUT, self.ioloop.stop)
        self._maybe_stop()

    def _maybe_stop(self) -> None:
        if self.reason is None:
            return
        if all(c.is_closed or (self.stopping and not (c.is_open or c.is_closing))
               for c in self.conns.values()):
            self.ioloop.stop()

    # ---- connections ----

    def _connect(self, end: str) -> None:
        uris = self.spec.src_uris if end == "src" else self.spec.dest_uris
        if not uris:
            self.fail("failed_to_connect_using_provided_uris")
            return
        uri = random.choice(uris)
        ep = urimod.parse(uri)
        name = f"Shovel {self.spec.name}"
        params = connection_parameters(ep, self.w.local, name)
        if end == "src":
            self.src_uri = urimod.redact(uri)
        else:
            self.dest_uri = urimod.redact(uri)
        conn = SelectConnection(
            params, on_open_callback=lambda c: self._opened(end, c),
            on_open_error_callback=lambda c, e: self._conn_failed(end, e),
            on_close_callback=lambda c, e: self._conn_closed(end, e),
            custom_ioloop=self.ioloop)
        self.conns[end] = conn
        if end == "dest":
            conn.add_on_connection_blocked_callback(lambda c, f: self._blocked(True))
            conn.add_on_connection_unblocked_callback(lambda c, f: self._blocked(False))

    def _conn_failed(self, end: str, exc: Exception) -> None:
        self.fail(f"{_side(end)}_conn_died: "
                  f"could not connect ({_describe(exc)})")
        self._maybe_stop()

    def _conn_closed(self, end: str, exc: Exception) -> None:
        if self.reason is None:
            self.fail(f"{_side(end)}_conn_died: "
                      f"{_describe(exc)}")
        self._maybe_stop()

    def _opened(self, end: str, conn: SelectConnection) -> None:
        if self.reason is not None:
            conn.close()
            return
        conn.channel(on_open_callback=lambda ch: self._channel(end, ch))

    def _channel(self, end: str, ch) -> None:
        ch.add_on_close_callback(lambda c, e: self._chan_closed(end, e))
        self.chans[end] = ch
        if len(self.chans) == 2 and self.reason is None:
            self._declare_dest()

    def _chan_closed(self, end: str, exc: Exception) -> None:
        if self.reason is None:
            self.fail(f"{_side(end)}_channel_closed: "
                      f"{_describe(exc)}")

    # ---- set-up: destination, then source (as RabbitMQ: init_dest, init_source) ----

    def _declare_dest(self) -> None:
        """Each set-up step runs in the callback of the previous one; a step that arrives
        after the link began to end (a restart or delete during set-up: its channels are
        closing) does nothing (pika raises on a closing channel, inside its callback)."""
        if self.reason is not None:
            return
        spec = self.spec
        if spec.dest_queue is not None:
            self._ensure_queue("dest", spec.dest_queue, self._confirm_select)
        else:
            self._confirm_select()

    def _confirm_select(self) -> None:
        if self.reason is not None:
            return
        if self.spec.ack_mode == "on-confirm":
            self.chans["dest"].confirm_delivery(self._confirmed,
                                                callback=lambda f: self._declare_src())
        else:
            self._declare_src()

    def _ensure_queue(self, end: str, queue: str, then: Callable[[], None]) -> None:
        """``ensure_queue``: a passive declare; if the queue is missing, declare it durable
        (on a second channel: the 404 closed the first). Any other refusal ends the link."""
        conn = self.conns[end]
        done = []

        def declared(ch, _frame):
            done.append(True)
            if self.reason is not None or not ch.is_open:
                return  # the link is ending (a restart or delete): its channels are closing
            ch.close()
            then()

        def closed(exc, second: bool) -> None:
            if done or self.reason is not None:
                return
            if getattr(exc, "reply_code", None) == 404 and not second:
                conn.channel(on_open_callback=declare)
            else:
                self.fail(f"{_side(end)}_channel_closed: declaring queue '{queue}': "
                          f"{_describe(exc)}")

        def declare(ch):
            ch.add_on_close_callback(lambda c, e: closed(e, True))
            ch.queue_declare(queue, durable=True, callback=lambda f: declared(ch, f))

        def probe(ch):
            ch.add_on_close_callback(lambda c, e: closed(e, False))
            ch.queue_declare(queue, passive=True, callback=lambda f: declared(ch, f))

        conn.channel(on_open_callback=probe)

    def _declare_src(self) -> None:
        if self.reason is not None:
            return
        spec, ch = self.spec, self.chans["src"]
        if spec.src_queue is not None:
            self.src_queue = spec.src_queue
            self._ensure_queue("src", spec.src_queue, self._qos)
            return

        def bound(_f):
            self._qos()

        def declared(frame):
            if self.reason is not None:
                return
            self.src_queue = frame.method.queue
            ch.queue_bind(self.src_queue, spec.src_exchange, spec.src_exchange_key,
                          callback=bound)

        ch.queue_declare("", exclusive=True, callback=declared)

    def _qos(self) -> None:
        if self.reason is not None:
            return
        spec, ch = self.spec, self.chans["src"]
        if spec.ack_mode == "no-ack":
            self._remaining()
        else:
            ch.basic_qos(prefetch_count=spec.prefetch, callback=lambda f: self._remaining())

    def _remaining(self) -> None:
        if self.reason is not None:
            return
        da = self.spec.delete_after
        if da == "never":
            self._consume()
        elif da == "queue-length":
            self.chans["src"].queue_declare(
                self.src_queue, passive=True,
                callback=lambda f: self._set_remaining(f.method.message_count))
        else:
            self._set_remaining(int(da))

    def _set_remaining(self, n: int) -> None:
        if self.reason is not None:
            return
        self.remaining = self.remaining_unacked = n
        if n == 0:
            self.fail(COMPLETED)
        else:
            self._consume()

    def _consume(self) -> None:
        if self.reason is not None:
            return
        ch = self.chans["src"]
        ch.add_on_cancel_callback(lambda f: self.fail(
            "inbound_consumer_cancelled: the source queue was deleted or is unavailable"))
        self.consumer_tag = ch.basic_consume(
            self.src_queue, self._delivered, auto_ack=self.spec.ack_mode == "no-ack",
            callback=lambda f: self._running())

    def _running(self) -> None:
        """The consumer is on: the link is ``running`` (logged once per link, so the log
        shows each reconnection; a source redelivers only to a new link)."""
        if self.reason is None:
            self.w._set("running", link=self)
            log.info("shovel running", extra={"shovel": self.spec.name, "vhost": self.spec.vhost,
                                              "src_uri": self.src_uri, "dest_uri": self.dest_uri})

    # ---- the message path ----

    def _delivered(self, ch, method, props, body) -> None:
        if self.blocked or self.buffer:
            self.buffer.append((method, props, body))
            return
        self._forward(method, props, body)

    def _forward(self, method, props, body) -> None:
        if self.remaining_unacked == 0 or self.reason is not None:
            # src-delete-after: all published; the rest is requeued at close. Held unacked
            # meanwhile, under tags below those of later deliveries: see _confirmed
            self.skipped = True
            return
        spec = self.spec
        exchange, key = method.exchange, method.routing_key
        if spec.dest_queue is not None:
            exchange, key = "", spec.dest_queue
        else:
            if spec.dest_exchange is not None:
                exchange = spec.dest_exchange
            if spec.dest_exchange_key is not None:
                key = spec.dest_exchange_key
        self.chans["dest"].basic_publish(exchange, key, body, self._properties(props))
        tag = method.delivery_tag
        if spec.ack_mode == "on-confirm":
            self.seq += 1
            self.unconfirmed[self.seq] = tag
        elif spec.ack_mode == "on-publish":
            self._ack_published(tag)
        else:
            self._moved(1)
        if self.remaining_unacked is not None:
            self.remaining_unacked -= 1

    def _ack_published(self, tag: int) -> None:
        """on-publish: ack once written, but not while the destination connection has more
        than OUT_LIMIT bytes unsent (a slow destination): the source then stops at its
        prefetch instead of the shovel buffering without bound."""
        self.held_acks.append(tag)
        if len(self.held_acks) == 1:
            self._release_acks()

    def _release_acks(self) -> None:
        if not self.held_acks or self.reason is not None:
            return
        try:
            unsent = self.conns["dest"]._get_write_buffer_size()  # pika's own count
        except Exception:
            unsent = 0
        if unsent > OUT_LIMIT:
            self.ioloop.call_later(0.01, self._release_acks)
            return
        held, self.held_acks = self.held_acks, []
        self.chans["src"].basic_ack(held[-1], multiple=True)  # in order: all up to it
        self._moved(len(held))

    def _properties(self, props: pika.BasicProperties) -> pika.BasicProperties:
        spec = self.spec
        for k, v in spec.publish_properties.items():
            setattr(props, k, v)
        if spec.add_forward_headers or spec.add_timestamp_header:
            headers = dict(props.headers or {})
            if spec.add_forward_headers:
                table = {"shovelled-by": self.w.cluster_name, "shovel-type": "dynamic",
                         "shovel-name": spec.name, "shovel-vhost": spec.vhost,
                         "src-uri": self.src_uri, "dest-uri": self.dest_uri}
                table.update({k.replace("_", "-"): v
                              for k, v in spec.source_details().items()})
                table.update({k.replace("_", "-"): v for k, v in spec.dest_details().items()})
                prior = headers.get("x-shovelled")
                headers["x-shovelled"] = [table] + (prior if isinstance(prior, list) else [])
            if spec.add_timestamp_header:
                headers["x-shovelled-timestamp"] = int(time.time())
            props.headers = headers
        return props

    def _confirmed(self, frame) -> None:
        m = frame.method
        seq, multiple = m.delivery_tag, m.multiple
        tag = self.unconfirmed.get(seq)
        if tag is None:
            return
        src = self.chans["src"]
        if multiple:
            done = [s for s in self.unconfirmed if s <= seq]
        else:
            done = [seq]
        ack = isinstance(m, pika.spec.Basic.Ack)
        if multiple and self.skipped:  # only what was published, one by one
            for s in done:
                if ack:
                    src.basic_ack(self.unconfirmed[s])
                else:
                    src.basic_nack(self.unconfirmed[s], requeue=True)
        elif ack:
            src.basic_ack(tag, multiple=multiple)
        else:
            src.basic_nack(tag, multiple=multiple, requeue=True)
        for s in done:
            del self.unconfirmed[s]
        if ack:
            self._moved(len(done))
        elif self.remaining_unacked is not None:
            self.remaining_unacked += len(done)  # requeued: to be published again

    def _moved(self, n: int) -> None:
        if self.remaining is not None:
            self.remaining -= n
            if self.remaining <= 0:
                self.fail(COMPLETED)

    def _blocked(self, blocked: bool) -> None:
        self.blocked = blocked
        log.warning("shovel destination %s", "blocked" if blocked else "unblocked",
                    extra={"shovel": self.spec.name})
        if not blocked:
            buffered, self.buffer = self.buffer, []
            for method, props, body in buffered:
                if self.blocked:
                    self.buffer.append((method, props, body))
                else:
                    self._forward(method, props, body)


def _side(end: str) -> str:
    return "inbound" if end == "src" else "outbound"


# RabbitMQ's human_readable_connection_error texts, by errno name
CONNECT_ERRORS = {
    "ECONNREFUSED": "connection to target host was refused (ECONNREFUSED)",
    "ECONNRESET": "connection to target host was reset by peer (ECONNRESET)",
    "ETIMEDOUT": "connection to target host timed out (ETIMEDOUT)",
    "EHOSTUNREACH": "target host is unreachable (EHOSTUNREACH)",
}


def _root(exc: BaseException) -> BaseException:
    """The innermost cause pika wraps (workflow -> connector -> socket error)."""
    for _ in range(10):
        inner = None
        if getattr(exc, "exceptions", None):
            inner = exc.exceptions[-1]
        elif isinstance(getattr(exc, "exception", None), BaseException):
            inner = exc.exception
        elif exc.args and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        if inner is None:
            break
        exc = inner
    return exc


def _describe(exc: object) -> str:
    if exc is None:
        return "closed"
    root = _root(exc) if isinstance(exc, BaseException) else exc
    if isinstance(root, pika.exceptions.ProbableAuthenticationError) or (
            getattr(root, "reply_code", 0) == 403):
        text = root.args[0] if root.args and isinstance(root.args[0], str) else str(root)
        return f"auth_failure: {text}"
    if isinstance(root, socket.gaierror):
        return "target hostname cannot be resolved (NXDOMAIN)"
    if isinstance(root, OSError) and root.errno is not None:
        name = errno.errorcode.get(root.errno, "")
        return CONNECT_ERRORS.get(name, f"{name or root.errno}: {root.strerror}")
    args = getattr(root, "args", ())
    return f"{type(root).__name__}{args!r}" if args else type(root).__name__
