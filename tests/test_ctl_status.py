"""``syncmqctl status`` (issue 17): rabbitmqctl's sections with true values, in text and as
rabbitmqctl's JSON (``--formatter json``), from a real broker. The comparison of the section
titles and JSON keys with rabbitmqctl's own is tests/interop/test_ctl_status_diff.py."""

from __future__ import annotations

import contextlib
import json
import os
import platform

from amqp_helpers import connect
from test_ctl_remote import ok
from test_management import get

from syncmq.broker.auth import hash_password

SECTIONS = ["Runtime", "Plugins", "Data directory", "Config files", "Log file(s)", "Alarms",
            "Memory", "File Descriptors", "Free Disk Space", "Totals", "Listeners"]


def sections(out: str) -> dict[str, list[str]]:
    """Section title -> its non-empty lines (banner and blank lines dropped)."""
    found: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line in SECTIONS:
            current = found.setdefault(line, [])
        elif current is not None and line.strip():
            current.append(line)
    return found


def value(lines: list[str], key: str) -> str:
    for line in lines:
        if line.startswith(key + ": "):
            return line[len(key) + 2:]
    raise AssertionError(f"no {key!r} in {lines}")


def test_status_sections_have_true_values(broker_factory, tmp_path, unique):
    users = tmp_path / "users.toml"
    users.write_text(f'[users.guest]\npassword_hash = "{hash_password("guest")}"\n'
                     'tags = ["administrator"]\n'
                     '[users.guest.permissions."/"]\nconfigure = ".*"\nwrite = ".*"\n'
                     'read = ".*"\n')
    ini = tmp_path / "syncmq.ini"
    ini.write_text("[syncmq]\nheartbeat = 30\n")
    b = broker_factory("--prometheus-port", "0", "--memory-high-watermark", "2GiB",
                       "--disk-free-limit", "1MB", "--users-file", str(users), "-c", str(ini))
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(contextlib.closing(connect(b.port))) for _ in range(3)]
        conns[0].channel().queue_declare(unique)
        out = ok(b, "status")
        data = json.loads(ok(b, "status", "--formatter", "json"))
    node = data["listeners"][0]["node"]
    assert out.splitlines()[0] == f"Status of node {node} ..."
    assert value(s0 := sections(out)["Runtime"], "Node name") == node, s0
    s = sections(out)
    assert list(s) == SECTIONS
    rt = s["Runtime"]
    assert value(rt, "OS PID") == str(b.proc.pid) and data["pid"] == b.proc.pid
    assert value(rt, "OS") == platform.system() == data["os"]
    assert 0 <= int(value(rt, "Uptime (seconds)")) < 600
    assert value(rt, "Product name") == "syncmq"
    assert value(rt, "Python") == platform.python_version() == data["python_version"]
    assert value(rt, "Is under maintenance?") == "false"
    used, limit = value(rt, "Threads").split(" used, ")
    assert int(used) > 1 and limit.endswith(" limit")
    assert s["Plugins"][-1] == "Enabled plugins:" and data["active_plugins"] == []
    data_dir = os.path.abspath(b.data_dir)
    assert value(s["Data directory"], "Node data directory") == data_dir
    assert data["data_directory"] == data_dir and data["journal_bytes"] > 0
    assert s["Config files"] == [f" * {ini}", f" * {users}"]
    assert data["config_files"] == [str(ini), str(users)]
    # (the broker's log goes to stderr here: the tests read its start-up line there)
    assert s["Log file(s)"] == [" * <stderr>"] and data["log_files"] == ["<stderr>"]
    assert s["Alarms"] == ["(none)"] and data["alarms"] == []
    mem = s["Memory"]
    assert value(mem, "Memory high watermark setting") == "2.1475 gb, computed to: 2.1475 gb"
    assert data["vm_memory_high_watermark_limit"] == 2 * 1024 ** 3
    categories = {line.split(":")[0] for line in mem if line.endswith("%)")}
    assert categories == {"baseline", "message_metadata", "message_bodies", "connections",
                          "unaccounted"}
    m = data["memory"]
    assert m["baseline"] > 0 and m["connections"] >= 3 * 12 * 1024  # three connections
    assert m["total"]["rss"] > 0 and m["total"]["accounted"] >= m["baseline"]
    fd = data["file_descriptors"]
    assert 0 < fd["total_used"] <= fd["total_limit"] and fd["sockets_used"] == 3
    assert value(s["File Descriptors"], "Total") == \
        f"{fd['total_used']}, limit: {fd['total_limit']}"
    assert value(s["Free Disk Space"], "Low free disk space watermark") == "0.001 gb"
    st = os.statvfs(b.data_dir)
    assert abs(data["disk_free"] - st.f_bavail * st.f_frsize) < 1e9  # another writer may run
    assert data["disk_free_limit"] == 1024 ** 2  # (syncmq sizes are binary)
    t = s["Totals"]
    assert value(t, "Connection count") == "3" and value(t, "Queue count") == "1"
    assert value(t, "Virtual host count") == "1"
    assert data["totals"] == {"connection_count": 3, "queue_count": 1, "virtual_host_count": 1}
    assert s["Listeners"] == [
        f"Interface: 127.0.0.1, port: {b.port}, protocol: amqp, purpose: AMQP 0-9-1",
        f"Interface: 127.0.0.1, port: {b.management_port}, protocol: http, purpose: HTTP API",
        f"Interface: 127.0.0.1, port: {b.prometheus_port}, protocol: http/prometheus, "
        "purpose: Prometheus exporter API over HTTP"]
    assert [(li["protocol"], li["port"]) for li in data["listeners"]] == [
        ("amqp", b.port), ("http", b.management_port), ("http/prometheus", b.prometheus_port)]
    # with the connections closed, the count follows
    assert value(sections(ok(b, "status"))["Totals"], "Connection count") == "0"


def test_status_alarm_units_and_memory_budget(broker_factory):
    """An alarm in effect is listed as rabbitmqctl lists it; --unit; the memory budget."""
    b = broker_factory("--disk-free-limit", "1000000G", "--memory-budget", "8MiB",
                       "--memory-high-watermark", "0")
    b.wait_for_log("disk resource limit alarm")
    data = json.loads(ok(b, "status", "--formatter", "json"))
    node = data["listeners"][0]["node"]
    assert data["alarms"] == [{"type": "resource_limit", "resource": "disk", "node": node}]
    out = ok(b, "status", "--unit", "bytes")
    assert sections(out)["Alarms"] == [f"Free disk space alarm on node {node}"]
    disk = sections(out)["Free Disk Space"]
    assert value(disk, "Low free disk space watermark") == f"{1000000 * 1024 ** 3} bytes"
    free = value(disk, "Free disk space")
    assert free.endswith(" bytes") and abs(int(free[:-6]) - data["disk_free"]) < 1e9
    assert "Memory budget: 8388608 bytes, message bodies in memory: 0 bytes, spilled to " \
        "disk: 0 messages, 0 bytes" in out
    assert data["memory"]["budget"]["budget"] == 8 * 1024 ** 2
    assert "Memory high watermark setting: none (no memory alarm)" in out


def test_node_api_memory_only_when_asked(broker):
    name = get(broker, "/api/overview")["node"]
    node = get(broker, f"/api/nodes/{name}")
    assert "memory" not in node and node["log_files"] and node["config_files"] == []
    mem = get(broker, f"/api/nodes/{name}?memory=true")["memory"]
    assert set(mem) >= {"baseline", "message_metadata", "message_bodies", "connections",
                        "unaccounted", "strategy", "total"}


def test_status_titles_are_bold_on_a_terminal_only(broker_factory):
    """As rabbitmqctl: the section titles are bold (ANSI) when standard output is a terminal
    (seen through the output held back until the broker answers, ``ctl_output.HeldOutput``),
    plain when it is a pipe."""
    import pty
    import subprocess
    import sys

    b = broker_factory()
    assert "\x1b[" not in ok(b, "status")  # a pipe
    main, sub = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncmq.ctl", "status", "--management-url",
             f"http://127.0.0.1:{b.management_port}", "--username", "guest",
             "--password", "guest"], stdout=sub, stderr=subprocess.PIPE)
        os.close(sub)
        sub = -1
        chunks = []
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        proc.stderr.close()
    finally:
        os.close(main)
        if sub >= 0:
            os.close(sub)
    out = b"".join(chunks).decode()
    assert "\x1b[1mRuntime\x1b[0m" in out, out[:500]
