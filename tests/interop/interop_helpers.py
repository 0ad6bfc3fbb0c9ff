"""Helpers shared by the interoperability suite (imported by name: tests/interop is on
sys.path under pytest's default import mode)."""

from __future__ import annotations

import base64
import functools
import glob
import itertools
import json
import os
import random
import re
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
PORTS_FROM = 10000  # free_port's ports: from here to the kernel's ephemeral range


def _port_range() -> range:
    """This process's ports for free_port: its pytest-xdist worker's share of [PORTS_FROM, the
    first ephemeral port)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    ephemeral = min(ephemeral, 65536)
    try:
        count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
        worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    except ValueError:  # a worker id of another form (--tx id=...): the whole range
        count, worker = 1, 0
    # a worker xdist restarted after a crash gets the next id (gw2, gw3, ... of 2): it takes
    # the share of the worker it replaces
    worker %= count
    size = max(ephemeral - PORTS_FROM, 0) // count
    return range(PORTS_FROM + worker * size, PORTS_FROM + (worker + 1) * size)


_PORTS = _port_range()
_TURN = itertools.count(random.randrange(len(_PORTS))) if len(_PORTS) >= 100 else None


def free_port() -> int:
    """A port no one listens on, for a server a test starts on a port of its choosing (a
    RabbitMQ node, a broker restarted on the same port). The server binds it seconds later
    (RabbitMQ boots first), so the port is not one the kernel hands out meanwhile: it comes
    from below the ephemeral range, where no bind to port 0 and no outgoing connection of
    this or any other process gets a port, and from this pytest-xdist worker's own share of
    it, so the other worker's nodes never draw it; each call takes the next port of the
    share (from a random start: two test sessions at once rarely meet) that binds now. With
    no such range (an odd ip_local_port_range), a port the kernel picks."""
    for _ in range(len(_PORTS) if _TURN is not None else 0):
        port = _PORTS[next(_TURN) % len(_PORTS)]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
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


@functools.cache
def rabbitmq_version() -> str | None:
    """The installed RabbitMQ's version, read off its files (no Erlang VM started): the
    ``vsn`` of the ``rabbit`` application under RABBITMQ_HOME (the directory above the
    ``sbin`` that ``rabbitmq-server`` resolves to: Debian's /usr/lib/rabbitmq/lib/
    rabbitmq_server-3.10.8, or a generic-unix tarball's). None when RabbitMQ is not
    installed; "unknown" when it is but no version is found there."""
    if not rabbitmq_available():
        return None
    for server in (os.path.join(RABBITMQ_LIB, "rabbitmq-server"),
                   shutil.which("rabbitmq-server")):
        if not server or not os.path.exists(server):
            continue
        home = os.path.dirname(os.path.dirname(os.path.realpath(server)))
        for app in glob.glob(os.path.join(home, "plugins", "rabbit-*", "ebin", "rabbit.app")):
            with open(app) as f:
                m = re.search(r'\{vsn,\s*"([^"]+)"\}', f.read())
            if m:
                return m.group(1)
    return "unknown"


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
