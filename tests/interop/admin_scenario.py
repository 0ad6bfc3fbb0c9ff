"""The rabbitmqadmin parity scenario (tests/interop/test_rabbitmqadmin.py): every command
rabbitmqadmin 3.10.8 has (policies and operator policies included), in every output format
for listings, against one broker; the transcript is
compared with the same run against RabbitMQ.

Normalised (what legitimately differs between two brokers, and why):

- node names (``rabbit@host`` / ``syncmq@host``): ``NODE``;
- timestamps and connection/channel names (they hold client ports): ``TS``, ``CONN``;
- server-generated names (``amq.gen-...``, ``amq.ctag-...``): ``amq.gen-X``/``amq.ctag-X``;
- the exported file's version fields (``rabbit_version``, ``rabbitmq_version``,
  ``product_*``): dropped;
- RabbitMQ's ``amq.rabbitmq.trace`` exchange (its firehose tracer, which syncmq does not
  have): left out of exchange listings;
- the properties key's hash of binding arguments (see test_rabbitmqadmin.py): ``~HASH``;
- raw JSON is compared parsed (key order and whitespace of the server's body);
- in an export, the fields syncmq adds to RabbitMQ 3.10's (a queue's ``type``, a vhost's
  ``limits`` and ``metadata``, as later RabbitMQ versions export them).

Every listing is narrowed to the scenario's own vhost, users and names: the brokers are
shared with other tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time

import pika

FORMATS = ("long", "raw_json", "pretty_json", "tsv", "kvp", "table")
GEN = re.compile(r"amq\.(gen|ctag)-[A-Za-z0-9_-]{22}")
NODE = re.compile(r"(rabbit|syncmq|syncmq-interop-\d+)@[A-Za-z0-9._-]+")
CONN = re.compile(r"127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+( \(\d+\))?")
TS = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d?:\d\d:\d\d(\.\d+)?(\+00:00|Z)?")
VERSIONS = ("rabbit_version", "rabbitmq_version", "product_name", "product_version")


def norm(text: str) -> str:
    for rx, sub in ((GEN, r"amq.\1-X"), (NODE, "NODE"), (CONN, "CONN"), (TS, "TS")):
        text = rx.sub(sub, text)
    return text


def admin(port: int, *args: str):
    """(exit code, normalised stdout, stderr); raw JSON output parsed (key order and
    whitespace are the server's, not rabbitmqadmin's: compared as JSON)."""
    r = subprocess.run(["rabbitmqadmin", "-H", "127.0.0.1", "-P", str(port), "-u", "guest",
                        "-p", "guest", *args], capture_output=True, text=True, timeout=60)
    out = norm(r.stdout)
    if "raw_json" in args and r.returncode == 0:
        out = json.loads(out)
    return r.returncode, out, norm(r.stderr)


def _json(port: int, *args: str):
    rc, out, err = admin(port, "-f", "raw_json", *args)
    assert rc == 0, (args, out, err)
    return out


def _poll(port: int, what: str, pred, n: int = 1) -> list:
    """RabbitMQ lists connections and channels once its stats collector saw them (a few
    seconds): poll its listing (a bounded loop on another process's state)."""
    deadline = time.monotonic() + 30
    while True:
        rows = [r for r in _json(port, "list", what) if pred(r)]
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _pick(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    return [{k: r.get(k, "MISSING") for k in keys} for r in rows]


def _exported(kind: str, o: dict) -> dict:
    """An exported object without what syncmq adds to RabbitMQ 3.10's export (newer
    RabbitMQ's fields): a queue's ``type``, a vhost's ``limits``/``metadata``."""
    drop = {"queues": ("type",), "vhosts": ("limits", "metadata")}.get(kind, ())
    return {k: v for k, v in o.items() if k not in drop}


def scenario(port: int, amqp: int, tag: str) -> list:
    """Run every command against one broker; returns the normalised transcript."""
    vh, user, q, x = f"adm-{tag}", f"admu-{tag}", f"admq-{tag}", f"admx-{tag}"
    out: list = []

    def run(*args):
        out.append((args, admin(port, *args)))

    def v(*args):  # a command in the scenario's vhost
        run("-V", vh, *args)

    run("declare", "vhost", f"name={vh}")
    run("declare", "user", f"name={user}", "password=pw", "tags=monitoring")
    run("declare", "permission", f"vhost={vh}", f"user={user}", "configure=^adm",
        "write=.*", "read=.*")
    v("declare", "exchange", f"name={x}", "type=topic", "durable=false")
    v("declare", "exchange", f"name={x}-h", "type=headers", "auto_delete=true",
      'arguments={"alternate-exchange": "none"}')
    v("declare", "queue", f"name={q}", "durable=false", 'arguments={"x-max-length": 10}')
    v("declare", "queue", f"name={q}-d", "queue_type=classic")
    v("declare", "queue", f"name={q}-qq", "queue_type=quorum", "durable=true")
    v("declare", "binding", f"source={x}", f"destination={q}", "routing_key=a.*")
    v("declare", "binding", f"source={x}", f"destination={x}-h",
      "destination_type=exchange", "routing_key=#")
    v("declare", "parameter", "component=federation-upstream", f"name={tag}-up",
      'value={"uri": "amqp://elsewhere"}')
    run("declare", "vhost_limit", f"vhost={vh}", "name=max-queues", "value=50")
    v("declare", "policy", f"name={tag}-pol", f"pattern=^{q}-d$",
      'definition={"max-length": 5}', "priority=1", "apply-to=queues")
    v("declare", "operator_policy", f"name={tag}-opol", f"pattern=^{q}$",
      'definition={"max-length": 7}', "apply-to=queues")
    v("declare", "policy", f"name={tag}-bad", "pattern=.*", 'definition={"max-length": "x"}')
    # publish and get
    v("publish", f"exchange={x}", "routing_key=a.b", "payload=hello",
      'properties={"content_type": "text/plain", "headers": {"h": 1}}')
    v("publish", f"exchange={x}", "routing_key=zzz", "payload=lost")
    v("publish", "routing_key=" + q, "payload=aGk=", "payload_encoding=base64")
    for fmt in ("raw_json", "table", "kvp"):
        v("-f", fmt, "get", f"queue={q}", "ackmode=ack_requeue_true", "count=2")
    v("get", f"queue={q}", "ackmode=ack_requeue_false", "count=1")
    # listings of the vhost's objects, every format
    for fmt in FORMATS:
        v("-f", fmt, "list", "queues", "name", "durable", "auto_delete", "exclusive",
          "arguments", "type")
        v("-f", fmt, "list", "bindings", "source", "destination", "destination_type",
          "routing_key", "properties_key")
        v("-f", fmt, "list", "exchanges", "name", "type", "durable", "auto_delete",
          "internal", "arguments")
    out.append(("exchanges", sorted(
        (e["name"], e["type"], e["durable"], e["auto_delete"], e["internal"])
        for e in _json(port, "-V", vh, "list", "exchanges")
        if e["name"] != "amq.rabbitmq.trace")))
    # global objects, narrowed to ours
    out.append(("users", _pick([u for u in _json(port, "list", "users")
                                if u["name"] == user], ("name", "tags"))))
    out.append(("vhosts", _pick([r for r in _json(port, "list", "vhosts")
                                 if r["name"] == vh], ("name", "tracing"))))
    out.append(("limits", [r for r in _json(port, "list", "vhost_limits")
                           if r["vhost"] == vh]))
    out.append(("parameters", [r for r in _json(port, "list", "parameters")
                               if r["vhost"] == vh]))
    for what in ("policies", "operator_policies"):
        out.append((what, [r for r in _json(port, "list", what) if r["vhost"] == vh]))
    # (a queue's policy fields are not compared here: RabbitMQ reports them from its queue
    # statistics, emitted every few seconds, so right after `declare policy` its listing
    # still shows none; tests/interop/test_policies_differential.py compares them, waiting)
    out.append(("permissions", sorted((r["user"], r["configure"], r["write"], r["read"])
                                      for r in _json(port, "list", "permissions")
                                      if r["vhost"] == vh)))
    out.append(("overview keys", sorted(k for k in _json(port, "show", "overview")
                                        if k in ("rabbitmq_version", "cluster_name",
                                                 "queue_totals", "object_totals"))))
    # connections, channels, consumers; close and purge
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", amqp, vh, pika.PlainCredentials("guest", "guest"), heartbeat=0,
        client_properties={"connection_name": f"admc-{tag}"}))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=3)
    ch.basic_consume(q + "-d", lambda *a: None, consumer_tag=f"ctag-{tag}")
    conns = _poll(port, "connections", lambda c: c.get("user_provided_name") == f"admc-{tag}"
                  and c.get("channels") == 1)
    out.append(("connections", _pick(conns, ("vhost", "user", "state", "protocol",
                                              "auth_mechanism", "channels", "ssl",
                                              "user_provided_name", "type"))))
    out.append(("channels", _pick(_poll(port, "channels", lambda c: c.get("vhost") == vh
                                        and c.get("consumer_count") == 1),
                                  ("vhost", "user", "number", "prefetch_count",
                                   "consumer_count", "confirm", "transactional", "state"))))
    out.append(("consumers", [
        {"tag": c["consumer_tag"], "queue": c["queue"]["name"], "ack": c["ack_required"],
         "prefetch": c["prefetch_count"], "exclusive": c["exclusive"]}
        for c in _json(port, "-V", vh, "list", "consumers")]))
    name = conns[0]["name"] if conns else "none"
    out.append(("close", admin(port, "close", "connection", f"name={name}")))
    run("-V", vh, "purge", "queue", f"name={q}")
    # export and import
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "defs.json")
        rc, text, err = admin(port, "export", path)
        out.append(("export", rc, text.replace(path, "FILE"), err))
        with open(path) as f:
            defs = json.load(f)
        out.append(("export keys", sorted(k for k in defs if k not in VERSIONS)))
        mine = {k: sorted(json.dumps(_exported(k, o), sort_keys=True)
                          for o in defs.get(k, [])
                          if o.get("vhost") == vh or o.get("name") in (vh, user))
                for k in ("vhosts", "permissions", "queues", "exchanges", "bindings",
                          "parameters")}
        out.append(("exported", mine))
        v("delete", "queue", f"name={q}-d")
        rc, text, err = admin(port, "import", path)
        out.append(("import", rc, text.replace(path, "FILE"), err))
        out.append(("reimported", sorted(r["name"] for r in _json(port, "-V", vh, "list",
                                                                    "queues"))))
    # deletes, and deleting what is not there
    v("delete", "binding", f"source={x}", "destination_type=queue", f"destination={q}",
      "properties_key=a.*")
    v("delete", "binding", f"source={x}", "destination_type=queue", f"destination={q}",
      "properties_key=a.*")
    v("delete", "parameter", "component=federation-upstream", f"name={tag}-up")
    run("delete", "vhost_limit", f"vhost={vh}", "name=max-queues")
    v("delete", "policy", f"name={tag}-pol")
    v("delete", "policy", f"name={tag}-pol")
    v("delete", "operator_policy", f"name={tag}-opol")
    for kind, name_ in (("queue", q), ("queue", f"{q}-none"), ("exchange", x),
                        ("exchange", f"{x}-none")):
        v("delete", kind, f"name={name_}")
    # refusals
    v("declare", "queue", f"name={q}-bad", 'arguments={"x-max-length": "ten"}')
    v("declare", "queue", "name=amq.adm-reserved")
    v("declare", "exchange", f"name={x}-bad", "type=syncmq-admin-no-such-type")
    run("-V", f"{vh}-none", "declare", "queue", f"name={q}")
    run("declare", "permission", f"vhost={vh}", f"user={user}-none", "configure=.*",
        "write=.*", "read=.*")
    run("delete", "permission", f"vhost={vh}", f"user={user}")
    run("delete", "permission", f"vhost={vh}", f"user={user}")
    run("delete", "user", f"name={user}")
    run("delete", "user", f"name={user}")
    run("delete", "vhost", f"name={vh}")
    run("delete", "vhost", f"name={vh}")
    return out
