"""Fixtures that start a real syncmq on an ephemeral port with its own data dir.

The broker's log (JSON lines on stderr) is collected; a test fails if the broker logged an
unhandled exception, because malformed input must never raise out of the reactor or a worker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from amqp_helpers import connection
from brokerproc import BrokerProcess
from brokerproc import start_broker as _start


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterator[BrokerProcess]:
    """One broker shared by a test module (tests use their own queue names)."""
    b = _start(tmp_path_factory)
    yield b
    rc = b.stop()
    assert rc == 0, b.log_tail()
    assert not b.tracebacks(), "\n".join(b.tracebacks())


@pytest.fixture
def fresh_broker(tmp_path_factory) -> Iterator[BrokerProcess]:
    """A broker of the test's own (for tests that restart it or set options)."""
    b = _start(tmp_path_factory)
    yield b
    if b.proc.poll() is None:
        b.stop()
    assert not b.tracebacks(), "\n".join(b.tracebacks())


@pytest.fixture
def broker_factory(tmp_path_factory):
    """Start brokers with extra command-line options: ``broker_factory("--heartbeat", "1")``."""
    started: list[BrokerProcess] = []

    def make(*extra: str) -> BrokerProcess:
        b = _start(tmp_path_factory, *extra)
        started.append(b)
        return b

    yield make
    for b in started:
        if b.proc.poll() is None:
            b.stop()
        assert not b.tracebacks(), "\n".join(b.tracebacks())


@pytest.fixture
def unique(request) -> str:
    """A name unique to the test, for queues and exchanges on the shared broker."""
    return request.node.name.replace("[", "-").replace("]", "") + "-" + os.urandom(3).hex()


@pytest.fixture
def conn(broker):
    """A pika BlockingConnection to the module's broker, closed after the test."""
    with connection(broker.port) as c:
        yield c


@pytest.fixture
def ch(conn):
    """A channel on :func:`conn`."""
    return conn.channel()


@pytest.fixture
def brokers_on_dir(tmp_path_factory):
    """``start(*options)`` and ``restart(old, *options)``: brokers one after another on the
    same data dir (a restart after ``old`` stopped)."""
    started = []
    data_dir = str(tmp_path_factory.mktemp("syncmq-data"))

    def start(*extra):
        b = BrokerProcess(data_dir, *extra).start()
        started.append(b)
        return b

    def restart(old, *extra):
        assert old.proc.poll() is not None
        return start(*extra)

    yield start, restart
    for b in started:
        if b.proc.poll() is None:
            b.stop()
        assert not b.tracebacks(), "\n".join(b.tracebacks())
