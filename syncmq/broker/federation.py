"""The ``x-federation-upstream`` exchange type: what RabbitMQ's federation plugin declares on
its upstream, so that a RabbitMQ node (or cluster) can federate an exchange from syncmq.

A federation link from a downstream RabbitMQ (``rabbit_federation_exchange_link``, 3.10)
declares on the upstream, per federated exchange: the upstream exchange itself (passive
first, then as the downstream declared it), a durable queue ``federation: X -> <downstream
cluster>`` (``x-expires``/``x-message-ttl`` from the upstream's settings,
``x-internal-purpose``), an internal, durable, auto-delete exchange of this type named after
the queue with a `` A``/`` B`` suffix, bound to the queue, and one exchange-to-exchange binding
from the upstream exchange to it per distinct binding key on the downstream (its arguments
carry ``x-bound-from``, a list of tables). The plugin consumes the queue and forwards to the
downstream exchange, acking upstream after the downstream confirmed (``on-confirm``).

The exchange routes like fanout, but drops what the downstream already saw
(``rabbit_federation_upstream_exchange:route`` and ``rabbit_federation_util:should_forward``):
a message whose ``x-received-from`` header is an array that already has ``x-max-hops``
entries, or has an entry (a table) whose ``cluster-name`` and ``vhost`` equal this exchange's
``x-downstream-name`` and ``x-downstream-vhost``, reaches no destination. Any other header
value (absent, not an array) is forwarded. Without this type the plugin falls back to a plain
fanout exchange (it retries on a 503 ``unknown exchange type``): messages still arrive, but
every one makes the trip and is dropped downstream by the same test.

Declaring one needs ``x-max-hops`` (406 ``Argument x-max-hops missing`` / ``must be of type
long``, RabbitMQ's texts); a redeclaration compares ``x-max-hops`` only (RabbitMQ's
``assert_args_equivalence`` for this type). **Difference**: RabbitMQ requires the field-table
type ``l`` (long); syncmq's tables keep no wire type, so any integer is accepted (the plugin
sends ``l``; pika sends a small int as ``I``, which RabbitMQ refuses and syncmq accepts).

Pure functions and constants: no locks, no state.
"""

from __future__ import annotations

from typing import Any

from ..wire.fields import Long
from .args import precondition_failed

FEDERATION_UPSTREAM = "x-federation-upstream"
DESCRIPTION = "Federation upstream helper exchange"
ROUTING_HEADER = "x-received-from"
MAX_HOPS_ARG = "x-max-hops"
DOWNSTREAM_NAME_ARG = "x-downstream-name"
DOWNSTREAM_VHOST_ARG = "x-downstream-vhost"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_arguments(arguments: dict | None) -> None:
    """406 with RabbitMQ's text unless ``x-max-hops`` is there and an integer (``validate``
    of the exchange type, run when the exchange is created, never on a redeclaration)."""
    args = arguments or {}
    if MAX_HOPS_ARG not in args:
        raise precondition_failed(f"Argument {MAX_HOPS_ARG} missing")
    if not _is_int(args[MAX_HOPS_ARG]):
        raise precondition_failed(f"Argument {MAX_HOPS_ARG} must be of type long")


def typed_arguments(arguments: dict) -> dict:
    """``arguments`` with ``x-max-hops`` as a ``Long``: what RabbitMQ holds (it accepts only
    a long), so that it is encoded back as one and named ``long`` in 406 texts."""
    hops = arguments.get(MAX_HOPS_ARG)
    if _is_int(hops) and type(hops) is not Long:
        return {**arguments, MAX_HOPS_ARG: Long(hops)}
    return arguments


def link_params(arguments: dict | None) -> tuple[int, Any, Any]:
    """``(max_hops, downstream_name, downstream_vhost)`` of an exchange of this type; a
    missing or non-string name/vhost is None (RabbitMQ's ``unknown``: matches no entry).
    ``max_hops`` is 0 if missing (only a recovered, never-validated exchange lacks it)."""
    args = arguments or {}
    hops = args.get(MAX_HOPS_ARG)
    name = args.get(DOWNSTREAM_NAME_ARG)
    vhost = args.get(DOWNSTREAM_VHOST_ARG)
    return (hops if _is_int(hops) else 0,
            name if isinstance(name, str) else None,
            vhost if isinstance(vhost, str) else None)


def should_forward(headers: dict | None, max_hops: int, dname: Any, dvhost: Any) -> bool:
    """Whether a message with ``headers`` goes on (see the module docstring). O(entries)."""
    if not headers:
        return True
    seen = headers.get(ROUTING_HEADER)
    if not isinstance(seen, list):
        return True
    if len(seen) >= max_hops:
        return False
    if dname is None or dvhost is None:
        return True  # "unknown" never equals a header's string
    for entry in seen:
        if isinstance(entry, dict) and entry.get("cluster-name") == dname and \
                entry.get("vhost") == dvhost:
            return False
    return True
