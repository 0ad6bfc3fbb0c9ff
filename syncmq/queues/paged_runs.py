"""A paged queue's recovered tail as runs of journal ids (issue #22, ``queues/paged.py``).

After an unclean stop, recovery hands a queue's backlog past its window over as runs of
message ids (``Queue.restore_run``): nothing per message exists until page-in decodes each
from its PUBLISH record in the journal. The runs are always the front of the tail
(``_runs``: ``[first id, count]`` each; ``_run_n`` messages numbered from ``_run_seq``, all
with the same ``_run_red``). :class:`IdRunTail` holds the three steps on that state; the
state itself is :class:`~syncmq.queues.paged.PagedReadyQueue`'s (its slots), touched only
with the owning queue's lock held, as every method of the ready queue."""

from __future__ import annotations

import logging

log = logging.getLogger("syncmq.paged")


class IdRunTail:
    """Mixin of :class:`~syncmq.queues.paged.PagedReadyQueue`: pushing a recovered run and
    paging run messages in (see the module docstring)."""

    __slots__ = ()

    def push_run(self, first: int, count: int, redelivered: bool) -> bool:
        """Recovery: append ``count`` messages whose PUBLISH records (ids ``first ..``, one
        queue, no other copy, bodies only in the journal) were just replayed, as a run of
        ids: no object, no page record, nothing per message until page-in decodes them
        from the journal (``store.slow.locator.publish_meta``). False, and nothing done,
        unless the head is full and the tail holds nothing but runs (so runs stay the
        tail's front) with the same ``redelivered``. Their bytes are counted by the queue
        when they become pairs (``counted``); ``paged_count`` counts them at once. O(1)."""
        if self._pend or self._segs or \
                len(self._fresh) + len(self._requeued) < self.window or \
                (self._run_n and redelivered != self._run_red):
            return False
        if not self._run_n:
            self._run_seq, self._run_red = self._next_seq, redelivered
        runs = self._runs
        if runs and runs[-1][0] + runs[-1][1] == first:
            runs[-1][1] += count
        else:
            runs.append([first, count])
        self._run_n += count
        self.paged_count += count
        self._next_seq += count
        if self.store is not None:
            self.store.paging.add(self._id)
        return True

    def _run_pair(self, mid: int, seq: int, adopt: bool = True):
        """The pair of run message ``mid`` (seq ``seq``) decoded from its journal record,
        its body indexed as the journal's (``adopt``; else read onto it, no store
        reference: checks); raises OSError if the journal cannot give it back (not live:
        a bug)."""
        locator = self.store.slow.locator
        meta = locator.publish_meta(mid)
        if meta is None:
            raise OSError(f"journaled message {mid} is not in the journal")
        ex, rk, props, n, published_ms = meta
        names = self._names
        exb = ex.encode("utf-8", "surrogateescape")
        ex = names.setdefault(exb, ex)
        m = self._cls(ex, rk, props, b"")
        m.msg_id = mid
        m.body, m.size = None, n
        if not adopt:
            m.body = locator.read(mid, n)
            return seq, (m, self._run_red)
        self.store.adopt_journaled(m, n)
        if self.counted is not None:
            self.counted(m, seq, published_ms)
        return seq, (m, self._run_red)

    def _runs_in(self, want: int, out) -> int:
        """Move up to ``want`` run messages, the tail's front, to ``out`` (a deque), in
        order; returns how many. Stops (logged) at one the journal cannot serve, which
        stays first."""
        runs = self._runs
        done = 0
        while done < want and runs:
            run = runs[0]
            try:
                out.append(self._run_pair(run[0], self._run_seq))
            except OSError as e:
                log.error("cannot page a message in: %s", e)
                break
            run[0] += 1
            run[1] -= 1
            if not run[1]:
                runs.popleft()
            self._run_seq += 1
            self._run_n -= 1
            self.paged_count -= 1
            done += 1
        if not self.paged_count:
            self._unpaged()
        return done
