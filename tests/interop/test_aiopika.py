"""aio-pika and aiormq (asyncio clients) against syncmq.

pytest-asyncio is not needed: each test runs its coroutine with ``asyncio.run`` under an
overall timeout, and every wait inside is event-driven (futures, queue iterators).
"""

from __future__ import annotations

import asyncio

import pytest

aio_pika = pytest.importorskip("aio_pika",
                               reason="aio-pika is not installed (pip install -e '.[interop]')")
aiormq = pytest.importorskip("aiormq", reason="aiormq is not installed")
from interop_helpers import free_port  # noqa: E402

TIMEOUT = 30.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def url(port: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/"


def test_declare_bind_publish_consume_ack(broker, unique):
    async def main():
        async with await aio_pika.connect(url(broker.port)) as conn:
            ch = await conn.channel()
            ex = await ch.declare_exchange(unique + "-x", aio_pika.ExchangeType.DIRECT)
            q = await ch.declare_queue(unique, auto_delete=False)
            await q.bind(ex, routing_key="k")
            for i in range(3):
                await ex.publish(aio_pika.Message(str(i).encode(), headers={"i": i},
                                                  content_type="text/plain",
                                                  priority=1, correlation_id=f"c{i}"),
                                 routing_key="k")
            got = []
            async with q.iterator() as it:
                async for msg in it:
                    async with msg.process():
                        got.append((msg.body, msg.headers, msg.correlation_id,
                                    msg.routing_key, msg.exchange, msg.redelivered))
                    if len(got) == 3:
                        break
            assert got == [(str(i).encode(), {"i": i}, f"c{i}", "k", unique + "-x", False)
                           for i in range(3)]
            await q.unbind(ex, "k")
            await ex.delete()
            await q.delete(if_unused=False, if_empty=False)
    run(main())


def test_qos_nack_reject_requeue(broker, unique):
    async def main():
        async with await aio_pika.connect(url(broker.port)) as conn:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=1)
            q = await ch.declare_queue(unique, auto_delete=False)
            for b in (b"a", b"b"):
                await ch.default_exchange.publish(aio_pika.Message(b), routing_key=unique)
            inbox: asyncio.Queue = asyncio.Queue()
            tag = await q.consume(inbox.put)
            m = await inbox.get()
            assert (m.body, m.redelivered) == (b"a", False)
            await asyncio.sleep(0.2)  # prefetch 1: "b" must not come before a settle
            assert inbox.empty()
            await m.nack(requeue=True)
            m = await inbox.get()
            assert (m.body, m.redelivered) == (b"a", True)
            await m.reject(requeue=False)
            m = await inbox.get()
            assert (m.body, m.redelivered) == (b"b", False)
            await m.ack()
            await q.cancel(tag)
            assert (await q.declare()).message_count == 0
            await q.delete(if_unused=False, if_empty=False)
    run(main())


def test_get_and_message_count(broker, unique):
    async def main():
        async with await aio_pika.connect(url(broker.port)) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue(unique, auto_delete=False)
            for i in range(3):
                await ch.default_exchange.publish(aio_pika.Message(b"%d" % i), routing_key=unique)
            m = await q.get(no_ack=False)
            assert m.body == b"0" and m.message_count == 2
            await m.ack()
            m = await q.get(no_ack=True)
            assert m.body == b"1"
            assert await q.purge()
            assert await q.get(fail=False) is None
            with pytest.raises(aio_pika.exceptions.QueueEmpty):
                await q.get()
            await q.delete(if_unused=False, if_empty=False)
    run(main())


def test_publisher_confirms_and_mandatory_return(broker, unique):
    async def main():
        async with await aio_pika.connect(url(broker.port)) as conn:
            ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
            q = await ch.declare_queue(unique, auto_delete=False, durable=True)
            confirms = await asyncio.gather(*(
                ch.default_exchange.publish(
                    aio_pika.Message(b"%d" % i,
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=unique)
                for i in range(50)))
            assert all(isinstance(c, aiormq.spec.Basic.Ack) for c in confirms)
            assert (await q.declare()).message_count == 50
            with pytest.raises(aio_pika.exceptions.DeliveryError) as e:
                await ch.default_exchange.publish(aio_pika.Message(b"x"),
                                                  routing_key=unique + "-nowhere",
                                                  mandatory=True)
            assert e.value.message.body == b"x"
            await q.delete(if_unused=False, if_empty=False)
    run(main())


def test_transactions(broker, unique):
    async def main():
        async with await aio_pika.connect(url(broker.port)) as conn:
            ch = await conn.channel(publisher_confirms=False)
            q = await ch.declare_queue(unique, auto_delete=False)
            tx = ch.transaction()
            await tx.select()
            await ch.default_exchange.publish(aio_pika.Message(b"no"), routing_key=unique)
            await tx.rollback()
            await ch.default_exchange.publish(aio_pika.Message(b"yes"), routing_key=unique)
            assert (await q.declare()).message_count == 0
            await tx.commit()
            assert (await q.declare()).message_count == 1
            await q.delete(if_unused=False, if_empty=False)
    run(main())


def test_channel_errors(broker, unique):
    async def main():
        async with await aio_pika.connect(url(broker.port)) as conn:
            ch = await conn.channel()
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity) as e:
                await ch.declare_queue(unique + "-missing", passive=True)
            assert "NOT_FOUND - no queue" in str(e.value)
            ch = await conn.channel()
            await ch.declare_queue(unique, auto_delete=False)
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
                await ch.declare_queue(unique, durable=True, auto_delete=False)
            ch = await conn.channel()
            await ch.queue_delete(unique)
    run(main())


def test_aiormq_low_level(broker, unique):
    async def main():
        conn = await aiormq.connect(url(broker.port))
        try:
            caps = conn.server_properties["capabilities"]
            assert caps["publisher_confirms"] and caps["basic.nack"]
            ch = await conn.channel()
            ok = await ch.queue_declare(unique, auto_delete=True)
            assert ok.queue == unique
            await ch.basic_qos(prefetch_count=10)
            delivered: asyncio.Future = asyncio.get_running_loop().create_future()
            await ch.basic_consume(unique, delivered.set_result)
            r = await ch.basic_publish(b"low-level", routing_key=unique)
            assert isinstance(r, aiormq.spec.Basic.Ack)
            m = await delivered
            assert m.body == b"low-level" and m.delivery.routing_key == unique
            await ch.basic_ack(m.delivery.delivery_tag)
        finally:
            await conn.close()
    run(main())


def test_robust_connection_recovers(broker_factory, unique):
    """connect_robust: after the broker restarts, the topology is re-declared and the
    consumer is restored, so a message published afterwards is delivered to it."""
    port = free_port()
    b = broker_factory("--port", str(port))

    async def main():
        conn = await aio_pika.connect_robust(url(port), reconnect_interval=0.3)
        try:
            ch = await conn.channel()
            q = await ch.declare_queue(unique, auto_delete=False, durable=True)
            inbox: asyncio.Queue = asyncio.Queue()
            await q.consume(inbox.put, no_ack=True)
            await ch.default_exchange.publish(aio_pika.Message(b"before"), routing_key=unique)
            assert (await inbox.get()).body == b"before"
            reconnected = asyncio.Event()
            conn.reconnect_callbacks.add(lambda *_: reconnected.set())
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, b.stop) == 0
            await loop.run_in_executor(None, b.start)
            await reconnected.wait()
            await ch.default_exchange.publish(aio_pika.Message(b"after"), routing_key=unique)
            assert (await inbox.get()).body == b"after"
            await q.delete(if_unused=False, if_empty=False)
        finally:
            await conn.close()
    run(main())
