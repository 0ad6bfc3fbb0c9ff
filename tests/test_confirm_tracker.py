"""``ConfirmTracker``'s lock discipline against a channel closing on the worker (journal
thread confirms, and early confirms from a consumer's worker).

The journal thread sends confirms; the worker closes a channel by setting ``closing`` in
``Channel.release`` (with the session's ``confirm_lock``, the tracker's lock, held) and then
writes channel.close. Every confirm the journal thread writes must therefore be decided and
written under that lock: one that saw the channel open outside it can land after
channel.close (and after close-ok, on a channel the client may already have reopened under
the same number).
"""

from __future__ import annotations

import threading

from fake_transport import FakeTransport

from syncmq.broker.broker import Broker
from syncmq.broker.message import Message, settle_copies
from syncmq.broker.publish import PublishResult
from syncmq.methods.channel_state import Channel
from syncmq.methods.confirm import ConfirmTracker
from syncmq.methods.session import Session, Settings
from syncmq.protocol import connection as pconn


class _Proto:
    """The session's protocol as the tracker sees it, with a thread switch when its state is
    read (the last thing the tracker checks before it writes): the worker closes the channel
    right then (``Channel.release``, the real one). The close waits a moment for its locks,
    so it blocks only if the tracker holds the lock that guards ``closing`` while it decides
    and writes (correct)."""

    def __init__(self, ch: Channel) -> None:
        self.ch = ch
        self.closer: threading.Thread | None = None
        self.arm = False

    @property
    def state(self) -> object:
        if self.arm and self.closer is None:
            self.closer = threading.Thread(target=self.ch.release)
            self.closer.start()
            self.closer.join(0.5)
        return pconn.OPEN


def test_a_failed_barrier_never_nacks_after_the_channel_closed() -> None:
    session = Session(FakeTransport(), Broker(), Settings(), {})
    ch = Channel(session, 1)
    sent: list[tuple[bytes, bool]] = []
    session.transport.write1 = lambda data: sent.append((data, ch.closing))
    t = ConfirmTracker(ch, session.confirm_lock)
    proto = t.proto = _Proto(ch)
    barriers: list = []
    t.published(PublishResult([], True, journaled=True), Message("", "", b"\x00\x00", b""))
    ConfirmTracker.hand_over({t}, session.confirm_lock, barriers.append)
    assert sent == [] and len(barriers) == 1  # waits for the journal (durable_pending 1)
    proto.arm = True
    barriers[0](OSError("disk gone"))  # the journal thread: the fsync failed
    assert proto.closer is not None
    proto.closer.join()
    assert ch.closing
    # either the nack went out before the channel closed, or not at all
    assert sent and all(not closing for _frame, closing in sent), sent


def _journaled(t: ConfirmTracker, mid: int) -> Message:
    m = Message("", "", b"\x00\x00", b"")
    m.msg_id = mid
    t.published(PublishResult([object()], True, journaled=True), m)
    return m


def test_an_early_confirm_is_decided_under_the_lock_that_closes_the_channel() -> None:
    """Early confirms (a consumer's ack settled the last copy before the fsync) go through
    the same lock and checks: the race above, with the consumer's worker in the journal
    thread's place, and nothing at all once the channel is released (its link is cut)."""
    session = Session(FakeTransport(), Broker(), Settings(), {})
    ch = Channel(session, 1)
    sent: list[tuple[bytes, bool]] = []
    session.transport.write1 = lambda data: sent.append((data, ch.closing))
    t = ch.confirms = ConfirmTracker(ch, session.confirm_lock)
    proto = t.proto = _Proto(ch)
    m1, m2 = _journaled(t, 7), _journaled(t, 8)
    ConfirmTracker.hand_over({t}, session.confirm_lock, lambda cb: None)
    assert sent == []
    proto.arm = True
    settle_copies([m1])  # the consumer's worker
    assert proto.closer is not None
    proto.closer.join()
    assert ch.closing and m1.confirm.tracker is None
    assert sent and all(not closing for _frame, closing in sent), sent
    n = len(sent)
    settle_copies([m2])  # after the release: not even looked at
    t.settled([m2])  # (and the tracker itself refuses: the channel is closing)
    assert len(sent) == n
    t._check()
