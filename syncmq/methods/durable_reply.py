"""Replies that promise a durable change are sent only once its journal record is fsynced.

A durable queue or exchange declared, deleted, bound, unbound or purged appends its record
(``broker.durability``) and marks the worker thread (``Durability.take_changed``). The handler
then answers through :func:`reply_when_durable` instead of ``Session.send_method``: if the
thread is marked, the reply waits for a journal barrier (group commit: one fsync covers every
connection's records of the batch), and until it fires the connection handles nothing more.

Why the whole connection waits: replies on a channel must keep the order of the requests, and
a later method of the connection may depend on this one (a publish to the new queue, a
consume); so the rest of the batch (events, a channel error the protocol layer raised after
them, frames that arrive meanwhile) is parked on the :class:`Hold` and handled, in order,
after the reply (``Session._receive``). Other connections, and this connection's deliveries,
go on. RabbitMQ blocks the channel until the declare's table write is done; we block the
connection for about one fsync (~0.3-2 ms).

Thread-safety: a :class:`Hold` belongs to its connection's worker; the barrier's callback
(journal thread) only submits :func:`resume` to that worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..protocol import connection as pconn
from ..wire import _spec
from ..wire.errors import AMQPChannelError

if TYPE_CHECKING:
    from .session import Session


class Hold:
    """A reply waiting for the journal, and what the connection parked behind it."""

    __slots__ = ("ch_id", "request", "method", "then", "events", "error", "frames")

    def __init__(self, ch_id: int, request: _spec.Method | None,
                 method: _spec.Method | None, then: Callable[[], None] | None):
        """``method`` None: no reply, only the parked input to handle on the worker (the
        reactor standing in handed it over: ``methods.hand_over``)."""
        self.ch_id = ch_id
        self.request = request
        self.method = method
        self.then = then  # run right after the reply (queue.delete's basic.cancels)
        self.events: list = []  # the rest of the batch (set by Session._handle)
        self.error: Any = None  # the protocol layer's ChannelError after the events
        self.frames: list = []  # frames left after the events, and received meanwhile


def reply_when_durable(session: Session, ch_id: int, request: _spec.Method,
                       method: _spec.Method | None,
                       then: Callable[[], None] | None = None) -> None:
    """Send ``method`` (None: no_wait) on ``ch_id`` then run ``then()``: at once if the
    handler of ``request`` changed nothing durable, else once the journal has fsynced the
    change (a journal error closes the channel with 541 instead)."""
    d = session.broker.durability
    if d is None or not d.take_changed() or method is None:
        if method is not None:
            session.send_method(ch_id, method)
        if then is not None:
            then()
        return
    reply_after_barrier(session, ch_id, request, method, then)


def reply_after_barrier(session: Session, ch_id: int, request: _spec.Method,
                        method: _spec.Method, then: Callable[[], None] | None = None) -> None:
    """Send ``method`` once everything journaled so far is on disk, the connection held
    meanwhile (a journal error closes the channel with 541 instead): for a reply whose
    promise the handler knows needs the journal (tx.commit-ok)."""
    d = session.broker.durability
    session.hold = Hold(ch_id, request, method, then)
    worker = session.transport.worker
    d.barrier(lambda err: worker.submit(resume, session, err))


def resume(session: Session, err: Exception | None) -> None:
    """On the connection's worker, after the barrier: reply, then handle what was parked
    (without a reply for a hold of ``hand_over``)."""
    h = session.hold
    session.hold = None
    if h is None or session.proto.state == pconn.CLOSED:
        return
    session.standing_in = False  # (on the worker)
    try:
        if h.method is not None and session.proto.state == pconn.OPEN:
            if err is not None:
                session.channel_error(h.ch_id, AMQPChannelError(
                    _spec.INTERNAL_ERROR, f"INTERNAL_ERROR - journal write failed: {err}",
                    h.request.CLASS_ID, h.request.METHOD_ID))
            else:
                session.send_method(h.ch_id, h.method)
                if h.then is not None:
                    h.then()
    finally:  # whatever happened, what was parked is handled (never a stuck connection)
        session._receive(h.frames, h.events, h.error)
