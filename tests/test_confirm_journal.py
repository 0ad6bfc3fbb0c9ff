"""Publisher confirms of journaled publishes, sent from the journal thread after the fsync.

A raw client sends a whole pipeline of publishes in one write, so that the broker handles them
as one batch (one journal barrier): these are the shapes where the journal thread's fast path
(``ConfirmTracker.synced``) and the worker's own hand-over must agree.
"""

from __future__ import annotations

import struct

from amqp_raw import FRAME_METHOD, RawClient, connect

from syncmq.wire import _spec
from syncmq.wire.frames import encode_content, encode_frame

PERSISTENT = struct.pack(">HB", 0x1000, 2)  # flags: delivery-mode present; delivery-mode 2
TRANSIENT = struct.pack(">HB", 0x1000, 1)


def _publishes(channel: int, queue: str, modes: list[bytes]) -> bytes:
    """Every publish of ``modes`` (one properties blob each) as one run of octets."""
    out = []
    for i, props in enumerate(modes):
        out.append(encode_frame(FRAME_METHOD, channel,
                                _spec.Basic.Publish(exchange="", routing_key=queue).encode()))
        out.extend(bytes(c) for c in encode_content(channel, 60, props, b"m%d" % i, 4096))
    return b"".join(out)


def _open_confirm_channel(c: RawClient, channel: int, queue: str | None = None) -> None:
    c.send_method(channel, _spec.Channel.Open())
    c.expect_method(channel, _spec.Channel.OpenOk)
    if queue is not None:
        c.send_method(channel, _spec.Queue.Declare(queue=queue, durable=True))
        c.expect_method(channel, _spec.Queue.DeclareOk)
    c.send_method(channel, _spec.Confirm.Select())
    c.expect_method(channel, _spec.Confirm.SelectOk)


def _confirmed_tags(c: RawClient, channel: int, n: int) -> list[int]:
    """Read basic.acks on ``channel`` until tag ``n`` is covered; every tag 1..n once each,
    in order (checked), returned as the list of covered tags."""
    covered: list[int] = []
    last = 0
    while last < n:
        f = c.read_method()
        m = f.method
        assert f.channel == channel and isinstance(m, _spec.Basic.Ack), f
        assert m.delivery_tag > last, (m, last)
        if m.multiple:
            covered.extend(range(last + 1, m.delivery_tag + 1))
        else:
            assert m.delivery_tag == last + 1, (m, last)
            covered.append(m.delivery_tag)
        last = m.delivery_tag
    return covered


def test_trailing_transient_publishes_are_confirmed(broker, unique):
    """Persistent publishes then transient ones in one batch: the barrier covers the
    persistent ones, and the transient ones after them must not wait for another publish."""
    with connect(broker.port) as c:
        _open_confirm_channel(c, 1, unique)
        modes = [PERSISTENT] * 40 + [TRANSIENT] * 5
        c.send(_publishes(1, unique, modes))
        assert _confirmed_tags(c, 1, len(modes)) == list(range(1, len(modes) + 1))


def test_interleaved_persistent_and_transient_publishes(broker, unique):
    """Alternating persistent/transient publishes over several pipelined writes: every tag
    confirmed exactly once, in order, whatever the batches the broker cut."""
    with connect(broker.port) as c:
        _open_confirm_channel(c, 1, unique)
        modes = [PERSISTENT if (i // 3) % 2 == 0 else TRANSIENT for i in range(300)]
        for i in range(0, len(modes), 50):
            c.send(_publishes(1, unique, modes[i:i + 50]))
        assert _confirmed_tags(c, 1, len(modes)) == list(range(1, len(modes) + 1))


def test_no_confirm_after_channel_close_ok(broker, unique):
    """Persistent publishes immediately followed by channel.close: any confirm for them comes
    before close-ok, never after it (the journal thread checks the channel under its lock)."""
    with connect(broker.port) as c:
        _open_confirm_channel(c, 1, unique)
        c.send(_publishes(1, unique, [PERSISTENT] * 60)
               + encode_frame(FRAME_METHOD, 1, _spec.Channel.Close(
                   reply_code=200, reply_text="bye", class_id=0, method_id=0).encode()))
        while True:
            f = c.read_method()
            assert f.channel == 1, f
            if isinstance(f.method, _spec.Channel.CloseOk):
                break
            assert isinstance(f.method, _spec.Basic.Ack), f
        # A confirmed persistent publish on another channel: its confirm comes from a later
        # journal barrier, so a stray confirm for channel 1 would have been written before it.
        _open_confirm_channel(c, 2)
        c.send(_publishes(2, unique, [PERSISTENT]))
        f = c.read_method()
        assert f.channel == 2 and isinstance(f.method, _spec.Basic.Ack), f
    with connect(broker.port) as c:
        c.send_method(1, _spec.Channel.Open())
        c.expect_method(1, _spec.Channel.OpenOk)
        c.send_method(1, _spec.Queue.Declare(queue=unique, durable=True, passive=True))
        ok = c.expect_method(1, _spec.Queue.DeclareOk)
        assert ok.message_count == 61


def test_commit_ok_keeps_its_place_among_the_channels_replies(broker, unique):
    """tx.commit of a persistent publish waits for the fsync; a method pipelined behind it on
    the same channel must not be answered first (replies keep the order of the requests).
    The commit-ok used to be sent from a later task while the next methods of the batch were
    answered at once: here queue.declare-ok arrived before tx.commit-ok."""
    with connect(broker.port) as c:
        c.open_channel(1)
        c.send_method(1, _spec.Queue.Declare(queue=unique, durable=True))
        c.expect_method(1, _spec.Queue.DeclareOk)
        c.send_method(1, _spec.Tx.Select())
        c.expect_method(1, _spec.Tx.SelectOk)
        c.send(_publishes(1, unique, [PERSISTENT])
               + encode_frame(FRAME_METHOD, 1, _spec.Tx.Commit().encode())
               + encode_frame(FRAME_METHOD, 1, _spec.Queue.Declare(
                   queue=unique + "-t", exclusive=True).encode())
               + encode_frame(FRAME_METHOD, 1, _spec.Tx.Commit().encode()))
        got = [type(c.read_method().method) for _ in range(3)]
        assert got == [_spec.Tx.CommitOk, _spec.Queue.DeclareOk, _spec.Tx.CommitOk], got
        c.send_method(1, _spec.Queue.Declare(queue=unique, passive=True))
        assert c.expect_method(1, _spec.Queue.DeclareOk).message_count == 1
