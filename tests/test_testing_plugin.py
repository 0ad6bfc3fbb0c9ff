"""The pytest plugin (syncmq.testing.plugin), tested as its users run it: pytester sessions.

Inner sessions import this checkout's syncmq (PYTHONPATH for subprocess runs). The plugin is
passed with ``-p`` unless the installed entry point already loaded it.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading

import pytest
from plugin_args import plugin_args

pytest_plugins = ["pytester"]

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Inner tests write what they saw to a file named by SEEN, one JSON object a line.
SEEN_HELPER = '''
import json, os, threading
def seen(**kw):
    kw["pid"] = os.getpid()
    with open(os.environ["SEEN"], "a") as f:
        f.write(json.dumps(kw) + "\\n")
'''


@pytest.fixture
def run(pytester: pytest.Pytester, request, monkeypatch, tmp_path):
    """``run(*args, subprocess=False) -> (result, seen records)``."""
    loaded = request.config.pluginmanager.has_plugin("syncmq")  # in-process runs inherit it
    seen_file = tmp_path / "seen.jsonl"
    monkeypatch.setenv("SEEN", str(seen_file))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(seenlib=SEEN_HELPER)

    def go(*args: str, subprocess: bool = False):
        if subprocess:
            plugin = plugin_args(dict(os.environ), cwd=str(pytester.path))
        else:
            plugin = [] if loaded else ["-p", "syncmq.testing.plugin"]
        runner = pytester.runpytest_subprocess if subprocess else pytester.runpytest_inprocess
        result = runner(*plugin, "-p", "no:cacheprovider", *args)
        records = [json.loads(line) for line in seen_file.read_text().splitlines()] \
            if seen_file.exists() else []
        return result, records

    return go


@pytest.fixture(autouse=True)
def _baseline(request):
    request.node.threads_before = set(threading.enumerate())


def _syncmq_threads(before: set) -> list[str]:
    """syncmq threads started since ``before`` (other tests may have left some) and alive."""
    return [t.name for t in threading.enumerate()
            if t.name.startswith("syncmq-") and t not in before]


def test_session_server_starts_once_and_stops_at_the_end(pytester, run, request) -> None:
    body = '''
import pika
from seenlib import seen

def test_{n}(syncmq_server, syncmq_url):
    c = pika.BlockingConnection(pika.URLParameters(syncmq_url))
    c.channel().queue_declare("q{n}")
    c.close()
    seen(server=id(syncmq_server), port=syncmq_server.port)
'''
    pytester.makepyfile(test_one=body.format(n=1), test_two=body.format(n=2))
    result, seen = run()
    result.assert_outcomes(passed=2)
    assert len(seen) == 2 and seen[0]["server"] == seen[1]["server"]
    assert seen[0]["port"] == seen[1]["port"]
    # the session's broker is stopped and joined
    assert not _syncmq_threads(request.node.threads_before)


def test_vhost_isolation_between_tests(pytester, run) -> None:
    pytester.makepyfile(test_iso='''
import pika
from seenlib import seen

def _channel(url):
    return pika.BlockingConnection(pika.URLParameters(url)).channel()

def test_a_leaves_messages(syncmq_vhost):
    ch = _channel(syncmq_vhost.url)
    ch.queue_declare("jobs")
    ch.exchange_declare("events", "fanout")
    for i in range(3):
        ch.basic_publish("", "jobs", b"job %d" % i)
    assert syncmq_vhost.wait_for_messages("jobs", 3) == 3
    assert [m.body for m in syncmq_vhost.peek("jobs")] == [b"job 0", b"job 1", b"job 2"]
    assert syncmq_vhost.message_count("jobs") == 3  # peeking left them there
    left = syncmq_vhost.leftovers()
    assert left.queues == {"jobs": 3} and left.exchanges == ["events"]
    seen(vhost=syncmq_vhost.name)

def test_b_sees_none_of_them(syncmq_vhost, syncmq_admin):
    ch = _channel(syncmq_vhost.url)
    assert ch.queue_declare("jobs").method.message_count == 0
    assert syncmq_vhost.purge_all() == {"jobs": 0}
    names = [v["name"] for v in syncmq_admin.api("GET", "vhosts")]
    seen(vhost=syncmq_vhost.name, vhosts=names)

def test_c_wait_fails_clearly(syncmq_vhost):
    import pytest
    with pytest.raises(AssertionError, match="did not reach 1 messages in 0.2s: the queue does not exist"):
        syncmq_vhost.wait_for_messages("nothing", 1, timeout=0.2)
''')
    result, seen = run("-v")
    result.assert_outcomes(passed=3)
    a, b = seen
    assert a["vhost"] != b["vhost"]
    assert a["vhost"] not in b["vhosts"] and b["vhost"] in b["vhosts"]  # a's was deleted


def test_restart_on_the_same_data_dir(pytester, run, request) -> None:
    pytester.makepyfile(test_restart='''
import pika, pytest
from syncmq.testing import BrokerAdmin

def test_my_code_survives_a_broker_crash(syncmq_factory, tmp_path):
    server = syncmq_factory(data_dir=str(tmp_path / "data"))
    c = pika.BlockingConnection(pika.URLParameters(server.url))
    ch = c.channel()
    ch.queue_declare("orders", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "orders", b"order 1", pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("", "orders", b"scratch")  # transient: lost with the broker
    server.restart(crash=True)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        c.channel()  # the crash dropped the connection
    admin = BrokerAdmin(server.url)
    assert admin.wait_for_messages("orders", 1) == 1
    c2 = pika.BlockingConnection(pika.URLParameters(server.url))
    method, _, body = c2.channel().basic_get("orders", auto_ack=True)
    assert body == b"order 1" and method.message_count == 0
    c2.close()
''')
    result, _ = run()
    result.assert_outcomes(passed=1)
    assert not _syncmq_threads(request.node.threads_before)


def test_xdist_workers_each_have_their_own_broker(pytester, run) -> None:
    pytest.importorskip("xdist")
    body = '''
import pika
from seenlib import seen

def test_{n}(syncmq_server, syncmq_vhost):
    c = pika.BlockingConnection(pika.URLParameters(syncmq_vhost.url))
    c.channel().queue_declare("q")
    c.close()
    seen(port=syncmq_server.port)
'''
    pytester.makepyfile(**{f"test_x{n}": body.format(n=n) for n in range(6)})
    result, seen = run("-n", "2", subprocess=True)
    result.assert_outcomes(passed=6)
    ports_by_pid: dict[int, set[int]] = {}
    for rec in seen:
        ports_by_pid.setdefault(rec["pid"], set()).add(rec["port"])
    assert len(ports_by_pid) == 2  # two worker processes ...
    assert all(len(p) == 1 for p in ports_by_pid.values())  # ... each one broker ...
    assert len(set().union(*ports_by_pid.values())) == 2  # ... on ports of its own


def test_session_options_fixture_and_factory_options(pytester, run) -> None:
    pytester.makeconftest('''
import pytest

@pytest.fixture(scope="session")
def syncmq_server_options():
    return {"max_message_size": "1KiB"}
''')
    pytester.makepyfile(test_opts='''
import pika, pytest

def test_session_options(syncmq_server):
    assert syncmq_server.config.max_message_size == 1024

def test_factory(syncmq_factory):
    s = syncmq_factory(frame_max=8192, heartbeat=0)
    c = pika.BlockingConnection(pika.URLParameters(s.url))
    assert c._impl.params.frame_max == 8192
    c.close()
''')
    result, _ = run()
    result.assert_outcomes(passed=2)


def test_project_suite_options_and_fixtures_do_not_clash(pytester, run) -> None:
    """A suite with fixtures and options of its own names (as this project's) is unaffected:
    the plugin adds only syncmq_* fixtures and --syncmq-* options, and starts nothing unless
    asked."""
    pytester.makeconftest('''
import pytest

@pytest.fixture
def broker():
    return "mine"

def pytest_addoption(parser):
    parser.addoption("--url", default="x")
''')
    pytester.makepyfile(test_mine='''
import sys, threading

def test_mine(broker, request):
    assert broker == "mine" and request.config.getoption("url") == "x"
    assert not [t for t in threading.enumerate() if t.name.startswith("syncmq-")]
    assert "syncmq.server" not in sys.modules  # loading the plugin imports no broker
''')
    result, _ = run("--fixtures")
    result.stdout.fnmatch_lines(["*syncmq_vhost*", "*syncmq_factory*"])
    result, _ = run(subprocess=True)  # a fresh process: nothing of this one's
    result.assert_outcomes(passed=1)
