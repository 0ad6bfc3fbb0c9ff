"""What waits for the journal thread (:class:`_Item`, the coalesced id records), the journal's
errors and its group-commit counters (``JournalMetrics``, written by the journal thread only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress, filterfalse
from operator import not_

from . import format as fmt

Callback = Callable[[Exception | None], None]


class JournalError(Exception):
    """Base of the journal's own errors."""


class JournalFailed(JournalError):
    """The journal hit an I/O error and refuses appends until :meth:`Journal.reset_error`."""


class JournalClosed(JournalError):
    """The journal is not running (not started yet, or closed)."""


# Upper bounds (seconds) of the fsync latency histogram's buckets (plus +Inf).
FSYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(slots=True)
class JournalMetrics:
    """Group-commit counters (plain ints, written by the journal thread only)."""

    appends: int = 0  # items written (append/append_many calls, barriers excluded)
    records: int = 0  # records written
    bytes: int = 0  # record bytes written
    batches: int = 0  # batches written (one or more items each)
    fsyncs: int = 0  # fsync/fdatasync calls on segment files
    max_batch: int = 0  # most items in one batch
    segments_created: int = 0
    errors: int = 0
    apply_errors: int = 0  # written records the liveness state could not decode
    internal_errors: int = 0  # bugs caught on the journal thread (logged); should stay 0
    # PUBLISH records not written: acked on every queue in the batch that held them
    cancelled: int = 0
    # fsync latency histogram: counts per upper bound in FSYNC_BUCKETS (cumulative on export)
    fsync_seconds_sum: float = 0.0
    fsync_buckets: list = field(default_factory=lambda: [0] * (len(FSYNC_BUCKETS) + 1))

    @property
    def mean_batch(self) -> float:
        """Mean items per batch."""
        return self.appends / self.batches if self.batches else 0.0


class _Item:
    """One append call (or barrier / control request) waiting for the journal thread, or a
    *run*: consecutive :meth:`Journal.append_publish` calls of one route.

    A run's ``head`` is ``(msg_ids, vhost, queues)``, ``msg_ids`` a list parallel to
    ``records`` (one PUBLISH record each). ``append_publish`` extends the run that is last in
    the journal's pending list (under the journal's ``_lock``) instead of queueing an item a
    message; once the journal thread has taken the batch nobody extends it any more (it is no
    longer in the pending list), so the journal thread reads it without the lock."""

    __slots__ = ("records", "callback", "sync", "control", "head", "unit")

    def __init__(self, records: list[bytes] | tuple[bytes, ...], callback: Callback | None,
                 sync: bool = False, control: Callable[[], None] | None = None,
                 head: tuple[list[int], str, tuple[str, ...]] | None = None,
                 unit: bool = False) -> None:
        self.records = records
        self.unit = unit  # a TX record and its unit (append_unit): never split over segments
        self.callback = callback
        self.sync = sync  # force an fsync even in "never" mode (barrier)
        self.control = control  # run on the journal thread instead of writing (internal)
        # (msg_ids, vhost, queues) of a run of PUBLISH records (append_publish): applied to
        # the state without decoding the records again
        self.head = head


_IDS_PER_RECORD = 1 << 20


def _encode_ids(ids: dict[tuple[int, str, str], list[int]]) -> list[bytes]:
    """The coalesced ACK/DELIVERED records of :meth:`Journal.append_ids`, in key order."""
    out = []
    for (rtype, vhost, queue), lst in ids.items():
        enc = fmt.encode_ack if rtype == fmt.T_ACK else fmt.encode_delivered
        for i in range(0, len(lst), _IDS_PER_RECORD):  # records of bounded size
            out.append(enc(vhost, queue, lst[i : i + _IDS_PER_RECORD]))
    return out


def cancel_acked(items: list[_Item], ids: dict[tuple[int, str, str], list[int]]) -> set[int]:
    """Write cancel: the msg ids of the PUBLISH runs (``append_publish``) of a batch whose
    every queue's ACK ids in ``ids`` (the batch's coalesced ids) hold them. Such a message
    was acked (or rejected) on every queue of its route before anything of it was written,
    so neither its PUBLISH nor its ACK/DELIVERED ids need be: the caller drops them all
    (:meth:`Journal._loop`) and the liveness state never hears of it. Transactions are not
    touched: their records are in a unit item, never a ``head`` item, and their ids never
    in ``ids``. Empty set (the usual answer) when no publish qualifies. Per run and queue
    one set intersection (in C), nothing per message in Python."""
    acks = None
    top = 0
    for (rtype, vhost, queue), lst in ids.items():
        if rtype == fmt.T_ACK:
            if acks is None:
                acks = {}
            acks[vhost, queue] = lst
            m = max(lst)
            if m > top:
                top = m
    gone: set[int] = set()
    if acks is None:
        return gone
    sets: dict = {}
    for it in items:
        head = it.head
        if head is None:
            continue
        mids, vhost, queues = head
        if min(mids) > top:  # (acks name older messages, as a rule; ids taken outside
            # the journal's lock may come out of order in a run)
            continue
        both = None
        for q in queues:
            s = sets.get((vhost, q))
            if s is None:
                lst = acks.get((vhost, q))
                if lst is None:
                    both = None
                    break
                s = sets[vhost, q] = set(lst)
            both = s.intersection(mids) if both is None else both.intersection(s)
            if not both:
                break
        if both:
            gone |= both
    return gone


def drop_cancelled(items: list[_Item], ids: dict[tuple[int, str, str], list[int]],
                   gone: set[int]) -> list[_Item]:
    """``items`` without the PUBLISH records of ``gone`` (a run left empty is dropped);
    ``gone`` is removed from ``ids`` (ACK and DELIVERED lists, in place; a list left empty
    is deleted). The filters run in C (``filterfalse``/``compress``)."""
    isgone = gone.__contains__
    for key in list(ids):
        lst = list(filterfalse(isgone, ids[key]))
        if lst:
            ids[key] = lst
        else:
            del ids[key]
    out = []
    for it in items:
        head = it.head
        if head is not None and not gone.isdisjoint(head[0]):
            mids = head[0]
            keep = list(map(not_, map(isgone, mids)))
            recs = list(compress(it.records, keep))
            if not recs:
                continue
            it.records = recs
            it.head = (list(compress(mids, keep)), head[1], head[2])
        out.append(it)
    return out


IdLists = dict[tuple[int, str, str], list[int]]


def hold_delivered(held: IdLists, ids: IdLists, flush: bool) -> tuple[IdLists, IdLists]:
    """DELIVERED ids wait one batch before they are written: ``(to_write, to_hold)``.

    ``held`` is what the previous batch held back, ``ids`` this batch's coalesced ids (after
    write cancel). A DELIVERED id matters only if its message is still on the queue at a
    clean stop (it makes recovery flag the message ``redelivered``; after an unclean stop
    every recovered message is flagged anyway), so an id whose ACK on the same queue came
    in the same or the next batch need never be written: S3's consumer acks most messages
    within a batch or two. ``to_write`` holds this batch's ACK ids and the held DELIVERED
    ids not acked since; ``to_hold`` this batch's DELIVERED ids not acked in it. ``flush``
    (the journal is closing) writes everything: nothing is held past a clean close, which
    is when the ids must be on disk. Moving a DELIVERED later is safe (``append_ids``: only
    later, and replay ignores ids it does not know). Cost: a pass over the batch's keys; when
    something is held or queued, one set of each queue's ACK ids and a list comprehension
    per DELIVERED list."""
    out: IdLists = {}
    keep: IdLists = {}
    for key, lst in ids.items():
        if key[0] == fmt.T_DELIVERED and not flush:
            keep[key] = lst
        else:
            out[key] = lst
    if not held and not keep:
        return out, keep
    acks = {(k[1], k[2]): set(lst) for k, lst in out.items() if k[0] == fmt.T_ACK}
    for key, lst in _not_acked(held, acks).items():
        mine = out.get(key)
        out[key] = lst if mine is None else lst + mine
    return out, _not_acked(keep, acks)


def _not_acked(lists: IdLists, acks: dict[tuple[str, str], set[int]]) -> IdLists:
    """``lists`` (DELIVERED ids per key) without the ids ``acks`` holds for the key's queue;
    a list left empty is dropped."""
    out: IdLists = {}
    for key, lst in lists.items():
        acked = acks.get((key[1], key[2]))
        if acked is not None:
            lst = list(filterfalse(acked.__contains__, lst))  # (in C)
        if lst:
            out[key] = lst
    return out
