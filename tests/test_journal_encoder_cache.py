"""The persistent publish encoder's caches (``journal/encoding.py``, ``encode_publish``) stay
bounded in octets, not only in entries, and never change a record's bytes.

Found in review: with per-message properties (a ``message_id``) and a wide durable fanout,
every publish missed and cached its route plus properties: 4,095 publishes to 300 queues
left 32.6 MiB in the caches, outside the broker's memory accounting."""

from __future__ import annotations

from syncmq.journal import encoding
from syncmq.journal.encoding import encode_publish


def _held() -> int:
    return sum(map(len, encoding._publish_mids.values())) + sum(
        map(len, encoding._publish_routes.values()))


def _plain(msg_id, vhost, queues, exchange, rkey, props, body) -> bytes:
    """The same record with both caches empty (no hit can have shaped it)."""
    encoding._publish_mids.clear()
    encoding._publish_routes.clear()
    return encode_publish(msg_id, vhost, queues, exchange, rkey, props, body)


def test_a_wide_fanout_with_per_message_properties_keeps_the_caches_small():
    queues = tuple(f"queue-number-{i:04d}" for i in range(300))
    for i in range(4095):
        props = b"\x00\x80" + f"message-id-{i:08d}".encode()
        encode_publish(i + 1, "/", queues, "fan", "", props, b"x")
    assert _held() <= 2 * encoding._CACHE_OCTETS + 8192, _held()


def test_cached_and_uncached_records_are_the_same_bytes():
    queues = ("a", "b", "c")
    for i in range(300):  # past the octet bound several times over (wide keys)
        rkey = f"key-{i % 7}" * 40
        props = bytes([i % 5]) * (i % 600)
        rec = encode_publish(i + 1, "/", queues, "ex", rkey, props, b"body")
        again = encode_publish(i + 1, "/", queues, "ex", rkey, props, b"body")
        assert rec == again == _plain(i + 1, "/", queues, "ex", rkey, props, b"body")
