"""Differential: the Prometheus families of RabbitMQ 3.10.8's rabbitmq_prometheus plugin and
syncmq's, after the same workload (tests/prom_helpers.py).

A RabbitMQ node of this module's own is started with the plugin (the session's node, which
the other interop tests share, is left as it is: its counters and listeners stay theirs).
Every family RabbitMQ lists on ``/metrics`` and ``/metrics/per-object`` must be served by
syncmq with the same type, help text and label names, unless it is in :data:`NOT_SERVED`
(printed with its reason); the global counters must have the same values on both brokers.
"""

from __future__ import annotations

import shutil
import tempfile
import time

import pytest
from interop_helpers import RabbitNode, rabbitmq_available
from prom_helpers import AUTH, DEAD_LETTERS, dead_letter_workload, dead_lettered, scrape, workload
from prometheus_client.parser import text_string_to_metric_families

# Families of RabbitMQ's plugin that syncmq does not serve, and why.
_ERLANG = "an Erlang VM figure: syncmq has no Erlang VM"
_QQ = "quorum queues (Raft): syncmq serves quorum declarations with classic queues"
_IO = "RabbitMQ's message store / queue index I/O: syncmq's one journal has no reads, seeks or " \
      "reopens counted (its writes and fsyncs are io_write_*/io_sync_*)"
_PROC = "the reductions of an Erlang process: syncmq's objects are not processes"
NOT_SERVED: dict[str, str] = {
    "rabbitmq_erlang_gc_runs": _ERLANG,
    "rabbitmq_erlang_gc_reclaimed_bytes": _ERLANG,
    "rabbitmq_erlang_scheduler_context_switches": _ERLANG,
    "rabbitmq_erlang_scheduler_run_queue": _ERLANG,
    "rabbitmq_erlang_net_ticktime_seconds": "inter-node heartbeats: syncmq is a single node",
    "rabbitmq_io_read_ops": _IO, "rabbitmq_io_read_bytes": _IO,
    "rabbitmq_io_seek_ops": _IO, "rabbitmq_io_reopen_ops": _IO,
    "rabbitmq_io_read_time_seconds": _IO, "rabbitmq_io_write_time_seconds": _IO,
    "rabbitmq_io_seek_time_seconds": _IO,
    "rabbitmq_schema_db_ram_tx": "Mnesia transactions: syncmq has no schema database",
    "rabbitmq_schema_db_disk_tx": "Mnesia transactions: syncmq has no schema database",
    "rabbitmq_msg_store_read": _IO, "rabbitmq_msg_store_write": _IO,
    "rabbitmq_queue_index_read_ops": _IO, "rabbitmq_queue_index_write_ops": _IO,
    "rabbitmq_raft_term": _QQ, "rabbitmq_raft_log_snapshot_index": _QQ,
    "rabbitmq_raft_log_last_applied_index": _QQ, "rabbitmq_raft_log_commit_index": _QQ,
    "rabbitmq_raft_log_last_written_index": _QQ, "rabbitmq_raft_entry_commit_latency_seconds": _QQ,
    "rabbitmq_queue_process_reductions": _PROC,
    "rabbitmq_channel_process_reductions": _PROC,
    "rabbitmq_connection_process_reductions": _PROC,
    "rabbitmq_queue_process_memory_bytes": "the memory of a queue's Erlang process",
    "rabbitmq_queue_messages_ram": "per-queue message bytes and RAM/disk split are not "
    "counted yet (a queue counts body bytes only under x-max-length-bytes; the memory "
    "budget's totals are syncmq_body_store_memory_bytes, syncmq_spilled_*)",
    "rabbitmq_queue_messages_ram_bytes": "as rabbitmq_queue_messages_ram",
    "rabbitmq_queue_messages_ready_ram": "as rabbitmq_queue_messages_ram",
    "rabbitmq_queue_messages_unacked_ram": "as rabbitmq_queue_messages_ram",
    "rabbitmq_queue_messages_bytes": "as rabbitmq_queue_messages_ram",
    "rabbitmq_queue_messages_ready_bytes": "as rabbitmq_queue_messages_ram",
    "rabbitmq_queue_messages_unacked_bytes": "as rabbitmq_queue_messages_ram",
    "rabbitmq_queue_messages_paged_out": "as rabbitmq_queue_messages_ram",
    "rabbitmq_queue_messages_paged_out_bytes": "as rabbitmq_queue_messages_ram",
    "rabbitmq_queue_messages_persistent": "persistent messages are not counted per queue",
    "rabbitmq_queue_messages_persistent_bytes": "as rabbitmq_queue_messages_persistent",
    "rabbitmq_queue_head_message_timestamp": "the head message's timestamp property is not "
    "decoded (syncmq keeps properties encoded)",
    "rabbitmq_queue_disk_reads": "per-queue disk reads: the journal is shared by all queues",
    "rabbitmq_queue_disk_writes": "per-queue disk writes: the journal is shared by all queues",
    "rabbitmq_connection_incoming_packets": "socket reads/writes are not counted (bytes are)",
    "rabbitmq_connection_outgoing_packets": "socket reads/writes are not counted (bytes are)",
    "rabbitmq_connection_pending_packets": "syncmq's outbound buffer counts bytes, not packets",
}
# Per-object label sets that differ, and why (the aggregated families are the same).
OTHER_LABELS: dict[str, str] = {
    **{f"rabbitmq_channel_{n}": "syncmq counts per channel, not per channel and exchange "
       "(publishes) or queue (deliveries): labels channel, vhost"
       for n in ("messages_published", "messages_confirmed", "messages_unroutable_returned",
                 "messages_unroutable_dropped", "get_ack", "get", "messages_delivered_ack",
                 "messages_delivered", "messages_redelivered", "messages_acked", "get_empty")},
    "rabbitmq_queue_messages_published": "counted per queue, not per channel and exchange: "
    "labels queue_vhost, queue",
}
IGNORED_PREFIXES = ("erlang_vm_", "erlang_mnesia_", "telemetry_")  # the Erlang VM's own


def _families(text: str) -> dict[str, tuple[str, str, frozenset[str]]]:
    out = {}
    for f in text_string_to_metric_families(text):
        if f.name.startswith(IGNORED_PREFIXES):
            continue
        out[f.name] = (f.type, f.documentation,
                       frozenset(k for s in f.samples for k in s.labels if k != "le"))
    return out


@pytest.fixture(scope="module")
def rabbit_prom():
    if not rabbitmq_available():
        pytest.skip("rabbitmq-server is not installed (CI installs it)")
    base = tempfile.mkdtemp(prefix="syncmq-interop-prom-")
    node = RabbitNode(base, prometheus=True, name="syncmq-prom").start()
    yield node
    node.stop()
    shutil.rmtree(base, ignore_errors=True)


GLOBAL_COMPARED = ("received", "received_confirm", "confirmed", "routed",
                   "unroutable_returned", "unroutable_dropped", "delivered",
                   "delivered_consume_auto_ack", "delivered_consume_manual_ack",
                   "delivered_get_auto_ack", "delivered_get_manual_ack", "get_empty",
                   "acknowledged", "redelivered")


def _globals(text: str) -> dict[str, float]:
    out = {}
    for f in text_string_to_metric_families(text):
        if f.name.startswith("rabbitmq_global_messages_"):
            key = f.name[len("rabbitmq_global_messages_"):]
            out[key] = sum(s.value for s in f.samples if s.name.endswith("_total"))
        elif f.name in ("rabbitmq_connections", "rabbitmq_channels", "rabbitmq_consumers",
                        "rabbitmq_queues", "rabbitmq_global_consumers",
                        "rabbitmq_global_publishers"):
            out[f.name] = sum(s.value for s in f.samples)
    return out


def test_families_types_labels_and_values_match_rabbitmq(rabbit_prom, broker_factory, capsys):
    b = broker_factory("--prometheus-port", "0")
    with workload(rabbit_prom.port), workload(b.port):
        ours = scrape(b.prometheus_port)
        # RabbitMQ's global counters are immediate; its gauges follow its stats events:
        # scrape until they show the workload (bounded)
        deadline = time.monotonic() + 60
        while True:
            theirs = scrape(rabbit_prom.prometheus_port)
            g = _globals(theirs)
            if (g.get("rabbitmq_connections") == 2 and g.get("rabbitmq_consumers") == 2) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        theirs_po = scrape(rabbit_prom.prometheus_port, "/metrics/per-object")
        ours_po = scrape(b.prometheus_port, "/metrics/per-object", auth=True)
    assert AUTH  # per-object needs credentials on syncmq by default (--metrics-auth)

    problems = []
    for endpoint, r_text, s_text, other in (("/metrics", theirs, ours, {}),
                                            ("/metrics/per-object", theirs_po, ours_po,
                                             OTHER_LABELS)):
        rf, sf = _families(r_text), _families(s_text)
        for name, (rtype, rhelp, rlabels) in sorted(rf.items()):
            if name in NOT_SERVED:
                if name in sf:
                    problems.append(f"{endpoint} {name}: served but listed as not served")
                continue
            if name not in sf:
                problems.append(f"{endpoint} {name}: missing")
                continue
            stype, shelp, slabels = sf[name]
            if stype != rtype or shelp != rhelp:
                problems.append(f"{endpoint} {name}: {stype} {shelp!r} != {rtype} {rhelp!r}")
            if rlabels and slabels and rlabels != slabels and name not in other:
                problems.append(f"{endpoint} {name}: labels {sorted(slabels)} != "
                                f"{sorted(rlabels)}")
        stale = [n for n in NOT_SERVED if n not in rf]
        assert not stale, f"listed as not served but RabbitMQ has no such family: {stale}"
    assert not problems, "\n".join(problems)

    g_r, g_s = _globals(theirs), _globals(ours)
    for key in (*GLOBAL_COMPARED, "rabbitmq_connections", "rabbitmq_channels",
                "rabbitmq_consumers", "rabbitmq_queues", "rabbitmq_global_consumers",
                "rabbitmq_global_publishers"):
        assert g_s[key] == g_r[key], (key, g_s[key], g_r[key])
    with capsys.disabled():
        print(f"\nRabbitMQ families syncmq does not serve ({len(NOT_SERVED)}):")
        for name, why in NOT_SERVED.items():
            print(f"  {name}: {why}")


def test_dead_letter_counters_match_rabbitmq(rabbit_prom, broker_factory, unique):
    """The same dead letters (each reason, with a dead-letter exchange, without, with a
    missing one, a reject-publish refusal that is none, a quorum queue) counted the same on
    both brokers, series by series (RabbitMQ's: the increase over this test)."""
    b = broker_factory("--prometheus-port", "0")
    before = dead_lettered(scrape(rabbit_prom.prometheus_port))
    dead_letter_workload(rabbit_prom.port, unique)
    dead_letter_workload(b.port, unique)
    theirs = {k: v - before.get(k, 0)
              for k, v in dead_lettered(scrape(rabbit_prom.prometheus_port)).items()}
    ours = dead_lettered(scrape(b.prometheus_port))
    assert ours == theirs
    assert {k: v for k, v in ours.items() if v} == DEAD_LETTERS
