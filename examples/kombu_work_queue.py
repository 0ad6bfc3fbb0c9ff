"""Work queue with kombu (py-amqp underneath, as Celery uses it).
Run: python examples/kombu_work_queue.py [PORT]"""

import sys

from kombu import Connection, Exchange, Queue

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 5672
exchange = Exchange("tasks", "direct", durable=True)
queue = Queue("kombu_tasks", exchange, routing_key="task", durable=True)

with Connection(f"amqp://guest:guest@127.0.0.1:{PORT}//") as conn:
    producer = conn.Producer(serializer="json")
    for i in range(5):
        producer.publish({"task": i}, exchange=exchange, routing_key="task",
                         declare=[queue], delivery_mode=2)
    got = []

    def handle(body, message):
        got.append(body["task"])
        message.ack()

    with conn.Consumer(queue, callbacks=[handle], prefetch_count=1):
        while len(got) < 5:
            conn.drain_events(timeout=5)
    print("processed", got)
