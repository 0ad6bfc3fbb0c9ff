"""confirm.select, and the :class:`ConfirmTracker` that sends a channel's publisher confirms.

A channel in confirm mode numbers its publishes 1, 2, ... and must ack (or nack) each once, in
order, possibly several at a time (``multiple``). Three things decide when: the end of the
connection's batch of frames (confirms are coalesced per batch), a queue refusing a publish
for its length limit (a basic.nack for that one), and the journal's fsync of persistent
publishes (their ack waits for the journal barrier, which fires on the journal thread).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..protocol import connection as pconn
from ..wire import _spec
from ..wire.errors import AMQPChannelError

if TYPE_CHECKING:
    from ..broker.publish import PublishResult
    from .channel_state import Channel
    from .session import Session


class ConfirmTracker:
    """The publisher confirms of one channel (created by confirm.select).

    Ownership, by construction rather than by comment:

    - *Worker side* (``seq``, ``_nacks``, ``_durable``): written by :meth:`published` for
      every publish and read by :meth:`hand_over`; both are called only by the connection's
      worker (the session's frame handling), so these need no lock and no other thread ever
      reads them.
    - *Shared side* (``handed``, ``nacks``, ``durable_pending``, ``durable_done``, ``sent``,
      ``n_confirm``): read and written only inside this class with ``lock`` held (the
      session's ``confirm_lock``, so that ``Session.close`` can keep every confirm from
      following its connection.close). The worker hands a batch's publishes over in
      :meth:`hand_over` (once per batch); the journal thread reports fsyncs in
      :meth:`synced`. Neither ever reads the other's side.
    - Frames go out in one place, :meth:`_send_locked`, with ``lock`` and the channel's lock
      held (``Channel.release`` sets ``closing`` under the channel's lock, so no confirm
      follows a channel.close-ok). Lock order: ``lock``, ``Channel.lock``, transport.

    Invariants (:meth:`_check`): ``handed <= seq``, ``sent <= seq`` (a failed barrier that
    fires before its batch's hand-over nacks up to its publish at once), ``durable_pending <=
    handed``, ``durable_done <= seq``, ``nacks`` ascending and ``<= handed``.
    """

    __slots__ = ("channel", "lock", "seq", "_nacks", "_durable", "handed", "nacks",
                 "durable_pending", "durable_done", "sent", "n_confirm")

    def __init__(self, channel: Channel, lock: threading.Lock) -> None:
        self.channel = channel
        self.lock = lock
        # worker side
        self.seq = 0  # the last publish's number
        self._nacks: list[int] = []  # refused publishes of the current batch
        self._durable = 0  # the last journaled publish of the current batch
        # shared side (``lock``)
        self.handed = 0  # publishes handed over by the worker
        self.nacks: list[int] = []  # refused publishes not yet nacked, ascending
        self.durable_pending = 0  # the last journaled publish handed over
        self.durable_done = 0  # the last publish known to be fsynced
        self.sent = 0  # every publish up to this one was acked or nacked
        self.n_confirm = 0  # acks sent (a counter for monitoring; unlocked reads)

    # ---- the worker ----

    def published(self, result: PublishResult) -> None:
        """Number one publish and note what its confirm waits for (worker, per publish)."""
        seq = self.seq = self.seq + 1
        if result.rejected:
            self._nacks.append(seq)
        if result.journaled:
            self._durable = seq

    def journaled_in_batch(self) -> int:
        """The last journaled publish of the current batch, or 0 (worker): the caller
        registers a journal barrier for it (then :meth:`synced`) *before* :meth:`hand_over`,
        so that the barrier joins the journal's group commit of the batch's records; the
        barrier may fire before the hand-over, which is safe (see :meth:`synced`)."""
        return self._durable

    def hand_over(self) -> None:
        """End of the worker's batch: hand this batch's publishes over and send every confirm
        that is due."""
        durable = self._durable
        self._durable = 0
        with self.lock:
            self.handed = self.seq
            if self._nacks:
                self.nacks.extend(self._nacks)
                self._nacks.clear()
            if durable:
                self.durable_pending = durable
            self._flush_locked()

    # ---- the journal thread (or the worker if the journal refused the barrier) ----

    def synced(self, upto: int, err: Exception | None) -> None:
        """The journal barrier for publishes up to ``upto`` fired: they are on disk (or, with
        ``err``, cannot be: nack them); send what is now due. If it fires before the batch
        that registered it was handed over, ``durable_done`` runs ahead of ``handed`` for a
        moment: only what was handed over is sent, the rest when it is."""
        with self.lock:
            if err is not None and upto > self.sent:
                with self.channel.lock:  # as _flush_locked: never after the channel closed
                    if self._may_send():
                        self._send_locked(upto, nack=True)
            if upto > self.durable_done:
                self.durable_done = upto
            self._flush_locked()

    # ---- both, ``lock`` held ----

    def _may_send(self) -> bool:
        return (self.channel.session.proto.state is pconn.OPEN
                and not self.channel.closing)

    def _flush_locked(self) -> None:
        """Ack (and nack) every handed-over publish that is due: all of them, or only up to
        ``durable_done`` while a journaled one waits for its fsync."""
        upto = self.handed
        if self.durable_pending > self.durable_done:
            upto = self.durable_done  # later confirms wait for the journal (multiple)
        if upto <= self.sent and not self.nacks:
            return
        with self.channel.lock:
            if not self._may_send():
                return
            nacks = self.nacks
            while nacks and nacks[0] <= upto:
                seq = nacks.pop(0)
                if seq <= self.sent:
                    continue  # nacked already (a journal failure covered it)
                if seq - 1 > self.sent:
                    self._send_locked(seq - 1, nack=False)
                self._send_locked(seq, nack=True)
            if upto > self.sent:
                self._send_locked(upto, nack=False)

    def _send_locked(self, upto: int, nack: bool) -> None:
        """The one place a confirm is written: ack or nack everything up to ``upto``."""
        n = upto - self.sent
        self.sent = upto
        ch = self.channel
        if nack:
            method = _spec.Basic.Nack(delivery_tag=upto, multiple=n > 1, requeue=False)
        else:
            self.n_confirm += n
            method = _spec.Basic.Ack(delivery_tag=upto, multiple=n > 1)
        ch.session.send_method(ch.id, method)

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
