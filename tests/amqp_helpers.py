"""Small helpers shared by the pika integration tests (tests/test_broker_*.py).

Waiting is always a ``process_data_events`` loop bounded by a deadline, never a sleep.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import pika
import pika.exceptions
import pytest

TIMEOUT = 20.0  # generous: the suite must pass on a loaded 2-core machine


def connect(port: int, **kw) -> pika.BlockingConnection:
    params = pika.ConnectionParameters(
        host="127.0.0.1", port=port, blocked_connection_timeout=TIMEOUT,
        socket_timeout=TIMEOUT, stack_timeout=TIMEOUT, heartbeat=0, **kw,
    )
    return pika.BlockingConnection(params)


@contextlib.contextmanager
def connection(port: int) -> Iterator[pika.BlockingConnection]:
    conn = connect(port)
    try:
        yield conn
    finally:
        if conn.is_open:
            with contextlib.suppress(Exception):
                conn.close()


def wait_until(conn: pika.BlockingConnection, cond: Callable[[], bool],
               timeout: float = TIMEOUT, what: str = "condition") -> None:
    """Pump ``conn`` until ``cond()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"timed out waiting for {what}")
        conn.process_data_events(time_limit=min(left, 0.05))


def collect(conn: pika.BlockingConnection, ch, queue: str, n: int, auto_ack: bool = False,
            timeout: float = TIMEOUT, **consume_kw) -> tuple[str, list]:
    """basic.consume on ``queue`` and gather ``n`` deliveries as (method, props, body)."""
    got: list = []

    def on_msg(_ch, method, props, body):
        got.append((method, props, body))

    tag = ch.basic_consume(queue, on_msg, auto_ack=auto_ack, **consume_kw)
    wait_until(conn, lambda: len(got) >= n, timeout, f"{n} deliveries from {queue}")
    return tag, got


def message_count(ch, queue: str) -> int:
    """A synchronous round trip: every publish sent before it on ``ch`` has been routed."""
    return ch.queue_declare(queue, passive=True).method.message_count


def expect_channel_close(code: int, fn: Callable, *args, **kw) -> pika.exceptions.ChannelClosedByBroker:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        fn(*args, **kw)
    assert ei.value.reply_code == code, ei.value
    return ei.value


def expect_connection_close(code: int, fn: Callable, *args, **kw
                            ) -> pika.exceptions.ConnectionClosedByBroker:
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
        fn(*args, **kw)
    assert ei.value.reply_code == code, ei.value
    return ei.value


def drain_get(ch, queue: str, auto_ack: bool = True) -> list[bytes]:
    """basic.get until get-empty; the bodies in order."""
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=auto_ack)
        if method is None:
            return out
        out.append(body)


def publish_all(ch, exchange: str, routing_key: str, bodies, **kw) -> None:
    for b in bodies:
        ch.basic_publish(exchange, routing_key, b, **kw)
