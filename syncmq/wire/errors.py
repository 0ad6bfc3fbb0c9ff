"""The broker's error types.

Every failure that a peer can cause maps to a spec reply code. A *channel* error (soft error,
403/404/405/406) closes one channel; a *connection* error (hard error, 320/402/501/502/503/504/
505/506/530/540/541) closes the whole connection. Both carry the class and method id of the
method that caused them (0/0 when no method was involved, e.g. a malformed frame).

The codec raises only :class:`AMQPConnectionError` (usually 501 FRAME_ERROR or 502 SYNTAX_ERROR):
"input parses or raises the protocol error, nothing else".
"""

from __future__ import annotations


class AMQPError(Exception):
    """Base of the broker's protocol errors; carries what the close method needs.

    ``no_method``: reported with class and method 0 even though a method was being handled
    (RabbitMQ's errors that name no method, e.g. rabbit_reader's channel limits)."""

    no_method = False

    def __init__(self, reply_code: int, reply_text: str, class_id: int = 0, method_id: int = 0):
        super().__init__(reply_code, reply_text, class_id, method_id)
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id

    def __str__(self) -> str:
        return f"{self.reply_code} {self.reply_text}"


class AMQPConnectionError(AMQPError):
    """A hard error: the connection is closed with connection.close."""


class AMQPChannelError(AMQPError):
    """A soft error: the channel is closed with channel.close."""
