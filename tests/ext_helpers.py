"""Helpers for the RabbitMQ-extension tests (tests/test_ext_*.py): bounded polling, no sleeps
beyond a few ms between polls."""

from __future__ import annotations

import time

import pytest
from amqp_helpers import TIMEOUT


def poll_get(ch, queue: str, timeout: float = TIMEOUT, auto_ack: bool = True):
    """basic.get until a message arrives: (method, props, body); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=auto_ack)
        if method is not None:
            return method, props, body
        if time.monotonic() > deadline:
            pytest.fail(f"nothing arrived in {queue} within {timeout} s")
        ch.connection.sleep(0.01)


def wait_count(ch, queue: str, n: int, timeout: float = TIMEOUT) -> None:
    """Wait until ``queue`` holds exactly ``n`` ready messages (passive declares)."""
    deadline = time.monotonic() + timeout
    while True:
        got = ch.queue_declare(queue, passive=True).method.message_count
        if got == n:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{queue} holds {got} messages, not {n}, after {timeout} s")
        ch.connection.sleep(0.01)
