"""``/api/queues``: listing, declaring, deleting, purging, and ``POST .../get``.

Each endpoint is ``fn(api, req, **path_args) -> Response``; ``api`` is the shared
:class:`~..api.API` (visibility, listings, counters)."""

from __future__ import annotations

import base64
import functools
import logging
from typing import TYPE_CHECKING, Any

import syncmq.management.state as state
import syncmq.management.validate as validate
import syncmq.management.view as view

from ...broker.message import Message
from ...broker.queue import Queue
from ...wire import _spec
from ...wire.errors import AMQPChannelError, AMQPConnectionError
from .. import access
from ..common import (
    _QUEUE_SORTS,
    Request,
    Response,
    _amqp_error,
    _LiveQueues,
    _submit,
    jsonable,
)
from ..errors import HTTPError, access_refused, bad_request, not_found
from . import connections
from .overview import is_this_node

if TYPE_CHECKING:
    from ..api import API

log = logging.getLogger("syncmq.management")


ACK_MODES = ("ack_requeue_true", "ack_requeue_false", "reject_requeue_true",
             "reject_requeue_false")


def _properties_json(message: Message) -> dict[str, Any] | list:
    """The message's properties; none is ``[]``, as RabbitMQ writes an empty proplist (and
    rabbitmqadmin then shows an empty ``properties`` column)."""
    p = message.props
    return {f: jsonable(v) for f in _spec.BasicProperties.FIELDS
            if (v := getattr(p, f)) is not None} or []


def _message_json(message: Message, redelivered: bool, remaining: int, encoding: str,
                  truncate: int | None) -> dict[str, Any]:
    """One message of a ``/get`` answer, in RabbitMQ's shape."""
    data = message.body if message.body is not None else message.load_body()
    size = len(data)
    if truncate is not None:
        data = data[:max(0, truncate)]
    payload, how = None, "base64"
    if encoding == "auto":
        try:
            payload, how = bytes(data).decode("utf-8"), "string"
        except UnicodeDecodeError:
            pass
    if payload is None:
        payload = base64.b64encode(data).decode()
    return {"payload_bytes": size, "redelivered": redelivered, "exchange": message.exchange,
            "routing_key": message.routing_key, "message_count": remaining,
            "properties": _properties_json(message), "payload": payload,
            "payload_encoding": how}


def _queue_json(api: API, q: Queue) -> dict[str, Any]:
    ready, unacked = view.depth(q)
    counts = api.rates.monotonic(("queue", q.vhost, q.name), state.queue_counts(q))
    depth = {"messages": ready + unacked, "messages_ready": ready,
             "messages_unacknowledged": unacked}
    depth_rates = api.rates.rates(("depth", q.vhost, q.name), depth)
    consumers = list(q.consumers)
    exclusive_tag = next((c.tag for c in consumers if c.exclusive), None)
    return {
        "name": q.name,
        "vhost": q.vhost,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive_owner is not None,
        "arguments": jsonable(q.arguments),
        "node": api.ctx.node,
        "state": "running",
        "type": view.queue_type(q),
        "policy": q.policy.name if q.policy is not None else None,
        "operator_policy": q.op_policy.name if q.op_policy is not None else None,
        "effective_policy_definition": q.effective,
        "exclusive_consumer_tag": exclusive_tag,
        "consumers": len(consumers),
        "consumer_utilisation": view.consumer_utilisation(q),
        "consumer_capacity": view.consumer_utilisation(q),
        "memory": 1024 + 96 * (ready + unacked),  # bookkeeping estimate, not bodies
        **state.with_details(depth, depth_rates),
        "message_stats": state.with_details(
            counts, api.rates.rates(("queue", q.vhost, q.name), counts)),
        **_bytes_and_idle(api, q),
    }


def _bytes_and_idle(api: API, q: Queue) -> dict[str, Any]:
    """``message_bytes*``, ``messages_persistent`` and (when idle) ``idle_since``."""
    out: dict[str, Any] = view.queue_bytes(q)
    idle = api.idle.since(q, view.queue_activity(q))
    if idle is not None:
        out["idle_since"] = idle
    return out


def queues(api: API, req: Request, vhost: str | None = None) -> Response:
    qs = [q for vh in api.visible_vhosts(req, vhost)
          for q in sorted(list(vh.queues.values()), key=lambda q: q.name)]
    if vhost is None:
        api.rates.forget_missing(("queue", "depth"), _LiveQueues(api.ctx.broker.vhosts))
    return api.listing(req, qs, lambda q: q.name,
                       functools.partial(_queue_json, api), _QUEUE_SORTS)


def queue(api: API, req: Request, vhost: str, name: str) -> Response:
    vh, q = api.get_queue(req, vhost, name)
    out = _queue_json(api, q)
    # RabbitMQ's ?lengths_age=&msg_rates_age= samples, for the queue page's charts
    key = (q.vhost, q.name)
    depth = {k: out[k] for k in ("messages", "messages_ready", "messages_unacknowledged")}
    depth.update({k + "_details": out[k + "_details"] for k in list(depth)})
    out.update(api.with_samples(req, depth, "lengths", False, key))
    api.with_samples(req, out["message_stats"], "msg_rates", True, key)
    out["consumer_details"] = [
        c for c in connections._consumer_list(api, [vh]) if c["queue"]["name"] == name
    ]
    return Response(200, out)


def put_queue(api: API, req: Request, vhost: str, name: str) -> Response:
    """Declare as the user (``access``: configure on the queue), as RabbitMQ's: an unknown
    vhost is 404 ``vhost_not_found``; the body's shape is checked before the access."""
    vh = api.vhost_or_404(vhost, "vhost_not_found")
    body = validate.obj(req.body)
    validate.name(name, "queue")
    # a field left out is false, as RabbitMQ 3.10's API reads it (rabbitmqadmin always
    # sends durable; the dashboard sends both)
    durable = validate.boolean(body, "durable", False)
    auto_delete = validate.boolean(body, "auto_delete", False)
    args = validate.arguments(body)
    node = body.get("node")
    if node is not None and not (isinstance(node, str) and is_this_node(api.ctx, node)):
        raise bad_request(f"Node {node} could not be contacted")
    access.resource(req, vhost, [("configure", "queue", name)])
    if name.startswith("amq."):  # RabbitMQ's channel refuses it (403): 401 here, as there
        raise access_refused()
    try:
        _, created = vh.declare_queue(name, False, durable, False, auto_delete, args, None)
    except (AMQPChannelError, AMQPConnectionError) as e:
        raise _amqp_error(e) from None
    return Response(201 if created else 204)


def delete_queue(api: API, req: Request, vhost: str, name: str) -> Response:
    vh, q = api.get_queue(req, vhost, name)
    access.resource(req, vhost, [("configure", "queue", name)])
    try:
        # As RabbitMQ's management plugin: an exclusive queue can be deleted from here.
        result = vh.delete_queue(name, req.query.get("if-unused") == "true",
                                 req.query.get("if-empty") == "true", q.exclusive_owner)
    except AMQPChannelError as e:
        raise _amqp_error(e) from None
    if result is None:
        raise not_found()
    for c in result[1]:
        _submit(c.channel.session, c.channel.consumer_cancelled, c)
    return Response(204)


def purge_queue(api: API, req: Request, vhost: str, name: str) -> Response:
    _, q = api.get_queue(req, vhost, name)
    access.resource(req, vhost, [("read", "queue", name)])
    q.purge()
    return Response(204)


def get_messages(api: API, req: Request, vhost: str, name: str) -> Response:
    """RabbitMQ's ``POST /api/queues/{vh}/{q}/get``: take up to ``count`` messages from
    the head, as basic.get without no-ack, then settle them by ``ackmode`` (``*_requeue_true``
    puts them back where they were, marked redelivered, so a look changes no order).
    Body: ``{count, ackmode, encoding: auto|base64, truncate}``. As the user: read on
    the queue (refused, or a missing queue, with RabbitMQ's channel texts)."""
    text = access.refused_text(req, vhost)
    access.resource(req, vhost, [("read", "queue", name)],
                    lambda *r: HTTPError(401, "not_authorised", text(*r)))
    vh = api.ctx.broker.vhosts.get(vhost)
    q = vh.queues.get(name) if vh is not None else None
    if q is None:
        raise HTTPError(404, "not_found", f"NOT_FOUND - no queue '{name}' in vhost '{vhost}'")
    body = validate.require(req.body, "ackmode", "count")
    ackmode = body.get("ackmode")
    if ackmode not in ACK_MODES:
        raise bad_request("ackmode must be one of " + ", ".join(ACK_MODES))
    encoding = body.get("encoding", "auto")
    if encoding not in ("auto", "base64"):
        raise bad_request("encoding must be 'auto' or 'base64'")
    try:
        count = int(body.get("count", 1))
        truncate = body.get("truncate")
        truncate = int(truncate) if truncate not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        raise bad_request("count and truncate must be integers") from None
    if isinstance(body["count"], bool) or count > 100_000:
        raise bad_request("count must be an integer up to 100000")
    taken: list[tuple[int, Message]] = []
    out = []
    try:
        for _ in range(max(0, count)):
            got = q.get(False)
            if got is None:
                break
            seq, message, redelivered, remaining = got
            taken.append((seq, message))
            out.append(_message_json(message, redelivered, remaining, encoding, truncate))
    finally:
        if taken:
            if ackmode.endswith("requeue_true"):
                q.requeue(taken)
            else:
                q.settle(taken, rejected=ackmode.startswith("reject"))
    return Response(200, out)
