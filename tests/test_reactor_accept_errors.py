"""The reactor's accept loop survives every error accept(2) can report: a pending connection's
own failure (ECONNABORTED, EPERM, ...) is skipped and the next connection is taken; anything
else pauses the listener (as EMFILE does) instead of ending the reactor thread, which would
stop the whole broker (found in review: only EMFILE/ENFILE/ENOBUFS/ENOMEM were caught)."""

from __future__ import annotations

import errno
import socket

import pytest

from syncmq.reactor import Reactor


class _Pool:
    def set_on_deferred(self, fn) -> None:
        pass

    def assign(self):
        return None

    def release(self, worker) -> None:
        pass


class _FailingListener:
    """A listening socket whose next accepts fail with ``errors`` before the real ones."""

    def __init__(self, sock: socket.socket, errors: list[int]):
        self.sock = sock
        self.errors = list(errors)

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self):
        if self.errors:
            code = self.errors.pop(0)
            raise OSError(code, "injected")
        return self.sock.accept()


@pytest.fixture
def reactor_and_listener():
    made = []

    def factory(t):
        made.append(t)
        return None

    reactor = Reactor(_Pool(), factory)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    lsock.setblocking(False)
    yield reactor, lsock, made
    for t in made:
        t.sock.close()
    lsock.close()
    reactor.selector.close()


@pytest.mark.parametrize("code", [errno.ECONNABORTED, errno.EPERM, errno.EPROTO])
def test_a_failed_pending_connection_is_skipped(reactor_and_listener, code):
    reactor, lsock, made = reactor_and_listener
    client = socket.create_connection(lsock.getsockname())
    try:
        listener = _FailingListener(lsock, [code])
        reactor._accept(listener, None)  # must not raise
        assert len(made) == 1, "the connection behind the failed accept was not taken"
    finally:
        client.close()


def test_an_unknown_accept_error_pauses_the_listener(reactor_and_listener):
    reactor, lsock, made = reactor_and_listener
    reactor.selector.register(lsock, 1, "listener-data")
    reactor.listeners.append(lsock)
    reactor._accept(_FailingListener(lsock, [errno.EINVAL]), None)  # must not raise
    assert lsock.fileno() not in reactor.selector.get_map(), "still polled in a tight loop"
    assert reactor._timers, "the listener is never polled again"
    # the timer puts it back, and the next connection is accepted
    _deadline, _seq, fn, args = reactor._timers[0]
    assert fn == reactor._resume_accepting and args[1] == "listener-data"
    fn(lsock, args[1])  # (args[0] is the injecting wrapper, not the registered listener)
    assert lsock.fileno() in reactor.selector.get_map()
    client = socket.create_connection(lsock.getsockname())
    try:
        reactor._accept(lsock, None)
        assert len(made) == 1
    finally:
        client.close()
