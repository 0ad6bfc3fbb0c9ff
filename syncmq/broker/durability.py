"""What the broker writes to the journal, and how it rebuilds itself from it.

The journal (``syncmq.journal``) knows nothing of AMQP; this module is the translation:

- Durable exchanges, durable non-exclusive queues and the bindings between durable entities
  are journaled when declared and deleted (flags as bits, arguments as encoded field tables).
  Appending one (or re-declaring an existing durable entity) marks the calling thread
  (:meth:`Durability.take_changed`): the reply that promises the change (declare-ok,
  delete-ok, bind-ok, unbind-ok, purge-ok; the management API's answer) is sent only after a
  :meth:`Durability.barrier` (``methods.durable_reply``), so a client that got it never
  loses the change in a crash. Runtime parameters (``broker/parameters.py``: policies,
  limits, shovels...) use the same hook: PARAM_SET/PARAM_CLEAR, GLOBAL_SET/GLOBAL_CLEAR,
  replayed after exchanges, queues and bindings (:meth:`Durability.recover_into`); policies
  are also loaded into the ``PolicyRegistry`` before those, so objects recover with theirs.
- A persistent message (delivery-mode 2) routed to at least one durable queue gets a
  broker-wide ``msg_id`` and one PUBLISH record listing its durable queues, appended *before*
  the message is put on any queue, so an ACK record can never precede its PUBLISH.
- When a TTL applies to the message on one of its durable queues (its ``expiration``, or a
  queue's ``x-message-ttl``) the record is a PUBLISH_AT, which also holds the wall-clock time
  of the publish: after a restart the TTL counts from the original publish, not from the
  restart (RabbitMQ persists a message's expiry with it).
- Acks and rejects of journaled messages append ACK records; the first delivery of a journaled
  message appends a DELIVERED record (so recovery sets ``redelivered``; after an unclean stop
  every recovered message is ``redelivered``, see :meth:`Durability.recover_into`); purge and delete append
  their records. None of these waits for an fsync of its own: the journal's group commit
  makes them durable with the next batch that has a waiter. ACK and DELIVERED ids are coalesced per queue
  until the journal's next batch (``Journal.append_ids``: one record per queue per batch, not
  one per message), written after everything appended before them; DELIVERED ids wait one
  batch more and are dropped when acked meanwhile (``journal.items.hold_delivered``: they
  matter only at a clean stop, and the journal's close writes them).
- Publisher confirms and tx.commit-ok wait for :meth:`Durability.barrier`, which fires once
  every record appended before it is on disk.
- ``tx.commit`` runs inside :meth:`Durability.transaction`: its publishes and acks (and what
  they cause: dead-letter publishes, DELIVERED) are appended as one unit at the end of the
  commit (``Journal.append_unit``), which recovery applies whole or not at all.

Transient messages and non-durable queues never touch the disk.

Journal failures: once the journal has failed (an I/O error, see ``journal.writer``) it refuses
appends. :meth:`Durability.publish` then raises :class:`NotDurable` (the caller nacks the
publish, or fails the tx.commit); the other records (declares, acks, DELIVERED) are dropped
with one error line per failure: they are appended with queue or vhost locks held, where an
exception would leave the broker half-changed, and nothing was promised to a client for them.

Thread-safety: every method may be called from any worker; the journal's ``append`` is
thread-safe and keeps call order. Callers that need two records in a given order (declare then
delete) already hold the vhost lock or the queue lock while appending.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import TYPE_CHECKING, Any

from ..journal import format as jf
from ..journal.idruns import IdRuns
from ..journal.writer import Journal, JournalError
from ..wire.fields import decode_table, encode_table
from .message import Message

if TYPE_CHECKING:
    from .broker import Broker
    from .exchange import Exchange
    from .queue import Queue

log = logging.getLogger("syncmq.durability")

EX_DURABLE = 1
EX_AUTO_DELETE = 2
EX_INTERNAL = 4
Q_DURABLE = 1
Q_AUTO_DELETE = 2
MARK_PIECE = 65536  # runs of one DELIVERED_RUNS record journal_started appends (then waits)


class NotDurable(Exception):
    """A persistent message could not be journaled (the journal failed or is closed)."""


def _table(arguments: dict | None) -> bytes:
    return encode_table(arguments or {})


def _append_unmarked(ids: IdRuns, first: int, count: int,
                     delivered: Callable[[int, int], list[tuple[int, int]]] | None) -> None:
    """Append to ``ids`` the ids of run ``first .. first + count - 1`` that the journal has
    not marked delivered yet (``delivered(first, count)``: the marked ones, as runs), so a
    second unclean start does not journal the first one's marks again (a few runs each)."""
    at = first
    for a, n in sorted(delivered(first, count)) if delivered is not None else ():
        if a > at:
            ids.append_run(at, a - at)
        at = a + n
    if at < first + count:
        ids.append_run(at, first + count - at)


def _untable(raw: bytes) -> dict:
    if not raw:
        return {}
    return decode_table(raw, 0)[0]


class Transaction:
    """The records one ``tx.commit`` journals (:meth:`Durability.transaction`).

    ``lock`` guards ``records`` and ``closed``: the committing worker appends its publishes
    and acks; another worker that acks or delivers one of ``ids`` (a message of this commit,
    already on its queue) before the unit is appended adds its record here instead of the
    journal, so that it never precedes the PUBLISH in the log. Leaf lock (the journal's own
    lock is taken inside it, when the unit is appended)."""

    __slots__ = ("records", "ids", "lock", "closed")

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.ids: set[int] = set()
        self.lock = threading.Lock()
        self.closed = False


class Durability:
    """The broker's side of the journal."""

    # For callers that cannot import this module (vhost: durability imports the broker for
    # typing): ``except durability.NotDurable``.
    NotDurable = NotDurable

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._ids = itertools.count(1)
        self._dropped = 0  # records dropped since the journal failed (for the log)
        # per worker thread: ``changed`` once an entity record was appended (take_changed)
        self._local = threading.local()
        # open transactions by thread id (:meth:`transaction`); empty almost always, so the
        # publish and ack paths pay one truthiness test for it
        self._txs: dict[int, Transaction] = {}
        # after an unclean stop: (queue, ids) to journal as DELIVERED once the journal runs
        self._unclean_marks: list[tuple[Queue, list[int]]] = []

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """``tx.commit``: every record the calling thread journals inside (publishes, acks,
        rejects, their dead-letter publishes, DELIVERED) is appended at the end as one unit
        (``Journal.append_unit``): after any crash all of them are on disk or none (RabbitMQ
        gives no such guarantee across queues). Wait for :meth:`barrier` before commit-ok
        when ``records`` is not empty. If the journal refuses the unit, the error is logged
        and the barrier reports it."""
        tx = Transaction()
        key = threading.get_ident()
        self._txs[key] = tx
        try:
            yield tx
        finally:
            # closed and appended before it leaves _txs: a worker that acks one of its
            # messages either adds to the unit or appends after it, never before it
            with tx.lock:
                tx.closed = True
                if tx.records:
                    try:
                        self.journal.append_unit(tx.records)
                    except JournalError as e:
                        log.error("journal refused a transaction: %s", e)
            del self._txs[key]

    def _tx_take(self, rtype: int, q: Queue, ids: list[int] | tuple[int, ...]) -> list | tuple:
        """ACK/DELIVERED ``ids`` of ``q`` that belong in an open transaction go there (the
        committing thread's own, or the unit whose publishes they name); returns the rest."""
        enc = jf.encode_ack if rtype == jf.T_ACK else jf.encode_delivered
        own = self._txs.get(threading.get_ident())
        if own is not None:
            with own.lock:
                own.records.append(enc(q.vhost, q.name, ids))
            return ()
        for tx in list(self._txs.values()):
            hit = [i for i in ids if i in tx.ids]
            if hit:
                with tx.lock:
                    if tx.closed:  # appended meanwhile: the journal orders it already
                        continue
                    tx.records.append(enc(q.vhost, q.name, hit))
                ids = [i for i in ids if i not in tx.ids]
                if not ids:
                    break
        return ids

    def take_changed(self) -> bool:
        """Whether the calling thread appended a durable-state record (a declare, delete,
        bind, unbind or purge) since its last call; clears the flag.

        The hook for every reply that promises a durable change (methods.durable_reply, the
        management API, runtime parameters): when it returns True, answer only
        after :meth:`barrier` (or :meth:`wait_durable`) has fired. Set even when the journal
        refused the record, so that the barrier reports the error instead of a false ok."""
        local = self._local
        if getattr(local, "changed", False):
            local.changed = False
            return True
        return False

    def touched(self) -> None:
        """The calling thread re-declared a durable entity (nothing appended): its reply
        waits for a barrier too, as the first declare's record may not be on disk yet."""
        self._local.changed = True

    def wait_durable(self, timeout: float | None = None) -> Exception | None:
        """Block the calling thread (never a worker: the management API's) until everything
        appended so far is durable; the journal's error, or a ``TimeoutError``."""
        done = threading.Event()
        box: list = []

        def fired(err: Exception | None) -> None:
            box.append(err)
            done.set()

        self.barrier(fired)
        if not done.wait(timeout):
            return TimeoutError("journal fsync did not complete in time")
        return box[0]

    def journal_started(self) -> None:
        """Once the journal runs after :meth:`recover_into`: after an unclean stop, journal
        DELIVERED for every recovered message not yet marked so, making the redelivered flag
        it got at recovery as durable as a delivery's (a later clean stop writes CLEAN only
        once these are on disk, ``Journal.close``).

        The ids are runs (``IdRuns``: a recovered backlog's ids come from one counter), so
        they are journaled as DELIVERED_RUNS records, 16 bytes a run (issue #22: 10,000,000
        marks were 153 records of 65,536 ids and an fsync each, ~16 s of a restart); a
        queue's runs go in records of at most ``MARK_PIECE`` runs, each durable before the
        next is appended (a queue whose recovered ids are scattered still costs bounded
        memory)."""
        marks, self._unclean_marks = self._unclean_marks, []
        for q, ids in marks:
            it = ids.runs()
            while piece := list(islice(it, MARK_PIECE)):
                try:
                    self.journal.append(jf.encode_delivered_runs(q.vhost, q.name, piece))
                except JournalError as e:
                    log.error("journal not accepting records, redelivered flags of recovered "
                              "messages not recorded: %s", e)
                    return
                if len(piece) == MARK_PIECE and self.wait_durable() is not None:
                    return  # the journal failed (logged): nothing more is recorded

    def _append(self, record: bytes) -> None:
        """Append a durable-state record (marks the thread, see :meth:`take_changed`);
        dropped (and logged once) if the journal failed."""
        self._local.changed = True
        try:
            self.journal.append(record)
        except JournalError as e:
            self._dropped += 1
            if self._dropped == 1:
                log.error("journal not accepting records, durable state changes are not "
                          "recorded until restart: %s", e)

    # ---- vhosts (called with ``Broker.lock`` held) ----

    def vhost_added(self, name: str) -> None:
        """VHOST_ADD: a vhost created through the management API or a definitions import
        (RabbitMQ keeps every vhost; without a users file nothing else records it)."""
        self._append(jf.encode_vhost_add(name))

    def vhost_deleted(self, name: str) -> None:
        """VHOST_DELETE: at recovery it removes the vhost and everything journaled in it."""
        self._append(jf.encode_vhost_delete(name))

    # ---- entities (called with the vhost lock held) ----

    def exchange_declared(self, ex: Exchange) -> None:
        if ex.durable:
            flags = EX_DURABLE | (EX_AUTO_DELETE if ex.auto_delete else 0) | (
                EX_INTERNAL if ex.internal else 0)
            self._append(jf.encode_exchange_declare(ex.vhost, ex.name, ex.type, flags,
                                                    _table(ex.arguments)))

    def exchange_deleted(self, ex: Exchange) -> None:
        if ex.durable:
            self._append(jf.encode_exchange_delete(ex.vhost, ex.name))

    def queue_declared(self, q: Queue) -> None:
        if q.durable and q.exclusive_owner is None:
            flags = Q_DURABLE | (Q_AUTO_DELETE if q.auto_delete else 0)
            self._append(jf.encode_queue_declare(q.vhost, q.name, flags, _table(q.arguments)))

    def queue_deleted(self, q: Queue) -> None:
        if q.journaled:
            self._append(jf.encode_queue_delete(q.vhost, q.name))

    def deleted_in_tx(self, q: Queue, ids: list[int]) -> None:
        """``q`` (journaled) was deleted with ``ids`` on it: those an open ``tx.commit`` has
        published but not yet appended get an ACK in its unit. The unit is written after the
        QUEUE_DELETE (and after a redeclare of the same name); without the ACK its PUBLISH
        would put the message back on the new queue at recovery. The other ids need nothing
        (QUEUE_DELETE drops them)."""
        if self._txs and ids:
            self._tx_take(jf.T_ACK, q, ids)

    def queue_purged(self, q: Queue) -> None:
        if q.journaled:
            self._append(jf.encode_queue_purge(q.vhost, q.name))

    @staticmethod
    def _binding_durable(source: Exchange, destination: Any) -> bool:
        if not source.durable:
            return False
        return bool(getattr(destination, "journaled", None) or (
            getattr(destination, "durable", False) and hasattr(destination, "matcher")))

    def binding_added(self, source: Exchange, destination: Any, routing_key: str,
                      arguments: dict | None) -> None:
        if self._binding_durable(source, destination):
            kind = jf.DEST_EXCHANGE if hasattr(destination, "matcher") else jf.DEST_QUEUE
            self._append(jf.encode_binding_add(source.vhost, source.name, destination.name, kind,
                                               routing_key, _table(arguments)))

    def binding_removed(self, source: Exchange, destination: Any, routing_key: str,
                        arguments: dict | None) -> None:
        if self._binding_durable(source, destination):
            kind = jf.DEST_EXCHANGE if hasattr(destination, "matcher") else jf.DEST_QUEUE
            self._append(jf.encode_binding_remove(source.vhost, source.name, destination.name,
                                                  kind, routing_key, _table(arguments)))

    # ---- runtime parameters (broker.parameters, under its change lock) ----

    def parameter_set(self, vhost: str, component: str, name: str, value: bytes) -> None:
        """PARAM_SET: ``value`` is the parameter's whole new value, as JSON text."""
        self._append(jf.encode_param_set(vhost, component, name, value))

    def parameter_cleared(self, vhost: str, component: str, name: str) -> None:
        self._append(jf.encode_param_clear(vhost, component, name))

    def global_set(self, name: str, value: bytes) -> None:
        self._append(jf.encode_global_set(name, value))

    def global_cleared(self, name: str) -> None:
        self._append(jf.encode_global_clear(name))

    # ---- messages ----

    def publish(self, vhost: str, message: Message, queues: list[Queue]) -> bool:
        """Journal ``message`` if it is persistent and reaches a durable queue; True if so.

        Must be called before the message is put on any queue. Raises :class:`NotDurable` if
        the journal refuses it (``message.msg_id`` stays 0: it is a transient message then).
        """
        if len(queues) == 1:  # (the usual case: no list, no generator)
            q = queues[0]
            if not q.journaled:
                return False
            names: tuple[str, ...] = (q.name,)
            ttl = message.ttl is not None or q.message_ttl is not None
        else:
            js = [q for q in queues if q.journaled]
            if not js:
                return False
            names = tuple([q.name for q in js])
            ttl = message.ttl is not None or any(q.message_ttl is not None for q in js)
        msg_id = next(self._ids)
        try:
            if ttl:
                # a TTL applies: record the publish time, so that after a restart the TTL
                # still counts from it (as RabbitMQ persists a message's expiry)
                record = jf.encode_publish_at(int(time.time() * 1000), msg_id, vhost, names,
                                              message.exchange, message.routing_key,
                                              message.properties, message.body)
            else:
                record = jf.encode_publish(msg_id, vhost, names, message.exchange,
                                           message.routing_key, message.properties,
                                           message.body)
            if self._txs and (tx := self._txs.get(threading.get_ident())) is not None:
                if self.journal.error is not None:
                    raise JournalError(f"journal failed: {self.journal.error}")
                with tx.lock:  # a tx.commit's publish: part of its unit
                    tx.records.append(record)
                    tx.ids.add(msg_id)
            else:
                self.journal.append_publish(record, msg_id, vhost, names)
        except JournalError as e:
            raise NotDurable(str(e)) from e
        message.msg_id = msg_id
        return True

    def acked(self, q: Queue, msg_ids: list[int]) -> None:
        """ACK of ``msg_ids`` on ``q``: coalesced with the other acks of ``q`` until the
        journal's next batch (``Journal.append_ids``); a later barrier covers it."""
        if msg_ids:
            self._append_ids(jf.T_ACK, q, msg_ids)

    def delivered(self, q: Queue, msg_ids: list[int]) -> None:
        """First delivery of ``msg_ids`` (non-zero) from ``q``: one call per delivery batch
        (``Queue._handed_out_locked``), coalesced like :meth:`acked` but held one batch more
        (``Journal.append_ids``): a later barrier does not cover it, a clean close does."""
        self._append_ids(jf.T_DELIVERED, q, msg_ids)

    def _append_ids(self, rtype: int, q: Queue, ids: list[int] | tuple[int, ...]) -> None:
        if self._txs:
            ids = self._tx_take(rtype, q, ids)
            if not ids:
                return
        try:
            self.journal.append_ids(rtype, q.vhost, q.name, ids)
        except JournalError as e:
            self._dropped += 1
            if self._dropped == 1:
                log.error("journal not accepting records, durable state changes are not "
                          "recorded until restart: %s", e)

    def barrier(self, callback: Callable[[Exception | None], None]) -> None:
        """``callback(error)`` once everything appended so far is durable (journal thread).

        If the journal is not accepting (failed, closed), ``callback(error)`` is called at once
        on the calling thread."""
        try:
            self.journal.sync_barrier(callback)
        except JournalError as e:
            callback(e)

    # ---- start-up ----

    def _restore_messages(self, q: Queue, rq: Any, store: Any, shared: dict[int, list],
                          unclean: bool, lazy: bool) -> IdRuns:
        """Put recovered queue ``rq``'s messages back on ``q``, in order; returns the ids to
        journal DELIVERED for (after an unclean stop: packed, a few bytes a run).

        After an unclean stop (every message redelivered, so no per-message flag), with
        bodies left in the journal (``lazy``), a queue whose messages are on no other queue
        takes its first window of messages one by one and the rest as runs of ids
        (``Queue.restore_run``): no decoding, no object, no page record per message; the
        paged queue decodes each from its journal record at page-in (issue #22). Otherwise
        (or if the queue takes no run: not a paged FIFO, a TTL or length limit) message by
        message."""
        ids = IdRuns()  # packed: a few bytes a run of ids until the journal runs
        it = rq.iter_messages()
        runs = unclean and lazy and rq.alone and rq.ids is not None
        window = getattr(q.ready, "window", None) if runs else None
        if window is not None:
            taken = 0
            for m in islice(it, window):
                if not m.delivered:
                    ids.append(m.msg_id)
                self._restore_message(q, m, store, shared, unclean)
                taken += 1
            rest = rq.ids.runs(taken)
            first = next(rest, None)
            if first is None or q.restore_run(first[0], first[1], True):
                if first is not None:
                    _append_unmarked(ids, *first, rq.delivered_runs)
                for a, n in rest:
                    if not q.restore_run(a, n, True):  # (push_run's conditions held)
                        raise RuntimeError(f"recovered run {a}+{n} refused by {q.name}")
                    _append_unmarked(ids, a, n, rq.delivered_runs)
                return ids
        for m in it:
            if unclean and not m.delivered:
                ids.append(m.msg_id)
            self._restore_message(q, m, store, shared, unclean)
        return ids

    def _restore_message(self, q: Queue, m: Any, store: Any, shared: dict[int, list],
                         unclean: bool) -> None:
        """Put one recovered message back on ``q``. A message on several queues is one
        ``Message`` and one store entry with a reference per queue, as a live publish routes
        it (one entry per queue under the same key would replace each other: the first queue
        to ack the message would delete the body the other queues still hold); ``shared``
        holds it (msg_id -> [Message, copies still to restore]) until every queue has its
        copy."""
        if m.copies > 1:
            entry = shared.get(m.msg_id)
            if entry is not None:
                msg = entry[0]
                entry[1] -= 1
                if not entry[1]:
                    del shared[m.msg_id]
                q.restore_message(msg, m.delivered or unclean, m.published_ms)
                return
        msg = Message(m.exchange, m.routing_key, m.properties,
                      m.body if m.body is not None else b"")
        msg.msg_id = m.msg_id
        if m.body is None and m.copies == 1:
            # bound for a paged tail: by reference, no store entry made and dropped again
            msg.body, msg.size = None, m.body_len
            if q.restore_by_reference(msg, m.delivered or unclean):
                return
            msg.body, msg.size = b"", 0
        if store is not None:
            # every queue holding it is named in its PUBLISH record
            if m.body is None:
                if not store.put_journaled(msg, m.body_len, m.copies):
                    body = self.journal.reader.read(m.msg_id, m.body_len)
                    if body is None:  # cannot happen: the record was just replayed
                        raise RuntimeError(f"journaled message {m.msg_id} not readable")
                    msg.body = body
                    store.put(msg, m.copies, True)
            else:
                store.put(msg, m.copies, True)
        if m.copies > 1:
            shared[m.msg_id] = [msg, m.copies - 1]
        q.restore_message(msg, m.delivered or unclean, m.published_ms)

    def recover_into(self, broker: Broker) -> dict[str, int]:
        """Replay the journal into an empty broker; returns counts for the start-up log."""
        # With a memory budget whose store reads bodies back from the journal, recovery does
        # not read the bodies at all: each becomes a reference into its segment, so a restart
        # with a backlog larger than RAM costs the per-message index, not the backlog.
        store = broker.body_store
        lazy = store is not None and getattr(store.slow, "locator", None) is self.journal.reader
        # streamed: each message is decoded as it is restored (a paged queue writes it out
        # beyond its window), so memory never holds the whole recovered backlog at once
        state = self.journal.recover(load_bodies=not lazy, stream=True)
        try:
            return self._restore(broker, state, store, lazy)
        finally:
            state.release()

    def _restore(self, broker: Broker, state: Any, store: Any,
                 lazy: bool = False) -> dict[str, int]:
        """:meth:`recover_into` once the journal is replayed."""
        self._ids = itertools.count(max(state.next_msg_id, 1))
        for name in state.vhosts:
            broker.add_vhost(name)
        # policies before the objects they govern (applied again with the other parameters
        # at the end, which changes nothing then): see PolicyRegistry.preload
        broker.policies.preload(state.parameters)
        counts = {"exchanges": 0, "queues": 0, "bindings": 0, "messages": 0}
        # messages on several queues, until every queue has its copy: msg_id -> [Message,
        # copies still to restore]
        shared: dict[int, list] = {}
        # After an unclean stop (no CLEAN marker: kill, crash, power loss) a message may have
        # been delivered though its DELIVERED record never reached the disk: all of them come
        # back redelivered, as RabbitMQ flags every message after an unclean stop.
        unclean = not state.clean
        # ... and that flag is journaled (DELIVERED, see :meth:`journal_started`): held only in
        # memory, a clean stop of this run would write CLEAN and the run after it would
        # recover these messages (delivered or not by now) with redelivered=false
        self._unclean_marks = marks = []
        for rec in state.exchanges:
            vh = broker.add_vhost(rec.vhost)
            vh.restore_exchange(rec.name, rec.type, bool(rec.flags & EX_AUTO_DELETE),
                                bool(rec.flags & EX_INTERNAL), _untable(rec.arguments))
            counts["exchanges"] += 1
        for rq in state.queues:
            vh = broker.add_vhost(rq.vhost)
            q = vh.restore_queue(rq.name, bool(rq.flags & Q_AUTO_DELETE), _untable(rq.arguments))
            ids = self._restore_messages(q, rq, store, shared, unclean, lazy)
            if ids:
                marks.append((q, ids))
            counts["queues"] += 1
            counts["messages"] += rq.count
        for b in state.bindings:
            vh = broker.vhosts.get(b.vhost)
            if vh is None:
                continue
            if vh.restore_binding(b.source, b.destination, b.destination_kind == jf.DEST_EXCHANGE,
                                  b.routing_key, _untable(b.arguments)):
                counts["bindings"] += 1
        # runtime parameters last: a component's apply (a policy) finds the objects it governs
        for p in state.parameters:
            broker.add_vhost(p.vhost)
        counts["parameters"] = broker.parameters.restore(state.parameters,
                                                         state.global_parameters)
        counts["truncated_bytes"] = state.stats.truncated_bytes
        counts["clean"] = int(state.clean)
        return counts
