"""Topic routing with pika: bindings with `*` (one word) and `#` (zero or more words).
Run: python examples/pika_topics.py [PORT]"""

import sys

import pika

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 5672
conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", PORT))
ch = conn.channel()
ch.exchange_declare("topic_logs", "topic")
bindings = {"kern.*": None, "*.critical": None, "#": None}
for pattern in bindings:
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "topic_logs", pattern)
    bindings[pattern] = q

for key in ("kern.critical", "kern.info", "app.critical", "app.debug.verbose"):
    ch.basic_publish("topic_logs", key, key.encode())

for pattern, q in bindings.items():
    got = []
    while True:
        method, _props, body = ch.basic_get(q, auto_ack=True)
        if method is None:
            break
        got.append(body.decode())
    print(f"{pattern:12} -> {got}")
conn.close()
