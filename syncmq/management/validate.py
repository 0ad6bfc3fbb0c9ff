"""Checks of management request bodies: each bad value is a 400 in RabbitMQ's error shape
(``HTTPError``), raised before anything is changed. JSON decoding and its depth limit are
done by :mod:`.wsgi`; here a decoded body is checked for the shapes an endpoint needs.
"""

from __future__ import annotations

from typing import Any

from ..wire.fields import Long
from .errors import HTTPError, bad_request

INT64 = (-(1 << 63), (1 << 63) - 1)


def obj(body: Any) -> dict[str, Any]:
    """The body as an object (no body: ``{}``); anything else is RabbitMQ's ``not_json``."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise bad_request("not_json")
    return body


def key_missing(keys: list[str]) -> HTTPError:
    """RabbitMQ's answer for missing mandatory keys (Erlang's ``~p`` of the list, which
    puts one key a line once the list is longer than a line)."""
    items = [f"{{key_missing,{k}}}" for k in keys]
    text = "[" + ",".join(items) + "]"
    if len(text) > 72:  # where RabbitMQ 3.10 (Erlang ~p) breaks the list into lines
        text = "[" + ",\n ".join(items) + "]"
    return bad_request(text)


def require(body: Any, *keys: str) -> dict[str, Any]:
    """The body as an object holding every one of ``keys`` (400 naming those missing)."""
    d = obj(body)
    missing = [k for k in keys if k not in d]
    if missing:
        raise key_missing(missing)
    return d


def boolean(d: dict[str, Any], key: str, default: bool) -> bool:
    """A JSON boolean or the string rabbitmqadmin sends (``"true"``/``"false"``), as
    rabbit_mgmt_util's parse_bool; anything else (``null`` included) is its 400 with the
    reason ``["not_boolean", value]``."""
    if key not in d:
        return default
    v = d[key]
    if v in ("true", "false"):
        return v == "true"
    if not isinstance(v, bool):
        raise HTTPError(400, "bad_request", ["not_boolean", v])
    return v


def string(d: dict[str, Any], key: str, default: str | None = None) -> str:
    v = d.get(key, default)
    if not isinstance(v, str):
        raise bad_request(f"{key} must be a string")
    return v


def arguments(d: dict[str, Any], key: str = "arguments") -> dict[str, Any]:
    """An AMQP field table from JSON, typed as rabbit_mgmt_util's ``args`` types it: strings,
    booleans, integers as ``long`` (64-bit, :class:`~syncmq.wire.fields.Long`), numbers as
    doubles, lists and objects of those (nesting is bounded by the JSON decoder); a null
    anywhere is RabbitMQ's 400 ``null_not_allowed``."""
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise bad_request(f"{key} must be an object")
    return _typed(v, key)


def _typed(x: Any, key: str) -> Any:
    """``x`` with its integers as ``Long`` (see :func:`arguments`)."""
    if isinstance(x, dict):
        for k in x:
            if len(k.encode()) > 255:
                raise bad_request(f"{key}: a key is longer than 255 bytes")
        return {k: _typed(y, key) for k, y in x.items()}
    if isinstance(x, list):
        return [_typed(y, key) for y in x]
    if x is None:
        raise bad_request("null_not_allowed")
    if isinstance(x, int) and not isinstance(x, bool):
        if not INT64[0] <= x <= INT64[1]:
            raise bad_request(f"{key}: integer out of range")
        return Long(x)
    return x


def name(value: str, what: str) -> str:
    """A queue, exchange, user or vhost name: at most 255 bytes (AMQP's shortstr)."""
    if len(value.encode("utf-8", "surrogatepass")) > 255:
        raise bad_request(f"{what} name is longer than 255 bytes")
    return value
