"""What tests/interop/admin_scenario.py leaves out of rabbitmqadmin 3.10.8 (issue 17), run
against one broker; tests/interop/test_rabbitmqadmin_formats.py compares the transcript with
the same run against RabbitMQ:

- every ``list`` subcommand (all 15 of ``rabbitmqadmin help subcommands``) and ``show
  overview`` in every ``-f`` format, ``bash`` included (seven), each output parsed back into
  rows (so that a table's column widths, which depend on every object of a shared broker,
  do not matter) and narrowed to the scenario's objects;
- each listing with its default columns (no column arguments, as an operator types it):
  the columns of the scenario's rows (values differ between brokers: compared by the test
  with RabbitMQ's set, less the fields syncmq does not serve);
- ``-S``/``--sort`` and ``-R``/``--sort-reverse``, ``-d``/``--depth``;
- ``declare user`` with ``password_hash=`` and ``hashing_algorithm=`` (then an AMQP login
  with the password), ``declare vhost`` with ``tracing=``, ``declare queue`` with
  ``node=`` (the node's own name, from ``list nodes``);
- ``publish`` reading its payload from standard input, ``get`` with ``payload_file=`` and
  with ``encoding=base64`` (not both: rabbitmqadmin 3.10.8 fails on that itself);
- ``-V vhost export`` and ``-V vhost import`` (``/api/definitions/{vhost}``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time

import pika
from admin_scenario import norm

FORMATS = ("long", "raw_json", "pretty_json", "tsv", "kvp", "table", "bash")
# list subcommand -> (vhost-scoped, the columns compared)
LISTS = {
    "connections": (False, ("name", "user", "vhost", "channels", "user_provided_name",
                            "state", "protocol", "auth_mechanism", "ssl")),
    "channels": (False, ("name", "user", "vhost", "number", "consumer_count",
                         "prefetch_count", "confirm", "transactional")),
    "consumers": (True, ("consumer_tag", "ack_required", "prefetch_count", "exclusive",
                         "arguments")),
    "exchanges": (True, ("name", "type", "durable", "auto_delete", "internal")),
    "queues": (True, ("name", "durable", "auto_delete", "exclusive", "type")),
    "bindings": (True, ("source", "destination", "destination_type", "routing_key",
                        "properties_key")),
    "users": (False, ("name", "tags", "hashing_algorithm")),
    "vhosts": (False, ("name", "tracing")),
    "permissions": (False, ("user", "vhost", "configure", "write", "read")),
    "nodes": (False, ("name", "type", "running")),
    "parameters": (False, ("component", "vhost", "name", "value")),
    "policies": (False, ("vhost", "name", "pattern", "apply-to", "definition", "priority")),
    "operator_policies": (False, ("vhost", "name", "pattern", "apply-to", "definition",
                                  "priority")),
    "vhost_limits": (False, ("vhost", "value")),
}
KVP = re.compile(r'([\w.-]+)="(.*?)"(?= [\w.-]+="|$)')


def admin(port: int, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqadmin", "-H", "127.0.0.1", "-P", str(port), "-u", "guest",
                           "-p", "guest", *args], capture_output=True, text=True, timeout=60,
                          input=stdin)


def ok(port: int, *args: str, stdin: str | None = None) -> str:
    r = admin(port, *args, stdin=stdin)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def parse(fmt: str, text: str, cols: tuple[str, ...] | None) -> list:
    """A listing's output as rows (dicts; for bash, names)."""
    text = norm(text)
    if fmt in ("raw_json", "pretty_json"):
        return [{k: norm(json.dumps(v, sort_keys=True)) for k, v in o.items()}
                for o in json.loads(text)]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if fmt == "bash":
        return [w for ln in lines for w in ln.split(" ")]
    if fmt == "tsv":
        return [dict(zip(cols, ln.split("\t"), strict=True)) for ln in lines]
    if fmt == "kvp":
        return [dict(KVP.findall(ln)) for ln in lines]
    if fmt == "table":
        rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines
                if ln.startswith("|")]
        return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    blocks, cur = [], {}
    for ln in lines:  # long: "key: value" lines, blocks between dashed lines
        if set(ln) == {"-"}:
            if cur:
                blocks.append(cur)
            cur = {}
        else:
            k, _, v = ln.strip().partition(": ")
            cur[k.rstrip(":")] = v
    return blocks + ([cur] if cur else [])


def ours(rows: list, tag: str) -> list:
    mine = [r for r in rows if tag in json.dumps(r)]
    return sorted(mine, key=lambda r: json.dumps(r, sort_keys=True))


def _password_hash(password: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _setup(port: int, amqp: int, tag: str) -> tuple[str, pika.BlockingConnection]:
    vh, user = f"fmt-{tag}", f"fmtu-{tag}"
    ok(port, "declare", "vhost", f"name={vh}", "tracing=false")
    ok(port, "declare", "user", f"name={user}", f"password_hash={_password_hash('pw')}",
       "hashing_algorithm=rabbit_password_hashing_sha256", "tags=management")
    ok(port, "declare", "permission", f"vhost={vh}", f"user={user}", "configure=.*",
       "write=.*", "read=.*")
    ok(port, "declare", "permission", f"vhost={vh}", "user=guest", "configure=.*",
       "write=.*", "read=.*")
    v = ("-V", vh)
    ok(port, *v, "declare", "exchange", f"name=fx-{tag}", "type=topic")
    ok(port, *v, "declare", "queue", f"name=fq-{tag}", "durable=false")
    ok(port, *v, "declare", "binding", f"source=fx-{tag}", f"destination=fq-{tag}",
       "routing_key=a.#")
    ok(port, *v, "declare", "parameter", "component=federation-upstream", f"name=up-{tag}",
       'value={"uri": "amqp://elsewhere"}')
    ok(port, *v, "declare", "policy", f"name=pol-{tag}", f"pattern=^zz-{tag}",
       'definition={"max-length": 5}')
    ok(port, *v, "declare", "operator_policy", f"name=opol-{tag}", f"pattern=^zz-{tag}",
       'definition={"max-length": 7}')
    ok(port, "declare", "vhost_limit", f"vhost={vh}", "name=max-queues", "value=40")
    # the user declared by its hash logs in with its password
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", amqp, vh, pika.PlainCredentials(user, "pw"), heartbeat=0,
        client_properties={"connection_name": f"fmtc-{tag}"}))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=2)
    ch.basic_consume(f"fq-{tag}", lambda *a: None, consumer_tag=f"fctag-{tag}")
    return vh, conn


def _wait_listed(port: int, tag: str) -> None:
    """RabbitMQ lists connections and channels once its stats collector saw them."""
    deadline = time.monotonic() + 30
    while True:
        conns = json.loads(ok(port, "-f", "raw_json", "list", "connections"))
        chans = json.loads(ok(port, "-f", "raw_json", "list", "channels"))
        if any(c.get("user_provided_name") == f"fmtc-{tag}" and c.get("channels") == 1
               for c in conns) and any(tag in c.get("vhost", "") and
                                       c.get("consumer_count") == 1 for c in chans):
            return
        assert time.monotonic() < deadline, "never listed"
        time.sleep(0.2)


def listings(port: int, vh: str, tag: str) -> dict:
    out: dict = {}
    for what, (scoped, cols) in LISTS.items():
        v = ("-V", vh) if scoped else ()
        for fmt in FORMATS:
            # bash prints the "name" column only
            c = cols if fmt != "bash" or "name" in cols else ("name",) + cols
            rows = parse(fmt, ok(port, *v, "-f", fmt, "list", what, *c), c)
            out[what, fmt] = rows if what == "nodes" else ours(rows, tag)
        # the default columns (as typed without any): the columns of our rows
        rows = parse("long", ok(port, *v, "-f", "long", "list", what), None)
        out[what, "default columns"] = sorted({k for r in (rows if what == "nodes" else
                                                            ours(rows, tag)) for k in r})
    for fmt in FORMATS:
        text = ok(port, "-f", fmt, "show", "overview")
        rows = parse(fmt, text, ("rabbitmq_version", "cluster_name", "queue_totals.messages",
                                 "object_totals.queues"))
        out["overview", fmt] = [sorted(r) if isinstance(r, dict) else "word" for r in rows]
    return out


def extras(port: int, vh: str, tag: str) -> dict:
    out: dict = {}
    v = ("-V", vh)
    for i in (3, 1, 2):
        ok(port, *v, "declare", "queue", f"name=fs{i}-{tag}", "durable=false")
    for args in (("-S", "name"), ("-S", "name", "-R"), ("--sort=name", "--sort-reverse")):
        text = ok(port, *v, "-f", "tsv", *args, "list", "queues", "name")
        out["sorted", args] = [n for n in text.split() if n.startswith("fs")]
    # -d/--depth: nested fields as columns (of our queue's row: their names)
    for args in (("-d", "2"), ("--depth=3",)):
        rows = ours(parse("long", ok(port, *v, *args, "-f", "long", "list", "queues"), None),
                    f"fs1-{tag}")
        out["depth", args] = sorted({k for r in rows for k in r})
    node = json.loads(ok(port, "-f", "raw_json", "list", "nodes", "name"))[0]["name"]
    out["node="] = admin(port, *v, "declare", "queue", f"name=fn-{tag}", f"node={node}",
                         "durable=false").returncode
    # publish from standard input; get into a file, base64-encoded
    ok(port, *v, "publish", f"routing_key=fq-{tag}", stdin="from\nstdin \u00e9")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "payload")
        # (rabbitmqadmin 3.10.8 cannot write a base64 payload to a file under Python 3: it
        # calls bytes.encode; so base64 is asked without payload_file)
        out["base64"] = parse("kvp", ok(port, *v, "-f", "kvp", "get", f"queue=fq-{tag}",
                                        "encoding=base64"), None)
        text = ok(port, *v, "-f", "kvp", "get", f"queue=fq-{tag}", f"payload_file={path}",
                  "ackmode=ack_requeue_false")
        with open(path, "rb") as f:
            out["payload_file"] = (parse("kvp", text, None), f.read())
        # a vhost's definitions: export, delete a queue, import, the queue is back
        path = os.path.join(d, "defs.json")
        ok(port, *v, "export", path)
        with open(path) as f:
            defs = json.load(f)
        out["export keys"] = sorted(defs)
        out["exported"] = {k: sorted(json.dumps({x: y for x, y in o.items()
                                                 if x not in ("type",)}, sort_keys=True)
                                     for o in defs[k]) for k in defs if k != "rabbit_version"}
        ok(port, *v, "delete", "queue", f"name=fq-{tag}")
        out["import"] = admin(port, *v, "import", path).returncode
        out["reimported"] = sorted(q["name"] for q in json.loads(
            ok(port, *v, "-f", "raw_json", "list", "queues", "name")))
        out["import elsewhere"] = admin(port, "-V", f"{vh}-none", "import", path).returncode
        out["export elsewhere"] = admin(port, "-V", f"{vh}-none", "export", path).returncode
    return out


def scenario(port: int, amqp: int, tag: str) -> tuple[dict, dict]:
    vh, conn = _setup(port, amqp, tag)
    try:
        _wait_listed(port, tag)
        found = listings(port, vh, tag)
    finally:
        conn.close()
    try:
        return found, extras(port, vh, tag)
    finally:
        ok(port, "delete", "vhost", f"name={vh}")
        ok(port, "delete", "user", f"name=fmtu-{tag}")
