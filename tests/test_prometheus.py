"""The Prometheus endpoints as a scraper uses them: RabbitMQ's family names on ``/metrics``,
``/metrics/per-object`` and ``/metrics/detailed``, on the management port and on
``--prometheus-port``, parsed with prometheus_client's parser, values checked against the
traffic pika made. (tests/interop/test_prometheus_diff.py compares the families with a
RabbitMQ node's.)"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.error
import urllib.request

import pika
import pika.exceptions
import pytest
from amqp_helpers import connect
from prom_helpers import (
    AUTH,
    DEAD_LETTERS,
    PROTO,
    PROTO_QT,
    TIMEOUT,
    dead_letter_workload,
    dead_lettered,
    families,
    samples,
    scrape,
    workload,
)
from prometheus_client.parser import text_string_to_metric_families
from test_management import get


def status(port: int, path: str, method: str = "GET", auth: bool = False) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 headers=AUTH if auth else {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture
def prom_broker(broker_factory):
    b = broker_factory("--prometheus-port", "0")
    assert b.prometheus_port and b.prometheus_port != b.management_port
    return b


def test_metrics_follow_the_workload(prom_broker):
    b = prom_broker
    with workload(b.port):
        text = scrape(b.prometheus_port)
        v = samples(text)
        assert v[("rabbitmq_connections", ())] == 2
        assert v[("rabbitmq_channels", ())] == 2
        assert v[("rabbitmq_consumers", ())] == 2
        assert v[("rabbitmq_global_consumers", PROTO)] == 2
        assert v[("rabbitmq_global_publishers", PROTO)] == 1
        assert v[("rabbitmq_queues", ())] == 3
        # pw-q: 5 in, 2 fetched, 3 delivered (1 acked): 0 ready, 2 unacked
        assert v[("rabbitmq_queue_messages_ready", ())] == 0
        assert v[("rabbitmq_queue_messages_unacked", ())] == 2
        assert v[("rabbitmq_queue_messages", ())] == 2
        assert v[("rabbitmq_queue_consumers", ())] == 2
        assert v[("rabbitmq_channel_consumers", ())] == 2
        assert v[("rabbitmq_channel_messages_unacked", ())] == 2
        assert v[("rabbitmq_consumer_prefetch", ())] == 2
        assert v[("rabbitmq_connection_channels", ())] == 2
        assert v[("rabbitmq_connection_incoming_bytes_total", ())] > 0
        g = {k[0]: val for k, val in v.items() if k[1] in (PROTO, PROTO_QT)}
        assert g["rabbitmq_global_messages_received_total"] == 8
        assert g["rabbitmq_global_messages_received_confirm_total"] == 8
        assert g["rabbitmq_global_messages_confirmed_total"] == 8
        assert g["rabbitmq_global_messages_routed_total"] == 6
        assert g["rabbitmq_global_messages_unroutable_returned_total"] == 1
        assert g["rabbitmq_global_messages_unroutable_dropped_total"] == 1
        assert g["rabbitmq_global_messages_delivered_get_manual_ack_total"] == 1
        assert g["rabbitmq_global_messages_delivered_get_auto_ack_total"] == 1
        assert g["rabbitmq_global_messages_delivered_consume_manual_ack_total"] == 3
        assert g["rabbitmq_global_messages_delivered_consume_auto_ack_total"] == 1
        assert g["rabbitmq_global_messages_delivered_total"] == 6
        assert g["rabbitmq_global_messages_get_empty_total"] == 1
        assert g["rabbitmq_global_messages_acknowledged_total"] == 2
        assert v[("rabbitmq_auth_attempts_succeeded_total", PROTO)] == 2
        assert v[("rabbitmq_connections_opened_total", ())] == 2
        assert v[("rabbitmq_channels_opened_total", ())] == 2
        assert v[("rabbitmq_queues_declared_total", ())] == 3
        assert v[("rabbitmq_queues_created_total", ())] == 3
        # the management port serves the same families
        assert families(scrape(b.management_port)) == families(text)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        connect(b.port, credentials=pika.PlainCredentials("guest", "wrong"))
    v = samples(scrape(b.prometheus_port))
    assert v[("rabbitmq_connections", ())] == 0 and v[("rabbitmq_channels", ())] == 0
    assert v[("rabbitmq_connections_closed_total", ())] == 2
    assert v[("rabbitmq_channels_closed_total", ())] == 2
    assert v[("rabbitmq_auth_attempts_failed_total", PROTO)] == 1
    assert v[("rabbitmq_auth_attempts_total", PROTO)] == 3
    # closed channels' counts stay in the global counters, leave the per-channel sums
    assert v[("rabbitmq_global_messages_received_total", PROTO)] == 8
    assert v[("rabbitmq_channel_messages_published_total", ())] == 0
    # the unacked deliveries went back: 2 ready in pw-q
    assert v[("rabbitmq_queue_messages_ready", ())] == 2


def test_identity_build_info_and_types(prom_broker):
    text = scrape(prom_broker.prometheus_port)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    ident = fams["rabbitmq_identity_info"]
    assert ident.type == "unknown"  # RabbitMQ's "untyped"
    assert "# TYPE rabbitmq_identity_info untyped" in text
    labels = ident.samples[0].labels
    assert set(labels) == {"rabbitmq_node", "rabbitmq_cluster", "rabbitmq_cluster_permanent_id"}
    assert labels["rabbitmq_node"].startswith("syncmq@")
    assert labels["rabbitmq_cluster_permanent_id"].startswith("rabbitmq-cluster-id-")
    build = fams["rabbitmq_build_info"].samples[0].labels
    assert set(build) == {"rabbitmq_version", "prometheus_plugin_version",
                          "prometheus_client_version", "erlang_version"}
    assert fams["rabbitmq_global_messages_received"].type == "counter"
    assert fams["rabbitmq_queue_messages_ready"].type == "gauge"
    assert fams["syncmq_journal_fsync_seconds"].type == "histogram"
    assert "# HELP rabbitmq_queue_messages_ready Messages ready to be delivered to consumers" \
        in text


def test_per_object_and_detailed(prom_broker, unique):
    b = prom_broker
    port = b.prometheus_port
    with contextlib.closing(connect(b.port)) as conn:
        ch = conn.channel()
        conn.channel().queue_declare(f"{unique}-a")
        ch.queue_declare(f"{unique}-b")
        ch.basic_publish("", f"{unique}-a", b"1")
        ch.basic_publish("", f"{unique}-a", b"2")
        ch.queue_declare(f"{unique}-a", passive=True)
        # per object: needs credentials (--metrics-auth per-object, the default)
        assert status(port, "/metrics/per-object") == 401
        v = samples(scrape(port, "/metrics/per-object", auth=True))
        qa = (("queue", f"{unique}-a"), ("vhost", "/"))
        assert v[("rabbitmq_queue_messages_ready", qa)] == 2
        chans = [k for k in v if k[0] == "rabbitmq_channel_consumers"]
        assert len(chans) == 2 and all(k[1][0][0] == "channel" for k in chans)
        # detailed: only the families asked for, with the rabbitmq_detailed_ prefix
        assert status(port, "/metrics/detailed?family=queue_coarse_metrics") == 401
        text = scrape(port, "/metrics/detailed?family=queue_coarse_metrics"
                      "&family=vhost_status&family=no_such_family", auth=True)
        names = set(families(text))
        assert names == {"rabbitmq_detailed_queue_messages_ready",
                         "rabbitmq_detailed_queue_messages_unacked",
                         "rabbitmq_detailed_queue_messages", "rabbitmq_cluster_vhost_status",
                         "rabbitmq_build_info", "rabbitmq_identity_info"}
        assert samples(text)[("rabbitmq_detailed_queue_messages_ready", qa)] == 2
        # vhost= limits the queue tables
        text = scrape(port, "/metrics/detailed?family=queue_metrics&vhost=nope", auth=True)
        assert not [s for f in text_string_to_metric_families(text) for s in f.samples
                    if f.name.startswith("rabbitmq_detailed_")]
        text = scrape(port, "/metrics/detailed", auth=True)
        assert set(families(text)) == {"rabbitmq_build_info", "rabbitmq_identity_info"}
        ex = samples(scrape(port, "/metrics/detailed?family=exchange_bindings", auth=True))
        assert ex[("rabbitmq_cluster_exchange_bindings",
                   (("exchange", "amq.direct"), ("type", "direct"), ("vhost", "/")))] == 0
        # the aggregated endpoint never grows with queues
        agg = scrape(port)
        assert unique not in agg


def test_prometheus_port_serves_only_metrics(prom_broker):
    port = prom_broker.prometheus_port
    assert status(port, "/api/overview", auth=True) == 404
    assert status(port, "/") == 404
    assert status(port, "/metrics/nope") == 404
    assert status(port, "/metrics", method="POST") == 404
    assert status(port, "/metrics", method="HEAD") == 200
    assert scrape(port)  # still serving
    req = urllib.request.Request(f"http://127.0.0.1:{prom_broker.management_port}"
                                 "/api/overview", headers=AUTH)
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        listeners = json.loads(r.read())["listeners"]
    assert {"protocol": "http/prometheus", "port": port} in [
        {"protocol": li["protocol"], "port": li["port"]} for li in listeners]


def test_prometheus_port_without_management(broker_factory):
    b = broker_factory("--prometheus-port", "0", "--no-management")
    assert b.management_port is None and b.prometheus_port
    v = samples(scrape(b.prometheus_port))
    assert v[("rabbitmq_queues", ())] == 0
    line = json.loads(b.wait_for_log("started"))
    assert [li["protocol"] for li in line["listeners"]] == ["amqp", "http/prometheus"]


def test_prometheus_port_disabled_and_bad_values(broker_factory, tmp_path):
    b = broker_factory()  # brokerproc passes --prometheus-port -1
    line = json.loads(b.wait_for_log("started"))
    assert "prometheus_port" not in line
    assert "http/prometheus" not in [li["protocol"] for li in line["listeners"]]
    for bad in ("70000", "-2", "x"):
        p = subprocess.run([sys.executable, "-m", "syncmq.cli", "--port", "0", "--data-dir",
                            str(tmp_path), "--prometheus-port", bad], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 2 and "--prometheus-port" in p.stderr, (bad, p.stderr)


def test_prometheus_port_in_use_is_reported(broker_factory, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "syncmq.cli", "--port", "0", "--data-dir",
                            str(tmp_path), "--management-port", "-1", "--bind", "127.0.0.1",
                            "--prometheus-port", str(taken)], capture_output=True, text=True,
                           timeout=60)
    assert p.returncode == 1 and f"{taken} (prometheus)" in p.stderr, p.stderr


def test_aggregated_scrape_does_not_grow_with_queues(prom_broker, unique):
    """N and 4N queues: /metrics has the same samples (per-object grows by 4x)."""
    port = prom_broker.prometheus_port

    def declare(n: int) -> None:
        with contextlib.closing(connect(prom_broker.port)) as conn:
            ch = conn.channel()
            for i in range(n):
                ch.queue_declare(f"{unique}-{i}")

    def counts() -> tuple[int, int]:
        agg = sum(1 for f in text_string_to_metric_families(scrape(port)) for _ in f.samples)
        per = [s for f in text_string_to_metric_families(
            scrape(port, "/metrics/per-object", auth=True))
            if f.name == "rabbitmq_queue_messages_ready" for s in f.samples]
        return agg, len(per)

    declare(25)
    agg1, per1 = counts()
    declare(100)
    agg4, per4 = counts()
    assert agg1 == agg4
    assert (per1, per4) == (25, 100)


def test_detailed_odd_queries_are_ignored_not_errors(prom_broker):
    port = prom_broker.prometheus_port
    for query in ("family=%ZZ", "family=", "vhost=%2F", "family=queue_metrics&family="
                  "queue_metrics", "x=1&family=queue_consumer_count&family=queue_metrics"):
        text = scrape(port, f"/metrics/detailed?{query}", auth=True)
        names = set(families(text))
        assert {"rabbitmq_build_info", "rabbitmq_identity_info"} <= names, query
        if "queue_metrics" in query:  # asked twice or with queue_consumer_count: once
            assert sum(1 for f in text_string_to_metric_families(text)
                       if f.name == "rabbitmq_detailed_queue_consumers") == 1
    text = scrape(port, "/metrics/detailed?family=queue_consumer_count", auth=True)
    assert "rabbitmq_detailed_queue_consumers" in families(text)


def test_embedded_server_prometheus_port_restart_and_threads():
    """In-process: the Prometheus listener without the management API, the same port after
    a restart, and its threads joined at stop."""
    import threading

    import syncmq

    with syncmq.Server(prometheus_port=0) as s:
        port = s.node.prometheus.address[1]
        assert s.node.management is None
        assert samples(scrape(port))[("rabbitmq_queues", ())] == 0
        s.restart()
        assert s.node.prometheus.address[1] == port
        assert scrape(port)
        names = {t.name for t in s.threads()}
        assert "syncmq-prometheus" in names
    assert not [t for t in threading.enumerate() if t.name == "syncmq-prometheus"]


def test_dead_letter_counters_by_reason(prom_broker, unique):
    """Each reason, with a dead-letter exchange (at_most_once) and without (disabled), counted
    node-wide on the RabbitMQ series (queue_type, dead_letter_strategy); the counts outlive
    the queues that made them."""
    b = prom_broker
    before = dead_lettered(scrape(b.prometheus_port))
    assert set(before) == {
        (r, qt, st) for qt, st, reasons in (
            ("rabbit_classic_queue", "disabled", ("maxlen", "expired", "rejected")),
            ("rabbit_classic_queue", "at_most_once", ("maxlen", "expired", "rejected")),
            ("rabbit_quorum_queue", "disabled",
             ("maxlen", "expired", "rejected", "delivery_limit")),
            ("rabbit_quorum_queue", "at_most_once",
             ("maxlen", "expired", "rejected", "delivery_limit")),
            ("rabbit_quorum_queue", "at_least_once",
             ("confirmed", "expired", "rejected", "delivery_limit"))) for r in reasons}
    assert not any(before.values())
    dead_letter_workload(b.port, unique)
    got = dead_lettered(scrape(b.prometheus_port))
    assert {k: v for k, v in got.items() if v} == DEAD_LETTERS
    with contextlib.closing(connect(b.port)) as conn:
        ch = conn.channel()
        for name in [q["name"] for q in get(b, "/api/queues") if q["name"].startswith(unique)]:
            ch.queue_delete(name)
    assert dead_lettered(scrape(b.prometheus_port)) == got
