"""Topic routing with kombu. Run: python examples/kombu_topics.py [PORT]"""

import sys

from kombu import Connection, Exchange, Queue

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 5672
ex = Exchange("kombu_topic", "topic")

with Connection(f"amqp://guest:guest@127.0.0.1:{PORT}//") as conn:
    ch = conn.default_channel
    queues = {p: Queue(f"kombu_topic_{i}", ex, routing_key=p, exclusive=True)(ch)
              for i, p in enumerate(("kern.*", "*.critical", "#"))}
    for q in queues.values():
        q.declare()
    producer = conn.Producer(serializer="json")
    for key in ("kern.critical", "kern.info", "app.critical"):
        producer.publish(key, exchange=ex, routing_key=key)
    for pattern, q in queues.items():
        got = []
        while (m := q.get(no_ack=True)) is not None:
            got.append(m.payload)
        print(f"{pattern:12} -> {got}")
