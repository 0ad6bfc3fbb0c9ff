"""What the management API's resource modules share: the request and response objects,
JSON renderings of AMQP values, listing helpers (paging, filters, sorts) and the hand-off of
work to a connection's worker. Field names follow RabbitMQ's management plugin (checked
against RabbitMQ 3.10).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import syncmq.management.view as view

from ..broker.auth import User
from ..broker.queue import Queue
from ..broker.vhost import VirtualHost
from ..methods.session import Session
from .errors import HTTPError, bad_request, not_found

log = logging.getLogger("syncmq.management")

MANAGEMENT_TAGS = ("administrator", "monitoring", "management", "policymaker")
CONNECTION_FORCED = 320


@dataclass
class Request:
    method: str
    parts: list[str]  # path segments after /api, percent-decoded
    query: dict[str, str]
    body: Any
    user: User
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Response:
    status: int
    body: Any = None
    headers: list[tuple[str, str]] = field(default_factory=list)  # extra HTTP headers


def has_tag(user: User, *tags: str) -> bool:
    return any(t in user.tags for t in tags)


# ---- JSON values ----

def jsonable(v: Any) -> Any:
    """AMQP field-table values as JSON (byte strings decoded, others as text)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def quote_binding(text: str) -> str:
    """RabbitMQ's ``rabbit_mgmt_format:quote_binding``: form-style quoting (space as ``+``,
    every other byte outside ``A-Za-z0-9._-`` as ``%XX``) with ``~`` quoted too, so ``~``
    can separate the routing key from the arguments' hash."""
    return quote_plus(text, safe="").replace("~", "%7E")


def _properties_key(routing_key: str, args: dict) -> str:
    """RabbitMQ's binding id (``rabbit_mgmt_format:pack_binding_props``): the quoted routing
    key (``~`` for an empty one without arguments), plus ``~`` and a 32-bit hash of the
    arguments in URL-safe base64 without padding when there are arguments. The hash is
    RabbitMQ's shape, not its value (RabbitMQ hashes the Erlang term with ``phash2``):
    clients take the key from a listing or a ``Location`` header, never compute it."""
    if not args:
        return quote_binding(routing_key) or "~"
    canon = json.dumps(jsonable(args), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha1(canon.encode()).digest()[:4]
    return quote_binding(routing_key) + "~" + \
        base64.urlsafe_b64encode(digest).decode().rstrip("=")


PAGE_SIZE_DEFAULT = 100
PAGE_SIZE_MAX = 500  # RabbitMQ's limit for ``page_size``


def _paging(query: dict[str, str]) -> tuple[int, int] | None:
    """``(page, page_size)`` when the request asks for a page (``?page=``), else None."""
    if "page" not in query:
        return None
    try:
        page = int(query["page"])
        size = int(query.get("page_size") or PAGE_SIZE_DEFAULT)
    except ValueError:
        raise bad_request("page and page_size must be integers") from None
    if page < 1:
        raise bad_request("page must be a positive integer")
    if not 1 <= size <= PAGE_SIZE_MAX:
        raise bad_request(f"page_size must be between 1 and {PAGE_SIZE_MAX}")
    return page, size


def _name_filter(query: dict[str, str]) -> Callable[[str], bool] | None:
    """``?name=`` as a case-insensitive substring, or a regex with ``use_regex=true``."""
    name = query.get("name", "")
    if not name:
        return None
    if query.get("use_regex") == "true":
        try:
            rx = re.compile(name, re.IGNORECASE)
        except re.error as e:
            raise bad_request(f"invalid regular expression: {e}") from None
        return lambda n: rx.search(n) is not None
    low = name.lower()
    return lambda n: low in n.lower()


def _dig(obj: Any, path: str) -> Any:
    """``obj["a"]["b"]`` for ``path`` ``"a.b"`` (None where a key is missing)."""
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _sortable(v: Any) -> tuple:
    """A key that orders values of mixed types: missing first, then numbers, then text."""
    if v is None:
        return (0, 0)
    if isinstance(v, (int, float)):
        return (1, v)
    return (2, str(v))


# Queue sort keys that need no JSON rendering: a page of 10,000 queues sorted by one of
# these renders only the queues on the page.
_QUEUE_SORTS: dict[str, Callable[[Queue], Any]] = {
    "name": lambda q: q.name,
    "vhost": lambda q: (q.vhost, q.name),
    "messages_ready": view.ready,
    "messages_unacknowledged": view.unacked,
    "messages": lambda q: sum(view.depth(q)),
    "consumers": view.consumers,
}
_EXCHANGE_SORTS: dict[str, Callable[[Any], Any]] = {
    "name": lambda e: e.name,
    "vhost": lambda e: (e.vhost, e.name),
    "type": lambda e: e.type,
}


class _LiveQueues:
    """``("queue"|"depth", vhost, name) in live``: whether that queue still exists, looked up
    in the vhost tables (only the keys with samples are asked, so a listing of 10,000 queues
    does not build a set of all of them)."""

    def __init__(self, vhosts: dict[str, VirtualHost]) -> None:
        self.vhosts = vhosts

    def __contains__(self, key: Any) -> bool:
        vh = self.vhosts.get(key[1])
        return vh is not None and key[2] in vh.queues


def _submit(session: Session, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` on the session's worker (which owns the session's state)."""
    worker = getattr(session.transport, "worker", None)
    if worker is not None:
        worker.submit(fn, *args)
    else:
        fn(*args)


def _amqp_error(e: Exception) -> HTTPError:
    """An AMQP refusal as RabbitMQ's management plugin reports it (400, the reason text)."""
    text = getattr(e, "reply_text", str(e))
    reason = text.split(" - ", 1)[1] if " - " in text else text
    code = getattr(e, "reply_code", 0)
    if code == 404:
        return not_found()
    return bad_request(reason)
