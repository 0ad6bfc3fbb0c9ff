"""``POST /api/definitions``: check the whole file, then apply it (all or nothing).

:func:`plan` reads the JSON into a :class:`Plan` and raises :class:`DefinitionsError` naming
the first invalid object, having changed nothing; every check that declaring could fail on
is made there, with the functions the AMQP handlers use (argument and queue-type checks,
exchange types, headers-binding arguments, permission regexes), against the broker's
objects plus the file's own. :func:`apply` then creates the objects through the vhost
methods the AMQP handlers use; what it may still meet is an object that exists with other
properties (left as it is, as RabbitMQ does) or a binding whose ends do not exist (skipped).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import syncmq.management.users as users_mod
import syncmq.management.validate as validate

from ..broker.args import QUEUE_TYPES, check_declare_arguments, check_queue_type
from ..broker.auth import Permission, User
from ..broker.exchange import EXCHANGE_TYPES
from ..broker.federation import FEDERATION_UPSTREAM
from ..broker.federation import check_arguments as check_federation_arguments
from ..broker.parameters import HIDDEN_COMPONENTS, ParameterError
from ..broker.policies import PolicyError
from ..broker.routing import validate_headers_binding
from ..broker.user_rules import LimitError, TopicPermission, check_regex, validate_limits
from ..wire.errors import AMQPChannelError, AMQPConnectionError
from .errors import HTTPError
from .resources import policies
from .state import Context

log = logging.getLogger("syncmq.management")

_SYSTEM_PREFIX = "amq."


class DefinitionsError(ValueError):
    """The uploaded definitions cannot be applied; the message says which object and why."""


@dataclass
class Plan:
    vhosts: list[str] = field(default_factory=list)
    users: list[User] = field(default_factory=list)
    permissions: list[tuple[str, str, Permission]] = field(default_factory=list)
    # (user, vhost, exchange, TopicPermission); users' limits: name -> limits
    topic_permissions: list[tuple] = field(default_factory=list)
    limits: dict[str, dict[str, int]] = field(default_factory=dict)
    exchanges: list[tuple] = field(default_factory=list)  # (vhost, name, type, d, ad, i, args)
    queues: list[tuple] = field(default_factory=list)  # (vhost, name, durable, ad, args)
    bindings: list[tuple] = field(default_factory=list)  # (vhost, src, dest, dtype, key, args)
    parameters: list[tuple] = field(default_factory=list)  # (component, vhost, name, value)
    global_parameters: list[tuple] = field(default_factory=list)  # (name, value)
    policies: list[tuple] = field(default_factory=list)  # (vhost, name, value)


def _list(defs: dict, key: str) -> list[dict]:
    items = defs.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise DefinitionsError(f"'{key}' must be a list of objects")
    return items


def _str(item: dict, key: str, what: str, default: str | None = None) -> str:
    v = item.get(key, default)
    if not isinstance(v, str):
        raise DefinitionsError(f"{what}: '{key}' must be a string")
    if len(v.encode("utf-8", "surrogatepass")) > 255 and key in ("name", "vhost"):
        raise DefinitionsError(f"{what}: '{key}' is longer than 255 bytes")
    return v


def _bool(item: dict, key: str, what: str, default: bool) -> bool:
    """``validate.boolean`` (the rule PUT uses), its error named for the import."""
    try:
        return validate.boolean(item, key, default)
    except HTTPError:
        raise DefinitionsError(f"{what}: not_boolean: {key} must be true or false, "
                               f"not {json.dumps(item[key])}") from None


def _args(item: dict, what: str) -> dict:
    """The item's arguments, an AMQP field table checked as PUT checks it (the journal
    could not write a value that is not one, after the object was already in memory)."""
    if not isinstance(item.get("arguments") or {}, dict):
        raise DefinitionsError(f"{what}: 'arguments' must be an object")
    try:
        return validate.arguments(item)
    except HTTPError as e:
        raise DefinitionsError(f"{what}: {e.reason}") from None


def plan(ctx: Context, defs: Any) -> Plan:
    """Check everything; raises DefinitionsError for the first invalid object."""
    if not isinstance(defs, dict):
        raise DefinitionsError("definitions must be a JSON object")
    p = Plan()
    for v in _list(defs, "vhosts"):
        name = _str(v, "name", "vhost")
        if not name:
            raise DefinitionsError("vhost: 'name' must not be empty")
        p.vhosts.append(name)
    p.users = [_user(u) for u in _list(defs, "users")]
    vhosts = set(ctx.broker.vhosts) | set(p.vhosts)
    users = set(ctx.broker.users.users) | {u.name for u in p.users}
    p.permissions = [_permission(x, users, vhosts) for x in _list(defs, "permissions")]
    p.limits = {u["name"]: _limits(u) for u in _list(defs, "users") if "limits" in u}
    p.topic_permissions = [_topic_permission(x, users, vhosts)
                           for x in _list(defs, "topic_permissions")]
    types: dict[tuple[str, str], str] = {}
    for e in _list(defs, "exchanges"):
        x = _exchange(ctx, e, vhosts)
        if x is not None:
            p.exchanges.append(x)
            types[(x[0], x[1])] = x[2]
    p.queues = [_queue(q, vhosts) for q in _list(defs, "queues")]
    p.policies = [_policy(ctx, x, vhosts) for x in _list(defs, "policies")]
    for b in _list(defs, "bindings"):
        x = _binding(ctx, b, vhosts, types)
        if x is not None:
            p.bindings.append(x)
    p.parameters = [_parameter(ctx, x, vhosts) for x in _list(defs, "parameters")]
    p.global_parameters = [_global_parameter(x) for x in _list(defs, "global_parameters")]
    return p


def _parameter(ctx: Context, x: dict, vhosts: set[str]) -> tuple:
    """A runtime parameter, checked by the store's own validation (``Parameters.validate``:
    known component, its validator) against the file's vhosts as well as the broker's."""
    component, name = _str(x, "component", "parameter"), _str(x, "name", "parameter")
    what = f"parameter '{name}' of component '{component}'"
    vname = _vhost(x, vhosts, what)
    if "value" not in x:
        raise DefinitionsError(f"{what}: 'value' is missing")
    if component in HIDDEN_COMPONENTS:
        raise DefinitionsError(f"{what}: policies may not be set using this method "
                               "(put them under 'policies')")
    try:
        ctx.broker.parameters.validate(component, vname, name, x["value"], check_vhost=False)
    except ParameterError as e:
        raise DefinitionsError(f"{what}: {str(e).strip()}") from None
    return component, vname, name, x["value"]


def _global_parameter(x: dict) -> tuple:
    name = _str(x, "name", "global parameter")
    if "value" not in x:
        raise DefinitionsError(f"global parameter '{name}': 'value' is missing")
    return name, x["value"]
def _policy(ctx: Context, x: dict, vhosts: set[str]) -> tuple:
    """A policy (RabbitMQ's export shape), checked as ``PUT /api/policies`` checks it."""
    name = _str(x, "name", "policy")
    vname = _str(x, "vhost", f"policy '{name}'")
    if vname not in vhosts:
        raise DefinitionsError(f"policy '{name}' on unknown vhost '{vname}'")
    value = {k: x[k] for k in ("pattern", "definition", "priority", "apply-to") if k in x}
    value.setdefault("priority", 0)
    value.setdefault("apply-to", "all")
    try:
        ctx.broker.policies.validate("policy", vname, name, value)
    except PolicyError as e:
        raise DefinitionsError(f"policy '{name}' in vhost '{vname}': {e}".strip()) from None
    return vname, name, value


def _user(u: dict) -> User:
    name = _str(u, "name", "user")
    if not name:
        raise DefinitionsError("user: 'name' must not be empty")
    what = f"user '{name}'"
    if "password" in u and "password_hash" not in u:
        pw, hashed = _str(u, "password", what), None
    else:
        algo = u.get("hashing_algorithm", users_mod.SHA256)
        if algo != users_mod.SHA256:
            raise DefinitionsError(f"{what}: hashing_algorithm '{algo}' is not supported "
                                   f"(syncmq verifies {users_mod.SHA256} hashes only)")
        pw, hashed = None, _str(u, "password_hash", what, "")
    try:
        tags = users_mod.parse_tags(u.get("tags"))
        return users_mod.make_user(name, password=pw, password_hash=hashed, tags=tags)
    except ValueError as e:
        raise DefinitionsError(f"{what}: {e}") from None


def _permission(x: dict, users: set[str], vhosts: set[str]) -> tuple[str, str, Permission]:
    user, vh = _str(x, "user", "permission"), _str(x, "vhost", "permission")
    if user not in users:
        raise DefinitionsError(f"permission for unknown user '{user}'")
    if vh not in vhosts:
        raise DefinitionsError(f"permission of user '{user}' on unknown vhost '{vh}'")
    what = f"permission of user '{user}' on vhost '{vh}'"
    try:
        return user, vh, Permission(*(_str(x, k, what) for k in ("configure", "write", "read")))
    except (re.error, RecursionError, OverflowError) as e:
        raise DefinitionsError(f"{what}: invalid regular expression: {e}") from None


def _limits(u: dict) -> dict[str, int]:
    try:
        return validate_limits(u["limits"])
    except LimitError as e:
        raise DefinitionsError(f"user '{u['name']}': limits: {e}") from None


def _topic_permission(x: dict, users: set[str], vhosts: set[str]) -> tuple:
    """A topic permission: RabbitMQ refuses an unknown user or vhost and a bad regex."""
    user, vh = _str(x, "user", "topic permission"), _str(x, "vhost", "topic permission")
    what = f"topic permission of user '{user}' in vhost '{vh}'"
    exchange = _str(x, "exchange", what)
    write, read = _str(x, "write", what), _str(x, "read", what)
    if user not in users:
        raise DefinitionsError(f"topic permission for unknown user '{user}'")
    if vh not in vhosts:
        raise DefinitionsError(f"topic permission of user '{user}' on unknown vhost '{vh}'")
    for pattern in (write, read):
        why = check_regex(pattern)
        if why is not None:
            raise DefinitionsError(f"{what} on exchange '{exchange}': invalid regular "
                                   f"expression '{pattern}': {why}")
    return user, vh, exchange, TopicPermission(write, read, user, vh)


def _vhost(item: dict, vhosts: set[str], what: str) -> str:
    name = item.get("vhost", "/")
    if not isinstance(name, str) or name not in vhosts:
        raise DefinitionsError(f"{what}: no vhost '{name}'")
    return name


def _exchange(ctx: Context, e: dict, vhosts: set[str]) -> tuple | None:
    name = _str(e, "name", "exchange")
    what = f"exchange '{name}'"
    vname = _vhost(e, vhosts, what)
    etype = _str(e, "type", what, "direct")
    durable, ad = _bool(e, "durable", what, True), _bool(e, "auto_delete", what, False)
    internal, args = _bool(e, "internal", what, False), _args(e, what)
    vh = ctx.broker.vhosts.get(vname)
    exists = vh is not None and name in vh.exchanges
    if name == "" or (name.startswith(_SYSTEM_PREFIX) and exists):
        return None  # the predeclared exchanges
    if etype not in EXCHANGE_TYPES:
        raise DefinitionsError(f"{what}: unknown exchange type '{etype}'")
    if name.startswith(_SYSTEM_PREFIX):
        raise DefinitionsError(f"{what}: name contains reserved prefix 'amq.*'")
    if not isinstance(args.get("alternate-exchange", ""), str):
        raise DefinitionsError(f"{what}: invalid arg 'alternate-exchange'")
    if etype == FEDERATION_UPSTREAM:
        try:
            check_federation_arguments(args)
        except AMQPChannelError as e:
            raise DefinitionsError(f"{what}: {_reason(e)}") from None
    return vname, name, etype, durable, ad, internal, args


def _queue(q: dict, vhosts: set[str]) -> tuple:
    name = _str(q, "name", "queue")
    what = f"queue '{name}'"
    vname = _vhost(q, vhosts, what)
    durable, ad = _bool(q, "durable", what, True), _bool(q, "auto_delete", what, False)
    args = _args(q, what)
    qtype = q.get("type")  # newer exports name the type here as well as in x-queue-type
    if qtype is not None:
        if not isinstance(qtype, str) or qtype not in QUEUE_TYPES:
            raise DefinitionsError(f"{what}: unsupported queue type '{qtype}'")
        if "x-queue-type" not in args and qtype != "classic":
            args = {**args, "x-queue-type": qtype}
    if name.startswith(_SYSTEM_PREFIX) and not name.startswith("amq.gen-"):
        raise DefinitionsError(f"{what}: name contains reserved prefix 'amq.*'")
    try:
        check_declare_arguments(name, vname, args)
        check_queue_type(name, vname, args, durable, False, ad)
    except AMQPChannelError as err:
        raise DefinitionsError(f"{what}: {_reason(err)}") from None
    return vname, name, durable, ad, args


def _binding(ctx: Context, b: dict, vhosts: set[str], types: dict) -> tuple | None:
    source, dest = _str(b, "source", "binding"), _str(b, "destination", "binding")
    what = f"binding of '{dest}' to '{source}'"
    vname = _vhost(b, vhosts, what)
    dtype = _str(b, "destination_type", what, "queue")
    if dtype not in ("queue", "exchange"):
        raise DefinitionsError(f"{what}: destination_type must be 'queue' or 'exchange'")
    key, args = _str(b, "routing_key", what, ""), _args(b, what)
    if source == "":
        return None  # the default exchange's bindings are implicit
    vh = ctx.broker.vhosts.get(vname)
    ex = vh.exchanges.get(source) if vh is not None else None
    etype = types.get((vname, source)) or (ex.type if ex is not None else None)
    if etype == "headers":
        err = validate_headers_binding(args)
        if err:
            raise DefinitionsError(f"{what}: {err}")
    return vname, source, dest, dtype, key, args


def apply(ctx: Context, p: Plan) -> dict[str, int]:
    """Create what ``p`` holds; returns how many objects of each kind were created."""
    broker = ctx.broker
    counts = {"vhosts": sum(name not in broker.vhosts for name in set(p.vhosts)),
              "users": len(p.users), "permissions": len(p.permissions),
              "topic_permissions": len(p.topic_permissions),
              "exchanges": 0, "queues": 0, "bindings": 0}

    def change(users: dict, vhosts: list[str] | None) -> None:
        for nu in p.users:
            old = users.get(nu.name)
            if old is not None:
                nu.permissions = dict(old.permissions)
                nu.loopback_only = old.loopback_only
                nu.topic_permissions = old.topic_permissions
                nu.limits = old.limits
            users[nu.name] = nu
        for user, vh, perm in p.permissions:
            users[user].permissions[vh] = perm
        for name, limits in p.limits.items():  # merged, as RabbitMQ's set_user_limits
            users[name].limits = {**users[name].limits, **limits}
        for user, vh, exchange, tp in p.topic_permissions:
            u = users[user]
            u.topic_permissions[vh] = {**u.topic_permissions.get(vh, {}), exchange: tp}
        if vhosts is not None:
            vhosts.extend(n for n in dict.fromkeys(p.vhosts) if n not in vhosts)

    # the users file (users, rules, the vhost list) first: a file that cannot be written
    # refuses the import (500) before anything of it exists
    users_mod.update(broker, change)
    for name in p.vhosts:
        broker.create_vhost(name)
    # policies before the objects, as RabbitMQ imports them: each gets its policy at declare
    for vname, name, value in p.policies:
        policies.store_set(broker, "policy", vname, name, value, None)
    counts["policies"] = len(p.policies)
    for vname, name, etype, durable, ad, internal, args in p.exchanges:
        created = _declare(broker.vhosts[vname].declare_exchange, "exchange", name, vname,
                           name, etype, False, durable, ad, internal, args)
        counts["exchanges"] += created
    for vname, name, durable, ad, args in p.queues:
        created = _declare(broker.vhosts[vname].declare_queue, "queue", name, vname,
                           name, False, durable, False, ad, args, None,
                           server_named=name.startswith("amq.gen-"))
        counts["queues"] += created
    for vname, source, dest, dtype, key, args in p.bindings:
        counts["bindings"] += _bind(broker.vhosts[vname], source, dest, dtype, key, args)
    # runtime parameters last, as at recovery: a component's apply finds the objects
    counts["parameters"] = counts["global_parameters"] = 0
    store = broker.parameters
    for component, vname, name, value in p.parameters:
        try:
            store.set(component, vname, name, value)
            counts["parameters"] += 1
        except ParameterError as e:  # checked in plan(); only a race can get here
            log.warning("definitions: parameter '%s' of component '%s' in vhost '%s' not "
                        "set: %s", name, component, vname, str(e).strip())
    for name, value in p.global_parameters:
        try:
            store.set_global(name, value)
            counts["global_parameters"] += 1
        except ParameterError as e:
            log.warning("definitions: global parameter '%s' not set: %s", name, e)
    return counts


def _declare(fn, kind: str, name: str, vname: str, *args: Any, **kw: Any) -> bool:
    """One declare; an existing object with other properties is left as it is."""
    try:
        return fn(*args, **kw)[1]
    except (AMQPChannelError, AMQPConnectionError) as err:
        log.warning("definitions: %s '%s' in vhost '%s' not declared: %s; left as it is",
                    kind, name, vname, _reason(err))
        return False


def _bind(vh, source: str, dest: str, dtype: str, key: str, args: dict) -> int:
    target = (vh.queues if dtype == "queue" else vh.exchanges).get(dest)
    what = f"binding of {dtype} '{dest}' to '{source}'"
    if target is None or source not in vh.exchanges:
        # e.g. rabbitmqctl export_definitions leaves internal exchanges out but keeps
        # their bindings: skip what cannot be bound rather than refuse the whole file.
        missing = f"{dtype} '{dest}'" if target is None else f"exchange '{source}'"
        log.warning("definitions: %s skipped: no %s in vhost '%s'", what, missing, vh.name)
        return 0
    try:
        vh.bind(source, target, key, args)
    except AMQPChannelError as err:
        log.warning("definitions: %s skipped: %s", what, _reason(err))
        return 0
    return 1


def _reason(err: Exception) -> str:
    text = getattr(err, "reply_text", str(err))
    return text.split(" - ", 1)[1] if " - " in text else text
