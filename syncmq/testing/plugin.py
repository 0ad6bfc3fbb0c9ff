"""The pytest plugin (entry point ``pytest11: syncmq``): a real AMQP broker for a test suite.

Fixtures (all named ``syncmq_*``; none is autouse, so a suite that requests none of them
starts no broker and sees nothing of this plugin but its command-line options):

- ``syncmq_server`` (session): one in-process :class:`syncmq.Server` for the whole session
  (per xdist worker: each worker process has its own, on its own ephemeral port), with the
  management API on an ephemeral port; its options come from the ``syncmq_server_options``
  fixture (session scope; override it in a conftest). With ``--syncmq-url`` no broker is
  started: the fixture describes that external broker (RabbitMQ, say) instead.
- ``syncmq_url``: the session broker's URL (vhost "/").
- ``syncmq_admin`` (session): :class:`~syncmq.testing.helpers.BrokerAdmin` for it.
- ``syncmq_vhost``: a fresh vhost for one test, deleted after it (isolation without a
  restart); ``.url``, ``.name`` and the helpers bound to it.
- ``syncmq_factory``: ``syncmq_factory(**options)`` starts a broker of the test's own
  (users file, TLS, memory budget, a data dir to restart on: ``server.restart(crash=True)``),
  stopped after the test.

This module imports only pytest at load time: the broker is imported when a fixture runs.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("syncmq", "syncmq: a real AMQP broker for tests")
    group.addoption("--syncmq-url", default=os.environ.get("SYNCMQ_TEST_URL"),
                    help="run the syncmq_* fixtures against this broker (e.g. a RabbitMQ: "
                         "amqp://guest:guest@127.0.0.1:5672/) instead of an in-process "
                         "syncmq; env SYNCMQ_TEST_URL")
    group.addoption("--syncmq-management-url",
                    default=os.environ.get("SYNCMQ_TEST_MANAGEMENT_URL"),
                    help="that broker's management API (default http://HOST:15672/); "
                         "syncmq_vhost and the listing helpers need it; env "
                         "SYNCMQ_TEST_MANAGEMENT_URL")


@dataclass
class ExternalBroker:
    """A broker this plugin did not start (``--syncmq-url``): same attributes as
    :class:`syncmq.Server` where they make sense; it cannot be restarted from a test."""

    url: str
    management_url: str | None

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or "localhost"

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.url).port or 5672

    def restart(self, **_: Any) -> None:
        pytest.skip("an external broker (--syncmq-url) cannot be restarted by a test")


@pytest.fixture(scope="session")
def syncmq_server_options() -> dict[str, Any]:
    """Options of the session broker (``syncmq.Server`` keywords, the CLI's names); override
    this fixture to change them, e.g. ``{"users_file": "tests/users.toml"}``."""
    return {}


@pytest.fixture(scope="session")
def syncmq_server(request: pytest.FixtureRequest, syncmq_server_options: dict[str, Any]):
    url = request.config.getoption("syncmq_url")
    if url:
        mgmt = request.config.getoption("syncmq_management_url")
        if mgmt is None:
            mgmt = f"http://{urllib.parse.urlsplit(url).hostname or 'localhost'}:15672/"
        yield ExternalBroker(url, mgmt)
        return
    from syncmq.embedded import Server

    options = {"management_port": 0, **syncmq_server_options}
    with Server(**options) as server:
        yield server


@pytest.fixture(scope="session")
def syncmq_url(syncmq_server) -> str:
    return syncmq_server.url


@pytest.fixture(scope="session")
def syncmq_admin(syncmq_server):
    from syncmq.testing.helpers import BrokerAdmin

    return BrokerAdmin(syncmq_server.url, syncmq_server.management_url)


class Vhost:
    """One test's vhost: ``name``, ``url`` and the helpers with the vhost filled in."""

    def __init__(self, admin, name: str, url: str) -> None:
        self.admin, self.name, self.url = admin, name, url

    def message_count(self, queue: str) -> int:
        return self.admin.message_count(queue, self.name)

    def wait_for_messages(self, queue: str, n: int, timeout: float = 10.0) -> int:
        return self.admin.wait_for_messages(queue, n, self.name, timeout)

    def peek(self, queue: str, count: int | None = None):
        return self.admin.peek(queue, self.name, count)

    def purge_all(self) -> dict[str, int]:
        return self.admin.purge_all(self.name)

    def leftovers(self):
        return self.admin.leftovers(self.name)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<syncmq vhost {self.name!r} {self.url}>"


@pytest.fixture
def syncmq_vhost(syncmq_admin, request: pytest.FixtureRequest) -> Iterator[Vhost]:
    """A vhost made for this test and deleted after it (its queues, exchanges and
    connections with it)."""
    name = f"test-{request.node.name[:60]}-{os.urandom(4).hex()}"
    url = syncmq_admin.create_vhost(name)
    yield Vhost(syncmq_admin, name, url)
    syncmq_admin.delete_vhost(name)


@pytest.fixture
def syncmq_factory():
    """``syncmq_factory(**options) -> syncmq.Server`` (started); every server it made is
    stopped after the test. Always an in-process syncmq, even with ``--syncmq-url``."""
    from syncmq.embedded import Server

    made: list[Server] = []

    def start(**options: Any) -> Server:
        server = Server(**options)
        server.start()
        made.append(server)
        return server

    yield start
    for server in reversed(made):
        server.stop()
