"""The broker's dynamic shovels: one :class:`~syncmq.shovel.worker.ShovelWorker` per runtime
parameter ``shovel`` (vhost, name).

Ownership: the definitions live in the parameter store (``broker.parameters``, component
``shovel``); this registry only runs them. It is told about changes through ``apply``
(called by the store on the thread that set or cleared the parameter, and at recovery) and
owns the map (vhost, name) -> worker, guarded by :attr:`Shovels.lock` (held only to read or
swap entries, never while a worker stops). ``apply`` runs under the store's change lock, so
it never waits for a worker: a replaced or cleared shovel's thread is told to stop and
finishes on its own (joined at shutdown).

Status rows have RabbitMQ's shape (``rabbit_shovel_mgmt:format``): ``node``, ``timestamp``,
``name``, ``vhost``, ``type`` ``dynamic``, ``state`` and, when running, the URIs without
credentials, the protocols and the source and destination; when terminated, ``reason``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from . import definition
from .worker import CLOSE_TIMEOUT, LocalNode, ShovelWorker

log = logging.getLogger("syncmq.shovel")

COMPONENT = "shovel"


def _ts(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


class Shovels:
    """Runs the shovels. ``local``: how ``amqp://`` reaches this node (None until the
    listener is bound: shovels applied before that start once :meth:`set_local` is
    called). ``clear(vhost, name)`` removes a finished shovel's parameter (the store's
    ``clear``)."""

    def __init__(self, node: str, cluster_name: str,
                 clear: Callable[[str, str], Any] | None = None,
                 users: Callable[[], Any] | None = None) -> None:
        self.node = node
        self.cluster_name = cluster_name
        self.clear = clear
        self.users = users  # the broker's current UserStore (validate_user)
        self.local: LocalNode | None = None
        self.lock = threading.Lock()
        self.workers: dict[tuple[str, str], ShovelWorker] = {}
        # workers told to stop and not joined yet (``apply`` runs under the parameter store's
        # change lock and must not wait for a link to close); joined by :meth:`stop_all`
        self.retired: list[ShovelWorker] = []
        self.specs: dict[tuple[str, str], definition.ShovelSpec] = {}
        # the threads deleting finished shovels' parameters (``_completed``): joined by
        # :meth:`stop_all`, so a deletion is journaled before the broker closes its journal
        self.deleting: list[threading.Thread] = []
        self.stopped = False

    # ---- the parameter store's component ----

    validate = staticmethod(definition.validate)

    def validate_user(self, vhost: str, name: str, value: Any, user: str) -> None:
        """RabbitMQ's ``validate_params_user``: a direct URI (``amqp://``, this broker,
        reached with the trusted internal login) must name a vhost the user setting the
        shovel may connect to, or a policymaker of one vhost could read another."""
        store = self.users() if self.users is not None else None
        u = None if store is None else store.users.get(user)
        if u is None:
            return  # not a user of the store (the broker itself): as RabbitMQ's none
        errors = []
        for key in ("src-uri", "dest-uri"):
            uris = value.get(key)
            for uri in [uris] if isinstance(uris, str) else list(uris or []):
                target = definition.direct_vhost(uri)
                if target is not None and target not in u.permissions and not any(
                        e.endswith(f'"{target}"') for e in errors):
                    errors.append(f'user "{user}" may not connect to vhost "{target}"')
        if errors:
            raise definition.validation_failed(*errors)

    def apply(self, vhost: str, name: str, value: Any | None) -> None:
        """Start, replace (a changed definition restarts it) or stop a shovel."""
        key = (vhost, name)
        spec = None if value is None else definition.parse(vhost, name, value)
        with self.lock:
            old = self.workers.pop(key, None)
            if spec is None:
                self.specs.pop(key, None)
            else:
                self.specs[key] = spec
        self._retire(old)
        if spec is not None:
            self._start(key)

    def _retire(self, worker: ShovelWorker | None) -> None:
        """Tell a worker to stop without waiting for it (its link closes on its own thread;
        the source requeues what it held)."""
        if worker is None:
            return
        worker.stop(join=False)
        with self.lock:
            self.retired = [w for w in self.retired if w.thread.is_alive()] + [worker]

    def _start(self, key: tuple[str, str]) -> None:
        with self.lock:
            spec = self.specs.get(key)
            if spec is None or self.local is None or self.stopped or key in self.workers:
                return
            w = self.workers[key] = ShovelWorker(spec, self.local, self.cluster_name,
                                                 self._completed)
        w.start()

    def _completed(self, vhost: str, name: str) -> None:
        """``src-delete-after`` reached (on the shovel's thread, which ends right after):
        delete the parameter, as RabbitMQ's shovel deletes itself. On a thread of its own:
        the store's ``clear`` takes its change lock, whose holder may be stopping this
        shovel."""
        def delete() -> None:
            try:
                if self.clear is not None:
                    self.clear(vhost, name)
                    return
            except Exception:
                log.exception("could not clear the finished shovel's parameter",
                              extra={"shovel": name, "vhost": vhost})
            self.apply(vhost, name, None)
        t = threading.Thread(target=delete, name=f"syncmq-shovel-delete-{vhost}/{name}",
                             daemon=True)
        with self.lock:  # also once stopped: stop_all joins it after the workers
            self.deleting = [d for d in self.deleting if d.is_alive()] + [t]
        t.start()

    def set_local(self, local: LocalNode) -> None:
        """The listener is bound: start what was applied before."""
        self.local = local
        with self.lock:
            keys = list(self.specs)
        for key in keys:
            self._start(key)

    # ---- operations ----

    def restart(self, vhost: str, name: str) -> bool:
        """``DELETE /api/shovels/vhost/{vhost}/{name}/restart``: a new worker (new
        connections); False if there is no such shovel."""
        key = (vhost, name)
        with self.lock:
            old = self.workers.pop(key, None)
            known = key in self.specs
        self._retire(old)
        if known:
            self._start(key)
        return known or old is not None

    def exists(self, vhost: str, name: str) -> bool:
        return (vhost, name) in self.specs

    def stop_all(self) -> None:
        """Stop every shovel and join its thread (all within one bound: a link closes its
        open connections within CLOSE_TIMEOUT and drops those still opening), then wait for the deletions of finished
        shovels (``src-delete-after``) that their threads started: each journals a parameter
        clear, which must come before the broker closes its journal (the server calls this
        first). Must not be called with the parameter store's change lock held (a deletion
        takes it)."""
        with self.lock:
            self.stopped = True
            workers = list(self.workers.values()) + self.retired
            self.workers.clear()
            self.retired = []
        for w in workers:
            w.stop(join=False)  # all links close at once
        deadline = time.monotonic() + CLOSE_TIMEOUT + 5  # one bound for all, not one each
        for w in workers:
            w.stop(timeout=max(0.0, deadline - time.monotonic()))
        alive = [w.thread.name for w in workers if w.thread.is_alive()]
        if alive:  # (a bug: a link ends within CLOSE_TIMEOUT of its stop)
            log.warning("shovels: %d thread(s) still running after the stop: %s",
                        len(alive), ", ".join(alive))
        with self.lock:  # complete once the workers are joined: only they start deletions
            deleting = [t for t in self.deleting if t.is_alive()]
            self.deleting = []
        if deleting:
            log.info("shovels: waiting for %d finished shovel(s) to delete themselves",
                     len(deleting))
        for t in deleting:
            t.join(CLOSE_TIMEOUT)

    def threads(self) -> list[threading.Thread]:
        with self.lock:
            return [t for t in [*(w.thread for w in [*self.workers.values(), *self.retired]),
                                *self.deleting] if t.is_alive()]

    # ---- status ----

    def status(self, vhost: str | None = None) -> list[dict]:
        with self.lock:
            items = sorted(self.specs.items())
            workers = dict(self.workers)
        out = []
        for (vh, name), spec in items:
            if vhost is not None and vh != vhost:
                continue
            w = workers.get((vh, name))
            st = w.status if w is not None else None
            row = {"node": self.node, "timestamp": _ts(st.timestamp if st else time.time()),
                   "name": name, "vhost": vh, "type": "dynamic"}
            if st is None or st.state == "starting":
                row["state"] = "starting"
            elif st.state == "running":
                row.update(state="running", src_uri=st.src_uri, src_protocol="amqp091",
                           dest_protocol="amqp091", dest_uri=st.dest_uri)
                row.update(spec.source_details())
                row.update(spec.dest_details())
            else:
                row.update(state="terminated", reason=st.reason)
            out.append(row)
        return out
