"""The console script's log format as a person and a supervisor see it: text lines on a
terminal (run under a pty), JSON lines into a pipe, ``--log-format`` forcing either; text
fields as ``key=value`` (strings quoted when needed, dicts and lists as JSON); one line on
SIGHUP saying what was reloaded."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

ARGS = ["--port", "0", "--management-port", "-1", "--prometheus-port", "-1"]


class Lines:
    """Lines read from a file descriptor (a pty's master or a pipe), waited for with a
    deadline, never a sleep."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf, self.lines = fd, b"", []

    def until(self, pred, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if pred(line):
                    return line
            left = deadline - time.monotonic()
            assert left > 0, "no such line in:\n" + "\n".join(self.lines)
            r, _, _ = select.select([self.fd], [], [], left)
            if not r:
                continue
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # the pty's other side closed
                data = b""
            assert data, "the broker exited:\n" + "\n".join(self.lines)
            self.buf += data
            *done, self.buf = self.buf.split(b"\n")
            self.lines += [d.decode().rstrip("\r") for d in done]


def start(tmp_path, *extra: str, tty: bool, users_file: str | None = None):
    args = [sys.executable, "-m", "syncmq.cli", *ARGS, "--data-dir", str(tmp_path / "d"),
            *extra]
    if users_file:
        args += ["--users-file", users_file]
    env = {k: v for k, v in os.environ.items() if k != "SYNCMQ_LOG_FORMAT"}
    if tty:
        master, slave = pty.openpty()
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=slave, env=env)
        os.close(slave)
        return p, Lines(master), master
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env)
    return p, Lines(p.stderr.fileno()), None


def stop(p, fd) -> None:
    p.terminate()
    assert p.wait(30) == 0
    if fd is not None:
        os.close(fd)


TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")


def test_text_on_a_terminal_with_key_value_fields_and_a_sighup_line(tmp_path):
    users = os.path.join(os.path.dirname(__file__), "..", "contrib", "users.toml")
    p, lines, fd = start(tmp_path, tty=True, users_file=users)
    try:
        line = lines.until(lambda s: " started" in s)
        assert TEXT_LINE.match(line), line
        assert not line.startswith("{")
        # a list of dicts as JSON, never a Python repr; plain strings bare
        m = re.search(r" listeners=(\[.*?\])(?: \w+=|$)", line)
        assert m, line
        assert json.loads(m.group(1))[0]["protocol"] == "amqp"
        assert "'protocol'" not in line
        assert re.search(r" data_dir=\S+", line)
        os.kill(p.pid, signal.SIGHUP)
        hup = lines.until(lambda s: "SIGHUP" in s)
        assert TEXT_LINE.match(hup) and "users file reloaded" in hup, hup
        assert 'reloaded=["users_file"]' in hup, hup
    finally:
        stop(p, fd)


def test_json_into_a_pipe_and_the_flag_forces_either(tmp_path):
    p, lines, fd = start(tmp_path, tty=False)
    try:
        rec = json.loads(lines.until(lambda s: '"started"' in s or " started" in s))
        assert rec["listeners"][0]["protocol"] == "amqp"
        os.kill(p.pid, signal.SIGHUP)
        hup = json.loads(lines.until(lambda s: "SIGHUP" in s))
        assert hup["reloaded"] == [] and "nothing to reload" in hup["message"]
    finally:
        stop(p, fd)
    p, lines, fd = start(tmp_path, "--log-format", "json", tty=True)
    try:
        assert json.loads(lines.until(lambda s: "started" in s))["level"] == "INFO"
    finally:
        stop(p, fd)
    p, lines, fd = start(tmp_path, "--log-format", "text", tty=False)
    try:
        assert TEXT_LINE.match(lines.until(lambda s: "started" in s))
    finally:
        stop(p, fd)


def test_sighup_line_with_a_log_file(tmp_path):
    log = tmp_path / "syncmq.log"
    p, lines, fd = start(tmp_path, "--log-file", str(log), tty=True)
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and "started" in log.read_text()):
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.05)
        first = log.read_text().splitlines()[0]
        json.loads(first)  # a file is not a terminal: JSON
        os.rename(log, tmp_path / "syncmq.log.1")
        os.kill(p.pid, signal.SIGHUP)
        while not (log.exists() and "SIGHUP" in log.read_text()):
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.05)
        hup = json.loads(log.read_text().splitlines()[-1])
        assert hup["reloaded"] == ["log_file"] and "log file reopened" in hup["message"]
    finally:
        stop(p, fd)
