"""Client libraries' own usage patterns against syncmq (issue 23): aio-pika's RPC and
Master/Worker patterns, kombu's SimpleQueue and producer retry, pika's ``consume()``
generator with an inactivity timeout. aio-pika's RPC also runs against the private RabbitMQ
node: its ``close()`` unbinds an auto-delete queue that is already gone, which syncmq used to
answer with 404. (Celery canvas: test_celery.py; amqplib's APIs: test_node.py.)
"""

from __future__ import annotations

import asyncio
import time

import pytest
from interop_helpers import free_port

TIMEOUT = 30.0


def _url(port: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/"


@pytest.fixture(params=["syncmq", "rabbitmq"])
def any_broker_port(request, broker):
    """syncmq's port, and RabbitMQ's (the same client code must behave the same on both)."""
    if request.param == "rabbitmq":
        return request.getfixturevalue("rabbitmq").port
    return broker.port


# ---- aio-pika patterns ----

aio_pika = pytest.importorskip("aio_pika", reason="aio-pika is not installed")
from aio_pika.patterns import RPC, Master  # noqa: E402


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def test_aiopika_rpc_call_and_close(any_broker_port, unique):
    """RPC.create / register / call, errors travelling back, then close() on both sides:
    the caller's close cancels its consumer (its auto-delete reply queue goes) and unbinds it
    afterwards, which must succeed as on RabbitMQ."""
    async def main():
        server_conn = await aio_pika.connect(_url(any_broker_port))
        client_conn = await aio_pika.connect(_url(any_broker_port))
        try:
            server = await RPC.create(await server_conn.channel())

            async def multiply(*, x, y):
                return x * y

            async def fail():
                raise ValueError("refused")
            await server.register(f"{unique}.multiply", multiply, auto_delete=True)
            await server.register(f"{unique}.fail", fail, auto_delete=True)
            client = await RPC.create(await client_conn.channel())
            results = await asyncio.gather(*(client.call(f"{unique}.multiply",
                                                         kwargs={"x": i, "y": 3})
                                             for i in range(5)))
            assert results == [0, 3, 6, 9, 12]
            with pytest.raises(ValueError, match="refused"):
                await client.call(f"{unique}.fail")
            await client.close()  # the unbind after its reply queue was deleted
            await server.close()
        finally:
            await client_conn.close()
            await server_conn.close()
    _run(main())


def test_aiopika_master_worker(broker, unique):
    """Master.create_task publishes jobs to a durable queue; two workers share them, each job
    done exactly once."""
    async def main():
        done: list[int] = []
        finished = asyncio.Event()
        conns = [await aio_pika.connect(_url(broker.port)) for _ in range(3)]
        try:
            async def work(*, n):
                done.append(n)
                if len(done) == 10:
                    finished.set()
            for conn in conns[1:]:
                ch = await conn.channel()
                await ch.set_qos(prefetch_count=1)
                await Master(ch).create_worker(unique, work, auto_delete=True)
            master = Master(await conns[0].channel())
            for n in range(10):
                await master.proxy.__getattr__(unique)(n=n)
            await finished.wait()
            assert sorted(done) == list(range(10))
        finally:
            for conn in conns:
                await conn.close()
    _run(main())


# ---- kombu ----

kombu = pytest.importorskip("kombu", reason="kombu is not installed")
from kombu import Connection, Exchange, Producer, Queue  # noqa: E402


def test_kombu_simple_queue_get_timeout_and_buffer(any_broker_port, unique):
    """SimpleQueue: put/get/ack/requeue, ``get(timeout=)`` raising Empty on an empty queue,
    qsize; SimpleBuffer (transient, no-ack) alongside."""
    with Connection(_url(any_broker_port), connect_timeout=5) as conn:
        q = conn.SimpleQueue(unique)
        for i in range(3):
            q.put({"i": i})
        m = q.get(timeout=TIMEOUT)
        assert m.payload == {"i": 0}
        m.ack()
        m = q.get(timeout=TIMEOUT)
        m.requeue()
        assert [q.get(timeout=TIMEOUT).payload for _ in range(2)] == [{"i": 2}, {"i": 1}]
        with pytest.raises(q.Empty):
            q.get(timeout=0.2)
        q.put("late")
        assert q.get(timeout=TIMEOUT).payload == "late"  # the consumer SimpleQueue keeps open
        buf = conn.SimpleBuffer(unique + "-buf")
        buf.put("transient")
        assert buf.get(timeout=TIMEOUT).payload == "transient"
        buf.close()
        q.close()
        Queue(unique)(conn.default_channel).delete()


def test_kombu_producer_publish_retry_across_restart(broker_factory, unique):
    """``Producer.publish(retry=True, retry_policy=...)`` with declare: after the broker
    restarts (connections closed with 320), the publish reconnects, redeclares and goes
    through; the persistent message published before is still there."""
    port = free_port()
    b = broker_factory("--port", str(port))
    ex = Exchange(unique + "-x", "direct", durable=True)
    q = Queue(unique, ex, routing_key="k", durable=True)
    policy = {"max_retries": 30, "interval_start": 0.1, "interval_step": 0.2,
              "interval_max": 1}
    retried: list[str] = []
    with Connection(_url(port), connect_timeout=5) as conn:
        producer = Producer(conn, exchange=ex, serializer="json")
        producer.publish("before", routing_key="k", declare=[q], delivery_mode=2,
                         retry=True, retry_policy=policy)
        assert b.stop() == 0
        b.start()
        producer.publish("after", routing_key="k", declare=[q], delivery_mode=2, retry=True,
                         retry_policy=dict(policy, errback=lambda e, i: retried.append(i)))
        bound = q(conn.default_channel)
        bodies = []
        while (m := bound.get(no_ack=True)) is not None:
            bodies.append(m.payload)
        assert bodies == ["before", "after"]
        assert retried  # it did go through the retry path
        bound.delete()
        ex(conn.default_channel).delete()


# ---- pika's consume() generator ----

pika = pytest.importorskip("pika", reason="pika is not installed")


def test_pika_consume_generator_inactivity_timeout(any_broker_port, unique):
    """``BlockingChannel.consume(inactivity_timeout=)`` yields (None, None, None) when
    nothing arrives in time and goes on yielding messages afterwards; ``cancel()`` requeues
    only what it buffered but never yielded, and closing the channel requeues the yielded
    message left unacked (redelivered)."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", any_broker_port))
    try:
        ch = conn.channel()
        ch.queue_declare(unique)
        ch.basic_qos(prefetch_count=2)
        ch.basic_publish("", unique, b"one")
        seen = []
        deadline = time.monotonic() + TIMEOUT
        for method, _props, body in ch.consume(unique, inactivity_timeout=0.3):
            assert time.monotonic() < deadline, seen
            if method is None:
                # an inactivity counts once what was published came (a loaded broker may
                # take longer than 0.3 s to deliver it): the first one publishes two more,
                # the one after "three" ends the loop
                if seen == [b"one"]:
                    seen.append(None)
                    ch.basic_publish("", unique, b"two")
                    ch.basic_publish("", unique, b"three")
                elif b"three" in seen:
                    seen.append(None)
                    break
                continue
            seen.append(body)
            if body != b"three":
                ch.basic_ack(method.delivery_tag)
        assert seen == [b"one", None, b"two", b"three", None]
        assert ch.cancel() == 0  # nothing buffered and not yet yielded
        ch.basic_publish("", unique, b"four")
        ch.close()  # "three" was yielded, never acked: requeued at its place, redelivered
        ch = conn.channel()
        m, _, body = ch.basic_get(unique, auto_ack=True)
        assert (body, m.redelivered) == (b"three", True)
        m, _, body = ch.basic_get(unique, auto_ack=True)
        assert (body, m.redelivered) == (b"four", False)
        ch.queue_delete(unique)
    finally:
        conn.close()
