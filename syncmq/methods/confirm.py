"""confirm.select, and the :class:`ConfirmTracker` that sends a channel's publisher confirms.

A channel in confirm mode numbers its publishes 1, 2, ... and must ack (or nack) each once, in
order, possibly several at a time (``multiple``). Three things decide when: the end of the
connection's batch of frames (confirms are coalesced per batch), a queue refusing a publish
for its length limit (a basic.nack for that one), and the journal's fsync of persistent
publishes (their ack waits for the journal barrier, which fires on the journal thread) or,
whichever comes first, the settling of every queue copy of a persistent publish (acked, or
rejected without requeue, on every durable queue it was routed to: RabbitMQ's rule for a
message that is acked before it is written, :meth:`ConfirmTracker.settled`).
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..protocol import connection as pconn
from ..protocol.channel import encode_confirm
from ..wire import _spec
from ..wire.errors import AMQPChannelError

if TYPE_CHECKING:
    from ..broker.message import Message
    from ..broker.publish import PublishResult
    from .channel_state import Channel
    from .session import Session

_OPEN = pconn.OPEN


class ConfirmLink:
    """What a journaled message published on a confirm channel points to (``Message.confirm``):
    its tracker, until the channel is released (``Channel.release`` sets ``tracker`` to None
    with ``confirm_lock`` held), so that a message left on a queue does not keep a closed
    channel's session alive. One per tracker: no allocation per message."""

    __slots__ = ("tracker",)

    def __init__(self, tracker: ConfirmTracker) -> None:
        self.tracker: ConfirmTracker | None = tracker


class ConfirmTracker:
    """The publisher confirms of one channel (created by confirm.select).

    Ownership, by construction rather than by comment:

    - *Worker side* (``seq``, ``_nacks``, ``_durable``, ``_jseqs``, ``_jids``, ``_jmulti``):
      written by :meth:`published` for
      every publish and read by :meth:`hand_over`; both are called only by the connection's
      worker (the session's frame handling), so these need no lock and no other thread ever
      reads them.
    - *Shared side* (``handed``, ``nacks``, ``durable_pending``, ``durable_done``, ``sent``,
      ``n_confirm``, and the early-confirm state ``jseqs``, ``jids``, ``waiting``, ``multi``,
      ``early``): read and written only inside this class with ``lock`` held (the
      session's ``confirm_lock``, shared by the session's trackers, so that
      ``Session.close`` can keep every confirm from following its connection.close). The
      worker hands a batch's publishes over in :meth:`hand_over` (once per batch, every
      tracker of the batch in one hold of ``lock``); the journal thread reports fsyncs in
      :meth:`_synced` (the barrier's callback); a queue's worker reports settled copies in
      :meth:`settled` (never with a queue lock held). Neither reads the worker side.
    - Frames go out in one place, :meth:`_send_locked`, with ``lock`` held, after
      :meth:`_flush_locked` saw the connection open and the channel not ``closing``: the
      connection moves out of OPEN under ``lock`` (``Session.close``), and ``closing`` is
      set with ``lock`` held too (``Channel.release``), so no confirm follows a
      connection.close or channel.close-ok. Lock order: ``lock``, then the transport's.

    Early confirms: ``jseqs`` (ascending) and ``jids`` are the numbers and msg ids of the
    handed-over journaled publishes not known to be confirmed; ``waiting`` maps such a msg id
    to its number while a queue copy of it is unsettled (``multi``: copies still unsettled,
    for a message on more than one durable queue); ``early`` holds the numbers whose copies
    are all settled. A journaled publish is due once ``<= durable_done`` (fsynced) or in
    ``early``; confirms stay a contiguous prefix. A copy settled before its publish was
    handed over is not counted (the publish then waits for its fsync: late, never wrong).
    The state is dropped as soon as ``sent`` passes it (all of it at once, in the usual case
    where the fsync covers everything handed over).

    Invariants (:meth:`_check`): ``handed <= seq``, ``sent <= seq`` (a failed barrier that
    fires before its batch's hand-over nacks up to its publish at once), ``durable_pending <=
    handed``, ``durable_done <= seq``, ``nacks`` ascending and ``<= handed``; ``jseqs``
    ascending, ``> sent`` and ``<= handed``, as long as ``jids``; ``early`` and the values
    of ``waiting`` within ``jseqs``, and none in both.
    """

    __slots__ = ("channel", "lock", "proto", "write", "seq", "_nacks", "_durable", "handed",
                 "nacks", "durable_pending", "durable_done", "sent", "n_confirm", "link",
                 "_jseqs", "_jids", "_jmulti", "jseqs", "jids", "waiting", "multi", "early")

    def __init__(self, channel: Channel, lock: threading.Lock) -> None:
        self.channel = channel
        self.lock = lock
        session = channel.session
        self.proto = session.proto  # (the session's for its life; ``state`` read under lock)
        self.write = session.transport.write1  # thread-safe; the one writer of our frames
        # worker side
        self.seq = 0  # the last publish's number
        self._nacks: list[int] = []  # refused publishes of the current batch
        self._durable = 0  # the last journaled publish of the current batch
        self._jseqs: list[int] = []  # the batch's journaled publishes (early confirms)...
        self._jids: list[int] = []  # ... their msg ids
        self._jmulti: list[tuple[int, int]] = []  # (msg id, copies) when on several queues
        self.link = ConfirmLink(self)
        # shared side (``lock``)
        self.handed = 0  # publishes handed over by the worker
        self.nacks: list[int] = []  # refused publishes not yet nacked, ascending
        self.durable_pending = 0  # the last journaled publish handed over
        self.durable_done = 0  # the last publish known to be fsynced
        self.sent = 0  # every publish up to this one was acked or nacked
        self.n_confirm = 0  # acks sent (a counter for monitoring; unlocked reads)
        self.jseqs: list[int] = []
        self.jids: list[int] = []
        self.waiting: dict[int, int] = {}
        self.multi: dict[int, int] = {}
        self.early: set[int] = set()

    # ---- the worker ----

    def published(self, result: PublishResult, message: Message) -> None:
        """Number one publish and note what its confirm waits for (worker, per publish)."""
        seq = self.seq = self.seq + 1
        if result.journaled:
            self._durable = seq
            mid = message.msg_id
            if mid and not result.rejected:  # (msg_id 0: the journal refused it, a nack)
                message.confirm = self.link
                self._jseqs.append(seq)
                self._jids.append(mid)
                queues = result.queues
                if len(queues) > 1:
                    n = 0
                    for q in queues:
                        if q.journaled:
                            n += 1
                    if n > 1:
                        self._jmulti.append((mid, n))
        if result.rejected:
            self._nacks.append(seq)

    @staticmethod
    def hand_over(dirty: set[ConfirmTracker], lock: threading.Lock,
                  barrier: Callable[[Callable[[Exception | None], None]], None]) -> None:
        """End of the worker's batch: every tracker in ``dirty`` (the session's trackers
        with publishes in the batch, all sharing ``lock``) hands the batch's publishes over
        and sends every confirm that is due; ``dirty`` is emptied.

        The batch's journaled publishes get one journal barrier (``barrier(callback)``,
        :meth:`_synced`), registered before the hand-over so that it joins the journal's
        group commit of the batch's records; it may fire before the hand-over (or at once,
        on this thread, if the journal refuses it), which is safe: see :meth:`_synced`."""
        waits = None  # (a loop, not a comprehension: no extra frame per batch)
        for t in dirty:
            if t._durable:
                if waits is None:
                    waits = []
                waits.append((t, t._durable))
        if waits is not None:
            barrier(lambda err: ConfirmTracker._synced(lock, waits, err))
        with lock:
            for t in dirty:
                t.handed = t.seq
                if t._nacks:
                    t.nacks.extend(t._nacks)
                    t._nacks.clear()
                if t._durable:
                    t.durable_pending = t._durable
                    t._durable = 0
                if t._jseqs:
                    t.jseqs += t._jseqs
                    t.jids += t._jids
                    t.waiting.update(zip(t._jids, t._jseqs, strict=True))
                    t._jseqs.clear()
                    t._jids.clear()
                    if t._jmulti:
                        t.multi.update(t._jmulti)
                        t._jmulti.clear()
                t._flush_locked(0)
        dirty.clear()

    # ---- a queue's worker (a consumer's ack or reject) ----

    def settled(self, messages: list) -> None:
        """A queue copy of each of ``messages`` (journaled publishes of this channel) was
        acked or rejected without requeue: a publish whose copies are now all settled is
        due without its fsync (RabbitMQ confirms a persistent message that every queue
        acked before it was written). Called with no queue lock held."""
        with self.lock:
            waiting = self.waiting
            if not waiting:
                return
            multi = self.multi
            sent = self.sent
            found = False
            for m in messages:
                mid = m.msg_id
                seq = waiting.get(mid)
                if seq is None:
                    continue  # confirmed already, or not handed over yet
                if multi:
                    n = multi.get(mid)
                    if n is not None:
                        if n > 1:
                            multi[mid] = n - 1
                            continue
                        del multi[mid]
                del waiting[mid]
                if seq > sent:
                    self.early.add(seq)
                    found = True
            if found:
                self._flush_locked(0)

    # ---- the journal thread (or the worker if the journal refused the barrier) ----

    @staticmethod
    def _synced(lock: threading.Lock, waits: list, err: Exception | None) -> None:
        """A batch's journal barrier fired: for each ``(tracker, upto)`` of ``waits``, the
        publishes up to ``upto`` are on disk (or, with ``err``, cannot be: nack them); send
        what is now due. If it fires before the batch that registered it was handed over,
        ``durable_done`` runs ahead of ``handed`` for a moment: only what was handed over is
        acked, the rest when it is."""
        with lock:
            for t, upto in waits:
                if upto > t.durable_done:
                    t.durable_done = upto
                t._flush_locked(upto if err is not None else 0)

    # ---- both, ``lock`` held ----

    def _flush_locked(self, failed: int) -> None:
        """Nack every publish up to ``failed`` (a journal error) not yet confirmed, then ack
        (and nack) every handed-over publish that is due: all of them, or only up to
        ``durable_done`` while a journaled one waits for its fsync. Nothing once the
        connection left OPEN or the channel is closing."""
        upto = self.handed
        if self.durable_pending > self.durable_done:
            upto = self.durable_done  # later confirms wait for the journal (multiple)
            if self.early:  # ... or for the settling of their queue copies
                jseqs = self.jseqs
                i = bisect_right(jseqs, upto)
                n = len(jseqs)
                early = self.early
                while i < n and jseqs[i] in early:
                    i += 1
                upto = self.handed if i == n else jseqs[i] - 1
        sent = self.sent
        nacks = self.nacks
        if (upto <= sent and not nacks and failed <= sent) or self.channel.closing \
                or self.proto.state is not _OPEN:
            if self.jseqs and self.jseqs[0] <= sent:  # (handed over after a failed barrier)
                self._forget_locked()
            return
        if failed > sent:
            self._send_locked(failed, True)
        while nacks and nacks[0] <= upto:
            seq = nacks.pop(0)
            if seq <= self.sent:
                continue  # nacked already (a journal failure covered it)
            if seq - 1 > self.sent:
                self._send_locked(seq - 1, False)
            self._send_locked(seq, True)
        if upto > self.sent:
            self._send_locked(upto, False)
        if self.jseqs and self.jseqs[0] <= self.sent:
            self._forget_locked()

    def _forget_locked(self) -> None:
        """Drop the early-confirm state of the publishes now confirmed (``<= sent``)."""
        jseqs = self.jseqs
        sent = self.sent
        if jseqs[-1] <= sent:  # (the usual case: the fsync covered all that was handed)
            jseqs.clear()
            self.jids.clear()
            self.waiting.clear()
            self.multi.clear()
            self.early.clear()
            return
        k = bisect_right(jseqs, sent)
        waiting, multi, early = self.waiting, self.multi, self.early
        for mid in self.jids[:k]:
            waiting.pop(mid, None)
            if multi:
                multi.pop(mid, None)
        if early:
            early.difference_update(jseqs[:k])
        del jseqs[:k]
        del self.jids[:k]

    def _send_locked(self, upto: int, nack: bool) -> None:
        """The one place a confirm is written: ack or nack everything up to ``upto``."""
        n = upto - self.sent
        self.sent = upto
        if not nack:
            self.n_confirm += n
        self.write(encode_confirm(self.channel.id, upto, n > 1, nack))

    def _check(self) -> None:
        """The invariants in the class docstring (tests; takes ``lock``)."""
        with self.lock:
            assert 0 <= self.handed <= self.seq and 0 <= self.sent <= self.seq, (
                self.sent, self.handed, self.seq)
            assert self.durable_pending <= self.handed, (self.durable_pending, self.handed)
            assert self.durable_done <= self.seq, (self.durable_done, self.seq)
            assert self.nacks == sorted(self.nacks) and all(
                n <= self.handed for n in self.nacks), self.nacks
            assert self.n_confirm <= self.sent
            js = self.jseqs
            assert js == sorted(js) and len(js) == len(self.jids), (js, self.jids)
            assert not js or (js[0] > self.sent and js[-1] <= self.handed), (js, self.sent)
            jset = set(js)
            assert self.early <= jset, (self.early, js)
            assert set(self.waiting.values()) <= jset - self.early, (self.waiting, self.early)
            assert set(self.multi) <= set(self.waiting), (self.multi, self.waiting)


def select(session: Session, ch: Channel, m: _spec.Confirm.Select, _p, _b) -> None:
    if ch.tx:
        raise AMQPChannelError(
            _spec.PRECONDITION_FAILED,
            "PRECONDITION_FAILED - cannot switch from tx to confirm mode",
        )
    if ch.confirms is None:
        ch.confirms = ConfirmTracker(ch, session.confirm_lock)
    if not m.nowait:
        session.send_method(ch.id, _spec.Confirm.SelectOk())


HANDLERS = {_spec.Confirm.Select.INDEX: select}
