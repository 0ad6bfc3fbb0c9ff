"""``syncmqctl`` verbs for topic permissions and user limits, with rabbitmqctl's argument
forms, banners and output (read off ``rabbitmqctl`` 3.10.8):

    set_topic_permissions [-p VHOST] USER EXCHANGE WRITE READ
    clear_topic_permissions [-p VHOST] USER [EXCHANGE]
    list_topic_permissions [-p VHOST]          # user, exchange, write, read
    list_user_topic_permissions USER           # vhost, exchange, write, read (no header)
    set_user_limits USER '{"max-connections": N, "max-channels": N}'   # merged
    clear_user_limits USER NAME|all
    list_user_limits [--user USER | --global]  # --user defaults to guest, as rabbitmqctl

Two forms of each: ``OFFLINE`` (``fn(store, args)``, editing ``--users-file``; ``syncmq.ctl``)
and ``REMOTE`` (``fn(client, args)``, through the management API; ``syncmq.ctl_remote``).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from .broker.auth import UserStore
from .broker.user_rules import LimitError, TopicPermission, check_regex, validate_limits
from .ctl_errors import CtlError, no_such_user, no_user, no_vhost, no_vhost_refused


class RuleError(CtlError):
    """Reported as ``Error: ...`` by either mode (its kind gives the exit code:
    ``syncmq.ctl_errors``)."""


def _regexes(args: Any) -> None:
    for pattern in (args.write, args.read):
        why = check_regex(pattern)
        if why is not None:
            raise RuleError(f"{{:invalid_regexp, {json.dumps(pattern)}, {why}}}")


def _limits_json(text: str) -> dict[str, int]:
    try:
        term = json.loads(text)
    except ValueError:
        raise RuleError("JSON decoding error. Reason: badarg") from None
    try:
        return validate_limits(term)
    except LimitError as e:
        raise RuleError(str(e)) from None


def _compact(limits: dict[str, int]) -> str:
    return json.dumps(dict(sorted(limits.items())), separators=(",", ":"))


# ---- offline: the users file ----

def _bare_user(name: str) -> CtlError:
    return no_user(name, quoted=False)


def user_named(store: UserStore, name: str, missing=no_user):
    """The users file's user ``name``, or ``missing(name)``: the verb's rabbitmqctl error, the
    one its remote form raises (also used by ``syncmq.ctl``)."""
    user = store.users.get(name)
    if user is None:
        raise missing(name)
    return user


def require_vhost(store: UserStore, vhost: str, missing=no_vhost) -> None:
    """``missing(vhost)`` (the verb's rabbitmqctl error) unless the users file has ``vhost``
    (also used by ``syncmq.ctl``)."""
    if vhost not in store.vhosts:
        raise missing(vhost)


def set_topic_permissions(store: UserStore, args: Any) -> bool:
    _regexes(args)
    user = user_named(store, args.username, _bare_user)
    require_vhost(store, args.vhost, no_vhost_refused)
    per = user.topic_permissions.setdefault(args.vhost, {})
    per[args.exchange] = TopicPermission(args.write, args.read, user.name, args.vhost)
    return True


def clear_topic_permissions(store: UserStore, args: Any) -> bool:
    user = user_named(store, args.username, _bare_user)
    require_vhost(store, args.vhost, no_vhost_refused)
    per = user.topic_permissions.get(args.vhost, {})
    if args.exchange is None:
        per.clear()
    else:
        per.pop(args.exchange, None)
    if not per:
        user.topic_permissions.pop(args.vhost, None)
    return True


def list_topic_permissions(store: UserStore, args: Any) -> list[str]:
    require_vhost(store, args.vhost)
    rows = ["user\texchange\twrite\tread"]
    for u in sorted(store.users.values(), key=lambda u: u.name):
        for x, t in sorted(u.topic_permissions.get(args.vhost, {}).items()):
            rows.append(f"{u.name}\t{x}\t{t.write}\t{t.read}")
    return rows


def list_user_topic_permissions(store: UserStore, args: Any) -> list[str]:
    user = user_named(store, args.username, no_such_user)
    return [f"{vh}\t{x}\t{t.write}\t{t.read}"
            for vh, per in sorted(user.topic_permissions.items())
            for x, t in sorted(per.items())]


def set_user_limits(store: UserStore, args: Any) -> bool:
    limits = _limits_json(args.definition)
    user = user_named(store, args.username, no_such_user)
    user.limits = {**user.limits, **limits}
    return True


def clear_user_limits(store: UserStore, args: Any) -> bool:
    user = user_named(store, args.username, no_such_user)
    user.limits = {} if args.limit == "all" else {
        k: v for k, v in user.limits.items() if k != args.limit}
    return True


def list_user_limits(store: UserStore, args: Any) -> list[str]:
    if args.global_:
        return ["user\tlimits"] + [f"{u.name}\t{_compact(u.limits)}"
                                   for u in sorted(store.users.values(), key=lambda u: u.name)
                                   if u.limits]
    return [_compact(user_named(store, args.user, no_such_user).limits)]


_SET_TP = 'Setting topic permissions on "{exchange}" for user "{username}" in vhost "{vhost}" ...'

# verb -> (function, banner, positional arguments, takes -p), as syncmq.ctl.VERBS; a banner
# may be a function of the arguments; "--user:guest" (a string option and its default) and
# "--global" are options
OFFLINE = {
    "set_topic_permissions": (set_topic_permissions, _SET_TP,
                              ["username", "exchange", "write", "read"], True),
    "clear_topic_permissions": (
        clear_topic_permissions,
        lambda a: (f'Clearing topic permissions on "{a.exchange}" for user "{a.username}" in '
                   f'vhost "{a.vhost}" ...') if a.exchange is not None else
        f'Clearing topic permissions for user "{a.username}" in vhost "{a.vhost}" ...',
        ["username", "exchange?"], True),
    "list_topic_permissions": (list_topic_permissions,
                               'Listing topic permissions for vhost "{vhost}" ...', [], True),
    "list_user_topic_permissions": (list_user_topic_permissions,
                                    'Listing topic permissions for user "{username}" ...',
                                    ["username"], False),
    "set_user_limits": (set_user_limits,
                        'Setting user limits to "{definition}" for user "{username}" ...',
                        ["username", "definition"], False),
    "clear_user_limits": (
        clear_user_limits,
        lambda a: f'Clearing all limits for user "{a.username}" ...' if a.limit == "all" else
        f'Clearing "{a.limit}" limit for user "{a.username}" ...',
        ["username", "limit"], False),
    "list_user_limits": (
        list_user_limits,
        lambda a: "Listing limits for all users ..." if a.global_ else
        f'Listing limits for user "{a.user}" ...',
        ["--user:guest", "--global"], False),
}
OFFLINE_READ_ONLY = {"list_topic_permissions", "list_user_topic_permissions",
                     "list_user_limits"}


# ---- remote: the management API ----
# Each takes (client, args, table): ``table`` is ctl_remote's formatter (injected there, so
# that this module does not import ctl_remote); errors are RuleError.

def _q(name: str) -> str:
    return quote(name, safe="")


def _json_out(args: Any) -> bool:
    return args.json or args.formatter == "json"


def _banner(args: Any, text: str) -> None:
    if not args.quiet and not _json_out(args):
        print(text)


def _remote_user(c: Any, name: str, missing=no_such_user) -> None:
    if not any(u.get("name") == name for u in c.call("GET", "/api/users")):
        raise missing(name)


def r_set_topic_permissions(c: Any, args: Any, table: Any) -> None:
    _banner(args, _SET_TP.format(**vars(args)))
    _regexes(args)
    _remote_user(c, args.username, _bare_user)
    c.call("GET", f"/api/vhosts/{_q(args.vhost)}", not_found=no_vhost_refused(args.vhost))
    c.call("PUT", f"/api/topic-permissions/{_q(args.vhost)}/{_q(args.username)}",
           {"exchange": args.exchange, "write": args.write, "read": args.read},
           not_found=no_vhost_refused(args.vhost))


def r_clear_topic_permissions(c: Any, args: Any, table: Any) -> None:
    _banner(args, OFFLINE["clear_topic_permissions"][1](args))
    _remote_user(c, args.username, _bare_user)
    c.call("GET", f"/api/vhosts/{_q(args.vhost)}", not_found=no_vhost_refused(args.vhost))
    have = [r for r in c.call("GET", f"/api/users/{_q(args.username)}/topic-permissions")
            if r["vhost"] == args.vhost]
    if not have:
        return  # nothing to clear (rabbitmqctl succeeds)
    path = f"/api/topic-permissions/{_q(args.vhost)}/{_q(args.username)}"
    if args.exchange is not None:
        path += "/" + _q(args.exchange)
    c.call("DELETE", path)


def r_list_topic_permissions(c: Any, args: Any, table: Any) -> None:
    _banner(args, f'Listing topic permissions for vhost "{args.vhost}" ...')
    rows = c.call("GET", f"/api/vhosts/{_q(args.vhost)}/topic-permissions",
                  not_found=no_vhost(args.vhost))
    rows.sort(key=lambda r: (r["user"], r["exchange"]))
    table(args, rows, ["user", "exchange", "write", "read"], empty_line=True)


def r_list_user_topic_permissions(c: Any, args: Any, table: Any) -> None:
    _banner(args, f'Listing topic permissions for user "{args.username}" ...')
    rows = c.call("GET", f"/api/users/{_q(args.username)}/topic-permissions",
                  not_found=no_such_user(args.username))
    rows.sort(key=lambda r: (r["vhost"], r["exchange"]))
    columns = ["vhost", "exchange", "write", "read"]
    if _json_out(args) or args.formatter != "table":
        table(args, rows, columns)
    else:  # rabbitmqctl prints this one without a header line
        for r in rows:
            print("\t".join(r[k] for k in columns))


def r_set_user_limits(c: Any, args: Any, table: Any) -> None:
    _banner(args, OFFLINE["set_user_limits"][1].format(**vars(args)))
    limits = _limits_json(args.definition)
    _remote_user(c, args.username)
    for name, value in limits.items():
        c.call("PUT", f"/api/user-limits/{_q(args.username)}/{_q(name)}", {"value": value})


def r_clear_user_limits(c: Any, args: Any, table: Any) -> None:
    _banner(args, OFFLINE["clear_user_limits"][1](args))
    _remote_user(c, args.username)
    c.call("DELETE", f"/api/user-limits/{_q(args.username)}/{_q(args.limit)}")


def r_list_user_limits(c: Any, args: Any, table: Any) -> None:
    _banner(args, OFFLINE["list_user_limits"][1](args))
    if args.global_:
        rows = [{"user": r["user"], "limits": _compact(r["value"])}
                for r in c.call("GET", "/api/user-limits")]
        table(args, rows, ["user", "limits"])
        return
    rows = c.call("GET", f"/api/user-limits/{_q(args.user)}",
                  not_found=no_such_user(args.user))
    text = _compact(rows[0]["value"] if rows else {})
    print(json.dumps({"message": text}) if _json_out(args) else text)


# verb -> (function, help, argument spec), as syncmq.ctl_remote.VERBS
REMOTE = {
    "set_topic_permissions": (r_set_topic_permissions, "set a user's topic permissions on an "
                              "exchange", ["-p", "username", "exchange", "write", "read"]),
    "clear_topic_permissions": (r_clear_topic_permissions, "clear a user's topic permissions",
                                ["-p", "username", "exchange?"]),
    "list_topic_permissions": (r_list_topic_permissions, "list topic permissions in a vhost",
                               ["-p"]),
    "list_user_topic_permissions": (r_list_user_topic_permissions,
                                    "list a user's topic permissions", ["username"]),
    "set_user_limits": (r_set_user_limits, "set a user's limits (JSON)",
                        ["username", "definition"]),
    "clear_user_limits": (r_clear_user_limits, "clear a user's limit (or all)",
                          ["username", "limit"]),
    "list_user_limits": (r_list_user_limits, "list a user's limits (or --global)",
                         ["--user:guest", "--global"]),
}
