"""Users, passwords and permissions.

For now the only source is the built-in default: user ``guest`` with password ``guest``, tag
``administrator``, full permissions on ``/``, allowed from loopback addresses only (RabbitMQ's
``loopback_users``). Passwords are kept as salted SHA-256 hashes, as RabbitMQ does, never in
plain text.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from dataclasses import dataclass, field


def hash_password(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ-style salted SHA-256: hex of salt(4) + sha256(salt + password)."""
    salt = os.urandom(4) if salt is None else salt
    return (salt + hashlib.sha256(salt + password.encode("utf-8")).digest()).hex()


def check_password(password: str, hashed: str) -> bool:
    raw = bytes.fromhex(hashed)
    salt, digest = raw[:4], raw[4:]
    return hmac.compare_digest(hashlib.sha256(salt + password.encode("utf-8")).digest(), digest)


@dataclass
class Permission:
    """configure/write/read regexes for one vhost (RabbitMQ semantics: anchored full match)."""

    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"

    def __post_init__(self) -> None:
        self._c = re.compile(self.configure)
        self._w = re.compile(self.write)
        self._r = re.compile(self.read)

    def can_configure(self, name: str) -> bool:
        return self._c.fullmatch(name) is not None if self.configure else False

    def can_write(self, name: str) -> bool:
        return self._w.fullmatch(name) is not None if self.write else False

    def can_read(self, name: str) -> bool:
        return self._r.fullmatch(name) is not None if self.read else False


@dataclass
class User:
    name: str
    password_hash: str
    tags: list[str] = field(default_factory=list)
    permissions: dict[str, Permission] = field(default_factory=dict)
    loopback_only: bool = False


def is_loopback(peer: object) -> bool:
    host = peer[0] if isinstance(peer, tuple) else peer
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


class UserStore:
    """The users known to the broker. Replaced as a whole on reload (never mutated in place)."""

    def __init__(self, users: dict[str, User] | None = None) -> None:
        if users is None:
            users = {
                "guest": User(
                    "guest", hash_password("guest"), ["administrator"], {"/": Permission()},
                    loopback_only=True,
                )
            }
        self.users = users

    def authenticate(self, username: str, password: str, peer: object) -> tuple[User | None, str]:
        """Returns (user, "") or (None, reason for the log; never the password)."""
        user = self.users.get(username)
        if user is None:
            return None, f"user '{username}' - invalid credentials"
        if not check_password(password, user.password_hash):
            return None, f"user '{username}' - invalid credentials"
        if user.loopback_only and not is_loopback(peer):
            return None, f"user '{username}' can only connect via localhost"
        return user, ""
