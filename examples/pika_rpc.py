"""RPC with pika: a server consuming `rpc_queue`, a client with an exclusive reply queue and a
correlation id. Run: python examples/pika_rpc.py [PORT]"""

import sys
import threading
import uuid

import pika

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 5672
params = pika.ConnectionParameters("127.0.0.1", PORT)
ready = threading.Event()


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def server() -> None:
    c = pika.BlockingConnection(params)
    ch = c.channel()
    ch.queue_declare("rpc_queue")
    ready.set()
    for method, props, body in ch.consume("rpc_queue", inactivity_timeout=5):
        if method is None:
            break
        reply = str(fib(int(body))).encode()
        ch.basic_publish("", props.reply_to, reply,
                         pika.BasicProperties(correlation_id=props.correlation_id))
        ch.basic_ack(method.delivery_tag)
        if body == b"stop":
            break
    c.close()


t = threading.Thread(target=server, daemon=True)
t.start()
ready.wait(10)

client = pika.BlockingConnection(params)
cch = client.channel()
reply_q = cch.queue_declare("", exclusive=True).method.queue
for n in (10, 20):
    corr = str(uuid.uuid4())
    cch.basic_publish("", "rpc_queue", str(n).encode(),
                      pika.BasicProperties(reply_to=reply_q, correlation_id=corr))
    for method, props, body in cch.consume(reply_q, auto_ack=True, inactivity_timeout=10):
        if method is not None and props.correlation_id == corr:
            print(f"fib({n}) = {body.decode()}")
            break
    cch.cancel()
client.close()
