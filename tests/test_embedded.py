"""syncmq.Server: a broker in this process, several at once, nothing left behind by stop()."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading

import pika
import pytest

import syncmq
from syncmq.broker.auth import UsersFileError
from syncmq.journal.writer import JournalError


def _publish_persistent(url: str, queue: str, body: bytes) -> None:
    c = pika.BlockingConnection(pika.URLParameters(url))
    ch = c.channel()
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    c.close()


def _count(url: str, queue: str) -> int:
    c = pika.BlockingConnection(pika.URLParameters(url))
    n = c.channel().queue_declare(queue, passive=True).method.message_count
    c.close()
    return n


_BEFORE: set[threading.Thread] = set()


@pytest.fixture(autouse=True)
def _baseline():
    """syncmq threads other tests of this process left running are not this test's."""
    _BEFORE.clear()
    _BEFORE.update(threading.enumerate())


def _syncmq_threads() -> list[str]:
    """Names of the syncmq threads started since the test began, still alive."""
    return [t.name for t in threading.enumerate()
            if t.name.startswith("syncmq-") and t not in _BEFORE]


def test_two_servers_in_one_process_and_nothing_left_after_stop() -> None:
    assert not _syncmq_threads()
    interval = sys.getswitchinterval()
    with syncmq.Server() as a, syncmq.Server(management_port=0) as b:
        assert a.port != b.port and a.data_dir != b.data_dir
        assert a.management_url is None and b.management_url.startswith("http://127.0.0.1:")
        _publish_persistent(a.url, "only-in-a", b"x")
        assert _count(a.url, "only-in-a") == 1
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            _count(b.url, "only-in-a")
        dirs = (a.data_dir, b.data_dir)
        assert len(a.threads()) >= 4 and len(b.threads()) > len(a.threads())
    assert not _syncmq_threads()
    assert not a.threads() and not b.threads()
    assert not any(os.path.exists(d) for d in dirs)  # temporary data dirs go at stop
    assert sys.getswitchinterval() == interval  # the pools put the interpreter's back


def test_start_returns_once_the_listener_accepts() -> None:
    with syncmq.Server() as s:
        socket.create_connection((s.host, s.port), timeout=5).close()
        c = pika.BlockingConnection(pika.URLParameters(s.url))  # and the handshake completes
        assert c.channel().is_open
        c.close()


def test_restart_on_the_same_data_dir_keeps_durable_messages(tmp_path) -> None:
    with syncmq.Server(data_dir=str(tmp_path)) as s:
        _publish_persistent(s.url, "durable-q", b"kept")
        port = s.port
        conn = pika.BlockingConnection(pika.URLParameters(s.url))
        s.restart()
        assert s.port == port and _count(s.url, "durable-q") == 1
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker, match="320"):
            conn.channel()  # the graceful stop closed it with 320 CONNECTION_FORCED
        conn = pika.BlockingConnection(pika.URLParameters(s.url))
        s.restart(crash=True)
        with pytest.raises(pika.exceptions.AMQPConnectionError) as info:
            conn.channel()
        assert not isinstance(info.value, pika.exceptions.ConnectionClosedByBroker)
        assert _count(s.url, "durable-q") == 1
    assert os.path.exists(tmp_path / "LOCK")  # a given data dir is kept


def test_restart_keeps_the_ephemeral_management_port(tmp_path) -> None:
    """``management_port=0`` picks a port once; a restart serves the API on the same one (a
    client's URL must survive the restart, as the AMQP port's does)."""
    with syncmq.Server(data_dir=str(tmp_path), management_port=0) as s:
        before = s.management_url
        s.restart()
        assert s.management_url == before


def test_failed_start_leaves_nothing_running(tmp_path) -> None:
    with syncmq.Server(data_dir=str(tmp_path)) as s:
        with pytest.raises(JournalError):  # the data dir is the other broker's
            syncmq.Server(data_dir=str(tmp_path)).start()
        busy = syncmq.Server(port=s.port)
        with pytest.raises(OSError):
            busy.start()
        assert not busy.running
        bad = tmp_path / "users.toml"
        bad.write_text("users = 5\n")
        broken = syncmq.Server(users_file=str(bad))
        with pytest.raises(UsersFileError, match="'users' must be a table"):
            broken.start()
        assert broken.data_dir is None  # its temporary data dir is gone
        names = _syncmq_threads()
        assert len(names) == len(s.threads())
    assert not _syncmq_threads()


def test_options_are_the_cli_names() -> None:
    s = syncmq.Server(max_message_size="1KiB", heartbeat=0, frame_max="8192")
    assert (s.config.max_message_size, s.config.heartbeat, s.config.frame_max) == (1024, 0, 8192)
    with pytest.raises(ValueError, match="--frame-max"):
        syncmq.Server(frame_max=10)
    with pytest.raises(TypeError, match="daemonize"):
        syncmq.Server(daemonize=True)
    with s:
        c = pika.BlockingConnection(pika.URLParameters(s.url))
        ch = c.channel()
        ch.queue_declare("small")
        ch.basic_publish("", "small", b"x" * 2000)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="406"):
            ch.queue_declare("small", passive=True)
        c.close()


def test_logging_is_configured_only_when_asked(tmp_path) -> None:
    logger = logging.getLogger("syncmq")
    before = (list(logging.getLogger().handlers), list(logger.handlers), logger.level)
    with syncmq.Server():
        assert (list(logging.getLogger().handlers), list(logger.handlers), logger.level) == before
    log = tmp_path / "log"
    with syncmq.Server(log_level="info", log_format="json", log_file=str(log)):
        assert len(logger.handlers) == len(before[1]) + 1
    assert (list(logging.getLogger().handlers), list(logger.handlers), logger.level) == before
    assert '"syncmq 0' in log.read_text() or "started" in log.read_text()


def test_python_dash_m_syncmq() -> None:
    p = subprocess.run([sys.executable, "-m", "syncmq", "--version"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == f"syncmq {syncmq.__version__}"


def test_stop_ends_keep_alive_management_connections() -> None:
    """A client holding a keep-alive HTTP connection neither blocks stop() nor keeps a
    request thread (or an answering socket) alive after it."""
    import base64
    import http.client
    import urllib.parse

    s = syncmq.Server(management_port=0).start()
    u = urllib.parse.urlsplit(s.management_url)
    h = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    auth = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
    h.request("GET", "/api/overview", headers=auth)
    assert h.getresponse().read()
    before = {t for t in threading.enumerate() if t not in _BEFORE}
    assert before  # the listener and its request threads
    s.stop()
    assert not [t.name for t in before if t.is_alive()]
    with pytest.raises((OSError, http.client.HTTPException)):
        h.request("GET", "/api/overview", headers=auth)
        h.getresponse()


def test_users_file_tls_and_memory_budget(tmp_path) -> None:
    """The options a plugin user reaches for: a users file (reloadable), TLS on an ephemeral
    port, a memory budget (bodies spill under DATA_DIR/spill)."""
    pytest.importorskip("cryptography")
    from test_tls import _params, make_pki

    from syncmq.broker.auth import hash_password

    (tmp_path / "pki").mkdir()
    files = make_pki(tmp_path / "pki")
    users = tmp_path / "users.toml"
    users.write_text(f'vhosts = ["/"]\nloopback_users = []\n[users.app]\n'
                     f'password_hash = "{hash_password("s3cret")}"\ntags = []\n'
                     f'[users.app.permissions."/"]\nconfigure = ".*"\nwrite = ".*"\n'
                     f'read = ".*"\n')
    with syncmq.Server(users_file=str(users), tls_port=0, tls_cert=files["cert"],
                       tls_key=files["key"], tls_ca=files["ca"],
                       memory_budget="4KiB") as s:
        assert s.tls_port not in (None, 0, s.port)
        creds = pika.PlainCredentials("app", "s3cret")
        c = pika.BlockingConnection(_params(s.tls_port, files, credentials=creds))
        ch = c.channel()
        ch.queue_declare("big")
        for _ in range(8):
            ch.basic_publish("", "big", b"x" * 2048)
        assert ch.queue_declare("big", passive=True).method.message_count == 8
        c.close()
        assert os.listdir(os.path.join(s.data_dir, "spill"))  # beyond 4 KiB: spilled
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika.URLParameters(s.url))  # guest is not in the file
        users.write_text(users.read_text().replace("[users.app]", "[users.app2]")
                         .replace("users.app.", "users.app2."))
        assert s.reload_users()
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(_params(s.tls_port, files, credentials=creds))

