"""A definitions file naming a queue type syncmq does not serve (issue 17): the import is
refused as a whole with an error naming the queue and its type, whether the type is in the
queue's ``x-queue-type`` argument (every RabbitMQ export) or in its ``type`` field (newer
exports), and nothing of the file is created; the broker keeps serving."""

from __future__ import annotations

import pytest
from test_management import call, get

OTHER = {"name": "plain", "vhost": "/", "durable": True, "auto_delete": False,
         "arguments": {}}


@pytest.mark.parametrize("queue, reason", [
    ({"arguments": {"x-queue-type": "stream"}},
     "queue 's': invalid arg 'x-queue-type' for queue 's' in vhost '/': "
     "\"unsupported queue type 'stream'\""),
    ({"type": "stream", "arguments": {}},
     "queue 's': invalid arg 'x-queue-type' for queue 's' in vhost '/': "
     "\"unsupported queue type 'stream'\""),
    ({"type": "mqtt_qos0", "arguments": {}}, "queue 's': unsupported queue type 'mqtt_qos0'"),
    ({"arguments": {"x-queue-type": "nope"}},
     "queue 's': invalid arg 'x-queue-type' for queue 's' in vhost '/': "
     "\"unsupported queue type 'nope'\""),
])
def test_unserved_queue_type_is_refused_by_name(broker_factory, queue, reason):
    b = broker_factory()
    stream = {"name": "s", "vhost": "/", "durable": True, "auto_delete": False, **queue}
    status, body, _ = call(b, "POST", "/api/definitions", {"queues": [OTHER, stream]})
    assert (status, body) == (400, {"error": "bad_request", "reason": reason})
    names = {q["name"] for q in get(b, "/api/queues")}
    assert "s" not in names and "plain" not in names  # refused as a whole
    assert "exists with other properties" not in b.log_tail()
    status, _, _ = call(b, "POST", "/api/definitions", {"queues": [OTHER]})
    assert status == 204 and "plain" in {q["name"] for q in get(b, "/api/queues")}


@pytest.mark.parametrize("qtype", ["classic", "quorum"])
def test_served_types_in_the_type_field(broker_factory, qtype):
    b = broker_factory()
    q = {"name": "t", "vhost": "/", "durable": True, "auto_delete": False, "type": qtype,
         "arguments": {}}
    assert call(b, "POST", "/api/definitions", {"queues": [q]})[0] == 204
    got = get(b, "/api/queues/%2F/t")
    assert got["arguments"].get("x-queue-type", "classic") == qtype
