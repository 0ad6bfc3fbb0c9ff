"""Producer and consumer processes of syncmq-perf.

Each process owns one or more :class:`~syncmq.perf.client.Client` connections. The protocol with
the parent, over a duplex ``multiprocessing`` pipe:

1. the child connects and sets up (confirm.select / qos), then sends
   ``("ready", None)`` (or ``("error", text)`` and exits);
2. the parent sends ``("go", t0, deadline)``: ``t0`` is a ``time.monotonic()`` instant (the
   clock is system-wide on Linux), ``deadline`` is ``t0 + --time`` or ``None``;
3. at ``t0`` the child starts (consumers issue basic.consume then) and runs, updating its slot of a shared progress array, until its count or the
   deadline, or until the parent sets the shared stop flag; then sends ``("result", dict)``.

Rates are computed by the parent from the counts and instants in the result dicts.
"""

from __future__ import annotations

import array
import math
import selectors
import struct
import time
import traceback
from typing import Any

from .client import Client, ClientError

_S_TS = struct.Struct(">Q")


def _await_go(pipe: Any) -> tuple[float, float | None]:
    msg = pipe.recv()
    if msg[0] != "go":
        raise SystemExit(0)
    return msg[1], msg[2]


def _close_all(clients: list[Client]) -> None:
    for c in clients:
        try:
            c.close(timeout=2.0)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


class _Slot:
    """One producer connection: its template, rate and progress."""

    __slots__ = ("client", "msg", "ts_off", "full", "sent", "limit", "done", "template_len")

    def __init__(self, client: Client, msg: bytes, ts_off: int, batch: int, limit: int) -> None:
        self.client = client
        self.msg = msg
        self.template_len = len(msg)
        self.ts_off = ts_off
        self.full = msg * batch
        self.sent = 0
        self.limit = limit
        self.done = False


def producer_main(pipe: Any, index: int, progress: Any, stop: Any, cfg: dict[str, Any],
                  targets: list[tuple[str, str]]) -> None:
    """Run the producers ``targets`` = [(exchange, routing_key), ...], one connection each."""
    clients: list[Client] = []
    errors: list[str] = []
    try:
        slots = []
        batch = cfg["batch"]
        for exchange, rk in targets:
            c = Client(cfg["uri"], frame_max=cfg["frame_max"], name=f"perf-producer-{index}")
            clients.append(c)
            if cfg["confirm"]:
                c.confirm_select()
            msg, ts_off = c.message_template(exchange, rk, cfg["size"], cfg["persistent"])
            slots.append(_Slot(c, msg, ts_off, batch, cfg["pmessages"]))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        pipe.send(("error", f"producer {index}: setup failed: {exc!r}"))
        _close_all(clients)
        return
    pipe.send(("ready", None))
    t0, deadline = _await_go(pipe)
    while time.monotonic() < t0:
        time.sleep(max(0.0, t0 - time.monotonic()))
    end_time = t0
    try:
        end_time = _produce(slots, cfg, t0, deadline, progress, index, stop)
    except ClientError as exc:
        errors.append(f"producer {index}: {exc}")
    except Exception:  # noqa: BLE001
        errors.append(f"producer {index}: {traceback.format_exc(limit=5)}")
    result = {
        "role": "producer",
        "sent": sum(s.sent for s in slots),
        "confirmed": sum(s.client.confirmed for s in slots),
        "nacked": sum(s.client.nacked for s in slots),
        "returned": sum(s.client.returned for s in slots),
        "t_end": end_time,
        "errors": errors,
    }
    _close_all(clients)
    pipe.send(("result", result))


def _budget(s: _Slot, batch: int, limit: int, rate: float, window: int, now: float,
            t0: float) -> tuple[int, float, bool]:
    """How many of ``s``'s messages may go now: ``(n, when the rate allows the next one (inf
    if it does not hold ``s`` back), whether ``s`` waits for confirms)``."""
    n = batch
    next_due = math.inf
    if limit:
        n = min(n, limit - s.sent)
    if rate:
        due = int(rate * (now - t0)) + 1 - s.sent
        if due < n:
            n = due
            if n <= 0:
                next_due = t0 + s.sent / rate
    waiting = False
    if window:
        room = window - s.client.outstanding
        if room < n:
            n = room
            if n <= 0:
                waiting = True
    return n, next_due, waiting


def _publish(s: _Slot, n: int, batch: int, latency: bool) -> None:
    """Send ``n`` of ``s``'s messages (the prebuilt batch when ``n == batch``), stamped with
    the send time when measuring latency."""
    if latency:
        data = bytearray(s.full if n == batch else s.msg * n)
        ts = time.time_ns()
        step = s.template_len
        pack_ts = _S_TS.pack_into
        for off in range(s.ts_off, step * n, step):
            pack_ts(data, off, ts)
        s.client.publish_raw(data, n)
    else:
        s.client.publish_raw(s.full if n == batch else s.msg * n, n)


def _wait_for_confirms(sel: Any, waiting: list[_Slot], timeout: float) -> None:
    """Read the connections of ``waiting`` (no room in their confirm window) until one has
    input or ``timeout`` passes."""
    if sel is None:
        waiting[0].client.poll(timeout)
        return
    for s in waiting:
        sel.register(s.client.sock, selectors.EVENT_READ, s)
    for key, _ in sel.select(timeout):
        key.data.client.poll(0)
    for s in waiting:
        sel.unregister(s.client.sock)


def _produce(slots: list[_Slot], cfg: dict[str, Any], t0: float, deadline: float | None,
             progress: Any, index: int, stop: Any) -> float:
    batch = cfg["batch"]
    rate = cfg["rate"]
    window = cfg["confirm"]
    latency = cfg["latency"]
    limit = cfg["pmessages"]
    sel = selectors.DefaultSelector() if len(slots) > 1 else None
    active = list(slots)
    last_send = t0
    monotonic = time.monotonic
    while active:
        now = monotonic()
        if (deadline is not None and now >= deadline) or stop.value:
            break
        sent_any = False
        next_due = now + 0.1
        waiting: list[_Slot] = []
        for s in active:
            s.client.poll(0)
            n, due, waits = _budget(s, batch, limit, rate, window, now, t0)
            next_due = min(next_due, due)
            if waits:
                waiting.append(s)
            if n > 0:
                _publish(s, n, batch, latency)
                s.sent += n
                sent_any = True
                last_send = monotonic()
            if limit and s.sent >= limit:
                s.done = True
        if sent_any:
            progress[index] = sum(s.sent for s in slots)
            active = [s for s in active if not s.done]
            continue
        # nothing could be sent: wait for confirms or for the next rate slot
        timeout = max(0.0, next_due - monotonic())
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - monotonic()))
        if waiting:
            _wait_for_confirms(sel, waiting, timeout)
        elif timeout > 0:
            time.sleep(timeout)
    progress[index] = sum(s.sent for s in slots)
    end = last_send
    if window:
        # wait (bounded) for the confirms of what was sent; the confirm instant ends the run
        # of a count-bounded producer
        wait_until = monotonic() + cfg["drain_timeout"]
        for s in slots:
            s.client.wait_confirms(wait_until)
        if deadline is None:
            end = monotonic()
    return end


def consumer_main(pipe: Any, index: int, progress: Any, stop: Any, cfg: dict[str, Any],
                  queues: list[str]) -> None:
    """Run one consumer connection per queue name in ``queues``."""
    clients: list[Client] = []
    errors: list[str] = []
    try:
        for _ in queues:
            c = Client(cfg["uri"], frame_max=cfg["frame_max"], name=f"perf-consumer-{index}")
            clients.append(c)
            if cfg["qos"]:
                c.qos(cfg["qos"])
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        pipe.send(("error", f"consumer {index}: setup failed: {exc!r}"))
        _close_all(clients)
        return
    pipe.send(("ready", None))
    t0, deadline = _await_go(pipe)
    try:
        # basic.consume at the start instant, not during setup: draining a backlog must not
        # begin before the clock does
        while time.monotonic() < t0:
            time.sleep(max(0.0, t0 - time.monotonic()))
        for c, q in zip(clients, queues, strict=True):
            c.consume(q, no_ack=cfg["autoack"], ack_every=cfg["multi_ack_every"],
                      latency=cfg["latency"], limit=cfg["cmessages"])
        _consume(clients, cfg, deadline, progress, index, stop)
    except ClientError as exc:
        errors.append(f"consumer {index}: {exc}")
    except Exception:  # noqa: BLE001
        errors.append(f"consumer {index}: {traceback.format_exc(limit=5)}")
    lat = array.array("q")
    for c in clients:
        if c.latency:
            lat.extend(c.latency)
        try:
            c.ack_outstanding()
        except OSError:
            pass
    result = {
        "role": "consumer",
        "received": sum(c.delivered for c in clients),
        "t_last": max((c.last_delivery_time for c in clients), default=0.0),
        "latency_ns": lat.tobytes(),
        "errors": errors,
    }
    _close_all(clients)
    pipe.send(("result", result))


def _consume(clients: list[Client], cfg: dict[str, Any], deadline: float | None,
             progress: Any, index: int, stop: Any) -> None:
    limit = cfg["cmessages"]
    sel = selectors.DefaultSelector()
    for c in clients:
        sel.register(c.sock, selectors.EVENT_READ, c)
    open_ = len(clients)
    monotonic = time.monotonic
    while open_:
        now = monotonic()
        if (deadline is not None and now >= deadline) or stop.value:
            break
        timeout = 0.1 if deadline is None else max(0.0, min(0.1, deadline - now))
        got = 0
        for key, _ in sel.select(timeout):
            c = key.data
            got += c.poll(None)
            if limit and c.delivered >= limit:
                sel.unregister(c.sock)
                open_ -= 1
        if got:
            progress[index] = sum(c.delivered for c in clients)
    progress[index] = sum(c.delivered for c in clients)
