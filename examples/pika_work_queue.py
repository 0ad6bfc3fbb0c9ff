"""Work queue with pika: a durable queue, persistent messages, fair dispatch (prefetch 1),
manual acks. Run: python examples/pika_work_queue.py [PORT]"""

import sys
import threading

import pika

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 5672
params = pika.ConnectionParameters("127.0.0.1", PORT)
N = 10

conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.queue_declare("task_queue", durable=True)
for i in range(N):
    ch.basic_publish("", "task_queue", f"task {i}".encode(),
                     pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
conn.close()

done = threading.Semaphore(0)


def worker(name: str) -> None:
    c = pika.BlockingConnection(params)
    wch = c.channel()
    wch.basic_qos(prefetch_count=1)
    for method, _props, body in wch.consume("task_queue", inactivity_timeout=1):
        if method is None:
            break
        print(f"{name} did {body.decode()}")
        wch.basic_ack(method.delivery_tag)
        done.release()
    c.close()


threads = [threading.Thread(target=worker, args=(f"worker-{i}",)) for i in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("all tasks done")
