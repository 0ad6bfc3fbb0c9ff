"""The ``syncmq`` command freezes its start-up heap (issue #22, S8's latency tail).

Rule (``syncmq.memory.freeze_heap``, called by ``Server._start`` when the command set
``Server.freeze_heap``, before recovery): once started, the broker's cyclic collector tracks
only the objects created since; what the start-up built before recovering (modules, codec
tables, the broker's own objects) is frozen, so no collection, the full ones included, walks
it again while messages wait. What recovery builds stays collectable: a recovered queue
deleted later is collected (it sits in reference cycles). Unfrozen, the first full
collection after start-up walked ~37,000 objects (30-35 ms of CPU on the shared machine) on
whichever thread allocated, often the reactor standing in for a worker. An embedded broker
leaves its host process's heap alone.
"""

from __future__ import annotations

import gc
import weakref

import pika

from syncmq import memory
from syncmq.embedded import Server


def test_the_started_broker_froze_its_start_up_heap(fresh_broker):
    frozen = fresh_broker.record["gc"]["frozen"]
    tracked = fresh_broker.record["gc"]["tracked"]
    # (an idle broker holds ~37,000 tracked objects; what is left to the collector is what
    # start-up built after the freeze: recovery, listeners, the management app)
    assert frozen > 10_000, fresh_broker.record
    assert tracked < frozen // 20, fresh_broker.record
    # and it serves (the frozen objects are alive and in use)
    c = pika.BlockingConnection(pika.URLParameters(
        f"amqp://guest:guest@127.0.0.1:{fresh_broker.port}/%2f"))
    ch = c.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"after the freeze")
    m, _, body = next(ch.consume(q, auto_ack=True, inactivity_timeout=10))
    assert body == b"after the freeze"
    c.close()


def test_freeze_heap_collects_first_then_freezes_what_is_left():
    """Garbage at the freeze is collected, not frozen; objects created later stay the
    collector's (and their cycles are collected)."""
    before = gc.get_freeze_count()

    class Node:
        pass

    def cycle() -> Node:
        a, b = Node(), Node()
        a.other, b.other = b, a
        return a

    garbage = cycle()
    gone = weakref.ref(garbage)
    del garbage
    kept = cycle()
    try:
        assert memory.freeze_heap() == gc.get_freeze_count() > before
        assert gone() is None  # collected, not frozen
        assert not any(o is kept for o in gc.get_objects())  # frozen, out of the collector's view
        later = cycle()
        assert any(o is later for o in gc.get_objects())
        del later
        assert gc.collect() >= 2  # a post-freeze cycle is still collected
    finally:
        gc.unfreeze()  # (this test process's heap back as it was)


def test_an_embedded_broker_leaves_its_hosts_heap_alone(tmp_path):
    before = gc.get_freeze_count()
    server = Server(data_dir=str(tmp_path / "data")).start()
    try:
        assert gc.get_freeze_count() == before
    finally:
        server.stop()


def test_recovered_queues_stay_collectable(tmp_path):
    """The freeze comes before recovery: recovered queues, deleted, are collected (frozen,
    their reference cycles would never be)."""
    from syncmq.broker.queue import Queue
    from syncmq.options import make_config
    from syncmq.server import Server as Node

    def node(freeze: bool) -> Node:
        n = Node(make_config({"port": 0, "data_dir": str(tmp_path / "data"),
                              "management_port": -1, "prometheus_port": -1,
                              "memory_high_watermark": 0, "disk_free_limit": 0}))
        n.freeze_heap = freeze
        n.start()
        return n

    def channel(n: Node):
        c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", n.address[1]))
        return c, c.channel()

    n = node(False)
    c, ch = channel(n)
    for i in range(20):
        ch.queue_declare(f"recovered-{i}", durable=True)
        ch.basic_publish("", f"recovered-{i}", b"m", pika.BasicProperties(delivery_mode=2))
    c.close()
    n.stop()
    before = gc.get_freeze_count()
    n = node(True)
    try:
        assert gc.get_freeze_count() > before
        assert len(n.broker.vhosts["/"].queues) == 20
        recovered = {id(q) for q in n.broker.vhosts["/"].queues.values()}
        c, ch = channel(n)
        for i in range(20):
            ch.queue_delete(f"recovered-{i}")
        c.close()
        gc.collect()
        gc.unfreeze()  # (a frozen, leaked queue would now be seen)
        assert not [o for o in gc.get_objects() if type(o) is Queue and id(o) in recovered]
    finally:
        gc.unfreeze()
        n.stop()
