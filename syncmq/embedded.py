"""``syncmq.Server``: a broker inside this process (tests, tools, applications).

``Server(**options)`` takes the command-line options (``syncmq.options.OPTIONS``, ``-`` spelt
``_``: ``Server(max_message_size="1MiB", users_file="users.toml")``) with defaults that suit
tests: an ephemeral port, a temporary data dir removed at :meth:`Server.stop` (unless
``data_dir`` is given), no management API (``management_port=0`` starts it on an ephemeral
port) and no Prometheus port (``prometheus_port=0``), no resource alarms (they would measure the whole test process, not the broker), and
logging left alone unless one of ``log_level``/``log_format``/``log_file`` is given (then a
handler on the ``syncmq`` logger, removed at stop). No signal handlers: those are the CLI's.

Nothing is global: every server has its own threads (``syncmq-reactor``, ``syncmq-worker-N``,
``syncmq-journal``, ``syncmq-management*``, ``syncmq-prometheus``), sockets and data dir, so several run in one process.
:meth:`start` returns once the listener accepts connections; :meth:`stop` closes every
connection with 320 CONNECTION_FORCED (as RabbitMQ does at shutdown), flushes the journal and
joins every thread it started. One thread (the caller's) drives start/stop/restart.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import urllib.parse
from typing import Any

from .broker.auth import UserStore
from .options import make_config
from .server import Server as _Node

__all__ = ["Server"]

#: Where embedded defaults differ from the command line's (see the module docstring).
EMBEDDED_DEFAULTS: dict[str, Any] = {
    "port": 0, "data_dir": None, "management_port": -1, "prometheus_port": -1,
    "memory_high_watermark": 0, "disk_free_limit": 0,
}
_LOG_OPTIONS = ("log_level", "log_format", "log_file")


class Server:
    """A syncmq broker in this process. Use as a context manager or with start()/stop()."""

    def __init__(self, **options: Any) -> None:
        values = dict(EMBEDDED_DEFAULTS)
        values.update(options)
        self._own_data_dir = values.get("data_dir") is None
        self._log_asked = {k: values.pop(k) for k in _LOG_OPTIONS if k in options}
        self.config = make_config(values)  # ValueError/TypeError naming a bad option, now
        self._node: _Node | None = None
        self._handler: logging.Handler | None = None
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ----

    def start(self) -> Server:
        """Recover from the data dir, listen, start the threads. Returns self. Raises OSError
        (address in use), ``JournalError`` (the data dir is another broker's) or
        ``UsersFileError``; then nothing is left running and a temporary data dir is gone."""
        if self._node is not None:
            raise RuntimeError("syncmq.Server already started")
        if self.config.data_dir is None:
            self.config.data_dir = tempfile.mkdtemp(prefix="syncmq-")
        self._configure_logging()
        try:
            node = _Node(self.config)
            if self.config.users_file:  # UsersFileError names what is wrong in the file
                node.set_users(UserStore.load(self.config.users_file))
            node.start()
        except BaseException:
            self._cleanup()
            raise
        self._node = node
        self._threads = node.threads()
        return self

    def stop(self) -> None:
        """Graceful: close connections (320), flush the journal, join every thread, then
        remove the data dir if it was a temporary one. Idempotent."""
        node, self._node = self._node, None
        if node is not None:
            self._stop_node(node)
        self._cleanup()

    def restart(self, *, crash: bool = False) -> Server:
        """Stop and start again on the same data dir and port (durable state recovered, as
        after a broker restart). ``crash=True`` drops every connection without a
        ``connection.close`` (clients see the socket reset, as when a node dies) before the
        restart; what was written to the journal is kept either way."""
        node, self._node = self._node, None
        if node is None:
            raise RuntimeError("syncmq.Server is not running")
        self._stop_node(node, crash=crash)
        self.config.port = node.address[1]  # the same port: clients reconnect to it
        if node.management is not None:  # 0 (ephemeral) included: keep the port it got
            self.config.management_port = node.management.address[1]
        if self.config.prometheus_port is not None and node.prometheus is not None:
            self.config.prometheus_port = node.prometheus.address[1]
        if node.tls_address is not None:
            self.config.tls_port = node.tls_address[1]
        return self.start()

    def reload_users(self) -> bool:
        """Re-read ``users_file`` (what SIGHUP does to the command-line broker); a bad file
        is logged and the previous users kept (returns False)."""
        return self.node.reload_users()

    def _stop_node(self, node: _Node, crash: bool = False) -> None:
        node.stop(graceful=not crash)
        for t in self._threads:
            t.join()
        self._threads = []

    def _cleanup(self) -> None:
        if self._own_data_dir and self.config.data_dir is not None:
            shutil.rmtree(self.config.data_dir, ignore_errors=True)
            self.config.data_dir = None
        if self._handler is not None:
            logger = logging.getLogger("syncmq")
            logger.removeHandler(self._handler)
            logger.setLevel(self._saved_level)
            self._handler.close()
            self._handler = None

    def _configure_logging(self) -> None:
        if not self._log_asked or self._handler is not None:
            return
        from .config import log_handler  # python-json-logger only when asked
        a = self._log_asked
        self._handler = log_handler(a.get("log_format", "text"), a.get("log_file"))
        logger = logging.getLogger("syncmq")
        self._saved_level = logger.level
        logger.addHandler(self._handler)
        logger.setLevel(str(a.get("log_level", "info")).upper())

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- where it is ----

    @property
    def running(self) -> bool:
        return self._node is not None

    @property
    def node(self) -> _Node:
        if self._node is None:
            raise RuntimeError("syncmq.Server is not running")
        return self._node

    @property
    def host(self) -> str:
        return self.node.address[0]

    @property
    def port(self) -> int:
        return self.node.address[1]

    @property
    def tls_port(self) -> int | None:
        """The amqps listener's port (``tls_port=0`` binds an ephemeral one), or None."""
        a = self.node.tls_address
        return None if a is None else a[1]

    @property
    def data_dir(self) -> str:
        return self.config.data_dir

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:PORT/`` (the default vhost "/")."""
        return self.vhost_url("/")

    def vhost_url(self, vhost: str, user: str = "guest", password: str = "guest") -> str:
        q = urllib.parse.quote
        return f"amqp://{q(user, '')}:{q(password, '')}@{self._netloc(self.port)}/{q(vhost, '')}"

    @property
    def management_url(self) -> str | None:
        """``http://127.0.0.1:PORT/`` of the management API, or None when it is off."""
        m = self.node.management
        return None if m is None else f"http://{self._netloc(m.address[1])}/"

    def _netloc(self, port: int) -> str:
        host = self.host
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def threads(self) -> list[threading.Thread]:
        """This server's threads that are alive (empty after stop)."""
        return [t for t in self._threads if t.is_alive()]

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self.running else "stopped"
        return f"<syncmq.Server {where} data_dir={self.config.data_dir!r}>"
