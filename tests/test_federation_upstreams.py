"""The federation plugin's runtime parameters (``syncmq.shovel.upstreams``): refused with
RabbitMQ 3.10.8's texts, in its order (read off a node; the interop suite compares them live
in tests/interop/test_federation_params_diff.py), through the store and the API."""

from __future__ import annotations

import pytest
from test_parameters_api import call

from syncmq.broker.parameters import ParameterError
from syncmq.shovel import upstreams

NUMBERS = ("prefetch-count", "reconnect-delay", "max-hops", "expires", "message-ttl")
FULL = {"uri": "amqp://x", "ack-mode": "on-confirm", "prefetch-count": 10,
        "reconnect-delay": 2, "max-hops": 2, "expires": 10, "message-ttl": 10,
        "trust-user-id": True, "exchange": "e", "queue": "q", "consumer-tag": "c",
        "ha-policy": "all", "bind-nowait": False, "resource-cleanup-mode": "never"}
ACK = '[<<"no-ack">>,<<"on-publish">>,<<"on-confirm">>]'

# (value, RabbitMQ's lines) as RabbitMQ 3.10.8 answered PUT /api/parameters/federation-upstream
UPSTREAM_CASES = [
    ({}, ['Key "uri" not found in up']),
    ({"exchange": "x"}, ['Key "uri" not found in up']),
    ({"uri": 5}, ["uri should be list, actually was 5"]),
    ({"uri": None}, ["uri should be list, actually was null"]),
    ({"uri": True}, ["uri should be list, actually was true"]),
    ({"uri": {"a": 1}}, ['uri should be list, actually was #{<<"a">> => 1}']),
    ({"uri": ["amqp://a", 5]}, ["uri should be list, actually was 5"]),
    ({"uri": [[1]]}, ["uri should be list, actually was 1"]),
    ({"uri": "not a uri"},
     ['"not a uri" not a valid URI: {{unable_to_parse_uri,no_scheme},"not a uri"}']),
    ({"uri": "http://x"},
     ['"http://x" not a valid URI: {{unexpected_uri_scheme,"http"},"http://x"}']),
    ({"uri": "foo bar:x"},
     ['"foo bar:x" not a valid URI: {{unexpected_uri_scheme,"foo bar"},"foo bar:x"}']),
    ({"uri": ":x"}, ['":x" not a valid URI: {{unexpected_uri_scheme,[]},":x"}']),
    ({"uri": ""}, ['"" not a valid URI: {{unable_to_parse_uri,no_scheme},[]}']),
    ({"uri": ["amqp://x", "bad uri"]},
     ['"bad uri" not a valid URI: {{unable_to_parse_uri,no_scheme},"bad uri"}']),
    ({"uri": "amqp://x", "ack-mode": "nope"},
     [f'ack-mode should be one of {ACK}, actually was <<"nope">>']),
    ({"uri": "amqp://x", "ack-mode": None}, ["ack-mode should be binary, actually was null"]),
    ({"uri": "amqp://x", "resource-cleanup-mode": "x"},
     ['resource-cleanup-mode should be one of [<<"default">>,<<"never">>], actually was '
      '<<"x">>']),
    ({"uri": "amqp://x", "prefetch-count": "1"},
     ['prefetch-count should be a number, actually was <<"1">>']),
    ({"uri": "amqp://x", "prefetch-count": True},
     ["prefetch-count should be a number, actually was true"]),
    ({"uri": "amqp://x", "trust-user-id": "yes"},
     ['trust-user-id should be boolean, actually was <<"yes">>']),
    ({"uri": "amqp://x", "nope": 1, "other": "a"},
     ['Unrecognised terms [{<<"nope">>,1},{<<"other">>,<<"a">>}] in up']),
    ({"uri": "amqp://x", "name": "foo"}, ['Unrecognised terms [{<<"name">>,<<"foo">>}] in up']),
    ({"uri": "amqp://x", "queue-type": "x"},
     ['Unrecognised terms [{<<"queue-type">>,<<"x">>}] in up']),
    ({"uri": "amqp://x", "é": 1, "ā": 2}, ['Unrecognised terms [{<<"é">>,1},{<<196,129>>,2}] in up']),
    ({"nope": 1, "ack-mode": 3}, ['Unrecognised terms [{<<"nope">>,1}] in up',
                                  "ack-mode should be binary, actually was 3",
                                  'Key "uri" not found in up']),
    ({"uri": "amqp://x", "exchange": 1, "queue": 2, "consumer-tag": 3, "ha-policy": 4,
      "bind-nowait": 5},
     ["bind-nowait should be boolean, actually was 5", "ha-policy should be binary, actually was 4",
      "consumer-tag should be binary, actually was 3", "queue should be binary, actually was 2",
      "exchange should be binary, actually was 1"]),
    ({"uri": 1, "exchange": 1, "queue": 2, "consumer-tag": 3, "prefetch-count": "a",
      "reconnect-delay": "b", "max-hops": "c", "expires": "d", "message-ttl": "e",
      "trust-user-id": 1, "ack-mode": 1, "ha-policy": 4, "bind-nowait": 5,
      "resource-cleanup-mode": 6, "zz": 1, "aa": 2},
     ['Unrecognised terms [{<<"aa">>,2},{<<"zz">>,1}] in up',
      "bind-nowait should be boolean, actually was 5", "ha-policy should be binary, actually was 4",
      "resource-cleanup-mode should be binary, actually was 6",
      "ack-mode should be binary, actually was 1", "trust-user-id should be boolean, actually was 1",
      'message-ttl should be a number, actually was <<"e">>',
      'expires should be a number, actually was <<"d">>',
      'max-hops should be a number, actually was <<"c">>',
      'reconnect-delay should be a number, actually was <<"b">>',
      'prefetch-count should be a number, actually was <<"a">>',
      "consumer-tag should be binary, actually was 3", "queue should be binary, actually was 2",
      "exchange should be binary, actually was 1", "uri should be list, actually was 1"]),
    ([1, 2], ["Unrecognised terms [1,2] in up", 'Key "uri" not found in up']),
    ([{"a": 1}], ['Unrecognised terms [#{<<"a">> => 1}] in up', 'Key "uri" not found in up']),
    ([["uri", "amqp://x"]],
     ['Unrecognised terms [[<<"uri">>,<<"amqp://x">>]] in up', 'Key "uri" not found in up']),
]
# accepted by RabbitMQ: no range checks, an empty URI list, any amqp(s) URI that parses
UPSTREAM_OK = [FULL, {"uri": []}, {"uri": "amqp://"}, {"uri": "amqp://user@host/vh?heartbeat=5"},
               {"uri": "amqps://x?cacertfile=/nonexistent"}, {"uri": "amqp://x", "exchange": "é"},
               {"uri": "amqp://x", "prefetch-count": 1.5, "max-hops": 1.5},
               *({"uri": "amqp://x", k: -1} for k in NUMBERS), {"uri": "amqp://x", "max-hops": 0}]

SET_CASES = [
    ([{"upstream": 1}], ["upstream should be binary, actually was 1"]),
    ([{}], ['Key "upstream" not found in up']),
    ([{"upstream": "a", "uri": "amqp://x"}],
     ['Unrecognised terms [{<<"uri">>,<<"amqp://x">>}] in up']),
    ([{"upstream": 1}, {"x": 1}], ["upstream should be binary, actually was 1",
                                   'Unrecognised terms [{<<"x">>,1}] in up',
                                   'Key "upstream" not found in up']),
    ([{"upstream": "a", "ack-mode": "z"}, {"upstream": 2, "max-hops": "q"}],
     [f'ack-mode should be one of {ACK}, actually was <<"z">>',
      'max-hops should be a number, actually was <<"q">>',
      "upstream should be binary, actually was 2"]),
    ([[["upstream", "a"]]],
     ['Unrecognised terms [[<<"upstream">>,<<"a">>]] in up', 'Key "upstream" not found in up']),
]
# RabbitMQ's validator crashes on these (500): syncmq refuses them with its "not a list" text
SET_CRASHES = [({"upstream": "a"}, ['up not a list #{<<"upstream">> => <<"a">>}']),
               (["a"], ['up not a list <<"a">>']), ([1], ["up not a list 1"])]
SET_OK = [[], {}, [{"upstream": "a"}, {k: v for k, v in {**FULL, "upstream": "b"}.items()
                                       if k != "uri"}]]


def _text(lines: list[str]) -> str:
    return "Validation failed\n\n" + "".join(x + "\n" for x in lines)


@pytest.mark.parametrize("value,lines", UPSTREAM_CASES,
                         ids=[str(i) for i in range(len(UPSTREAM_CASES))])
def test_upstream_refused_with_rabbitmqs_text(value, lines):
    assert upstreams.upstream_problems("up", value) == lines
    with pytest.raises(ParameterError) as e:
        upstreams.validate_upstream("/", "up", value)
    assert str(e.value) == _text(lines)


@pytest.mark.parametrize("value,lines", SET_CASES + SET_CRASHES,
                         ids=[str(i) for i in range(len(SET_CASES + SET_CRASHES))])
def test_upstream_set_refused_with_rabbitmqs_text(value, lines):
    assert upstreams.set_problems("up", value) == lines


def test_what_rabbitmq_accepts_is_accepted():
    for value in UPSTREAM_OK:
        assert upstreams.upstream_problems("up", value) == [], value
    for value in SET_OK:
        assert upstreams.set_problems("up", value) == [], value


def test_bad_upstreams_over_the_api_broker_still_serves(broker):
    """400 with RabbitMQ's reason (HTML-escaped, as its API writes it); nothing stored;
    the broker takes a good one after."""
    for value, lines in UPSTREAM_CASES[:3] + UPSTREAM_CASES[11:15]:
        status, out, _ = call(broker, "PUT", "/api/parameters/federation-upstream/%2F/up",
                              {"value": value})
        assert (status, out) == (400, {"error": "bad_request", "reason": _text(lines).replace(
            "<", "&lt;").replace(">", "&gt;")}), value
    status, out, _ = call(broker, "PUT", "/api/parameters/federation-upstream-set/%2F/bad",
                          {"value": [{}]})
    assert (status, out["reason"]) == (400, _text(['Key "upstream" not found in bad']))
    assert call(broker, "GET", "/api/parameters/federation-upstream/%2F/up")[0] == 404
    assert call(broker, "PUT", "/api/parameters/federation-upstream/%2F/good",
                {"value": FULL})[0] == 201
    assert call(broker, "DELETE", "/api/parameters/federation-upstream/%2F/good")[0] == 204
