"""syncmq under a real supervisord: RUNNING, a graceful `supervisorctl stop` (exit status 0 and
the shutdown log lines), and `supervisorctl start` recovering durable queues and persistent
messages."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pika
import pytest

pytest.importorskip("supervisor")


def _ctl(conf, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf),
                           *args], capture_output=True, text=True, timeout=60)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)  # polling an external process's state; nothing to wait on


def _started_ports(log) -> list[int]:
    ports = []
    if log.exists():
        for line in log.read_text().splitlines():
            if '"started"' in line or " started" in line:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if "port" in rec:
                    ports.append(rec["port"])
    return ports


def test_supervisord_runs_stops_and_restarts_syncmq(tmp_path):
    data = tmp_path / "data"
    log = tmp_path / "syncmq.log"
    conf = tmp_path / "supervisord.conf"
    sock = tmp_path / "supervisor.sock"
    conf.write_text(f"""
[unix_http_server]
file = {sock}

[supervisord]
logfile = {tmp_path}/supervisord.log
pidfile = {tmp_path}/supervisord.pid
nodaemon = true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix://{sock}

[program:syncmq]
command = {sys.executable} -m syncmq.cli --port 0 --data-dir {data} --log-format json --management-port -1 --prometheus-port -1
autostart = true
autorestart = false
startsecs = 1
stopsignal = TERM
stopwaitsecs = 30
redirect_stderr = true
stdout_logfile = {log}
""")
    sup = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: "RUNNING" in _ctl(conf, "status", "syncmq").stdout, 60, "RUNNING")
        port = _wait(lambda: _started_ports(log), 30, "the start-up line")[-1]
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("supervised", durable=True)
        for i in range(20):
            ch.basic_publish("", "supervised", f"m{i}".encode(),
                             pika.BasicProperties(delivery_mode=2))
        conn.close()

        stop = _ctl(conf, "stop", "syncmq")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "stopped" in stop.stdout
        text = log.read_text()
        for line in ("shutting down", "journal flushed and closed", '"stopped"'):
            assert line in text, line
        suplog = (tmp_path / "supervisord.log").read_text()
        assert "stopped: syncmq (exit status 0)" in suplog, suplog[-2000:]

        start = _ctl(conf, "start", "syncmq")
        assert start.returncode == 0, start.stdout + start.stderr
        port = _wait(lambda: len(_started_ports(log)) >= 2 and _started_ports(log), 30,
                     "the second start-up line")[-1]
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        ch = conn.channel()
        assert ch.queue_declare("supervised", durable=True, passive=True).method.message_count \
            == 20
        assert ch.basic_get("supervised", auto_ack=True)[2] == b"m0"
        conn.close()
        assert _ctl(conf, "stop", "syncmq").returncode == 0
    finally:
        _ctl(conf, "shutdown")
        try:
            sup.wait(30)
        except subprocess.TimeoutExpired:
            sup.kill()


def test_daemonize_and_pid_file(tmp_path):
    """--daemonize returns once the broker listens; the pid file names the daemon, which
    shuts down on SIGTERM and removes it."""
    import os
    import signal
    import socket

    pid_file = tmp_path / "syncmq.pid"
    log = tmp_path / "syncmq.log"
    p = subprocess.run([sys.executable, "-m", "syncmq.cli", "--daemonize", "--pid-file",
                        str(pid_file), "--port", "0", "--data-dir", str(tmp_path / "data"),
                        "--log-file", str(log), "--management-port", "-1",
                        "--prometheus-port", "-1"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    pid = int(pid_file.read_text())
    port = _started_ports(log)[-1]  # written before the command returned
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    conn.close()
    os.kill(pid, signal.SIGTERM)
    _wait(lambda: not pid_file.exists(), 30, "the pid file to go")
    assert "stopped" in log.read_text()
    # a daemon that cannot start makes the command fail
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        p = subprocess.run([sys.executable, "-m", "syncmq.cli", "--daemonize", "--port",
                            str(busy.getsockname()[1]), "--data-dir", str(tmp_path / "d2"),
                            "--log-file", str(tmp_path / "l2"), "--management-port", "-1",
                            "--prometheus-port", "-1"],
                           capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
