"""``syncmqctl status``: rabbitmqctl's ``status`` (3.10) for what applies to syncmq.

The same sections, titles and lines as rabbitmqctl where syncmq has the thing (Runtime,
Plugins, Data directory, Config files, Log file(s), Alarms, Memory, File Descriptors, Free
Disk Space, Totals, Listeners), Python where rabbitmqctl shows Erlang, threads where it shows
Erlang processes, and syncmq's memory categories (``syncmq.memory``: the process at start,
queued messages' metadata and bodies, connections, RSS beyond them; the memory budget and
the journal on disk). Sizes in ``--unit`` (``gb`` by default, as rabbitmqctl). With
``--formatter json`` the same data as one JSON object with rabbitmqctl's keys
(``python_version`` and ``journal_bytes`` are syncmq's own).

Everything comes from the management API: ``/api/overview``, ``/api/nodes/{node}?memory=true``
and ``/api/vhosts`` (importing this module registers the verb in ``ctl_remote.VERBS``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .ctl_remote import VERBS, Client, _json_out, _vq

UNITS = {"bytes": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3}
# rabbitmqctl's listener purposes (syncmq speaks AMQP 0-9-1 only)
PURPOSES = {"amqp": "AMQP 0-9-1", "amqp/ssl": "AMQP 0-9-1 over TLS", "http": "HTTP API",
            "https": "HTTP API over TLS",
            "http/prometheus": "Prometheus exporter API over HTTP"}
ALARM_LINES = {"memory": "Memory alarm on node {node}",
               "disk": "Free disk space alarm on node {node}"}


def gather(c: Client) -> dict[str, Any]:
    """The status as rabbitmqctl's JSON formatter shapes it (its keys where they apply)."""
    o = c.call("GET", "/api/overview")
    name = o.get("node", "")
    n = c.call("GET", f"/api/nodes/{_vq(name)}?memory=true")
    vhosts = c.call("GET", "/api/vhosts") or []
    alarms = [{"type": "resource_limit", "resource": r, "node": name}
              for r, on in (("memory", n.get("mem_alarm")), ("disk", n.get("disk_free_alarm")))
              if on]
    ot = o.get("object_totals", {})
    return {
        "pid": int(n.get("os_pid") or 0),
        "os": n.get("os", ""),
        "uptime": int(n.get("uptime", 0)) // 1000,
        "is_under_maintenance": bool(n.get("being_drained")),
        "product_name": o.get("product_name", ""),
        "product_version": o.get("product_version", ""),
        "rabbitmq_version": o.get("rabbitmq_version", ""),
        "python_version": o.get("python_version", ""),
        "node_name": name,
        "processes": {"used": n.get("proc_used", 0), "limit": n.get("proc_total", 0)},
        "active_plugins": [],  # the management API and /metrics are built in
        "enabled_plugin_file": "",
        "data_directory": n.get("db_dir", ""),
        "journal_bytes": n.get("journal_bytes", 0),
        "config_files": n.get("config_files", []),
        "log_files": n.get("log_files", []),
        "alarms": alarms,
        "memory": n.get("memory", {}),
        "vm_memory_calculation_strategy": n.get("mem_calculation_strategy", "rss"),
        "vm_memory_high_watermark_setting": {"absolute": n.get("mem_limit", 0)},
        "vm_memory_high_watermark_limit": n.get("mem_limit", 0),
        "file_descriptors": {"total_used": n.get("fd_used", 0),
                             "total_limit": n.get("fd_total", 0),
                             "sockets_used": n.get("sockets_used", 0),
                             "sockets_limit": n.get("sockets_total", 0)},
        "disk_free": n.get("disk_free", 0),
        "disk_free_limit": n.get("disk_free_limit", 0),
        "totals": {"virtual_host_count": len(vhosts),
                   "connection_count": ot.get("connections", 0),
                   "queue_count": ot.get("queues", 0)},
        "listeners": [{"node": name, "interface": li.get("ip_address", ""),
                       "port": li.get("port"), "protocol": li.get("protocol"),
                       "purpose": PURPOSES.get(li.get("protocol"), "")}
                      for li in o.get("listeners", [])],
    }


def _size(v: int, unit: str) -> str:
    if unit == "bytes":
        return f"{int(v)} bytes"
    return f"{round(v / UNITS[unit], 4)} {unit}"


def _title(text: str) -> str:
    # rabbitmqctl prints section titles bold (ANSI) on a terminal
    return f"\x1b[1m{text}\x1b[0m" if sys.stdout.isatty() else text


def _memory_lines(m: dict[str, Any], unit: str) -> list[str]:
    mem = m["memory"]
    total = mem.get("total", {})
    rss = total.get("rss", 0)
    limit = m["vm_memory_high_watermark_limit"]
    lines = [f"Total memory used: {_size(rss, unit)}",
             f"Calculation strategy: {m['vm_memory_calculation_strategy']}",
             f"Accounted memory (what the memory alarm compares): "
             f"{_size(total.get('accounted', 0), unit)}",
             (f"Memory high watermark setting: {_size(limit, unit)}, computed to: "
              f"{_size(limit, unit)}" if limit else
              "Memory high watermark setting: none (no memory alarm)") + "\n"]
    parts = [(k, v) for k, v in mem.items() if isinstance(v, int)]
    for k, v in sorted(parts, key=lambda kv: -kv[1]):
        pct = round(100.0 * v / rss, 2) if rss else 0.0
        lines.append(f"{k}: {_size(v, unit)} ({pct} %)")
    budget = mem.get("budget")
    if budget:
        lines.append(f"\nMemory budget: {_size(budget['budget'], unit)}, message bodies in "
                     f"memory: {_size(budget['memory_bytes'], unit)}, spilled to disk: "
                     f"{budget['spilled_messages']} messages, "
                     f"{_size(budget['spilled_bytes'], unit)}")
    return lines


def _section(title: str, lines: list[str]) -> list[str]:
    return ["", _title(title), "", *lines]


def text_lines(m: dict[str, Any], unit: str) -> list[str]:
    """rabbitmqctl's text layout of ``m`` (:func:`gather`)."""
    out = [_title("Runtime"), "",
           f"OS PID: {m['pid']}", f"OS: {m['os']}", f"Uptime (seconds): {m['uptime']}",
           f"Is under maintenance?: {str(m['is_under_maintenance']).lower()}",
           f"Product name: {m['product_name']}", f"Product version: {m['product_version']}",
           f"Node name: {m['node_name']}", f"Python: {m['python_version']}",
           f"Threads: {m['processes']['used']} used, {m['processes']['limit']} limit"]
    out += _section("Plugins", ["Enabled plugin file: (none: the management API and "
                                "Prometheus metrics are built in)", "Enabled plugins:", "",
                                *[f" * {p}" for p in m["active_plugins"]]])
    out += _section("Data directory", [
        f"Node data directory: {m['data_directory'] or '(none: messages in memory only)'}",
        f"Journal: {_size(m['journal_bytes'], unit)}"])
    out += _section("Config files", [f" * {p}" for p in m["config_files"]] or ["(none)"])
    out += _section("Log file(s)", [f" * {p}" for p in m["log_files"]])
    out += _section("Alarms", [ALARM_LINES[a["resource"]].format(node=a["node"])
                               for a in m["alarms"]] or ["(none)"])
    out += _section("Memory", _memory_lines(m, unit))
    fd = m["file_descriptors"]
    out += _section("File Descriptors", [
        f"Total: {fd['total_used']}, limit: {fd['total_limit']}",
        f"Sockets: {fd['sockets_used']}, limit: {fd['sockets_limit']}"])
    out += _section("Free Disk Space", [
        f"Low free disk space watermark: {_size(m['disk_free_limit'], unit)}",
        f"Free disk space: {_size(m['disk_free'], unit)}"])
    t = m["totals"]
    out += _section("Totals", [f"Connection count: {t['connection_count']}",
                               f"Queue count: {t['queue_count']}",
                               f"Virtual host count: {t['virtual_host_count']}"])
    out += _section("Listeners", [
        f"Interface: {_interface(li['interface'])}, port: {li['port']}, protocol: "
        f"{li['protocol']}, purpose: {li['purpose']}" for li in m["listeners"]] or ["(none)"])
    return out


def _interface(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


def status(c: Client, args) -> None:
    m = gather(c)
    if _json_out(args):  # (rabbitmqctl's has no node name key: its listeners carry it)
        print(json.dumps({k: v for k, v in m.items() if k != "node_name"}, indent=1))
        return
    if not args.quiet:
        print(f"Status of node {m['node_name']} ...")
    for line in text_lines(m, args.unit):
        print(line)


VERBS["status"] = (status, "broker status (rabbitmqctl's sections)", ["--unit=gb"])
