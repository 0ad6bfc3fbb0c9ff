"""syncmq as the upstream of RabbitMQ's federation plugin (issue #20): the private RabbitMQ
node (federation plugin enabled at boot, see conftest.py) federates an exchange and a queue
from syncmq, with syncmq running nothing of its own.

What the plugin does on its upstream (rabbit_federation_exchange_link and
rabbit_federation_queue_link, 3.10) is listed in ``syncmq/broker/federation.py``; the tests
here check each piece that shows: the ``x-federation-upstream`` exchange it declares (and its
routing, differential against RabbitMQ with the plugin), its queue, the exchange-to-exchange
bindings it keeps in step with the downstream's, its consumer at priority -1 on a federated
queue, and that every message arrives once, in order, acked upstream only after the
downstream confirmed it.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pika
import pika.exceptions
import pytest
from amqp_helpers import connection
from brokerproc import BrokerProcess
from interop_helpers import api, free_port, wait_for
from pika.compat import long

XFU = "x-federation-upstream"
N = 300  # messages per flow: enough for several prefetch windows and confirm batches


# --------------------------------------------------------------------------------------------
# the x-federation-upstream exchange type, against RabbitMQ's


def _declare(port: int, name: str, args, **kw) -> object:
    with connection(port) as c:
        ch = c.channel()
        try:
            ch.exchange_declare(name, XFU, arguments=args, **kw)
            return "ok"
        except pika.exceptions.ChannelClosedByBroker as e:
            return e.reply_code, e.reply_text.replace(name, "NAME")


# (headers of the message, published to an exchange with x-max-hops 2, x-downstream-name
# "down" and x-downstream-vhost "/")
ROUTED = [
    None,
    {"x-received-from": "not an array"},
    {"x-received-from": []},
    {"x-received-from": [{"cluster-name": "other", "vhost": "/"}]},
    {"x-received-from": [{"cluster-name": "down", "vhost": "/"}]},  # seen: dropped
    {"x-received-from": [{"cluster-name": "down", "vhost": "v2"}]},
    {"x-received-from": [{"cluster-name": "down"}]},
    {"x-received-from": [{}, {}]},  # 2 hops already: dropped
    {"x-received-from": ["down"]},
    {"x-received-from": [{"cluster-name": "down", "vhost": "/"}], "CC": ["k1", "k2"]},
    {"CC": ["k1", "k2"]},  # the type ignores keys: routed once
]


def xfu_transcript(port: int, name: str) -> list:
    out = [
        _declare(port, name, None),
        _declare(port, name, {"x-max-hops": "1"}),
        _declare(port, name, {"x-max-hops": True}),
        _declare(port, name, {"x-max-hops": long(2), "x-downstream-name": "down",
                              "x-downstream-vhost": "/", "alternate-exchange": "ae"}),
        # equivalence compares x-max-hops only (not alternate-exchange, not the names)
        _declare(port, name, {"x-max-hops": long(2), "x-downstream-name": "other"}),
        _declare(port, name, {"x-max-hops": long(3)}),
        _declare(port, name, {}),
        _declare(port, name, {"x-max-hops": long(2)}, durable=True),
    ]
    with connection(port) as c:
        ch = c.channel()
        ch.exchange_declare(name, passive=True)  # passive: the type is not looked at
        q = ch.queue_declare(name + "-q", exclusive=True).method.queue
        ch.queue_bind(q, name, "k")
        ch.exchange_declare(name + "-n", XFU, arguments={"x-max-hops": long(2)})
        ch.queue_bind(q, name + "-n", "")
        ch.confirm_delivery()
        for i, headers in enumerate(ROUTED):
            ch.basic_publish(name, "k", str(i).encode(),
                             pika.BasicProperties(headers=headers))
        # without x-downstream-name/vhost nothing is "seen", only the hop count drops
        for i, headers in enumerate(ROUTED[3:9]):
            ch.basic_publish(name + "-n", "", f"n-{i}".encode(),
                             pika.BasicProperties(headers=headers))
        got = []
        while (m := ch.basic_get(q, auto_ack=True))[0] is not None:
            got.append(m[2].decode())
        out.append(got)
        out.append([ch.exchange_delete(n) and "deleted" for n in (name, name + "-n")])
    return out


def test_x_federation_upstream_same_as_rabbitmq(rabbitmq, broker, unique):
    """Declaring the type (its arguments, their checks and texts, equivalence) and its
    routing (x-max-hops, the downstream's cluster-name and vhost in x-received-from) are
    RabbitMQ's, the federation plugin's exchange type being the reference."""
    theirs = xfu_transcript(rabbitmq.port, unique)
    ours = xfu_transcript(broker.port, unique)
    assert ours == theirs
    # what the transcript says, so that a change on both sides is seen too
    assert theirs[0] == (406, "PRECONDITION_FAILED - Argument x-max-hops missing")
    assert theirs[1] == (406, "PRECONDITION_FAILED - Argument x-max-hops must be of type long")
    assert theirs[8] == ["0", "1", "2", "3", "5", "6", "8", "10", "n-0", "n-1", "n-2", "n-3",
                         "n-5"]


def test_x_federation_upstream_listed_and_imported(broker, unique):
    """/api/overview lists the type as RabbitMQ with the plugin does; definitions holding
    one import (checked as a declare would be) and export back."""
    mport = broker.management_port
    _, ov = api(mport, "GET", "/overview")
    assert {"name": XFU, "description": "Federation upstream helper exchange",
            "internal_purpose": "federation", "enabled": True} in ov["exchange_types"]
    ex = {"name": unique, "vhost": "/", "type": XFU, "durable": True, "auto_delete": False,
          "internal": True, "arguments": {"x-max-hops": 1}}
    bad = dict(ex, arguments={})
    status, body = api(mport, "POST", "/definitions", {"exchanges": [bad]})
    assert status == 400 and "x-max-hops missing" in body["reason"], body
    assert api(mport, "POST", "/definitions", {"exchanges": [ex]})[0] in (200, 201, 204)
    _, got = api(mport, "GET", f"/exchanges/%2F/{quote(unique, safe='')}")
    assert (got["type"], got["arguments"]) == (XFU, {"x-max-hops": 1})
    assert api(mport, "DELETE", f"/exchanges/%2F/{quote(unique, safe='')}")[0] == 204


# --------------------------------------------------------------------------------------------
# RabbitMQ federating from syncmq


def _q(name: str) -> str:
    return quote(name, safe="")


@pytest.fixture
def upstream(rabbitmq, broker, unique):
    """A federation upstream on the RabbitMQ node pointing at syncmq, and a way to apply it
    by policy; both removed afterwards (the links stop, RabbitMQ cleans up upstream)."""
    mport = rabbitmq.management_port
    value = {"uri": f"amqp://guest:guest@127.0.0.1:{broker.port}", "ack-mode": "on-confirm",
             "expires": 600000, "prefetch-count": 50}
    status, body = api(mport, "PUT", f"/parameters/federation-upstream/%2F/{_q(unique)}",
                       {"value": value})
    assert status in (201, 204), body
    policies = []

    def apply(pattern: str, apply_to: str) -> None:
        name = f"{unique}-{apply_to}"
        status, body = api(mport, "PUT", f"/policies/%2F/{_q(name)}",
                           {"pattern": pattern, "apply-to": apply_to,
                            "definition": {"federation-upstream": unique}})
        assert status in (201, 204), body
        policies.append(name)

    def remove() -> None:
        while policies:
            api(mport, "DELETE", f"/policies/%2F/{_q(policies.pop())}")

    apply.remove = remove
    yield apply
    remove()
    api(mport, "DELETE", f"/parameters/federation-upstream/%2F/{_q(unique)}")


def _link_running(rabbitmq, upstream_name: str, kind: str) -> dict | None:
    _, links = api(rabbitmq.management_port, "GET", "/federation-links")
    for link in links or []:
        if link.get("upstream") == upstream_name and link.get("type") == kind:
            assert link["status"] in ("starting", "running"), link
            if link["status"] == "running":
                return link
    return None


def _source_bindings(broker, exchange: str) -> list[dict]:
    _, got = api(broker.management_port, "GET", f"/exchanges/%2F/{_q(exchange)}/bindings/source")
    return got or []


def _drain(conn, ch, queue: str, n: int, timeout: float = 60.0) -> list:
    """Consume ``n`` messages from ``queue`` (manual acks); returns (method, props, body)s."""
    got = []

    def on(c, m, p, b):
        got.append((m, p, b))
        c.basic_ack(m.delivery_tag)

    tag = ch.basic_consume(queue, on)
    wait_for(lambda: conn.process_data_events(0.1) or len(got) >= n, timeout,
             f"{n} messages on {queue} (got {len(got)})", interval=0)
    ch.basic_cancel(tag)
    return got


def test_rabbitmq_federates_an_exchange_from_syncmq(rabbitmq, broker, upstream, unique):
    """Exchange federation with syncmq upstream: the link's queue, its x-federation-upstream
    exchange (not the plugin's fanout fallback) and a binding per downstream binding key
    appear on syncmq; every message published on syncmq that a downstream binding matches
    arrives once and in order; a binding added downstream later propagates; a message whose
    x-received-from names the downstream is dropped on syncmq."""
    x = f"{unique}.x"
    _, cluster = api(rabbitmq.management_port, "GET", "/cluster-name")
    with connection(broker.port) as sc, connection(rabbitmq.port) as rc:
        sch, rch = sc.channel(), rc.channel()
        sch.exchange_declare(x, "topic", durable=True)
        rch.exchange_declare(x, "topic", durable=True)
        rq = rch.queue_declare(f"{unique}-a", durable=True).method.queue
        rch.queue_bind(rq, x, "a.#")
        upstream(f"^{x}$", "exchanges")
        wait_for(lambda: _link_running(rabbitmq, unique, "exchange"), what="link running")
        wait_for(lambda: any(b["routing_key"] == "a.#" for b in _source_bindings(broker, x)),
                 what="the downstream binding on syncmq")

        [binding] = _source_bindings(broker, x)
        fq = f"federation: {x} -> {cluster['name']}"
        _, internal = api(broker.management_port, "GET", f"/exchanges/%2F/{_q(binding['destination'])}")
        assert internal["type"] == XFU and internal["internal"] and internal["auto_delete"]
        assert internal["arguments"]["x-max-hops"] == 1
        assert internal["arguments"]["x-downstream-name"] == cluster["name"]
        status, queue = api(broker.management_port, "GET", f"/queues/%2F/{_q(fq)}")
        assert status == 200 and queue["durable"], queue
        assert queue["arguments"]["x-expires"] == 600000
        assert not [line for line in broker.lines if "unknown exchange type" in line]

        sch.confirm_delivery()
        persistent = pika.BasicProperties(delivery_mode=2)
        for i in range(N):
            sch.basic_publish(x, f"a.{i}", f"a{i}".encode(), persistent)
            if i % 3 == 0:
                sch.basic_publish(x, f"b.{i}", f"b{i}".encode(), persistent)
        got = _drain(rc, rch, rq, N)
        assert [b.decode() for _, _, b in got] == [f"a{i}" for i in range(N)]
        assert [m.routing_key for m, _, _ in got] == [f"a.{i}" for i in range(N)]
        hop = got[0][1].headers["x-received-from"][0]
        assert (hop["exchange"], hop["vhost"], hop["redelivered"]) == (x, "/", False)

        # a binding added downstream reaches syncmq; what it matches now arrives
        rq2 = rch.queue_declare(f"{unique}-b", durable=True).method.queue
        rch.queue_bind(rq2, x, "b.#")
        wait_for(lambda: {b["routing_key"] for b in _source_bindings(broker, x)} ==
                 {"a.#", "b.#"}, what="the new binding on syncmq")
        seen = [{"cluster-name": cluster["name"], "vhost": "/"}]
        sch.basic_publish(x, "b.seen", b"seen", pika.BasicProperties(
            delivery_mode=2, headers={"x-received-from": seen}))
        sch.basic_publish(x, "b.new", b"new", persistent)
        assert [b for _, _, b in _drain(rc, rch, rq2, 1)] == [b"new"]
        # the dropped one never reached the link's queue: it only holds what it forwards
        _, queue = api(broker.management_port, "GET", f"/queues/%2F/{_q(fq)}")
        assert queue["message_stats"]["publish"] == N + 1, queue

        # the policy removed, the link stops cleanly and deletes what it made on syncmq
        upstream.remove()
        wait_for(lambda: api(broker.management_port, "GET", f"/queues/%2F/{_q(fq)}")[0] == 404
                 and not _source_bindings(broker, x), what="the link's queue and bindings gone")
        rch.queue_delete(rq)
        rch.queue_delete(rq2)
        rch.exchange_delete(x)
        sch.exchange_delete(x)


def test_rabbitmq_federates_a_queue_from_syncmq(rabbitmq, broker, upstream, unique):
    """Queue federation with syncmq upstream: the link consumes syncmq's queue at priority
    -1 (so syncmq's own consumers come first), a RabbitMQ consumer receives syncmq's backlog
    once and in order, and syncmq's queue empties (acked after RabbitMQ confirmed)."""
    q = f"{unique}.q"
    mport = broker.management_port
    with connection(broker.port) as sc, connection(rabbitmq.port) as rc:
        sch, rch = sc.channel(), rc.channel()
        sch.queue_declare(q, durable=True)
        sch.confirm_delivery()
        for i in range(N):
            sch.basic_publish("", q, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
        rch.queue_declare(q, durable=True)
        upstream(f"^{q}$", "queues")
        rch.basic_qos(prefetch_count=100)
        got = []
        rch.basic_consume(q, lambda c, m, p, b: (got.append(("rabbit", b)),
                                                 c.basic_ack(m.delivery_tag)))
        wait_for(lambda: rc.process_data_events(0.1) or len(got) >= N, what=f"{N} messages",
                 interval=0)
        assert got == [("rabbit", f"m{i}".encode()) for i in range(N)]
        wait_for(lambda: api(mport, "GET", f"/queues/%2F/{_q(q)}")[1]["messages"] == 0,
                 what="syncmq's queue emptied by the link's acks")
        _, queue = api(mport, "GET", f"/queues/%2F/{_q(q)}")
        [link] = [c for c in queue["consumer_details"]
                  if c["consumer_tag"] == f"federation-link-{unique}"]
        assert link["arguments"] == {"x-priority": -1}, link

        # A local consumer with room takes everything: the link (priority -1) gets nothing
        # while it has credit, although RabbitMQ's consumer is still waiting.
        got.clear()
        sch.basic_qos(prefetch_count=500)
        sch.basic_consume(q, lambda c, m, p, b: (got.append(("syncmq", b)),
                                                 c.basic_ack(m.delivery_tag)))
        for i in range(100):
            sch.basic_publish("", q, f"l{i}".encode(), pika.BasicProperties(delivery_mode=2))
        wait_for(lambda: sc.process_data_events(0.05) or rc.process_data_events(0.05) or
                 len(got) >= 100, what="100 deliveries", interval=0)
        assert got == [("syncmq", f"l{i}".encode()) for i in range(100)]
        rch.queue_delete(q)
        sch.queue_delete(q)


def test_exchange_federation_survives_kill_9_of_syncmq(rabbitmq, tmp_path, unique):
    """Edge to core with federation: syncmq is killed (-9) right after confirming messages
    to its publisher, then restarted on its data dir on another port, where the link cannot
    reach it, and given more messages: the link's durable queue, its x-federation-upstream
    exchange and their bindings came back and store them. Restarted on its own port, the
    link reconnects and every message arrives; one forwarded twice is flagged
    ``redelivered`` in its x-received-from (the plugin copies syncmq's flag there)."""
    port, data = free_port(), str(tmp_path / "syncmq")
    edge = BrokerProcess(data, "--port", str(port)).start()
    mport = rabbitmq.management_port
    x = f"{unique}.x"
    assert api(mport, "PUT", f"/parameters/federation-upstream/%2F/{_q(unique)}",
               {"value": {"uri": f"amqp://guest:guest@127.0.0.1:{port}",
                          "ack-mode": "on-confirm", "reconnect-delay": 1}})[0] in (201, 204)
    try:
        with connection(rabbitmq.port) as rc:
            rch = rc.channel()
            rch.exchange_declare(x, "fanout", durable=True)
            rq = rch.queue_declare(f"{unique}-q", durable=True).method.queue
            rch.queue_bind(rq, x)
            assert api(mport, "PUT", f"/policies/%2F/{_q(unique)}",
                       {"pattern": f"^{x}$", "apply-to": "exchanges",
                        "definition": {"federation-upstream": unique}})[0] in (201, 204)
            wait_for(lambda: _link_running(rabbitmq, unique, "exchange"), what="link running")
            wait_for(lambda: _source_bindings(edge, x), what="the binding on syncmq")

            persistent = pika.BasicProperties(delivery_mode=2)
            with connection(port) as sc:
                sch = sc.channel()
                sch.confirm_delivery()
                for i in range(N):
                    sch.basic_publish(x, "", f"m{i}".encode(), persistent)
                edge.kill()  # right after the last confirm: some are still on syncmq
            edge = BrokerProcess(data, "--port", str(free_port())).start()
            with connection(edge.port) as sc:  # the link cannot reach it: they wait
                sch = sc.channel()
                sch.confirm_delivery()
                for i in range(N, N + 100):
                    sch.basic_publish(x, "", f"m{i}".encode(), persistent)
            [fq] = [q for q in api(edge.management_port, "GET", "/queues/%2F")[1]
                    if q["name"].startswith(f"federation: {x} -> ")]
            assert fq["messages"] >= 100 and fq["durable"], fq
            assert edge.stop() == 0
            edge = BrokerProcess(data, "--port", str(port)).start()
            got = _drain(rc, rch, rq, N + 100, timeout=120)
            while (m := rch.basic_get(rq, auto_ack=True))[0] is not None:
                got.append(m)  # duplicates that came after the count was reached
        bodies = [b.decode() for _, _, b in got]
        assert set(bodies) == {f"m{i}" for i in range(N + 100)}
        once = [b.decode() for _, p, b in got if not p.headers["x-received-from"][0]["redelivered"]]
        assert len(once) == len(set(once))
        with connection(rabbitmq.port) as rc:
            rc.channel().queue_delete(rq)
            rc.channel().exchange_delete(x)
    finally:
        api(mport, "DELETE", f"/policies/%2F/{_q(unique)}")
        api(mport, "DELETE", f"/parameters/federation-upstream/%2F/{_q(unique)}")
        edge.stop()
    assert not edge.tracebacks(), "\n".join(edge.tracebacks())


def _topology(port: int, x: str) -> dict:
    """What a federation link of exchange ``x`` made in vhost / of a broker: its exchanges,
    queues and the bindings from ``x`` and its internal exchange, in comparable form."""
    def mine(name: str) -> bool:
        return name == x or name.startswith(f"federation: {x} -> ")

    _, exchanges = api(port, "GET", "/exchanges/%2F")
    _, queues = api(port, "GET", "/queues/%2F")
    _, bindings = api(port, "GET", "/bindings/%2F")
    return {
        "exchanges": sorted((e["name"], e["type"], e["durable"], e["auto_delete"],
                             e["internal"], sorted(e["arguments"].items()))
                            for e in exchanges if mine(e["name"])),
        "queues": sorted((q["name"], q["durable"], q["auto_delete"],
                          sorted(q["arguments"].items())) for q in queues if mine(q["name"])),
        "bindings": sorted((b["source"], b["destination"], b["destination_type"],
                            b["routing_key"], json.dumps(b["arguments"], sort_keys=True))
                           for b in bindings if mine(b["source"])),
    }


def test_link_topology_same_on_syncmq_as_on_rabbitmq(rabbitmq, broker, unique):
    """One federated exchange, two upstreams: the RabbitMQ node itself (vhost /) and syncmq.
    What the plugin creates on each upstream (the upstream exchange, its x-federation-upstream
    exchange, the link's queue and their arguments, one binding per downstream key with its
    x-bound-from) is the same on syncmq as on RabbitMQ."""
    mport, down, x = rabbitmq.management_port, f"down-{unique}", f"{unique}.x"
    assert api(mport, "PUT", f"/vhosts/{_q(down)}")[0] in (201, 204)
    try:
        assert api(mport, "PUT", f"/permissions/{_q(down)}/guest",
                   {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)
        for name, uri in (("rmq", f"amqp://guest:guest@127.0.0.1:{rabbitmq.port}/%2F"),
                          ("smq", f"amqp://guest:guest@127.0.0.1:{broker.port}/%2F")):
            # (a URI without a vhost means the downstream's vhost to the plugin)
            assert api(mport, "PUT", f"/parameters/federation-upstream/{_q(down)}/{name}",
                       {"value": {"uri": uri, "expires": 600000}})[0] in (201, 204)
        url = f"amqp://guest:guest@127.0.0.1:{rabbitmq.port}/{_q(down)}"
        with pika.BlockingConnection(pika.URLParameters(url)) as dc:
            ch = dc.channel()
            ch.exchange_declare(x, "topic", durable=True)
            q = ch.queue_declare("", exclusive=True).method.queue
            for key in ("a.#", "b.*", "b.*"):
                ch.queue_bind(q, x, key)
            ch.queue_bind(q, x, "c", arguments={"k": "v"})
            assert api(mport, "PUT", f"/policies/{_q(down)}/fed",
                       {"pattern": f"^{x}$", "apply-to": "exchanges",
                        "definition": {"federation-upstream-set": "all"}})[0] in (201, 204)

            def complete(port: int) -> dict | None:
                t = _topology(port, x)
                return t if len(t["bindings"]) == 4 else None  # 3 keys + the queue's

            theirs = wait_for(lambda: complete(mport), what="the links on RabbitMQ")
            ours = wait_for(lambda: complete(broker.management_port), what="links on syncmq")
        assert ours == theirs
        assert {e[1] for e in ours["exchanges"]} == {"topic", XFU}
    finally:
        api(mport, "DELETE", f"/vhosts/{_q(down)}")
        with connection(rabbitmq.port) as c:
            ch = c.channel()
            for name in [e[0] for e in _topology(mport, x)["exchanges"]]:
                ch.exchange_delete(name)
            for name in [q_[0] for q_ in _topology(mport, x)["queues"]]:
                ch.queue_delete(name)


def test_queue_link_same_on_syncmq_as_on_rabbitmq(rabbitmq, broker, unique):
    """One federated queue, two upstreams (the RabbitMQ node itself and syncmq): the queue the
    plugin declares upstream (with the downstream queue's arguments) and its consumer there
    (priority -1, manual acks, the upstream's prefetch) are the same on syncmq as on
    RabbitMQ."""
    mport, down, q = rabbitmq.management_port, f"down-{unique}", f"{unique}.q"
    assert api(mport, "PUT", f"/vhosts/{_q(down)}")[0] in (201, 204)

    def link(port: int):
        status, got = api(port, "GET", f"/queues/%2F/{_q(q)}")
        if status != 200 or len(got.get("consumer_details") or []) != 1:
            return None
        [c] = got["consumer_details"]
        return (got["durable"], got["auto_delete"], sorted(got["arguments"].items()),
                c["consumer_tag"].rsplit("-", 1)[0], c["ack_required"], c["prefetch_count"],
                c["arguments"])

    try:
        assert api(mport, "PUT", f"/permissions/{_q(down)}/guest",
                   {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)
        for name, uri in (("rmq", f"amqp://guest:guest@127.0.0.1:{rabbitmq.port}/%2F"),
                          ("smq", f"amqp://guest:guest@127.0.0.1:{broker.port}/%2F")):
            assert api(mport, "PUT", f"/parameters/federation-upstream/{_q(down)}/{name}",
                       {"value": {"uri": uri, "prefetch-count": 77}})[0] in (201, 204)
        url = f"amqp://guest:guest@127.0.0.1:{rabbitmq.port}/{_q(down)}"
        with pika.BlockingConnection(pika.URLParameters(url)) as dc:
            ch = dc.channel()
            ch.queue_declare(q, durable=True, arguments={"x-max-length": 1000,
                                                         "x-message-ttl": 60000})
            ch.basic_consume(q, lambda *a: None)  # a queue link runs while there is one
            assert api(mport, "PUT", f"/policies/{_q(down)}/fed",
                       {"pattern": f"^{q}$", "apply-to": "queues",
                        "definition": {"federation-upstream-set": "all"}})[0] in (201, 204)
            theirs = wait_for(lambda: link(mport), what="the queue link on RabbitMQ")
            ours = wait_for(lambda: link(broker.management_port), what="the link on syncmq")
        assert ours == theirs
        assert theirs[3:] == ("federation-link", True, 77, {"x-priority": -1})
    finally:
        api(mport, "DELETE", f"/vhosts/{_q(down)}")
        for port in (rabbitmq.port, broker.port):
            with connection(port) as c:
                c.channel().queue_delete(q)
