"""Fixtures that start a real syncmq on an ephemeral port with its own data dir.

The broker's log (JSON lines on stderr) is collected; a test fails if the broker logged an
unhandled exception, because malformed input must never raise out of the reactor or a worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest


class BrokerProcess:
    """A syncmq subprocess; ``port`` is known once it logged that it started."""

    def __init__(self, data_dir: str, *extra: str) -> None:
        self.data_dir = data_dir
        self.args = [sys.executable, "-m", "syncmq.cli", "--port", "0", "--data-dir", data_dir,
                     "--log-format", "json", "--log-level", "info",
                     "--management-port", "0", *extra]
        self.lines: list[str] = []
        self.port: int | None = None
        self.management_port: int | None = None  # when the start-up line has one
        self._started = threading.Event()
        self._cond = threading.Condition()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> BrokerProcess:
        self.port = None
        self.management_port = None
        self._started.clear()
        self.proc = subprocess.Popen(self.args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True, bufsize=1)
        threading.Thread(target=self._reader, args=(self.proc,), daemon=True).start()
        if not self._started.wait(timeout):
            self.proc.kill()
            raise RuntimeError("syncmq did not start:\n" + "\n".join(self.lines[-50:]))
        return self

    def _reader(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
            if self.port is None and '"port"' in line:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if "port" in rec:
                    self.port = int(rec["port"])
                    if rec.get("management_port") is not None:
                        self.management_port = int(rec["management_port"])
                    self._started.set()

    def wait_for_log(self, text: str, timeout: float = 15.0) -> str:
        """Block until a log line containing ``text`` appears; returns it."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: any(text in line for line in self.lines), timeout
            )
            if not ok:
                raise AssertionError(f"no log line with {text!r}; log:\n" + self.log_tail())
            return next(line for line in self.lines if text in line)

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def tracebacks(self) -> list[str]:
        return [line for line in self.lines if "Traceback" in line or "unhandled error" in line]


def _start(tmp_path_factory, *extra: str) -> BrokerProcess:
    data_dir = str(tmp_path_factory.mktemp("syncmq-data"))
    return BrokerProcess(data_dir, *extra).start()


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterator[BrokerProcess]:
    """One broker shared by a test module (tests use their own queue names)."""
    b = _start(tmp_path_factory)
    yield b
    rc = b.stop()
    assert rc == 0, b.log_tail()
    assert not b.tracebacks(), "\n".join(b.tracebacks())


@pytest.fixture
def fresh_broker(tmp_path_factory) -> Iterator[BrokerProcess]:
    """A broker of the test's own (for tests that restart it or set options)."""
    b = _start(tmp_path_factory)
    yield b
    if b.proc.poll() is None:
        b.stop()
    assert not b.tracebacks(), "\n".join(b.tracebacks())


@pytest.fixture
def broker_factory(tmp_path_factory):
    """Start brokers with extra command-line options: ``broker_factory("--heartbeat", "1")``."""
    started: list[BrokerProcess] = []

    def make(*extra: str) -> BrokerProcess:
        b = _start(tmp_path_factory, *extra)
        started.append(b)
        return b

    yield make
    for b in started:
        if b.proc.poll() is None:
            b.stop()
        assert not b.tracebacks(), "\n".join(b.tracebacks())


@pytest.fixture
def unique(request) -> str:
    """A name unique to the test, for queues and exchanges on the shared broker."""
    return request.node.name.replace("[", "-").replace("]", "") + "-" + os.urandom(3).hex()
