"""``/api/bindings`` and a queue's bindings.

Each endpoint is ``fn(api, req, **path_args) -> Response``; ``api`` is the shared
:class:`~..api.API` (visibility, listings, counters)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ...broker.queue import Queue
from ...broker.vhost import VirtualHost
from ..common import (
    Request,
    Response,
    _properties_key,
    jsonable,
)

if TYPE_CHECKING:
    from ..api import API

log = logging.getLogger("syncmq.management")


def _binding_list(api: API, vhosts: list[VirtualHost]) -> list[dict[str, Any]]:
    out = []
    for vh in vhosts:
        for q in sorted(list(vh.queues.values()), key=lambda q: q.name):
            out.append(_binding_json(api, vh.name, "", q, q.name, {}))
        for ex in sorted(list(vh.exchanges.values()), key=lambda e: e.name):
            if ex.name == "":
                continue
            for dest, key, args in ex.matcher.bindings():
                out.append(_binding_json(api, vh.name, ex.name, dest, key, args))
    return out


def _binding_json(api: API, vhost: str, source: str, dest, key: str, args: dict):
    return {"source": source, "vhost": vhost, "destination": dest.name,
            "destination_type": "queue" if isinstance(dest, Queue) else "exchange",
            "routing_key": key, "arguments": jsonable(args),
            "properties_key": _properties_key(key, args)}


def bindings(api: API, req: Request, vhost: str | None = None) -> Response:
    return Response(200, _binding_list(api, api.visible_vhosts(req, vhost)))


def queue_bindings(api: API, req: Request, vhost: str, name: str) -> Response:
    vh, q = api.get_queue(req, vhost, name)
    return Response(200, [b for b in _binding_list(api, [vh])
                          if b["destination_type"] == "queue" and b["destination"] == name])
