"""The worker pool's stop: every task queued before it runs, and so does every task those
tasks queue (a connection's input lane queues its next turn after the current one ran, so a
shut-down connection's ``connection_lost`` can come after the stop marker). An idle worker
keeps nothing of its last task alive. The pool's idle hint sees every worker's running and
queued task."""

from __future__ import annotations

import gc
import threading
import time
import weakref

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


class _Payload:
    """Stands for a task's arguments: a read's bytes, a closed connection's transport."""


def test_an_idle_worker_keeps_nothing_of_its_last_task():
    """The worker loop's locals (the task, its function and arguments, the deferred list)
    kept the last task's arguments alive until the next task: after a load, a read's bytes
    and frames and a closed connection's objects (issue #22)."""
    pool = WorkerPool(1)
    pool.start()
    worker = pool.workers[0]
    ran = threading.Event()
    payload = _Payload()
    ref = weakref.ref(payload)
    pool.set_on_deferred(lambda objs: None)
    worker.submit(lambda p: (worker.defer(p), ran.set()), payload)
    del payload
    assert ran.wait(30)
    deadline = time.monotonic() + 10  # the worker clears its locals right after the task
    while ref() is not None and time.monotonic() < deadline:
        gc.collect()
        threading.Event().wait(0.01)
    assert ref() is None, gc.get_referrers(ref())
    pool.stop(timeout=30)


def test_the_pool_is_idle_only_while_no_worker_runs_or_has_a_task():
    """``WorkerPool.idle`` (the reactor's hint to stand in) sees each worker's ``busy`` and
    each worker's queue, the last worker's as well as the first's."""
    pool = WorkerPool(3)  # (not started: nothing takes the tasks off the queues)
    assert pool.idle()
    for w in pool.workers:
        with w.busy:
            assert not pool.idle()
        assert pool.idle()
        w.submit(print)
        assert not pool.idle()
        w.tasks.get_nowait()
        assert pool.idle()
