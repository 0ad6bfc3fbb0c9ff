"""Publish/subscribe with pika: a fanout exchange and one server-named exclusive queue per
subscriber. Run: python examples/pika_pubsub.py [PORT]"""

import sys

import pika

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 5672
params = pika.ConnectionParameters("127.0.0.1", PORT)

sub = pika.BlockingConnection(params)
sch = sub.channel()
sch.exchange_declare("logs", "fanout")
queues = []
for _ in range(2):
    q = sch.queue_declare("", exclusive=True).method.queue
    sch.queue_bind(q, "logs")
    queues.append(q)

pub = pika.BlockingConnection(params)
pub.channel().basic_publish("logs", "", b"hello, subscribers")
pub.close()

for q in queues:
    for _method, _props, body in sch.consume(q, auto_ack=True, inactivity_timeout=2):
        print(f"{q} got {body.decode()}")
        break
    sch.cancel()
sub.close()
