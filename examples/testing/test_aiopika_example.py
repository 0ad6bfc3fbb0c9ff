"""aio-pika, with plain asyncio.run (no async test plugin needed)."""

import asyncio

import aio_pika


def test_aio_pika_round_trip(syncmq_vhost):
    async def main():
        conn = await aio_pika.connect_robust(syncmq_vhost.url)
        async with conn:
            ch = await conn.channel()
            queue = await ch.declare_queue("tasks", durable=True)
            await ch.default_exchange.publish(
                aio_pika.Message(b"resize image 7", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="tasks")
            async with queue.iterator() as messages:
                async for message in messages:
                    async with message.process():
                        return message.body

    assert asyncio.run(main()) == b"resize image 7"
