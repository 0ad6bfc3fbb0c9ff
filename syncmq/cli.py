"""The ``syncmq`` console script. Exit codes: 0 clean, 1 runtime failure, 2 bad configuration."""

from __future__ import annotations

import logging
import os
import sys

from . import memory
from .broker.auth import UsersFileError, UserStore
from .config import build_parser, server_config, setup_logging
from .journal.writer import JournalError
from .server import Server

log = logging.getLogger("syncmq")


def raise_nofile_limit() -> None:
    """Raise the soft limit of open files to the hard limit: every connection is a socket, and
    distributions default the soft limit to 1024 (RabbitMQ asks for 65536 or more). Logged."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = 1 << 20  # Linux's default fs.nr_open, the most an unlimited hard limit allows
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= target:
        log.info("open files limit", extra={"nofile_soft": soft, "nofile_hard": hard})
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as e:
        log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, e)
        return
    log.info("raised the open files limit from %d to %d", soft, target,
             extra={"nofile_soft": target, "nofile_hard": hard})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with a message naming the option
    try:
        config = server_config(args)
    except ValueError as e:
        parser.error(str(e))
    # the process's entry only (not a caller's main(argv)): may re-execute the interpreter
    said = memory.use_allocator(args.allocator) if argv is None else ("", "")
    users = None
    if args.users_file:
        try:
            users = UserStore.load(args.users_file)
        except UsersFileError as e:
            parser.error(f"--users-file: {e}")  # exits 2
    ready_fd = daemonize(args.log_file is not None) if args.daemonize else None
    if args.pid_file:
        write_pid_file(args.pid_file)
    handler = setup_logging(args.log_level, args.log_format, args.log_file)
    if said[0]:
        getattr(log, said[0])(said[1], extra={"allocator": memory.running_allocator()})
    raise_nofile_limit()
    try:
        server = Server(config)
    except UsersFileError as e:  # <data-dir>/users.toml (no --users-file) unreadable
        log.error("cannot read the users store: %s", e)
        _report_ready(ready_fd, False)
        return 1
    server.config_files = [args.config_file] if getattr(args, "config_file", None) else []
    server.freeze_heap = True  # this process is the broker's own (memory.freeze_heap)
    if users is not None:
        server.set_users(users)
        log.info("users file loaded", extra={"users_file": args.users_file, **users.summary()})
    server.install_signal_handlers()
    try:
        server.start()
    except JournalError as e:
        log.error("cannot open the journal in %s: %s", args.data_dir, e)
        _report_ready(ready_fd, False)
        return 1
    except OSError as e:
        where = e.filename or f"{args.bind}:{args.port}"
        log.error("cannot listen on %s: %s", where, e.strerror or e)
        _report_ready(ready_fd, False)
        return 1
    _report_ready(ready_fd, True)
    if hasattr(handler, "reopenIfNeeded"):
        server.on_hup = handler.reopenIfNeeded
    try:
        server.serve_forever()
    except Exception:
        log.exception("fatal error")
        return 1
    finally:
        if args.pid_file:
            try:
                os.unlink(args.pid_file)
            except OSError:
                pass
    return 0


def daemonize(has_log_file: bool) -> int:
    """Detach: fork, setsid, fork again. The original process waits for the daemon to say it
    is listening (one byte on a pipe) and exits 0, or 1 if it failed to start. Returns the
    daemon's end of that pipe. stdin/stdout go to /dev/null, and stderr too when logs go to
    a file. Must run before any thread starts."""
    r, w = os.pipe()
    if os.fork() > 0:
        os.close(w)
        status = os.read(r, 1)
        os._exit(0 if status == b"0" else 1)
    os.close(r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if has_log_file:
        os.dup2(devnull, 2)
    return w


def write_pid_file(path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def _report_ready(fd: int | None, ok: bool) -> None:
    if fd is not None:
        os.write(fd, b"0" if ok else b"1")
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
