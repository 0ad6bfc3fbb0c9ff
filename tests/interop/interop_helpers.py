"""Helpers shared by the interoperability suite (imported by name: tests/interop is on
sys.path under pytest's default import mode)."""

from __future__ import annotations

import base64
import json
import os
import resource
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

RABBITMQ_LIB = "/usr/lib/rabbitmq/bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    except (ValueError, OSError):
        pass


class RabbitNode:
    """A private RabbitMQ node: its own node name, ports, mnesia/log dirs and cookie (HOME),
    with its management plugin on ``management_port`` (127.0.0.1) when ``management``, and
    its Prometheus plugin (rabbitmq_prometheus) on ``prometheus_port`` when ``prometheus``, and
    the other ``plugins`` enabled (their names as ``rabbitmq-plugins`` takes them), through
    its own enabled-plugins file (``RABBITMQ_ENABLED_PLUGINS_FILE``): nothing system-wide
    is changed."""

    def __init__(self, base: str, management: bool = False,
                 plugins: tuple[str, ...] = (), prometheus: bool = False,
                 name: str = "syncmq-interop") -> None:
        self.dir = base
        os.chmod(base, 0o755)
        self.port = free_port()
        self.management_port = free_port() if management else None
        self.prometheus_port = free_port() if prometheus else None
        self.node = f"{name}-{os.getpid()}@localhost"
        self.env = dict(
            os.environ, HOME=base, RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_MNESIA_BASE=os.path.join(base, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(base, "log"),
            RABBITMQ_PID_FILE=os.path.join(base, "pid"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(base, "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=os.path.join(base, "rabbitmq"),
            RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(base, "advanced.config"),
        )
        enabled = (["rabbitmq_management"] if management else []) + \
            (["rabbitmq_prometheus"] if prometheus else []) + list(plugins)
        with open(os.path.join(base, "enabled_plugins"), "w") as f:
            f.write("[" + ",".join(enabled) + "].\n")
        conf = []
        if management:
            conf += [f"management.tcp.port = {self.management_port}",
                     "management.tcp.ip = 127.0.0.1"]
        if prometheus:
            conf += [f"prometheus.tcp.port = {self.prometheus_port}",
                     "prometheus.tcp.ip = 127.0.0.1"]
        if conf:
            with open(os.path.join(base, "rabbitmq.conf"), "w") as f:
                f.write("\n".join(conf) + "\n")
        # As root the Debian wrappers su to the rabbitmq user; the scripts in /usr/lib run as
        # the caller, so the temp dir and the HOME cookie stay ours.
        root = os.geteuid() == 0 and os.path.isdir(RABBITMQ_LIB)
        self.server = os.path.join(RABBITMQ_LIB, "rabbitmq-server") if root else \
            shutil.which("rabbitmq-server")
        self.ctl = os.path.join(RABBITMQ_LIB, "rabbitmqctl") if root else "rabbitmqctl"
        self.diag = os.path.join(RABBITMQ_LIB, "rabbitmq-diagnostics") if root else \
            "rabbitmq-diagnostics"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RabbitNode:
        self.out = open(os.path.join(self.dir, "server.out"), "w")
        self.proc = subprocess.Popen([self.server], env=self.env, stdout=self.out,
                                     stderr=subprocess.STDOUT, cwd=self.dir,
                                     preexec_fn=_raise_nofile)
        # `rabbitmqctl wait` blocks until the node has booted (event-driven, bounded); then
        # `rabbitmq-diagnostics ping` confirms it answers on its own node name.
        r = subprocess.run([self.ctl, "-n", self.node, "wait", self.env["RABBITMQ_PID_FILE"],
                            "--timeout", "120"], env=self.env, capture_output=True, text=True,
                           timeout=150)
        if r.returncode == 0:
            r = subprocess.run([self.diag, "-n", self.node, "-q", "ping"], env=self.env,
                               capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"RabbitMQ did not start: {r.stdout}{r.stderr}\n{self.log()}")
        return self

    def rabbitmqctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``rabbitmqctl -n <node> args`` against this node."""
        r = subprocess.run([self.ctl, "-n", self.node, *args], env=self.env,
                           capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {args}: {r.stdout}{r.stderr}")
        return r

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "server.out")) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        subprocess.run([self.ctl, "-n", self.node, "stop"], env=self.env, capture_output=True,
                       timeout=120)
        if self.proc is not None:
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


def rabbitmq_available() -> bool:
    return bool(shutil.which("rabbitmq-server")
                or os.path.exists(os.path.join(RABBITMQ_LIB, "rabbitmq-server")))


def api(port: int, method: str, path: str, body: Any = None,
        user: str = "guest", password: str = "guest") -> tuple[int, Any]:
    """One management API request (syncmq's or RabbitMQ's): (status, parsed JSON or None).
    ``path`` starts after ``/api``; quote names in it yourself."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api{path}", data=data,
                                 method=method)
    req.add_header("Authorization",
                   "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_for(cond: Callable[[], Any], timeout: float = 60.0, what: str = "condition",
             interval: float = 0.1) -> Any:
    """Poll ``cond()`` until it returns something true (returned); fail after ``timeout``
    seconds with ``what``. For state only visible by asking (an API, a queue depth): the
    poll interval bounds the latency, the deadline bounds the test, neither is a timing
    assumption."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
