"""``syncmqctl``: manage users, vhosts and permissions, with rabbitmqctl's verbs and argument order.

With ``--users-file PATH`` it edits the users file offline (atomically: temp file + rename);
send the broker SIGHUP to apply the change. Without it, it talks to a running broker's
management API: :func:`run_remote` hands the command line to ``syncmq.ctl_remote``.

Exit codes: rabbitmqctl's, in both modes (``syncmq.ctl_errors``: 64 usage, 65 data (a missing
vhost, a users file that cannot be read or written), 67 no such user, 69 refused, 70 user
exists).
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from . import ctl_rules
from .broker.auth import Permission, User, UsersFileError, UserStore, hash_password, save
from .ctl_errors import CtlError, Kind, Parser, no_user, no_vhost_refused, report


def run_remote(argv: list[str]) -> int:
    """The management-API mode: run the command line against a live broker
    (``syncmq.ctl_remote``, which has its own verbs and options; ``ctl_params`` adds the
    runtime-parameter verbs to them, ``ctl_policies`` the policy verbs, ``ctl_status`` the
    status verb, ``ctl_shovel`` the shovel verbs, ``ctl_limits`` the vhost-limits ones)."""
    from . import (
        ctl_limits,  # noqa: F401 (registers its verbs)
        ctl_params,  # noqa: F401 (registers its verbs)
        ctl_policies,  # noqa: F401 (registers its verbs)
        ctl_shovel,  # noqa: F401 (registers its verbs)
        ctl_status,  # noqa: F401 (registers its verb)
    )
    from .ctl_remote import main as remote_main

    return remote_main(argv)


# ---- the verbs (each takes the store and the parsed args, returns output lines) ----


def _load(path: str) -> UserStore:
    if not os.path.exists(path):
        # a new file: no users at all (no implicit guest once a users file is used)
        return UserStore({}, ["/"], ["guest"], path)
    return UserStore.load(path, allow_empty=True)


# the users file's lookups and their rabbitmqctl errors, shared with the rules verbs
_user = ctl_rules.user_named
_vhost = ctl_rules.require_vhost


def _bare_user(name: str) -> CtlError:
    return no_user(name, quoted=False)  # the permission verbs' text


def _password(args: argparse.Namespace, kind: Kind) -> str:
    """The argument, else a line of stdin (as rabbitmqctl); none is an error of ``kind``."""
    if args.password is not None:
        return args.password
    line = sys.stdin.readline()  # rabbitmqctl reads it from stdin when not given
    password = line.rstrip("\r\n")
    if not password:
        raise CtlError("Password is not provided via argument or stdin", kind)
    return password


def add_user(store: UserStore, args) -> bool:
    if args.username in store.users:
        raise CtlError(f'User "{args.username}" already exists', Kind.SOFTWARE)
    store.users[args.username] = User(args.username, hash_password(_password(args, Kind.DATA)))
    return True


def delete_user(store: UserStore, args) -> bool:
    _user(store, args.username)
    del store.users[args.username]
    return True


def change_password(store: UserStore, args) -> bool:
    _user(store, args.username).password_hash = hash_password(_password(args, Kind.SOFTWARE))
    return True


def set_user_tags(store: UserStore, args) -> bool:
    _user(store, args.username).tags = list(dict.fromkeys(args.tags))
    return True


def add_vhost(store: UserStore, args) -> bool:
    if args.vhost in store.vhosts:
        return False  # as in RabbitMQ, adding an existing vhost is not an error
    store.vhosts.append(args.vhost)
    return True


def delete_vhost(store: UserStore, args) -> bool:
    _vhost(store, args.vhost)
    store.vhosts.remove(args.vhost)
    for u in store.users.values():
        u.permissions.pop(args.vhost, None)
        u.topic_permissions.pop(args.vhost, None)
    return True


def set_permissions(store: UserStore, args) -> bool:
    user = _user(store, args.username, _bare_user)
    _vhost(store, args.vhost, no_vhost_refused)
    for kind in ("conf", "write", "read"):
        try:
            re.compile(getattr(args, kind) or "^$")
        except re.error as e:
            raise CtlError(f"invalid regular expression '{getattr(args, kind)}': {e}") from None
    user.permissions[args.vhost] = Permission(args.conf, args.write, args.read)
    return True


def clear_permissions(store: UserStore, args) -> bool:
    user = _user(store, args.username, _bare_user)
    _vhost(store, args.vhost, no_vhost_refused)
    user.permissions.pop(args.vhost, None)
    return True


def list_users(store: UserStore, args) -> list[str]:
    return ["user\ttags"] + [
        f"{u.name}\t[{', '.join(u.tags)}]" for u in sorted(store.users.values(), key=_by_name)
    ]


def list_vhosts(store: UserStore, args) -> list[str]:
    return ["name"] + sorted(store.vhosts)


def list_permissions(store: UserStore, args) -> list[str]:
    _vhost(store, args.vhost)
    rows = ["user\tconfigure\twrite\tread"]
    for u in sorted(store.users.values(), key=_by_name):
        p = u.permissions.get(args.vhost)
        if p is not None:
            rows.append(f"{u.name}\t{p.configure}\t{p.write}\t{p.read}")
    return rows


def _by_name(u: User) -> str:
    return u.name


# verb -> (function, banner, positional arguments, takes -p)
VERBS = {
    "add_user": (add_user, 'Adding user "{username}" ...', ["username", "password?"], False),
    "delete_user": (delete_user, 'Deleting user "{username}" ...', ["username"], False),
    "change_password": (change_password, 'Changing password for user "{username}" ...',
                        ["username", "password?"], False),
    "set_user_tags": (set_user_tags, 'Setting tags for user "{username}" to [{tags_text}] ...',
                      ["username", "tags*"], False),
    "add_vhost": (add_vhost, 'Adding vhost "{vhost}" ...', ["vhost"], False),
    "delete_vhost": (delete_vhost, 'Deleting vhost "{vhost}" ...', ["vhost"], False),
    "set_permissions": (set_permissions,
                        'Setting permissions for user "{username}" in vhost "{vhost}" ...',
                        ["username", "conf", "write", "read"], True),
    "clear_permissions": (clear_permissions,
                          'Clearing permissions for user "{username}" in vhost "{vhost}" ...',
                          ["username"], True),
    "list_users": (list_users, "Listing users ...", [], False),
    "list_vhosts": (list_vhosts, "Listing vhosts ...", [], False),
    "list_permissions": (list_permissions, 'Listing permissions for vhost "{vhost}" ...', [],
                         True),
}
READ_ONLY = {"list_users", "list_vhosts", "list_permissions"}
VERBS.update(ctl_rules.OFFLINE)  # topic permissions and user limits
READ_ONLY |= ctl_rules.OFFLINE_READ_ONLY


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="syncmqctl",
        description="Manage syncmq users, vhosts and permissions (rabbitmqctl's verbs).",
        epilog="Edits --users-file offline; send the broker SIGHUP to apply.",
    )
    p.add_argument("--users-file", help="the broker's --users-file (TOML) to edit")
    p.add_argument("-q", "--quiet", action="store_true", help="no banner lines")
    sub = p.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    for verb, (_fn, _banner, positionals, takes_vhost) in VERBS.items():
        sp = sub.add_parser(verb, help=verb.replace("_", " "))
        sp.add_argument("--users-file", default=argparse.SUPPRESS,
                        help="the broker's --users-file (TOML) to edit")
        sp.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)
        if takes_vhost:
            sp.add_argument("-p", "--vhost", default="/", help="virtual host (default /)")
        for name in positionals:
            if name == "--global":
                sp.add_argument("--global", dest="global_", action="store_true")
            elif name.startswith("--"):  # "--opt:default": a string option
                opt, _, default = name.partition(":")
                sp.add_argument(opt, default=default)
            elif name.endswith("?"):
                sp.add_argument(name[:-1], nargs="?", default=None,
                                help="read from stdin when omitted")
            elif name.endswith("*"):
                sp.add_argument(name[:-1], nargs="*", metavar=name[:-1].upper())
            else:
                sp.add_argument(name, metavar=name.upper())
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not any(a == "--users-file" or a.startswith("--users-file=") for a in argv):
        return run_remote(argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 64 (ctl_errors.Parser)
    fn, banner, _positionals, _v = VERBS[args.verb]
    if not args.quiet:
        fields = dict(vars(args))
        fields["tags_text"] = ", ".join(getattr(args, "tags", []) or [])
        print(banner(args) if callable(banner) else banner.format(**fields))
    try:
        store = _load(args.users_file)
        result = fn(store, args)
        if args.verb in READ_ONLY:
            for line in result:
                print(line)
        elif result:
            save(store, args.users_file)
    except CtlError as e:
        return report(e)
    except UsersFileError as e:  # the file cannot be used: a data error (65)
        return report(CtlError(str(e), Kind.DATA))
    except OSError as e:
        return report(CtlError(f"cannot write {args.users_file}: {e.strerror}", Kind.DATA))
    return 0


if __name__ == "__main__":
    sys.exit(main())
