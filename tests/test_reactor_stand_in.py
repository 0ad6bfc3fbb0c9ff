"""The reactor stands in for an idle worker (``Worker.stand_in``): a small read of light
frames (publishes, acks, content) of a connection with nothing in its input lane is handled on
the reactor thread, saving the worker's wake-up and the GIL hand-over per message (issue #22,
S8 latency). Everything else still goes to the worker, a connection's input stays in order,
and a worker's tasks never run on two threads at once (``Worker.busy``)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from syncmq.reactor import Reactor
from syncmq.reactor.reading import INLINE_MAX
from syncmq.reactor.reading import _light as _cut
from syncmq.wire import _spec
from syncmq.wire.frames import PROTOCOL_HEADER, encode_content, encode_method_frame
from syncmq.workers import WorkerPool, current_worker

TIMEOUT = 30


def _scan(data: bytes, need: int = 0) -> int:
    """What the next read must bring of a small content (-1: not light)."""
    return _cut(data, need)[0]


def _light(data: bytes, need: int = 0) -> bool:
    """Whole and light, ending at a content's end."""
    return _scan(data, need) == 0


def _publish(n: int, size: int = 16) -> bytes:
    method = encode_method_frame(1, _spec.Basic.Publish(exchange="", routing_key=f"q{n}"))
    return method + b"".join(encode_content(1, 60, b"\x00\x00", bytes(size), 131072))


def _channel_open() -> bytes:
    return encode_method_frame(1, _spec.Channel.Open())


# ---- what the reactor may handle


def test_light_frames():
    """Per-message methods and whole small contents are light; anything that can touch any
    number of messages (other methods, an ack with ``multiple``, a reject or nack, which may
    dead-letter to a wide route) or is cut short is not."""
    def m(method) -> bytes:
        return encode_method_frame(1, method)

    ack = m(_spec.Basic.Ack(delivery_tag=1))
    assert _light(_publish(1)) and _light(ack) and _light(_publish(1) + ack + _publish(2))
    assert _light(b"\x08\x00\x00\x00\x00\x00\x00\xce")  # a heartbeat
    assert not _light(m(_spec.Basic.Nack(delivery_tag=1, requeue=False)))
    assert not _light(m(_spec.Basic.Reject(delivery_tag=1, requeue=False)))
    assert not _light(m(_spec.Basic.Ack(delivery_tag=9, multiple=True)))
    assert not _light(ack + _channel_open())
    assert not _light(m(_spec.Queue.Purge(queue="q")))
    assert not _light(m(_spec.Basic.Recover(requeue=True)))
    assert not _light(ack[:10]) and not _light(ack[:19])  # not known yet
    assert not _light(ack[:-1]) and not _light(ack + ack[:3])  # a frame cut short


def _frame(ftype: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", ftype, 1, len(payload)) + payload + b"\xce"


def _header(body_size: int) -> bytes:
    return _frame(2, struct.pack(">HHQH", 60, 0, body_size, 0))


def test_only_a_small_content_may_span_reads():
    """The read that completes a large body would join it on the reactor thread: a content
    header is light only if it declares at most INLINE_MAX octets, and a body frame only if
    the reactor saw its content's header (in this read or the one before, ``need``)."""
    method = encode_method_frame(1, _spec.Basic.Publish(exchange="", routing_key="q"))
    ack = encode_method_frame(1, _spec.Basic.Ack(delivery_tag=1))
    part = _frame(3, bytes(2000))
    assert _scan(method + _header(100 * 2**20)) == -1  # 100 MiB declared
    assert _scan(part) == -1 and _scan(part, -1) == -1  # a body whose header it did not see
    assert _scan(part, 100 * 2**20) == 2**20 * 100 - 2000  # (need is the caller's promise)
    assert _light(method + _header(3000) + part + _frame(3, bytes(1000)) + ack)
    assert _scan(method + _header(3000) + part) == 1000  # the rest in the next read:
    assert _scan(_frame(3, bytes(1000)) + ack, 1000) == 0
    assert _scan(_frame(3, bytes(1000)), 999) == -1  # more than declared
    assert _scan(method + _header(3000) + part + ack) == -1  # a method inside a content
    assert _scan(method, -1) == 0  # a method starts afresh after a read not looked at
    assert _scan(method + _header(INLINE_MAX + 1)) == -1
    # pika writes method, header and body apart: three light reads
    assert _scan(method) == 0 and _scan(_header(16)) == 16 and _scan(_frame(3, bytes(16)), 16) == 0


def test_the_light_scan_cuts_what_split_frames_cuts():
    """The stand-in hands the handler the frames ``_light`` cut (no second cut by
    ``split_frames``): wherever ``_light`` takes a read, ``split_frames`` (the worker's cut,
    with the connection's frame_max and slack) takes all of it with no error and gives the
    same frames; every read split_frames calls an error (a bad end octet, a heartbeat with a
    payload, an unknown type) or leaves partly unconsumed, ``_light`` refuses. Random reads
    of publishes, acks, heartbeats and other frames, mutated and cut anywhere."""
    import random

    from syncmq.reactor.reading import FRAME_MAX_SLACK
    from syncmq.wire.frames import split_frames

    rnd = random.Random(2222)
    pieces = [
        lambda: _publish(rnd.randrange(100), rnd.choice((0, 1, 16, 200, 3000))),
        lambda: encode_method_frame(rnd.choice((1, 2)), _spec.Basic.Ack(
            delivery_tag=rnd.randrange(1, 1 << 40), multiple=rnd.random() < 0.2)),
        lambda: b"\x08\x00\x00\x00\x00\x00\x00\xce",
        lambda: _frame(rnd.choice((1, 2, 3, 4, 8)), bytes(rnd.randrange(0, 30))),
        lambda: _channel_open(),
    ]
    taken = 0
    for case in range(3000):
        buf = bytearray(b"".join(rnd.choice(pieces)() for _ in range(rnd.randint(1, 5))))
        for _ in range(rnd.choice((0, 0, 1, 2))):  # a type, a size, an end octet, a payload
            buf[rnd.randrange(len(buf))] = rnd.choice((0, 1, 2, 3, 8, 13, 80, 206, 255))
        if case % 4 == 0:
            del buf[rnd.randrange(1, len(buf) + 1):]
        data = bytes(buf)
        for need in (0, -1, rnd.randrange(0, 5000)):
            got, frames = _cut(data, need)
            if frames is None:
                assert got == -1
                continue
            taken += 1
            for frame_max in (4096, 131072):
                want = split_frames(data, frame_max, slack=FRAME_MAX_SLACK)
                assert want == (frames, len(data), None), (case, need)
                assert all(type(p) is bytes for _t, _c, p in frames)
    assert taken > 500  # (the random reads are light often enough to compare)
    # a lone publish or ack (taken in one straight run, without the loop): every octet
    # changed; the straight run answers as the loop does (a heartbeat first makes the read
    # the loop's)
    heartbeat = b"\x08\x00\x00\x00\x00\x00\x00\xce"
    acks = [encode_method_frame(ch, _spec.Basic.Ack(delivery_tag=tag, multiple=multiple))
            for ch, tag, multiple in ((1, 1, False), (7, 1 << 40, False), (1, 2, True))]
    # a multiple ack, a large body, a header frame too short to declare its body's size
    # (11 octets: what would be read as the size's last octet is its end octet, 206)
    short_header = encode_method_frame(1, _spec.Basic.Publish(routing_key="q")) + \
        _frame(2, struct.pack(">HH", 60, 0) + bytes(7)) + _frame(3, bytes(206))
    heavy = (acks[-1], _publish(5, INLINE_MAX + 1), short_header)
    for data in (_publish(1, 1), _publish(2, 16), _publish(3, 200), _publish(4, INLINE_MAX),
                 *heavy, *acks[:-1]):
        light = _cut(data, 0)
        assert light == ((-1, None) if data in heavy else
                         (0, split_frames(data, 8192, slack=FRAME_MAX_SLACK)[0]))
        for i in range(len(data)):
            for value in (0, 1, 2, 3, 8, 13, 206, 255):
                buf = data[:i] + bytes([value]) + data[i + 1:]
                got, frames = _cut(buf, 0)
                assert _cut(heartbeat + buf, 0) == (
                    (-1, None) if frames is None else (got, [(8, 0, b"")] + frames)), (i, value)
                if frames is not None:
                    want = split_frames(buf, 8192, slack=FRAME_MAX_SLACK)
                    assert want == (frames, len(buf), None), (i, value)


# ---- Worker.stand_in alone


def test_stand_in_runs_here_as_the_worker_when_it_is_idle():
    pool = WorkerPool(1)  # not started: nothing runs, nothing is queued
    worker = pool.workers[0]
    seen: list = []
    assert worker.stand_in(lambda: seen.append((threading.current_thread(),
                                                 current_worker())))
    assert seen == [(threading.current_thread(), worker)]
    assert current_worker() is None  # only while the task runs
    worker.submit(lambda: None)
    assert not worker.stand_in(seen.append, "queued")  # the queued task goes first
    assert seen[1:] == []


def test_stand_in_refuses_while_the_worker_runs_a_task():
    pool = WorkerPool(1)
    pool.start()
    worker = pool.workers[0]
    running, gate = threading.Event(), threading.Event()
    ran: list[str] = []
    try:
        def long_task() -> None:
            running.set()
            gate.wait(TIMEOUT)
            ran.append("long")

        worker.submit(long_task)
        assert running.wait(TIMEOUT)
        assert worker.tasks.empty()  # only busy says the worker is not idle
        assert not worker.stand_in(ran.append, "stand-in")
        gate.set()
        done = threading.Event()
        worker.submit(done.set)
        assert done.wait(TIMEOUT)
        assert worker.stand_in(ran.append, "stand-in")
        assert ran == ["long", "stand-in"]
    finally:
        gate.set()
        pool.stop()


# ---- through the reactor


class _Handler:
    def __init__(self, record: list, made: threading.Event, block: threading.Event) -> None:
        self.record = record
        self.made = made
        self.block = block

    def connection_made(self) -> None:
        self.made.set()

    def frames_received(self, frames) -> None:
        name = threading.current_thread().name
        for ftype, _ch, payload in frames:
            if ftype == _spec.FRAME_METHOD:
                method = _spec.decode_method(payload)
                if isinstance(method, _spec.Channel.Open):
                    self.block.wait(TIMEOUT)  # keeps the worker busy until set
                self.record.append((name, getattr(method, "routing_key", "open")))

    def frame_error(self, exc) -> None:
        self.record.append(("error", str(exc)))

    def connection_lost(self) -> None:
        pass


class _AllFrames(_Handler):
    """Records every frame: ``(thread name, method name or frame type)``."""

    def frames_received(self, frames) -> None:
        name = threading.current_thread().name
        for ftype, _ch, payload in frames:
            self.record.append((name, _spec.decode_method(payload).NAME
                                if ftype == _spec.FRAME_METHOD else ftype))


def _start(workers: int = 1, handler: type = _Handler):
    pool = WorkerPool(workers)
    record: list = []
    made = threading.Event()
    block = threading.Event()
    reactor = Reactor(pool, lambda t: handler(record, made, block), handshake_timeout=0)
    host, port = reactor.listen("127.0.0.1", 0)
    pool.start()
    reactor.start()
    client = socket.create_connection((host, port), timeout=TIMEOUT)
    client.sendall(PROTOCOL_HEADER)
    assert made.wait(TIMEOUT)
    return pool, reactor, client, record, block


def _wait_for(record: list, n: int) -> None:
    done = threading.Event()
    for _ in range(TIMEOUT * 1000):
        if len(record) >= n:
            return
        done.wait(0.001)
    raise AssertionError(f"{record} has fewer than {n} entries")


def test_where_input_is_handled():
    pool, reactor, client, record, block = _start()
    try:
        block.set()
        client.sendall(_publish(0))  # small and light, worker idle: on the reactor
        _wait_for(record, 1)
        client.sendall(_channel_open())  # not light: the worker
        _wait_for(record, 2)
        big = b"".join(_publish(i) for i in range(1, INLINE_MAX // 60))
        assert len(big) > INLINE_MAX
        client.sendall(big)  # too large for the reactor's turn: the worker
        _wait_for(record, 1 + len(big) // 72)
        assert record[0] == ("syncmq-reactor", "q0")
        assert record[1] == ("syncmq-worker-0", "open")
        assert {name for name, _ in record[2:]} == {"syncmq-worker-0"}
        assert [key for _, key in record[2:]] == [f"q{i}" for i in range(1, INLINE_MAX // 60)]
    finally:
        block.set()
        client.close()
        reactor.stop()
        pool.stop()


def _settled(pool: WorkerPool, t) -> None:
    """Wait until ``t``'s lane and every worker are idle (the reactor may stand in)."""
    for _ in range(TIMEOUT * 1000):
        if not t.in_scheduled and pool.idle():
            return
        threading.Event().wait(0.001)
    raise AssertionError("the worker did not go idle")


def test_no_stand_in_for_a_read_that_goes_on_with_a_partial_frame():
    """A read that goes on with a frame the worker holds the start of (``Transport.rest``)
    is the worker's, even if it reads as whole light frames: the reactor stands in only at a
    frame boundary."""
    pool, reactor, client, record, block = _start(handler=_AllFrames)
    try:
        ack = encode_method_frame(1, _spec.Basic.Ack(delivery_tag=1))
        # the head of a body frame whose payload is an ack and an ack without its end octet:
        # the rest of the frame (payload and end octet) reads as two whole acks
        head = struct.pack(">BHI", 3, 1, 2 * len(ack) - 1)
        client.sendall(_channel_open() + head)  # not light: the worker, which keeps the head
        _wait_for(record, 1)
        (t,) = reactor.transports.values()
        _settled(pool, t)
        client.sendall(ack + ack)
        client.sendall(_publish(9))
        _wait_for(record, 5)
        assert record[:2] == [("syncmq-worker-0", "channel.open"), ("syncmq-worker-0", 3)]
        assert [key for _, key in record[2:]] == ["basic.publish", 2, 3]
    finally:
        client.close()
        reactor.stop()
        pool.stop()


def test_a_body_after_a_read_the_worker_cut_is_the_workers():
    """After a read the worker cut (``light_need`` -1: not known on the reactor), a body
    frame is not light, even an empty one: the reactor did not see its content's header."""
    pool, reactor, client, record, block = _start(handler=_AllFrames)
    try:
        publish = encode_method_frame(1, _spec.Basic.Publish(exchange="", routing_key="q"))
        client.sendall(_channel_open() + publish + _header(16))  # not light: the worker
        _wait_for(record, 3)
        (t,) = reactor.transports.values()
        _settled(pool, t)
        client.sendall(_frame(3, b""))
        _wait_for(record, 4)
        assert record[3] == ("syncmq-worker-0", 3)
    finally:
        client.close()
        reactor.stop()
        pool.stop()


def test_a_busy_worker_gets_the_input_in_order():
    """While the worker runs another task, a small publish waits in the lane for it, and
    what follows it stays behind it (never handled on the reactor before it)."""
    pool, reactor, client, record, block = _start()
    try:
        client.sendall(_channel_open())  # the worker blocks in it
        client.sendall(_publish(1))
        client.sendall(_publish(2))
        (t,) = reactor.transports.values()
        waiting = len(_publish(1)) + len(_publish(2))
        for _ in range(TIMEOUT * 1000):  # until both publishes wait in the lane
            with t.out_lock:
                if sum(len(arg) for fn, arg in t.inq if fn is None) == waiting:
                    break
            threading.Event().wait(0.001)
        block.set()
        _wait_for(record, 3)
        assert [key for _, key in record] == ["open", "q1", "q2"]
        assert record[1][0] == "syncmq-worker-0"  # queued behind the busy worker
        for i in range(3, 200):  # then a mix of reactor and worker turns, in order
            client.sendall(_publish(i) if i % 7 else _channel_open())
        _wait_for(record, 200)
        assert [key for _, key in record[3:]] == [
            f"q{i}" if i % 7 else "open" for i in range(3, 200)]
    finally:
        block.set()
        client.close()
        reactor.stop()
        pool.stop()


def test_no_stand_in_for_a_lane_with_a_turn_while_the_pool_looks_idle():
    """A worker takes a turn off its queue before it takes ``busy``: between the two the
    pool looks idle (nothing queued, nothing running) and ``Worker.stand_in`` would get
    ``busy``. The lane still holds that turn (``in_scheduled``), so a read then waits
    behind it in the lane instead of being handled on the reactor first."""
    pool, reactor, client, record, block = _start()
    try:
        block.set()
        client.sendall(_publish(0))  # (the transport exists; its lane idle once q0 is done)
        _wait_for(record, 1)
        (t,) = reactor.transports.values()
        with t.out_lock:  # a turn the worker has just dequeued, not yet running
            t.in_scheduled = True
        assert pool.idle()
        client.sendall(_publish(1))
        for _ in range(TIMEOUT * 1000):
            with t.out_lock:
                if t.inq:
                    break
            threading.Event().wait(0.001)
        assert record == [("syncmq-reactor", "q0")]  # not handled: it waits in the lane
        with t.out_lock:
            fn, arg = t.inq.popleft()
        t.worker.submit(reactor._input_turn, t, fn, arg)  # the turn runs: the read follows
        _wait_for(record, 2)
        assert record[1] == ("syncmq-worker-0", "q1")
        client.sendall(_publish(2))  # the lane is idle again: the reactor's
        _wait_for(record, 3)
        assert record[2] == ("syncmq-reactor", "q2")
    finally:
        block.set()
        client.close()
        reactor.stop()
        pool.stop()


def test_a_read_the_worker_took_busy_for_goes_to_it():
    """The pool looks idle (``WorkerPool.idle``, a racy hint) but the connection's worker
    takes ``busy`` before the reactor does (``Worker.stand_in`` refuses): the read is not
    handled on the reactor, nor lost; it goes to the worker through the lane, in order."""
    pool, reactor, client, record, block = _start()
    worker = pool.workers[0]
    try:
        block.set()
        client.sendall(_publish(0))  # (on the reactor: the transport exists and is idle)
        _wait_for(record, 1)
        (t,) = reactor.transports.values()
        pool.idle = lambda: True  # the hint as read just before the worker took busy
        with worker.busy:  # the worker is between its dequeue and its task
            client.sendall(_publish(1))
            for _ in range(TIMEOUT * 1000):  # the read went to the lane, not the reactor
                with t.out_lock:
                    if t.in_scheduled:
                        break
                threading.Event().wait(0.001)
            assert t.in_scheduled  # (the worker cannot run the turn while busy is held)
            assert [key for _, key in record] == ["q0"]  # (q0's thread: either, by timing)
        _wait_for(record, 2)
        assert record[1] == ("syncmq-worker-0", "q1")
    finally:
        block.set()
        client.close()
        reactor.stop()
        pool.stop()


def test_no_stand_in_while_another_worker_is_busy():
    """The reactor takes a worker's place only while the whole pool is idle: with another
    worker busy, its work would compete with that worker for the GIL."""
    pool, reactor, client, record, block = _start(workers=2)
    other = pool.workers[1]
    assert pool.workers[0].load == 1 and other.load == 0  # the connection's is worker 0
    running, gate = threading.Event(), threading.Event()

    def busy_elsewhere() -> None:
        running.set()
        gate.wait(TIMEOUT)

    try:
        block.set()
        other.submit(busy_elsewhere)
        assert running.wait(TIMEOUT)
        client.sendall(_publish(1))
        _wait_for(record, 1)
        gate.set()
        done = threading.Event()
        other.submit(done.set)
        assert done.wait(TIMEOUT)
        while not pool.idle():
            done.wait(0.001)
        client.sendall(_publish(2))
        _wait_for(record, 2)
        assert record == [("syncmq-worker-0", "q1"), ("syncmq-reactor", "q2")]
    finally:
        gate.set()
        block.set()
        client.close()
        reactor.stop()
        pool.stop()


# ---- where a write is sent


class _Writer(_Handler):
    """Answers each publish with its routing key, and records on which thread the write was
    made and whether it was still queued right after it (``pending_out``)."""

    def __init__(self, record: list, made: threading.Event, block: threading.Event) -> None:
        super().__init__(record, made, block)
        self.t = None

    def frames_received(self, frames) -> None:
        for ftype, _ch, payload in frames:
            if ftype == _spec.FRAME_METHOD:
                method = _spec.decode_method(payload)
                key = getattr(method, "routing_key", "open").encode()
                self.t.write([struct.pack(">B", len(key)), key])
                self.record.append((threading.current_thread().name, self.t.pending_out))


@contextlib.contextmanager
def _writer_connection():
    """A reactor with one worker whose handler answers each publish with its routing key
    (``_Writer``): yields the connected client socket (protocol header sent and handled)
    and the handler's record of ``(thread name, pending_out after the write)``."""
    pool = WorkerPool(1)
    record: list = []
    made, block = threading.Event(), threading.Event()
    block.set()

    def factory(t):
        h = _Writer(record, made, block)
        h.t = t
        return h

    reactor = Reactor(pool, factory, handshake_timeout=0)
    host, port = reactor.listen("127.0.0.1", 0)
    pool.start()
    reactor.start()
    client = socket.create_connection((host, port), timeout=TIMEOUT)
    try:
        client.sendall(PROTOCOL_HEADER)
        assert made.wait(TIMEOUT)
        yield client, record
    finally:
        client.close()
        reactor.stop()
        pool.stop()


def _recv_exactly(client: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        got += client.recv(64)
    return got


def test_a_write_on_the_reactor_is_sent_at_once_and_a_workers_at_its_tasks_end():
    """Standing in, the reactor sends its task's first write there and then (a lone delivery leaves at its
    write, not after the rest of the task: ``Transport._wake``); a worker's write waits for
    the end of its task (one send per task, however many writes). Either way the peer gets
    everything in write order."""
    with _writer_connection() as (client, record):
        client.sendall(_publish(1))  # light, the worker idle: the reactor's
        _wait_for(record, 1)
        client.sendall(_channel_open())  # the worker's
        _wait_for(record, 2)
        assert record == [("syncmq-reactor", 0), ("syncmq-worker-0", 5)]
        want = b"\x02q1\x04open"
        assert _recv_exactly(client, len(want)) == want


def test_standing_in_only_the_tasks_first_write_is_sent_at_once():
    """A stand-in read whose handling writes several times (here three publishes, one write
    each, as a read of publishes to a queue with two consumers, or mandatory ones) sends the
    first write at once and the rest together at the end of the task, not one ``sendmsg``
    a write (review of the send at the write); the peer gets it all, in order."""
    with _writer_connection() as (client, record):
        client.sendall(_publish(1) + _publish(2) + _publish(3))  # one light read
        _wait_for(record, 3)
        assert record == [("syncmq-reactor", 0), ("syncmq-reactor", 3), ("syncmq-reactor", 6)]
        want = b"\x02q1\x02q2\x02q3"
        assert _recv_exactly(client, len(want)) == want
