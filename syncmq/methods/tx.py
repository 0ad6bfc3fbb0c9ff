"""tx.* handlers: select, commit, rollback (publishes and acks applied atomically on commit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire import _spec
from ..wire.errors import AMQPChannelError
from .basic import route

if TYPE_CHECKING:
    from .session import Channel, Session

T = _spec.Tx


def _not_transactional() -> AMQPChannelError:
    return AMQPChannelError(
        _spec.PRECONDITION_FAILED, "PRECONDITION_FAILED - channel is not transactional"
    )


def select(session: Session, ch: Channel, m: T.Select, _p, _b) -> None:
    if ch.confirm:
        raise AMQPChannelError(
            _spec.PRECONDITION_FAILED,
            "PRECONDITION_FAILED - cannot switch from confirm to tx mode",
        )
    if not ch.tx:
        ch.tx = True
        ch.tx_publishes, ch.tx_acks = [], {}
    session.send_method(ch.id, T.SelectOk())


def commit(session: Session, ch: Channel, m: T.Commit, _p, _b) -> None:
    if not ch.tx:
        raise _not_transactional()
    publishes, acks = ch.tx_publishes, ch.tx_acks
    ch.tx_publishes, ch.tx_acks = [], {}
    # As RabbitMQ: the publishes first, then the acks/rejects (collected and checked when
    # they arrived, see basic._tx_collect, so nothing here can fail half-way).
    journaled = False
    for ex, message, mandatory in publishes:
        journaled |= route(session, ch, ex, message, mandatory).journaled
    settled: list = []
    rejected: list = []
    requeued: list = []
    for tag, requeue in acks.items():
        try:
            entries = ch.take_unacked(tag, False)
        except AMQPChannelError:
            continue  # requeued meanwhile by basic.recover
        (requeued if requeue else rejected if requeue is None else settled).extend(entries)
    if settled:
        ch.settle(settled, requeue=False)
    if rejected:
        ch.settle(rejected, requeue=False, reject=True)
    if requeued:
        ch.settle(requeued, requeue=True)
    if journaled:
        # commit-ok only once the persistent publishes are on disk
        session.after_journal_sync(lambda err: _commit_ok(session, ch, err))
    else:
        session.send_method(ch.id, T.CommitOk())


def _commit_ok(session: Session, ch: Channel, err: Exception | None) -> None:
    """On the connection's worker, after the journal barrier of a commit."""
    if ch.closing:
        return
    if err is not None:
        session.channel_error(ch.id, AMQPChannelError(
            _spec.INTERNAL_ERROR, f"INTERNAL_ERROR - journal write failed: {err}",
            T.Commit.CLASS_ID, T.Commit.METHOD_ID))
        return
    session.send_method(ch.id, T.CommitOk())


def rollback(session: Session, ch: Channel, m: T.Rollback, _p, _b) -> None:
    if not ch.tx:
        raise _not_transactional()
    ch.tx_publishes, ch.tx_acks = [], {}
    session.send_method(ch.id, T.RollbackOk())


HANDLERS = {
    T.Select.INDEX: select,
    T.Commit.INDEX: commit,
    T.Rollback.INDEX: rollback,
}
