"""Request routing, authorisation and the JSON shapes of the management API.

Field names follow RabbitMQ's management plugin (checked against RabbitMQ 3.10): a tool or
script written for RabbitMQ's ``/api/queues`` reads syncmq's too. Fields syncmq has no
notion of (Erlang process statistics, garbage collection, policies) are left out rather than
faked.

Authorisation, as the management plugin does it: a user needs one of the tags
``administrator``, ``monitoring``, ``management`` or ``policymaker`` (else 401 "Not
management user"); ``administrator`` may do everything, ``monitoring`` may read everything,
``management``/``policymaker`` may read the vhosts they have permissions on; reading users,
permissions or definitions and every change need ``administrator`` (else 401 "Access
refused.", RabbitMQ's status for it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import syncmq.management.definitions as definitions
import syncmq.management.definitions_import as definitions_import
import syncmq.management.history as history
import syncmq.management.state as state
import syncmq.management.users as users_mod
import syncmq.management.validate as validate

from ..broker.auth import User
from ..broker.exchange import EXCHANGE_TYPES
from ..broker.message import Message
from ..broker.queue import Queue
from ..broker.vhost import VirtualHost
from ..methods.session import Session
from ..wire import _spec
from ..wire.errors import AMQPChannelError, AMQPConnectionError
from .errors import HTTPError, access_refused, bad_request, not_found
from .state import Context, Rates, connection_name, open_sessions, peer_parts

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


def _properties_key(routing_key: str, args: dict) -> str:
    """RabbitMQ's binding id: the routing key, plus ``~`` and a hash of the arguments."""
    key = quote(routing_key, safe="")
    if not args:
        return key or "~"
    digest = hashlib.sha1(json.dumps(jsonable(args), sort_keys=True).encode()).digest()
    return key + "~" + base64.urlsafe_b64encode(digest[:6]).decode().rstrip("=")


PAGE_SIZE_DEFAULT = 100
PAGE_SIZE_MAX = 500  # RabbitMQ's limit for ``page_size``
ACK_MODES = ("ack_requeue_true", "ack_requeue_false", "reject_requeue_true",
             "reject_requeue_false")
_INT_PROPERTIES = ("delivery_mode", "priority", "timestamp")


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


def _properties_json(message: Message) -> dict[str, Any]:
    p = message.props
    return {f: jsonable(v) for f in _spec.BasicProperties.FIELDS
            if (v := getattr(p, f)) is not None}


# Queue sort keys that need no JSON rendering: a page of 10,000 queues sorted by one of
# these renders only the queues on the page.
_QUEUE_SORTS: dict[str, Callable[[Queue], Any]] = {
    "name": lambda q: q.name,
    "vhost": lambda q: (q.vhost, q.name),
    "messages_ready": lambda q: len(q.ready),
    "messages_unacknowledged": lambda q: q.unacked_count,
    "messages": lambda q: len(q.ready) + q.unacked_count,
    "consumers": lambda q: len(q.consumers),
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


class API:
    """The management API over one broker (shared by the HTTP server's threads)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.rates = Rates()
        # the last minutes of the overview's counters and depths (started by the server)
        self.history = history.History(self._history_sample)
        self.routes: list[tuple[str, tuple[str, ...], Callable[..., Response]]] = []
        r = self._route
        r("GET", "overview", self.overview)
        r("GET", "cluster-name", self.cluster_name)
        r("GET", "whoami", self.whoami)
        r("GET", "extensions", lambda req: Response(200, []))
        r("GET", "nodes", self.nodes)
        r("GET", "nodes/{node}", self.node)
        r("GET", "vhosts", self.vhosts)
        r("GET", "vhosts/{vhost}", self.vhost)
        r("PUT", "vhosts/{vhost}", self.put_vhost)
        r("DELETE", "vhosts/{vhost}", self.delete_vhost)
        r("GET", "vhosts/{vhost}/permissions", self.vhost_permissions)
        r("GET", "vhosts/{vhost}/connections", self.connections)
        r("GET", "vhosts/{vhost}/channels", self.channels)
        r("GET", "users", self.users)
        r("GET", "users/{user}", self.user)
        r("PUT", "users/{user}", self.put_user)
        r("DELETE", "users/{user}", self.delete_user)
        r("GET", "users/{user}/permissions", self.user_permissions)
        r("GET", "permissions", self.permissions)
        r("GET", "permissions/{vhost}/{user}", self.permission)
        r("PUT", "permissions/{vhost}/{user}", self.put_permission)
        r("DELETE", "permissions/{vhost}/{user}", self.delete_permission)
        r("GET", "exchanges", self.exchanges)
        r("GET", "exchanges/{vhost}", self.exchanges)
        r("GET", "exchanges/{vhost}/{name}", self.exchange)
        r("GET", "exchanges/{vhost}/{name}/bindings/source", self.exchange_bindings_source)
        r("GET", "exchanges/{vhost}/{name}/bindings/destination",
          self.exchange_bindings_destination)
        r("POST", "exchanges/{vhost}/{name}/publish", self.publish)
        r("PUT", "exchanges/{vhost}/{name}", self.put_exchange)
        r("DELETE", "exchanges/{vhost}/{name}", self.delete_exchange)
        r("GET", "queues", self.queues)
        r("GET", "queues/{vhost}", self.queues)
        r("GET", "queues/{vhost}/{name}", self.queue)
        r("PUT", "queues/{vhost}/{name}", self.put_queue)
        r("DELETE", "queues/{vhost}/{name}", self.delete_queue)
        r("DELETE", "queues/{vhost}/{name}/contents", self.purge_queue)
        r("GET", "queues/{vhost}/{name}/bindings", self.queue_bindings)
        r("POST", "queues/{vhost}/{name}/get", self.get_messages)
        r("GET", "bindings", self.bindings)
        r("GET", "bindings/{vhost}", self.bindings)
        r("GET", "connections", self.connections)
        r("GET", "connections/{name}", self.connection)
        r("DELETE", "connections/{name}", self.delete_connection)
        r("GET", "connections/{name}/channels", self.connection_channels)
        r("GET", "channels", self.channels)
        r("GET", "channels/{name}", self.channel)
        r("GET", "consumers", self.consumers)
        r("GET", "consumers/{vhost}", self.consumers)
        r("GET", "definitions", self.get_definitions)
        r("POST", "definitions", self.post_definitions)
        r("GET", "health/checks/alarms", self.health_ok)
        r("GET", "health/checks/local-alarms", self.health_ok)
        r("GET", "aliveness-test/{vhost}", self.aliveness)

    def _route(self, method: str, pattern: str, fn: Callable[..., Response]) -> None:
        self.routes.append((method, tuple(pattern.split("/")), fn))

    # ---- dispatch ----

    def handle(self, req: Request) -> Response:
        if not has_tag(req.user, *MANAGEMENT_TAGS):
            raise HTTPError(401, "not_authorised", "Not management user")
        allowed_methods = False
        for method, pattern, fn in self.routes:
            if len(pattern) != len(req.parts):
                continue
            args = {}
            for pat, seg in zip(pattern, req.parts, strict=True):
                if pat.startswith("{"):
                    args[pat[1:-1]] = seg
                elif pat != seg:
                    break
            else:
                if method != req.method:
                    allowed_methods = True
                    continue
                if method != "GET" and not has_tag(req.user, "administrator"):
                    raise access_refused()
                return fn(req, **args)
        if allowed_methods:
            raise HTTPError(405, "Method Not Allowed", "Method Not Allowed")
        raise not_found()

    # ---- listings: filter, sort, page (RabbitMQ's ?page=&page_size=&name=&sort=) ----

    def _listing(self, req: Request, objs: list, name_of: Callable[[Any], str],
                 to_json: Callable[[Any], dict[str, Any]],
                 cheap_sorts: dict[str, Callable[[Any], Any]] | None = None) -> Response:
        """A list endpoint's answer: ``objs`` (in their default order) filtered by ``?name=``,
        sorted by ``?sort=`` (a field or dotted path; ``sort_reverse=true``) and, with
        ``?page=``, RabbitMQ's page object ``{items, page, page_count, page_size,
        filtered_count, item_count, total_count}``; without it the plain list. Sorting by a
        key in ``cheap_sorts`` renders only the objects on the page."""
        q = req.query
        total = len(objs)
        match = _name_filter(q)
        if match is not None:
            objs = [o for o in objs if match(name_of(o))]
        sort, reverse = q.get("sort") or None, q.get("sort_reverse") == "true"
        if sort is not None and cheap_sorts is not None and sort in cheap_sorts:
            key = cheap_sorts[sort]
            objs = sorted(objs, key=lambda o: _sortable(key(o)), reverse=reverse)
            sort = None
        elif sort is None and reverse:
            objs = objs[::-1]
        paging = _paging(q)
        filtered = len(objs)
        if sort is not None:  # a rendered field: render all, then sort
            items = sorted((to_json(o) for o in objs),
                           key=lambda x: _sortable(_dig(x, sort)), reverse=reverse)
        if paging is None:
            return Response(200, items if sort is not None else [to_json(o) for o in objs])
        page, size = paging
        page_count = -(-filtered // size)
        if page > max(page_count, 1):
            raise bad_request("page_out_of_range")
        start = (page - 1) * size
        if sort is not None:
            items = items[start:start + size]
        else:
            items = [to_json(o) for o in objs[start:start + size]]
        return Response(200, {"filtered_count": filtered, "item_count": len(items),
                              "items": items, "page": page, "page_count": page_count,
                              "page_size": size, "total_count": total})

    # ---- visibility ----

    def _sees_all(self, user: User) -> bool:
        return has_tag(user, "administrator", "monitoring")

    def _visible(self, user: User, vhost: str) -> bool:
        return self._sees_all(user) or vhost in user.permissions

    def _vhosts(self, req: Request, vhost: str | None = None) -> list[VirtualHost]:
        """The vhosts a listing covers: one (404 if unknown or not visible) or all visible."""
        broker = self.ctx.broker
        if vhost is not None:
            vh = broker.vhosts.get(vhost)
            if vh is None or not self._visible(req.user, vhost):
                raise not_found()
            return [vh]
        return [vh for name, vh in sorted(list(broker.vhosts.items()))
                if self._visible(req.user, name)]

    def _need_admin(self, req: Request) -> None:
        if not has_tag(req.user, "administrator"):
            raise access_refused()

    def _vhost_or_404(self, name: str) -> VirtualHost:
        vh = self.ctx.broker.vhosts.get(name)
        if vh is None:
            raise not_found()
        return vh

    # ---- counters ----

    def _message_stats(self) -> dict[str, Any]:
        counts = state.with_deliver_get(state.channel_totals(self.ctx))
        counts = self.rates.monotonic("overview", counts)
        return state.with_details(counts, self.rates.rates("overview", counts))

    def _history_sample(self) -> dict[str, int]:
        """One sample for :attr:`history`: the broker-wide counters and queue depths."""
        counts = state.with_deliver_get(state.channel_totals(self.ctx))
        counts = self.rates.monotonic("history", counts)
        counts.update(self._queue_totals(list(self.ctx.broker.vhosts.values())))
        return counts

    def _with_samples(self, req: Request, stats: dict[str, Any], prefix: str,
                      counter: bool) -> dict[str, Any]:
        """Add RabbitMQ's ``samples``/``avg_rate`` to each ``*_details`` of ``stats`` when the
        request asks for them with ``?{prefix}_age=&{prefix}_incr=``."""
        h = self.history
        try:
            asked = history.age_and_incr(req.query, prefix, h.keep, h.interval)
        except ValueError as e:
            raise bad_request(str(e)) from None
        if asked is None:
            return stats
        for key in [k for k in stats if not k.endswith("_details")]:
            d = stats.get(key + "_details")
            if isinstance(d, dict):
                d.update(history.details(h.samples(key, *asked), counter))
        return stats

    def _queue_totals(self, vhosts: list[VirtualHost]) -> dict[str, int]:
        ready = unacked = 0
        for vh in vhosts:
            for q in list(vh.queues.values()):
                ready += len(q.ready)
                unacked += q.unacked_count
        return {"messages": ready + unacked, "messages_ready": ready,
                "messages_unacknowledged": unacked}

    # ---- overview, node ----

    def overview(self, req: Request) -> Response:
        ctx = self.ctx
        vhosts = self._vhosts(req)
        names = {vh.name for vh in vhosts}
        sessions = [s for s in open_sessions(ctx) if s.vhost.name in names]
        channels = sum(len(s.channels) for s in sessions)
        consumers = sum(len(ch.consumers) for s in sessions for ch in list(s.channels.values()))
        totals = self._queue_totals(vhosts)
        qt = state.with_details(totals, self.rates.rates("queue_totals", totals))
        return Response(200, {
            "management_version": ctx.version,
            "rates_mode": "basic",
            "exchange_types": [{"name": t, "description": f"AMQP {t} exchange",
                                "enabled": True} for t in sorted(EXCHANGE_TYPES)],
            "product_version": ctx.version,
            "product_name": "syncmq",
            "rabbitmq_version": ctx.version,
            "cluster_name": ctx.cluster_name,
            "python_version": platform.python_version(),
            "disable_stats": False,
            "enable_queue_totals": False,
            "message_stats": self._with_samples(req, self._message_stats(), "msg_rates", True),
            "queue_totals": self._with_samples(req, qt, "lengths", False),
            "object_totals": {
                "connections": len(sessions),
                "channels": channels,
                "exchanges": sum(len(vh.exchanges) for vh in vhosts),
                "queues": sum(len(vh.queues) for vh in vhosts),
                "consumers": consumers,
            },
            "statistics_db_event_queue": 0,
            "node": ctx.node,
            "listeners": [dict(li, node=ctx.node) for li in ctx.listeners],
            "contexts": [],
        })

    def cluster_name(self, req: Request) -> Response:
        return Response(200, {"name": self.ctx.cluster_name})

    def whoami(self, req: Request) -> Response:
        return Response(200, {"name": req.user.name, "tags": list(req.user.tags)})

    def _node(self) -> dict[str, Any]:
        ctx = self.ctx
        try:
            fd_used = len(os.listdir("/proc/self/fd"))
        except OSError:
            fd_used = 0
        try:
            import resource
            fd_total = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except Exception:
            fd_total = 0
        try:
            st = os.statvfs(ctx.data_dir if os.path.isdir(ctx.data_dir) else ".")
            disk_free = st.f_bavail * st.f_frsize
        except OSError:
            disk_free = 0
        import threading
        return {
            "name": ctx.node,
            "type": "disc",
            "running": True,
            "os_pid": str(os.getpid()),
            "uptime": int((time.time() - ctx.started_at) * 1000),
            "mem_used": state.resident_memory(),
            "mem_alarm": "memory" in ctx.broker.alarms,
            "disk_free": disk_free,
            "disk_free_alarm": "disk" in ctx.broker.alarms,
            # syncmq's own: bytes in the journal's segment files (0 without a data dir)
            "journal_bytes": (state.journal_bytes(ctx.data_dir) or 0) if ctx.data_dir else 0,
            "fd_used": fd_used,
            "fd_total": fd_total,
            "sockets_used": len(ctx.sessions()),
            "proc_used": threading.active_count(),
            "processors": os.cpu_count() or 1,
            "run_queue": 0,
            "rates_mode": "basic",
            "partitions": [],
            "db_dir": os.path.abspath(ctx.data_dir) if ctx.data_dir else "",
            "exchange_types": [{"name": t, "description": f"AMQP {t} exchange",
                                "enabled": True} for t in sorted(EXCHANGE_TYPES)],
            "auth_mechanisms": [{"name": m, "description": "", "enabled": True}
                                for m in ("PLAIN", "AMQPLAIN")],
            "applications": [{"name": "syncmq", "description": "AMQP 0-9-1 broker",
                              "version": ctx.version}],
            "enabled_plugins": ["management"],
            "being_drained": False,
        }

    def nodes(self, req: Request) -> Response:
        return Response(200, [self._node()])

    def node(self, req: Request, node: str) -> Response:
        if node != self.ctx.node:
            raise not_found()
        return Response(200, self._node())

    def health_ok(self, req: Request) -> Response:
        return Response(200, {"status": "ok"})

    def aliveness(self, req: Request, vhost: str) -> Response:
        """Declare ``aliveness-test`` in the vhost, publish a message to it and get it back."""
        vh = self._vhosts(req, vhost)[0]
        q, _ = vh.declare_queue("aliveness-test", False, False, False, False, None, None)
        q.publish(Message("", "aliveness-test", b"\x00\x00", b"test_message"))
        got = q.get(True)
        if got is None or got[1].body != b"test_message":
            return Response(503, {"status": "failed", "reason": "message not received"})
        return Response(200, {"status": "ok"})

    # ---- vhosts ----

    def _vhost_json(self, vh: VirtualHost) -> dict[str, Any]:
        totals = self._queue_totals([vh])
        return {
            "name": vh.name,
            "description": "",
            "tags": [],
            "metadata": {"description": "", "tags": []},
            "tracing": False,
            "cluster_state": {self.ctx.node: "running"},
            **state.with_details(totals, self.rates.rates(("vhost", vh.name), totals)),
        }

    def vhosts(self, req: Request) -> Response:
        return Response(200, [self._vhost_json(vh) for vh in self._vhosts(req)])

    def vhost(self, req: Request, vhost: str) -> Response:
        return Response(200, self._vhost_json(self._vhosts(req, vhost)[0]))

    def put_vhost(self, req: Request, vhost: str) -> Response:
        broker = self.ctx.broker
        validate.obj(req.body)
        if not vhost:
            raise bad_request("vhost name must not be empty")
        validate.name(vhost, "vhost")
        existed = vhost in broker.vhosts
        broker.add_vhost(vhost)

        def change(users: dict, vhosts: list[str] | None) -> None:
            if vhosts is not None and vhost not in vhosts:
                vhosts.append(vhost)

        users_mod.update(broker, change)
        return Response(204 if existed else 201)

    def delete_vhost(self, req: Request, vhost: str) -> Response:
        """Remove the vhost: its connections are closed (320), its queues deleted."""
        broker = self.ctx.broker
        with broker.lock:  # the lock that guards adding and removing vhosts
            vh = broker.vhosts.pop(vhost, None)
        if vh is None:
            raise not_found()
        for s in open_sessions(self.ctx):
            if s.vhost is vh:
                self._close(s, f"CONNECTION_FORCED - vhost '{vhost}' is deleted")
        for q in list(vh.queues.values()):
            self._drop_queue(vh, q)
        for ex in list(vh.exchanges.values()):  # through the vhost, so the journal sees it
            if ex.name and not ex.name.startswith("amq."):
                vh.delete_exchange(ex.name, False)

        def change(users: dict, vhosts: list[str] | None) -> None:
            for u in users.values():
                u.permissions.pop(vhost, None)
            if vhosts is not None and vhost in vhosts:
                vhosts.remove(vhost)

        users_mod.update(broker, change)
        return Response(204)

    # ---- users and permissions ----

    def _user_json(self, u: User) -> dict[str, Any]:
        return {"name": u.name, "password_hash": users_mod.to_base64(u.password_hash),
                "hashing_algorithm": users_mod.SHA256, "tags": list(u.tags), "limits": {}}

    def users(self, req: Request) -> Response:
        self._need_admin(req)
        return Response(200, [self._user_json(u)
                              for u in list(self.ctx.broker.users.users.values())])

    def user(self, req: Request, user: str) -> Response:
        self._need_admin(req)
        u = self.ctx.broker.users.users.get(user)
        if u is None:
            raise not_found()
        return Response(200, self._user_json(u))

    def put_user(self, req: Request, user: str) -> Response:
        body = validate.obj(req.body)
        if not user:
            raise bad_request("user name must not be empty")
        validate.name(user, "user")
        old = self.ctx.broker.users.users.get(user)
        try:
            tags = users_mod.parse_tags(body.get("tags", list(old.tags) if old else []))
            if "password" in body:
                if not isinstance(body["password"], str) or not body["password"]:
                    raise ValueError("password must be a non-empty string")
                nu = users_mod.make_user(user, password=body["password"], tags=tags, old=old)
            elif "password_hash" in body:
                algo = body.get("hashing_algorithm", users_mod.SHA256)
                if algo != users_mod.SHA256:
                    raise ValueError(f"hashing_algorithm '{algo}' is not supported")
                nu = users_mod.make_user(user, password_hash=str(body["password_hash"]),
                                         tags=tags, old=old)
            elif old is not None:
                nu = users_mod.make_user(user, tags=tags, old=old)
            else:
                raise ValueError("password or password_hash is required")
        except ValueError as e:
            raise bad_request(str(e)) from None

        def change(users: dict, vhosts: list[str] | None) -> None:
            users[user] = nu

        users_mod.update(self.ctx.broker, change)
        return Response(204 if old is not None else 201)

    def delete_user(self, req: Request, user: str) -> Response:
        if user not in self.ctx.broker.users.users:
            raise not_found()

        def change(users: dict, vhosts: list[str] | None) -> None:
            users.pop(user, None)

        users_mod.update(self.ctx.broker, change)
        return Response(204)

    def _permissions(self, pred: Callable[[str, str], bool]) -> list[dict[str, str]]:
        out = []
        for u in list(self.ctx.broker.users.users.values()):
            for vh, p in u.permissions.items():
                if pred(u.name, vh):
                    out.append({"user": u.name, "vhost": vh, "configure": p.configure,
                                "write": p.write, "read": p.read})
        return out

    def permissions(self, req: Request) -> Response:
        self._need_admin(req)
        return Response(200, self._permissions(lambda u, v: True))

    def vhost_permissions(self, req: Request, vhost: str) -> Response:
        self._need_admin(req)
        self._vhost_or_404(vhost)
        return Response(200, self._permissions(lambda u, v: v == vhost))

    def user_permissions(self, req: Request, user: str) -> Response:
        self._need_admin(req)
        if user not in self.ctx.broker.users.users:
            raise not_found()
        return Response(200, self._permissions(lambda u, v: u == user))

    def permission(self, req: Request, vhost: str, user: str) -> Response:
        self._need_admin(req)
        found = self._permissions(lambda u, v: u == user and v == vhost)
        if not found:
            raise not_found()
        return Response(200, found[0])

    def put_permission(self, req: Request, vhost: str, user: str) -> Response:
        self._vhost_or_404(vhost)
        body = validate.obj(req.body)
        vals = [body.get(k, "") for k in ("configure", "write", "read")]
        if not all(isinstance(v, str) for v in vals):
            raise bad_request("configure, write and read must be strings")
        try:
            perm = users_mod.permission(*vals)
        except (re.error, RecursionError, OverflowError) as e:  # a bad regex
            raise bad_request(f"invalid regular expression: {e}") from None
        if user not in self.ctx.broker.users.users:
            raise bad_request(f"no user '{user}'")
        existed = vhost in self.ctx.broker.users.users[user].permissions

        def change(users: dict, vhosts: list[str] | None) -> None:
            if user not in users:
                raise bad_request(f"no user '{user}'")
            users[user].permissions[vhost] = perm

        users_mod.update(self.ctx.broker, change)
        return Response(204 if existed else 201)

    def delete_permission(self, req: Request, vhost: str, user: str) -> Response:
        u = self.ctx.broker.users.users.get(user)
        if u is None or vhost not in u.permissions:
            raise not_found()

        def change(users: dict, vhosts: list[str] | None) -> None:
            if user in users:
                users[user].permissions.pop(vhost, None)

        users_mod.update(self.ctx.broker, change)
        return Response(204)

    # ---- exchanges ----

    def _exchange_json(self, ex) -> dict[str, Any]:
        return {"name": ex.name, "vhost": ex.vhost, "type": ex.type, "durable": ex.durable,
                "auto_delete": ex.auto_delete, "internal": ex.internal,
                "arguments": jsonable(ex.arguments), "user_who_performed_action": ""}

    def exchanges(self, req: Request, vhost: str | None = None) -> Response:
        exs = [ex for vh in self._vhosts(req, vhost)
               for ex in sorted(list(vh.exchanges.values()), key=lambda e: e.name)]
        return self._listing(req, exs, lambda e: e.name, self._exchange_json, _EXCHANGE_SORTS)

    def _get_exchange(self, req: Request, vhost: str, name: str):
        vh = self._vhosts(req, vhost)[0]
        ex = vh.exchanges.get("" if name == "amq.default" else name)
        if ex is None:
            raise not_found()
        return vh, ex

    def exchange(self, req: Request, vhost: str, name: str) -> Response:
        vh, ex = self._get_exchange(req, vhost, name)
        out = self._exchange_json(ex)
        out["outgoing"], out["incoming"] = [], []
        return Response(200, out)

    def exchange_bindings_source(self, req: Request, vhost: str, name: str) -> Response:
        vh, ex = self._get_exchange(req, vhost, name)
        return Response(200, [b for b in self._binding_list([vh]) if b["source"] == ex.name])

    def exchange_bindings_destination(self, req: Request, vhost: str, name: str) -> Response:
        vh, ex = self._get_exchange(req, vhost, name)
        return Response(200, [b for b in self._binding_list([vh])
                              if b["destination_type"] == "exchange"
                              and b["destination"] == ex.name])

    def publish(self, req: Request, vhost: str, name: str) -> Response:
        """Publish one message, as RabbitMQ's ``POST /api/exchanges/{vh}/{x}/publish``:
        body ``{routing_key, payload, payload_encoding: string|base64, properties}``;
        answers ``{"routed": bool}`` (true when at least one queue took it). Persistent
        messages reaching durable queues are journaled as a basic.publish's are."""
        vh, ex = self._get_exchange(req, vhost, name)
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
        props = body["properties"]
        if isinstance(props, dict) and props.get("user_id") not in (None, ""):
            refusal = req.user.user_id_refusal(props["user_id"])
            if refusal:
                raise bad_request(f"406 PRECONDITION_FAILED - {refusal}")
        message = Message(ex.name, rk, _encode_properties(props or {}), data)
        queues = vh.route(ex, message)
        if message.persistent and queues and vh.durability is not None:
            try:
                vh.durability.publish(vh.name, message, queues)
            except vh.durability.NotDurable:
                pass  # the journal failed: it stays a transient message
        if vh.body_store is not None and queues:
            vh.body_store.put(message, len(queues))
        routed = False
        for q in queues:
            if q.publish(message):
                routed = True
        return Response(200, {"routed": routed})

    def put_exchange(self, req: Request, vhost: str, name: str) -> Response:
        vh = self._vhost_or_404(vhost)
        body = validate.obj(req.body)
        validate.name(name, "exchange")
        etype = body.get("type")
        if not isinstance(etype, str):
            raise bad_request("'type' is required")
        durable = validate.boolean(body, "durable", True)
        auto_delete = validate.boolean(body, "auto_delete", False)
        internal = validate.boolean(body, "internal", False)
        args = validate.arguments(body)
        try:
            _, created = vh.declare_exchange(name, etype, False, durable, auto_delete, internal,
                                             args)
        except (AMQPChannelError, AMQPConnectionError) as e:
            raise _amqp_error(e) from None
        return Response(201 if created else 204)

    def delete_exchange(self, req: Request, vhost: str, name: str) -> Response:
        vh = self._vhost_or_404(vhost)
        try:
            ex = vh.delete_exchange(name, req.query.get("if-unused") == "true")
        except AMQPChannelError as e:
            raise _amqp_error(e) from None
        if ex is None:
            raise not_found()
        return Response(204)

    # ---- queues ----

    def _queue_json(self, q: Queue) -> dict[str, Any]:
        ready, unacked = len(q.ready), q.unacked_count
        counts = self.rates.monotonic(("queue", q.vhost, q.name), state.queue_counts(q))
        depth = {"messages": ready + unacked, "messages_ready": ready,
                 "messages_unacknowledged": unacked}
        depth_rates = self.rates.rates(("depth", q.vhost, q.name), depth)
        consumers = list(q.consumers)
        exclusive_tag = next((c.tag for c in consumers if c.exclusive), None)
        return {
            "name": q.name,
            "vhost": q.vhost,
            "durable": q.durable,
            "auto_delete": q.auto_delete,
            "exclusive": q.exclusive_owner is not None,
            "arguments": jsonable(q.arguments),
            "node": self.ctx.node,
            "state": "running",
            "type": "classic",
            "policy": None,
            "exclusive_consumer_tag": exclusive_tag,
            "consumers": len(consumers),
            "memory": 1024 + 96 * (ready + unacked),  # bookkeeping estimate, not bodies
            **state.with_details(depth, depth_rates),
            "message_stats": state.with_details(
                counts, self.rates.rates(("queue", q.vhost, q.name), counts)),
        }

    def queues(self, req: Request, vhost: str | None = None) -> Response:
        qs = [q for vh in self._vhosts(req, vhost)
              for q in sorted(list(vh.queues.values()), key=lambda q: q.name)]
        if vhost is None:
            self.rates.forget_missing(("queue", "depth"), _LiveQueues(self.ctx.broker.vhosts))
        return self._listing(req, qs, lambda q: q.name, self._queue_json, _QUEUE_SORTS)

    def _get_queue(self, req: Request, vhost: str, name: str) -> tuple[VirtualHost, Queue]:
        vh = self._vhosts(req, vhost)[0]
        q = vh.queues.get(name)
        if q is None:
            raise not_found()
        return vh, q

    def queue(self, req: Request, vhost: str, name: str) -> Response:
        vh, q = self._get_queue(req, vhost, name)
        out = self._queue_json(q)
        out["consumer_details"] = [
            c for c in self._consumer_list([vh]) if c["queue"]["name"] == name
        ]
        return Response(200, out)

    def put_queue(self, req: Request, vhost: str, name: str) -> Response:
        vh = self._vhost_or_404(vhost)
        body = validate.obj(req.body)
        validate.name(name, "queue")
        if name.startswith("amq."):
            raise bad_request(f"queue name '{name}' contains reserved prefix 'amq.*'")
        durable = validate.boolean(body, "durable", True)
        auto_delete = validate.boolean(body, "auto_delete", False)
        args = validate.arguments(body)
        try:
            _, created = vh.declare_queue(name, False, durable, False, auto_delete, args, None)
        except (AMQPChannelError, AMQPConnectionError) as e:
            raise _amqp_error(e) from None
        return Response(201 if created else 204)

    def _drop_queue(self, vh: VirtualHost, q: Queue) -> None:
        """Delete ``q`` as queue.delete does, and tell its consumers (on their workers)."""
        deleted = vh.delete_queue_object(q)
        if deleted:
            for c in deleted[1]:
                _submit(c.channel.session, c.channel.consumer_cancelled, c)

    def delete_queue(self, req: Request, vhost: str, name: str) -> Response:
        vh, q = self._get_queue(req, vhost, name)
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

    def purge_queue(self, req: Request, vhost: str, name: str) -> Response:
        _, q = self._get_queue(req, vhost, name)
        q.purge()
        return Response(204)

    def get_messages(self, req: Request, vhost: str, name: str) -> Response:
        """RabbitMQ's ``POST /api/queues/{vh}/{q}/get``: take up to ``count`` messages from
        the head, as basic.get without no-ack, then settle them by ``ackmode`` (``*_requeue_true``
        puts them back where they were, marked redelivered, so a look changes no order).
        Body: ``{count, ackmode, encoding: auto|base64, truncate}``."""
        _, q = self._get_queue(req, vhost, name)
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

    # ---- bindings ----

    def _binding_list(self, vhosts: list[VirtualHost]) -> list[dict[str, Any]]:
        out = []
        for vh in vhosts:
            for q in sorted(list(vh.queues.values()), key=lambda q: q.name):
                out.append(self._binding_json(vh.name, "", q, q.name, {}))
            for ex in sorted(list(vh.exchanges.values()), key=lambda e: e.name):
                if ex.name == "":
                    continue
                for dest, key, args in ex.matcher.bindings():
                    out.append(self._binding_json(vh.name, ex.name, dest, key, args))
        return out

    def _binding_json(self, vhost: str, source: str, dest, key: str, args: dict):
        return {"source": source, "vhost": vhost, "destination": dest.name,
                "destination_type": "queue" if isinstance(dest, Queue) else "exchange",
                "routing_key": key, "arguments": jsonable(args),
                "properties_key": _properties_key(key, args)}

    def bindings(self, req: Request, vhost: str | None = None) -> Response:
        return Response(200, self._binding_list(self._vhosts(req, vhost)))

    def queue_bindings(self, req: Request, vhost: str, name: str) -> Response:
        vh, q = self._get_queue(req, vhost, name)
        return Response(200, [b for b in self._binding_list([vh])
                              if b["destination_type"] == "queue" and b["destination"] == name])

    # ---- connections, channels, consumers ----

    def _sessions(self, req: Request, vhost: str | None = None) -> list[Session]:
        names = {vh.name for vh in self._vhosts(req, vhost)}
        return [s for s in open_sessions(self.ctx) if s.vhost.name in names]

    def _connection_json(self, s: Session) -> dict[str, Any]:
        ph, pp = peer_parts(s.peer)
        h, p = peer_parts(getattr(s.transport, "sockname", ("", 0)))
        props = jsonable(s.client_properties)
        t = s.transport
        return {
            "name": connection_name(s),
            "node": self.ctx.node,
            "vhost": s.vhost.name,
            "user": s.username,
            "state": "running" if s.proto.state == "open" else s.proto.state,
            "type": "network",
            "protocol": "AMQP 0-9-1",
            "ssl": False,
            "host": h, "port": p, "peer_host": ph, "peer_port": pp,
            "channels": len(s.channels),
            "channel_max": s.channel_max,
            "frame_max": s.frame_max,
            "timeout": s.heartbeat,
            "connected_at": int(s.connected_at * 1000),
            "client_properties": props,
            "user_provided_name": props.get("connection_name"),
            "recv_oct": getattr(t, "bytes_in", 0),
            "send_oct": getattr(t, "bytes_out", 0),
            "send_pend": t.pending_bytes() if hasattr(t, "pending_bytes") else 0,
        }

    def connections(self, req: Request, vhost: str | None = None) -> Response:
        return self._listing(req, self._sessions(req, vhost), connection_name,
                             self._connection_json)

    def _find_session(self, req: Request, name: str) -> Session:
        for s in self._sessions(req):
            if connection_name(s) == name:
                return s
        raise not_found()

    def connection(self, req: Request, name: str) -> Response:
        return Response(200, self._connection_json(self._find_session(req, name)))

    def delete_connection(self, req: Request, name: str) -> Response:
        s = self._find_session(req, name)
        reason = req.headers.get("x-reason") or "Closed via management plugin"
        self._close(s, f"CONNECTION_FORCED - {reason}")
        return Response(204)

    def _close(self, s: Session, text: str) -> None:
        log.info("closing connection via the management API: %s", text,
                 extra={"peer": connection_name(s), "user": s.username,
                        "vhost": s.vhost.name if s.vhost else None,
                        "reply_code": CONNECTION_FORCED})
        if self.ctx.close_connection is not None:
            self.ctx.close_connection(s, CONNECTION_FORCED, text)
        else:
            _submit(s, s.close, CONNECTION_FORCED, text)

    def _channel_json(self, s: Session, ch) -> dict[str, Any]:
        cname = connection_name(s)
        name = f"{cname} ({ch.id})"
        counts = state.with_deliver_get(dict(zip(state.STATS, ch.stats(), strict=True)))
        ph, pp = peer_parts(s.peer)
        return {
            "name": name,
            "node": self.ctx.node,
            "number": ch.id,
            "vhost": s.vhost.name,
            "user": s.username,
            "connection_details": {"name": cname, "peer_host": ph, "peer_port": pp},
            "state": "closing" if ch.closing else "running",
            "consumer_count": len(ch.consumers),
            "messages_unacknowledged": len(ch.unacked),
            "messages_unconfirmed": 0,
            "messages_uncommitted": len(ch.tx_publishes),
            "acks_uncommitted": len(ch.tx_acks),
            "prefetch_count": ch.prefetch_count,
            "global_prefetch_count": ch.global_prefetch,
            "confirm": ch.confirm,
            "transactional": ch.tx,
            "message_stats": state.with_details(
                counts, self.rates.rates(("channel", name), counts)),
        }

    def _channel_list(self, sessions: list[Session]) -> list[dict[str, Any]]:
        return [self._channel_json(s, ch) for s in sessions
                for ch in sorted(list(s.channels.values()), key=lambda c: c.id)]

    def channels(self, req: Request, vhost: str | None = None) -> Response:
        return Response(200, self._channel_list(self._sessions(req, vhost)))

    def channel(self, req: Request, name: str) -> Response:
        for c in self._channel_list(self._sessions(req)):
            if c["name"] == name:
                return Response(200, c)
        raise not_found()

    def connection_channels(self, req: Request, name: str) -> Response:
        return Response(200, self._channel_list([self._find_session(req, name)]))

    def _consumer_list(self, vhosts: list[VirtualHost]) -> list[dict[str, Any]]:
        names = {vh.name for vh in vhosts}
        out = []
        for s in open_sessions(self.ctx):
            if s.vhost.name not in names:
                continue
            cname = connection_name(s)
            ph, pp = peer_parts(s.peer)
            for ch in list(s.channels.values()):
                for c in list(ch.consumers.values()):
                    out.append({
                        "consumer_tag": c.tag,
                        "queue": {"name": c.queue.name, "vhost": c.queue.vhost},
                        "channel_details": {
                            "name": f"{cname} ({ch.id})", "number": ch.id,
                            "connection_name": cname, "peer_host": ph, "peer_port": pp,
                            "user": s.username, "node": self.ctx.node,
                        },
                        "ack_required": not c.no_ack,
                        "exclusive": c.exclusive,
                        "prefetch_count": c.prefetch,
                        "arguments": jsonable(c.arguments),
                        "active": True,
                        "activity_status": "up",
                    })
        return out

    def consumers(self, req: Request, vhost: str | None = None) -> Response:
        return Response(200, self._consumer_list(self._vhosts(req, vhost)))

    # ---- definitions ----

    def get_definitions(self, req: Request) -> Response:
        self._need_admin(req)
        return Response(200, definitions.export(self.ctx))

    def post_definitions(self, req: Request) -> Response:
        try:
            definitions_import.apply(self.ctx, definitions_import.plan(self.ctx, req.body))
        except definitions_import.DefinitionsError as e:
            raise bad_request(str(e)) from None
        return Response(204)


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
