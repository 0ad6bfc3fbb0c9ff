"""A queue's side of a paged ready FIFO (``queues.paged.PagedReadyQueue``): which FIFO a
queue gets, recovering messages straight into its page files, and dropping its paged-out
messages.

:class:`QueuePaging` is a part of :class:`~syncmq.broker.queue.Queue` (a base class with no
state of its own; queue lock held). The paged-out messages of a queue never become
``Message`` objects again when the queue drops them all (purge, deletion): their records'
headers are read in runs and each run is accounted for here, so purging a backlog of
millions costs a scan of the page files, not their messages in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..queues.paged import PagedReadyQueue
from ..queues.ready import ReadyQueue
from .message import Message


class QueuePaging:
    """Dropping a queue's paged-out messages (a mixin of ``Queue``; queue lock held)."""

    __slots__ = ()

    def _fifo(self) -> ReadyQueue:
        """A new queue's ready FIFO: paged out beyond the store's window under a memory
        budget (``queues.paged``; priority queues are never paged)."""
        store = self.store
        if store is None or not store.page_window:
            return ReadyQueue()
        return PagedReadyQueue(Message, store, store.slow.directory, store.page_window)

    def close_pages(self) -> None:
        """The broker stops: close and delete this queue's page files (the queue owns them;
        they never outlive the process: recovery pages a backlog from the journal again).
        Takes the queue lock; the queue is not used afterwards."""
        with self.lock:
            self.ready.close()

    def restore_by_reference(self, message: Message, delivered: bool) -> bool:
        """Recovery: :meth:`Queue.restore_message` of a message on this queue only whose
        body only the journal holds (``body`` None, no store reference), pushed to the paged
        tail as a reference into the journal, with no store entry made and dropped again at
        its page-out. False, and nothing done, unless it goes to the tail of a paged FIFO (the
        head is full) and has no TTL (whose expiry entry ``restore_message`` makes): then
        restore it with ``restore_message``."""
        if message.ttl is not None or self.message_ttl is not None:
            return False
        with self.lock:
            ready = self.ready
            if self.max_priority is not None or not isinstance(ready, PagedReadyQueue):
                return False
            if ready.push_journaled((message, delivered)) is None:
                return False
            self.ready_bytes += message.size
            if self.journaled:
                self._persistent_locked((message,), 1)
        return True

    def restore_run(self, first: int, count: int, redelivered: bool) -> bool:
        """Recovery: ``count`` journaled messages with ids ``first ..``, on this queue only,
        their PUBLISH records just replayed, appended to the paged tail as one run of ids
        (``PagedReadyQueue.push_run``): nothing per message until page-in. False, and
        nothing done, unless this is a paged FIFO with a full head whose tail holds only
        runs, no ``x-message-ttl`` and no length limit (which read ``ready_bytes``: a run's
        bytes are counted when it is paged in, see :meth:`_run_counted`)."""
        if self.message_ttl is not None or self.limited:
            return False
        with self.lock:
            ready = self.ready
            if self.max_priority is not None or not isinstance(ready, PagedReadyQueue):
                return False
            if not ready.push_run(first, count, redelivered):
                return False
            ready.counted = self._run_counted
            if self.journaled:
                self.persistent_count += count
        return True

    def _run_counted(self, message: Message, seq: int, published_ms: int) -> None:
        """A message of a recovered run becomes a pair (page-in, queue lock held): its bytes
        join the ready and persistent figures now, and its own TTL (``expiration``) starts,
        counted from the original publish as :meth:`Queue.restore_message` does."""
        self.ready_bytes += message.size
        if self.journaled:
            self.persistent_bytes += message.size
        ttl = message.ttl
        if ttl is not None:
            left = ttl if not published_ms else published_ms + ttl - time.time() * 1000.0
            self.expiry[seq] = time.monotonic() + left / 1000.0
            self._arm_ttl_timer_locked()

    def _drop_paged_locked(self, ack: Callable[[Any, list[int]], None] | None) -> int:
        """Drop every paged-out ready message: its expiry entry, its share of the
        persistent counters (a journaled queue) and, with ``ack`` (``Durability.acked`` or
        ``deleted_in_tx``), its journal record. Returns how many; the caller zeroes
        ``ready_bytes`` (it drops the messages in memory too)."""
        expiry = self.expiry
        journaled = self.journaled

        def visit(seqs: list[int], ids: list[int], sizes: list[int]) -> None:
            if expiry:
                for seq in seqs:
                    expiry.pop(seq, None)
            if journaled:
                mine = [i for i, msg_id in enumerate(ids) if msg_id]
                self.persistent_count -= len(mine)
                self.persistent_bytes -= sum(sizes[i] for i in mine)
                if ack is not None and mine:
                    ack(self, [ids[i] for i in mine])

        return self.ready.purge_paged(visit)
