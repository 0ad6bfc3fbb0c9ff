"""A shovel definition's validation (RabbitMQ 3.10.8's texts, read off a node: the interop
suite compares them live in tests/interop/test_shovel_rabbit.py), parsing with RabbitMQ's
defaults, and URIs."""

from __future__ import annotations

import pytest

from syncmq.broker.parameters import ParameterError
from syncmq.shovel import definition, uri
from syncmq.shovel.definition import problems

OK = {"src-uri": "amqp://", "dest-uri": "amqp://", "src-queue": "a"}

# (definition, RabbitMQ's lines) as RabbitMQ 3.10.8 answered PUT /api/parameters/shovel/%2F/bad
CASES = [
    ({}, ["Must specify 'src-exchange' or 'src-queue'", 'Key "dest-uri" not found in bad',
          'Key "src-uri" not found in bad']),
    ({"src-uri": "amqp://", "dest-uri": "amqp://"},
     ["Must specify 'src-exchange' or 'src-queue'"]),
    ({**OK, "src-exchange": "x"}, ["Cannot specify 'src-exchange' and 'src-queue'"]),
    ({**OK, "dest-queue": "b", "dest-exchange": "x"},
     ["Cannot specify 'dest-exchange' and 'dest-queue'"]),
    ({**OK, "src-uri": 5}, ["src-uri should be list, actually was 5"]),
    ({**OK, "src-uri": "foo://x"},
     ['"foo://x" not a valid URI: {{unexpected_uri_scheme,"foo"},"foo://x"}']),
    ({**OK, "src-uri": ["amqp://", 3]}, ["src-uri should be list, actually was 3"]),
    ({**OK, "ack-mode": "bad"},
     ['ack-mode should be one of [<<"no-ack">>,<<"on-publish">>,<<"on-confirm">>], '
      'actually was <<"bad">>']),
    ({**OK, "ack-mode": 1}, ["ack-mode should be binary, actually was 1"]),
    ({**OK, "src-uri": "no scheme"},
     ['"no scheme" not a valid URI: {{unable_to_parse_uri,no_scheme},"no scheme"}']),
    ({**OK, "ack-mode": "no-ack", "src-delete-after": 5},
     ["Cannot specify 'no-ack' and numerical 'delete-after'"]),
    ({**OK, "src-delete-after": "x"},
     ['src-delete-after should be a number greater than or equal to 0, "never" or '
      '"queue-length", actually was <<"x">>']),
    ({**OK, "reconnect-delay": "x"}, ['reconnect-delay should be a number, actually was <<"x">>']),
    ({**OK, "src-prefetch-count": "x"},
     ['src-prefetch-count should be a number, actually was <<"x">>']),
    ({**OK, "add-forward-headers": "x"},
     ['add-forward-headers should be boolean, actually was <<"x">>']),
    ({**OK, "dest-add-timestamp-header": 1},
     ["dest-add-timestamp-header should be boolean, actually was 1"]),
    ({**OK, "dest-publish-properties": {"delivery_mode": "x"}},
     ['delivery_mode should be a number, actually was <<"x">>']),
    ({**OK, "dest-publish-properties": {"foo": 1}},
     ['Unrecognised terms [{<<"foo">>,1}] in dest-publish-properties']),
    ({**OK, "dest-publish-properties": 5}, ["dest-publish-properties not a list 5"]),
    ({**OK, "bogus": 1}, ['Unrecognised terms [{<<"bogus">>,1}] in bad']),
    ({**OK, "src-queue": 5}, ["src-queue should be binary, actually was 5"]),
    ({**OK, "src-uri": "amqp://h:99999"},
     ['"amqp://h:99999" not a valid URI: {{port_out_of_range,99999},"amqp://h:99999"}']),
    # Erlang's ~p of non-ASCII binaries and floats (syncmq.broker.erlterm)
    ({**OK, "src-prefetch-count": "é"},
     ['src-prefetch-count should be a number, actually was <<"é">>']),
    ({**OK, "src-prefetch-count": "ā"},
     ["src-prefetch-count should be a number, actually was <<196,129>>"]),
    ({**OK, "src-prefetch-count": {"é": 1e3}},  # (longer terms: Erlang wraps at 80 columns)
     ['src-prefetch-count should be a number, actually was #{<<"é">> => 1.0e3}']),
    ({**OK, "src-queue": 1e-5}, ["src-queue should be binary, actually was 1.0e-5"]),
    ({**OK, "ā": 100.0, "é": ["中"]},
     ['Unrecognised terms [{<<"é">>,[<<"中">>]},{<<196,129>>,100.0}] in bad']),
    ({**OK, "src-uri": "foo://é"},
     ['"foo://é" not a valid URI: {{unexpected_uri_scheme,"foo"},"foo://é"}']),
]


@pytest.mark.parametrize("value,lines", CASES, ids=[str(i) for i in range(len(CASES))])
def test_refused_with_rabbitmqs_text(value, lines):
    assert problems("bad", value) == lines
    with pytest.raises(ParameterError) as e:
        definition.validate("/", "bad", value)
    assert str(e.value) == "Validation failed\n\n" + "".join(x + "\n" for x in lines)


def test_amqp10_is_refused():
    """syncmq has no AMQP 1.0 client: the protocols accept amqp091 only."""
    for key in ("src-protocol", "dest-protocol"):
        assert problems("s", {**OK, key: "amqp10"}) == [
            f'{key} should be one of [<<"amqp091">>], actually was <<"amqp10">>']
    assert problems("s", {**OK, "src-protocol": "amqp091", "dest-protocol": "amqp091"}) == []


def test_accepted_definitions():
    for v in [OK, {**OK, "dest-queue": ""}, {**OK, "src-uri": ["amqp://", "amqps://h:1/v"]},
              {"src-uri": "amqp://u:p@h/%2F?heartbeat=5&bogus=1", "dest-uri": "amqp://",
               "src-exchange": "x", "src-exchange-key": "k", "dest-exchange": "y",
               "dest-exchange-key": "z", "ack-mode": "on-publish", "src-delete-after": 10,
               "src-prefetch-count": 5, "reconnect-delay": 0.5,
               "dest-publish-properties": {"delivery_mode": 2, "app_id": "a"},
               "dest-add-forward-headers": True, "dest-add-timestamp-header": False}]:
        definition.validate("/", "s", v)


def test_parse_defaults_and_legacy_keys():
    s = definition.parse("/", "s", OK)
    assert (s.ack_mode, s.prefetch, s.delete_after, s.reconnect_delay) == (
        "on-confirm", 1000, "never", 5)
    assert s.src_uris == ["amqp://"] and s.dest_queue is None and s.src_exchange_key == ""
    s = definition.parse("/", "s", {**OK, "prefetch-count": 7, "delete-after": "queue-length",
                                    "add-forward-headers": True, "publish-properties":
                                    {"app_id": "x"}})
    assert (s.prefetch, s.delete_after, s.add_forward_headers, s.publish_properties) == (
        7, "queue-length", True, {"app_id": "x"})
    s = definition.parse("/", "s", {**OK, "prefetch-count": 7, "src-prefetch-count": 9})
    assert s.prefetch == 9  # the 3.7+ name wins


def test_uris():
    e = uri.parse("amqp://")
    assert e.local and e.vhost == "/"
    assert uri.parse("amqp:///vh%2Fx").vhost == "vh/x"
    e = uri.parse("amqps://u%40x:p%3Aw@host:1234/v?heartbeat=5&verify=verify_peer"
                  "&server_name_indication=other")
    assert (e.host, e.port, e.username, e.password, e.vhost) == ("host", 1234, "u@x", "p:w", "v")
    assert e.server_name() == "other" and e.tls_context() is not None
    assert uri.parse("amqps://h").port == 5671 and uri.parse("amqp://h").username == "guest"
    assert uri.parse("amqps://h?server_name_indication=disable").server_name() is None
    assert uri.redact("amqp://u:p@h:5/v?x=1") == "amqp://h:5/v?x=1"
    assert uri.redact("amqp://") == "amqp://"
    for bad in ("http://h", "amqp://h:0", "amqp://h?heartbeat=x", "amqps://h?verify=maybe"):
        with pytest.raises(uri.URIError):
            uri.parse(bad)
