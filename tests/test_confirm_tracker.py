"""``ConfirmTracker``'s lock discipline against a channel closing on the worker.

The journal thread sends confirms; the worker closes a channel by setting ``closing`` under
``Channel.lock`` (``Channel.release``) and then writes channel.close. Every confirm the
journal thread writes must therefore be decided and written under ``Channel.lock``: one that
saw the channel open outside it can land after channel.close (and after close-ok, on a
channel the client may already have reopened under the same number).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

from syncmq.broker.publish import PublishResult
from syncmq.methods.confirm import ConfirmTracker
from syncmq.protocol import connection as pconn


class _Channel:
    """A channel whose worker closes it (``closing`` under ``lock``, as ``Channel.release``)
    right when the tracker reaches for the session to write a frame, i.e. after it decided to
    send: a thread switch there. The close waits a moment for the lock, so it blocks only if
    the tracker holds ``lock`` while it decides and writes (correct)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.closing = False
        self.id = 1
        self.sent: list[tuple] = []
        self.closer: threading.Thread | None = None
        self.arm = False
        self._reads: list = []
        self._session = SimpleNamespace(
            proto=SimpleNamespace(state=pconn.OPEN),
            send_method=lambda ch_id, m: self.sent.append((m, self.closing)))

    @property
    def session(self) -> SimpleNamespace:
        if self.arm and self.closer is None and len(self._reads) == 1:
            self.closer = threading.Thread(target=self._close)
            self.closer.start()
            self.closer.join(0.5)
        if self.arm:
            self._reads.append(1)
        return self._session

    def _close(self) -> None:
        with self.lock:
            self.closing = True


def test_a_failed_barrier_never_nacks_after_the_channel_closed() -> None:
    ch = _Channel()
    t = ConfirmTracker(ch, threading.Lock())
    t.published(PublishResult([], True, journaled=True))
    t.hand_over()  # waits for the journal (durable_pending 1)
    assert ch.sent == []
    ch.arm = True  # read 1: the tracker checks the connection; read 2: it writes
    t.synced(1, OSError("disk gone"))  # the journal thread: the fsync failed
    assert ch.closer is not None
    ch.closer.join()
    assert ch.closing
    # either the nack went out before the channel closed, or not at all
    assert all(not closing for _m, closing in ch.sent), ch.sent
