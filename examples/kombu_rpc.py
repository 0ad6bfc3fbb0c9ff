"""RPC with kombu: request on a queue, reply on an exclusive queue with a correlation id.
Run: python examples/kombu_rpc.py [PORT]"""

import sys
import threading
import uuid

from kombu import Connection, Queue

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 5672
URL = f"amqp://guest:guest@127.0.0.1:{PORT}//"
requests = Queue("kombu_rpc")
ready = threading.Event()


def server() -> None:
    with Connection(URL) as conn:
        def on_request(body, message):
            conn.Producer().publish({"result": body["n"] * 2}, routing_key=message.properties["reply_to"],
                                    correlation_id=message.properties["correlation_id"],
                                    serializer="json")
            message.ack()

        with conn.Consumer(requests, callbacks=[on_request]):
            ready.set()
            conn.drain_events(timeout=10)


t = threading.Thread(target=server, daemon=True)
t.start()
ready.wait(10)
with Connection(URL) as conn:
    reply = Queue(f"kombu_reply_{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True)
    reply(conn.default_channel).declare()
    corr = str(uuid.uuid4())
    conn.Producer().publish({"n": 21}, routing_key="kombu_rpc", reply_to=reply.name,
                            correlation_id=corr, serializer="json", declare=[requests])
    result = []
    with conn.Consumer(reply, callbacks=[lambda body, m: (result.append(body), m.ack())]):
        conn.drain_events(timeout=10)
    print("result", result[0]["result"])
t.join(5)
