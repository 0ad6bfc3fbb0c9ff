"""``syncmqctl migration_plan``'s plan (syncmq/ctl_migration.py): the shovel it writes per
queue. Against a broker and RabbitMQ: tests/interop/test_migration.py."""

from __future__ import annotations

import pytest

from syncmq.ctl_migration import PlanError, plan, source_uri_for


def test_one_shovel_per_non_empty_shareable_queue():
    queues = [
        {"vhost": "v/2", "name": "b", "messages": 3},
        {"vhost": "/", "name": "a", "messages": 1},
        {"vhost": "/", "name": "empty", "messages": 0},
        {"vhost": "/", "name": "excl", "messages": 5, "exclusive": True},
    ]
    got = plan({"queues": []}, queues, "amqps://u:p@h:5671/ignored?cacertfile=/c.pem")
    params = got["shovels"]["parameters"]
    assert [(p["vhost"], p["name"]) for p in params] == [("/", "migrate-a"), ("v/2", "migrate-b")]
    first, second = (p["value"] for p in params)
    assert first["src-uri"] == "amqps://u:p@h:5671/%2F?cacertfile=/c.pem"
    assert second["src-uri"] == "amqps://u:p@h:5671/v%2F2?cacertfile=/c.pem"
    assert (second["src-queue"], second["dest-queue"], second["dest-uri"]) == \
        ("b", "b", "amqp:///v%2F2")
    assert (first["ack-mode"], first["src-delete-after"]) == ("on-confirm", "queue-length")
    assert got["definitions"] == {"queues": []} and got["steps"]


@pytest.mark.parametrize("bad", ["http://h", "amqp://", "h:5672", ""])
def test_bad_source_uri(bad):
    with pytest.raises(PlanError, match="SOURCE_URI"):
        source_uri_for(bad, "/")
    with pytest.raises(PlanError):
        plan({}, [], bad)  # even with nothing to shovel
