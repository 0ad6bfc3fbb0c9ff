"""RabbitMQ's definitions JSON (``GET``/``POST /api/definitions``), both ways.

Export writes what ``rabbitmqctl export_definitions`` and the management API write (RabbitMQ
3.x): users with ``password_hash`` in base64 and ``hashing_algorithm``
``rabbit_password_hashing_sha256``, vhosts, permissions, queues (not exclusive ones),
exchanges (not the default or ``amq.*`` ones) and bindings (not the default exchange's
implicit ones), plus the empty lists syncmq has nothing for (policies, parameters, topic
permissions), so that RabbitMQ imports it.

Import merges as RabbitMQ does: missing objects are created, users and permissions are
overwritten, and a conflicting queue/exchange/binding (one that exists with other properties)
is left as it is; a binding whose source or destination does not exist is skipped with a
warning (``rabbitmqctl export_definitions`` drops internal exchanges but keeps their
bindings). Queues, exchanges and bindings are declared through the same vhost methods
the AMQP handlers use.
"""

from __future__ import annotations

import logging
from typing import Any

import syncmq.management.users as users_mod

from ..broker.exchange import Exchange
from ..broker.queue import Queue
from ..wire.errors import AMQPChannelError, AMQPConnectionError
from .state import Context

log = logging.getLogger("syncmq.management")

_SYSTEM_EXCHANGE_PREFIX = "amq."


class DefinitionsError(ValueError):
    """The uploaded definitions cannot be applied; the message says which object and why."""


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
            "limits": {},
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
                           "type": "classic"})
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
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    }


def _bindings_of(ex: Exchange, vname: str) -> list[dict]:
    out = []
    for dest, key, args in ex.matcher.bindings():
        if isinstance(dest, Queue) and dest.exclusive_owner is not None:
            continue
        out.append({"source": ex.name, "vhost": vname, "destination": dest.name,
                    "destination_type": "queue" if isinstance(dest, Queue) else "exchange",
                    "routing_key": key, "arguments": args})
    return out


def _list(defs: dict, key: str) -> list[dict]:
    items = defs.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise DefinitionsError(f"'{key}' must be a list of objects")
    return items


def _str(item: dict, key: str, what: str, default: str | None = None) -> str:
    v = item.get(key, default)
    if not isinstance(v, str):
        raise DefinitionsError(f"{what}: '{key}' must be a string")
    return v


def import_(ctx: Context, defs: Any) -> dict[str, int]:
    """Apply ``defs``; returns how many objects of each kind were created or updated."""
    if not isinstance(defs, dict):
        raise DefinitionsError("definitions must be a JSON object")
    broker = ctx.broker
    counts = {"vhosts": 0, "users": 0, "permissions": 0, "exchanges": 0, "queues": 0,
              "bindings": 0}

    vhost_names = [_str(v, "name", "vhost") for v in _list(defs, "vhosts")]
    new_users = []
    for u in _list(defs, "users"):
        name = _str(u, "name", "user")
        algo = u.get("hashing_algorithm", users_mod.SHA256)
        if "password" in u and "password_hash" not in u:
            pw, hashed = _str(u, "password", f"user '{name}'"), None
        else:
            if algo != users_mod.SHA256:
                raise DefinitionsError(
                    f"user '{name}': hashing_algorithm '{algo}' is not supported (syncmq "
                    f"verifies {users_mod.SHA256} hashes only)")
            pw, hashed = None, _str(u, "password_hash", f"user '{name}'", "")
        try:
            tags = users_mod.parse_tags(u.get("tags"))
            new_users.append(users_mod.make_user(name, password=pw, password_hash=hashed,
                                                 tags=tags))
        except ValueError as e:
            raise DefinitionsError(f"user '{name}': {e}") from None
    perms = []
    for p in _list(defs, "permissions"):
        what = "permission"
        perms.append((_str(p, "user", what), _str(p, "vhost", what),
                      users_mod.permission(_str(p, "configure", what), _str(p, "write", what),
                                           _str(p, "read", what))))

    for name in vhost_names:
        if name not in broker.vhosts:
            counts["vhosts"] += 1
        broker.add_vhost(name)
    known_vhosts = set(broker.vhosts)

    def change(users: dict, vhosts: list[str] | None) -> None:
        for nu in new_users:
            old = users.get(nu.name)
            if old is not None:
                nu.permissions = dict(old.permissions)
            users[nu.name] = nu
        for user, vh, perm in perms:
            if user not in users:
                raise DefinitionsError(f"permission for unknown user '{user}'")
            if vh not in known_vhosts:
                raise DefinitionsError(f"permission of user '{user}' on unknown vhost '{vh}'")
            users[user].permissions[vh] = perm
        if vhosts is not None:
            for name in vhost_names:
                if name not in vhosts:
                    vhosts.append(name)

    users_mod.update(broker, change)
    counts["users"], counts["permissions"] = len(new_users), len(perms)

    for e in _list(defs, "exchanges"):
        name = _str(e, "name", "exchange")
        vh = _vhost(ctx, e, f"exchange '{name}'")
        if name == "" or (name.startswith(_SYSTEM_EXCHANGE_PREFIX) and name in vh.exchanges):
            continue
        try:
            _, created = vh.declare_exchange(
                name, _str(e, "type", f"exchange '{name}'", "direct"), False,
                bool(e.get("durable", True)), bool(e.get("auto_delete", False)),
                bool(e.get("internal", False)), e.get("arguments") or {})
        except AMQPChannelError as err:
            if _conflict(err):
                log.warning("definitions: exchange '%s' in vhost '%s' exists with other "
                            "properties; left as it is", name, vh.name)
                continue
            raise DefinitionsError(f"exchange '{name}': {_reason(err)}") from None
        except AMQPConnectionError as err:
            raise DefinitionsError(f"exchange '{name}': {_reason(err)}") from None
        counts["exchanges"] += created

    for q in _list(defs, "queues"):
        name = _str(q, "name", "queue")
        vh = _vhost(ctx, q, f"queue '{name}'")
        try:
            _, created = vh.declare_queue(
                name, False, bool(q.get("durable", True)), False,
                bool(q.get("auto_delete", False)), q.get("arguments") or {}, None,
                server_named=name.startswith("amq.gen-"))
        except AMQPChannelError as err:
            if _conflict(err):
                log.warning("definitions: queue '%s' in vhost '%s' exists with other "
                            "properties; left as it is", name, vh.name)
                continue
            raise DefinitionsError(f"queue '{name}': {_reason(err)}") from None
        counts["queues"] += created

    for b in _list(defs, "bindings"):
        source = _str(b, "source", "binding")
        dest = _str(b, "destination", "binding")
        what = f"binding of '{dest}' to '{source}'"
        vh = _vhost(ctx, b, what)
        if source == "":
            continue  # the default exchange's bindings are implicit
        dtype = _str(b, "destination_type", what, "queue")
        target = (vh.queues if dtype == "queue" else vh.exchanges).get(dest)
        if target is None or source not in vh.exchanges:
            # e.g. rabbitmqctl export_definitions leaves internal exchanges out but keeps
            # their bindings: skip what cannot be bound rather than refuse the whole file.
            missing = f"{dtype} '{dest}'" if target is None else f"exchange '{source}'"
            log.warning("definitions: %s skipped: no %s in vhost '%s'", what, missing, vh.name)
            continue
        try:
            vh.bind(source, target, _str(b, "routing_key", what, ""), b.get("arguments") or {})
        except AMQPChannelError as err:
            raise DefinitionsError(f"{what}: {_reason(err)}") from None
        counts["bindings"] += 1
    return counts


def _vhost(ctx: Context, item: dict, what: str):
    name = item.get("vhost", "/")
    vh = ctx.broker.vhosts.get(name) if isinstance(name, str) else None
    if vh is None:
        raise DefinitionsError(f"{what}: no vhost '{name}'")
    return vh


def _conflict(err: AMQPChannelError) -> bool:
    return err.reply_code == 406  # PRECONDITION_FAILED: inequivalent arguments


def _reason(err: Exception) -> str:
    text = getattr(err, "reply_text", str(err))
    return text.split(" - ", 1)[1] if " - " in text else text
