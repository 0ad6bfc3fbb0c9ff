"""Celery: a real worker (celery_worker) on the plugin's broker, results over rpc://."""

import pytest


@pytest.fixture(scope="session")
def celery_config(syncmq_url):
    return {"broker_url": syncmq_url, "result_backend": "rpc://"}


def test_task_runs_on_a_worker(celery_app, celery_worker):
    @celery_app.task
    def add(x, y):
        return x + y

    celery_worker.reload()  # the worker learns the task defined after it started
    assert add.delay(2, 3).get(timeout=30) == 5
