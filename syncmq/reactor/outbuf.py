"""The outbound half of a connection: queued chunks, their byte count, the output throttle and
the lock that guards them, with the one send loop and the one accounting that both send paths
use (the reactor's flush and a worker's direct send, see ``sending.py``).

Ownership (``out_lock`` guards every field below; it is a leaf lock: nothing else is taken
while it is held):

- ``out``: chunks queued by :meth:`OutBuffer.write` (any thread), not yet taken by a sender.
- ``sending``: chunks a sender took from ``out``, in order, the first maybe partly sent (a
  ``memoryview`` of its rest). They and the socket belong to the reactor while ``flushing`` is
  set (it sets and clears the flag under the lock and sends without holding it); otherwise to
  whoever holds the lock: the direct send (a worker, or the reactor standing in for one) sends
  only under the lock, with ``flushing`` clear and ``sending`` empty, so two senders never
  send at once and never out of order.
- ``pending_out``: bytes in ``out`` and ``sending`` (added by ``write``, subtracted by
  :meth:`_account`); also read without the lock by the deliveries' throttle check, where a
  stale read is settled by :meth:`throttle` under the lock.
- ``bytes_out``, ``last_send``: what was sent and when (for metrics and heartbeats).
- ``throttled``: a delivery was refused for output since the last drain; the sender that brings
  ``pending_out`` down to ``out_low`` clears it and has ``output_drained`` called.
- ``paused_output``: reading is paused for output (set and cleared by the reactor's flush).
- ``closed``: no more output (set with the socket's close, so a direct send never uses a closed
  or reused fd).

Invariant (:meth:`_check`): ``pending_out`` is the total length of ``out`` and ``sending``.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable

IOV_MAX = 512  # chunks per sendmsg call (Linux allows 1024)


class OutBuffer:
    """Pending output of one connection; see the module docstring for who owns what."""

    __slots__ = (
        "out_lock", "out", "sending", "pending_out", "bytes_out", "last_send", "out_high",
        "out_low", "throttled", "paused_output", "flushing", "closed",
    )

    def __init__(self, out_high: int, out_low: int) -> None:
        self.out_lock = threading.Lock()
        self.out: list = []
        self.sending: list = []
        self.pending_out = 0
        self.bytes_out = 0
        self.last_send = time.monotonic()
        self.out_high = out_high
        self.out_low = out_low
        self.throttled = False
        self.paused_output = False
        self.flushing = False
        self.closed = False

    def _wake(self) -> None:
        """Called (without the lock) when ``out`` went from empty to non-empty: get a sender
        to send it. The transport overrides this."""

    def write(self, chunks: list) -> None:
        """Queue ``chunks`` (bytes or memoryviews) for sending, in order. Thread-safe."""
        if self.closed:
            return
        n = sum(map(len, chunks))  # (in C: no bytecode per chunk)
        with self.out_lock:
            was_empty = not self.out
            self.out.extend(chunks)
            self.pending_out += n
        if was_empty:
            self._wake()

    def write1(self, data: bytes) -> None:
        """Queue one chunk. Thread-safe."""
        if self.closed:
            return
        with self.out_lock:
            was_empty = not self.out
            self.out.append(data)
            self.pending_out += len(data)
        if was_empty:
            self._wake()

    def throttle(self) -> bool:
        """Called when ``pending_out > out_high`` was read without the lock (a consumer is about
        to get a delivery): True if the output really is over the high watermark, and then
        ``output_drained`` will be called once it is down to ``out_low``; False (deliver)
        otherwise. Thread-safe."""
        if self.throttled:
            return True  # set under the lock; cleared by the sender that drains it
        with self.out_lock:
            if self.pending_out > self.out_high and not self.closed:
                self.throttled = True
                return True
        return False

    def pending_bytes(self) -> int:
        """Unsent bytes (for metrics)."""
        return self.pending_out

    # ---- for the senders (the right to send held: see the module docstring) ----

    def _send_chunks(self, send: Callable[[list], int],
                     whole: int = -1) -> tuple[int, OSError | None, bool]:
        """Send ``sending`` front first with ``send(batch) -> bytes sent`` (``sendmsg``, or
        the TLS sender) until it is empty or the kernel takes less than offered; drop what was
        sent (a partly sent chunk becomes a view of its rest). Returns ``(bytes sent, error,
        would block)``: ``error`` is an ``OSError`` other than "try again" (the connection is
        broken), ``would block`` True when the kernel buffer is full. Does not account: the
        caller calls :meth:`_account` with the bytes sent, under the lock.

        ``whole``: the total length of ``sending`` if the caller knows it (a worker's direct
        send, which took every pending byte under the lock); a first send that takes it all
        then empties the list without looking at the chunks one by one."""
        chunks = self.sending
        sent = 0
        while chunks:
            batch = chunks if len(chunks) <= IOV_MAX else chunks[:IOV_MAX]
            try:
                n = send(batch)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError,
                    ssl.SSLWantReadError):
                return sent, None, True
            except OSError as e:
                return sent, e, False
            if n == whole:  # (everything: the usual direct send)
                chunks.clear()
                return n, None, False
            sent += n
            nb = len(batch)
            i = 0
            while i < nb:
                size = len(batch[i])
                if size > n:
                    break
                n -= size
                i += 1
            del chunks[:i]
            if i < nb:
                # partial: the kernel buffer is full
                if n:
                    chunks[0] = memoryview(chunks[0])[n:]
                return sent, None, True
        return sent, None, False

    def _account(self, sent: int) -> bool:
        """``sent`` bytes left (``out_lock`` held). True when that drained a throttled buffer
        down to ``out_low``: the caller has the handler's ``output_drained`` called."""
        if not sent:
            return False
        self.bytes_out += sent
        self.last_send = time.monotonic()
        self.pending_out = pending = self.pending_out - sent
        if self.throttled and pending <= self.out_low:
            self.throttled = False
            return True
        return False

    def _pause_changed(self) -> bool:
        """Decide ``paused_output`` from the watermarks (reactor, ``out_lock`` held): paused
        above ``out_high`` until down to ``out_low``. True if it changed."""
        pending = self.pending_out
        if self.paused_output:
            if pending <= self.out_low:
                self.paused_output = False
                return True
        elif pending > self.out_high:
            self.paused_output = True
            return True
        return False

    def _check(self) -> None:
        """The invariants (tests; takes ``out_lock``)."""
        with self.out_lock:
            queued = sum(len(c) for c in self.out) + sum(len(c) for c in self.sending)
            assert self.pending_out == queued, (self.pending_out, queued)
            assert self.pending_out >= 0 and self.bytes_out >= 0
            assert not self.flushing, "a flush left flushing set"
