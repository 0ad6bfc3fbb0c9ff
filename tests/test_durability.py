"""End-to-end durability: a real syncmq, pika clients, restarts on the same data directory.

Every check is the RabbitMQ contract for durable queues and persistent messages: after a
restart (clean, ``kill -9``, or with a torn journal tail) every confirmed and unacked message is
back exactly once, in order per queue, with its properties and body intact; acked ones are
gone; those delivered but unacked before the stop come back with ``redelivered=True``; durable
topology is back; transient messages, non-durable and exclusive queues are gone.

Waiting is event-driven (confirms, log lines, socket reads) with generous deadlines: CI is a
loaded 2-core machine.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pika
import pika.exceptions
import pytest
from amqp_helpers import TIMEOUT, connect
from brokerproc import BrokerProcess

from syncmq.journal import format as fmt

START_TIMEOUT = 60.0


# ---- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def brokers():
    """Start (and restart) brokers on a data dir; every one is stopped at the end of the test
    and must not have logged a traceback."""
    started: list[BrokerProcess] = []

    class Brokers:
        def start(self, data_dir: str, *extra: str) -> BrokerProcess:
            b = BrokerProcess(data_dir, *extra)
            started.append(b)
            return b.start(START_TIMEOUT)

        def restart(self, old: BrokerProcess, *extra: str) -> BrokerProcess:
            """A new process on ``old``'s data dir (the port changes)."""
            assert old.proc is not None and old.proc.poll() is not None, "stop it first"
            return self.start(old.data_dir, *extra)

    yield Brokers()
    for b in started:
        if b.proc is not None and b.proc.poll() is None:
            b.stop()
        assert not b.tracebacks(), "\n".join(b.tracebacks())


def props_for(i: int, persistent: bool = True) -> pika.BasicProperties:
    return pika.BasicProperties(
        delivery_mode=2 if persistent else 1,
        content_type="application/x-test" if i % 2 else "text/plain",
        content_encoding="identity",
        headers={"i": i, "s": f"v{i}", "nested": {"list": [i, "x", True]}, "b": b"\x00\xff"},
        message_id=f"m-{i}",
        correlation_id=f"c-{i * 7}",
        priority=i % 10,
        timestamp=1_700_000_000 + i,
        type="t",
        app_id="durability-test",
    )


def body_for(i: int) -> bytes:
    rnd = random.Random(i)
    size = 300_000 if i % 97 == 13 else rnd.randrange(0, 200)  # some span several frames
    return f"body-{i}|".encode() + rnd.randbytes(size)


PROP_FIELDS = ("delivery_mode", "content_type", "content_encoding", "headers", "message_id",
               "correlation_id", "priority", "timestamp", "type", "app_id")


def prop_tuple(p: pika.BasicProperties) -> tuple:
    return tuple(json.dumps(getattr(p, f), sort_keys=True, default=repr) for f in PROP_FIELDS)


def msg_index(body: bytes) -> int:
    assert body.startswith(b"body-"), body[:40]
    return int(body[5:body.index(b"|")])


def check_intact(props: pika.BasicProperties, body: bytes) -> int:
    """The message's index; fails unless body and properties are exactly what was sent."""
    i = msg_index(body)
    assert body == body_for(i), f"message {i}: body corrupt"
    assert prop_tuple(props) == prop_tuple(props_for(i)), f"message {i}: properties differ"
    return i


def drain(port: int, queue: str, ack: bool = False) -> list[tuple[int, bool]]:
    """basic.get everything in ``queue``: [(index, redelivered)], each checked intact."""
    out = []
    with contextlib.closing(connect(port)) as conn:
        ch = conn.channel()
        while True:
            method, props, body = ch.basic_get(queue, auto_ack=False)
            if method is None:
                break
            out.append((check_intact(props, body), method.redelivered))
        if ack and out:
            ch.basic_ack(0, multiple=True)
            # a confirmed publish on the same connection fences the acks into the journal
            fence(ch)
    return out


def fence(ch) -> None:
    """Publish one confirmed persistent message to a durable 'fence' queue: once confirmed,
    every record this connection appended before it is durable."""
    ch.queue_declare("fence", durable=True)
    if not ch._delivery_confirmation:
        ch.confirm_delivery()
    ch.basic_publish("", "fence", b"fence", pika.BasicProperties(delivery_mode=2))


def api(b: BrokerProcess, path: str):
    req = urllib.request.Request(f"http://127.0.0.1:{b.management_port}/api/{path}")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        return json.loads(r.read())


def last_segment(data_dir: str) -> Path:
    segs = sorted(Path(data_dir).glob("*.seg"))
    assert segs, os.listdir(data_dir)
    return segs[-1]


def dir_bytes(data_dir: str) -> int:
    return sum(p.stat().st_size for p in Path(data_dir).iterdir() if p.is_file())


# ---- the standard scenario --------------------------------------------------------------------
#
# Routes (index i % 5):      0: dx "k1"          -> q1
#                            1: dx "fan" -> fx   -> q2, q3       (exchange-to-exchange)
#                            2: amq.topic "t.x" -> q4 ("t.#", a binding on a predeclared exchange)
#                            3: "" (default) "q5" -> q5
#                            4: dx "k.top" -> ix (internal topic, "k.*") -> q6

QUEUES = ("q1", "q2", "q3", "q4", "q5", "q6")
QUEUE_ARGS = {"q1": {"x-max-length": 100000, "note": "first"}, "q2": {"x-queue-mode": "lazy"}}


def route_of(i: int) -> tuple[str, str, tuple[str, ...]]:
    return [("dx", "k1", ("q1",)), ("dx", "fan", ("q2", "q3")), ("amq.topic", "t.x", ("q4",)),
            ("", "q5", ("q5",)), ("dx", "k.top", ("q6",))][i % 5]


def declare_topology(ch) -> None:
    ch.exchange_declare("ae", "fanout", durable=True)
    ch.exchange_declare("dx", "direct", durable=True, arguments={"alternate-exchange": "ae"})
    ch.exchange_declare("fx", "fanout", durable=True)
    ch.exchange_declare("ix", "topic", durable=True, internal=True, arguments={"x-note": "i"})
    for q in QUEUES:
        ch.queue_declare(q, durable=True, arguments=QUEUE_ARGS.get(q))
    ch.queue_bind("q1", "dx", "k1")
    ch.exchange_bind(destination="fx", source="dx", routing_key="fan")
    ch.queue_bind("q2", "fx", "")
    ch.queue_bind("q3", "fx", "")
    ch.queue_bind("q4", "amq.topic", "t.#")
    ch.exchange_bind(destination="ix", source="dx", routing_key="k.top")
    ch.queue_bind("q6", "ix", "k.*", arguments={"x-bind": "b"})
    # transient things that must not survive
    ch.exchange_declare("tmpx", "direct", durable=False)
    ch.queue_bind("q1", "tmpx", "k1")  # non-durable source: binding gone with it
    ch.queue_declare("tq", durable=False)
    ch.queue_bind("tq", "dx", "k1")  # durable source, non-durable queue: gone
    ch.queue_declare("eq", durable=True, exclusive=True)
    ch.queue_bind("eq", "dx", "k1")


def publish_range(ch, indexes, confirmed: list[int] | None = None) -> None:
    for i in indexes:
        ex, rk, _ = route_of(i)
        ch.basic_publish(ex, rk, body_for(i), props_for(i))
        if confirmed is not None:
            confirmed.append(i)


def expected_queues(indexes) -> dict[str, list[int]]:
    exp: dict[str, list[int]] = {q: [] for q in QUEUES}
    for i in indexes:
        for q in route_of(i)[2]:
            exp[q].append(i)
    return exp


def check_topology(b: BrokerProcess) -> None:
    ex = {e["name"]: e for e in api(b, "exchanges/%2F")}
    assert (ex["dx"]["type"], ex["dx"]["durable"], ex["dx"]["internal"]) == ("direct", True, False)
    assert ex["dx"]["arguments"] == {"alternate-exchange": "ae"}
    assert ex["fx"]["type"] == "fanout" and ex["ae"]["type"] == "fanout"
    assert (ex["ix"]["type"], ex["ix"]["internal"], ex["ix"]["arguments"]) == (
        "topic", True, {"x-note": "i"})
    assert "tmpx" not in ex
    qs = {q["name"]: q for q in api(b, "queues/%2F")}
    for q in QUEUES:
        assert qs[q]["durable"] is True
        assert qs[q]["arguments"] == QUEUE_ARGS.get(q, {}), q
    assert "tq" not in qs and "eq" not in qs
    binds = {(x["source"], x["destination"], x["destination_type"], x["routing_key"],
              json.dumps(x["arguments"], sort_keys=True))
             for x in api(b, "bindings/%2F") if x["source"]}
    assert binds == {
        ("dx", "q1", "queue", "k1", "{}"),
        ("dx", "fx", "exchange", "fan", "{}"),
        ("fx", "q2", "queue", "", "{}"),
        ("fx", "q3", "queue", "", "{}"),
        ("amq.topic", "q4", "queue", "t.#", "{}"),
        ("dx", "ix", "exchange", "k.top", "{}"),
        ("ix", "q6", "queue", "k.*", '{"x-bind": "b"}'),
    }


def test_sigterm_restart_recovers_messages_topology_and_redelivered(brokers, tmp_path):
    n = 250
    b = brokers.start(str(tmp_path / "data"))
    conn = connect(b.port)
    ch = conn.channel()
    declare_topology(ch)
    ch.confirm_delivery()
    publish_range(ch, range(n))
    # transient messages to a durable queue, persistent ones to non-durable/exclusive queues
    for i in range(n, n + 10):
        ch.basic_publish("dx", "k1", body_for(i), props_for(i, persistent=False))
    expected = expected_queues(range(n))

    # q1: basic.get three, ack the first two; the third stays delivered-but-unacked
    getter = conn.channel()
    got = [getter.basic_get("q1") for _ in range(3)]
    assert [msg_index(g[2]) for g in got] == expected["q1"][:3]
    getter.basic_ack(got[0][0].delivery_tag)
    getter.basic_ack(got[1][0].delivery_tag)
    acked = {"q1": expected["q1"][:2]}
    redelivered = {"q1": {expected["q1"][2]}}

    # q2: a consumer with manual acks and prefetch 4: acks two, so 6 delivered, 4 unacked
    cons = conn.channel()
    cons.basic_qos(prefetch_count=4)
    deliveries: list = []
    cons.basic_consume("q2", lambda _c, m, p, body: deliveries.append((m, body)))
    deadline = time.monotonic() + TIMEOUT
    while len(deliveries) < 4 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert len(deliveries) == 4
    cons.basic_ack(deliveries[0][0].delivery_tag)
    cons.basic_ack(deliveries[1][0].delivery_tag)
    while len(deliveries) < 6 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert [msg_index(d[1]) for d in deliveries] == expected["q2"][:6]
    acked["q2"] = expected["q2"][:2]
    redelivered["q2"] = set(expected["q2"][2:6])
    fence(ch)  # the acks and DELIVERED records are on disk before the stop

    assert b.stop(signal.SIGTERM) == 0, b.log_tail()
    with contextlib.suppress(Exception):
        conn.close()

    b2 = brokers.restart(b)
    check_topology(b2)
    for q in QUEUES:
        want = [i for i in expected[q] if i not in acked.get(q, ())]
        got_q = drain(b2.port, q)
        assert [i for i, _ in got_q] == want, q
        assert {i for i, red in got_q if red} == redelivered.get(q, set()), q
    # a second clean restart changes nothing (the gets above were not acked: redelivered now)
    assert b2.stop() == 0
    b3 = brokers.restart(b2)
    for q in QUEUES:
        want = [i for i in expected[q] if i not in acked.get(q, ())]
        assert [i for i, _ in drain(b3.port, q, ack=True)] == want, q
    assert b3.stop() == 0
    b4 = brokers.restart(b3)
    for q in QUEUES:
        assert drain(b4.port, q) == [], q


class Publisher(threading.Thread):
    """Publishes ``indexes`` with confirms until the connection dies; ``confirmed`` lists
    every index whose basic.ack arrived, ``attempted`` every index sent."""

    def __init__(self, port: int, indexes, tx_batch: int = 0) -> None:
        super().__init__(daemon=True)
        self.port, self.indexes, self.tx_batch = port, list(indexes), tx_batch
        self.confirmed: list[int] = []
        self.attempted: list[int] = []
        self.rolled_back: list[int] = []
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self.done = False

    def run(self) -> None:
        try:
            conn = connect(self.port)
            ch = conn.channel()
            if self.tx_batch:
                self._run_tx(ch)
            else:
                ch.confirm_delivery()
                for i in self.indexes:
                    ex, rk, _ = route_of(i)
                    self.attempted.append(i)
                    ch.basic_publish(ex, rk, body_for(i), props_for(i))
                    with self.cond:
                        self.confirmed.append(i)
                        self.cond.notify_all()
        except (pika.exceptions.AMQPError, OSError) as e:
            self.error = e
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def _run_tx(self, ch) -> None:
        ch.tx_select()
        it = iter(self.indexes)
        k = 0
        while True:
            batch = [i for _, i in zip(range(self.tx_batch), it, strict=False)]
            if not batch:
                return
            for i in batch:
                ex, rk, _ = route_of(i)
                self.attempted.append(i)
                ch.basic_publish(ex, rk, body_for(i), props_for(i))
            k += 1
            if k % 3 == 0:
                ch.tx_rollback()
                self.rolled_back.extend(batch)
            else:
                ch.tx_commit()
                with self.cond:
                    self.confirmed.extend(batch)
                    self.cond.notify_all()

    def wait_confirmed(self, count: int, timeout: float = 120.0) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.confirmed) >= count or self.done, timeout)
        assert ok and len(self.confirmed) >= count, (len(self.confirmed), self.error)


def check_after_crash(port: int, confirmed: list[int], attempted: list[int],
                      gone: dict[str, list[int]] | None = None,
                      never: set[int] = frozenset()) -> dict[str, list[int]]:
    """Every confirmed message (less ``gone``) exactly once and in order; unconfirmed ones at
    most once; nothing else. Returns what each queue holds."""
    conf = expected_queues(confirmed)
    att = expected_queues(attempted)
    held = {}
    for q in QUEUES:
        got = [i for i, _ in drain(port, q)]
        assert len(got) == len(set(got)), f"{q}: duplicates"
        assert got == sorted(got), f"{q}: out of order"
        dropped = set((gone or {}).get(q, ()))
        missing = [i for i in conf[q] if i not in dropped and i not in set(got)]
        assert not missing, f"{q}: confirmed messages lost: {missing[:20]}"
        extra = set(got) - set(att[q])
        assert not extra, f"{q}: messages never published: {sorted(extra)[:20]}"
        assert not (set(got) & dropped), f"{q}: acked messages came back"
        assert not (set(got) & never), f"{q}: rolled-back messages appeared"
        held[q] = got
    return held


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_while_publishing_keeps_every_confirmed_message(brokers, tmp_path, seed):
    rnd = random.Random(seed)
    b = brokers.start(str(tmp_path / "data"))
    conn = connect(b.port)
    ch = conn.channel()
    declare_topology(ch)
    ch.confirm_delivery()
    # a first phase published and partly acked, fenced so the acks are durable
    first = list(range(50))
    publish_range(ch, first)
    acked = {"q1": [], "q5": []}
    for q in acked:
        for _ in range(4):
            m, _p, body = ch.basic_get(q)
            acked[q].append(msg_index(body))
            ch.basic_ack(m.delivery_tag)
    fence(ch)
    conn.close()

    pub = Publisher(b.port, range(50, 100_000))
    pub.start()
    pub.wait_confirmed(rnd.randrange(20, 300))
    b.kill()
    pub.join(TIMEOUT)
    assert not pub.is_alive()

    b2 = brokers.restart(b)
    check_topology(b2)
    held = check_after_crash(b2.port, first + pub.confirmed, first + pub.attempted, acked)
    # and a clean restart after the crash recovery gives the same again
    assert b2.stop() == 0
    b3 = brokers.restart(b2)
    assert {q: [i for i, _ in drain(b3.port, q)] for q in QUEUES} == held


def test_tx_commit_survives_kill_9_and_rollback_never_appears(brokers, tmp_path):
    b = brokers.start(str(tmp_path / "data"))
    conn = connect(b.port)
    declare_topology(conn.channel())
    conn.close()
    pub = Publisher(b.port, range(100_000), tx_batch=7)
    pub.start()
    pub.wait_confirmed(random.randrange(60, 250))
    b.kill()
    pub.join(TIMEOUT)
    assert not pub.is_alive()
    assert pub.rolled_back
    b2 = brokers.restart(b)
    check_after_crash(b2.port, pub.confirmed, pub.attempted, never=set(pub.rolled_back))


# ---- torn tail -----------------------------------------------------------------------------


def replay_prefix(seg: Path, cut: int, before: dict[str, list[int]]) -> dict[str, list]:
    """What the queues should hold if ``seg`` is cut at ``cut``: an oracle independent of
    syncmq's recovery, from the raw records (``before`` is what earlier segments hold)."""
    data = seg.read_bytes()
    records, _end, _problem = fmt.iter_records(data)
    queues = {q: dict.fromkeys(v) for q, v in before.items()}
    delivered: set[tuple[str, int]] = set()
    ids: dict[int, int] = {}  # msg_id -> test index
    for off, rtype, length in records:
        if off + fmt.RECORD_HEADER.size + length > cut:
            break
        rec = fmt.decode_record(data[off:off + fmt.RECORD_HEADER.size + length])
        if rtype == fmt.T_PUBLISH:
            ids[rec.msg_id] = msg_index(rec.body) if rec.body.startswith(b"body-") else -1
            for q in rec.queues:
                if q in queues:
                    queues[q][rec.msg_id] = None
        elif rtype == fmt.T_ACK and rec.queue in queues:
            for mid in rec.msg_ids:
                queues[rec.queue].pop(mid, None)
        elif rtype == fmt.T_DELIVERED:
            delivered.update((rec.queue, mid) for mid in rec.msg_ids)
    return {q: [(ids[mid], (q, mid) in delivered) for mid in v] for q, v in queues.items()}


def test_truncated_last_segment_recovers_a_consistent_prefix(brokers, tmp_path):
    n = 120
    b = brokers.start(str(tmp_path / "data"))
    conn = connect(b.port)
    ch = conn.channel()
    declare_topology(ch)
    ch.confirm_delivery()
    publish_range(ch, range(n))
    for q in ("q1", "q3"):
        for _ in range(5):
            m, _p, _body = ch.basic_get(q)
            ch.basic_ack(m.delivery_tag)
    m, _p, _body = ch.basic_get("q4")  # delivered, then requeued by the shutdown
    assert b.stop() == 0, b.log_tail()
    with contextlib.suppress(Exception):
        conn.close()
    segs = sorted(Path(b.data_dir).glob("*.seg"))
    assert len(segs) == 1  # one segment: the oracle replays it alone
    seg = segs[0]
    size = seg.stat().st_size
    records, _end, _ = fmt.iter_records(seg.read_bytes())
    last_off = records[-1][0]
    pub_offs = [off for off, t, _ in records if t == fmt.T_PUBLISH]
    big = max((off for off, t, ln in records if t == fmt.T_PUBLISH and ln > 100_000))
    rnd = random.Random(7)
    cuts = sorted({size - 1, size - 3, last_off + 5, last_off, (last_off + size) // 2,
                   pub_offs[-1] + 20, big + 1000, fmt.FILE_HEADER.size + 3,
                   *(rnd.randrange(pub_offs[0], size) for _ in range(3))})
    empty = {q: [] for q in QUEUES}
    for cut in cuts:
        d = tmp_path / f"cut-{cut}"
        shutil.copytree(b.data_dir, d, ignore=shutil.ignore_patterns("LOCK"))
        with open(last_segment(str(d)), "r+b") as f:
            f.truncate(cut)
        want = replay_prefix(seg, cut, empty)
        b2 = brokers.start(str(d))
        for q in QUEUES:
            if want[q] or any(x["name"] == q for x in api(b2, "queues/%2F")):
                assert drain(b2.port, q) == want[q], (cut, q)
        assert b2.stop() == 0
    # the untouched copy still recovers everything published and not acked
    b3 = brokers.restart(b)
    for q in QUEUES:
        assert drain(b3.port, q) == replay_prefix(seg, size, empty)[q], q


# ---- journal I/O errors --------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to put the data dir on a 2 MiB tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_journal_write_error_nacks_publishes_and_loses_nothing_confirmed(brokers, tiny_fs):
    # no disk alarm (2 MiB is below the default limit): its first check, 0.5 s after the
    # start, blocked the publisher before the disk was full when the machine was loaded
    b = brokers.start(str(tiny_fs / "data"), "--disk-free-limit", "0")
    conn = connect(b.port)
    ch = conn.channel()
    ch.queue_declare("full", durable=True)
    ch.confirm_delivery()
    confirmed: list[int] = []
    body = b"x" * 60_000
    with pytest.raises(pika.exceptions.NackError):
        for i in range(200):  # 12 MB > 2 MiB: the disk fills up
            ch.basic_publish("", "full", b"%06d" % i + body, pika.BasicProperties(delivery_mode=2))
            confirmed.append(i)
    b.wait_for_log("journal write failed")
    assert any('"level": "ERROR"' in line and "journal write failed" in line for line in b.lines)
    # later persistent publishes are nacked too, and the connection stays usable
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "full", b"later", pika.BasicProperties(delivery_mode=2))
    assert ch.queue_declare("full", passive=True).method.queue == "full"
    # a durable declare is not answered ok when its record cannot be made durable (#25)
    ch3 = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch3.queue_declare("after-full", durable=True)
    assert e.value.reply_code == 541 and "journal write failed" in e.value.reply_text
    conn.close()
    assert b.stop() == 0, b.log_tail()
    subprocess.run(["mount", "-o", "remount,size=32m", str(tiny_fs)], check=True)
    b2 = brokers.restart(b)
    with contextlib.closing(connect(b2.port)) as c2:
        ch2 = c2.channel()
        got = []
        while True:
            m, _p, bd = ch2.basic_get("full", auto_ack=True)
            if m is None:
                break
            assert bd[6:] == body
            got.append(int(bd[:6]))
    assert got[:len(confirmed)] == confirmed, "confirmed messages lost"
    assert len(got) <= len(confirmed) + 1  # at most the nacked one in flight


# ---- compaction ----------------------------------------------------------------------------


def test_compaction_gives_disk_back_after_acks_and_recovers_live_messages(brokers, tmp_path):
    seg = 256 * 1024
    b = brokers.start(str(tmp_path / "data"), "--journal-segment-bytes", str(seg))
    conn = connect(b.port)
    ch = conn.channel()
    ch.queue_declare("cq", durable=True)
    ch.queue_declare("keep", durable=True)
    ch.confirm_delivery()
    n, live = 1500, 60
    payload = os.urandom(4000)
    for i in range(n):
        ch.basic_publish("", "cq", b"%06d" % i + payload, pika.BasicProperties(delivery_mode=2))
    for i in range(live):
        ch.basic_publish("", "keep", b"%06d" % i + payload, pika.BasicProperties(delivery_mode=2))
    peak = dir_bytes(b.data_dir)
    assert peak > 5 * 1024 * 1024 and len(list(Path(b.data_dir).glob("*.seg"))) > 10
    # ack everything in cq but the last `live`
    for _ in range(n - live):
        m, _p, _bd = ch.basic_get("cq")
        ch.basic_ack(m.delivery_tag)
    fence(ch)
    backlog = 2 * live * 4000
    deadline = time.monotonic() + 120
    # compaction runs on the journal thread; publishes (fences) keep it turning
    while dir_bytes(b.data_dir) > backlog + 3 * seg:
        assert time.monotonic() < deadline, (dir_bytes(b.data_dir), b.log_tail())
        b.wait_for_log("journal compaction", timeout=60)
        fence(ch)
        conn.process_data_events(time_limit=0.2)
    conn.close()
    assert b.stop() == 0
    b2 = brokers.restart(b, "--journal-segment-bytes", str(seg))
    with contextlib.closing(connect(b2.port)) as c2:
        ch2 = c2.channel()
        for q, first in (("cq", n - live), ("keep", 0)):
            got = []
            while True:
                m, _p, bd = ch2.basic_get(q, auto_ack=True)
                if m is None:
                    break
                assert bd[6:] == payload
                got.append(int(bd[:6]))
            assert got == list(range(first, first + live)), q


def test_purge_delete_unbind_survive_restart(brokers, tmp_path):
    b = brokers.start(str(tmp_path / "data"))
    conn = connect(b.port)
    ch = conn.channel()
    declare_topology(ch)
    ch.confirm_delivery()
    publish_range(ch, range(40))
    expected = expected_queues(range(40))
    held, _p, _b = ch.basic_get("q1")  # unacked: a purge keeps it (as RabbitMQ)
    assert ch.queue_purge("q1").method.message_count == len(expected["q1"]) - 1
    ch.queue_delete("q3")
    ch.queue_unbind("q2", "fx", "")
    ch.exchange_delete("ix")  # with its bindings, as source and as destination
    ch.queue_declare("q7", durable=True)  # deleted and declared again: starts empty
    ch.basic_publish("", "q7", body_for(1000), props_for(1000))
    ch.queue_delete("q7")
    ch.queue_declare("q7", durable=True)
    fence(ch)
    assert b.stop() == 0
    with contextlib.suppress(Exception):
        conn.close()
    b2 = brokers.restart(b)
    qs = {q["name"] for q in api(b2, "queues/%2F")}
    assert "q3" not in qs and "q7" in qs
    assert "ix" not in {e["name"] for e in api(b2, "exchanges/%2F")}
    binds = {(x["source"], x["destination"]) for x in api(b2, "bindings/%2F") if x["source"]}
    assert ("fx", "q2") not in binds and ("ix", "q6") not in binds and ("dx", "ix") not in binds
    assert ("fx", "q3") not in binds and ("dx", "q1") in binds
    assert drain(b2.port, "q1") == [(expected["q1"][0], True)]
    assert drain(b2.port, "q7") == []
    for q in ("q2", "q4", "q5", "q6"):
        assert [i for i, _ in drain(b2.port, q)] == expected[q], q


def _wait_wall_clock(at: float) -> None:
    """Block until the wall clock reaches ``at`` (the test's point in time, not a guess at how
    long something takes)."""
    ev = threading.Event()
    while time.time() < at:
        ev.wait(min(0.1, max(0.0, at - time.time())))


def test_ttl_counts_from_the_original_publish_across_a_restart(brokers, tmp_path):
    """A per-message TTL and a per-queue TTL keep counting from the publish, not from the
    restart (the journal records the publish time of a message a TTL applies to)."""
    ttl_ms = 6000
    b = brokers.start(str(tmp_path / "data"))
    conn = connect(b.port)
    ch = conn.channel()
    ch.queue_declare("ttl-dlq", durable=True)
    dl = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "ttl-dlq"}
    ch.queue_declare("per-msg", durable=True, arguments=dl)
    ch.queue_declare("per-queue", durable=True, arguments={**dl, "x-message-ttl": ttl_ms})
    ch.queue_declare("no-ttl", durable=True)
    ch.confirm_delivery()
    published = time.time()
    ch.basic_publish("", "per-msg", b"m", pika.BasicProperties(delivery_mode=2,
                                                               expiration=str(ttl_ms)))
    ch.basic_publish("", "per-queue", b"q", pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("", "no-ttl", b"n", pika.BasicProperties(delivery_mode=2))
    conn.close()
    assert b.stop() == 0, b.log_tail()
    # the broker stays down for half the TTL: counted from a restart, the TTLs would run
    # until at least published + 1.5 x TTL
    _wait_wall_clock(published + ttl_ms / 2000)
    b2 = brokers.restart(b)
    # by published + TTL + 1 s both have expired (and were dead-lettered), counted from the
    # original publish
    _wait_wall_clock(published + ttl_ms / 1000 + 1.0)
    conn = connect(b2.port)
    ch = conn.channel()
    assert ch.basic_get("per-msg", auto_ack=True)[0] is None
    assert ch.basic_get("per-queue", auto_ack=True)[0] is None
    got = set()
    for _ in range(2):
        m, _p, body = ch.basic_get("ttl-dlq", auto_ack=True)
        assert m is not None, got
        got.add(body)
    assert got == {b"m", b"q"}
    m, _p, body = ch.basic_get("no-ttl", auto_ack=True)
    assert body == b"n"  # no TTL: still there
    conn.close()


def test_a_journal_without_publish_times_still_recovers_ttl_messages(
        brokers, tmp_path):
    """A journal written before PUBLISH_AT existed (a plain PUBLISH for a message with a TTL)
    still recovers: the TTL then counts from the restart, as it used to."""
    data = tmp_path / "data"
    data.mkdir()
    # the broker stores the property list from the flags word on: build it with its codec
    from syncmq.wire import _spec

    raw = _spec.BasicProperties(delivery_mode=2, expiration="60000").encode()
    recs = [fmt.encode_file_header(1),
            fmt.encode_queue_declare("/", "old", 1, b""),
            fmt.encode_publish(1, "/", ["old"], "", "old", raw, b"kept")]
    (data / fmt.segment_name(1)).write_bytes(b"".join(recs))
    b = brokers.start(str(data))
    conn = connect(b.port)
    ch = conn.channel()
    m, p, body = ch.basic_get("old", auto_ack=True)
    assert body == b"kept" and p.expiration == "60000"
    conn.close()
