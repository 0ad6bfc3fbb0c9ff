"""The management listener under hostile HTTP, over raw sockets (issue 18).

- A refused request (no credentials, a body over the endpoint's limit, a POST that is not
  JSON) is answered from its headers alone: the answer arrives before one byte of the body
  is sent, and the connection closes, so the bytes the broker accepts stay within the
  kernel's socket buffers (measured by bytes sent, not by time).
- Slowloris: a request still arriving after the read timeout is dropped; an idle connection
  after the idle timeout.
- 1,000 idle HTTP connections against a broker with 256 file descriptors: AMQP clients
  still connect (the management listener caps its connections; the rest wait in the
  kernel's backlog holding none of the broker's descriptors).
- Chunked bodies are decoded; bytes inside a chunk are never taken for a second request.
- EMFILE on the AMQP listener: a bounded number of log lines, and the broker accepts again
  once descriptors are free.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import resource
import select
import socket
import time

import pika
import pytest
from brokerproc import BrokerProcess

TIMEOUT = 30.0
AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()
BIG = 100 * 1024 * 1024


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response(sock: socket.socket, method: str = "GET") -> tuple[int, dict, bytes]:
    r = http.client.HTTPResponse(sock, method=method)
    r.begin()
    body = r.read()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def request(port: int, method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    hdrs = {"Authorization": AUTH, "Content-Type": "application/json",
            "Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
    with contextlib.closing(connect(port)) as s:
        s.sendall(head(method, path, hdrs) + body)
        return response(s, method)


def serving(b: BrokerProcess) -> None:
    """The broker still answers HTTP and AMQP."""
    assert request(b.management_port, "GET", "/api/overview")[0] == 200
    params = pika.ConnectionParameters("127.0.0.1", b.port, blocked_connection_timeout=TIMEOUT)
    with contextlib.closing(pika.BlockingConnection(params)) as conn:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"ping")
        assert ch.basic_get(q, auto_ack=True)[2] == b"ping"


def bytes_accepted(sock: socket.socket, total: int) -> int:
    """Send up to ``total`` bytes of body until the broker closes; how many it took."""
    chunk = b"x" * 65536
    sent = 0
    sock.settimeout(5)
    try:
        while sent < total:
            sent += sock.send(chunk)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    return sent


REFUSED = [
    # (method, path, headers, status): each with Content-Length 100 MiB and no body sent
    ("POST", "/api/definitions", {"Content-Type": "application/json"}, 401),
    ("PUT", "/api/queues/%2F/q", {"Authorization": "Basic Z3Vlc3Q6d3Jvbmc="}, 401),
    ("POST", "/api/definitions", {"Authorization": AUTH, "Content-Type": "application/json"},
     413),
    ("PUT", "/api/vhosts/v", {"Authorization": AUTH, "Content-Type": "application/json"}, 413),
    ("POST", "/api/exchanges/%2F/amq.direct/publish",
     {"Authorization": AUTH, "Content-Type": "text/plain"}, 415),
]


@pytest.mark.parametrize("method,path,headers,status", REFUSED)
def test_refused_before_the_body_is_read(broker, method, path, headers, status):
    with contextlib.closing(connect(broker.management_port)) as s:
        s.sendall(head(method, path, {**headers, "Content-Length": str(BIG),
                                      "Expect": "100-continue"}))
        got, hdrs, body = response(s, method)  # before one byte of the body is sent
        assert got == status
        assert hdrs.get("connection") == "close" and "100" not in str(got)
        assert set(json.loads(body)) == {"error", "reason"}
        assert bytes_accepted(s, BIG) < 16 * 1024 * 1024  # socket buffers, not the body
    serving(broker)


def test_chunked_body_over_the_limit_is_cut(broker):
    """A chunked body has no length to check up front: it is cut at the endpoint's limit
    (1 MiB here), not read to its end."""
    with contextlib.closing(connect(broker.management_port)) as s:
        s.sendall(head("PUT", "/api/vhosts/big", {"Authorization": AUTH,
                                                   "Content-Type": "application/json",
                                                   "Transfer-Encoding": "chunked"}))
        chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
        sent = 0
        s.settimeout(5)
        try:
            while sent < BIG:
                sent += s.send(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        assert sent < 16 * 1024 * 1024
    serving(broker)


def test_chunked_body_is_decoded(broker, unique):
    body = json.dumps({"durable": False, "arguments": {"x-max-length": 5}}).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:7], body[7:])) + b"0\r\n\r\n"
    with contextlib.closing(connect(broker.management_port)) as s:
        s.sendall(head("PUT", f"/api/queues/%2F/{unique}", {
            "Authorization": AUTH, "Content-Type": "application/json",
            "Transfer-Encoding": "chunked", "Connection": "close"}) + chunked)
        assert response(s, "PUT")[0] == 201
    status, _, out = request(broker.management_port, "GET", f"/api/queues/%2F/{unique}")
    q = json.loads(out)
    assert (q["durable"], q["arguments"]) == (False, {"x-max-length": 5})


SMUGGLED = "DELETE /api/queues/%2F/{victim} HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH + \
    "\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize("framing", ["chunk-data", "content-length-and-chunked"])
def test_smuggled_request_is_not_executed(broker, unique, framing):
    """A request hidden in a body is never run: inside a chunk it is body (answered 400
    not_json); with both Content-Length and Transfer-Encoding the request is refused."""
    victim = f"{unique}-victim"
    assert request(broker.management_port, "PUT", f"/api/queues/%2F/{victim}", b"{}")[0] == 201
    hidden = SMUGGLED.format(victim=victim).encode()
    hdrs = {"Authorization": AUTH, "Content-Type": "application/json",
            "Transfer-Encoding": "chunked"}
    if framing == "chunk-data":
        payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(hidden), hidden)
    else:
        hdrs["Content-Length"] = "5"
        payload = b"0\r\n\r\n" + hidden
    with contextlib.closing(connect(broker.management_port)) as s:
        s.sendall(head("PUT", f"/api/vhosts/{unique}", hdrs) + payload)
        status, hdrs, _ = response(s, "PUT")
        assert status == 400
        if hdrs.get("connection") != "close":
            # the next answer on this connection is the next request's, not the hidden one's
            s.sendall(head("GET", f"/api/queues/%2F/{victim}", {"Authorization": AUTH,
                                                                "Connection": "close"}))
            assert response(s)[0] == 200
    assert request(broker.management_port, "GET", f"/api/queues/%2F/{victim}")[0] == 200


def wait_closed(sock: socket.socket, trickle: bytes | None) -> bool:
    """Until the broker closes ``sock`` (True) or TIMEOUT; sends ``trickle`` between polls."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if ready:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return True
            if data == b"":
                return True
            raise AssertionError(f"unexpected answer {data[:100]!r}")
        if trickle:
            try:
                sock.send(trickle)
            except (BrokenPipeError, ConnectionResetError):
                return True
    return False


def test_slowloris_and_idle_connections_are_closed(broker_factory):
    b = broker_factory("--management-read-timeout", "1", "--management-idle-timeout", "2")
    with contextlib.closing(connect(b.management_port)) as slow:
        slow.sendall(b"GET /api/overview HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert wait_closed(slow, b"X-a: b\r\n")  # a header line every 0.2 s: still dropped
        assert time.monotonic() - started >= 1
    with contextlib.closing(connect(b.management_port)) as idle:
        assert wait_closed(idle, None)
    serving(b)


def _limit_fds(n: int):
    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return set_limit


@pytest.fixture
def low_fd_broker(tmp_path):
    started: list[BrokerProcess] = []

    def make(nofile: int, *extra: str) -> BrokerProcess:
        b = BrokerProcess(str(tmp_path / f"data{len(started)}"), *extra)
        b.preexec_fn = _limit_fds(nofile)
        started.append(b.start())
        return b

    yield make
    for b in started:
        if b.proc.poll() is None:
            b.stop()


@pytest.fixture
def many_fds():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2200:
        pytest.skip(f"needs 2200 file descriptors (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2200), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_idle(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    return socks


def test_idle_http_connections_do_not_stop_amqp(low_fd_broker, many_fds):
    b = low_fd_broker(256, "--management-max-connections", "50")
    idle = open_idle(b.management_port, 1000)
    try:
        for _ in range(5):  # AMQP clients connect while 1,000 HTTP sockets wait
            params = pika.ConnectionParameters("127.0.0.1", b.port)
            with contextlib.closing(pika.BlockingConnection(params)) as conn:
                conn.channel().queue_declare("", exclusive=True)
        assert not [x for x in b.lines if "cannot accept" in x]
    finally:
        for s in idle:
            s.close()
    serving(b)


def _reports(b: BrokerProcess) -> list[str]:
    return [x for x in b.lines if "cannot accept" in x]


def test_emfile_on_the_amqp_listener_backs_off(low_fd_broker, many_fds):
    b = low_fd_broker(48, "--handshake-timeout", "120", "--no-management")
    held = open_idle(b.port, 80)  # more than the broker has descriptors for
    try:
        b.wait_for_log("cannot accept connections", timeout=TIMEOUT)
        # the next report comes one interval later and counts the accepts refused meanwhile
        with b._cond:
            assert b._cond.wait_for(lambda: len(_reports(b)) >= 2, TIMEOUT), b.log_tail()
            reports = _reports(b)
        assert len(reports) == 2  # two lines in one interval, not one per loop turn
        assert json.loads(reports[1])["refused_accepts"] > 1
    finally:
        for s in held:
            s.close()
    params = pika.ConnectionParameters("127.0.0.1", b.port, connection_attempts=20,
                                       retry_delay=0.2)
    with contextlib.closing(pika.BlockingConnection(params)) as conn:
        conn.channel().queue_declare("", exclusive=True)
    assert os.path.exists(b.data_dir)


def _process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_management_listener_does_not_spin(broker):
    """waitress reads ``asyncore_loop_timeout`` as whole seconds: 0.5 became 0, and its I/O
    thread polled in a busy loop, a whole core for an idle broker. The broker's CPU over
    idle polls of its loop stays a small fraction of the time they take (a spinning thread
    uses most of it, even on a loaded machine)."""
    serving(broker)
    pid = broker.proc.pid
    cpu0, t0 = _process_cpu_s(pid), time.monotonic()
    deadline = t0 + 3.0
    while time.monotonic() < deadline:  # three of waitress's loop timeouts, idle
        select.select([], [], [], deadline - time.monotonic())
    cpu = _process_cpu_s(pid) - cpu0
    assert cpu < 0.25 * (time.monotonic() - t0), f"idle broker used {cpu:.2f} CPU s in 3 s"
