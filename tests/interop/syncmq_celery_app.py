"""The Celery app of tests/interop/test_celery.py; the worker imports it with ``-A``.

The broker URL and the task queue come from the environment (the test starts the worker with
them); results travel back through the ``rpc://`` backend: one reply queue per client, named
after the client's oid (Celery's rpc backend does not use direct reply-to).
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("syncmq_celery_app")
app.conf.update(
    broker_url=os.environ.get("SYNCMQ_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    result_backend="rpc://",
    task_default_queue=os.environ.get("SYNCMQ_CELERY_QUEUE", "celery"),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task
def add(x, y):
    return x + y


@app.task
def tsum(values):
    """The body of a chord: the sum of its header's results."""
    return sum(values)


@app.task(bind=True, max_retries=5)
def flaky(self, fail_times):
    """Fails ``fail_times`` times through ``self.retry`` (a republish), then succeeds."""
    if self.request.retries < fail_times:
        raise self.retry(countdown=0)
    return {"retries": self.request.retries}


@app.task(bind=True, acks_late=True)
def crash_once(self, marker):
    """acks_late: the first run kills the worker before the ack, so the broker requeues the
    message when the connection drops and the next worker gets it again (redelivered)."""
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os._exit(1)
    return {"redelivered": bool(self.request.delivery_info.get("redelivered")),
            "acks_late": self.acks_late}


@app.task(bind=True)
def wait_for_file(self, started, release, timeout=30.0):
    """Signals that it runs (``started``), then waits until ``release`` exists (bounded)."""
    import time

    with open(started, "w") as f:
        f.write("1")
    deadline = time.monotonic() + timeout
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise TimeoutError(release)
        time.sleep(0.05)
    return "finished"
