"""A shovel that deletes itself (``src-delete-after``) while the broker stops: the stop waits
for the deletion, so its parameter is cleared (journaled) before the journal closes, and
nothing is logged as an error.

The race is made deterministic with the parameter store's change lock: the test holds it
(as a concurrent API change would), so the finished shovel's deletion waits on it; the broker
is told to stop; the lock is released once the stop has either logged that it waits for the
deletion (the fix) or closed the journal (the bug: the deletion then found the journal closed
and logged ``could not clear the finished shovel's parameter`` with a JournalClosed, and the
parameter, still journaled, started the shovel again at the next start)."""

from __future__ import annotations

import logging
import threading

import pika
from test_shovel import channel, publish, set_shovel, status, wait_for

import syncmq


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def said(self, *texts: str) -> bool:
        return any(r.getMessage().startswith(texts) for r in list(self.records))


def test_a_shovel_deleting_itself_while_the_broker_stops(tmp_path):
    data = str(tmp_path / "data")
    logger = logging.getLogger("syncmq")
    saved, handler = logger.level, _Records()
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        a = syncmq.Server(data_dir=data).start()
        c, ch = channel(a)
        ch.queue_declare("src", durable=True)
        publish(ch, "src", 5)
        set_shovel(a, "once", {"src-uri": "amqp://", "src-queue": "src", "dest-uri": "amqp://",
                               "dest-queue": "dst", "src-delete-after": 10})
        wait_for(lambda: status(a, "once")["state"] == "running", what="the shovel running")
        change = a.node.broker.parameters._change
        with change:  # the deletion will wait for it
            for _ in range(5):  # the shovel reaches 10 and deletes itself
                ch.basic_publish("", "src", b"more", pika.BasicProperties(delivery_mode=2))
            wait_for(lambda: any(t.name == "syncmq-shovel-delete-//once"
                                 for t in threading.enumerate()),
                     what="the finished shovel's deletion")
            c.close()
            stopper = threading.Thread(target=a.stop)
            stopper.start()
            wait_for(lambda: handler.said("shovels: waiting for",
                                          "journal flushed and closed"),
                     what="the stop waiting for the deletion, or closing the journal")
        stopper.join(60)
        assert not stopper.is_alive()
        for t in threading.enumerate():  # (the bug: the deletion outlived the stop)
            if t.name.startswith("syncmq-shovel-delete-"):
                t.join(30)
        bad = [f"{r.levelname} {r.getMessage()}" for r in handler.records
               if r.levelno >= logging.ERROR or r.exc_info]
        assert bad == []
        # the deletion was journaled: the shovel does not come back
        b = syncmq.Server(data_dir=data).start()
        try:
            assert b.node.broker.parameters.get("shovel", "/", "once") is None
            assert status(b, "once") is None
            c = pika.BlockingConnection(pika.URLParameters(b.url))
            assert c.channel().queue_declare("dst", passive=True).method.message_count == 10
            c.close()
        finally:
            b.stop()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


def test_a_shovel_connecting_to_a_silent_destination_stops_at_once(monkeypatch):
    """A destination that accepts the TCP connection and never answers (the AMQP handshake
    hangs): deleting the shovel, and stopping the broker, end its thread without waiting
    for the handshake. The close grace and the handshake timeout are made longer than the
    stop's join bound, so a link that waited for its opening connection would outlive
    ``stop_all``."""
    import socket

    from syncmq.shovel import worker

    monkeypatch.setattr(worker, "CLOSE_TIMEOUT", 600.0)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(silent.accept()[0])  # accepted, never answered
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    # (pika's own handshake timeout, connection_timeout, as long: only a stop ends it)
    dest = f"amqp://guest:guest@127.0.0.1:{silent.getsockname()[1]}?connection_timeout=600000"
    a = syncmq.Server().start()
    try:
        def connecting(name: str) -> threading.Thread:
            n = len(held)
            set_shovel(a, name, {"src-uri": "amqp://", "src-queue": "src",
                                 "dest-uri": dest, "dest-queue": "dst"})
            wait_for(lambda: len(held) > n, what="the shovel connecting")
            assert status(a, name)["state"] == "starting"
            return next(t for t in threading.enumerate()
                        if t.name == f"syncmq-shovel-//{name}")

        t = connecting("deleted")
        a.node.broker.parameters.clear("shovel", "/", "deleted")
        t.join(30)  # (a hang guard: the link waited 600 s)
        assert not t.is_alive()
        t = connecting("stopped")
    finally:
        a.stop()
        silent.close()
        for c in held:
            c.close()
    assert not t.is_alive()  # joined by the stop
