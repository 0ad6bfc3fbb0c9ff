"""What the reactor thread standing in for an idle worker hands back to the worker
(``methods.hand_over``): a publish that may cost more than one message's worth, decided
before it has any effect, so the other connections' I/O never waits behind it.

A probe wraps the one publish (``methods.basic.broker_publish``) to note the thread each
publish runs on; the control case shows that a plain publish does run on the reactor thread,
so "on a worker" in the other cases is the hand-over's doing. Each case publishes with
confirms (``confirm_delivery``: each publish waits for its confirm, so the broker's workers
are idle between publishes, which is when the reactor stands in)."""

from __future__ import annotations

import threading

import pika
import pytest

from syncmq import Server
from syncmq.methods import basic
from syncmq.methods.hand_over import STAND_IN_CONSUMERS, STAND_IN_QUEUES
from syncmq.methods.session import Session

N = 20  # publishes per case


@pytest.fixture
def threads(monkeypatch):
    """The names of the threads that ran each publish, in order."""
    seen: list[str] = []
    real = basic.broker_publish

    def probe(*args, **kwargs):
        seen.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(basic, "broker_publish", probe)
    return seen


def _channel(server: Server):
    conn = pika.BlockingConnection(pika.URLParameters(server.url))
    ch = conn.channel()
    ch.confirm_delivery()
    return conn, ch


def _publish(ch, exchange: str, key: str, n: int = N, size: int = 16,
             server: Server | None = None) -> None:
    """``n`` publishes, each confirmed; with ``server``, each once its workers are idle (the
    worker may still be finishing the task that sent the last confirm when the next publish
    is read: it then goes to the worker, whatever its cost)."""
    for _ in range(n):
        if server is not None:
            _idle(server)
        ch.basic_publish(exchange, key, bytes(size))


def _idle(server: Server) -> None:
    pool = server.node.pool
    done = threading.Event()
    for _ in range(10000):
        if pool.idle():
            return
        done.wait(0.001)
    raise AssertionError("the workers stay busy")


def test_a_plain_publish_runs_on_the_reactor(threads):
    with Server() as server:
        conn, ch = _channel(server)
        ch.queue_declare("plain")
        _publish(ch, "", "plain", server=server)
        conn.close()
    assert "syncmq-reactor" in threads  # (a read split in two goes to the worker)


def test_a_wide_fanout_goes_to_the_worker(threads):
    with Server() as server:
        conn, ch = _channel(server)
        ch.exchange_declare("wide", "fanout")
        for i in range(STAND_IN_QUEUES + 1):
            ch.queue_declare(f"w{i}")
            ch.queue_bind(f"w{i}", "wide")
        ch.exchange_declare("narrow", "fanout")
        for i in range(STAND_IN_QUEUES):
            ch.queue_bind(f"w{i}", "narrow")
        _publish(ch, "wide", "", server=server)
        assert threads and not [t for t in threads if not t.startswith("syncmq-worker")]
        del threads[:]
        _publish(ch, "narrow", "", server=server)  # at the bound: still the reactor's
        assert "syncmq-reactor" in threads
        for i in range(STAND_IN_QUEUES + 1):  # every copy arrived, in order of publish
            assert ch.queue_declare(f"w{i}", passive=True).method.message_count == \
                2 * N if i < STAND_IN_QUEUES else N
        conn.close()


def test_overflow_and_dead_lettering_go_to_the_worker(threads):
    """A queue with a length limit: its publish may be refused (a confirm nack, with
    reject-publish) or drop its head to a dead-letter exchange (another publish)."""
    with Server() as server:
        conn, ch = _channel(server)
        ch.queue_declare("limited", arguments={"x-max-length": 1,
                                               "x-overflow": "reject-publish"})
        ch.basic_publish("", "limited", b"first")
        with pytest.raises(pika.exceptions.NackError):
            ch.basic_publish("", "limited", b"refused")
        ch.queue_declare("dlq")
        ch.queue_declare("head", arguments={"x-max-length": 1,
                                            "x-dead-letter-exchange": "",
                                            "x-dead-letter-routing-key": "dlq"})
        _publish(ch, "", "head", server=server)
        assert len(threads) == N + 2
        assert not [t for t in threads if not t.startswith("syncmq-worker")]
        assert ch.queue_declare("dlq", passive=True).method.message_count == N - 1
        conn.close()


def test_a_queue_near_its_page_window_goes_to_the_worker(threads):
    """A paged queue past half its window may write its tail to a page file."""
    with Server(memory_budget="64MiB", queue_page_window=8) as server:
        conn, ch = _channel(server)
        ch.queue_declare("paged")
        _publish(ch, "", "paged", server=server)
        assert "syncmq-reactor" in threads[:3]  # (below the window: the reactor's)
        assert not [t for t in threads[4:] if not t.startswith("syncmq-worker")]
        assert ch.queue_declare("paged", passive=True).method.message_count == N
        conn.close()


def test_a_store_past_half_its_budget_takes_the_stand_in_off(threads):
    """Bodies in memory past half the budget: a put may evict to disk, and so may every
    publish or ack of any connection: the whole input goes to the worker."""
    with Server(memory_budget="1MiB") as server:
        store = server.node.body_store
        conn, ch = _channel(server)
        ch.queue_declare("full")
        _publish(ch, "", "full", n=200, size=3000)  # 600,000 octets
        assert store.may_touch_disk()
        del threads[:]
        ch.queue_declare("other")
        _publish(ch, "", "other", server=server)
        assert not [t for t in threads if not t.startswith("syncmq-worker")]
        ch.queue_purge("full")
        assert not store.may_touch_disk()
        del threads[:]
        _publish(ch, "", "other", server=server)
        assert "syncmq-reactor" in threads
        conn.close()


def test_a_queue_with_many_consumers_goes_to_the_worker(threads, monkeypatch):
    """A message is offered to each consumer in turn until one has credit: a publish to (or
    an ack on) a queue with many consumers is the worker's; with one consumer, both are the
    reactor's (the control)."""
    acks: list[str] = []
    real_defer = Session.defer_ack

    def probe(self, ch, entries):
        acks.append(threading.current_thread().name)
        return real_defer(self, ch, entries)

    monkeypatch.setattr(Session, "defer_ack", probe)
    with Server() as server:
        conn, ch = _channel(server)
        sub_conn = pika.BlockingConnection(pika.URLParameters(server.url))
        sub = sub_conn.channel()
        sub.basic_qos(prefetch_count=1)
        tags: list[int] = []
        for name, n in (("few", 1), ("many", STAND_IN_CONSUMERS + 1)):
            ch.queue_declare(name)
            for _ in range(n):
                sub.basic_consume(name, lambda _c, m, _p, _b: tags.append(m.delivery_tag))
        for name, where in (("few", "syncmq-reactor"), ("many", "syncmq-worker")):
            del threads[:], acks[:]
            _publish(ch, "", name, n=4, server=server)
            for _ in range(4):  # ack each delivery once the workers are idle
                while not tags:
                    sub_conn.process_data_events(time_limit=0.01)
                _idle(server)
                sub.basic_ack(tags.pop(0))
            while len(acks) < 4:
                sub_conn.process_data_events(time_limit=0.01)
            if where == "syncmq-reactor":
                assert where in threads and where in acks
            else:
                assert not [t for t in threads + acks if not t.startswith(where)]
        sub_conn.close()
        conn.close()


def test_other_connections_are_served_while_a_wide_publish_is_handled(monkeypatch):
    """A wide publish read while every worker is idle is held (by the probe) until another
    connection has completed its handshake: that can happen only if the reactor handed the
    publish to the worker (standing in, the reactor would read nothing until the publish
    ends, and the probe gives up after TIMEOUT)."""
    timeout = 20
    released = threading.Event()
    waited: list[tuple[str, bool]] = []
    real = basic.broker_publish

    def holding(*args, **kwargs):
        waited.append((threading.current_thread().name, released.wait(timeout)))
        return real(*args, **kwargs)

    with Server(workers=2) as server:
        conn, ch = _channel(server)
        ch.exchange_declare("wide", "fanout")
        for i in range(STAND_IN_QUEUES + 1):
            ch.queue_declare(f"w{i}")
            ch.queue_bind(f"w{i}", "wide")
        monkeypatch.setattr(basic, "broker_publish", holding)
        _idle(server)
        publisher = threading.Thread(target=ch.basic_publish, args=("wide", "", b"x"))
        publisher.start()  # (the connection is used by that thread alone until it ends)
        other = pika.BlockingConnection(pika.URLParameters(server.url))  # the handshake
        other.channel().queue_declare("", exclusive=True)
        released.set()
        publisher.join(timeout)
        other.close()
        conn.close()
    assert len(waited) == 1 and waited[0][1], waited
    assert waited[0][0].startswith("syncmq-worker")


def test_a_publish_under_a_resource_alarm_goes_to_the_worker(threads):
    """While an alarm is on, a publish blocks its connection (connection.blocked, reading
    paused): the whole input is the worker's."""
    with Server(disk_free_limit="1000000GB") as server:
        broker = server.node.broker
        done = threading.Event()
        while "disk" not in broker.alarms:  # (the monitor samples every 0.5 s)
            done.wait(0.01)
        conn, ch = _channel(server)
        ch.queue_declare("blocked")
        _publish(ch, "", "blocked", n=1, server=server)
        assert threads == ["syncmq-worker-0"] or threads == ["syncmq-worker-1"], threads
        # (no close: the blocked connection is not read until the alarm clears, as in
        # RabbitMQ; the server's stop closes it)
