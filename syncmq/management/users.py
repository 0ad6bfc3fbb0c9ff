"""Changing users, permissions and vhosts from the management API.

The broker's :class:`~syncmq.broker.auth.UserStore` is never mutated in place: readers fetch
``broker.users`` once and must see one consistent version. A change therefore copies the
store, edits the copy's ``users`` dict (and ``vhosts`` list, where the store keeps one) and
swaps it in with one attribute store, under :data:`_lock` so that two concurrent API calls do
not lose each other's change.

With ``--users-file`` (the store's ``source``) a change is written to the file before it is
swapped in (``auth.save``: temp file, fsync, rename), so users, permissions, topic
permissions and limits changed through the API survive a restart and a SIGHUP reload; a file
that cannot be written refuses the change (500, nothing changed). Without a users file they
live in memory, as the built-in ``guest`` does.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import threading
from collections.abc import Callable

from ..broker.auth import Permission, User, UsersFileError, hash_password, save
from ..broker.broker import Broker
from .errors import HTTPError

# Serialises read-copy-swap of ``broker.users`` by management requests (HTTP threads).
_lock = threading.Lock()

SHA256 = "rabbit_password_hashing_sha256"


def update(broker: Broker, change: Callable[[dict[str, User], list[str] | None], None]) -> None:
    """Copy the store, let ``change(users, vhosts)`` edit the copies, swap the copy in."""
    with _lock:
        old = broker.users
        new = copy.copy(old)
        new.users = {
            name: dataclasses.replace(
                u, tags=list(u.tags), permissions=dict(u.permissions), limits=dict(u.limits),
                topic_permissions={vh: dict(per) for vh, per in u.topic_permissions.items()})
            for name, u in old.users.items()
        }
        vhosts = list(old.vhosts) if isinstance(getattr(old, "vhosts", None), list) else None
        change(new.users, vhosts)
        if vhosts is not None:
            new.vhosts = vhosts
        path = getattr(new, "source", None)
        if path:
            try:
                save(new, path)
            except (OSError, UsersFileError) as e:
                raise HTTPError(500, "internal_error",
                                f"the users file {path} could not be written, nothing was "
                                f"changed: {e}") from None
        broker.users = new


def make_user(name: str, *, password: str | None = None, password_hash: str | None = None,
              tags: list[str] | None = None, old: User | None = None) -> User:
    """A user from a password or a hash (hex, or base64 as RabbitMQ writes it); with ``old``
    (the user being changed) its permissions, topic permissions, limits and
    ``loopback_only`` are kept."""
    if not name:
        raise ValueError("user name must not be empty")
    if password is not None:
        hashed = hash_password(password)
    elif password_hash is not None:
        hashed = to_hex(password_hash)
    elif old is not None:
        hashed = old.password_hash
    else:
        raise ValueError("a password or a password_hash is required")
    perms = dict(old.permissions) if old is not None else {}
    # loopback_only is a property of the account, not of its password or tags: kept
    if old is None:
        return User(name, hashed, list(tags or []), perms)
    return User(name, hashed, list(tags or []), perms, old.loopback_only,
                {vh: dict(per) for vh, per in old.topic_permissions.items()}, dict(old.limits))


def to_hex(hashed: str) -> str:
    """A stored hash as hex; RabbitMQ's definitions hold base64 of the same 36 bytes."""
    text = hashed.strip()
    if text == "":
        return ""  # no password: nobody can log in as this user
    if len(text) == 72:
        try:
            bytes.fromhex(text)
            return text.lower()
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("password_hash is neither hex nor base64") from None
    if len(raw) != 36:
        raise ValueError("password_hash is not a salted SHA-256 hash (36 bytes)")
    return raw.hex()


def to_base64(hashed: str) -> str:
    """A stored hash as RabbitMQ writes it in definitions (base64 of salt + digest)."""
    try:
        return base64.b64encode(bytes.fromhex(hashed)).decode("ascii")
    except ValueError:
        return hashed  # already base64 (a users file may hold RabbitMQ's form)


def parse_tags(tags: object) -> list[str]:
    """RabbitMQ accepts tags as a list or a comma-separated string."""
    if tags is None:
        return []
    if isinstance(tags, str):
        return [t.strip() for t in tags.split(",") if t.strip()]
    if isinstance(tags, list) and all(isinstance(t, str) for t in tags):
        return list(tags)
    raise ValueError("tags must be a list of strings or a comma-separated string")


def permission(configure: str, write: str, read: str) -> Permission:
    return Permission(configure, write, read)
