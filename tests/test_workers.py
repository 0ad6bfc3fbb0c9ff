"""The worker pool's stop: every task queued before it runs, and so does every task those
tasks queue (a connection's input lane queues its next turn after the current one ran, so a
shut-down connection's ``connection_lost`` can come after the stop marker)."""

from __future__ import annotations

import threading

from syncmq.workers import WorkerPool


def test_a_task_queued_by_a_task_after_the_stop_still_runs():
    pool = WorkerPool(1)
    pool.start()
    worker = pool.workers[0]
    gate = threading.Event()
    ran: list[str] = []

    def first() -> None:
        gate.wait(30)
        worker.submit(lambda: ran.append("queued after the stop"))

    worker.submit(first)
    stopper = threading.Thread(target=pool.stop, kwargs={"timeout": 30})
    stopper.start()
    while worker.tasks.qsize() == 0:  # the stop marker is queued (behind first, running)
        threading.Event().wait(0.001)
    gate.set()
    stopper.join(60)
    assert not stopper.is_alive() and not worker.thread.is_alive()
    assert ran == ["queued after the stop"]
