"""Configuration: defaults < INI file < SYNCMQ_* environment < flags; bad values exit 2."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pika
import pytest

from syncmq.config import build_parser, parse_size

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _parse(argv, env=None, monkeypatch=None):
    if env and monkeypatch:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
    return build_parser().parse_args(argv)


def test_defaults():
    args = _parse([])
    assert args.port == 5672 and args.bind == "127.0.0.1" and args.frame_max == 131072
    assert args.heartbeat == 60 and args.channel_max == 2047 and args.log_format == "auto"


def test_precedence_ini_env_flag(tmp_path, monkeypatch):
    ini = tmp_path / "s.ini"
    ini.write_text("[syncmq]\nport = 1111\nheartbeat = 5\nworkers = 3\n")
    args = _parse(["-c", str(ini)])
    assert (args.port, args.heartbeat, args.workers) == (1111, 5, 3)
    monkeypatch.setenv("SYNCMQ_PORT", "2222")
    args = _parse(["-c", str(ini)])
    assert (args.port, args.heartbeat) == (2222, 5)
    args = _parse(["-c", str(ini), "--port", "3333"])
    assert args.port == 3333


def test_sizes():
    assert parse_size("128MiB") == 128 * 1024 * 1024
    assert parse_size("4096") == 4096
    assert parse_size("1G") == 1024**3
    with pytest.raises(ValueError):
        parse_size("lots")


@pytest.mark.parametrize(
    "argv,option",
    [
        (["--port", "70000"], "--port"),
        (["--workers", "0"], "--workers"),
        (["--frame-max", "100"], "--frame-max"),
        (["--log-format", "xml"], "--log-format"),
        (["--max-message-size", "big"], "--max-message-size"),
    ],
)
def test_bad_value_exits_2_naming_the_option(argv, option):
    p = subprocess.run([sys.executable, "-m", "syncmq.cli", *argv], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2
    assert option in p.stderr


def test_help_documents_every_option():
    p = subprocess.run([sys.executable, "-m", "syncmq.cli", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0
    for opt in ("--bind", "--port", "--data-dir", "--workers", "--log-level", "--log-format",
                "--log-file", "--frame-max", "--channel-max", "--heartbeat"):
        assert opt in p.stdout


def test_example_ini_runs(broker_factory):
    """The annotated syncmq.ini in the repo runs as it is (port and data dir overridden by
    flags, which the fixture passes)."""
    b = broker_factory("-c", str(ROOT / "syncmq.ini"))
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    conn.channel().queue_declare("ini-check")
    conn.close()
    assert b.stop() == 0


def test_text_log_format(tmp_path):
    env = dict(os.environ, SYNCMQ_LOG_FORMAT="text")
    p = subprocess.Popen([sys.executable, "-m", "syncmq.cli", "--port", "0", "--data-dir",
                          str(tmp_path)], stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = ""
        while "started" not in line:
            line = p.stderr.readline()
            assert line, "broker exited"
            assert not line.startswith("{")
        assert "syncmq" in line
    finally:
        p.terminate()
        assert p.wait(30) == 0


def test_log_file_reopened_after_rotation(tmp_path):
    """--log-file: after logrotate moves the file and sends SIGHUP, lines go to a new file."""
    import json
    import signal
    import time

    log = tmp_path / "syncmq.log"
    p = subprocess.Popen([sys.executable, "-m", "syncmq.cli", "--port", "0", "--data-dir",
                          str(tmp_path / "data"), "--log-file", str(log),
                          "--management-port", "-1", "--prometheus-port", "-1"])
    try:
        deadline = time.monotonic() + 30
        port = None
        while port is None:  # the broker writes its start-up line to the file we poll
            assert time.monotonic() < deadline and p.poll() is None
            if log.exists():
                for line in log.read_text().splitlines():
                    rec = json.loads(line)
                    port = rec.get("port", port)
            time.sleep(0.05)  # polling a file another process writes
        log.rename(tmp_path / "syncmq.log.1")
        p.send_signal(signal.SIGHUP)
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        conn.close()
        deadline = time.monotonic() + 30
        while not (log.exists() and "connection opened" in log.read_text()):
            assert time.monotonic() < deadline, "no new log file after SIGHUP"
            time.sleep(0.05)  # polling a file another process writes
        assert "connection opened" not in (tmp_path / "syncmq.log.1").read_text()
    finally:
        p.terminate()
        assert p.wait(30) == 0
