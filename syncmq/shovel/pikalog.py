"""pika's own log records on the shovels' threads: quieted to critical ones only.

pika logs each failure of a connection itself, a peer's reset at ERROR with a stack (which
reads as a crash of the broker); a shovel logs the same failure once, as its link's end reason
in RabbitMQ's words. Importing this module puts a filter on every pika logger; records made on
any other thread (an application embedding syncmq, its own pika connections) pass unchanged,
and no logger's level is changed (a level would be process-wide).
"""

from __future__ import annotations

import logging
import threading

# the pika modules a shovel uses create their loggers on import; the filters go on them
import pika  # noqa: F401
import pika.adapters.select_connection  # noqa: F401

THREAD_PREFIX = "syncmq-shovel-"  # the name of every shovel worker's thread


def _quiet_in_shovels(record: logging.LogRecord) -> bool:
    """pika logs each failure of a connection itself, a peer's reset at ERROR with a stack
    (which reads as a crash of the broker); the shovel logs the same failure once, as its
    link's end reason in RabbitMQ's words. So pika's records from a shovel's thread pass only
    when critical; an application embedding syncmq keeps every record of its own pika
    connections (no logger's level is changed: a level would be process-wide)."""
    return (record.levelno >= logging.CRITICAL
            or not threading.current_thread().name.startswith(THREAD_PREFIX))


# a logger's filter sees only the records made on that logger (not its children's): one on
# each pika logger, all created by ``import pika`` (a module's ``getLogger(__name__)``)
for _name in [n for n in list(logging.Logger.manager.loggerDict) if n.split(".")[0] == "pika"]:
    logging.getLogger(_name).addFilter(_quiet_in_shovels)
