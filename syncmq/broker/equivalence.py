"""Declaring what exists: RabbitMQ's equivalence checks (rabbit_misc:assert_args_equivalence,
rabbit_exchange/rabbit_amqqueue assert_equivalence) and their 406 texts. Pure functions of the
existing object and the declare; the vhost calls them under its lock."""

from __future__ import annotations

from typing import Any

from ..wire import _spec
from ..wire.errors import AMQPChannelError
from ..wire.fields import Long
from .args import precondition_failed
from .federation import FEDERATION_UPSTREAM, MAX_HOPS_ARG

# The x-arguments RabbitMQ 3.10 compares when a classic queue is redeclared, in its order
# (rabbit_amqqueue declare_args, less those a classic queue ignores: x-max-in-memory-*,
# x-dead-letter-strategy, the quorum/stream ones); any other argument may differ.
EQUIVALENT_QUEUE_ARGS = (
    "x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
    "x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow", "x-queue-mode",
    "x-single-active-consumer", "x-queue-type", "x-queue-master-locator",
)


def _b(v: bool) -> str:
    return "true" if v else "false"


def check_equivalent_exchange(vhost: str, ex: Any, type_: str, durable: bool, auto_delete: bool,
                              internal: bool, arguments: dict | None) -> None:
    """exchange.declare of an existing exchange: the flags, then the type's arguments
    (rabbit_exchange:assert_equivalence), 406 with RabbitMQ's texts."""
    for arg, got, cur in (
        ("type", type_, ex.type),
        ("durable", durable, ex.durable),
        ("auto_delete", auto_delete, ex.auto_delete),
        ("internal", internal, ex.internal),
    ):
        if got != cur:
            g, c = (_b(got), _b(cur)) if isinstance(got, bool) else (got, cur)
            raise AMQPChannelError(
                _spec.PRECONDITION_FAILED,
                f"PRECONDITION_FAILED - inequivalent arg '{arg}' for exchange "
                f"'{ex.name}' in vhost '{vhost}': received '{g}' but current is '{c}'",
            )
    # the type's assert_args_equivalence: alternate-exchange for the built-in types,
    # x-max-hops alone for x-federation-upstream
    keys = (MAX_HOPS_ARG,) if ex.type == FEDERATION_UPSTREAM else ("alternate-exchange",)
    check_equivalent_args(vhost, f"exchange '{ex.name}'", ex.arguments, arguments or {},
                                keys)

def check_equivalent_args(vhost: str, what: str, current: dict, got: dict, keys) -> None:
    """rabbit_misc:assert_args_equivalence: the first of ``keys`` (in that order) whose
    value differs is 406 with RabbitMQ's text; other arguments are not compared."""
    for key in keys:
        if got.get(key) != current.get(key):
            raise precondition_failed(
                f"inequivalent arg '{key}' for {what} in vhost '{vhost}': received "
                f"{_fmt_arg(got.get(key), key in current)} but current is "
                f"{_fmt_arg(current.get(key), key in got)}")


def check_equivalent_queue(vhost: str, q: Any, durable: bool, auto_delete: bool,
                           arguments: dict | None) -> None:
    """queue.declare of an existing queue: durable and auto_delete, then the arguments
    RabbitMQ compares (``EQUIVALENT_QUEUE_ARGS``), 406 with RabbitMQ's texts."""
    for arg, got, cur in (
        ("durable", durable, q.durable),
        ("auto_delete", auto_delete, q.auto_delete),
    ):
        if got != cur:
            raise AMQPChannelError(
                _spec.PRECONDITION_FAILED,
                f"PRECONDITION_FAILED - inequivalent arg '{arg}' for queue '{q.name}' in "
                f"vhost '{vhost}': received '{_b(got)}' but current is '{_b(cur)}'",
            )
    args, current = arguments or {}, q.arguments
    if args.get("x-queue-type", "classic") == current.get("x-queue-type", "classic"):
        # an absent x-queue-type is the default type, classic (RabbitMQ 3.10)
        args = {k: v for k, v in args.items() if k != "x-queue-type"}
        current = {k: v for k, v in current.items() if k != "x-queue-type"}
    check_equivalent_args(vhost, f"queue '{q.name}'", current, args, EQUIVALENT_QUEUE_ARGS)


def _fmt_arg(v: Any, both: bool = True) -> str:
    """rabbit_misc ``val/1``: ``none`` when absent; ``'V'`` when both sides have the argument;
    ``the value 'V' of type 'T'`` when only this side has it. The wire type is not kept, so
    it is the one pika, py-amqp and amqp091-go pick for the Python value."""
    if v is None:
        return "none"
    text = ("true" if v else "false") if isinstance(v, bool) else v
    if not both:
        return f"the value '{text}' of type '{_amqp_type(v)}'"
    return f"'{text}'"


def _amqp_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if type(v) is Long:
        return "long"
    if isinstance(v, int):
        return "signedint" if -2 ** 31 <= v < 2 ** 31 else "long"
    if isinstance(v, float):
        return "double"
    if isinstance(v, dict):
        return "table"
    if isinstance(v, list):
        return "array"
    if isinstance(v, (bytes, bytearray)):
        return "binary"
    return "longstr"
