"""Topic permissions and user limits: the two per-user rules RabbitMQ keeps with the user
(``rabbit_auth_backend_internal``), kept here with the users (the users file and the
:class:`~.auth.UserStore`), never in the runtime-parameter store.

**Topic permissions** (``rabbit_auth_backend_internal:check_topic_access``). Per user,
vhost and exchange, a ``write`` and a ``read`` regex on the routing key. A check is made
only for an exchange of type ``topic`` (``rabbit_channel:check_topic_authorisation``):
``basic.publish`` checks ``write`` on the message's routing key; ``queue.bind``/``unbind``
and ``exchange.bind``/``unbind`` check ``read`` on the binding key against the *source*
exchange, when it exists. A user with no entry for that vhost and exchange passes. Before
matching, ``{username}`` and ``{vhost}`` in the regex are replaced by the user's and the
vhost's names, as plain text (no escaping; ``{username}`` first, then ``{vhost}``, the
order of RabbitMQ's map fold). As for permissions, the regex is searched, not anchored,
and ``""`` is ``^$``. Because the user and the vhost are fixed for an entry, the expanded
regexes are compiled once, when the entry is built.

**User limits** (``max-connections``, ``max-channels``): integers; a negative value is no
limit, ``0`` refuses every connection or channel. Validation answers with RabbitMQ's texts
(``rabbit_parameter_validation``), values printed as Erlang's ``~p`` prints them.

Everything here is immutable once built, like the rest of a :class:`~.auth.UserStore`.
"""

from __future__ import annotations

import re

from .erlterm import term as erlang_term

LIMIT_NAMES = ("max-connections", "max-channels")
INT64 = (-(1 << 63), (1 << 63) - 1)


def _compile(pattern: str) -> re.Pattern | None:
    """The regex as RabbitMQ runs it (``""`` is ``^$``); None if it does not compile (an
    expansion can make a valid pattern invalid: such an entry grants nothing)."""
    try:
        return re.compile(pattern if pattern else "^$")
    except (re.error, RecursionError, OverflowError):
        return None


def expand(pattern: str, username: str, vhost: str) -> str:
    """``{username}`` then ``{vhost}`` replaced as text (rabbit_auth_backend_internal's
    ``expand_topic_permission`` folds the variable map in key order)."""
    return pattern.replace("{username}", username).replace("{vhost}", vhost)


def check_regex(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid regex (None if it is). Checked unexpanded, as
    RabbitMQ's ``set_topic_permissions`` checks it."""
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as e:
        return str(e)
    return None


class TopicPermission:
    """The write and read regexes of one user on one exchange of one vhost, compiled once
    with the variables expanded. Immutable."""

    __slots__ = ("write", "read", "_w", "_r")

    def __init__(self, write: str, read: str, username: str, vhost: str) -> None:
        self.write = write
        self.read = read
        self._w = _compile(expand(write, username, vhost))
        self._r = _compile(expand(read, username, vhost))

    def allows(self, what: str, routing_key: str) -> bool:
        """``what`` is "write" or "read"."""
        rx = self._w if what == "write" else self._r
        return rx is not None and rx.search(routing_key) is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TopicPermission) and (self.write, self.read) == (
            other.write, other.read)

    def __repr__(self) -> str:
        return f"TopicPermission(write={self.write!r}, read={self.read!r})"


def topic_refusal(routing_key: str, exchange: str, vhost: str, username: str) -> str:
    """RabbitMQ's text (rabbit_access_control:check_topic_access), with the reply name."""
    return (f"ACCESS_REFUSED - access to topic '{routing_key}' in exchange '{exchange}' in "
            f"vhost '{vhost}' refused for user '{username}'")


# ---- user limits ----


class LimitError(ValueError):
    """A user-limits definition RabbitMQ refuses; the message is RabbitMQ's text."""


def validate_limits(term: object) -> dict[str, int]:
    """A user-limits object checked as RabbitMQ checks it (``user_limit_validation``);
    raises :class:`LimitError` with the text RabbitMQ answers. Unknown keys are reported
    first, then the last bad value (the order of RabbitMQ's error list)."""
    if not isinstance(term, dict):
        raise LimitError(f"user-limits not a list {erlang_term(term)}")
    unknown = sorted(k for k in term if k not in LIMIT_NAMES)
    if unknown:
        terms = ",".join(f"{{{erlang_term(k)},{erlang_term(term[k])}}}" for k in unknown)
        raise LimitError(f"Unrecognised terms [{terms}] in user-limits")
    for name in reversed(LIMIT_NAMES):
        if name in term:
            v = term[name]
            if not isinstance(v, int) or isinstance(v, bool):
                raise LimitError(f"{name} should be a number, actually was {erlang_term(v)}")
            if not INT64[0] <= v <= INT64[1]:
                # RabbitMQ takes any integer; the users file holds 64-bit ones
                raise LimitError(f"{name} should be a 64-bit integer, actually was {v}")
    return {k: term[k] for k in LIMIT_NAMES if k in term}


def limit_of(limits: dict[str, int], name: str) -> int | None:
    """The limit in force (None: no limit; a negative value is no limit)."""
    v = limits.get(name)
    return None if v is None or v < 0 else v
