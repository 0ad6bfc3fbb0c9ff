"""Fixtures for the interoperability suite: every major client against syncmq, and a private
RabbitMQ node for the differential suite.

The syncmq fixtures (``broker``, ``fresh_broker``, ``broker_factory``, ``unique``) come from
``tests/conftest.py``. Each client's module skips with a clear reason when the client is not
installed; ``.ci/run`` installs all of them, so in CI nothing here skips.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest
from interop_helpers import RabbitNode, rabbitmq_available

PLUGINS = ("rabbitmq_shovel", "rabbitmq_shovel_management", "rabbitmq_federation",
           "rabbitmq_federation_management")


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitNode]:
    """A private RabbitMQ node for the whole session (differential suite; with pytest-xdist,
    one per worker: the node name carries the worker's pid, its ports are ephemeral and its
    dirs its own temp dir, so two workers' nodes share nothing but epmd), with its
    management plugin (the rabbitmqadmin comparisons) and the shovel and federation plugins
    (their runtime-parameter components: shovel, federation-upstream(-set); and their
    management parts: ``/api/shovels``, ``/api/federation-links``). Enabled at boot, which
    costs the node 0.7 CPU s once (5.7 -> 6.5 s of beam CPU to boot, 3 runs each), where
    ``rabbitmq-plugins enable --online`` took 12 s of wall time; they change nothing until a
    shovel, upstream or policy is defined, which only the tests of those plugins do (and
    remove). The differential suites pass unchanged with them on."""
    if not rabbitmq_available():
        pytest.skip("rabbitmq-server is not installed (CI installs it: apt-get install "
                    "rabbitmq-server)")
    base = tempfile.mkdtemp(prefix="syncmq-interop-rabbit-")
    node = RabbitNode(base, management=True, plugins=PLUGINS).start()
    yield node
    node.stop()
    shutil.rmtree(base, ignore_errors=True)
