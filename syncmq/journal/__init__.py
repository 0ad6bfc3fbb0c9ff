"""Durability: an append-only, group-committed journal of segment files.

Knows nothing of AMQP (names are ``str``, field tables and content headers opaque ``bytes``).

* ``format``     the byte layout (documented at the top); re-exports the record builders
                 (``encoding``) and decoders (``records``)
* ``writer``     :class:`Journal`: open / recover / start / append / close, group commit;
                 its segment files (``segfiles``), control requests and failed state
                 (``control``), queued items, errors and counters (``items``)
* ``recovery``   replay, torn-tail truncation, :class:`RecoveredState`
* ``compaction`` rewriting mostly-dead segments, crash-safe
* ``state``      the liveness model shared by the three above
"""

from .format import FormatError
from .recovery import RecoveredMessage, RecoveredQueue, RecoveredState, RecoveryStats
from .writer import (
    FSYNC_MODES,
    Callback,
    Journal,
    JournalClosed,
    JournalError,
    JournalFailed,
    JournalMetrics,
)

__all__ = [
    "Journal", "JournalError", "JournalFailed", "JournalClosed", "JournalMetrics", "Callback",
    "FSYNC_MODES", "FormatError", "RecoveredState", "RecoveredQueue", "RecoveredMessage",
    "RecoveryStats",
]
