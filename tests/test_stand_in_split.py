"""A read handled by the reactor standing in for the idle worker, split by a hand-over
(``methods.hand_over``) in the middle of a run of publishes: the part before it is applied
once on the reactor, the rest once on the worker, in order; the confirm channel's numbering
runs on across the split (review1)."""

from __future__ import annotations

import threading

from amqp_raw import connect
from fake_transport import content_frames, method_frame

from syncmq import Server
from syncmq.methods import basic
from syncmq.wire import _spec

B = _spec.Basic
Q = _spec.Queue
Cf = _spec.Confirm


def _pub(rk: str, body: bytes) -> bytes:
    return method_frame(1, B.Publish(routing_key=rk)) + content_frames(1, body, b"\x00\x00")


def _idle(server: Server) -> None:
    done = threading.Event()
    for _ in range(10000):
        if server.node.pool.idle():
            return
        done.wait(0.001)
    raise AssertionError("the workers stay busy")


def test_a_run_split_by_a_hand_over_is_applied_once_in_order(monkeypatch):
    seen: list[str] = []
    real = basic.broker_publish

    def probe(*args, **kwargs):
        seen.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(basic, "broker_publish", probe)
    with Server() as server, connect(server.port) as c:
        c.open_channel(1)
        c.send_method(1, Cf.Select())
        c.expect_method(1, Cf.SelectOk)
        c.send_method(1, Q.Declare(queue="plain"))
        c.expect_method(1, Q.DeclareOk)
        c.send_method(1, Q.Declare(queue="full", arguments={
            "x-max-length": 0, "x-overflow": "reject-publish"}))
        c.expect_method(1, Q.DeclareOk)
        last = 0  # the highest sequence number confirmed so far
        for _attempt in range(20):  # until the read did run on the reactor first
            del seen[:]
            _idle(server)
            c.send(_pub("plain", b"a") + _pub("plain", b"b") + _pub("plain", b"c")
                   + _pub("full", b"x") + _pub("full", b"y")
                   + _pub("plain", b"d") + _pub("plain", b"e"))
            acked: dict[int, str] = {}
            while len(acked) < 7:
                f = c.read_method()
                assert f.channel == 1 and isinstance(f.method, (B.Ack, B.Nack)), f
                kind = "ack" if isinstance(f.method, B.Ack) else "nack"
                tag = f.method.delivery_tag
                assert tag > last, (tag, last)
                for t in range(last + 1 if f.method.multiple else tag, tag + 1):
                    acked[t] = kind
                last = tag
            assert sorted(acked) == list(range(last - 6, last + 1)), acked
            assert [acked[last - 7 + i] for i in range(1, 8)] == \
                ["ack"] * 3 + ["nack"] * 2 + ["ack"] * 2, acked
            assert len(seen) == 7
            if seen[0] == "syncmq-reactor":
                break
        else:
            raise AssertionError(f"never ran on the reactor: {seen}")
        assert seen[:3] == ["syncmq-reactor"] * 3
        assert all(t.startswith("syncmq-worker") for t in seen[3:]), seen
        got = []
        while True:
            c.send_method(1, B.Get(queue="plain", no_ack=True))
            f = c.read_method()
            if isinstance(f.method, B.GetEmpty):
                break
            c.read_frame()
            got.append(c.read_frame().payload)
        assert got[-5:] == [b"a", b"b", b"c", b"d", b"e"] and len(got) % 5 == 0


def _get_all(c, queue: str) -> list[bytes]:
    got = []
    while True:
        c.send_method(1, B.Get(queue=queue, no_ack=True))
        f = c.read_method()
        if isinstance(f.method, B.GetEmpty):
            return got
        h = c.read_frame()
        size = int.from_bytes(h.payload[4:12], "big")
        body = b""
        while len(body) < size:
            body += c.read_frame().payload
        got.append(body)


def test_mixed_small_reads_with_heartbeats_empty_bodies_and_two_channels():
    """Small reads (the reactor's, when the workers are idle) cut anywhere, of publishes on
    two channels with heartbeats between frames and empty bodies: each queue gets its
    messages once, in order."""
    hb = b"\x08\x00\x00\x00\x00\x00\x00\xce"

    def pub(ch: int, rk: str, body: bytes) -> bytes:
        return method_frame(ch, B.Publish(routing_key=rk)) + content_frames(ch, body, b"\x00\x00")

    stream = b"".join(
        pub(1, "q1", b"a%d" % i) + hb + pub(2, "q2", b"") + pub(1, "q1", b"") + hb
        + pub(2, "q2", b"b%d" % i) for i in range(6))
    with Server() as server, connect(server.port) as c:
        c.open_channel(1)
        c.open_channel(2)
        for q in ("q1", "q2"):
            c.send_method(1, Q.Declare(queue=q))
            c.expect_method(1, Q.DeclareOk)
        for cut in (1, 7, 13, 50, 97, len(stream)):
            for i in range(0, len(stream), cut):
                _idle(server)
                c.send(stream[i:i + cut])
            want = [x for i in range(6) for x in (b"a%d" % i, b"")]
            assert _get_all(c, "q1") == want
            assert _get_all(c, "q2") == [x for i in range(6) for x in (b"", b"b%d" % i)]


def test_a_channel_error_on_the_reactor_closes_the_channel_on_the_worker(monkeypatch):
    """An ack of an unknown tag is a light frame (``reading._light``) but its 406 closes the
    channel, which requeues every unacked message of it (and may delete an auto-delete
    queue): O(unacked), the worker's, not the reactor's (review1)."""
    from syncmq.methods import channel_state

    where: list[str] = []
    real = channel_state.Channel.release

    def probe(self):
        where.append(threading.current_thread().name)
        return real(self)

    monkeypatch.setattr(channel_state.Channel, "release", probe)
    with Server() as server, connect(server.port) as c:
        c.open_channel(1)
        c.send_method(1, Q.Declare(queue="q"))
        c.expect_method(1, Q.DeclareOk)
        c.send(b"".join(_pub("q", b"m%d" % i) for i in range(20)))
        c.send_method(1, B.Consume(queue="q", consumer_tag="c"))
        c.expect_method(1, B.ConsumeOk)
        for _ in range(20):
            assert isinstance(c.read_method().method, B.Deliver)
            c.read_frame()
            c.read_frame()
        _idle(server)
        c.send_method(1, B.Ack(delivery_tag=999))
        f = c.read_method()
        assert isinstance(f.method, _spec.Channel.Close) and f.method.reply_code == 406
        c.send_method(1, _spec.Channel.CloseOk())
        assert where and all(t.startswith("syncmq-worker") for t in where), where
        c.send_method(1, _spec.Channel.Open())
        c.expect_method(1, _spec.Channel.OpenOk)
        c.send_method(1, Q.Declare(queue="q", passive=True))
        assert c.expect_method(1, Q.DeclareOk).message_count == 20
