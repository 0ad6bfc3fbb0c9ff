"""A power-loss file layer for the journal (test-only: production code is not touched).

:class:`PowerLossFS` replaces the ``os`` module (and the writer's ``_fdatasync`` alias) seen by
the ``syncmq.journal`` modules with a proxy that records what the kernel would guarantee
after a power cut:

* ``fsync``/``fdatasync`` of a file: its size at that moment is *durable* (the journal only
  appends to and truncates its files, never overwrites, so a durable length is the whole
  story of its content);
* ``fsync`` of the data directory: the directory's entries (name -> inode) are durable;
* ``unlink``/``rename``/``replace`` and every sync are *events*, numbered; a cut can be armed
  at a future event (:attr:`cut_at`): the image is taken right before that call runs, i.e.
  with everything before it written but not necessarily synced.

:meth:`image` builds the directory a power cut would leave: the durable entries (or, at
random, the current ones: a rename or unlink may also have reached the disk), each file cut
to its durable length; with ``torn`` the unsynced tail is kept in part, 4 KiB page by page
at random (a missing page is zeros), then cut at a random length, as a disk that wrote some
pages and not others. Every inode ever seen keeps a hard link in a shadow directory, so a
file unlinked or replaced since the last directory sync can still be put back.

Lock: :attr:`lock` (re-entrant) guards every record here; tests take it to update their model
in journal callbacks, so an image and the model snapshot taken with it agree (a durable length
is recorded before the callbacks of its fsync run).
"""

from __future__ import annotations

import os
import random
import stat
import sys
import threading
from collections.abc import Callable
from typing import Any

PAGE = 4096
_real_fsync = os.fsync


class _OsProxy:
    """``os`` for the journal modules: the file-system calls that matter go through the
    :class:`PowerLossFS`; everything else is the real ``os``."""

    def __init__(self, fs: PowerLossFS) -> None:
        self._fs = fs

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fsync(self, fd: int) -> None:
        self._fs.sync(fd)

    def fdatasync(self, fd: int) -> None:
        self._fs.sync(fd)

    def unlink(self, path: Any, *a: Any, **kw: Any) -> None:
        self._fs.event("unlink")
        os.unlink(path, *a, **kw)

    def rename(self, src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        self._fs.event("rename")
        os.rename(src, dst, *a, **kw)

    def replace(self, src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        self._fs.event("rename")
        os.replace(src, dst, *a, **kw)


class PowerLossFS:
    """Records syncs of ``data_dir`` (see the module docstring); :meth:`install` it."""

    def __init__(self, data_dir: str, shadow_dir: str, seed: int = 0) -> None:
        self.data_dir = os.path.realpath(data_dir)
        self.shadow_dir = shadow_dir
        os.makedirs(shadow_dir, exist_ok=True)
        self.rng = random.Random(seed)
        self.lock = threading.RLock()
        self.durable_len: dict[int, int] = {}  # inode -> bytes known durable
        self.dir_durable: dict[str, int] = {}  # name -> inode, as of the last directory sync
        self.events = 0
        self.cut_at: int | None = None  # take an image right before this event
        #: called (lock held, on the thread that hit the event) as on_cut(event_no, kind)
        self.on_cut: Callable[[int, str], None] | None = None
        self._saved: list[tuple[Any, str, Any]] = []
        with self.lock:  # what is there now was set up cleanly: all of it durable
            for name, ino in self._listing().items():
                self.durable_len[ino] = os.stat(os.path.join(self.data_dir, name)).st_size
            self._sync_dir()

    # -- installing ----------------------------------------------------------------------------

    def install(self) -> PowerLossFS:
        proxy = _OsProxy(self)
        for name, mod in list(sys.modules.items()):
            if not name.startswith("syncmq.journal") or mod is None:
                continue
            if getattr(mod, "os", None) is os:
                self._saved.append((mod, "os", os))
                mod.os = proxy
            if getattr(mod, "_fdatasync", None) is not None:
                self._saved.append((mod, "_fdatasync", mod._fdatasync))
                mod._fdatasync = proxy.fdatasync
        return self

    def uninstall(self) -> None:
        for mod, attr, value in reversed(self._saved):
            setattr(mod, attr, value)
        self._saved.clear()

    # -- recording -----------------------------------------------------------------------------

    def _listing(self) -> dict[str, int]:
        out = {}
        for name in os.listdir(self.data_dir):
            if name == "LOCK":
                continue
            st = os.lstat(os.path.join(self.data_dir, name))
            if stat.S_ISREG(st.st_mode):
                out[name] = st.st_ino
        return out

    def _shadow(self, ino: int, path: str) -> None:
        link = os.path.join(self.shadow_dir, str(ino))
        if not os.path.exists(link):
            try:
                os.link(path, link)
            except FileNotFoundError:
                pass

    def _sync_dir(self) -> None:
        listing = self._listing()
        for name, ino in listing.items():
            self._shadow(ino, os.path.join(self.data_dir, name))
        self.dir_durable = listing

    def event(self, kind: str) -> None:
        with self.lock:
            self.events += 1
            if self.cut_at is not None and self.events >= self.cut_at:
                self.cut_at = None
                if self.on_cut is not None:
                    self.on_cut(self.events, kind)

    def sync(self, fd: int) -> None:
        """fsync/fdatasync of ``fd``: a file's size, or a directory's entries, become
        durable (recorded after the real call returns)."""
        self.event("fsync")
        _real_fsync(fd)
        st = os.fstat(fd)
        with self.lock:
            if stat.S_ISDIR(st.st_mode):
                if os.path.realpath(os.readlink(f"/proc/self/fd/{fd}")) == self.data_dir:
                    self._sync_dir()
                return
            path = os.readlink(f"/proc/self/fd/{fd}")
            if os.path.dirname(path) == self.data_dir:
                self._shadow(st.st_ino, path)
                self.durable_len[st.st_ino] = st.st_size

    # -- the image of a power cut --------------------------------------------------------------

    def image(self, dest: str, torn: bool = False, metadata_durable: bool | None = None) -> None:
        """Write into ``dest`` (a new directory) what a power cut now would leave."""
        with self.lock:
            if metadata_durable is None:
                metadata_durable = self.rng.random() < 0.3
            listing = self._listing() if metadata_durable else dict(self.dir_durable)
            os.makedirs(dest)
            for name, ino in listing.items():
                src = os.path.join(self.shadow_dir, str(ino))
                if not os.path.exists(src):  # created and never synced: nothing durable
                    src = os.path.join(self.data_dir, name)
                try:
                    with open(src, "rb") as f:
                        content = f.read()
                except FileNotFoundError:
                    content = b""
                keep = min(self.durable_len.get(ino, 0), len(content))
                data = content[:keep]
                if torn and len(content) > keep:
                    data += self._torn(content, keep)
                with open(os.path.join(dest, name), "wb") as f:
                    f.write(data)

    def _torn(self, content: bytes, keep: int) -> bytes:
        """Part of the unsynced tail ``content[keep:]``: pages kept or zeroed at random, then
        cut at a random length."""
        rng = self.rng
        out = bytearray()
        pos = keep
        while pos < len(content):
            end = min(len(content), (pos // PAGE + 1) * PAGE)
            out += content[pos:end] if rng.random() < 0.7 else bytes(end - pos)
            pos = end
        return bytes(out[: rng.randrange(len(out) + 1)])
