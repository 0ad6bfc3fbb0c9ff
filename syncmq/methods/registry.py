"""The explicit table of method handlers, keyed by method index (class id << 16 | method id).

A method a client may not send (``basic.deliver``, ``connection.start``, ...) has no entry; the
session answers it with a connection error.
"""

from __future__ import annotations

from . import basic, channel, confirm, connection, exchange, queue, tx

HANDLERS: dict = {}
for _module in (connection, channel, exchange, queue, basic, tx, confirm):
    for _index, _fn in _module.HANDLERS.items():
        assert _index not in HANDLERS, _index
        HANDLERS[_index] = _fn
