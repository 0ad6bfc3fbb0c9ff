"""PLAIN responses with an authorization identity, against RabbitMQ and syncmq (issue #19).

RabbitMQ (``rabbit_auth_mechanism_plain``) accepts only an empty authorization identity and
drops the connection (syntax error in the ``starting`` state: no close, no tune) for any
other. syncmq drops one that differs from the user, as RabbitMQ; one equal to the user is
accepted (RFC 4616: it names no one else), a documented difference checked at the end.
"""

from __future__ import annotations

import amqp_raw as raw

from syncmq.wire import _spec


def _outcome(port: int, response: bytes) -> str:
    with raw.RawClient(port) as c:
        c.send_header()
        c.expect_method(0, _spec.Connection.Start)
        c.send_method(0, _spec.Connection.StartOk(
            client_properties={"capabilities": {"authentication_failure_close": True}},
            mechanism="PLAIN", response=response, locale="en_US"))
        try:
            f = c.read_method()
        except raw.EOF:
            return "dropped"
        return type(f.method).__qualname__


def test_plain_authzid_like_rabbitmq(rabbitmq, broker):
    for response in (b"\x00guest\x00guest", b"admin\x00guest\x00guest",
                     b"someone\x00guest\x00guest", b"\x00guest\x00guest\x00x"):
        expected = _outcome(rabbitmq.port, response)
        assert _outcome(broker.port, response) == expected, response
    assert _outcome(rabbitmq.port, b"\x00guest\x00guest") == "Connection.Tune"
    assert _outcome(rabbitmq.port, b"someone\x00guest\x00guest") == "dropped"
    # the documented difference: authzid == user
    assert _outcome(rabbitmq.port, b"guest\x00guest\x00guest") == "dropped"
    assert _outcome(broker.port, b"guest\x00guest\x00guest") == "Connection.Tune"
