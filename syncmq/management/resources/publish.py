"""``POST /api/exchanges/{vhost}/{name}/publish``: the HTTP side of a publish (body validation, the user_id check), then one call into the broker.

Each endpoint is ``fn(api, req, **path_args) -> Response``; ``api`` is the shared
:class:`~..api.API` (visibility, listings, counters)."""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from typing import TYPE_CHECKING, Any

import syncmq.management.validate as validate

from ...broker.message import Message
from ...broker.publish import publish as broker_publish
from ...broker.user_rules import topic_refusal
from ...wire import _spec
from .. import access
from ..common import (
    Request,
    Response,
)
from ..errors import access_refused, bad_request

if TYPE_CHECKING:
    from ..api import API

log = logging.getLogger("syncmq.management")


_INT_PROPERTIES = ("delivery_mode", "priority", "timestamp")


def _encode_properties(props: Any) -> bytes:
    """The JSON ``properties`` of a publish request as encoded AMQP basic properties."""
    if not isinstance(props, dict):
        raise bad_request("properties must be an object")
    kwargs: dict[str, Any] = {}
    for k, v in props.items():
        if k not in _spec.BasicProperties.FIELDS:
            raise bad_request(f"unknown property '{k}'")
        if v is None or v == "":
            continue
        if k in _INT_PROPERTIES:
            try:
                v = int(v)
            except (TypeError, ValueError):
                raise bad_request(f"property '{k}' must be an integer") from None
        elif k == "headers":
            if not isinstance(v, dict):
                raise bad_request("headers must be an object")
        elif not isinstance(v, str):
            raise bad_request(f"property '{k}' must be a string")
        kwargs[k] = v
    try:
        return _spec.BasicProperties(**kwargs).encode()
    except Exception as e:  # a value out of range for its AMQP type
        raise bad_request(f"bad properties: {e}") from None


def publish(api: API, req: Request, vhost: str, name: str) -> Response:
    """Publish one message, as RabbitMQ's ``POST /api/exchanges/{vh}/{x}/publish``:
    body ``{routing_key, payload, payload_encoding: string|base64, properties}``;
    answers ``{"routed": bool}`` (true when at least one queue took it). It is the
    broker's one publish (``broker.publish``): persistent messages reaching durable
    queues are journaled (once) and the answer waits for their fsync; a publish a queue
    refused (``x-overflow: reject-publish``) is RabbitMQ's 400."""
    text = access.refused_text(req, vhost)
    access.resource(req, vhost, [("write", "exchange", "" if name == "amq.default" else name)],
                    lambda *r: bad_request("403 " + text(*r)))
    vh = api.ctx.broker.vhosts.get(vhost)
    if vh is None:  # permissions left on a vhost being deleted
        raise access_refused()
    ex = vh.exchanges.get("" if name == "amq.default" else name)
    if ex is None:
        raise bad_request(f"404 NOT_FOUND - no exchange '{name}' in vhost '{vhost}'")
    body = validate.require(req.body, "routing_key", "properties", "payload",
                            "payload_encoding")
    rk, payload = body["routing_key"], body["payload"]
    encoding = body["payload_encoding"]
    if not isinstance(rk, str) or not isinstance(payload, str):
        raise bad_request("routing_key and payload must be strings")
    if len(rk.encode("utf-8", "surrogatepass")) > 255:
        raise bad_request("routing_key is longer than 255 bytes")
    if encoding == "string":
        data = payload.encode("utf-8")
    elif encoding == "base64":
        try:
            data = base64.b64decode(payload, validate=True)
        except (ValueError, binascii.Error):
            raise bad_request("payload is not valid base64") from None
    else:
        raise bad_request("payload_encoding must be 'string' or 'base64'")
    if ex.internal:
        raise access_refused()
    if ex.type == "topic":  # the HTTP user's topic permission, as RabbitMQ's channel checks
        t = req.user.topic_permission(vh.name, ex.name)
        if t is not None and not t.allows("write", rk):
            raise bad_request("403 " + topic_refusal(rk, ex.name, vh.name, req.user.name))
    props = body["properties"]
    if isinstance(props, dict) and props.get("user_id") not in (None, ""):
        refusal = req.user.user_id_refusal(props["user_id"])
        if refusal:
            raise bad_request(f"406 PRECONDITION_FAILED - {refusal}")
    message = Message(ex.name, rk, _encode_properties(props or {}), data)
    # the broker's one publish; as RabbitMQ's publish through a confirm channel, a nack (a
    # queue's reject-publish, the journal's failure) is a 400 and an ack waits for the
    # journal's fsync
    result = broker_publish(vh, ex, message, must_journal=True)
    if result.rejected or result.dropped or (
            result.journaled and not _journal_synced(vh.durability)):
        raise bad_request("rejected Unable to publish message. Check queue limits.")
    return Response(200, {"routed": result.routed})


def _journal_synced(durability: Any, timeout: float = 30.0) -> bool:
    """Wait (on the HTTP server's thread) for a journal barrier: True once what was appended
    before it is fsynced, False if the journal failed (or did not answer in ``timeout``)."""
    done = threading.Event()
    errors: list = []

    def fired(err: Exception | None) -> None:
        if err is not None:
            errors.append(err)
        done.set()

    durability.barrier(fired)
    return done.wait(timeout) and not errors
