"""The two-broker driver of the differential fuzzer (tests/interop/test_diff_fuzz.py).

An *op* is a plain tuple ``(kind, conn, chan, *args)`` naming things symbolically (``q0``,
``x1``, ``srv0`` for the first server-named queue, ``ct1`` for a consumer tag, ``amq.*`` and
``""`` literally). :class:`Pair` runs each op on RabbitMQ and on syncmq through pika's
BlockingConnection (:class:`Side`, one per broker: two connections, two channels each, opened
on first use and again after a close), and returns both *outcomes*: what the client saw,
normalised (per-run prefix -> ``P``, server-named queues -> ``srvN``, x-death times -> ``*``):

- the reply: ``("ok", details)`` (declare-ok counts, get-ok message and counts, purge and
  delete counts, a confirm's ack/nack/return), ``("channel.close", code, text)`` or
  ``("connection.close", code, text)``; an asynchronous error (a bad ack, a publish to a
  missing exchange) is surfaced by a round trip on the same channel after the op;
- the asynchronous events it caused (consumer deliveries with body, properties and
  redelivered, basic.return, broker-sent basic.cancel), collected until both brokers have
  produced as many (bounded by ``SETTLE``).

Delivery tags are never compared (they are per-channel counters); acks name the N-th
outstanding delivery of the channel in tag order, which each side resolves on its own.
"""

from __future__ import annotations

import os
import re
import time

import pika
import pika.exceptions as pe

SETTLE = float(os.environ.get("SYNCMQ_DIFF_FUZZ_SETTLE", "3"))  # s to wait for async events
CONNS, CHANS, TAGS = 2, 2, 3
GEN = re.compile(r"amq\.gen-[A-Za-z0-9_\-]+")


class ChanState:
    __slots__ = ("ch", "unacked", "tags")

    def __init__(self, ch) -> None:
        self.ch = ch
        self.unacked: list[int] = []  # outstanding delivery tags (kept sorted)
        self.tags: set[str] = set()   # consumer tags this client believes active


class Side:
    """One broker's connections, channels and what the client has observed."""

    def __init__(self, port: int, prefix: str) -> None:
        self.port = port
        self.prefix = prefix
        self.conns: list = [None] * CONNS
        self.chans: dict[tuple[int, int], ChanState] = {}
        self.srv: list[str] = []  # server-named queues, in declaration order
        self.events: list[tuple] = []

    # ---- names ----

    def queue(self, sym: str) -> str:
        if sym.startswith("srv"):
            i = int(sym[3:])
            return self.srv[i] if i < len(self.srv) else f"{self.prefix}-no{sym}"
        if sym[:1] in ("q", "x") and sym[1:].isdigit():
            return f"{self.prefix}-{sym}"
        return sym  # "", amq.* literals

    exchange = queue

    def norm(self, x):
        if isinstance(x, bytes):
            x = x.decode("utf-8", "replace")
        if isinstance(x, str):
            for i, name in enumerate(self.srv):
                x = x.replace(name, f"srv{i}")
            return GEN.sub("amq.gen-*", x.replace(self.prefix, "P"))
        if isinstance(x, (list, tuple)):
            return type(x)(self.norm(v) for v in x)
        if isinstance(x, dict):
            return {self.norm(k): ("*" if k == "time" else self.norm(v))
                    for k, v in sorted(x.items())}
        return x

    # ---- connections and channels ----

    def conn(self, c: int):
        if self.conns[c] is None or not self.conns[c].is_open:
            self.drop_conn(c)
            self.conns[c] = pika.BlockingConnection(pika.ConnectionParameters(
                "127.0.0.1", self.port, credentials=pika.PlainCredentials("guest", "guest"),
                connection_attempts=1, socket_timeout=10, blocked_connection_timeout=30,
                heartbeat=0))
        return self.conns[c]

    def drop_conn(self, c: int) -> None:
        self.conns[c] = None
        for key in [k for k in self.chans if k[0] == c]:
            del self.chans[key]

    def chan(self, c: int, n: int) -> ChanState:
        st = self.chans.get((c, n))
        if st is None or not st.ch.is_open:
            ch = self.conn(c).channel()
            ch.add_on_return_callback(
                lambda _ch, m, p, b, c=c, n=n: self.events.append(
                    ("return", c, n, m.reply_code, m.reply_text, m.exchange, m.routing_key, b)))
            ch.add_on_cancel_callback(
                lambda frame, c=c, n=n: self._cancelled(c, n, frame.method.consumer_tag))
            st = self.chans[(c, n)] = ChanState(ch)
        return st

    def _cancelled(self, c: int, n: int, tag: str) -> None:
        st = self.chans.get((c, n))
        if st is not None:
            st.tags.discard(tag)
        self.events.append(("cancelled-by-broker", c, n, tag))

    def on_deliver(self, c: int, n: int, auto_ack: bool):
        def cb(_ch, m, p, body):
            st = self.chans.get((c, n))
            if st is not None and not auto_ack:
                st.unacked.append(m.delivery_tag)
                st.unacked.sort()
            self.events.append(("deliver", c, n, m.consumer_tag, body, m.redelivered,
                                m.exchange, m.routing_key, props(p)))
        return cb

    def pump(self, time_limit: float = 0) -> None:
        """Let pika dispatch what has arrived (deliveries, returns, cancels)."""
        for c, conn in enumerate(self.conns):
            if conn is None or not conn.is_open:
                continue
            try:
                conn.process_data_events(time_limit=time_limit)
            except pe.ConnectionClosedByBroker as e:
                self.events.append(("connection.close", c, e.reply_code, e.reply_text))
                self.drop_conn(c)
            except pe.AMQPConnectionError as e:
                self.events.append(("connection-lost", c, type(e).__name__))
                self.drop_conn(c)

    def close(self) -> None:
        for c, conn in enumerate(self.conns):
            try:
                if conn is not None and conn.is_open:
                    conn.close()
            except Exception:  # noqa: BLE001 - best effort cleanup of a broken connection
                pass
            self.conns[c] = None
        self.chans.clear()


def props(p) -> tuple:
    return (p.content_type, p.content_encoding, p.headers, p.delivery_mode, p.priority,
            p.correlation_id, p.reply_to, p.expiration, p.message_id, p.timestamp, p.type,
            p.user_id, p.app_id)


def run_op(side: Side, op: tuple):
    """Run one op on one side; its outcome (not yet normalised)."""
    kind, c = op[0], op[1]
    if kind == "close_connection":
        conn = side.conns[c]
        if conn is not None and conn.is_open:
            conn.close()
        side.drop_conn(c)
        return ("ok",)
    if kind == "update_secret":
        return _update_secret(side, c, op[2])
    n = op[2]
    try:
        st = side.chan(c, n)
        out = OPS[kind](side, st, *op[3:])
        if kind != "close_channel" and st.ch.is_open:
            st.ch.exchange_declare("amq.direct", passive=True)  # surfaces an async close
        return out
    except pe.ChannelClosedByBroker as e:
        side.chans.pop((c, n), None)
        return ("channel.close", e.reply_code, e.reply_text)
    except pe.ConnectionClosedByBroker as e:
        side.drop_conn(c)
        return ("connection.close", e.reply_code, e.reply_text)
    except (pe.StreamLostError, pe.AMQPConnectionError) as e:
        side.drop_conn(c)
        return ("connection-lost", type(e).__name__)


def _update_secret(side: Side, c: int, right: bool):
    """connection.update-secret with guest's password or another; a channel.open after it
    surfaces a close. After a wrong secret the client closes the connection if the broker did
    not (RabbitMQ, a known difference), so that both brokers go on from the same state."""
    try:
        conn = side.conn(c)
        conn.update_secret("guest" if right else "not-guest", "fuzz")
        conn.channel().close()
        if not right:
            conn.close()
            side.drop_conn(c)
        return ("ok",)
    except pe.ConnectionClosedByBroker as e:
        side.drop_conn(c)
        return ("connection.close", e.reply_code, e.reply_text)


def _args(side: Side, args: tuple) -> dict | None:
    """x-arguments with symbolic names (``x0``, ``q1``) resolved for this side."""
    return {k: side.queue(v) if isinstance(v, str) else v for k, v in args} or None


def _declare_queue(side, st, q, passive, durable, exclusive, auto_delete, args):
    r = st.ch.queue_declare(side.queue(q), passive=passive, durable=durable,
                            exclusive=exclusive, auto_delete=auto_delete,
                            arguments=_args(side, args)).method
    if q == "" and r.queue not in side.srv:
        side.srv.append(r.queue)
    return ("ok", r.queue, r.message_count, r.consumer_count)


def _delete_queue(side, st, q, if_unused, if_empty):
    r = st.ch.queue_delete(side.queue(q), if_unused=if_unused, if_empty=if_empty).method
    return ("ok", r.message_count)


def _purge(side, st, q):
    return ("ok", st.ch.queue_purge(side.queue(q)).method.message_count)


def _bind_queue(side, st, q, x, rk, args):
    st.ch.queue_bind(side.queue(q), side.exchange(x), side.queue(rk), dict(args) or None)
    return ("ok",)


def _unbind_queue(side, st, q, x, rk, args):
    st.ch.queue_unbind(side.queue(q), side.exchange(x), side.queue(rk), dict(args) or None)
    return ("ok",)


def _declare_exchange(side, st, x, type_, passive, durable, auto_delete, internal, args):
    st.ch.exchange_declare(side.exchange(x), type_, passive=passive, durable=durable,
                           auto_delete=auto_delete, internal=internal,
                           arguments=_args(side, args))
    return ("ok",)


def _delete_exchange(side, st, x, if_unused):
    st.ch.exchange_delete(side.exchange(x), if_unused=if_unused)
    return ("ok",)


def _bind_exchange(side, st, dest, src, rk):
    st.ch.exchange_bind(side.exchange(dest), side.exchange(src), side.queue(rk))
    return ("ok",)


def _unbind_exchange(side, st, dest, src, rk):
    st.ch.exchange_unbind(side.exchange(dest), side.exchange(src), side.queue(rk))
    return ("ok",)


def _publish(side, st, x, rk, body, properties, mandatory):
    fields = dict(properties)
    if "headers" in fields:
        fields["headers"] = {k: side.queue(v) if isinstance(v, str) else v
                             for k, v in fields["headers"]}
    if "reply_to" in fields:
        fields["reply_to"] = side.queue(fields["reply_to"])
    p = pika.BasicProperties(**fields)
    try:
        st.ch.basic_publish(side.exchange(x), side.queue(rk), body, p, mandatory=mandatory)
    except pe.UnroutableError:
        return ("ok", "returned")
    except pe.NackError:
        return ("ok", "nacked")
    return ("ok",)


def _get(side, st, q, auto_ack):
    m, p, body = st.ch.basic_get(side.queue(q), auto_ack=auto_ack)
    if m is None:
        return ("ok", "get-empty")
    if not auto_ack:
        st.unacked.append(m.delivery_tag)
        st.unacked.sort()
    return ("ok", body, m.redelivered, m.exchange, m.routing_key, m.message_count, props(p))


def _consume(side, st, q, tag, auto_ack, exclusive, args):
    if tag in st.tags:
        return ("skip",)  # pika refuses a duplicate tag on its side
    c, n = next(k for k, v in side.chans.items() if v is st)
    st.ch.basic_consume(side.queue(q), side.on_deliver(c, n, auto_ack), auto_ack=auto_ack,
                        exclusive=exclusive, consumer_tag=tag, arguments=dict(args) or None)
    st.tags.add(tag)
    return ("ok",)


def _cancel(side, st, tag):
    if tag not in st.tags:
        return ("skip",)  # pika does not send a cancel for a tag it does not know
    st.ch.basic_cancel(tag)
    st.tags.discard(tag)
    return ("ok",)


def _qos(side, st, count, global_qos):
    st.ch.basic_qos(prefetch_count=count, global_qos=global_qos)
    return ("ok",)


def _pick(st, idx: int) -> int:
    if not st.unacked:
        return 1000 + idx  # unknown to both brokers alike
    return st.unacked[idx % len(st.unacked)]


def _settle(st, tag: int, multiple: bool) -> None:
    st.unacked = [t for t in st.unacked if (t > tag if multiple else t != tag)]


def _ack(side, st, idx, multiple):
    tag = _pick(st, idx)
    st.ch.basic_ack(tag, multiple=multiple)
    _settle(st, tag, multiple)
    return ("ok",)


def _nack(side, st, idx, multiple, requeue):
    tag = _pick(st, idx)
    st.ch.basic_nack(tag, multiple=multiple, requeue=requeue)
    _settle(st, tag, multiple)
    return ("ok",)


def _reject(side, st, idx, requeue):
    tag = _pick(st, idx)
    st.ch.basic_reject(tag, requeue=requeue)
    _settle(st, tag, False)
    return ("ok",)


def _recover(side, st, requeue):
    st.ch.basic_recover(requeue=requeue)
    st.unacked.clear()
    return ("ok",)


def _simple(method: str):
    def op(side, st):
        getattr(st.ch, method)()
        return ("ok",)
    return op


def _flow(side, st, active):
    return ("ok", st.ch.flow(active))


def _close_channel(side, st):
    st.ch.close()
    for k in [k for k, v in side.chans.items() if v is st]:
        del side.chans[k]
    return ("ok",)


OPS = {
    "declare_queue": _declare_queue, "delete_queue": _delete_queue, "purge": _purge,
    "bind_queue": _bind_queue, "unbind_queue": _unbind_queue,
    "declare_exchange": _declare_exchange, "delete_exchange": _delete_exchange,
    "bind_exchange": _bind_exchange, "unbind_exchange": _unbind_exchange,
    "publish": _publish, "get": _get, "consume": _consume, "cancel": _cancel, "qos": _qos,
    "ack": _ack, "nack": _nack, "reject": _reject, "recover": _recover,
    "tx_select": _simple("tx_select"), "tx_commit": _simple("tx_commit"),
    "tx_rollback": _simple("tx_rollback"), "confirm_select": _simple("confirm_delivery"),
    "flow": _flow, "close_channel": _close_channel,
}


class Pair:
    """RabbitMQ and syncmq side by side; :meth:`step` runs one op on both."""

    def __init__(self, rabbit_port: int, syncmq_port: int) -> None:
        self.prefix = f"fz{os.urandom(4).hex()}"
        self.rabbit = Side(rabbit_port, self.prefix)
        self.syncmq = Side(syncmq_port, self.prefix)
        self.n = 0

    def step(self, op: tuple) -> tuple[tuple, tuple]:
        """(RabbitMQ's, syncmq's) normalised outcome and events of ``op``."""
        self.n += 1
        outs = [run_op(side, op) for side in (self.rabbit, self.syncmq)]
        events = self._settle()
        return tuple((side.norm(out), side.norm(ev)) for side, out, ev in
                     zip((self.rabbit, self.syncmq), outs, events, strict=True))

    def _settle(self) -> list[list]:
        deadline = time.monotonic() + SETTLE
        sides = (self.rabbit, self.syncmq)
        for side in sides:
            side.pump()
        while len(self.rabbit.events) != len(self.syncmq.events) and \
                time.monotonic() < deadline:
            for side in sides:
                side.pump(0.02)
        # per consumer / channel the arrival order is kept (a stable sort); across them the
        # brokers may interleave differently
        out = [sorted(side.events, key=lambda e: repr(e[:4])) for side in sides]
        for side in sides:
            side.events = []
        return out

    def cleanup(self) -> None:
        """Close everything and delete what the run left on each broker."""
        for side in (self.rabbit, self.syncmq):
            side.close()
            try:
                conn = side.conn(0)
                ch = conn.channel()
                for q in [f"q{i}" for i in range(3)] + [f"srv{i}" for i in range(len(side.srv))]:
                    ch.queue_delete(side.queue(q))
                for x in ("x0", "x1"):
                    ch.exchange_delete(side.exchange(x))
            except pe.AMQPError:
                pass
            side.close()
