"""The reactor's send side (a mixin of :class:`~.loop.Reactor`): the reactor's flush, a
worker's direct send, closing after a flush, heartbeats and the bad-header reply.

Both send paths use the transport's :class:`~.outbuf.OutBuffer`: ``_send_chunks`` (the one
send loop: partial sends, "try again") and ``_account`` (the one accounting: bytes out, pending
bytes, the throttle's drain) under ``out_lock``. Who may send when: the direct send
(:meth:`Sender._send_direct`) only under ``out_lock`` with ``flushing`` clear and ``sending``
empty, from a worker at the end of its task or from the reactor thread standing in for an
idle worker (``Worker.stand_in``: at the end of the task, and at the task's first write,
``Transport._wake``); the reactor's flush with ``flushing`` set, which it sets and clears
under the lock (:meth:`Sender._flush`). Everything here but ``_flush_later`` and
``_send_direct`` runs on the reactor thread.
"""

from __future__ import annotations

import array
import fcntl
import socket
import termios
import time
from typing import TYPE_CHECKING, Any

from ..protocol.connection import HEARTBEAT
from ..wire.frames import PROTOCOL_HEADER
from .transport import SENT_AT_ONCE, Transport, _fmt_peer, log

if TYPE_CHECKING:
    from collections.abc import Callable


def _unread_input(sock: socket.socket) -> int:
    """Bytes the kernel holds for us unread (FIONREAD); -1 if unknown."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf, True)
    except (OSError, ValueError):
        return -1
    return buf[0]


class Sender:
    """The send half of the reactor."""

    __slots__ = ()

    call_soon: Callable[..., None]
    _lost: Callable[[Transport], None]
    _update_events: Callable[[Transport], None]
    _add_timer: Callable[[float, Any, tuple], None]

    def _flush_later(self, transports: list) -> None:
        """A worker's task left output for ``transports`` (called on that worker, or on the
        reactor thread after it stood in for the worker): send what can be sent now from this
        thread, and have the reactor flush the rest. ``SENT_AT_ONCE`` (the reactor standing
        in sent the task's first write at once: ``Transport._wake``) is skipped."""
        left = None  # (a loop, not a comprehension: no extra frame for the usual one)
        for t in transports:
            if t is SENT_AT_ONCE:
                continue
            if not self._send_direct(t):
                if left is None:
                    left = []
                left.append(t)
        if left:
            self.call_soon(self._flush_many, left)

    def _send_direct(self, t: Transport) -> bool:
        """On a worker, at the end of its task (or on the reactor thread standing in for one:
        at the task's first wake-up, ``Transport._wake``, and at its end): send ``t``'s
        output with non-blocking ``sendmsg`` calls from this thread, saving the reactor's
        wake-up and thread hand-off.
        True when the reactor has nothing to do for it; False when it must flush ``t`` (as
        before this existed): TLS (an SSLSocket is the reactor's alone), the reactor is
        flushing it or has chunks of it pending (they go first), reading is paused for output
        (only the reactor's flush resumes it), the connection is closing or aborted, or
        something is left (a partial send, EAGAIN, an error for the reactor to handle).

        Everything happens under ``out_lock``: the reactor takes it before it touches
        ``sending`` or sends (and sets ``flushing`` while it sends without it), and closes the
        socket under it, so the reactor and a worker never send on one socket at once."""
        if t.tls:
            return False
        with t.out_lock:
            if not t.out or t.closed:
                return True  # someone else took it (and handles the rest) or it is gone
            if t.flushing or t.sending or t.paused_output or t.close_when_flushed or t.aborted:
                return False
            t.out, t.sending = t.sending, t.out  # take the queued chunks (sending is empty)
            # (all of pending_out is in them: out and sending are all there is)
            sent, error, _ = t._send_chunks(t.sock.sendmsg, t.pending_out)
            drained = t._account(sent)
            left = bool(t.sending)  # the reactor sends the rest (or meets the error)
        if drained:
            t.worker.submit(t.handler.output_drained)
        return not left and error is None

    def _flush_many(self, transports: list) -> None:
        for t in transports:
            self._flush(t)

    def _bad_header(self, t: Transport) -> None:
        """A wrong protocol header: answer with ours and close, as the spec says."""
        log.info("bad AMQP protocol header from %s", _fmt_peer(t.peer))
        t.discard_input = True
        t.inbuf = bytearray()
        t.write1(PROTOCOL_HEADER)
        self._close_after_flush(t)

    def _flush(self, t: Transport) -> None:
        """Send what ``t`` has queued until done or the kernel buffer is full (then wait for
        EVENT_WRITE); then account, decide the output pause, and close if asked to."""
        if t.closed:
            return
        with t.out_lock:
            t.flushing = True  # sending and sock are ours until we clear it (_send_direct)
            if t.out:
                t.sending.extend(t.out)
                t.out.clear()
        send = t._send_tls if t.tls else t.sock.sendmsg
        sent = 0
        while True:
            n, error, blocked = t._send_chunks(send)
            sent += n
            if error is not None or blocked:
                break
            with t.out_lock:
                if not t.out:
                    break
                t.sending.extend(t.out)
                t.out.clear()
        with t.out_lock:
            t.flushing = False
            drained = t._account(sent)
            # decided under the lock: _send_direct leaves a paused transport to us
            update = t._pause_changed()
        if error is not None:
            self._lost(t)
            return
        if drained:
            t.worker.submit(t.handler.output_drained)
        if update:
            self._update_events(t)
        if t.sending:
            if not t.writing:
                t.writing = True
                self._update_events(t)
        else:
            if t.writing:
                t.writing = False
                self._update_events(t)
            if t.close_when_flushed:
                self._lost(t)

    def _close_after_flush(self, t: Transport) -> None:
        if t.closed:
            return
        t.close_when_flushed = True
        self._flush(t)

    # ---- heartbeats ----

    def _start_heartbeat(self, t: Transport, seconds: int) -> None:
        t.heartbeat = seconds
        if seconds > 0 and not t.closed:
            self._add_timer(time.monotonic() + seconds / 2, self._heartbeat_tick, (t,))

    def _heartbeat_tick(self, t: Transport) -> None:
        if t.closed or t.heartbeat <= 0:
            return
        now = time.monotonic()
        hb = t.heartbeat
        if t.paused_output:
            # we stopped reading because the peer does not read; it is alive while it sends
            # (heartbeats pile up unread in the kernel: RabbitMQ keeps reading such a peer)
            # or takes bytes. Neither for two intervals: as dead as a silent one.
            unread = _unread_input(t.sock)
            if unread < 0 or unread != t.unread_in:  # (unknown: assume alive, as before)
                t.unread_in = unread
                t.last_recv = now
            if now - t.last_send > 2 * hb and now - t.last_recv > 2 * hb:
                log.warning(
                    "client %s has neither read nor sent anything for %ds (heartbeat timeout "
                    "%ds); closing connection", _fmt_peer(t.peer), int(now - t.last_send), hb,
                )
                self._lost(t)
                return
        elif t.paused_flow or t.paused_by:
            t.last_recv = now  # we are not reading: silence is ours, not the peer's
        elif now - t.last_recv > 2 * hb:
            log.warning(
                "missed heartbeats from client %s, timeout: %ds; closing connection",
                _fmt_peer(t.peer), hb,
            )
            self._lost(t)
            return
        if now - t.last_send >= hb / 2:
            t.write1(HEARTBEAT)  # through the buffer, after what is queued
            self._flush(t)
        self._add_timer(now + hb / 2, self._heartbeat_tick, (t,))
