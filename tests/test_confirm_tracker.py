"""``ConfirmTracker``'s lock discipline against a channel closing on the worker.

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
from syncmq.broker.message import Message
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
