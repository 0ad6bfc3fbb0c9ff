"""The worker pool: threads that run broker logic for the connections pinned to them.

Invariants:

- A connection is pinned to exactly one worker for its whole life (``WorkerPool.assign``), so
  the frames of one connection are handled in order and the connection's protocol state needs
  no lock of its own: only its worker touches it.
- The reactor hands over *batches* (every frame cut from one ``recv``), never single frames,
  so the cost of a hand-off (one ``SimpleQueue.put``) is spread over many messages. A
  connection's batches go through its own input lane (``reactor.reading.Reader._input_turn``)
  and take one place at a time in this FIFO, so the worker serves its connections in turn.
- A task that raises is logged and dropped; it never kills the worker thread.
- A worker's tasks run one at a time: each holds ``Worker.busy``. The reactor thread may take
  an idle worker's place for one task (:meth:`Worker.stand_in`: ``busy`` taken without
  waiting, nothing queued): a lone publish or ack is then handled where it was read, without
  the hand-off's wake-up and GIL round trip (issue #22, S8 latency). While it stands in,
  ``current_worker()`` on the reactor thread is that worker, so the task's output is
  deferred as on the worker (``on_deferred`` at the end of the task), except that the
  task's first write is also sent at once (``Transport._wake``: a lone delivery leaves at
  its write); the worker thread waits for ``busy`` before its next task.

Thread names are ``syncmq-worker-N``.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable
from operator import call as _call
from typing import Any

log = logging.getLogger("syncmq.workers")

_STOP = object()
# The interpreter's GIL switch interval while the pool runs (CPython's default is 5 ms). A
# thread that becomes runnable (the reactor with a new connection's bytes, a worker handed a
# batch of acks) waits for the GIL until the running thread drops it, up to this long. 0.2 ms
# (until 0.11.0) kept that wait short but forced a hand-over every 0.2 ms between threads
# that were all runnable, each moving a thread to the other core away from its cached
# objects (S3: 33.6 against 29.8 us of broker CPU a message at 2 ms). 5 ms cost the reactor
# up to 5 ms a batch behind a worker routing a flood: a new connection's handshake saw 38-53
# flooder batches instead of 20 (tests/test_input_fairness.py, bound 44). 2 ms: 29-31.
# docs/architecture.md, "The interpreter's switch interval".
# The interval is process-wide: the first running pool sets it, the last one to stop puts the
# interpreter's back (several embedded brokers in one test process; see syncmq.embedded).
SWITCH_INTERVAL = 0.002
_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.0
_local = threading.local()


def _hold_switch_interval(hold: bool) -> None:
    global _switch_users, _switch_saved
    with _switch_lock:
        if hold:
            if _switch_users == 0:
                _switch_saved = sys.getswitchinterval()
                if _switch_saved > SWITCH_INTERVAL:
                    sys.setswitchinterval(SWITCH_INTERVAL)
            _switch_users += 1
        else:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


def current_worker() -> Worker | None:
    """The :class:`Worker` running the calling thread, or None on any other thread."""
    return getattr(_local, "worker", None)


class Worker:
    """One worker thread with its own task queue (a ``queue.SimpleQueue``, lock-free for us)."""

    __slots__ = ("index", "tasks", "thread", "load", "deferred", "on_deferred", "busy")

    def __init__(self, index: int) -> None:
        self.index = index
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.load = 0  # number of connections pinned here; changed only by the reactor thread
        # Objects handed to ``defer`` during the current task; only this worker's thread
        # touches the list, so it needs no lock.
        self.deferred: list = []
        self.on_deferred: Callable[[list], None] | None = None
        # Held while one of this worker's tasks runs (by its thread, or by the reactor
        # standing in for it, ``stand_in``): the worker's tasks, ``deferred`` included, are
        # one thread's at a time.
        self.busy = threading.Lock()
        self.thread = threading.Thread(
            target=self._run, name=f"syncmq-worker-{index}", daemon=True
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` to run on this worker, after everything queued before it."""
        self.tasks.put((fn, args))

    def defer(self, obj: Any) -> None:
        """Hand ``obj`` to the pool's ``on_deferred`` once the current task is done (this
        thread only; ``on_deferred`` then runs on this thread too).

        Used for outbound buffers that went from empty to non-empty: a task that delivers a
        thousand messages to one connection sends them (or wakes the reactor) once, not a
        thousand times (on the reactor standing in, the task's first write is also sent at
        once: ``Transport._wake``). The reactor's ``on_deferred`` sends what it can from this
        thread and wakes the reactor only for the rest (``Reactor._flush_later``).
        """
        self.deferred.append(obj)

    def stand_in(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run ``fn(*args)`` on the calling thread in this worker's place, as one of its
        tasks, if the worker is idle (nothing running, nothing queued); False, without
        running it, if not. Never waits. The reactor's use: a connection's small input
        handled where it was read (``reactor.reading.Reader._read``).

        A task the worker took off its queue just before (and now waits for ``busy`` to run)
        runs after ``fn``: both were queued from different threads at about the same time.
        The calling thread is no worker's (``current_worker()`` is None there but while it
        stands in): a worker's task standing in for another worker would lose its own."""
        if not self.busy.acquire(False):
            return False
        try:
            if not self.tasks.empty():
                return False
            _local.worker = self
            try:
                self._run_one(fn, args)
            finally:
                _local.worker = None  # (the caller is no worker's thread: see above)
            return True
        finally:
            self.busy.release()

    def _run(self) -> None:
        """Run tasks until the stop marker, then those queued behind it until none is left
        (``get`` becomes ``get_nowait``): a connection's input lane
        (``reactor.reading.Reader._input_turn``) queues its next turn after the current one
        ran, so its last tasks (``connection_lost`` of the sockets shut down before the stop)
        can come after the stop marker; they still run, as they did when every task was
        queued before it. One loop for both, with no call per task besides the task's.
        Each task holds ``busy`` (the reactor may stand in meanwhile). Between tasks the
        loop holds no reference to the last one (issue #22: memory a drained load left
        behind; ``_run_one``'s locals are gone when it returns)."""
        _local.worker = self
        get = self.tasks.get
        busy = self.busy
        run_one = self._run_one
        while True:
            try:
                item = get()
            except queue.Empty:  # (only once stopping: every task queued behind it ran)
                return
            if item is _STOP:
                get = self.tasks.get_nowait
                continue
            with busy:
                run_one(*item)
            item = None  # a read's bytes, a closed connection's transport: not kept

    def _run_one(self, fn: Callable[..., Any], args: tuple) -> None:
        """One task, then its deferred output (``busy`` held by the caller)."""
        try:
            fn(*args)
        except Exception:  # a bug in a handler must not kill the worker
            log.exception("unhandled error in worker task %r", fn)
        if self.deferred:
            deferred, self.deferred = self.deferred, []
            try:
                self.on_deferred(deferred)
            except Exception:
                log.exception("unhandled error handing deferred work to the reactor")


class WorkerPool:
    """A fixed pool of :class:`Worker` threads."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("worker pool size must be >= 1")
        self.workers = [Worker(i) for i in range(size)]
        self._holding = False  # this pool counts in _switch_users
        # What ``idle`` asks, in order: each worker's ``busy.locked`` and ``tasks.qsize``
        # (bound methods in C, called in C by ``idle``: no bytecode per worker)
        self._probes = tuple(p for w in self.workers for p in (w.busy.locked, w.tasks.qsize))

    def set_on_deferred(self, fn: Callable[[list], None]) -> None:
        """Install the reactor's hand-back (before ``start``); called on the worker's thread
        at the end of a task with the objects it deferred."""
        for w in self.workers:
            w.on_deferred = fn

    def start(self) -> None:
        _hold_switch_interval(True)
        self._holding = True
        for w in self.workers:
            w.thread.start()

    def idle(self) -> bool:
        """No worker runs or has a task (a racy read: a hint). The reactor stands in for a
        worker only then (``reactor.reading.Reader._read``): with a worker busy, work
        on the reactor thread would compete with it for the GIL and hold up the I/O of that
        worker's connections (a consumer's acks handled on the reactor while a publisher's
        worker routes: the publisher's reads and confirms would wait behind them).

        Asked per read on the reactor thread, so it runs in C (``_probes``: the same reads, in
        the same order, as a loop over the workers asking ``busy.locked()`` and
        ``tasks.empty()``); the workers' state is theirs, none is kept here to go stale."""
        return not any(map(_call, self._probes))

    def assign(self) -> Worker:
        """Pick the least loaded worker for a new connection (reactor thread only). O(workers)."""
        w = min(self.workers, key=lambda w: w.load)
        w.load += 1
        return w

    def release(self, worker: Worker) -> None:
        """Forget one connection of ``worker`` (reactor thread only)."""
        worker.load -= 1

    def stop(self, timeout: float = 5.0) -> None:
        """Let every worker finish what is queued, then stop it."""
        for w in self.workers:
            w.tasks.put(_STOP)
        for w in self.workers:
            if w.thread.is_alive():
                w.thread.join(timeout)
        if self._holding:
            self._holding = False
            _hold_switch_interval(False)
