"""Helpers of the Prometheus tests (tests/test_prometheus.py and the differential one in
tests/interop): a scrape, its samples, and a workload run the same way on both brokers."""

from __future__ import annotations

import base64
import contextlib
import urllib.request

import pika
import pika.exceptions
import pytest
from amqp_helpers import connect
from prometheus_client.parser import text_string_to_metric_families

TIMEOUT = 20
AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}


def scrape(port: int, path: str = "/metrics", auth: bool = False) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=AUTH if auth else {})
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return resp.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of a scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


PROTO = (("protocol", "amqp091"),)
PROTO_QT = (("protocol", "amqp091"), ("queue_type", "rabbit_classic_queue"))


def workload(port: int) -> contextlib.ExitStack:
    """A publisher (confirm mode, 6 messages, one unroutable mandatory and one unroutable
    plain publish), basic.gets (one manual-ack acked, one auto-ack, one empty), a consumer
    (manual ack, prefetch 2: 2 delivered, 1 acked, so the third follows), an auto-ack
    consumer on another queue.
    Returns the stack that holds the connections open."""
    stack = contextlib.ExitStack()
    conn = stack.enter_context(contextlib.closing(connect(port)))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("pw-q")
    ch.queue_declare("pw-auto")
    ch.queue_declare("pw-empty")
    for i in range(6):
        ch.basic_publish("", "pw-q" if i < 5 else "pw-auto", b"m%d" % i)
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("amq.direct", "nowhere", b"x", mandatory=True)
    ch.basic_publish("amq.direct", "nowhere", b"x")  # dropped (not mandatory)
    method, _, _ = ch.basic_get("pw-q")
    ch.basic_ack(method.delivery_tag)
    assert ch.basic_get("pw-q", auto_ack=True)[0] is not None
    assert ch.basic_get("pw-empty")[0] is None
    c2 = stack.enter_context(contextlib.closing(connect(port)))
    cc = c2.channel()
    cc.basic_qos(prefetch_count=2)
    got = []
    cc.basic_consume("pw-q", lambda c, m, p, b: got.append(m.delivery_tag))
    auto = []
    cc.basic_consume("pw-auto", lambda c, m, p, b: auto.append(m), auto_ack=True)
    while len(got) < 2 or not auto:
        c2.process_data_events(0.1)
    cc.basic_ack(got[0])
    while len(got) < 3:  # the ack freed credit for the last one
        c2.process_data_events(0.1)
    return stack




# What dead_letter_workload makes, by (family, queue_type, dead_letter_strategy)
DEAD_LETTERS = {
    ("expired", "rabbit_classic_queue", "at_most_once"): 2,
    ("maxlen", "rabbit_classic_queue", "at_most_once"): 3,  # 2 drop-head, 1 reject-publish-dlx
    ("rejected", "rabbit_classic_queue", "at_most_once"): 2,  # a reject and a nack
    ("expired", "rabbit_classic_queue", "disabled"): 2,  # one without a DLX, one missing DLX
    ("maxlen", "rabbit_classic_queue", "disabled"): 1,
    ("rejected", "rabbit_classic_queue", "disabled"): 1,
    ("rejected", "rabbit_quorum_queue", "at_most_once"): 1,
}
DEAD_LETTERED_TO_DLQ = 8  # the at_most_once ones


def dead_lettered(text: str) -> dict[tuple[str, str, str], float]:
    """``{(reason, queue_type, strategy): value}`` of the dead-letter families of a scrape."""
    out = {}
    prefix = "rabbitmq_global_messages_dead_lettered_"
    for f in text_string_to_metric_families(text):
        if f.name.startswith(prefix):
            for s in f.samples:
                out[(f.name[len(prefix):], s.labels["queue_type"],
                     s.labels["dead_letter_strategy"])] = s.value
    return out


def dead_letter_workload(port: int, prefix: str) -> None:
    """Dead letters of each reason, with a dead-letter exchange (republished: at_most_once)
    and without one or with a missing one (dropped: disabled), as :data:`DEAD_LETTERS`
    counts them; a reject-publish refusal is no dead letter. Returns once the republished
    ones reached the dead-letter queue and every rejection was handled."""
    with contextlib.closing(connect(port)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        dlx, dlq = f"{prefix}-dlx", f"{prefix}-dlq"
        ch.exchange_declare(dlx, "fanout")
        ch.queue_declare(dlq)
        ch.queue_bind(dlq, dlx)
        with_dlx = {"x-dead-letter-exchange": dlx}

        def queue(name: str, n: int, **args) -> str:
            q = f"{prefix}-{name}"
            ch.queue_declare(q, durable=args.get("x-queue-type") == "quorum", arguments=args)
            for i in range(n):
                try:
                    ch.basic_publish("", q, b"m%d" % i)
                except pika.exceptions.NackError:
                    pass  # refused by reject-publish(-dlx)
            return q

        queue("ttl", 2, **{"x-message-ttl": 0}, **with_dlx)
        queue("drop", 3, **{"x-max-length": 1}, **with_dlx)
        queue("rpd", 2, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"}, **with_dlx)
        queue("rp", 2, **{"x-max-length": 1, "x-overflow": "reject-publish"}, **with_dlx)
        queue("ttl-nodlx", 1, **{"x-message-ttl": 0})
        queue("ttl-missing", 1, **{"x-message-ttl": 0,
                                   "x-dead-letter-exchange": f"{prefix}-missing"})
        queue("drop-nodlx", 2, **{"x-max-length": 1})

        def reject(q: str, nack: bool = False) -> None:
            method, _, _ = ch.basic_get(q)
            if nack:
                ch.basic_nack(method.delivery_tag, requeue=False)
            else:
                ch.basic_reject(method.delivery_tag, requeue=False)

        rej = queue("rej", 2, **with_dlx)
        reject(rej)
        reject(rej, nack=True)
        rej_nodlx = queue("rej-nodlx", 1)
        reject(rej_nodlx)
        qq = queue("qq", 1, **{"x-queue-type": "quorum"}, **with_dlx)
        reject(qq)
        for q in (rej, rej_nodlx, qq):  # a synchronous call after the rejections
            ch.queue_declare(q, passive=True)
        got = 0
        for _m, _p, _b in ch.consume(dlq, auto_ack=True, inactivity_timeout=TIMEOUT):
            assert _m is not None, f"{got} of {DEAD_LETTERED_TO_DLQ} dead letters arrived"
            got += 1
            if got == DEAD_LETTERED_TO_DLQ:
                break
        ch.cancel()
