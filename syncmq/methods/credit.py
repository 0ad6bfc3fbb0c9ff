"""A connection's side of queue credit flow (issue #22, ``broker.flow`` for the queue's).

When a batch of a connection's publishes went to a queue that is behind its consumers
(``PublishRun.stalled``), the connection asks the queue for credit (registers as a waiter)
and its socket stops being read (``Transport.pause_reading("credit")``, the same pause as the
memory alarm's, with its own reason) until every such queue has caught up (its ready count is
back to the low watermark; the queue tells the waiter, which hands the news to this worker).
What was already read is still handled; other connections are not affected. While it waits
``/api/connections`` shows the connection's state as ``flow``, as RabbitMQ's does.

**No deadlock.** A connection is paused only if it holds no unacknowledged delivery and has
no consumer in manual-ack mode (:meth:`Credit._may_pause`), and it is resumed as soon as it
has one (re-checked at the end of every batch it handles while paused: a ``basic.consume``
read before the pause took effect). A paused connection cannot get a delivery to ack (that
needs a basic.consume or basic.get, which are not read), so no queue's progress ever waits
for a paused connection's input: a wait for credit cannot be part of a cycle (A waits for Q's
consumer, which waits for A's acks). A connection that publishes to a queue and consumes with
acks (from it or any queue) is therefore never paused by credit; the memory alarm still
bounds it. **No stall.** A queue whose consumers take nothing for :data:`CHECK_EVERY` seconds
(stuck, or gone and not cancelled yet) is not waited for any longer: the connection reads
again, and pauses again at its next publish to that queue if it is still behind; so a
publisher behind a stuck consumer still progresses, by at most what one
``Reactor``'s input backlog (``FLOW_HIGH`` reads) holds per interval.

Threads: everything here runs on the connection's worker except :meth:`Credit.
queue_caught_up` (any thread, a queue's lock held), which only submits to that worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..broker.queue import Queue

CHECK_EVERY = 0.5  # s between two checks that a waited-for queue's consumers progress


class Credit:
    """The credit state of one connection (its worker's; no lock)."""

    __slots__ = ("session", "waiting", "paused", "_gen")

    def __init__(self, session: Any) -> None:
        self.session = session
        # queue -> its credit_progress() at the last check: the queues we wait for
        self.waiting: dict[Queue, int] = {}
        self.paused = False  # reading paused for credit (shown as "flow")
        self._gen = 0  # the current pause (a check timer of an earlier one does nothing)

    def after_batch(self, stalled: set) -> None:
        """End of a batch: ``stalled`` (emptied here) are the queues it published to that
        are behind. Called when it is not empty or while paused."""
        queues = list(stalled)
        stalled.clear()
        if not self._may_pause():
            if self.waiting:
                self._give_up()
            return
        for q in queues:
            if q not in self.waiting and q.wait_for_credit(self):
                self.waiting[q] = q.credit_progress()
        if self.waiting and not self.paused:
            self.paused = True
            self._gen += 1
            t = self.session.transport
            t.pause_reading("credit")
            t.call_later(CHECK_EVERY, t.worker.submit, self._check, self._gen)

    def queue_caught_up(self, queue: Queue) -> None:
        """``queue`` is no longer behind (any thread, its lock held): tell our worker."""
        self.session.transport.worker.submit(self._granted, queue)

    def _granted(self, queue: Queue) -> None:
        if self.waiting.pop(queue, None) is not None and not self.waiting and self.paused:
            self._resume()

    def _check(self, gen: int) -> None:
        """Every CHECK_EVERY s of a pause: stop waiting for queues whose consumers took
        nothing since the last check (stuck rather than slow)."""
        if gen != self._gen or not self.paused:
            return
        for q, seen in list(self.waiting.items()):
            now = q.credit_progress()
            if now == seen or not q.behind:
                q.stop_waiting(self)
                del self.waiting[q]
            else:
                self.waiting[q] = now
        if not self.waiting:
            self._resume()
        else:
            t = self.session.transport
            t.call_later(CHECK_EVERY, t.worker.submit, self._check, gen)

    def _may_pause(self) -> bool:
        """No unacked delivery and no manual-ack consumer on any channel (see the module
        docstring: then nobody waits for this connection's input), and the connection not
        released: a batch that published to a behind queue and then closed the connection
        (its connection.close, or an error that made us send ours) must not pause it, or
        the close-ok it still has to read is left unread."""
        if self.session.released:
            return False
        for ch in list(self.session.channels.values()):
            if ch.unacked:
                return False
            with ch.lock:
                if any(not c.no_ack for c in ch.consumers.values()):
                    return False
        return True

    def _give_up(self) -> None:
        for q in self.waiting:
            q.stop_waiting(self)
        self.waiting.clear()
        if self.paused:
            self._resume()

    def _resume(self) -> None:
        self.paused = False
        self._gen += 1
        self.session.transport.resume_reading("credit")

    def release(self) -> None:
        """The connection is closing: wait for nothing any more, and read it again (its
        close-ok, or its connection.close-ok to our close, must be read)."""
        self._give_up()


__all__ = ["CHECK_EVERY", "Credit"]
