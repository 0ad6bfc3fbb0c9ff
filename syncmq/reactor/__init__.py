"""The reactor: the one thread that owns the selector, every socket, outbound buffer and timer.

What it does, per wake-up (each bounded):

- readable listener: ``accept`` every pending connection, make a :class:`Transport` for it, pin it
  to a worker and ask the server's handler factory for its protocol handler.
- readable connection: ``recv`` once (up to ``RECV_SIZE``), check the 8-byte protocol header on a
  new connection and hand what came to the connection's worker in one ``submit``; the worker
  cuts out every complete frame with :func:`syncmq.wire.frames.split_frames` (``_handle_data``),
  so that a publisher's large read does not hold up the reactor's turn for everyone else.
- writable connection / wake-up: write the connection's pending chunks with ``socket.sendmsg``
  (scatter/gather; bodies are never joined into one buffer).
- due timers: heartbeats (send when idle, close when the peer has been silent for two intervals)
  and the handshake timeout.

Workers talk to the reactor only through :class:`Transport` methods; output goes through the
transport's :class:`OutBuffer` (``write`` appends under its ``out_lock``). When its chunk list
goes from empty to non-empty on a worker, the transport is deferred to the end of the worker's
task; then the worker sends it itself (``Reactor._send_direct``: plain TCP, only while the
reactor has nothing of it to send and is not flushing it, non-blocking ``sendmsg`` under
``out_lock``) and wakes the reactor through the one wake-up pipe only for what is left (a
partial send, EAGAIN, TLS, a paused or closing connection). This saves the wake-up and the
hand-off to the reactor thread on every delivery at low rates. The reactor runs broker logic
only in a worker's place: a small light read while every worker is idle is handled on the
reactor thread as that worker's task (``Worker.stand_in``, ``reading.Reader._read``; its
first write is sent at once, the rest at the end of the task); every other handler callback
is submitted to the connection's worker.

Modules: ``outbuf`` (:class:`OutBuffer`: chunks, byte count, throttle, lock; the one send loop
and accounting), ``transport`` (:class:`Transport`, who owns which field), ``reading`` (the
receive side), ``sending`` (the send side: flush, direct send, heartbeats), ``loop``
(:class:`Reactor`: the loop, timers, accept, close, shutdown).
"""

from .loop import OUT_HIGH, OUT_LOW, Reactor
from .outbuf import IOV_MAX, OutBuffer
from .reading import ACCEPTED_HEADERS, FLOW_HIGH, FLOW_LOW, FRAME_MAX_SLACK, RECV_SIZE
from .transport import HANDSHAKE_FRAME_MAX, TLS_SEND_MAX, Handler, HandlerFactory, Transport

__all__ = [
    "Reactor", "Transport", "OutBuffer", "Handler", "HandlerFactory", "OUT_HIGH", "OUT_LOW",
    "IOV_MAX", "ACCEPTED_HEADERS", "FLOW_HIGH", "FLOW_LOW", "FRAME_MAX_SLACK", "RECV_SIZE",
    "HANDSHAKE_FRAME_MAX", "TLS_SEND_MAX",
]
