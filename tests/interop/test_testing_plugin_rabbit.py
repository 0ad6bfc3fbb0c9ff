"""The pytest plugin's ``--syncmq-url``: the same user tests run against a private RabbitMQ
node (with its management plugin, which ``syncmq_vhost`` and the listing helpers use), and
pass there as they do against the in-process syncmq."""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Iterator

import pytest
from interop_helpers import RabbitNode, free_port, rabbitmq_available

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from plugin_args import plugin_args  # noqa: E402  (tests/)

pytest_plugins = ["pytester"]

ROOT = pathlib.Path(__file__).resolve().parents[2]

USER_TESTS = '''
import pika, pytest

def _channel(url):
    return pika.BlockingConnection(pika.URLParameters(url)).channel()

def test_publish_wait_peek_leftovers(syncmq_vhost):
    ch = _channel(syncmq_vhost.url)
    ch.queue_declare("jobs")
    ch.exchange_declare("events", "fanout")
    for i in range(3):
        ch.basic_publish("", "jobs", b"job %d" % i)
    assert syncmq_vhost.wait_for_messages("jobs", 3) == 3
    assert [m.body for m in syncmq_vhost.peek("jobs")] == [b"job 0", b"job 1", b"job 2"]
    assert syncmq_vhost.message_count("jobs") == 3
    left = syncmq_vhost.leftovers()
    assert left.queues == {"jobs": 3} and left.exchanges == ["events"]
    assert syncmq_vhost.purge_all() == {"jobs": 3}

def test_next_vhost_is_empty(syncmq_vhost, syncmq_server):
    assert _channel(syncmq_vhost.url).queue_declare("jobs").method.message_count == 0
    print("PORT", syncmq_server.port)

def test_restart_is_skipped_for_an_external_broker(syncmq_server):
    syncmq_server.restart()
'''


class ManagedRabbitNode(RabbitNode):
    """The interop suite's private node plus the management plugin on its own port."""

    def __init__(self, base: str) -> None:
        super().__init__(base)
        # a name of its own: the differential suite's node may be running in this process
        self.node = f"syncmq-plugin-{os.getpid()}@localhost"
        self.env["RABBITMQ_NODENAME"] = self.node
        self.management_port = free_port()
        with open(os.path.join(base, "enabled_plugins"), "w") as f:
            f.write("[rabbitmq_management].\n")
        with open(os.path.join(base, "rabbitmq.conf"), "w") as f:
            f.write(f"management.tcp.port = {self.management_port}\n"
                    "management.tcp.ip = 127.0.0.1\n")


@pytest.fixture(scope="module")
def managed_rabbitmq() -> Iterator[ManagedRabbitNode]:
    if not rabbitmq_available():
        pytest.skip("rabbitmq-server is not installed (CI installs it)")
    base = tempfile.mkdtemp(prefix="syncmq-plugin-rabbit-")
    node = ManagedRabbitNode(base).start()
    yield node
    node.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_same_tests_against_rabbitmq(pytester, managed_rabbitmq, request, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_user=USER_TESTS)
    plugin = plugin_args(dict(os.environ), cwd=str(pytester.path))
    result = pytester.runpytest_subprocess(
        *plugin, "-p", "no:cacheprovider", "-s", "-rs",
        f"--syncmq-url=amqp://guest:guest@127.0.0.1:{managed_rabbitmq.port}/",
        f"--syncmq-management-url=http://127.0.0.1:{managed_rabbitmq.management_port}/")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines([f"*PORT {managed_rabbitmq.port}*", "*cannot be restarted*"])
    # and the same file against the in-process syncmq, which a test can restart
    result = pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
