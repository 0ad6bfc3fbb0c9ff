"""What test authors need around a broker, for syncmq and RabbitMQ alike.

:class:`BrokerAdmin` speaks AMQP (exact queue depths: ``queue.declare`` passive) and the
management HTTP API (vhosts, permissions, listings, peeking), which syncmq and RabbitMQ share,
so the same helpers work against the plugin's in-process broker and an external RabbitMQ
(``--syncmq-url``, with the management plugin for everything but depths). Standard library
and ``syncmq.perf.client`` only. Every wait has a timeout and fails with what it saw.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from syncmq.perf.client import Client, ClientError, parse_uri

__all__ = ["BrokerAdmin", "Leftovers", "PeekedMessage", "with_vhost"]

_q = urllib.parse.quote


def with_vhost(url: str, vhost: str) -> str:
    """``url`` with its path replaced by ``vhost`` (percent-encoded, "/" is ``%2F``)."""
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + _q(vhost, ""), u.query, ""))


@dataclass
class PeekedMessage:
    body: bytes
    properties: dict
    exchange: str
    routing_key: str
    redelivered: bool


@dataclass
class Leftovers:
    """What a test left in a vhost: queues (name -> ready messages), exchanges it declared
    (not the default or ``amq.*`` ones) and open connections."""

    queues: dict[str, int] = field(default_factory=dict)
    exchanges: list[str] = field(default_factory=list)
    connections: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.queues or self.exchanges or self.connections)


class BrokerAdmin:
    """Helpers for one broker: ``url`` (``amqp://user:pass@host:port/vhost``) and the
    management API's base ``management_url`` (``http://host:port/``; credentials from
    ``url``), or None when there is none (vhost and listing helpers then raise)."""

    def __init__(self, url: str, management_url: str | None = None) -> None:
        self.url = url
        self.management_url = management_url
        p = parse_uri(url)
        token = base64.b64encode(f"{p['user']}:{p['password']}".encode()).decode()
        self._auth = f"Basic {token}"
        self.user = p["user"]

    # ---- management HTTP ----

    def api(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        """One management API request (``path`` below ``/api/``); returns the decoded JSON
        (None for an empty answer). Raises AssertionError with the status and body."""
        if not self.management_url:
            raise RuntimeError("this broker has no management API URL (--syncmq-management-url)")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.management_url.rstrip("/") + "/api/" + path,
                                     data=data, method=method)
        req.add_header("Authorization", self._auth)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} /api/{path}: {e.code} {e.read()[:500]!r}") from None
        return json.loads(raw) if raw else None

    def create_vhost(self, name: str) -> str:
        """Create ``name`` and give this URL's user every permission on it; returns its URL."""
        self.api("PUT", f"vhosts/{_q(name, '')}", {})
        self.api("PUT", f"permissions/{_q(name, '')}/{_q(self.user, '')}",
                 {"configure": ".*", "write": ".*", "read": ".*"})
        return with_vhost(self.url, name)

    def delete_vhost(self, name: str) -> None:
        """Delete ``name``: its queues and exchanges go, its connections are closed."""
        self.api("DELETE", f"vhosts/{_q(name, '')}")

    # ---- AMQP ----

    def message_count(self, queue: str, vhost: str = "/") -> int:
        """Messages ready in ``queue`` now (AMQP ``queue.declare`` passive; exact on RabbitMQ
        too, where the management API's counts lag by seconds). KeyError if there is none."""
        try:
            c = Client(with_vhost(self.url, vhost), timeout=10.0, name="syncmq-testing")
        except ClientError as e:
            raise AssertionError(f"cannot open vhost {vhost!r}: {e}") from None
        try:
            return c.queue_declare(queue, passive=True)
        except ClientError as e:
            if e.reply_code == 404:
                raise KeyError(f"no queue {queue!r} in vhost {vhost!r}") from None
            raise
        finally:
            c.close()

    def wait_for_messages(self, queue: str, n: int, vhost: str = "/",
                          timeout: float = 10.0) -> int:
        """Block until ``queue`` has at least ``n`` ready messages; returns the count.
        Fails after ``timeout`` seconds saying how many there were (or that the queue
        never existed)."""
        deadline = time.monotonic() + timeout
        delay, seen = 0.002, None
        while True:
            try:
                seen = self.message_count(queue, vhost)
            except KeyError:
                seen = None
            if seen is not None and seen >= n:
                return seen
            if time.monotonic() >= deadline:
                what = "the queue does not exist" if seen is None else f"it has {seen}"
                raise AssertionError(f"queue {queue!r} in vhost {vhost!r} did not reach {n} "
                                     f"messages in {timeout}s: {what}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    # ---- listings (management API) ----

    def peek(self, queue: str, vhost: str = "/", count: int | None = None
             ) -> list[PeekedMessage]:
        """The first ``count`` (default: all) ready messages of ``queue``, left in it in the
        same order (they come back marked redelivered, as RabbitMQ's "Get messages" does)."""
        if count is None:
            count = self.message_count(queue, vhost)
        if count == 0:
            return []
        got = self.api("POST", f"queues/{_q(vhost, '')}/{_q(queue, '')}/get",
                       {"count": count, "ackmode": "ack_requeue_true", "encoding": "base64"})
        return [PeekedMessage(base64.b64decode(m["payload"]), m.get("properties") or {},
                              m["exchange"], m["routing_key"], m["redelivered"]) for m in got]

    def leftovers(self, vhost: str = "/") -> Leftovers:
        """Queues (with their ready messages, counted over AMQP: exact), exchanges and
        connections in ``vhost``: what a test left behind."""
        v = _q(vhost, "")
        listed = {q["name"]: q.get("messages_ready") or 0 for q in self.api("GET", f"queues/{v}")}
        queues = self._each_queue(vhost, listed, lambda c, name: c.queue_declare(name, passive=True))
        exchanges = [e["name"] for e in self.api("GET", f"exchanges/{v}")
                     if e["name"] and not e["name"].startswith("amq.")]
        connections = [c["name"] for c in self.api("GET", f"vhosts/{v}/connections")]
        return Leftovers(queues, sorted(exchanges), connections)

    def purge_all(self, vhost: str = "/") -> dict[str, int]:
        """Purge every queue of ``vhost``; returns the messages each had. A queue exclusive
        to another connection cannot be purged: it keeps its listed count."""
        listed = self.leftovers(vhost).queues
        return self._each_queue(vhost, listed, lambda c, name: c.queue_purge(name))

    def _each_queue(self, vhost: str, listed: dict[str, int], fn) -> dict[str, int]:
        """``fn(client, name)`` for each queue over one AMQP connection (a new one after a
        channel error: 404 gone meanwhile, 405 exclusive to another connection)."""
        out: dict[str, int] = {}
        url = with_vhost(self.url, vhost)
        c = Client(url, timeout=10.0, name="syncmq-testing")
        try:
            for name, count in sorted(listed.items()):
                try:
                    out[name] = fn(c, name)
                except ClientError as e:
                    if e.reply_code not in (404, 405):
                        raise
                    if e.reply_code == 405:
                        out[name] = count
                    c.close()
                    c = Client(url, timeout=10.0, name="syncmq-testing")
        finally:
            c.close()
        return out
