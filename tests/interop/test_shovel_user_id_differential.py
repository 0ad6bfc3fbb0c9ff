"""A shovel's local end and the ``user_id`` property, against RabbitMQ 3.10.8 and syncmq.

RabbitMQ's shovel reaches its own node with a direct connection: ``amqp://`` logs in as the
trusted user ``none`` (``rabbit_auth_backend_dummy``), which ``check_user_id_header`` lets
publish any ``user_id``; a local URI naming a user (``amqp://u@``, ``amqp://u:p@``) logs in
as that user (with its password, or trusted without one), and that user's rule applies: a
message whose ``user_id`` names someone else terminates the shovel with the channel's 406,
unless the user is an ``impersonator``. syncmq's local end logged in as ``none`` whatever the
URI said. Each case moves one message published (by an impersonator) with
``user_id=nobody`` from a queue to another through a shovel whose destination is the case's
URI, and compares how it ends: delivered (with which user_id) or terminated (on which
channel error).
"""

from __future__ import annotations

import time

import pika
import pytest
import test_rabbitmqadmin as ra
from interop_helpers import api

rabbit_mgmt = ra.rabbit_mgmt  # the RabbitMQ node's management port, once it answers
IMP, PW = "shovel-imp", "pw-imp"
DESTS = ("amqp://", "amqp://guest@", "amqp://guest:guest@", f"amqp://{IMP}@",
         f"amqp://{IMP}:{PW}@")
TIMEOUT = 60.0


def _channel(port: int, user: str = "guest", password: str = "guest"):
    c = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, "/", pika.PlainCredentials(user, password)))
    return c, c.channel()


def _outcome(port: int, mport: int, name: str, dest: str) -> tuple:
    """Shovel one message with user_id=nobody to ``dest``; how it ended."""
    c, ch = _channel(port, IMP, PW)
    ch.queue_declare(f"{name}-src", durable=True)
    ch.basic_publish("", f"{name}-src", b"x", pika.BasicProperties(user_id="nobody"))
    c.close()
    assert api(mport, "PUT", f"/parameters/shovel/%2F/{name}", {"value": {
        "src-uri": "amqp://", "src-queue": f"{name}-src",
        "dest-uri": dest, "dest-queue": f"{name}-dest"}})[0] in (201, 204)
    deadline = time.monotonic() + TIMEOUT
    try:
        while True:  # the status and the queue are only seen by asking: polled
            c, ch = _channel(port)
            try:
                got = ch.basic_get(f"{name}-dest", auto_ack=True)
            except pika.exceptions.ChannelClosedByBroker:
                got = (None,)  # not declared yet
            finally:
                if c.is_open:
                    c.close()
            if got[0] is not None:
                return ("delivered", got[1].user_id)
            rows = [r for r in api(mport, "GET", "/shovels/%2F")[1] if r.get("name") == name]
            if rows and rows[0].get("state") == "terminated":
                return ("terminated", rows[0].get("reason"))
            if time.monotonic() > deadline:
                raise AssertionError(f"{dest}: neither delivered nor terminated: {rows}")
            time.sleep(0.2)
    finally:
        api(mport, "DELETE", f"/parameters/shovel/%2F/{name}")
        c, ch = _channel(port)
        for q in (f"{name}-src", f"{name}-dest"):
            ch.queue_delete(q)
        c.close()


@pytest.fixture
def impersonators(rabbit_mgmt, broker):
    for mport in (rabbit_mgmt, broker.management_port):
        assert api(mport, "PUT", f"/users/{IMP}",
                   {"password": PW, "tags": "impersonator"})[0] in (201, 204)
        assert api(mport, "PUT", f"/permissions/%2F/{IMP}",
                   {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)
    yield
    for mport in (rabbit_mgmt, broker.management_port):
        api(mport, "DELETE", f"/users/{IMP}")


@pytest.mark.parametrize("dest", DESTS)
def test_shovel_local_end_user_id_like_rabbitmq(rabbitmq, rabbit_mgmt, broker, impersonators,
                                                 unique, dest):
    name = f"shovel-user-id-{DESTS.index(dest)}-{unique[-6:]}"
    rabbit = _outcome(rabbitmq.port, rabbit_mgmt, name, dest)
    ours = _outcome(broker.port, broker.management_port, name, dest)
    refused = ("PRECONDITION_FAILED - user_id property set to 'nobody' but authenticated "
               "user was 'guest'")
    if "guest" in dest:
        # the reason's wording is each broker's own (RabbitMQ: the reply text as an Erlang
        # binary; syncmq: outbound_channel_closed and the reply), the reply text is the same
        assert rabbit == ("terminated", f'<<"{refused}">>')
        assert ours[0] == "terminated" and refused in ours[1] and "406" in ours[1], ours
    else:
        assert rabbit == ours == ("delivered", "nobody")
