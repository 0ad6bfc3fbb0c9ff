"""``syncmqctl`` against a running broker, through its management HTTP API (urllib only).

The mode ``syncmqctl`` uses without ``--users-file`` (``syncmq.ctl.run_remote``). The verbs
and their arguments are rabbitmqctl's; output is rabbitmqctl's tab-separated table with a
header line (``--formatter json``/``--json`` for a JSON list, ``--formatter pretty_table`` for a
boxed table, ``-q`` drops the banner). The broker is found at
``--management-url`` (env ``SYNCMQ_MANAGEMENT_URL``, default ``http://127.0.0.1:15672``) and
logged into with ``--username``/``--password`` (env ``SYNCMQ_MANAGEMENT_USERNAME``/
``SYNCMQ_MANAGEMENT_PASSWORD``, default guest/guest).

Exit codes: rabbitmqctl's (``syncmq.ctl_errors``: 64 usage, 65 data, 67 no such user, 69 the
broker refused or cannot be reached, 70 software). When the broker cannot be reached (or
refuses the credentials), standard output stays empty, as rabbitmqctl's when its node cannot
be: the banner is held back until the broker's first answer (``ctl_output.HeldOutput``).
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import quote

from . import ctl_migration, ctl_rules
from .ctl_errors import (
    CtlError,
    Kind,
    Parser,
    no_such_user,
    no_user,
    no_vhost,
    no_vhost_refused,
    report,
)
from .ctl_output import FORMATTERS, HeldOutput, _banner, _cell, _json_out, _table, check_columns

DEFAULT_URL = "http://127.0.0.1:15672"
TIMEOUT = 30.0


class RemoteError(CtlError):
    """An error of a remote verb (a ``CtlError``: its kind gives the exit code)."""


class NoAnswer(RemoteError):
    """The broker could not be reached at all (``await_startup`` waits on this one only)."""


# the kinds of error before which the broker answered nothing: what the verb printed so far
# (its banner) is dropped, as rabbitmqctl prints nothing on standard output then
SILENT = (Kind.UNREACHABLE,)


class Client:
    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url.rstrip("/")
        self.username = username
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.auth = "Basic " + token
        self.on_answer = lambda: None  # called when the broker answered (``run``)

    def call(self, method: str, path: str, body=None,
             not_found: str | CtlError | list | None = None,
             headers: dict[str, str] | None = None):
        """The parsed JSON answer (None for 204); raises a ``CtlError`` with a clear message
        and its kind. ``not_found``: what a 404 is: a ``CtlError`` (raised), a text (a
        ``RemoteError`` of the default kind) or a list (the answer: an empty listing)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", self.auth)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            err = self._http_error(e, not_found)
            if err is None:
                return not_found
            if err.kind not in SILENT:
                self.on_answer()
            raise err from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            # rabbitmqctl's first line for a node it cannot reach, then syncmq's hints
            raise NoAnswer(
                f"Error: unable to perform an operation on node at {self.url}: cannot reach "
                f"the management API ({reason}).\n\nIs the broker running with its "
                "management API (--management-port)? Set --management-url (or "
                "SYNCMQ_MANAGEMENT_URL), or pass --users-file PATH to edit the users file "
                "offline.", Kind.UNREACHABLE, header=False) from None
        try:
            answer = json.loads(raw) if raw.strip() else None
        except ValueError:  # something else answers there (a web page, a proxy)
            raise NoAnswer(
                f"Error: unable to perform an operation on node at {self.url}: its answer to "
                f"{method} {path} is not the management API's JSON. Check --management-url.",
                Kind.UNREACHABLE, header=False) from None
        self.on_answer()
        return answer

    def _http_error(self, e: urllib.error.HTTPError, not_found) -> CtlError | None:
        try:
            body = json.loads(e.read() or b"{}")
            reason = body.get("reason") or body.get("error") or ""
        except (ValueError, AttributeError):
            reason = ""
        if e.code == 401:
            if reason == "Login failed":  # as rabbitmqctl's wrong Erlang cookie: unreachable
                return RemoteError(
                    f"Error: unable to perform an operation on node at {self.url}: the "
                    f"management API refused the credentials of user '{self.username}' (401 "
                    "Login failed); set --username/--password", Kind.UNREACHABLE,
                    header=False)
            return RemoteError(f"user '{self.username}' is not allowed to do this (401 "
                               f"{reason or 'not authorised'}); it needs the administrator tag")
        if e.code == 404 and not_found is not None:
            if isinstance(not_found, list):
                return None
            return not_found if isinstance(not_found, CtlError) else RemoteError(not_found)
        return RemoteError(f"{e.code} {reason or e.reason}")


def _vq(name: str) -> str:
    return quote(name, safe="")


def _password(args, kind: Kind) -> str:
    """The password argument, else a line of stdin (as rabbitmqctl); none is an error of
    ``kind`` (rabbitmqctl 3.10: 65 for add_user, 70 for change_password)."""
    if args.new_password is not None:
        return args.new_password
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise RemoteError("Password is not provided via argument or stdin", kind)
    return password


# ---- verbs ----

def _lister(path_all: str, what: str, default_cols: list[str], per_vhost: bool = True):
    def run(c: Client, args) -> None:
        if per_vhost:
            path = f"{path_all}/{_vq(args.vhost)}"
            _banner(args, f"Listing {what} for vhost {args.vhost} ...")
            rows = c.call("GET", path, not_found=[])  # rabbitmqctl: nothing, exit 0
        else:
            _banner(args, f"Listing {what} ...")
            rows = c.call("GET", path_all)
        _table(args, rows, args.columns or default_cols)
    return run


def _bindings(c: Client, args) -> None:
    _banner(args, f"Listing bindings for vhost {args.vhost}...")
    rows = c.call("GET", f"/api/bindings/{_vq(args.vhost)}", not_found=[])
    for r in rows:
        r["source_kind"] = "exchange"
    _table(args, rows, args.columns or ["source_name", "source_kind", "destination_name",
                                        "destination_kind", "routing_key", "arguments"])


def _queue_path(args) -> str:
    return f"/api/queues/{_vq(args.vhost)}/{_vq(args.queue)}"


def _no_queue(args) -> str:
    return f"Queue '{args.queue}' in vhost '{args.vhost}' does not exist"


def purge_queue(c: Client, args) -> None:
    _banner(args, f"Purging queue '{args.queue}' in vhost '{args.vhost}' ...")
    c.call("DELETE", _queue_path(args) + "/contents", not_found=_no_queue(args))


def delete_queue(c: Client, args) -> None:
    """rabbitmqctl reports a missing queue, and a queue kept by ``--if-empty`` /
    ``--if-unused``, as a usage error (64): ``Queue not found``, ``Queue is not empty``,
    ``Queue is in use``."""
    only = {(True, False): " if queue is empty", (False, True): " if queue is unused"}.get(
        (args.if_empty, args.if_unused), "")
    _banner(args, f"Deleting queue '{args.queue}' on vhost '{args.vhost}'{only} ...")
    missing = RemoteError("Queue not found", Kind.USAGE)
    q = c.call("GET", _queue_path(args), not_found=missing)
    flags = [f for f, on in (("if-unused=true", args.if_unused),
                             ("if-empty=true", args.if_empty)) if on]
    try:
        c.call("DELETE", _queue_path(args) + ("?" + "&".join(flags) if flags else ""),
               not_found=missing)
    except RemoteError as e:
        if not str(e).startswith("400 "):
            raise
        kept = "Queue is in use" if str(e).endswith("in use") else "Queue is not empty"
        raise RemoteError(kept, Kind.USAGE) from None
    if not args.quiet and not _json_out(args):
        print(f"Queue was successfully deleted with {q.get('messages_ready', 0)} ready "
              "messages")


def add_vhost(c: Client, args) -> None:
    _banner(args, f'Adding vhost "{args.name}" ...')
    c.call("PUT", f"/api/vhosts/{_vq(args.name)}", {})


def delete_vhost(c: Client, args) -> None:
    _banner(args, f'Deleting vhost "{args.name}" ...')
    c.call("DELETE", f"/api/vhosts/{_vq(args.name)}", not_found=no_vhost(args.name))


def _get_user(c: Client, name: str, quoted: bool = True) -> dict:
    return c.call("GET", f"/api/users/{_vq(name)}", not_found=no_user(name, quoted))


def add_user(c: Client, args) -> None:
    _banner(args, f'Adding user "{args.username}" ...')
    try:
        c.call("GET", f"/api/users/{_vq(args.username)}", not_found="")
    except RemoteError as e:
        if str(e):
            raise
    else:
        raise RemoteError(f'User "{args.username}" already exists', Kind.SOFTWARE)
    c.call("PUT", f"/api/users/{_vq(args.username)}",
           {"password": _password(args, Kind.DATA), "tags": ""})


def delete_user(c: Client, args) -> None:
    _banner(args, f'Deleting user "{args.username}" ...')
    c.call("DELETE", f"/api/users/{_vq(args.username)}", not_found=no_user(args.username))


def change_password(c: Client, args) -> None:
    _banner(args, f'Changing password for user "{args.username}" ...')
    user = _get_user(c, args.username)
    c.call("PUT", f"/api/users/{_vq(args.username)}",
           {"password": _password(args, Kind.SOFTWARE), "tags": user.get("tags", [])})


def set_user_tags(c: Client, args) -> None:
    _banner(args, f'Setting tags for user "{args.username}" to [{", ".join(args.tags)}] ...')
    _get_user(c, args.username)
    c.call("PUT", f"/api/users/{_vq(args.username)}", {"tags": list(args.tags)})


def set_permissions(c: Client, args) -> None:
    _banner(args, f'Setting permissions for user "{args.username}" in vhost "{args.vhost}" ...')
    _get_user(c, args.username, quoted=False)
    c.call("GET", f"/api/vhosts/{_vq(args.vhost)}", not_found=no_vhost_refused(args.vhost))
    c.call("PUT", f"/api/permissions/{_vq(args.vhost)}/{_vq(args.username)}",
           {"configure": args.conf, "write": args.write, "read": args.read},
           not_found=no_vhost_refused(args.vhost))


def clear_permissions(c: Client, args) -> None:
    _banner(args, f'Clearing permissions for user "{args.username}" in vhost "{args.vhost}" '
                  "...")
    _get_user(c, args.username, quoted=False)
    c.call("GET", f"/api/vhosts/{_vq(args.vhost)}", not_found=no_vhost_refused(args.vhost))
    # none set: nothing to clear (rabbitmqctl succeeds)
    c.call("DELETE", f"/api/permissions/{_vq(args.vhost)}/{_vq(args.username)}", not_found=[])


def list_users(c: Client, args) -> None:
    _banner(args, "Listing users ...")
    # rabbitmqctl's columns: "user" (the API's "name") and "tags"
    rows = [{"user": u.get("name"), "tags": u.get("tags")} for u in c.call("GET", "/api/users")]
    _table(args, rows, args.columns or ["user", "tags"])


def list_vhosts(c: Client, args) -> None:
    _banner(args, "Listing vhosts ...")
    _table(args, c.call("GET", "/api/vhosts"), args.columns or ["name"])


def list_permissions(c: Client, args) -> None:
    _banner(args, f'Listing permissions for vhost "{args.vhost}" ...')
    rows = c.call("GET", f"/api/vhosts/{_vq(args.vhost)}/permissions",
                  not_found=no_vhost(args.vhost))
    _table(args, rows, args.columns or ["user", "configure", "write", "read"])


def export_definitions(c: Client, args) -> None:
    defs = c.call("GET", "/api/definitions")
    text = json.dumps(defs, indent=2)
    if args.path == "-":
        print(text)
        return
    _banner(args, f'Exporting definitions in JSON to a file at "{args.path}" ...')
    try:
        with open(args.path, "w") as f:
            f.write(text + "\n")
    except OSError as e:
        raise RemoteError(f"cannot write {args.path}: {e.strerror}", Kind.DATA) from None


def import_definitions(c: Client, args) -> None:
    try:
        if args.path == "-":
            text = sys.stdin.read()
        else:
            _banner(args, f'Importing definitions in JSON from a file at "{args.path}" ...')
            with open(args.path) as f:
                text = f.read()
    except OSError as e:
        raise RemoteError(f"cannot read {args.path}: {e.strerror}", Kind.DATA) from None
    try:
        defs = json.loads(text)
    except ValueError as e:
        raise RemoteError(f"{args.path} is not valid JSON: {e}", Kind.DATA) from None
    c.call("POST", "/api/definitions", defs)
    _banner(args, "Definitions imported.")


def migration_plan(c: Client, args) -> None:
    """docs/scaling.md's migration: definitions + a RabbitMQ shovel per non-empty queue."""
    try:
        plan = ctl_migration.plan(c.call("GET", "/api/definitions"),
                                  c.call("GET", "/api/queues"), args.source_uri)
    except ctl_migration.PlanError as e:  # a bad argument: rabbitmqctl's argument validation
        raise CtlError(str(e), Kind.USAGE) from None
    print(json.dumps(plan, indent=2))


# ---- operating: start-up, authentication, connections, environment ----

def await_startup(c: Client, args) -> None:
    """Wait until the broker's management API answers (rabbitmqctl's ``await_startup``;
    ``--timeout`` seconds, 300 by default). A CLI polling a port another process opens has
    nothing to wait on but time: one try every 0.2 s. No banner: rabbitmqctl 3.10 prints
    none."""
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            c.call("GET", "/api/overview")
            return
        except NoAnswer:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.2)


def list_user_permissions(c: Client, args) -> None:
    _banner(args, f'Listing permissions for user "{args.username}" ...')
    rows = c.call("GET", f"/api/users/{_vq(args.username)}/permissions",
                  not_found=no_such_user(args.username))
    _table(args, rows, args.columns or ["vhost", "configure", "write", "read"])


def authenticate_user(c: Client, args) -> None:
    """Check a user's password against the broker (``GET /api/whoami`` as that user): a
    refused login fails; a valid login of a user without a management tag succeeds."""
    _banner(args, f'Authenticating user "{args.username}" ...')
    as_user = Client(c.url, args.username, args.user_password)
    as_user.on_answer = c.on_answer
    try:
        as_user.call("GET", "/api/whoami")
    except NoAnswer:
        raise
    except RemoteError as e:
        # only "valid login, but no management tag" counts as success; a refused login is
        # rabbitmqctl's data error (65), any other answer (a server error) a failure
        if "Not management user" not in str(e):
            if e.kind is not Kind.UNREACHABLE:
                raise
            c.on_answer()  # the broker did answer: the banner stays
            raise RemoteError(f'Error: failed to authenticate user "{args.username}"\n'
                              f"user '{args.username}' - invalid credentials",
                              Kind.DATA) from None
    if not args.quiet:
        print(json.dumps({"result": "ok"}) if _json_out(args) else "Success")


def close_connection(c: Client, args) -> None:
    """Close one connection by its name (as ``list_connections name`` prints it)."""
    _banner(args, f"Closing connection {args.connection}, reason: {args.explanation}...")
    c.call("DELETE", f"/api/connections/{_vq(args.connection)}",
           headers={"X-Reason": args.explanation},
           not_found=f"Connection '{args.connection}' does not exist")


def close_all_connections(c: Client, args) -> None:
    """Close the connections of a vhost (``-p``), or of every vhost with ``--global``;
    ``--limit N`` closes at most N, ``--per-connection-delay`` seconds apart."""
    scope = "on this node (across all vhosts)" if args.global_ else f"in vhost {args.vhost}"
    _banner(args, f"Closing all connections {scope}, reason: {args.explanation}...")
    path = "/api/connections" if args.global_ else \
        f"/api/vhosts/{_vq(args.vhost)}/connections"
    conns = c.call("GET", path, not_found=[])  # a missing vhost has none (rabbitmqctl: 0)
    if args.limit:
        conns = conns[:int(args.limit)]
    for i, conn in enumerate(conns):
        if i and args.per_connection_delay:
            time.sleep(args.per_connection_delay)
        c.call("DELETE", f"/api/connections/{_vq(conn['name'])}",
               headers={"X-Reason": args.explanation}, not_found=[])  # gone already
    _banner(args, f"Closed {len(conns)} connections")


def environment(c: Client, args) -> None:
    """The broker's effective settings that its API shows (rabbitmqctl prints the Erlang
    application environment; syncmq's settings are its command-line options)."""
    o, node = c.call("GET", "/api/overview"), (c.call("GET", "/api/nodes") or [{}])[0]
    env = {"node": o.get("node"), "cluster_name": o.get("cluster_name"),
           "version": o.get("product_version"),
           "listeners": [f"{li['protocol']} {li['ip_address']}:{li['port']}"
                         for li in o.get("listeners", [])],
           "data_dir": node.get("db_dir"), "memory_high_watermark": node.get("mem_limit"),
           "disk_free_limit": node.get("disk_free_limit"), "fd_limit": node.get("fd_total"),
           "auth_mechanisms": [m["name"] for m in node.get("auth_mechanisms", [])]}
    if _json_out(args):
        print(json.dumps(env, indent=1))
        return
    _banner(args, "Application environment of node " + str(o.get("node")) + " ...")
    for k, v in env.items():
        print(f"{k}: {_cell(v)}")


# verb -> (function, help, argument spec)
#   spec items: "-p" (vhost option), "cols" (column names), NAME, NAME? (optional), NAME*
VERBS = {
    "list_queues": (_lister("/api/queues", "queues", ["name", "messages"]),
                    "list queues", ["-p", "cols"]),
    "list_exchanges": (_lister("/api/exchanges", "exchanges", ["name", "type"]),
                       "list exchanges", ["-p", "cols"]),
    "list_bindings": (_bindings, "list bindings", ["-p", "cols"]),
    "list_connections": (_lister("/api/connections", "connections",
                                 ["user", "peer_host", "peer_port", "state"], per_vhost=False),
                         "list connections", ["cols"]),
    "list_channels": (_lister("/api/channels", "channels",
                              ["name", "user", "consumer_count", "messages_unacknowledged"],
                              per_vhost=False), "list channels", ["cols"]),
    "list_consumers": (_lister("/api/consumers", "consumers",
                               ["queue_name", "channel_pid", "consumer_tag", "ack_required",
                                "prefetch_count", "active", "arguments"]),
                       "list consumers", ["-p", "cols"]),
    "purge_queue": (purge_queue, "purge a queue", ["-p", "queue"]),
    "delete_queue": (delete_queue, "delete a queue", ["-p", "queue", "--if-empty",
                                                      "--if-unused"]),
    "add_vhost": (add_vhost, "add a vhost", ["name"]),
    "delete_vhost": (delete_vhost, "delete a vhost", ["name"]),
    "add_user": (add_user, "add a user", ["username", "new_password?"]),
    "delete_user": (delete_user, "delete a user", ["username"]),
    "change_password": (change_password, "change a user's password",
                        ["username", "new_password?"]),
    "set_user_tags": (set_user_tags, "set a user's tags", ["username", "tags*"]),
    "set_permissions": (set_permissions, "set a user's permissions in a vhost",
                        ["-p", "username", "conf", "write", "read"]),
    "clear_permissions": (clear_permissions, "clear a user's permissions in a vhost",
                          ["-p", "username"]),
    "list_users": (list_users, "list users", ["cols"]),
    "list_vhosts": (list_vhosts, "list vhosts", ["cols"]),
    "list_permissions": (list_permissions, "list permissions in a vhost", ["-p", "cols"]),
    "export_definitions": (export_definitions, "write the definitions JSON to PATH (- for "
                           "stdout)", ["path"]),
    "import_definitions": (import_definitions, "load a definitions JSON file (- for stdin)",
                           ["path"]),
    "migration_plan": (migration_plan, "print the definitions and a RabbitMQ shovel per "
                       "non-empty queue, pulling from SOURCE_URI (docs/scaling.md)",
                       ["source_uri"]),
    "await_startup": (await_startup, "wait until the broker answers", ["--timeout=300"]),
    "list_user_permissions": (list_user_permissions, "list a user's permissions",
                              ["username", "cols"]),
    "authenticate_user": (authenticate_user, "check a user's password",
                          ["username", "user_password"]),
    "close_connection": (close_connection, "close a connection by name",
                         ["connection", "explanation"]),
    "close_all_connections": (close_all_connections, "close the connections of a vhost",
                              ["-p", "--global", "--limit=0", "--per-connection-delay=0",
                               "explanation"]),
    "environment": (environment, "the broker's effective settings", []),
}
# topic permissions and user limits (ctl_rules.py), given this module's table formatter
VERBS.update({verb: (functools.partial(fn, table=_table), help_, spec)
              for verb, (fn, help_, spec) in ctl_rules.REMOTE.items()})


def _common(p: argparse.ArgumentParser, top: bool) -> None:
    d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    p.add_argument("--management-url", default=d(os.environ.get("SYNCMQ_MANAGEMENT_URL",
                                                                DEFAULT_URL)),
                   help="the broker's management API (env SYNCMQ_MANAGEMENT_URL; default "
                        f"{DEFAULT_URL})")
    p.add_argument("-u", "--username", dest="api_username",
                   default=d(os.environ.get("SYNCMQ_MANAGEMENT_USERNAME", "guest")),
                   help="management API user (default guest)")
    p.add_argument("--password", dest="api_password", default=d(os.environ.get("SYNCMQ_MANAGEMENT_PASSWORD",
                                                           "guest")),
                   help="management API password (default guest)")
    p.add_argument("--json", action="store_true", default=d(False),
                   help="print JSON instead of a table")
    p.add_argument("-q", "--quiet", action="store_true", default=d(False),
                   help="no banner lines")
    p.add_argument("--formatter", choices=FORMATTERS, default=d("table"),
                   help="output format, as rabbitmqctl's (--json is --formatter json)")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="syncmqctl",
        description="Manage a running syncmq through its management API (rabbitmqctl's verbs).",
        epilog="With --users-file PATH, syncmqctl edits that users file offline instead.",
    )
    _common(p, True)
    sub = p.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    for verb, (_fn, help_, spec) in VERBS.items():
        sp = sub.add_parser(verb, help=help_)
        _common(sp, False)
        for item in spec:
            if item == "-p":
                sp.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
            elif item == "cols":
                sp.add_argument("columns", nargs="*", metavar="COLUMN",
                                help="columns to show (management API field names)")
            elif item == "--unit=gb":  # status: rabbitmqctl's byte multiple
                sp.add_argument("--unit", choices=("bytes", "kb", "mb", "gb"), default="gb")
            elif item.startswith("--") and (":int=" in item or ":str=" in item):
                # --opt:int=0, --opt:str=all (typed, with a default)
                opt, _, rest = item.partition(":")
                kind, _, default = rest.partition("=")
                conv = int if kind == "int" else str
                sp.add_argument(opt, type=conv, default=conv(default))
            elif item.startswith("--") and "=" in item:
                opt, _, default = item.partition("=")
                sp.add_argument(opt, type=float, default=float(default))
            elif item.startswith("--") and ":" in item:  # a string option: "--opt:default"
                opt, _, default = item.partition(":")
                sp.add_argument(opt, default=default)
            elif item == "--global":
                sp.add_argument("--global", dest="global_", action="store_true")
            elif item.startswith("--"):
                sp.add_argument(item, action="store_true")
            elif item.endswith("?"):
                sp.add_argument(item[:-1], nargs="?", default=None,
                                metavar=item[:-1].upper(), help="read from stdin when omitted")
            elif item.endswith("*"):
                sp.add_argument(item[:-1], nargs="*", metavar=item[:-1].upper())
            else:
                sp.add_argument(item, metavar=item.upper())
    return p


def run(args: argparse.Namespace) -> int:
    """Run one verb; every error goes through ``ctl_errors.report`` (its kind's exit code)."""
    fn = VERBS[args.verb][0]
    client = Client(args.management_url, args.api_username, args.api_password)
    out = HeldOutput(sys.stdout)
    client.on_answer = out.release
    sys.stdout = out
    try:
        check_columns(args)
        fn(client, args)
    except CtlError as e:
        if e.kind in SILENT:
            out.drop()
        out.release()
        return report(e)
    finally:
        out.release()
        sys.stdout = out.out
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # usage errors exit 64 (ctl_errors.Parser)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
