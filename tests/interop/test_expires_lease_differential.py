"""Which methods renew a queue's ``x-expires`` lease, against RabbitMQ 3.10.8 and syncmq.

RabbitMQ renews it when the queue process is asked for its counts (``stat``: a queue.declare
that is answered, passive or not) or used (basic.get, consumers), not for a passive
``queue.declare`` with no-wait (no declare-ok, no stat; syncmq renewed it). Each scenario
repeats one method every LEASE/8 for three leases on its own raw connection, then a passive
declare tells whether the queue lived: a lease that was not renewed has run out by then (the
queue expires after one lease), one that was renewed never has more than LEASE/8 (plus
scheduling) left unrenewed. A non-passive declare with no-wait is not compared: RabbitMQ
3.10.8 answered "lives" in runs of this file alone and "expired" in a full run of the suite,
so it gives no single reference (syncmq renews on it). Every scenario of both brokers runs at
once (threads): the test lasts about three leases.
"""

from __future__ import annotations

import threading
import time

import amqp_raw as raw

from syncmq.wire import _spec

Q = _spec.Queue
B = _spec.Basic
LEASE_MS = 5000  # long enough that a loaded machine's stall (seconds) never ends a renewed lease
ARGS = {"x-expires": LEASE_MS}

# what each scenario sends, again and again, to the queue ``name``
SCENARIOS = {
    "passive declare": lambda n: Q.Declare(queue=n, passive=True),
    "passive declare no-wait": lambda n: Q.Declare(queue=n, passive=True, no_wait=True),
    "declare": lambda n: Q.Declare(queue=n, arguments=ARGS),
    "basic.get": lambda n: B.Get(queue=n, no_ack=True),
    "purge": lambda n: Q.Purge(queue=n),
}
RABBITMQ_3_10_8 = {  # what the node answered (kept so a change of the reference shows)
    "passive declare": "lives", "passive declare no-wait": "expired", "declare": "lives",
    "basic.get": "lives", "purge": "expired",
}


def _lease(port: int, name: str, method, out: dict, key: str) -> None:
    """Renew with ``method`` for three leases, then ``out[key]``: "lives" or "expired"."""
    try:
        with raw.connect(port) as c:
            c.open_channel(1)
            c.send_method(1, Q.Declare(queue=name, arguments=ARGS))
            c.expect_method(1, Q.DeclareOk)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 3 * LEASE_MS / 1000:
                time.sleep(LEASE_MS / 8000)  # the pace of the renewals, not a wait for an event
                c.send_method(1, method(name))
            # the queue still there: declare-ok then qos-ok; gone (now or during the
            # renewals): the channel's 404 (and the qos dropped)
            c.send_method(1, Q.Declare(queue=name, passive=True))
            c.send_method(1, B.Qos(prefetch_count=1))
            while True:
                m = c.read_method(timeout=30).method
                if isinstance(m, _spec.Channel.Close):
                    out[key] = ("expired", m.reply_code)
                    return
                if isinstance(m, B.QosOk):
                    out[key] = ("lives", None)
                    c.send_method(1, Q.Delete(queue=name))
                    c.expect_method(1, Q.DeleteOk)
                    return
    except Exception as e:  # noqa: BLE001 - reported by the test
        out[key] = ("error", repr(e))


def test_what_renews_an_x_expires_lease_like_rabbitmq(rabbitmq, broker, unique):
    out: dict = {}
    threads = [
        threading.Thread(target=_lease, args=(port, f"{unique}-{i}", method, out, (who, what)))
        for who, port in (("rabbitmq", rabbitmq.port), ("syncmq", broker.port))
        for i, (what, method) in enumerate(SCENARIOS.items())
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rabbit = {what: out["rabbitmq", what] for what in SCENARIOS}
    ours = {what: out["syncmq", what] for what in SCENARIOS}
    print(rabbit, ours)
    assert ours == rabbit
    assert {w: r[0] for w, r in rabbit.items()} == RABBITMQ_3_10_8
