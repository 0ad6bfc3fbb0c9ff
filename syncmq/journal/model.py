"""An executable statement of what the records mean, for tests.

:class:`Model` applies decoded records the plain, slow way (the rules listed at the end of
``format.py``), with no notion of files, segments or compaction. Tests and the fuzzer feed the
same records to a :class:`~syncmq.journal.writer.Journal` and to a ``Model`` and check that
:func:`snapshot` of the recovered state equals :meth:`Model.snapshot`.
"""

from __future__ import annotations

from typing import Any

from . import format as fmt
from .recovery import RecoveredState

__all__ = ["Model", "snapshot"]

Snapshot = dict[str, Any]


class Model:
    """Reference semantics of a record sequence (O(everything) per operation; tests only)."""

    def __init__(self) -> None:
        self.vhosts: dict[str, None] = {}
        self.exchanges: dict[tuple[str, str], fmt.ExchangeDeclare] = {}
        self.queues: dict[tuple[str, str], fmt.QueueDeclare] = {}
        self.bindings: dict[tuple, fmt.BindingAdd] = {}
        # per (vhost, queue): msg_id -> [Publish, delivered], in publish order
        self.messages: dict[tuple[str, str], dict[int, list]] = {}
        self.params: dict[tuple[str, str, str], bytes] = {}
        self.globals: dict[str, bytes] = {}
        self.max_id = 0

    def apply(self, rec: fmt.Record) -> None:
        t = rec.TYPE
        if t == fmt.T_VHOST_ADD:
            self.vhosts.setdefault(rec.name, None)
        elif t == fmt.T_VHOST_DELETE:
            vh = rec.name
            self.vhosts.pop(rec.name, None)
            for table in (self.exchanges, self.queues, self.messages):
                for k in [k for k in table if k[0] == vh]:
                    del table[k]
            for k in [k for k, b in self.bindings.items() if b.vhost == vh]:
                del self.bindings[k]
            for k in [k for k in self.params if k[0] == vh]:
                del self.params[k]
        elif t == fmt.T_PARAM_SET:
            self.params[(rec.vhost, rec.component, rec.name)] = rec.value
        elif t == fmt.T_PARAM_CLEAR:
            self.params.pop((rec.vhost, rec.component, rec.name), None)
        elif t == fmt.T_GLOBAL_SET:
            self.globals[rec.name] = rec.value
        elif t == fmt.T_GLOBAL_CLEAR:
            self.globals.pop(rec.name, None)
        elif t == fmt.T_EXCHANGE_DECLARE:
            key = (rec.vhost, rec.name)
            if key in self.exchanges:
                self.exchanges[key] = rec  # keeps its place (dict)
            else:
                self.exchanges[key] = rec
        elif t == fmt.T_EXCHANGE_DELETE:
            self.exchanges.pop((rec.vhost, rec.name), None)
            for k in [k for k, b in self.bindings.items() if b.vhost == rec.vhost and (
                    b.source == rec.name or (b.destination_kind == fmt.DEST_EXCHANGE
                                             and b.destination == rec.name))]:
                del self.bindings[k]
        elif t == fmt.T_QUEUE_DECLARE:
            key = (rec.vhost, rec.name)
            if key not in self.queues:
                self.messages.pop(key, None)
            self.queues[key] = rec
        elif t in (fmt.T_QUEUE_DELETE, fmt.T_QUEUE_PURGE):
            key = (rec.vhost, rec.name)
            self.messages.pop(key, None)
            if t == fmt.T_QUEUE_DELETE:
                self.queues.pop(key, None)
                for k in [k for k, b in self.bindings.items() if b.vhost == rec.vhost
                          and b.destination_kind == fmt.DEST_QUEUE
                          and b.destination == rec.name]:
                    del self.bindings[k]
        elif t == fmt.T_BINDING_ADD:
            self.bindings[tuple(rec)] = rec
        elif t == fmt.T_BINDING_REMOVE:
            self.bindings.pop(tuple(rec), None)
        elif t == fmt.T_PUBLISH:
            self.max_id = max(self.max_id, rec.msg_id)
            for q in dict.fromkeys(rec.queues):
                self.messages.setdefault((rec.vhost, q), {})[rec.msg_id] = [rec, False]
        elif t in (fmt.T_ACK, fmt.T_DELIVERED, fmt.T_DELIVERED_RUNS):
            ids = rec.msg_ids if t != fmt.T_DELIVERED_RUNS else [
                mid for a, n in rec.runs for mid in range(a, a + n)]
            self.max_id = max([self.max_id, *ids])
            qm = self.messages.get((rec.vhost, rec.queue), {})
            for mid in ids:
                if mid in qm:
                    if t == fmt.T_ACK:
                        del qm[mid]
                    else:
                        qm[mid][1] = True

    def snapshot(self) -> Snapshot:
        queues = {}
        for key, q in self.queues.items():
            msgs = self.messages.get(key, {})
            queues[key] = (q.flags, q.arguments, [
                (mid, p.exchange, p.routing_key, p.properties, p.body, d)
                for mid, (p, d) in msgs.items()])
        return {
            "vhosts": list(self.vhosts),
            "exchanges": list(self.exchanges.values()),
            "queues": queues,
            "bindings": list(self.bindings.values()),
            "parameters": sorted(fmt.ParamSet(*k, v) for k, v in self.params.items()),
            "global_parameters": sorted(fmt.GlobalSet(k, v) for k, v in self.globals.items()),
        }

    def live_ids(self) -> set[int]:
        return {mid for key, qm in self.messages.items() if key in self.queues for mid in qm}


def snapshot(state: RecoveredState) -> Snapshot:
    """The comparable form of a recovered state (same shape as :meth:`Model.snapshot`)."""
    return {
        "vhosts": list(state.vhosts),
        "exchanges": list(state.exchanges),
        "queues": {(q.vhost, q.name): (q.flags, q.arguments, [
            (m.msg_id, m.exchange, m.routing_key, m.properties, m.body, m.delivered)
            for m in q.messages]) for q in state.queues},
        "bindings": list(state.bindings),
        "parameters": sorted(state.parameters),
        "global_parameters": sorted(state.global_parameters),
    }
