"""Users, passwords, vhosts and permissions: the users file (``--users-file``).

Without a users file the only user is the built-in default: ``guest``/``guest``, tag
``administrator``, full permissions on ``/``, allowed from loopback addresses only (RabbitMQ's
``loopback_users``). With one, only the users it lists exist. The format is TOML, read with
the stdlib ``tomllib`` and written by :func:`dumps` (a small writer for exactly this shape); it
is documented in ``docs/users-file.md``::

    loopback_users = ["guest"]          # optional; default ["guest"]
    vhosts = ["/", "staging"]

    [users.app]
    password_hash = "<hex of salt(4) + sha256(salt + password)>"
    tags = ["monitoring"]
    loopback_only = false               # optional

    [users.app.permissions."/"]
    configure = "^app\\."
    write = ".*"
    read = ".*"

    [users.app.limits]                  # optional: max-connections, max-channels
    max-connections = 10

    [users.app.topic_permissions."/"."amq.topic"]   # optional: per vhost and exchange
    write = "^{username}\\."
    read = ".*"

Passwords are kept as salted SHA-256 hashes, as RabbitMQ does (``rabbit_password_hashing_sha256``:
a 4-byte salt followed by ``sha256(salt + password)``), never in plain text; a hash may be
written as hex (what syncmqctl writes) or base64 (what RabbitMQ's definitions export holds).

A :class:`UserStore` is immutable once built and replaced as a whole on reload
(``broker.users = new_store``): a reader that fetched ``broker.users`` once sees one consistent
version, and the swap is a single attribute store (atomic with and without the GIL).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field

from .user_rules import LimitError, TopicPermission, check_regex, validate_limits

KNOWN_TAGS = ("administrator", "monitoring", "management", "policymaker", "impersonator")


class UsersFileError(ValueError):
    """The users file cannot be read or is malformed; the message says where and why."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ-style salted SHA-256: hex of salt(4) + sha256(salt + password)."""
    salt = os.urandom(4) if salt is None else salt
    return (salt + hashlib.sha256(salt + password.encode("utf-8")).digest()).hex()


def _hash_bytes(hashed: str) -> bytes | None:
    """The 36 raw bytes of a stored hash given as hex or base64; None if it is neither."""
    text = hashed.strip()
    if len(text) == 72:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 36 else None


def check_password(password: str, hashed: str) -> bool:
    raw = _hash_bytes(hashed)
    if raw is None:
        return False
    salt, digest = raw[:4], raw[4:]
    return hmac.compare_digest(hashlib.sha256(salt + password.encode("utf-8")).digest(), digest)


def _compile(pattern: str) -> re.Pattern:
    # RabbitMQ (rabbit_auth_backend_internal:check_resource_access) runs the regex unanchored
    # (re:run, a search) and treats an empty permission as "^$": it matches only the empty name.
    return re.compile(pattern if pattern else "^$")


@dataclass(frozen=True)
class Permission:
    """configure/write/read regexes for one vhost, matched as RabbitMQ does: an unanchored
    search (write ``^...$`` to anchor), and ``""`` grants nothing (it is ``^$``)."""

    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"

    def __post_init__(self) -> None:
        object.__setattr__(self, "_c", _compile(self.configure))
        object.__setattr__(self, "_w", _compile(self.write))
        object.__setattr__(self, "_r", _compile(self.read))

    def can_configure(self, name: str) -> bool:
        return self._c.search(name) is not None

    def can_write(self, name: str) -> bool:
        return self._w.search(name) is not None

    def can_read(self, name: str) -> bool:
        return self._r.search(name) is not None

    def allows(self, kind: str, name: str) -> bool:
        """``kind`` is "configure", "write" or "read"."""
        rx = {"configure": self._c, "write": self._w, "read": self._r}[kind]
        return rx.search(name) is not None


@dataclass
class User:
    name: str
    password_hash: str
    tags: list[str] = field(default_factory=list)
    permissions: dict[str, Permission] = field(default_factory=dict)
    loopback_only: bool = False
    # vhost -> exchange -> TopicPermission (user_rules.py); a vhost is present only with
    # at least one exchange
    topic_permissions: dict[str, dict[str, TopicPermission]] = field(default_factory=dict)
    # "max-connections" / "max-channels" -> int (negative: no limit)
    limits: dict[str, int] = field(default_factory=dict)
    # (last: other code builds users positionally) the broker's own clients (a shovel's local
    # end: ``InternalLogin``), RabbitMQ's direct connections as user ``none``: every vhost,
    # every resource, any user-id
    internal: bool = False

    def topic_permission(self, vhost: str, exchange: str) -> TopicPermission | None:
        per_vhost = self.topic_permissions.get(vhost)
        return None if per_vhost is None else per_vhost.get(exchange)

    def user_id_refusal(self, user_id: object) -> str | None:
        """rabbit_channel's check_user_id_header: why this user may not publish a message
        whose ``user_id`` property is ``user_id`` (None: it may). It must name the user,
        unless the user has the ``impersonator`` tag (or is the broker's own client)."""
        if (user_id is None or user_id == self.name or "impersonator" in self.tags
                or self.internal):
            return None
        return f"user_id property set to '{user_id}' but authenticated user was '{self.name}'"


def is_loopback(peer: object) -> bool:
    """127.0.0.0/8, ::1, and an IPv4-mapped IPv6 loopback (``::ffff:127.0.0.1``, the peer of
    an IPv4 client on a ``--bind ::`` socket), as RabbitMQ's ``rabbit_net:is_loopback``."""
    host = peer[0] if isinstance(peer, tuple) else peer
    try:
        addr = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


class InternalLogin:
    """The credentials of the broker's own AMQP clients (a shovel whose URI is ``amqp://``:
    RabbitMQ's direct connection, which logs in as the trusted user ``none``).

    The password is 32 random bytes made when the broker is built; it never leaves the
    process except over the connection to the broker's own listener. A login with it gets
    :attr:`user` (``internal``: permission checks pass on every vhost), whatever the users
    file says, and no user of the file can log in as it (the name alone grants nothing).
    Immutable after construction: read from any thread."""

    USERNAME = "none"

    def __init__(self) -> None:
        self.password = secrets.token_urlsafe(32)
        self.user = User(self.USERNAME, "", ["administrator"], {}, internal=True)

    def check(self, username: str, password: str, users: dict[str, User]) -> User | None:
        """The internal password logs in as ``none`` (:attr:`user`), or as the user
        ``username`` of ``users`` without its password (a shovel's local URI naming a user
        but no password: RabbitMQ's direct connection with password ``none``, a trusted
        login as that user). None otherwise (the login goes on as any other)."""
        if not hmac.compare_digest(password, self.password):
            return None
        if username == self.USERNAME:
            return self.user
        return users.get(username)


#: Without ``--users-file``, the users store of a broker with a journal lives here, in its
#: data dir: read at start if present, written (``save``) by every API change.
DATA_DIR_USERS = "users.toml"


def data_dir_store(data_dir: str) -> UserStore:
    """The store of a broker without ``--users-file``: ``<data_dir>/users.toml`` as saved by an
    earlier run (UsersFileError if it cannot be read), else the built-in ``guest``; either way
    with that file as ``source``, so API changes to users, permissions, topic permissions,
    user limits and vhosts survive a restart and kill -9, as RabbitMQ keeps them. Never
    reloaded on SIGHUP (it is the broker's own file, not configuration)."""
    path = os.path.join(data_dir, DATA_DIR_USERS)
    if os.path.exists(path):
        return UserStore.load(path, allow_empty=True)  # the API may have deleted every user
    return UserStore(source=path)


def default_users() -> dict[str, User]:
    return {
        "guest": User("guest", hash_password("guest"), ["administrator"], {"/": Permission()})
    }


class UserStore:
    """The users and vhosts known to the broker. Never mutated once built: a reload builds a
    new store and the broker swaps it in (``broker.users = new_store``)."""

    def __init__(
        self,
        users: dict[str, User] | None = None,
        vhosts: list[str] | None = None,
        loopback_users: list[str] | None = None,
        source: str | None = None,
    ) -> None:
        self.users = default_users() if users is None else users
        if vhosts is None:
            vhosts = sorted({v for u in self.users.values() for v in u.permissions} | {"/"})
        self.vhosts = list(vhosts)
        self.loopback_users = ["guest"] if loopback_users is None else list(loopback_users)
        self.source = source

    # ---- queries ----

    def authenticate(self, username: str, password: str, peer: object) -> tuple[User | None, str]:
        """Returns (user, "") or (None, reason for the log; never the password)."""
        user = self.users.get(username)
        if not password:
            # RabbitMQ's internal backend refuses blank passwords outright.
            return None, f"user '{username}' attempted to log in with a blank password"
        if user is None or not check_password(password, user.password_hash):
            return None, f"user '{username}' - invalid credentials"
        if self.is_loopback_only(user) and not is_loopback(peer):
            return None, f"user '{username}' can only connect via localhost"
        return user, ""

    def authenticate_external(self, username: str, peer: object) -> tuple[User | None, str]:
        """EXTERNAL (TLS client certificate): the certificate's CN names an existing user; no
        password is checked (the TLS layer verified the certificate)."""
        user = self.users.get(username)
        if user is None:
            return None, f"user '{username}' (from the client certificate) does not exist"
        if self.is_loopback_only(user) and not is_loopback(peer):
            return None, f"user '{username}' can only connect via localhost"
        return user, ""

    def is_loopback_only(self, user: User) -> bool:
        return user.loopback_only or user.name in self.loopback_users

    def permission(self, username: str, vhost: str) -> Permission | None:
        user = self.users.get(username)
        return None if user is None else user.permissions.get(vhost)

    def summary(self) -> dict[str, int]:
        """Counts for the log (never names of secrets)."""
        return {"users": len(self.users), "vhosts": len(self.vhosts),
                "permissions": sum(len(u.permissions) for u in self.users.values())}

    # ---- the file ----

    @classmethod
    def load(cls, path: str, allow_empty: bool = False) -> UserStore:
        """Read and validate a users file; raises :class:`UsersFileError`.

        A file with no users (an empty file is valid TOML) is refused unless ``allow_empty``
        (syncmqctl editing one): the broker would lock everyone out. At start-up that is a
        configuration error; on SIGHUP the old users are kept and the error is logged."""
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise UsersFileError(f"cannot read {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise UsersFileError(f"{path}: not valid TOML: {e}") from None
        try:
            store = cls.from_dict(data, source=path)
        except UsersFileError as e:
            raise UsersFileError(f"{path}: {e}") from None
        if not store.users and not allow_empty:
            raise UsersFileError(f"{path}: no users defined (nobody could log in)")
        return store

    @classmethod
    def from_dict(cls, data: dict, source: str | None = None) -> UserStore:
        unknown = set(data) - {"users", "vhosts", "loopback_users"}
        if unknown:
            raise UsersFileError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
        vhosts = data.get("vhosts", ["/"])
        if not isinstance(vhosts, list) or not all(isinstance(v, str) and v for v in vhosts):
            raise UsersFileError("'vhosts' must be a list of non-empty strings")
        loopback = data.get("loopback_users", ["guest"])
        if not isinstance(loopback, list) or not all(isinstance(v, str) for v in loopback):
            raise UsersFileError("'loopback_users' must be a list of strings")
        raw_users = data.get("users", {})
        if not isinstance(raw_users, dict):
            raise UsersFileError("'users' must be a table")
        users: dict[str, User] = {}
        for name, spec in raw_users.items():
            users[name] = _user_from_dict(name, spec)
        vhost_list = list(dict.fromkeys(vhosts))
        for u in users.values():
            for vh in [*u.permissions, *u.topic_permissions]:
                if vh not in vhost_list:
                    raise UsersFileError(
                        f"user '{u.name}' has permissions on vhost '{vh}', which is not in "
                        "'vhosts'"
                    )
        return cls(users, vhost_list, list(loopback), source)

    def to_dict(self) -> dict:
        return {
            "loopback_users": list(self.loopback_users),
            "vhosts": list(self.vhosts),
            "users": {
                u.name: {
                    "password_hash": u.password_hash,
                    "tags": list(u.tags),
                    **({"loopback_only": True} if u.loopback_only else {}),
                    "permissions": {
                        vh: {"configure": p.configure, "write": p.write, "read": p.read}
                        for vh, p in u.permissions.items()
                    },
                    **({"limits": dict(u.limits)} if u.limits else {}),
                    **({"topic_permissions": {
                        vh: {x: {"write": t.write, "read": t.read} for x, t in per.items()}
                        for vh, per in u.topic_permissions.items()}}
                       if u.topic_permissions else {}),
                }
                for u in self.users.values()
            },
        }


def _user_from_dict(name: str, spec: object) -> User:
    where = f"user '{name}'"
    if not name:
        raise UsersFileError("a user name must not be empty")
    if not isinstance(spec, dict):
        raise UsersFileError(f"{where} must be a table")
    unknown = set(spec) - {"password_hash", "tags", "permissions", "loopback_only", "limits",
                           "topic_permissions"}
    if unknown:
        raise UsersFileError(f"{where}: unknown key(s): {', '.join(sorted(unknown))}")
    pw = spec.get("password_hash")
    if not isinstance(pw, str) or _hash_bytes(pw) is None:
        raise UsersFileError(
            f"{where}: 'password_hash' must be a salted SHA-256 hash (72 hex digits or base64 "
            "of 36 bytes); plain-text passwords are not accepted"
        )
    tags = spec.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise UsersFileError(f"{where}: 'tags' must be a list of strings")
    loopback_only = spec.get("loopback_only", False)
    if not isinstance(loopback_only, bool):
        raise UsersFileError(f"{where}: 'loopback_only' must be true or false")
    perms_spec = spec.get("permissions", {})
    if not isinstance(perms_spec, dict):
        raise UsersFileError(f"{where}: 'permissions' must be a table of vhosts")
    perms: dict[str, Permission] = {}
    for vh, p in perms_spec.items():
        if not isinstance(p, dict) or set(p) - {"configure", "write", "read"}:
            raise UsersFileError(
                f"{where}: permissions on vhost '{vh}' must be a table with configure, write "
                "and read"
            )
        values = {}
        for kind in ("configure", "write", "read"):
            v = p.get(kind, "")
            if not isinstance(v, str):
                raise UsersFileError(f"{where}: {kind} permission on vhost '{vh}' is not a string")
            try:
                _compile(v)
            except re.error as e:
                raise UsersFileError(
                    f"{where}: {kind} permission on vhost '{vh}' is not a valid regex: {e}"
                ) from None
            values[kind] = v
        perms[vh] = Permission(**values)
    try:
        limits = validate_limits(spec.get("limits", {}))
    except LimitError as e:
        raise UsersFileError(f"{where}: limits: {e}") from None
    topic = _topic_from_dict(name, where, spec.get("topic_permissions", {}))
    return User(name, pw, list(tags), perms, loopback_only, topic, limits)


def _topic_from_dict(name: str, where: str, spec: object) -> dict:
    """``[users.NAME.topic_permissions."VHOST"."EXCHANGE"]`` tables of write and read."""
    if not isinstance(spec, dict):
        raise UsersFileError(f"{where}: 'topic_permissions' must be a table of vhosts")
    out: dict[str, dict[str, TopicPermission]] = {}
    for vh, per in spec.items():
        if not isinstance(per, dict):
            raise UsersFileError(f"{where}: topic_permissions of vhost '{vh}' must be a table "
                                 "of exchanges")
        for x, p in per.items():
            what = f"{where}: topic permission on exchange '{x}' in vhost '{vh}'"
            if not isinstance(p, dict) or set(p) != {"write", "read"}:
                raise UsersFileError(f"{what} must be a table with write and read")
            for kind in ("write", "read"):
                if not isinstance(p[kind], str):
                    raise UsersFileError(f"{what}: {kind} is not a string")
                why = check_regex(p[kind])
                if why is not None:
                    raise UsersFileError(f"{what}: {kind} is not a valid regex: {why}")
            out.setdefault(vh, {})[x] = TopicPermission(p["write"], p["read"], name, vh)
    return out


# ---- writing (no TOML writer in the stdlib; this one covers exactly the users-file shape) ----


def _toml_str(s: str) -> str:
    """A TOML basic string."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(s: str) -> str:
    return s if _BARE_KEY.match(s) else _toml_str(s)


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(_toml_str(i) for i in items) + "]"


def dumps(store: UserStore) -> str:
    """The users file for ``store``; ``tomllib.loads(dumps(s))`` round-trips."""
    lines = [
        "# syncmq users file (see docs/users-file.md); edit with syncmqctl, reload with SIGHUP.",
        f"loopback_users = {_toml_list(store.loopback_users)}",
        f"vhosts = {_toml_list(store.vhosts)}",
    ]
    for u in store.users.values():
        key = _toml_key(u.name)
        lines += ["", f"[users.{key}]", f"password_hash = {_toml_str(u.password_hash)}",
                  f"tags = {_toml_list(u.tags)}"]
        if u.loopback_only:
            lines.append("loopback_only = true")
        for vh, p in u.permissions.items():
            lines += [f"[users.{key}.permissions.{_toml_key(vh)}]",
                      f"configure = {_toml_str(p.configure)}",
                      f"write = {_toml_str(p.write)}",
                      f"read = {_toml_str(p.read)}"]
        if u.limits:
            lines.append(f"[users.{key}.limits]")
            lines += [f"{k} = {v}" for k, v in u.limits.items()]
        for vh, per in u.topic_permissions.items():
            for x, t in per.items():
                lines += [f"[users.{key}.topic_permissions.{_toml_key(vh)}.{_toml_str(x)}]",
                          f"write = {_toml_str(t.write)}",
                          f"read = {_toml_str(t.read)}"]
    return "\n".join(lines) + "\n"


def save(store: UserStore, path: str) -> None:
    """Write atomically: a temp file in the same directory, fsync, rename over ``path``, then
    fsync the directory (the rename is durable when this returns).

    The temp file has an unpredictable name and is created with ``O_CREAT | O_EXCL |
    O_NOFOLLOW``: whatever someone planted in the directory (a symlink to another file, a
    file of theirs) is never opened, truncated or written through; ``UsersFileError`` if the
    name exists. The rename replaces ``path`` itself (a symlink there is not followed)."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory,
                       f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    text = dumps(store)
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600  # password hashes: not world-readable by default
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise UsersFileError(f"refusing to write {tmp}: something is there already") from None
    except OSError as e:
        raise UsersFileError(f"cannot write {tmp}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # the rename is on disk only once the directory is: without this a power loss after the
    # answer could bring back the old file (or none), though the change was acknowledged
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
