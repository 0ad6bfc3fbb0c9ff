"""confirm.select: publisher confirms (acks batched per frame batch, see Session)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire import _spec
from ..wire.errors import AMQPChannelError

if TYPE_CHECKING:
    from .session import Channel, Session


def select(session: Session, ch: Channel, m: _spec.Confirm.Select, _p, _b) -> None:
    if ch.tx:
        raise AMQPChannelError(
            _spec.PRECONDITION_FAILED,
            "PRECONDITION_FAILED - cannot switch from tx to confirm mode",
        )
    ch.confirm = True
    if not m.nowait:
        session.send_method(ch.id, _spec.Confirm.SelectOk())


HANDLERS = {_spec.Confirm.Select.INDEX: select}
