"""``--allocator`` (issue #22): the broker's interpreter runs with the object allocator chosen.

- The ``syncmq`` command re-executes itself (same pid) with ``PYTHONMALLOC`` set when the
  interpreter does not already use the allocator: seen from outside in ``/proc/PID/environ``
  of the pid that was started, from inside in the start-up line's ``allocator`` (what the
  interpreter really uses, ``sys.getallocatedblocks``); the re-execution is logged once.
- The option comes from the command line, the INI file or ``SYNCMQ_ALLOCATOR``.
- No loop: an interpreter that ignores ``PYTHONMALLOC`` (``python -E``) logs one warning and
  serves with the allocator it has; a bad value is refused (exit 2, naming the option).
- ``memory.use_allocator`` with a stand-in ``execve``: the arguments of the re-execution, a
  failed exec, the mark that stops a second one.

RSS coming back after a drained backlog with the default allocator:
``tests/test_memory_return.py::test_rss_comes_back_after_small_messages_and_new_connections``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pika
import pytest
from brokerproc import BrokerProcess

from syncmq import memory


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = [e.decode(errors="replace").partition("=") for e in f.read().split(b"\0") if e]
    return {k: v for k, _, v in items}


def _started(b: BrokerProcess) -> dict:
    return json.loads(b.wait_for_log('"port"'))


def _env(**extra: str) -> dict[str, str]:
    """The test process's environment without an inherited allocator choice."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONMALLOC", "SYNCMQ_ALLOCATOR", memory.REEXEC_MARK)}
    env.update(extra)
    return env


@pytest.fixture
def start(tmp_path):
    started: list[BrokerProcess] = []

    def make(*extra: str, env: dict[str, str] | None = None, python: tuple = ()):
        b = BrokerProcess(str(tmp_path / f"data{len(started)}"), *extra, env=env or _env())
        b.args[1:1] = list(python)
        started.append(b)
        return b.start()
    yield make
    for b in started:
        if b.proc.poll() is None:
            assert b.stop() == 0, b.log_tail()
        assert not b.tracebacks(), "\n".join(b.tracebacks())


def _serves(b: BrokerProcess) -> None:
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port)) as c:
        ch = c.channel()
        ch.queue_declare("alloc-check", auto_delete=True)
        ch.basic_publish("", "alloc-check", b"x")
        assert ch.basic_get("alloc-check", auto_ack=True)[2] == b"x"


def test_default_is_malloc_by_reexecution_in_the_same_process(start):
    assert memory.running_allocator() == "pymalloc"  # the test's interpreter: a re-exec is due
    b = start()
    assert _started(b)["allocator"] == "malloc"
    env = _environ(b.proc.pid)  # the pid the test started: execve kept it
    assert env.get("PYTHONMALLOC") == "malloc"
    # (the mark is there too: /proc shows the environment given to execve; the process
    # removed it from its own, which its children inherit)
    said = [line for line in b.lines if "re-executed with PYTHONMALLOC" in line]
    assert len(said) == 1 and json.loads(said[0])["allocator"] == "malloc", said
    _serves(b)


def test_no_reexecution_when_the_interpreter_already_has_it(start):
    b = start(env=_env(PYTHONMALLOC="malloc"))
    assert _started(b)["allocator"] == "malloc"
    assert not any("re-executed" in line for line in b.lines)


def test_pymalloc_from_the_command_line(start):
    b = start("--allocator", "pymalloc", env=_env(PYTHONMALLOC="malloc"))
    assert _started(b)["allocator"] == "pymalloc"
    assert _environ(b.proc.pid)["PYTHONMALLOC"] == "pymalloc"
    _serves(b)


@pytest.mark.parametrize("source", ["ini", "env"])
def test_allocator_from_the_ini_file_or_the_environment(start, tmp_path, source):
    if source == "ini":
        ini = tmp_path / "syncmq.ini"
        ini.write_text("[syncmq]\nallocator = pymalloc\n")
        b = start("-c", str(ini), env=_env(PYTHONMALLOC="malloc"))
    else:
        b = start(env=_env(PYTHONMALLOC="malloc", SYNCMQ_ALLOCATOR="pymalloc"))
    assert _started(b)["allocator"] == "pymalloc"


def test_an_interpreter_that_ignores_pythonmalloc_warns_once_and_serves(start):
    """``python -E`` ignores PYTHONMALLOC (and PYTHONPATH: the tree is found from the working
    directory, as pytest runs from the repository root): the broker sees it, warns once and
    does not execute itself for nothing (the mark stops a loop in any other case)."""
    b = start(python=("-E",))
    warned = [line for line in b.lines if "ignores PYTHONMALLOC" in line]
    assert len(warned) == 1, b.log_tail()
    assert json.loads(warned[0])["level"] == "WARNING"
    assert _started(b)["allocator"] == "pymalloc"
    _serves(b)


def test_a_bad_allocator_is_refused(tmp_path):
    p = subprocess.run([sys.executable, "-m", "syncmq.cli", "--allocator", "jemalloc",
                        "--data-dir", str(tmp_path)], capture_output=True, text=True,
                       env=_env(), timeout=60)
    assert p.returncode == 2
    assert "--allocator" in p.stderr and "jemalloc" in p.stderr


class _Exec:
    def __init__(self, error: OSError | None = None) -> None:
        self.calls: list[tuple] = []
        self.error = error

    def __call__(self, path, argv, env) -> None:
        self.calls.append((path, argv, env))
        if self.error:
            raise self.error


def test_use_allocator_reexecutes_with_the_same_arguments():
    other = "malloc" if memory.running_allocator() == "pymalloc" else "pymalloc"
    execve = _Exec()
    env = {"HOME": "/x"}
    memory.use_allocator(other, env, execve)
    [(path, argv, new)] = execve.calls
    assert path == sys.executable and argv == list(sys.orig_argv)
    assert new == {"HOME": "/x", "PYTHONMALLOC": other, memory.REEXEC_MARK: "1"}
    assert env == {"HOME": "/x"}  # (the caller's environment is left as it was)


def test_use_allocator_never_loops_and_reports_once_logging_exists():
    running = memory.running_allocator()
    other = "malloc" if running == "pymalloc" else "pymalloc"
    execve = _Exec()
    # already the interpreter's: nothing to do, nothing to say
    assert memory.use_allocator(running, {}, execve) == ("", "")
    # re-executed and now right: one info line; the mark is consumed
    env = {memory.REEXEC_MARK: "1", "PYTHONMALLOC": running}
    level, text = memory.use_allocator(running, env, execve)
    assert level == "info" and "re-executed" in text and memory.REEXEC_MARK not in env
    # re-executed and still wrong: a warning, no second exec
    level, text = memory.use_allocator(other, {memory.REEXEC_MARK: "1"}, execve)
    assert level == "warning" and "ignored PYTHONMALLOC" in text
    assert execve.calls == []
    # exec failing: a warning, the broker runs on
    failing = _Exec(PermissionError(13, "Permission denied"))
    level, text = memory.use_allocator(other, {}, failing)
    assert level == "warning" and "cannot re-execute" in text and len(failing.calls) == 1


def test_use_allocator_keeps_a_debug_allocator_and_a_program_from_stdin(monkeypatch):
    """PYTHONMALLOC=debug (or malloc_debug, pymalloc_debug) chosen by whoever started the
    broker is kept; a program read from standard input cannot be executed again."""
    other = "malloc" if memory.running_allocator() == "pymalloc" else "pymalloc"
    execve = _Exec()
    level, text = memory.use_allocator(other, {"PYTHONMALLOC": "pymalloc_debug"}, execve)
    assert level == "info" and "kept" in text
    monkeypatch.setattr(sys, "argv", ["-"])
    level, text = memory.use_allocator(other, {}, execve)
    assert level == "warning" and "cannot re-execute" in text
    assert execve.calls == []
