"""A real Celery round trip through syncmq: a worker process (solo pool) started by the test,
tasks sent with ``.delay()``, results back through the ``rpc://`` backend, a retry, an
``acks_late`` task whose worker dies before the ack, and the worker's warm shutdown.

Celery's rpc backend replies through one queue per client (named after the app's oid) and
never uses direct reply-to (``amq.rabbitmq.reply-to``), so it does not need that extension.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("celery", reason="celery is not installed (pip install -e '.[interop]')")

HERE = os.path.dirname(os.path.abspath(__file__))


class Worker:
    """``celery -A syncmq_celery_app worker`` as a subprocess, its log lines collected."""

    def __init__(self, url: str, queue: str, name: str) -> None:
        env = dict(os.environ, SYNCMQ_CELERY_BROKER=url, SYNCMQ_CELERY_QUEUE=queue,
                   PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "syncmq_celery_app", "worker",
             "--pool=solo", "--without-heartbeat", "--without-gossip", "--without-mingle",
             "--loglevel=INFO", "-n", f"{name}@localhost", "-Q", queue],
            cwd=HERE, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: any(text in x for x in self.lines), timeout):
                raise AssertionError(f"worker never logged {text!r}:\n" + self.log())

    def log(self) -> str:
        return "\n".join(self.lines[-60:])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture(scope="module")
def celery_app(broker):
    """The app, configured once for the module's broker (Celery caches its queues, pool and
    rpc result consumer, so the broker URL and the task queue do not change per test)."""
    url = f"amqp://guest:guest@127.0.0.1:{broker.port}//"
    queue = "celery-interop-" + os.urandom(3).hex()
    sys.path.insert(0, HERE)
    try:
        import syncmq_celery_app as mod
    finally:
        sys.path.remove(HERE)
    mod.app.conf.update(broker_url=url, task_default_queue=queue)
    yield mod, url, queue
    mod.app.close()


@pytest.fixture
def celery_env(celery_app, unique):
    mod, url, queue = celery_app
    workers: list[Worker] = []

    def start_worker(name: str = "w1") -> Worker:
        w = Worker(url, queue, f"{name}-{unique}")
        workers.append(w)
        w.wait_for("ready.")
        return w

    yield mod, start_worker
    for w in workers:
        w.stop()


def test_delay_and_rpc_results(celery_env):
    mod, start_worker = celery_env
    w = start_worker()
    assert mod.add.delay(2, 3).get(timeout=30) == 5
    results = [mod.add.delay(i, i) for i in range(10)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(10)]
    assert w.stop() == 0, w.log()


def test_canvas_chain_group_chord(celery_env):
    """Celery's canvas with rpc:// results: a chain (each result fed to the next task), a
    group (results in order), and a chord's work (a group whose results go to a callback
    task). Celery itself refuses a chord on the rpc backend (NotImplementedError, before
    anything is sent): the same with RabbitMQ."""
    from celery import chain, chord, group
    mod, start_worker = celery_env
    w = start_worker()
    assert chain(mod.add.s(1, 2), mod.add.s(3), mod.add.s(4)).delay().get(timeout=30) == 10
    assert group(mod.add.s(i, i) for i in range(5)).delay().get(timeout=30) == [0, 2, 4, 6, 8]
    with pytest.raises(NotImplementedError, match="does not support chords"):
        chord((mod.add.s(i, 1) for i in range(4)), mod.tsum.s()).delay()
    header = group(mod.add.s(i, 1) for i in range(4)).delay().get(timeout=30)
    assert mod.tsum.delay(header).get(timeout=30) == 10
    assert w.stop() == 0, w.log()


def test_retry(celery_env):
    mod, start_worker = celery_env
    w = start_worker()
    assert mod.flaky.delay(2).get(timeout=30) == {"retries": 2}
    assert w.stop() == 0, w.log()
    assert sum("Retry in 0s" in x for x in w.lines) == 2, w.log()


def test_acks_late_redelivered_after_worker_death(celery_env, tmp_path):
    mod, start_worker = celery_env
    marker = str(tmp_path / "crashed")
    w1 = start_worker("w1")
    r = mod.crash_once.delay(marker)
    assert w1.proc.wait(60) == 1, w1.log()  # died in the task, before acking it
    assert os.path.exists(marker)
    w2 = start_worker("w2")
    assert r.get(timeout=30) == {"redelivered": True, "acks_late": True}
    assert w2.stop() == 0, w2.log()


def test_warm_shutdown_finishes_running_task(celery_env, tmp_path):
    mod, start_worker = celery_env
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    w = start_worker()
    r = mod.wait_for_file.delay(started, release)
    deadline = time.monotonic() + 30
    while not os.path.exists(started):  # bounded: the task writes it when it starts
        assert time.monotonic() < deadline, w.log()
        time.sleep(0.05)
    w.proc.send_signal(signal.SIGTERM)
    w.wait_for("Warm shutdown")
    assert w.proc.poll() is None  # still running the task
    open(release, "w").close()
    assert r.get(timeout=30) == "finished"
    assert w.proc.wait(60) == 0, w.log()
