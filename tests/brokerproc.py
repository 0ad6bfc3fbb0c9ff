"""A real syncmq subprocess for tests (importable as ``brokerproc``; conftest modules of
several test directories share the name ``conftest``, so import this module, not conftest).

The bench scripts start their brokers with it too (``bench/`` may import ``tests/``, never the
other way): :func:`cli_args` for a checkout's broker with the options that tree knows,
``command`` for a whole command line (under valgrind), ``cwd``, ``log_file``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading


class BrokerProcess:
    """A syncmq subprocess; ``port`` is known once it logged that it started."""

    def __init__(self, data_dir: str, *extra: str, env: dict[str, str] | None = None,
                 command: list[str] | None = None, cwd: str | None = None) -> None:
        self.data_dir = data_dir
        self.env = env  # the broker's environment (None: the test process's)
        self.cwd = cwd  # the broker's working directory (None: the test process's)
        # ``command``: the whole command line instead (it must log JSON with the port)
        self.args = command or [
            sys.executable, "-m", "syncmq.cli", "--port", "0", "--data-dir", data_dir,
            "--log-format", "json", "--log-level", "info",
            "--management-port", "0", "--prometheus-port", "-1", *extra]
        self.record: dict = {}  # the start-up log line's fields
        self.log_file = None  # a text file every log line is written to as well (bench)
        self.lines: list[str] = []
        self.port: int | None = None
        self.management_port: int | None = None  # when the start-up line has one
        self.prometheus_port: int | None = None  # with --prometheus-port 0 in ``extra``
        self._started = threading.Event()
        self._cond = threading.Condition()
        self.proc: subprocess.Popen | None = None
        self.preexec_fn = None  # run in the child before exec (e.g. to set a resource limit)

    def start(self, timeout: float = 30.0) -> BrokerProcess:
        self.port = None
        self.management_port = None
        self.prometheus_port = None
        self._started.clear()
        self.proc = subprocess.Popen(self.args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True, bufsize=1, env=self.env, cwd=self.cwd,
                                     preexec_fn=self.preexec_fn)
        threading.Thread(target=self._reader, args=(self.proc,), daemon=True).start()
        if not self._started.wait(timeout):
            self.proc.kill()
            raise RuntimeError("syncmq did not start:\n" + "\n".join(self.lines[-50:]))
        return self

    def _reader(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            if self.log_file is not None:
                self.log_file.write(line)
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
            if self.port is None and '"port"' in line:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if "port" in rec:
                    self.record = rec
                    self.port = int(rec["port"])
                    if rec.get("management_port") is not None:
                        self.management_port = int(rec["management_port"])
                    if rec.get("prometheus_port") is not None:
                        self.prometheus_port = int(rec["prometheus_port"])
                    self._started.set()

    def wait_for_log(self, text: str, timeout: float = 30.0) -> str:
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


def start_broker(tmp_path_factory, *extra: str) -> BrokerProcess:
    """Start a broker with its own data dir under pytest's ``tmp_path_factory``."""
    data_dir = str(tmp_path_factory.mktemp("syncmq-data"))
    return BrokerProcess(data_dir, *extra).start()


def cli_help(env: dict[str, str] | None = None, cwd: str | None = None) -> str:
    """``syncmq.cli --help`` of the checkout that ``env``/``cwd`` import (maybe an older tree:
    a bench's baseline), to pass only the options it knows."""
    return subprocess.run([sys.executable, "-m", "syncmq.cli", "--help"], capture_output=True,
                          text=True, cwd=cwd, env=env).stdout


def cli_args(data_dir: str, help_text: str) -> list[str]:
    """``syncmq.cli``'s arguments (after the interpreter) for a bench broker whose
    :func:`cli_help` is ``help_text``: ephemeral port, JSON info log, no management listener
    and no Prometheus port (a fixed default port: two brokers on one machine) where it has
    those options."""
    args = ["-m", "syncmq.cli", "--port", "0", "--data-dir", data_dir,
            "--log-format", "json", "--log-level", "info"]
    if "--no-management" in help_text:
        args.append("--no-management")
    if "--prometheus-port" in help_text:
        args += ["--prometheus-port", "-1"]
    return args


def fd_targets(pid: int | str = "self") -> list[str]:
    """What the open fds of process ``pid`` (this one by default) point at (/proc readlink;
    a deleted file ends with `` (deleted)``)."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # (closed meanwhile)
            continue
    return out
