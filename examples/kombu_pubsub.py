"""Publish/subscribe with kombu: a fanout exchange, two exclusive subscriber queues.
Run: python examples/kombu_pubsub.py [PORT]"""

import sys

from kombu import Connection, Exchange, Queue

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 5672
news = Exchange("kombu_news", "fanout")

with Connection(f"amqp://guest:guest@127.0.0.1:{PORT}//") as conn:
    subs = [Queue(f"kombu_sub_{i}", news, exclusive=True) for i in range(2)]
    for q in subs:
        q(conn.default_channel).declare()
    conn.Producer().publish("breaking news", exchange=news, serializer="json")
    for q in subs:
        msg = q(conn.default_channel).get(no_ack=True)
        print(q.name, "got", msg.payload if msg else None)
