"""Request routing and authorisation of the management API over its resource modules.

Field names follow RabbitMQ's management plugin (checked against RabbitMQ 3.10): a tool or
script written for RabbitMQ's ``/api/queues`` reads syncmq's too. Fields syncmq has no
notion of (Erlang process statistics, garbage collection) are left out rather than
faked. The endpoints live in ``resources/`` (one module per resource, as RabbitMQ's plugin);
this module holds the route table and what they share: who may see which vhost, listings
(filter, sort, page) and the message counters and rates.

Authorisation, as the management plugin does it: a user needs one of the tags
``administrator``, ``monitoring``, ``management`` or ``policymaker`` (else 401 "Not
management user"); ``administrator`` may do everything, ``monitoring`` may read everything,
``management``/``policymaker`` may read the vhosts they have permissions on, but of the
connections, channels and consumers only their own (``API.sessions``, ``API.may_see``: they may
close their own connections too); reading users,
permissions or definitions and every other change need ``administrator`` (else 401 "Not
administrator user", RabbitMQ's). Exceptions, RabbitMQ's, checked by their endpoints
(routes added with ``self_checked``): acting on a vhost's objects (declare, delete, bind,
publish, get, purge) is done as the user, whatever its management tag (``access``); a
``policymaker`` may change policies and runtime parameters; the shovel endpoints
(``/api/shovels...``, reading, restarting and deleting) need ``monitoring`` or
``administrator`` (RabbitMQ's ``is_authorized_monitor``). Before any of these, the vhost
gate of ``access`` (a user without permissions on an existing vhost: 401).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import syncmq.management.history as history
import syncmq.management.state as state
import syncmq.management.view as view

from ..broker.auth import User
from ..broker.queue import Queue
from ..broker.vhost import VirtualHost
from ..methods.session import Session
from . import access
from .common import (
    CONNECTION_FORCED,
    MANAGEMENT_TAGS,
    Request,
    Response,
    _dig,
    _name_filter,
    _paging,
    _sortable,
    _submit,
    has_tag,
)
from .errors import HTTPError, bad_request, not_found
from .idle import IdleSince
from .resources import (
    bindings,
    connections,
    exchanges,
    health,
    limits,
    overview,
    parameters,
    policies,
    publish,
    queues,
    shovels,
    user_rules,
    users,
    vhosts,
)
from .state import Context, Rates, connection_name, open_sessions

__all__ = ["API", "HTTPError", "MANAGEMENT_TAGS", "Request", "Response", "bad_request",
           "has_tag"]

#: Longest wait (s) of a changing request for the journal's fsync of its records.
JOURNAL_WAIT = 60.0

log = logging.getLogger("syncmq.management")


class API:
    """The management API over one broker (shared by the HTTP server's threads)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.rates = Rates()
        # the queues' idle_since (their activity counters at the last look)
        self.idle = IdleSince()
        # the last minutes of the overview's counters and depths (started by the server)
        self.history = history.History(self._history_sample)
        # the same for the queues whose page is open (recorded by the same thread)
        self.queue_history = history.Watched(self._queue_sample)
        self.routes: list[tuple[str, tuple[str, ...], Callable[..., Response], bool]] = []
        self._node_and_user_routes()
        self._object_routes()
        self._rule_and_parameter_routes()

    def _node_and_user_routes(self) -> None:
        """Overview, nodes, vhosts, users, permissions."""
        r = self._route
        r("GET", "overview", overview.overview)
        r("GET", "cluster-name", overview.cluster_name)
        r("GET", "whoami", overview.whoami)
        r("GET", "extensions", lambda api, req: Response(200, []))
        r("GET", "nodes", overview.nodes)
        r("GET", "nodes/{node}", overview.node)
        r("GET", "vhosts", vhosts.vhosts)
        r("GET", "vhosts/{vhost}", vhosts.vhost)
        r("PUT", "vhosts/{vhost}", vhosts.put_vhost)
        r("DELETE", "vhosts/{vhost}", vhosts.delete_vhost)
        r("GET", "vhosts/{vhost}/permissions", users.vhost_permissions)
        r("GET", "vhosts/{vhost}/connections", connections.connections)
        r("GET", "vhosts/{vhost}/channels", connections.channels)
        r("GET", "users", users.users)
        r("GET", "users/{user}", users.user)
        r("PUT", "users/{user}", users.put_user)
        r("DELETE", "users/{user}", users.delete_user)
        r("GET", "users/{user}/permissions", users.user_permissions)
        r("GET", "permissions", users.permissions)
        r("GET", "permissions/{vhost}/{user}", users.permission)
        r("PUT", "permissions/{vhost}/{user}", users.put_permission)
        r("DELETE", "permissions/{vhost}/{user}", users.delete_permission)

    def _object_routes(self) -> None:
        """Exchanges, queues, bindings, connections, channels, consumers, definitions,
        health checks."""
        r = self._route
        # acting on objects: any management user, as the user (access.resource, rule 2)
        o = functools.partial(self._route, self_checked=True)
        r("GET", "exchanges", exchanges.exchanges)
        r("GET", "exchanges/{vhost}", exchanges.exchanges)
        r("GET", "exchanges/{vhost}/{name}", exchanges.exchange)
        r("GET", "exchanges/{vhost}/{name}/bindings/source", exchanges.exchange_bindings_source)
        r("GET", "exchanges/{vhost}/{name}/bindings/destination",
          exchanges.exchange_bindings_destination)
        o("POST", "exchanges/{vhost}/{name}/publish", publish.publish)
        o("PUT", "exchanges/{vhost}/{name}", exchanges.put_exchange)
        o("DELETE", "exchanges/{vhost}/{name}", exchanges.delete_exchange)
        r("GET", "queues", queues.queues)
        r("GET", "queues/{vhost}", queues.queues)
        r("GET", "queues/{vhost}/{name}", queues.queue)
        o("PUT", "queues/{vhost}/{name}", queues.put_queue)
        o("DELETE", "queues/{vhost}/{name}", queues.delete_queue)
        o("DELETE", "queues/{vhost}/{name}/contents", queues.purge_queue)
        r("GET", "queues/{vhost}/{name}/bindings", bindings.queue_bindings)
        o("POST", "queues/{vhost}/{name}/get", queues.get_messages)
        r("GET", "bindings", bindings.bindings)
        r("GET", "bindings/{vhost}", bindings.bindings)
        r("GET", "bindings/{vhost}/e/{source}/{dtype}/{dest}", bindings.bindings_between)
        o("POST", "bindings/{vhost}/e/{source}/{dtype}/{dest}", bindings.post_binding)
        r("GET", "bindings/{vhost}/e/{source}/{dtype}/{dest}/{props}", bindings.binding)
        o("DELETE", "bindings/{vhost}/e/{source}/{dtype}/{dest}/{props}",
          bindings.delete_binding)
        r("GET", "connections", connections.connections)
        r("GET", "connections/{name}", connections.connection)
        # its owner may close a connection too (checked by the endpoint: find_session)
        r("DELETE", "connections/{name}", connections.delete_connection, self_checked=True)
        r("GET", "connections/{name}/channels", connections.connection_channels)
        r("GET", "channels", connections.channels)
        r("GET", "channels/{name}", connections.channel)
        r("GET", "consumers", connections.consumers)
        r("GET", "consumers/{vhost}", connections.consumers)
        r("GET", "definitions", vhosts.get_definitions)
        r("POST", "definitions", vhosts.post_definitions)
        r("GET", "definitions/{vhost}", vhosts.get_vhost_definitions)
        r("POST", "definitions/{vhost}", vhosts.post_vhost_definitions)
        r("GET", "health/checks/alarms", health.alarms)
        r("GET", "health/checks/local-alarms", health.local_alarms)
        r("GET", "health/checks/virtual-hosts", health.virtual_hosts)
        r("GET", "health/checks/port-listener/{port}", health.port_listener)
        r("GET", "health/checks/protocol-listener/{protocol}", health.protocol_listener)
        r("GET", "health/checks/node-is-quorum-critical", health.single_node)
        r("GET", "health/checks/node-is-mirror-sync-critical", health.single_node)
        r("GET", "health/checks/certificate-expiration/{within}/{unit}",
          health.certificate_expiration)
        r("GET", "healthchecks/node", health.node)
        r("GET", "healthchecks/node/{node}", health.node)
        r("GET", "aliveness-test/{vhost}", overview.aliveness)

    def _rule_and_parameter_routes(self) -> None:
        """Policies, limits, runtime parameters, shovels, topic permissions, user limits."""
        r = self._route
        # policies: a policymaker may change them too (checked by the endpoints); operator
        # policies need administrator
        for base, add in (("policies", self._policymaker_route), ("operator-policies", r)):
            add("GET", base, policies.policies)
            add("GET", f"{base}/{{vhost}}", policies.policies)
            add("GET", f"{base}/{{vhost}}/{{name}}", policies.policy)
            add("PUT", f"{base}/{{vhost}}/{{name}}", policies.put_policy)
            add("DELETE", f"{base}/{{vhost}}/{{name}}", policies.delete_policy)
        r("GET", "vhost-limits", limits.vhost_limits)
        r("GET", "vhost-limits/{vhost}", limits.vhost_limits)
        r("PUT", "vhost-limits/{vhost}/{name}", limits.put_limit)
        r("DELETE", "vhost-limits/{vhost}/{name}", limits.delete_limit)
        # runtime parameters: a policymaker may change them too (checked by the endpoints)
        p = self._policymaker_route
        p("GET", "parameters", parameters.parameters)
        p("GET", "parameters/{component}", parameters.parameters)
        p("GET", "parameters/{component}/{vhost}", parameters.parameters)
        p("GET", "parameters/{component}/{vhost}/{name}", parameters.parameter)
        p("PUT", "parameters/{component}/{vhost}/{name}", parameters.put_parameter)
        p("DELETE", "parameters/{component}/{vhost}/{name}", parameters.delete_parameter)
        p("GET", "global-parameters", parameters.global_parameters)
        p("GET", "global-parameters/{name}", parameters.global_parameter)
        p("PUT", "global-parameters/{name}", parameters.put_global_parameter)
        p("DELETE", "global-parameters/{name}", parameters.delete_global_parameter)
        # shovels: monitoring or administrator, also to restart and delete (checked there)
        s = functools.partial(self._route, self_checked=True)
        s("GET", "shovels", shovels.shovels)
        s("GET", "shovels/{vhost}", shovels.shovels)
        s("DELETE", "shovels/vhost/{vhost}/{name}", shovels.delete)
        s("DELETE", "shovels/vhost/{vhost}/{name}/restart", shovels.restart)
        user_rules.add_routes(r)  # topic permissions and user limits

    def _route(self, method: str, pattern: str, fn: Callable[..., Response],
               self_checked: bool = False) -> None:
        """Add a route; a change (not GET) needs ``administrator`` unless ``self_checked``,
        where the endpoint checks the user itself (RabbitMQ's ``is_authorized_policies``,
        ``is_authorized_monitor``; closing one's own connection)."""
        self.routes.append((method, tuple(pattern.split("/")), fn, self_checked))

    def _policymaker_route(self, method: str, pattern: str, fn: Callable[..., Response]) -> None:
        self._route(method, pattern, fn, self_checked=True)

    def handle(self, req: Request) -> Response:
        if not has_tag(req.user, *MANAGEMENT_TAGS):
            raise HTTPError(401, "not_authorised", "Not management user")
        allowed_methods = False
        for method, pattern, fn, self_checked in self.routes:
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
                if "vhost" in args and access.gated(req.parts):
                    access.vhost_gate(req, args["vhost"], args["vhost"] in self.ctx.broker.vhosts)
                if method != "GET" and not self_checked and not has_tag(req.user,
                                                                        "administrator"):
                    raise access.not_admin()
                resp = fn(self, req, **args)
                if method != "GET":
                    self._wait_durable()
                elif req.query.get("columns"):
                    resp = _columns(resp, req.query["columns"])
                return resp
        if allowed_methods:
            raise HTTPError(405, "Method Not Allowed", "Method Not Allowed")
        raise not_found()

    def _wait_durable(self) -> None:
        """A change that journaled a durable record (a declare, delete, binding, definitions
        import; later policies and parameters) is answered only once it is fsynced, as the
        AMQP methods are (``Durability.take_changed``, ``methods.durable_reply``)."""
        d = self.ctx.broker.durability
        if d is not None and d.take_changed():
            err = d.wait_durable(JOURNAL_WAIT)
            if err is not None:
                raise HTTPError(500, "internal_error", f"journal write failed: {err}")

    def listing(self, req: Request, objs: list, name_of: Callable[[Any], str],
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

    def sees_all(self, user: User) -> bool:
        return has_tag(user, "administrator", "monitoring")

    def visible(self, user: User, vhost: str) -> bool:
        return self.sees_all(user) or vhost in user.permissions

    def visible_vhosts(self, req: Request, vhost: str | None = None) -> list[VirtualHost]:
        """The vhosts a listing covers: one (404 if unknown or not visible) or all visible."""
        broker = self.ctx.broker
        if vhost is not None:
            vh = broker.vhosts.get(vhost)
            if vh is None or not self.visible(req.user, vhost):
                raise not_found()
            return [vh]
        return [vh for name, vh in sorted(list(broker.vhosts.items()))
                if self.visible(req.user, name)]

    def need_admin(self, req: Request) -> None:
        if not has_tag(req.user, "administrator"):
            raise access.not_admin()

    def vhost_or_404(self, name: str, reason: str | None = None) -> VirtualHost:
        """The vhost ``name``; unknown: 404, RabbitMQ's ``not_found``/``reason`` when given
        (what its declares answer) or else its plain "Object Not Found"."""
        vh = self.ctx.broker.vhosts.get(name)
        if vh is None:
            raise HTTPError(404, "not_found", reason) if reason else not_found()
        return vh

    def message_stats(self) -> dict[str, Any]:
        counts = state.with_deliver_get(state.channel_totals(self.ctx))
        counts = self.rates.monotonic("overview", counts)
        return state.with_details(counts, self.rates.rates("overview", counts))

    def _history_sample(self) -> dict[str, int]:
        """One sample for :attr:`history`: the broker-wide counters and queue depths (and,
        on the same tick, one of each queue in :attr:`queue_history`)."""
        self.queue_history.record()
        counts = state.with_deliver_get(state.channel_totals(self.ctx))
        counts = self.rates.monotonic("history", counts)
        counts.update(self.queue_totals(list(self.ctx.broker.vhosts.values())))
        return counts

    def _queue_sample(self, key: tuple[str, str]) -> dict[str, int] | None:
        """One sample of a watched queue (None once it is gone): its counters, as its
        ``message_stats``, and its depths."""
        vh = self.ctx.broker.vhosts.get(key[0])
        q = vh.queues.get(key[1]) if vh is not None else None
        if q is None:
            return None
        counts = self.rates.monotonic(("queue", q.vhost, q.name), state.queue_counts(q))
        ready, unacked = view.depth(q)
        counts.update(messages=ready + unacked, messages_ready=ready,
                      messages_unacknowledged=unacked)
        return counts

    def with_samples(self, req: Request, stats: dict[str, Any], prefix: str,
                      counter: bool, queue: tuple[str, str] | None = None) -> dict[str, Any]:
        """Add RabbitMQ's ``samples``/``avg_rate`` to each ``*_details`` of ``stats`` when the
        request asks for them with ``?{prefix}_age=&{prefix}_incr=``: the broker-wide
        history, or with ``queue`` (vhost, name) that queue's (which watches it)."""
        h = self.history
        try:
            asked = history.age_and_incr(req.query, prefix, h.keep, h.interval)
        except ValueError as e:
            raise bad_request(str(e)) from None
        if asked is None:
            return stats
        if queue is None:
            samples = h.samples
        else:
            self.queue_history.watch(queue)
            samples = functools.partial(self.queue_history.samples, queue)
        for key in [k for k in stats if not k.endswith("_details")]:
            d = stats.get(key + "_details")
            if isinstance(d, dict):
                d.update(history.details(samples(key, *asked), counter))
        return stats

    def queue_totals(self, vhosts: list[VirtualHost]) -> dict[str, int]:
        ready = unacked = 0
        for vh in vhosts:
            for q in list(vh.queues.values()):
                r, u = view.depth(q)
                ready += r
                unacked += u
        return {"messages": ready + unacked, "messages_ready": ready,
                "messages_unacknowledged": unacked}

    def get_exchange(self, req: Request, vhost: str, name: str):
        vh = self.visible_vhosts(req, vhost)[0]
        ex = vh.exchanges.get("" if name == "amq.default" else name)
        if ex is None:
            raise not_found()
        return vh, ex

    def get_queue(self, req: Request, vhost: str, name: str) -> tuple[VirtualHost, Queue]:
        vh = self.visible_vhosts(req, vhost)[0]
        q = vh.queues.get(name)
        if q is None:
            raise not_found()
        return vh, q

    def drop_queue(self, vh: VirtualHost, q: Queue) -> None:
        """Delete ``q`` as queue.delete does, and tell its consumers (on their workers)."""
        deleted = vh.delete_queue_object(q)
        if deleted:
            for c in deleted[1]:
                _submit(c.channel.session, c.channel.consumer_cancelled, c)

    def sessions(self, req: Request, vhost: str | None = None) -> list[Session]:
        """The open connections ``req.user`` may list, as RabbitMQ's
        ``filter_conn_ch_list``: an ``administrator`` or ``monitoring`` user every one, any
        other only its own (whatever its vhosts). Of one ``vhost``: 404 if it does not
        exist, 401 "User not authorised to access virtual host" if the user (whatever its
        tags) has no permissions on it (``is_authorized_vhost``)."""
        sessions = open_sessions(self.ctx)
        if vhost is not None:
            if vhost not in self.ctx.broker.vhosts:
                raise not_found()
            access.vhost_gate(req, vhost, True)
            sessions = [s for s in sessions if s.vhost.name == vhost]
        if self.sees_all(req.user):
            return sessions
        return [s for s in sessions if s.username == req.user.name]

    def may_see(self, req: Request, username: str) -> None:
        """401 "User not authorised to access object" unless ``req.user`` may read (or, for
        a DELETE, close) a connection or channel of ``username``: its own, or any with
        ``monitoring``/``administrator`` (DELETE: ``administrator``), as RabbitMQ's
        ``is_authorized_user``."""
        tags = ("administrator",) if req.method == "DELETE" else ("administrator", "monitoring")
        if username != req.user.name and not has_tag(req.user, *tags):
            raise HTTPError(401, "not_authorised", "User not authorised to access object")

    def find_session(self, req: Request, name: str) -> Session:
        """The open connection ``name`` (404), if ``req.user`` may see it (:meth:`may_see`)."""
        for s in open_sessions(self.ctx):
            if connection_name(s) == name:
                self.may_see(req, s.username)
                return s
        raise not_found()

    def close(self, s: Session, text: str) -> None:
        log.info("closing connection via the management API: %s", text,
                 extra={"peer": connection_name(s), "user": s.username,
                        "vhost": s.vhost.name if s.vhost else None,
                        "reply_code": CONNECTION_FORCED})
        if self.ctx.close_connection is not None:
            self.ctx.close_connection(s, CONNECTION_FORCED, text)
        else:
            _submit(s, s.close, CONNECTION_FORCED, text)


def _columns(resp: Response, spec: str) -> Response:
    """``?columns=a,b.c``: only those fields of each object (RabbitMQ's ``columns``; a dotted
    column keeps its top-level field whole), for lists, pages and single objects."""
    cols = {c.split(".", 1)[0] for c in spec.split(",") if c}

    def pick(o: Any) -> Any:
        return {k: v for k, v in o.items() if k in cols} if isinstance(o, dict) else o

    body = resp.body
    if isinstance(body, list):
        body = [pick(o) for o in body]
    elif isinstance(body, dict) and isinstance(body.get("items"), list) and "page" in body:
        body = {**body, "items": [pick(o) for o in body["items"]]}
    elif isinstance(body, dict):
        body = pick(body)
    return Response(resp.status, body, resp.headers)

