"""``/api/overview``, nodes, ``whoami``, ``cluster-name``, health checks and the aliveness test.

Each endpoint is ``fn(api, req, **path_args) -> Response``; ``api`` is the shared
:class:`~..api.API` (visibility, listings, counters)."""

from __future__ import annotations

import logging
import os
import platform
import socket
import time
from typing import TYPE_CHECKING, Any

import syncmq.management.state as state

from ...broker.exchange import EXCHANGE_TYPES
from ...broker.federation import DESCRIPTION as FEDERATION_DESCRIPTION
from ...broker.federation import FEDERATION_UPSTREAM
from ...broker.message import Message
from ...broker.publish import publish as broker_publish
from .. import access
from ..common import (
    Request,
    Response,
)
from ..errors import HTTPError, not_found
from ..state import open_sessions

if TYPE_CHECKING:
    from ..api import API

log = logging.getLogger("syncmq.management")


def overview(api: API, req: Request) -> Response:
    ctx = api.ctx
    vhosts = api.visible_vhosts(req)
    names = {vh.name for vh in vhosts}
    sessions = [s for s in open_sessions(ctx) if s.vhost.name in names]
    channels = sum(len(s.channels) for s in sessions)
    consumers = sum(len(ch.consumers) for s in sessions for ch in list(s.channels.values()))
    totals = api.queue_totals(vhosts)
    qt = state.with_details(totals, api.rates.rates("queue_totals", totals))
    return Response(200, {
        "management_version": ctx.version,
        "rates_mode": "basic",
        "exchange_types": _exchange_types(),
        "product_version": ctx.version,
        "product_name": "syncmq",
        "rabbitmq_version": ctx.version,
        "cluster_name": ctx.cluster_name,
        "python_version": platform.python_version(),
        "disable_stats": False,
        "enable_queue_totals": False,
        "message_stats": api.with_samples(req, api.message_stats(), "msg_rates", True),
        "queue_totals": api.with_samples(req, qt, "lengths", False),
        "object_totals": {
            "connections": len(sessions),
            "channels": channels,
            "exchanges": sum(len(vh.exchanges) for vh in vhosts),
            "queues": sum(len(vh.queues) for vh in vhosts),
            "consumers": consumers,
        },
        "statistics_db_event_queue": 0,
        "churn_rates": _churn_rates(api),
        # RabbitMQ's default retention (s) of sampled statistics, which its UI reads
        "sample_retention_policies": {"global": [600, 3600, 28800, 86400],
                                      "basic": [600, 3600], "detailed": [600]},
        "node": ctx.node,
        "listeners": [dict(li, node=ctx.node) for li in ctx.listeners],
        "contexts": [],
    })


# RabbitMQ's churn_rates fields and the broker's event counters (``Broker.count``) behind them
_CHURN = (("channel_closed", "channels_closed"), ("channel_created", "channels_opened"),
          ("connection_closed", "connections_closed"),
          ("connection_created", "connections_opened"), ("queue_created", "queues_created"),
          ("queue_declared", "queues_declared"), ("queue_deleted", "queues_deleted"))


def _churn_rates(api: API) -> dict[str, Any]:
    """RabbitMQ's ``churn_rates``: node-wide counts of connections, channels and queues
    created and closed (deleted), with their rates."""
    events = api.ctx.broker.events
    counts = {field: events.get(event, 0) for field, event in _CHURN}
    return state.with_details(counts, api.rates.rates("churn", counts))


def _exchange_types() -> list[dict]:
    """RabbitMQ's ``exchange_types`` entries (x-federation-upstream as the federation plugin
    describes it)."""
    out = []
    for t in sorted(EXCHANGE_TYPES):
        if t == FEDERATION_UPSTREAM:
            out.append({"name": t, "description": FEDERATION_DESCRIPTION,
                        "internal_purpose": "federation", "enabled": True})
        else:
            out.append({"name": t, "description": f"AMQP {t} exchange", "enabled": True})
    return out


def cluster_name(api: API, req: Request) -> Response:
    return Response(200, {"name": api.ctx.cluster_name})


def whoami(api: API, req: Request) -> Response:
    return Response(200, {"name": req.user.name, "tags": list(req.user.tags)})


def _node(api: API) -> dict[str, Any]:
    ctx = api.ctx
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
        "os": platform.system(),  # rabbitmqctl status's name for it
        "uptime": int((time.time() - ctx.started_at) * 1000),
        "mem_used": ctx.broker.memory_used or state.resident_memory(),
        "mem_alarm": "memory" in ctx.broker.alarms,
        "disk_free": disk_free,
        "disk_free_alarm": "disk" in ctx.broker.alarms,
        "mem_limit": ctx.mem_limit,
        "mem_calculation_strategy": "rss",
        "disk_free_limit": ctx.disk_free_limit,
        # syncmq's own: bytes in the journal's segment files (0 without a data dir)
        "journal_bytes": (state.journal_bytes(ctx.data_dir) or 0) if ctx.data_dir else 0,
        "fd_used": fd_used,
        "fd_total": fd_total,
        # RabbitMQ's socket limit is the descriptors left after its reserve; syncmq's
        # connections may use every descriptor
        "sockets_used": len(ctx.sessions()),
        "sockets_total": fd_total,
        # RabbitMQ's Erlang processes are syncmq's threads; it starts no more than this
        "proc_used": threading.active_count(),
        "proc_total": _thread_limit(),
        "processors": os.cpu_count() or 1,
        "run_queue": 0,
        "rates_mode": "basic",
        "partitions": [],
        "db_dir": os.path.abspath(ctx.data_dir) if ctx.data_dir else "",
        "exchange_types": _exchange_types(),
        "auth_mechanisms": [{"name": m, "description": "", "enabled": True}
                            for m in ("PLAIN", "AMQPLAIN")],
        "applications": [{"name": "syncmq", "description": "AMQP 0-9-1 broker",
                          "version": ctx.version}],
        "enabled_plugins": ["management"],
        "being_drained": False,
        "config_files": list(ctx.config_files),
        "log_files": list(ctx.log_files),
    }


def memory_breakdown(api: API) -> dict[str, Any]:
    """RabbitMQ's ``memory`` of a node (``?memory=true``), by syncmq's categories: what the
    resource monitor last accounted (``syncmq.memory``: the process at start, queued
    messages' metadata and in-memory bodies, connections) and ``unaccounted`` (RSS beyond
    it: allocator slack, not yet returned); ``total`` has both figures, ``strategy`` says
    which one the memory alarm compares (RabbitMQ's key)."""
    parts = api.ctx.memory_parts()
    rss = state.resident_memory()
    accounted = parts.get("total", 0)
    out: dict[str, Any] = {k: parts.get(k, 0) for k in (
        "baseline", "message_metadata", "message_bodies", "connections")}
    out["unaccounted"] = max(0, rss - accounted)
    out["strategy"] = "accounted"
    out["total"] = {"accounted": accounted, "rss": rss}
    store = getattr(api.ctx.broker, "body_store", None)
    if store is not None:  # --memory-budget: bodies beyond it are on disk, not in memory
        st = store.stats()
        out["budget"] = {k: st[k] for k in ("budget", "memory_bytes", "spilled_messages",
                                            "spilled_bytes", "spill_file_bytes")}
    return out


def _thread_limit() -> int:
    """How many threads this process may have (``RLIMIT_NPROC``, else the kernel's
    ``threads-max``; 0 if neither is known)."""
    import resource
    soft = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    if soft != resource.RLIM_INFINITY:
        return soft
    try:
        with open("/proc/sys/kernel/threads-max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def nodes(api: API, req: Request) -> Response:
    return Response(200, [_node(api)])


def node_names(ctx: state.Context) -> set[str]:
    """Every name this node answers to: its own (``syncmq@host``) and RabbitMQ's
    ``rabbit@host``, each with the host's short name, full name and ``localhost``."""
    host = ctx.node.partition("@")[2] or "localhost"
    hosts = {host, host.split(".")[0], socket.getfqdn(host), "localhost"}
    return {ctx.node} | {f"{p}@{h}" for p in ("syncmq", "rabbit") for h in hosts}


def is_this_node(ctx: state.Context, name: str) -> bool:
    return name in node_names(ctx)


def node(api: API, req: Request, node: str) -> Response:
    if not is_this_node(api.ctx, node):
        raise not_found()
    out = _node(api)
    if req.query.get("memory") == "true":  # as RabbitMQ: only when asked (it walks state)
        out["memory"] = memory_breakdown(api)
    return Response(200, out)


def aliveness(api: API, req: Request, vhost: str) -> Response:
    """Declare ``aliveness-test`` in the vhost, publish a message to it and get it back."""
    vh = api.visible_vhosts(req, vhost)[0]
    text = access.refused_text(req, vhost)
    access.resource(req, vhost, [(what, "queue", "aliveness-test")
                                 for what in ("configure", "write", "read")],
                    lambda *r: HTTPError(401, "not_authorised", text(*r)))
    q, _ = vh.declare_queue("aliveness-test", False, False, False, False, None, None)
    broker_publish(vh, vh.default_exchange,  # the broker's one publish, to this queue only
                   Message("", "aliveness-test", b"\x00\x00", b"test_message"), queues=[q])
    got = q.get(True)
    if got is None or got[1].body != b"test_message":
        return Response(503, {"status": "failed", "reason": "message not received"})
    return Response(200, {"status": "ok"})
