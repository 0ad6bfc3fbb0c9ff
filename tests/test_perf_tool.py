"""syncmq-perf against a real syncmq: the JSON line's shape and exact counts (no speed checks)."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

from syncmq.perf.client import ack_frame, parse_uri
from syncmq.wire._spec import Basic
from syncmq.wire.frames import encode_method_frame

KEYS = {
    "tool", "uri", "producers", "consumers", "queues", "exchange_type", "size", "sent",
    "sent_rate", "received", "received_rate", "confirmed", "nacked", "returned", "latency_us",
    "duration_s", "errors",
}


def perf(broker, *args: str, timeout: float = 120) -> dict:
    uri = f"amqp://guest:guest@127.0.0.1:{broker.port}/%2f"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "syncmq.perf.cli", "--uri", uri, "--progress", *args],
            capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"syncmq-perf {args} timed out; its stderr:\n{exc.stderr}\n"
                             f"broker log:\n{broker.log_tail()}") from None
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout + proc.stderr
    result = json.loads(lines[0])
    assert KEYS <= set(result), sorted(KEYS - set(result))
    assert result["errors"] == [], result["errors"]
    assert proc.returncode == 0, proc.stderr
    assert isinstance(result["sent_rate"], float) and isinstance(result["received_rate"], float)
    return result


def test_s1_like_time_bounded(broker):
    # rate-limited: an unthrottled producer would leave the shared broker a backlog to chew on
    r = perf(broker, "-x", "1", "-y", "1", "-s", "16", "-a", "-z", "2", "-r", "5000")
    assert r["sent"] > 0 and r["received"] > 0
    assert r["received"] <= r["sent"]
    assert r["latency_us"] is None


def test_count_bounded_sent_equals_received(broker):
    r = perf(broker, "-x", "1", "-y", "1", "-C", "2000", "-D", "2000", "-a")
    assert r["sent"] == 2000 and r["received"] == 2000


def test_confirm_persistent_manual_ack(broker):
    r = perf(broker, "-C", "2000", "-D", "2000", "-s", "1024", "--persistent", "--durable",
             "-c", "100", "-q", "100", "-A", "10")
    assert r["sent"] == r["received"] == 2000
    assert r["confirmed"] == 2000 and r["nacked"] == 0


def test_latency(broker):
    r = perf(broker, "-C", "2000", "-D", "2000", "-r", "1000", "--latency", "-q", "50")
    assert r["sent"] == r["received"] == 2000
    lat = r["latency_us"]
    assert set(lat) == {"p50", "p95", "p99", "max", "samples"}
    assert lat["samples"] == 2000
    assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]


def test_fanout_and_idle_connections(broker):
    r = perf(broker, "--fanout", "3", "-y", "3", "-C", "500", "-D", "500", "-a",
             "--idle-connections", "5")
    assert r["exchange_type"] == "fanout" and r["queues"] == 3
    assert r["sent"] == 500 and r["received"] == 1500


@pytest.mark.parametrize("multiple", [False, True])
def test_ack_frame_matches_codec(multiple):
    assert ack_frame(3, 123456789, multiple) == encode_method_frame(
        3, Basic.Ack(123456789, multiple))


def test_parse_uri():
    assert parse_uri("amqp://u:p%40ss@h:1234/%2f") == {
        "host": "h", "port": 1234, "user": "u", "password": "p@ss", "vhost": "/"}
    assert parse_uri("amqp://h")["vhost"] == "/"
    assert parse_uri("amqp://h/v")["vhost"] == "v"


def test_perf_imports_only_wire():
    root = pathlib.Path(__file__).resolve().parent.parent / "syncmq" / "perf"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("syncmq"):
                    assert name.startswith(("syncmq.wire", "syncmq.perf")), (path, name)
