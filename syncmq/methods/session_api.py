"""What a :class:`~syncmq.methods.session.Session` needs and offers, apart from the session
itself: the transport it writes to (a protocol the reactor's ``Transport`` meets), the
per-connection settings the server gives it, and the capabilities it announces."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["SERVER_CAPABILITIES", "Settings", "Transport"]


class Transport(Protocol):
    """What a session needs of its connection's transport (``syncmq.reactor.Transport``,
    which lives a layer above and is therefore not imported here). All thread-safe."""

    peer: Any
    pending_out: int  # unsent output bytes (read without a lock: see ``throttle``)
    out_high: int  # the output high watermark

    def throttle(self) -> bool: ...
    def write(self, chunks: list) -> None: ...
    def write1(self, data: bytes) -> None: ...
    def close_after_flush(self) -> None: ...
    def abort(self) -> None: ...
    def stop_reading(self) -> None: ...
    worker: Any  # the connection's worker (``submit``)

    def pause_reading(self, reason: str = "alarm") -> None: ...
    def resume_reading(self, reason: str = "alarm") -> None: ...
    def set_frame_max(self, frame_max: int) -> None: ...
    def set_heartbeat(self, seconds: int) -> None: ...
    def mark_open(self) -> bool | None: ...
    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None: ...


@dataclass
class Settings:
    """Limits the server offers in connection.tune, and other per-connection settings."""

    frame_max: int = 131072
    channel_max: int = 2047
    heartbeat: int = 60
    max_message_size: int = 128 * 1024 * 1024
    product: str = "syncmq"
    cluster_name: str = "syncmq@localhost"
    cert_login_from: str = "common_name"  # EXTERNAL: broker.certname.MODES
    server_properties: dict = field(default_factory=dict)  # --server-properties overrides


SERVER_CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": True,
}
