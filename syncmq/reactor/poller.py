"""The reactor's readiness poller: ``select.epoll`` with the part of ``selectors`` it uses.

``selectors.EpollSelector.select`` runs ~70 bytecodes and a Python call per ready socket to
build ``(SelectorKey, mask)`` pairs; the reactor turns once or twice per message at low
rates (S8), so that was ~4% of a message's instructions. :class:`Poller` keeps the same
registration calls (``register``/``modify``/``unregister`` with ``selectors.EVENT_READ`` /
``EVENT_WRITE`` masks and a data object per file) and hands the loop the raw
``(fd, epoll events)`` list plus ``data``, a dict fd -> data, so the loop does one dict lookup
per ready file. Where ``select.epoll`` is missing (not Linux), the same interface is built on
``selectors.DefaultSelector`` (slower, same behaviour).

Reactor thread only (as the selector was).
"""

from __future__ import annotations

import select
import selectors
from typing import Any

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

if hasattr(select, "epoll"):
    _IN, _OUT = select.EPOLLIN, select.EPOLLOUT
    # as selectors.EpollSelector reads them: anything but "writable" (errors, hang-ups)
    # makes a reader look, anything but "readable" a writer
    READ_BITS = ~_OUT
    WRITE_BITS = ~_IN
else:  # pragma: no cover - the fallback below reports selectors' masks
    _IN, _OUT = EVENT_READ, EVENT_WRITE
    READ_BITS, WRITE_BITS = EVENT_READ, EVENT_WRITE


def _fd(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else fileobj.fileno()


def _mask(events: int) -> int:
    return (_IN if events & EVENT_READ else 0) | (_OUT if events & EVENT_WRITE else 0)


class Poller:
    """Readiness of registered files; ``poll(timeout)`` returns ``[(fd, bits), ...]`` where
    ``bits & READ_BITS`` means "read it" and ``bits & WRITE_BITS`` "write to it" (check the
    file's registered events for the latter: an error or hang-up sets both)."""

    __slots__ = ("data", "poll", "_impl", "_sel")

    def __init__(self) -> None:
        self.data: dict[int, Any] = {}  # fd -> the registered data object
        if hasattr(select, "epoll"):
            self._impl = select.epoll()
            self._sel = None
            impl = self._impl

            def poll(timeout: float | None) -> list:
                return impl.poll(-1 if timeout is None else timeout)
        else:  # pragma: no cover
            self._impl = None
            self._sel = selectors.DefaultSelector()
            sel = self._sel

            def poll(timeout: float | None) -> list:
                return [(key.fd, mask) for key, mask in sel.select(timeout)]
        self.poll = poll

    def register(self, fileobj: Any, events: int, data: Any) -> None:
        fd = _fd(fileobj)
        if self._impl is not None:
            self._impl.register(fd, _mask(events))
        else:  # pragma: no cover
            self._sel.register(fd, events)
        self.data[fd] = data

    def modify(self, fileobj: Any, events: int, data: Any) -> None:
        fd = _fd(fileobj)
        if self._impl is not None:
            self._impl.modify(fd, _mask(events))
        else:  # pragma: no cover
            self._sel.modify(fd, events)
        self.data[fd] = data

    def unregister(self, fileobj: Any) -> None:
        """Forget ``fileobj``; KeyError if it was not registered (as ``selectors``)."""
        fd = _fd(fileobj)
        del self.data[fd]
        if self._impl is not None:
            try:
                self._impl.unregister(fd)
            except OSError:
                pass  # closed already: the kernel dropped it
        else:  # pragma: no cover
            self._sel.unregister(fd)

    def data_of(self, fileobj: Any) -> Any:
        return self.data[_fd(fileobj)]

    def get_map(self) -> dict[int, Any]:
        """fd -> data of what is registered (read-only use)."""
        return self.data

    def close(self) -> None:
        if self._impl is not None:
            self._impl.close()
        else:  # pragma: no cover
            self._sel.close()
        self.data.clear()
