"""RabbitMQ's definitions JSON (``GET``/``POST /api/definitions``), both ways.

Export writes what ``rabbitmqctl export_definitions`` and the management API write (RabbitMQ
3.x): users with ``password_hash`` in base64 and ``hashing_algorithm``
``rabbit_password_hashing_sha256``, vhosts, permissions, queues (not exclusive ones),
exchanges (not the default or ``amq.*`` ones), bindings (not the default exchange's
implicit ones), topic permissions and users' limits (as RabbitMQ: a ``limits`` object in
each user), policies (``policies``, RabbitMQ's shape), runtime parameters (``parameters``:
every component but ``policy``, as RabbitMQ; operator policies are there) and global
parameters (``global_parameters``, as stored: syncmq generates no
``internal_cluster_id`` or ``cluster_name`` of its own), plus the empty lists syncmq has
nothing for, so that RabbitMQ imports it.

Import (:mod:`.definitions_import`) merges as RabbitMQ does: missing objects are created,
users and permissions are overwritten, and a conflicting queue/exchange/binding (one that
exists with other properties) is left as it is; a binding whose source or destination does
not exist is skipped with a warning (``rabbitmqctl export_definitions`` drops internal
exchanges but keeps their bindings). Unlike RabbitMQ, an import is all or nothing: the whole
file is checked first and nothing is applied unless every object is valid.
"""

from __future__ import annotations

from typing import Any

import syncmq.management.users as users_mod
import syncmq.management.view as view

from ..broker.exchange import Exchange
from ..broker.parameters import HIDDEN_COMPONENTS
from ..broker.queue import Queue
from .resources.user_rules import topic_rows
from .state import Context

_SYSTEM_EXCHANGE_PREFIX = "amq."


def export(ctx: Context) -> dict[str, Any]:
    broker = ctx.broker
    store = broker.users
    users, permissions = [], []
    for u in list(store.users.values()):
        users.append({
            "name": u.name,
            "password_hash": users_mod.to_base64(u.password_hash),
            "hashing_algorithm": users_mod.SHA256,
            "tags": list(u.tags),
            "limits": dict(sorted(u.limits.items())),
        })
        for vh, p in u.permissions.items():
            permissions.append({"user": u.name, "vhost": vh, "configure": p.configure,
                                "write": p.write, "read": p.read})
    vhosts, queues, exchanges, bindings = [], [], [], []
    for vname, vh in sorted(list(broker.vhosts.items())):
        vhosts.append({"name": vname, "limits": [],
                       "metadata": {"description": "", "tags": []}})
        for q in list(vh.queues.values()):
            if q.exclusive_owner is not None:
                continue
            queues.append({"name": q.name, "vhost": vname, "durable": q.durable,
                           "auto_delete": q.auto_delete, "arguments": dict(q.arguments),
                           "type": view.queue_type(q)})
        for ex in list(vh.exchanges.values()):
            if ex.name == "" or ex.name.startswith(_SYSTEM_EXCHANGE_PREFIX):
                if ex.name:
                    bindings.extend(_bindings_of(ex, vname))
                continue
            exchanges.append({"name": ex.name, "vhost": vname, "type": ex.type,
                              "durable": ex.durable, "auto_delete": ex.auto_delete,
                              "internal": ex.internal, "arguments": dict(ex.arguments)})
            bindings.extend(_bindings_of(ex, vname))
    return {
        "rabbit_version": ctx.version,
        "rabbitmq_version": ctx.version,
        "product_name": "syncmq",
        "product_version": ctx.version,
        "users": users,
        "vhosts": vhosts,
        "permissions": permissions,
        "topic_permissions": topic_rows(store),
        "parameters": [p for p in broker.parameters.list()
                       if p["component"] not in HIDDEN_COMPONENTS],
        "global_parameters": broker.parameters.list_global(),
        "policies": [p.listing() for p in broker.policies.list("policy")],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    }


# A vhost's definitions (``GET``/``POST /api/definitions/{vhost}``, rabbitmqadmin's ``-V``):
# the kinds RabbitMQ 3.10 writes there; queues, exchanges and bindings without their
# ``vhost`` (and queues without ``type``, as 3.10), parameters and policies with it.
VHOST_KINDS = ("parameters", "policies", "queues", "exchanges", "bindings")


def export_vhost(ctx: Context, vname: str) -> dict[str, Any]:
    """The definitions of one vhost, in RabbitMQ 3.10's shape (see VHOST_KINDS)."""
    whole = export(ctx)
    out: dict[str, Any] = {"rabbit_version": ctx.version}
    for kind in VHOST_KINDS:
        keep = kind in ("parameters", "policies")
        out[kind] = [{k: v for k, v in o.items()
                      if keep or k not in ("vhost", "type")}
                     for o in whole[kind] if o.get("vhost") == vname]
    return out


def for_vhost(defs: Any, vname: str) -> Any:
    """A vhost's definitions as a whole file would hold them: the kinds of VHOST_KINDS, each
    object placed in ``vname`` (whatever vhost it names, as RabbitMQ); other kinds (users,
    vhosts, permissions) are ignored, as RabbitMQ ignores them. Anything not an object is
    returned as it is, for the importer to refuse."""
    if not isinstance(defs, dict):
        return defs
    out: dict[str, Any] = {}
    for kind in VHOST_KINDS:
        items = defs.get(kind)
        if isinstance(items, list):
            items = [{**o, "vhost": vname} if isinstance(o, dict) else o for o in items]
        if items is not None:
            out[kind] = items
    return out


def _bindings_of(ex: Exchange, vname: str) -> list[dict]:
    out = []
    for dest, key, args in ex.matcher.bindings():
        if isinstance(dest, Queue) and dest.exclusive_owner is not None:
            continue
        out.append({"source": ex.name, "vhost": vname, "destination": dest.name,
                    "destination_type": "queue" if isinstance(dest, Queue) else "exchange",
                    "routing_key": key, "arguments": args})
    return out
