"""Queue and consumer ``x-`` arguments: RabbitMQ's validation, texts and defaults.

RabbitMQ (``rabbit_amqqueue:declare_args/0``, ``consume_args/0``) checks each known argument
in a fixed order and fails the declare with 406 PRECONDITION_FAILED and the text
``invalid arg '<key>' for queue '<name>' in vhost '<vhost>': <reason>``, where the reason is an
Erlang term printed with ``~p`` (``{value_negative,-1}``, ``"expected integer, got longstr"``).
Arguments it does not know are ignored, as RabbitMQ does.

Field-table values arrive decoded, so the wire type is inferred back from the Python type for
the texts (an int within 32 bits was a ``signedint``, as pika and most clients encode it).
"""

from __future__ import annotations

import datetime
import decimal
from dataclasses import dataclass
from typing import Any

from ..wire import _spec
from ..wire.errors import AMQPChannelError
from ..wire.fields import Long
from .message import MAX_EXPIRY

MAX_PRIORITY = 255  # RabbitMQ's ?MAX_SUPPORTED_PRIORITY
OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_TYPES = ("classic", "quorum", "stream")
REPLY_TO = "amq.rabbitmq.reply-to"


def wire_type(v: Any) -> str:
    """RabbitMQ's name for the field-table type ``v`` was (most likely) sent as."""
    if isinstance(v, bool):
        return "bool"
    if type(v) is Long:  # a JSON number from the management API, typed long as RabbitMQ's
        return "long"
    if isinstance(v, int):
        return "signedint" if -2**31 <= v < 2**31 else "long"
    if isinstance(v, str):
        return "longstr"
    if isinstance(v, float):
        return "double"
    if isinstance(v, bytes | bytearray):
        return "binary"
    if isinstance(v, decimal.Decimal):
        return "decimal"
    if isinstance(v, datetime.datetime):
        return "timestamp"
    if isinstance(v, dict):
        return "table"
    if isinstance(v, list | tuple):
        return "array"
    return "void"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(v: Any) -> str | None:
    if _is_int(v):
        return None
    return f'"expected integer, got {wire_type(v)}"'


def _non_neg_int(v: Any, _args: dict) -> str | None:
    err = _int(v)
    if err is None and v < 0:
        return f"{{value_negative,{v}}}"
    return err


def _expiry(v: int) -> str | None:
    if v < 0:
        return f"{{value_negative,{v}}}"
    if v > MAX_EXPIRY:
        return f"{{value_too_large,{v}}}"
    return None


def _expires(v: Any, _args: dict) -> str | None:
    err = _int(v)
    if err is not None:
        return err
    if v == 0:
        return "{value_zero,0}"
    return _expiry(v)


def _message_ttl(v: Any, _args: dict) -> str | None:
    err = _int(v)
    return err if err is not None else _expiry(v)


def _dlx(v: Any, _args: dict) -> str | None:
    return None if isinstance(v, str) else f"{{unacceptable_type,{wire_type(v)}}}"


def _dlrk(v: Any, args: dict) -> str | None:
    if not isinstance(v, str):
        return f"{{unacceptable_type,{wire_type(v)}}}"
    if "x-dead-letter-exchange" not in args:
        return "routing_key_but_no_dlx_defined"
    return None


def _max_priority(v: Any, args: dict) -> str | None:
    err = _non_neg_int(v, args)
    if err is None and v > MAX_PRIORITY:
        return f"{{max_value_exceeded,{v}}}"
    return err


def _one_of(values: tuple[str, ...], invalid) -> Any:
    def check(v: Any, _args: dict) -> str | None:
        if not isinstance(v, str):
            return f"{{unacceptable_type,{wire_type(v)}}}"
        return None if v in values else invalid(v)
    return check


def _bool(v: Any, _args: dict) -> str | None:
    return None if isinstance(v, bool) else f"{{unacceptable_type,{wire_type(v)}}}"


def _initial_size(v: Any, args: dict) -> str | None:
    err = _non_neg_int(v, args)
    if err is None and v == 0:
        return "{value_zero,0}"
    return err


DECLARE_ARGS = (
    ("x-expires", _expires),
    ("x-message-ttl", _message_ttl),
    ("x-dead-letter-exchange", _dlx),
    ("x-dead-letter-routing-key", _dlrk),
    ("x-max-length", _non_neg_int),
    ("x-max-length-bytes", _non_neg_int),
    ("x-max-in-memory-length", _non_neg_int),
    ("x-max-in-memory-bytes", _non_neg_int),
    ("x-max-priority", _max_priority),
    ("x-overflow", _one_of(OVERFLOW_MODES, lambda v: "invalid_overflow")),
    ("x-queue-mode", _one_of(("default", "lazy"), lambda v: f"\"unsupported queue mode '{v}'\"")),
    ("x-single-active-consumer", _bool),
    ("x-queue-type", _one_of(QUEUE_TYPES, lambda v: f"\"unsupported queue type '{v}'\"")),
    ("x-quorum-initial-group-size", _initial_size),
    ("x-initial-cluster-size", _initial_size),
)


def _rs(queue: str, vhost: str) -> str:
    return f"queue '{queue}' in vhost '{vhost}'"


def precondition_failed(text: str) -> AMQPChannelError:
    return AMQPChannelError(_spec.PRECONDITION_FAILED, f"PRECONDITION_FAILED - {text}")


def check_declare_arguments(queue: str, vhost: str, arguments: dict) -> None:
    """406 with RabbitMQ's text for the first invalid argument (in RabbitMQ's order)."""
    dlx = arguments.get("x-dead-letter-exchange")
    if dlx is not None and not isinstance(dlx, str):
        # checked first, by rabbit_channel's queue.declare (rabbit_misc:r_arg)
        raise precondition_failed(
            f"invalid type '{wire_type(dlx)}' for arg 'x-dead-letter-exchange' in "
            f"{_rs(queue, vhost)}")
    for key, check in DECLARE_ARGS:
        if key in arguments:
            err = check(arguments[key], arguments)
            if err is not None:
                raise precondition_failed(f"invalid arg '{key}' for {_rs(queue, vhost)}: {err}")


def check_queue_type(queue: str, vhost: str, args: dict, durable: bool, exclusive: bool,
                     auto_delete: bool) -> None:
    """406 for a queue type syncmq does not serve as asked: a quorum queue must be durable,
    not exclusive, not auto-delete (RabbitMQ's declare-time checks); a stream is refused."""
    qtype = args.get("x-queue-type")
    if qtype == "quorum":
        for bad, what in ((auto_delete, "auto-delete"), (exclusive, "exclusive-owner"),
                          (not durable, "non-durable")):
            if bad:
                raise precondition_failed(f"invalid property '{what}' for {_rs(queue, vhost)}")
    elif qtype == "stream":
        raise precondition_failed(
            f"invalid arg 'x-queue-type' for {_rs(queue, vhost)}: "
            "\"unsupported queue type 'stream'\"")


def check_consume_arguments(queue: str, vhost: str, arguments: dict) -> int:
    """Validate basic.consume arguments; returns the consumer priority (``x-priority``)."""
    if "x-priority" in arguments:
        v = arguments["x-priority"]
        err = _int(v)
        if err is not None:
            raise precondition_failed(
                f"invalid arg 'x-priority' for {_rs(queue, vhost)}: {err}")
        return v
    return 0


@dataclass(frozen=True)
class QueueOptions:
    """The parsed extension arguments of one queue (all None/False: a plain classic queue)."""

    message_ttl: int | None = None  # ms
    expires: int | None = None  # ms
    dlx: str | None = None
    dlrk: str | None = None
    max_length: int | None = None
    max_bytes: int | None = None
    overflow: str = "drop-head"
    max_priority: int | None = None
    single_active: bool = False
    queue_type: str = "classic"


PLAIN = QueueOptions()


def queue_options(arguments: dict | None) -> QueueOptions:
    """Parse (already validated, or recovered) arguments; invalid values are ignored."""
    if not arguments:
        return PLAIN

    def int_arg(key: str) -> int | None:
        v = arguments.get(key)
        return v if _is_int(v) and v >= 0 else None

    def str_arg(key: str) -> str | None:
        v = arguments.get(key)
        return v if isinstance(v, str) else None

    expires = int_arg("x-expires")
    return QueueOptions(
        message_ttl=int_arg("x-message-ttl"),
        expires=expires or None,
        dlx=str_arg("x-dead-letter-exchange"),
        dlrk=str_arg("x-dead-letter-routing-key"),
        max_length=int_arg("x-max-length"),
        max_bytes=int_arg("x-max-length-bytes"),
        overflow=arguments.get("x-overflow") if arguments.get("x-overflow") in OVERFLOW_MODES
        else "drop-head",
        max_priority=int_arg("x-max-priority"),
        single_active=arguments.get("x-single-active-consumer") is True,
        queue_type=str_arg("x-queue-type") or "classic",
    )
