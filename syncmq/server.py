"""Wiring: builds the broker, the worker pool and the reactor, and owns start and stop.

Signal handlers (installed by :meth:`Server.serve_forever`) only put the signal number on a
queue; the main thread acts on it: SIGTERM/SIGINT shut down gracefully (stop accepting, close
every connection with 320 CONNECTION_FORCED, wait a bounded time for them to go, stop threads),
SIGHUP reloads ``--users-file``, calls the ``on_hup`` hook (log reopening) and logs what it did.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable

from . import __version__, memory
from .alarms import ResourceMonitor
from .broker.auth import UsersFileError, UserStore, data_dir_store
from .broker.broker import Broker
from .broker.durability import Durability
from .journal.writer import Journal
from .management import App, HTTPSettings, ManagementServer, MetricsOnly
from .management import Context as ManagementContext
from .management import users as management_users
from .methods import access
from .methods.registry import HANDLERS
from .methods.session import Session, Settings
from .options import ServerConfig
from .queues.spill import SPILL_DIR, BodyStore
from .reactor import Reactor, Transport
from .shovel import upstreams
from .shovel.manager import Shovels
from .shovel.worker import LocalNode
from .wire import _spec
from .workers import WorkerPool

log = logging.getLogger("syncmq.server")


class Server:
    def __init__(self, config: ServerConfig, broker: Broker | None = None) -> None:
        self.config = config
        self.journal: Journal | None = None
        self.durability: Durability | None = None
        if config.journal and broker is None:
            self.journal = Journal(config.data_dir, fsync=config.fsync,
                                   segment_bytes=config.journal_segment_bytes,
                                   on_error=self._journal_failed)
            self.durability = Durability(self.journal)
        # Memory budget: bodies of queued messages beyond it spill to <data-dir>/spill
        self.body_store: BodyStore | None = None
        if config.memory_budget > 0 and broker is None:
            self.body_store = BodyStore(os.path.join(config.data_dir, SPILL_DIR),
                                        config.memory_budget)
            self.body_store.page_window = max(0, config.queue_page_window)
            if self.journal is not None:
                # persistent bodies already journaled are read back from it, not spilled
                self.body_store.attach_journal(self.journal.reader)
        self.broker = broker or Broker(durability=self.durability, body_store=self.body_store)
        self.broker.flow_limits.set(config.queue_flow_high)  # before any queue exists
        self.broker.flow_limits.set_bytes(config.queue_flow_high_bytes)
        if self.journal is not None and not config.users_file:
            # no --users-file: the users store (users, permissions, topic permissions, user
            # limits) is kept in the data dir, written as a users file is (auth.data_dir_store)
            self.set_users(data_dir_store(config.data_dir))
        self.settings = Settings(
            frame_max=config.frame_max,
            channel_max=config.channel_max,
            heartbeat=config.heartbeat,
            max_message_size=config.max_message_size,
            cert_login_from=config.ssl_cert_login_from,
            server_properties=dict(config.server_properties or {}),
        )
        # glibc: few arenas and a fixed mmap threshold, before the worker threads exist, so
        # that memory freed after a burst can be given back (syncmq.memory)
        memory.limit_arenas()
        self.pool = WorkerPool(config.workers)
        self.reactor = Reactor(self.pool, self._make_session, config.handshake_timeout,
                               config.max_connections, config.max_pending_output,
                               config.max_handshakes)
        # Broker timers (TTL expiry, x-expires): the reactor owns timers, a worker runs them
        timer_worker = self.pool.workers[0]
        self.broker.scheduler.hook = lambda delay, fn: self.reactor.call_later(
            delay, timer_worker.submit, fn)
        # Guards ``sessions``: sessions are added by the reactor thread and removed by workers.
        self._sessions_lock = threading.Lock()
        self.sessions: set[Session] = set()
        self.address: tuple[str, int] | None = None
        self.tls_address: tuple[str, int] | None = None  # the TLS listener's, when there is one
        self.signals: queue.SimpleQueue = queue.SimpleQueue()
        self.on_hup: Callable[[], None] | None = None
        # Configuration files read before the server was made (``--config``; cli.main sets
        # it): the management API lists them with ``--users-file`` (``config_files``).
        self.config_files: list[str] = []
        # Set by the ``syncmq`` command (its own process): freeze the start-up heap before
        # recovery (``memory.freeze_heap``); an embedded broker leaves its host's heap alone.
        self.freeze_heap = False
        self.started_at = time.time()
        self.management: ManagementServer | None = None
        self.prometheus: ManagementServer | None = None  # --prometheus-port's listener
        # dynamic shovels (runtime parameters ``shovel``); started once the listener is bound
        self.shovels = Shovels(f"syncmq@{socket.gethostname()}", self.settings.cluster_name,
                               clear=self._clear_shovel, users=lambda: self.broker.users)
        self.broker.parameters.register("shovel", validate=self.shovels.validate,
                                        apply=self.shovels.apply,
                                        validate_user=self.shovels.validate_user)
        # the federation plugin's parameters: validated as RabbitMQ does, stored, not run
        self.broker.parameters.register("federation-upstream",
                                        validate=upstreams.validate_upstream)
        self.broker.parameters.register("federation-upstream-set",
                                        validate=upstreams.validate_set)

    def _make_session(self, transport: Transport) -> Session:
        s = Session(transport, self.broker, self.settings, HANDLERS, self._session_closed)
        with self._sessions_lock:
            self.sessions.add(s)
        return s

    def _session_closed(self, session: Session) -> None:
        with self._sessions_lock:
            self.sessions.discard(session)

    def set_users(self, store: UserStore) -> None:
        """Create the store's vhosts, then swap it in (one attribute store: atomic). Open
        connections keep working; logins and permission checks from now on use ``store``."""
        for name in store.vhosts:
            self.broker.add_vhost(name)
        self.broker.users = store

    def reload_users(self) -> bool:
        """SIGHUP: re-read ``--users-file``. A bad file is logged and the old store kept."""
        path = self.config.users_file
        if not path:
            return False
        try:  # under the API's users lock (management.users.reload): never a stale store
            store = management_users.reload(lambda: UserStore.load(path), self.set_users)
        except UsersFileError as e:
            log.error("users file not reloaded, keeping the previous one: %s", e,
                      extra={"users_file": path})
            return False
        with self._sessions_lock:
            sessions = list(self.sessions)
        for s in sessions:  # each on its own worker, which owns its channels
            s.transport.worker.submit(access.clear_caches, s)
        log.info("users file reloaded", extra={"users_file": path, **store.summary()})
        return True

    def hangup(self) -> list[str]:
        """SIGHUP: re-read ``--users-file`` and reopen ``--log-file`` (the ``on_hup`` hook),
        then log one line saying what was done (``reloaded``: what was; a users file that
        failed to load is logged by :meth:`reload_users` and left out). Returns ``reloaded``."""
        reloaded = []
        if self.config.users_file and self.reload_users():
            reloaded.append("users_file")
        if self.on_hup is not None:
            self.on_hup()
            reloaded.append("log_file")
        what = {"users_file": "users file reloaded", "log_file": "log file reopened"}
        text = ", ".join(what[r] for r in reloaded) or "nothing to reload (no --users-file " \
            "loaded, no --log-file)"
        log.info("SIGHUP: %s", text, extra={"reloaded": reloaded})
        return reloaded

    def tls_context(self) -> ssl.SSLContext:
        """The TLS listener's context: TLS 1.2 or newer only, the configured certificate, and
        client-certificate verification as configured."""
        c = self.config
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(c.tls_cert, c.tls_key)
        if c.tls_ca:
            ctx.load_verify_locations(c.tls_ca)
        if c.tls_fail_if_no_peer_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
        elif c.tls_verify_peer:
            ctx.verify_mode = ssl.CERT_OPTIONAL
        else:
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _journal_failed(self, exc: Exception) -> None:
        log.error("journal write failed; persistent publishes are nacked until it recovers: %s",
                  exc, extra={"data_dir": self.config.data_dir})

    def recover(self) -> dict:
        """Open the journal and rebuild durable state from it (before listening)."""
        if self.journal is None:
            if self.body_store is not None:
                self.body_store.open()
            return {}
        self.journal.open()
        if self.body_store is not None:
            self.body_store.open()  # empties the spill directory: only once we hold the lock
        t0 = time.monotonic()
        counts = self.durability.recover_into(self.broker)
        counts["seconds"] = round(time.monotonic() - t0, 3)
        self.journal.start()
        self.durability.journal_started()
        return counts

    def start(self) -> tuple[str, int]:
        """Recover, bind, start the threads; returns the bound address (port 0 gets an
        ephemeral one). All or nothing: if any step fails, what was started is stopped
        (sockets closed, journal released) before the exception propagates."""
        try:
            return self._start()
        except BaseException:
            self._undo_start()
            raise

    def _undo_start(self) -> None:
        self.shovels.stop_all()
        for http in (self.prometheus, self.management):
            if http is not None:
                http.stop()
        if self.reactor.thread is None:
            self.reactor._shutdown_sockets()  # never ran: nothing else touches its sockets
        else:
            self.reactor.stop()
        self.pool.stop()
        if self.journal is not None:
            self.journal.close()
        if self.body_store is not None:
            self.broker.close_pages()  # (recovery may have paged a backlog out)
            self.body_store.close()
        if self.journal is not None:
            self.journal.reader.close()

    def _start(self) -> tuple[str, int]:
        # (before recovery: what it builds stays collectable; no client is served yet)
        frozen = memory.freeze_heap() if self.freeze_heap else None
        recovered = self.recover()
        self.address = self.reactor.listen(self.config.bind, self.config.port)
        listeners = [{"protocol": "amqp", "ip_address": self.address[0],
                      "port": self.address[1]}]
        extra: dict = {"recovered": recovered} if recovered else {}
        if self.body_store is not None:
            extra["memory_budget"] = self.config.memory_budget
        if self.config.tls_port is not None:
            taddr = self.tls_address = self.reactor.listen(
                self.config.bind, self.config.tls_port, ssl_context=self.tls_context())
            listeners.append({"protocol": "amqp/ssl", "ip_address": taddr[0],
                              "port": taddr[1]})
            extra["tls_port"] = taddr[1]
        if self.config.management_port is not None:
            maddr = self._start_management(listeners)
            listeners.append({"protocol": "http", "ip_address": maddr[0], "port": maddr[1]})
            extra["management_port"] = maddr[1]
        if self.config.prometheus_port is not None:
            paddr = self._start_prometheus()
            listeners.append({"protocol": "http/prometheus", "ip_address": paddr[0],
                              "port": paddr[1]})
            extra["prometheus_port"] = paddr[1]
        self.pool.start()
        self.monitor = ResourceMonitor(
            self.broker, self._session_list, self.reactor.call_later,
            self.config.memory_high_watermark, self.config.disk_free_limit,
            self.config.data_dir,
        )
        self.monitor.start()  # also accounts memory (mem_used) and gives it back after bursts
        if frozen is not None:
            extra["gc"] = memory.gc_census()
        self.reactor.start()
        self.shovels.set_local(self._local_node())
        log.info(
            "syncmq %s started", __version__,
            extra={"version": __version__, "listener": f"{self.address[0]}:{self.address[1]}",
                   "port": self.address[1], "listeners": listeners, **extra,
                   "data_dir": self.config.data_dir, "workers": self.config.workers,
                   "allocator": memory.running_allocator()},
        )
        return self.address

    def _local_node(self) -> LocalNode:
        """How a shovel's ``amqp://`` reaches this broker: its plain listener (a wildcard
        bind is reached on loopback) and the internal login."""
        host = self.address[0]
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        return LocalNode(host, self.address[1], self.broker.internal_login.USERNAME,
                         self.broker.internal_login.password)

    def _clear_shovel(self, vhost: str, name: str) -> None:
        """A shovel reached its ``src-delete-after``: clear its parameter (the store then
        stops it)."""
        self.broker.parameters.clear("shovel", vhost, name)

    def _management_context(self, listeners: list[dict]) -> ManagementContext:
        """What the management layer is given (shared by its two listeners)."""
        def close(s: Session, code: int, text: str) -> None:
            s.transport.worker.submit(s.close, code, text)

        return ManagementContext(
            broker=self.broker, sessions=self._session_list,
            node=f"syncmq@{socket.gethostname()}",
            version=__version__, started_at=self.started_at, data_dir=self.config.data_dir,
            listeners=listeners, cluster_name=self.settings.cluster_name,
            close_connection=close,
            tls_files=[f for f in (self.config.tls_cert, self.config.tls_ca)
                       if f and self.config.tls_port is not None],
            shovels=self.shovels,
            mem_limit=self.config.memory_high_watermark,
            disk_free_limit=self.config.disk_free_limit,
            config_files=[os.path.abspath(f) for f in (*self.config_files,
                                                        self.config.users_file) if f],
            log_files=[os.path.abspath(self.config.log_file) if self.config.log_file
                       else "<stderr>"],
            memory_parts=self._memory_parts,
        )

    def _memory_parts(self) -> dict[str, int]:
        """The memory breakdown, accounted now (``?memory=true``, ``syncmqctl status``: asked
        for, as RabbitMQ computes its breakdown on request), not the monitor's last sample,
        which may predate what the caller just did (it walks the broker the way the monitor
        does, without its locks)."""
        monitor = getattr(self, "monitor", None)
        if monitor is None:
            return {}
        return memory.accounted_memory(self.broker, monitor.sessions(), monitor.baseline)

    def _http_settings(self) -> HTTPSettings:
        c = self.config
        return HTTPSettings(
            max_body=c.management_max_body, max_definitions_body=c.management_max_definitions_body,
            read_timeout=c.management_read_timeout, idle_timeout=c.management_idle_timeout,
            max_connections=c.management_max_connections, threads=c.management_threads,
            metrics_auth=c.metrics_auth, cors_origins=tuple(c.management_cors_origin))

    def _start_management(self, listeners: list[dict]) -> tuple[str, int]:
        """Start the management HTTP API (``syncmq.management``), bound like the AMQP port.
        ``listeners`` is the list the API shows (the Prometheus listener joins it later)."""
        c = self.config
        self.management = ManagementServer(self._management_context(listeners), c.bind,
                                           c.management_port, self._http_settings())
        return self._bind_http(self.management, c.management_port, "management")

    def _start_prometheus(self) -> tuple[str, int]:
        """Start the Prometheus port: the management application's ``/metrics`` endpoints
        (the same renderings), or an application of its own, never started (no history
        sampler), when the management API is off."""
        c = self.config
        if self.management is not None:
            app = self.management.app
            ctx, settings = app.ctx, self.management.settings
        else:
            ctx, settings = self._management_context([]), self._http_settings()
            app = App(ctx, settings)
        self.prometheus = ManagementServer(ctx, c.bind, c.prometheus_port, settings,
                                           app=MetricsOnly(app), name="syncmq-prometheus")
        return self._bind_http(self.prometheus, c.prometheus_port, "prometheus")

    def _bind_http(self, http: ManagementServer, port: int, what: str) -> tuple[str, int]:
        try:
            return http.start()
        except OSError as e:
            raise OSError(e.errno, e.strerror, f"{self.config.bind}:{port} ({what})") from None

    def _session_list(self) -> list[Session]:
        with self._sessions_lock:
            return list(self.sessions)

    def threads(self) -> list[threading.Thread]:
        """Every thread this server started (reactor, workers, journal, management)."""
        out = [w.thread for w in self.pool.workers]
        if self.reactor.thread is not None:
            out.append(self.reactor.thread)
        if self.journal is not None and self.journal.thread is not None:
            out.append(self.journal.thread)
        for http in (self.management, self.prometheus):
            if http is not None:
                out.extend(http.threads())
        out.extend(self.shovels.threads())
        return out

    def stop(self, graceful: bool = True) -> None:
        """Shutdown: stop accepting, close connections with 320 (``graceful=False``: drop
        them without a close, as a node that dies), stop and join the threads."""
        log.info("shutting down")
        self.shovels.stop_all()  # first: their connections close cleanly, unacked requeued
        for http in (self.prometheus, self.management):
            if http is not None:
                http.stop()
        self.reactor.stop_accepting()
        if graceful:
            self._close_sessions()
        self.reactor.stop()
        self.pool.stop()
        if self.journal is not None:
            self.journal.close()
            log.info("journal flushed and closed", extra={"data_dir": self.config.data_dir})
        if self.body_store is not None:
            stats = self.body_store.stats()
            self.broker.close_pages()  # each queue closes its page files
            self.body_store.close()  # spilled bodies are transient: their files go
            log.info("body store closed", extra={"body_store": stats})
        if self.journal is not None:
            self.journal.reader.close()  # the segment fds the body store referenced
        log.info("stopped")

    def _close_sessions(self) -> None:
        with self._sessions_lock:
            sessions = list(self.sessions)
        text = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
        for s in sessions:
            s.transport.worker.submit(s.close, _spec.CONNECTION_FORCED, text)
        deadline = time.monotonic() + self.config.shutdown_timeout
        while time.monotonic() < deadline and self.reactor.transports:
            time.sleep(0.05)

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to stop (thread-safe)."""
        self.signals.put(signal.SIGTERM)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT/SIGHUP only enqueue; call before :meth:`start` so that a signal
        arriving during start-up is not lost (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda signum, _frame: self.signals.put(signum))

    def serve_forever(self) -> None:
        """Run until SIGTERM/SIGINT (or :meth:`request_stop`); then shut down gracefully."""
        while True:
            try:
                signum = self.signals.get(timeout=1.0)
            except queue.Empty:
                continue
            if signum == signal.SIGHUP:
                self.hangup()
                continue
            break
        self.stop()
