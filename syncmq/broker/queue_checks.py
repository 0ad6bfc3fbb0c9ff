"""A queue's byte and persistence accounting.

:class:`QueueChecks` is a part of :class:`~syncmq.broker.queue.Queue` (a base class with no
state of its own): the figures ``/api/queues`` reports as ``message_bytes*`` and
``messages_persistent`` are counters the queue keeps under its lock where a message enters,
moves or leaves (``ready_bytes``, ``unacked_bytes``, ``persistent_count``,
``persistent_bytes``), so a listing of 10,000 queues reads them without a scan;
:meth:`QueueChecks._check_bytes_locked` states what they must equal (``Queue._check`` runs it,
after every step of the stateful tests). ``ready_bytes`` is kept whether or not a
``max-length-bytes`` applies (it is also what that limit reads).
"""

from __future__ import annotations

from .args import queue_options


class QueueChecks:
    """Accounting helpers of a queue (a mixin of ``Queue``; queue lock held)."""

    __slots__ = ()

    def _persistent_locked(self, messages, sign: int) -> None:
        """Count journaled ``messages`` in (sign 1) or out (-1) of the persistent figures
        (a journaled queue only)."""
        for m in messages:
            if m.msg_id:
                self.persistent_count += sign
                self.persistent_bytes += sign * m.size

    def _check_bytes_locked(self, pairs: list) -> None:
        """``ready_bytes`` is the body bytes of the ready messages (``pairs``);
        ``unacked_bytes`` >= 0, and 0 with nothing unacked; ``persistent_count``/``_bytes``
        are 0 for a queue without a journal, else (with nothing unacked) the journaled ready
        messages' count and bytes."""
        # a recovered run's messages (``PagedReadyQueue.push_run``) are counted at page-in
        runs = getattr(self.ready, "_run_n", 0)
        if runs:
            head = self.ready.resident - len(self.ready._pend)
            pairs = pairs[:head] + pairs[head + runs:]
        want = sum(m.size for _, (m, _r) in pairs)
        assert self.ready_bytes == want, (self.ready_bytes, want)
        assert self.unacked_bytes >= 0 and (self.unacked_count or not self.unacked_bytes)
        if not self.journaled:
            assert self.persistent_count == self.persistent_bytes == 0
        elif not self.unacked_count:
            mine = [m for _, (m, _r) in pairs if m.msg_id]
            assert self.persistent_count == len(mine) + runs, (self.persistent_count, mine)
            assert self.persistent_bytes == sum(m.size for m in mine)

    def _check(self, unacked_seqs: list[int] | None = None) -> None:
        """The queue's invariants (tests; takes the lock). ``unacked_seqs``: the seqs of this
        queue's messages in every channel's unacked map (what only the channels know).

        - the byte and persistence counters are right (``QueueChecks._check_bytes_locked``);
        - ``unacked_count`` is the number of this queue's unacked deliveries;
        - every expiry key is a ready or unacked message's seq, and every ready message a
          TTL applies to has one;
        - no seq is both ready and unacked, none is ready twice;
        - a deleted queue has no consumers, no ready messages and no dead letters pending.
        """
        with self.lock:
            pairs = list(self.ready.pairs())
            seqs = [seq for seq, _ in pairs]
            ready = set(seqs)
            assert len(ready) == len(seqs), "a message is ready twice"
            self._check_bytes_locked(pairs)
            assert self.unacked_count >= 0, self.unacked_count
            # (a TTL a policy brought applies only to what was enqueued after it)
            own_ttl = queue_options(self.arguments).message_ttl
            for seq, (m, _r) in pairs:
                if m.ttl is not None or own_ttl is not None:
                    assert seq in self.expiry, seq
            if unacked_seqs is not None:
                assert self.unacked_count == len(unacked_seqs), (
                    self.unacked_count, len(unacked_seqs))
                assert not ready & set(unacked_seqs), ready & set(unacked_seqs)
                assert set(self.expiry) <= ready | set(unacked_seqs)
            if self.deleted:
                assert not self.consumers and not self.ready and not self._letters
