"""Memory the broker accounts for, and memory given back to the operating system.

**Accounting** (:func:`accounted_memory`): the memory alarm and ``/api/nodes`` ``mem_used``
are based on what syncmq holds, not on RSS alone. RSS never falls by itself after a burst
(the allocator keeps freed memory for reuse), so an alarm on RSS set during a backlog stayed
set after the queue drained and blocked every publisher for good (issue #19). The figure is:

- the process's baseline: its RSS when the broker started (interpreter, modules, threads);
- per queued message (ready or unacknowledged) :data:`MESSAGE_OVERHEAD` bytes for the
  ``Message``, its properties and routing key, the ready entry or unacked record and the
  journal's per-message state (docs/architecture.md, "Cost per message"), plus its body while
  it is in memory: with ``--memory-budget`` the body store's in-memory bytes; without, each
  queue's count times the mean body size of a sample of its head and tail; a message a
  paged queue holds in its page files (``queues.paged``) costs no memory of its own, but a
  persistent one still has its journal state: :data:`PAGED_PERSISTENT_OVERHEAD`; paged-in
  bodies such a queue keeps on its messages outside the store (``loose_held``, up to 4 MiB
  a queue) count with the store's;
- per connection its unsent output (``pending_out``), the partial frame it holds, the reads
  handed to its worker and not handled yet (each up to ``RECV_SIZE``), plus
  :data:`CONNECTION_OVERHEAD`; per channel :data:`CHANNEL_OVERHEAD`.

The walk reads counters without locks (single reads of ints and deque ends: an estimate),
on the reactor thread; it is O(queues + connections), so the monitor spaces its walks to
keep them under ~5% of a core (``ResourceMonitor``).

**Returning memory** (glibc only, through ``ctypes``; elsewhere every call is a no-op):
:func:`limit_arenas` caps glibc's malloc arenas (``M_ARENA_MAX``: each thread may otherwise
get its own arena, whose freed memory no other thread reuses) and fixes the mmap threshold
(``M_MMAP_THRESHOLD``: glibc raises it as large blocks are freed, after which large bodies
come from the heap and fragment it; fixed, a body above it is its own mapping, unmapped when
freed). :func:`trim` is ``malloc_trim(0)``: it returns every whole free page of every arena.
The monitor calls it when RSS is well above the accounted figure (after a backlog drained).

**The object allocator** (``--allocator``, :func:`use_allocator`): CPython's pymalloc keeps
small objects in 1 MiB arenas that go back to the OS only when every block in them is free;
after a backlog drained, a few long-lived objects pin arenas that are otherwise empty and no
trim reaches them (2-3x the idle RSS after a day's mix of loads). With ``PYTHONMALLOC=malloc``
every object comes from glibc, whose free pages ``malloc_trim`` returns (docs/architecture.md,
"Memory accounting and return"). The interpreter reads ``PYTHONMALLOC`` once, at start-up, so
the ``syncmq`` command re-executes itself (same pid) with it set when it is not already in use.

**The start-up heap is frozen** (:func:`freeze_heap`, the ``syncmq`` command only, issue #22:
S8's latency tail): the ~36,500 objects the broker holds before it recovers (modules, the
codec's tables, the broker's own objects) are moved out of the cyclic collector's reach
(``gc.freeze``) after one full collection; what recovery builds is not (it can become
garbage in cycles: a deleted queue). Unfrozen, the first full collection after start-up
(CPython runs one once ten generation-1 collections have passed, ~20,000 net allocations:
the first seconds of a load, on whichever thread allocates, often the reactor standing in
for a worker) walked all of them: 30-35 ms of CPU on the shared test machine, every message
in flight meanwhile delayed by as much; frozen, a full collection walks only what was
created since (150-180 us on an idle broker). Frozen objects are still freed by reference
counting; only a reference cycle among them that becomes garbage later is never collected
(a module, a codec table, the default virtual host deleted once: bounded, not per message). An embedded broker (``syncmq.embedded``) leaves
its host process's heap alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import sys
from typing import Any

log = logging.getLogger("syncmq.memory")

MESSAGE_OVERHEAD = 512  # bytes a queued message costs beyond its body
PAGED_PERSISTENT_OVERHEAD = 48  # a paged-out persistent message: its packed journal state (#22)
CONNECTION_OVERHEAD = 12 * 1024  # Transport, Session, codec state (README: ~8 KiB measured)
CHANNEL_OVERHEAD = 2 * 1024
RECV_SIZE = 256 * 1024  # reactor.RECV_SIZE: the most one read handed to a worker holds
SAMPLE = 8  # messages sampled at each end of a ready queue for its mean body size
# Fixed M_MMAP_THRESHOLD: above the reactor's read buffer (a ``recv(RECV_SIZE)`` bytes object
# is RECV_SIZE plus its header), so reads come from the heap and are reused. At exactly
# RECV_SIZE every read was an mmap + munmap of fresh zeroed pages: twice the page faults per
# message and twice the broker's system time (S2 of bench/cpu_per_msg.py).
MMAP_THRESHOLD = 2 * RECV_SIZE

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS): nothing to tune


_LIBC = _libc()


def limit_arenas(arenas: int = 2, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """At start-up, before the worker threads exist; True if glibc took both settings."""
    if _LIBC is None:
        return False
    ok = _LIBC.mallopt(_M_ARENA_MAX, arenas) == 1
    return _LIBC.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 and ok


def freeze_heap() -> int:
    """Collect once, then freeze every object the collector tracks (``gc.freeze``): later
    collections, full ones included, walk only the objects created after this call. Called
    once by the ``syncmq`` command at the start of ``Server._start`` (``Server.freeze_heap``),
    before recovery: what recovery builds (queues, exchanges, bindings, messages) stays the
    collector's, so a recovered queue deleted later is collected like any other (a recovered
    ``Queue`` sits in reference cycles). Returns the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def gc_census() -> dict[str, int]:
    """``{"frozen": objects frozen, "tracked": objects the collector walks}`` (the start-up
    line's ``"gc"``)."""
    return {"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())}


def trim() -> bool:
    """Give every whole free page back to the OS; True if some memory was released."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


ALLOCATORS = ("malloc", "pymalloc")
# Set in the environment of the re-executed interpreter: a second mismatch means PYTHONMALLOC
# was ignored (``python -E``/``-I``) and must not start a loop of re-executions.
REEXEC_MARK = "_SYNCMQ_ALLOCATOR_REEXEC"


def running_allocator() -> str:
    """``pymalloc`` or ``malloc``: the object allocator of this interpreter (pymalloc counts
    its allocated blocks, the C allocators do not: ``sys.getallocatedblocks()`` is 0)."""
    return "pymalloc" if sys.getallocatedblocks() else "malloc"


def use_allocator(chosen: str, environ: Any = None, execve: Any = None) -> tuple[str, str]:
    """Make the process run with the object allocator ``chosen`` (one of :data:`ALLOCATORS`).

    If the interpreter already uses it, nothing happens. Otherwise the process re-executes
    itself (``os.execve`` of ``sys.executable`` with ``sys.orig_argv``: same pid, same
    arguments, so a supervisor or systemd unit still sees its process) with ``PYTHONMALLOC``
    set, and this call does not return. Called by the command's ``main`` before anything
    else runs (no thread, no socket, no log handler yet), so it returns what to log once
    logging exists: ``(level, message)``, level ``""`` for nothing to say. Never loops: the
    re-executed process carries :data:`REEXEC_MARK`, and a mismatch with the mark set (the
    interpreter ignored ``PYTHONMALLOC``) or a failed exec is reported and the broker runs on
    with the allocator it has."""
    environ = os.environ if environ is None else environ
    execve = os.execve if execve is None else execve
    again = environ.pop(REEXEC_MARK, None) is not None
    running = running_allocator()
    if running == chosen:
        return ("info", f"re-executed with PYTHONMALLOC={environ.get('PYTHONMALLOC')} "
                        f"(--allocator {chosen})") if again else ("", "")
    if again:
        return ("warning", f"--allocator {chosen}: the interpreter ignored PYTHONMALLOC="
                           f"{chosen} (python -E or -I?) and runs with {running}")
    if environ.get("PYTHONMALLOC", "").endswith("debug"):
        return ("info", f"--allocator {chosen}: PYTHONMALLOC={environ['PYTHONMALLOC']} set by "
                        "the environment is kept")
    if sys.flags.ignore_environment:
        return ("warning", f"--allocator {chosen}: the interpreter ignores PYTHONMALLOC "
                           f"(python -E or -I); running with {running}")
    argv = getattr(sys, "orig_argv", None)
    if not sys.executable or not argv or sys.argv[:1] == ["-"]:
        return ("warning", f"--allocator {chosen}: cannot re-execute (no interpreter path, or "
                           f"a program read from standard input); running with {running}")
    env = dict(environ, PYTHONMALLOC=chosen)
    env[REEXEC_MARK] = "1"
    try:
        execve(sys.executable, list(argv), env)
    except OSError as e:
        return ("warning", f"--allocator {chosen}: cannot re-execute {sys.executable}: {e}; "
                           f"running with {running}")
    return ("", "")  # (a replaced execve that returned: tests)


def resident_memory() -> int:
    """Resident set size of this process in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _mean_body(ready: Any) -> int | None:
    """Mean body size of up to 2 * SAMPLE ready messages at the ends of a ready queue (None:
    no sample)."""
    try:
        sample = ready.sample(SAMPLE)
    except (IndexError, RuntimeError):  # changed under us: an estimate, try next time
        return None
    if not sample:
        return None
    return sum(item[0].size for item in sample) // len(sample)


def queued_memory(broker: Any) -> tuple[int, int, int]:
    """(messages, bytes, paged) of the broker's queues: ready and unacknowledged messages in
    memory, with their bodies where they are in memory (see the module docstring), and the
    messages paged out. A queue with only unacknowledged messages is counted at the mean
    body size of the other queues."""
    store = getattr(broker, "body_store", None)
    messages = body = index = loose = paged_out = 0
    unsampled = 0  # messages of queues with nothing ready to sample
    for vhost in list(broker.vhosts.values()):
        for q in list(vhost.queues.values()):
            n = q.ready.resident + q.unacked_count  # (paged-out messages cost no memory)
            loose += q.ready.loose_held  # (paged-in bodies kept outside the body store)
            paged = q.ready.paged_count
            paged_out += paged
            if paged and q.persistent_count:  # (an estimate: which are persistent is unknown)
                index += min(paged, q.persistent_count) * PAGED_PERSISTENT_OVERHEAD
            if not n:
                continue
            messages += n
            if store is None:
                mean = _mean_body(q.ready)
                if mean is None:
                    unsampled += n
                else:
                    body += n * mean
    if store is None and unsampled:
        sampled = messages - unsampled
        body += unsampled * (body // sampled if sampled else 0)
    if store is not None:
        body = store.memory_bytes() + loose
    return messages, messages * MESSAGE_OVERHEAD + body + index, paged_out


def connection_memory(sessions: list) -> int:
    total = 0
    for s in sessions:
        t = s.transport
        total += (CONNECTION_OVERHEAD + t.pending_out + t.rest_len + t.inflight * RECV_SIZE
                  + CHANNEL_OVERHEAD * len(s.channels))
    return total


def accounted_memory(broker: Any, sessions: list, baseline: int) -> dict[str, int]:
    """What the broker holds, in bytes, by part; ``total`` is what the alarm compares.
    ``queues`` (every queued message) is ``message_metadata`` (:data:`MESSAGE_OVERHEAD`
    each) plus ``message_bodies`` (the bodies in memory); ``paged`` is how many messages
    the queues hold in their page files (no memory of their own: a backlog's size the
    monitor's trim back-off watches)."""
    messages, queued, paged = queued_memory(broker)
    conns = connection_memory(sessions)
    metadata = messages * MESSAGE_OVERHEAD
    return {"total": baseline + queued + conns, "baseline": baseline, "queues": queued,
            "messages": messages, "message_metadata": metadata,
            "message_bodies": queued - metadata, "connections": conns, "paged": paged}
