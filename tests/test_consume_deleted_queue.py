"""basic.consume racing a queue.delete (another connection, an auto-delete, an x-expires
timer): the handler looks the queue up, then attaches the consumer. If the queue was deleted
in between, the consumer must not join the dead queue's consumers (where no message ever
reaches it and nothing ever cancels it: the client would wait for good); it is cancelled
instead, as the deletion's pass over the consumers would have done."""

from __future__ import annotations

from syncmq.broker.message import Message
from syncmq.broker.queue import Consumer, Queue


class _Target:
    """The channel side of a consumer (``DeliveryTarget``): records what the queue asks."""

    def __init__(self) -> None:
        self.delivered: list = []
        self.cancelled: list = []

    def deliver(self, consumer, queue, seq, message, redelivered) -> bool:
        self.delivered.append(message)
        return True

    def deliver_many(self, consumer, queue, pairs) -> int:
        self.delivered.extend(m for _s, (m, _r) in pairs)
        return len(pairs)

    def consumer_cancelled(self, consumer) -> None:
        self.cancelled.append(consumer)


def test_a_consumer_attached_after_the_delete_is_cancelled() -> None:
    q = Queue("/", "q", False, None, False, None)
    q.publish(Message("", "q", b"\x00\x00", b"x"))
    q.mark_deleted()  # the other connection's queue.delete, after the consume's lookup
    target = _Target()
    c = Consumer("ctag", q, target, False, False, 0, None)
    assert q.add_consumer(c) is False
    assert q.consumer_count() == 0
    assert target.cancelled == [c] and target.delivered == []
    q._check()  # a deleted queue has no consumers


def test_a_consumer_attached_to_a_live_queue_is_served() -> None:
    q = Queue("/", "q", False, None, False, None)
    m = Message("", "q", b"\x00\x00", b"x")
    q.publish(m)
    target = _Target()
    c = Consumer("ctag", q, target, True, False, 0, None)
    assert q.add_consumer(c) is True
    assert target.delivered == [m] and target.cancelled == []


def test_exclusivity_is_checked_under_the_queue_lock() -> None:
    """Two basic.consume on different workers both looked the queue up; the second to reach
    the queue lock is refused there, with nothing attached (it used to be checked by the
    handler before taking the lock, so both could pass)."""
    import pytest

    from syncmq.wire.errors import AMQPChannelError

    q = Queue("/", "q", False, None, False, None)
    target = _Target()
    first = Consumer("a", q, target, True, True, 0, None)
    announced: list = []
    assert q.add_consumer(first, lambda: announced.append("a")) is True
    for exclusive in (False, True):
        with pytest.raises(AMQPChannelError) as exc:
            q.add_consumer(Consumer("b", q, target, True, exclusive, 0, None),
                           lambda: announced.append("b"))
        assert exc.value.reply_code == 403
        assert exc.value.reply_text == "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use"
    q.remove_consumer(first)
    q.add_consumer(Consumer("c", q, target, True, False, 0, None))
    with pytest.raises(AMQPChannelError):  # exclusive asked while another consumes
        q.add_consumer(Consumer("d", q, target, True, True, 0, None))
    assert announced == ["a"] and q.consumer_count() == 1
    q._check()


def test_consume_ok_precedes_the_first_delivery() -> None:
    q = Queue("/", "q", False, None, False, None)
    q.publish(Message("", "q", b"\x00\x00", b"x"))
    events: list = []
    target = _Target()
    target.deliver = lambda *a: events.append("deliver") or True
    target.deliver_many = lambda c, qu, pairs: events.extend(["deliver"] * len(pairs)) or len(pairs)
    assert q.add_consumer(Consumer("a", q, target, True, False, 0, None),
                          lambda: events.append("consume-ok"))
    assert events == ["consume-ok", "deliver"]
