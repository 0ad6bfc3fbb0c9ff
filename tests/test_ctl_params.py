"""syncmqctl's runtime-parameter verbs against a live broker, with rabbitmqctl 3.10's
argument forms, banners, tables and error texts (read off rabbitmqctl against RabbitMQ)."""

from __future__ import annotations

import json

from test_ctl_remote import ctl, fails, ok

# a valid shovel (syncmq runs shovels, so the component validates) that never connects
SHOVEL = ('{"src-uri":"amqp://127.0.0.1:1","src-queue":"q","dest-uri":"amqp://127.0.0.1:1",'
          '"reconnect-delay":0}')


def test_vhost_parameters(fresh_broker):
    b = fresh_broker
    ok(b, "add_vhost", "v2")
    out = ok(b, "set_parameter", "federation-upstream", "c1", '{"uri":"amqp://x"}')
    assert out == ('Setting runtime parameter "c1" for component "federation-upstream" to '
                   '"{"uri":"amqp://x"}" in vhost "/" ...\n')
    ok(b, "set_parameter", "-p", "v2", "federation-upstream", "c2", '{"uri":"amqp://y"}')
    ok(b, "set_parameter", "--vhost", "v2", "shovel", "s", SHOVEL)
    assert ok(b, "list_parameters") == (
        'Listing runtime parameters for vhost "/" ...\ncomponent\tname\tvalue\n'
        'federation-upstream\tc1\t{"uri":"amqp://x"}\n')
    assert ok(b, "list_parameters", "-p", "v2", "-q") == (
        'component\tname\tvalue\nfederation-upstream\tc2\t{"uri":"amqp://y"}\n'
        'shovel\ts\t' + SHOVEL + '\n')
    assert json.loads(ok(b, "list_parameters", "-p", "v2", "--formatter", "json")) == [
        {"component": "federation-upstream", "name": "c2", "value": '{"uri":"amqp://y"}'},
        {"component": "shovel", "name": "s", "value": SHOVEL}]
    assert ok(b, "clear_parameter", "federation-upstream", "c1") == (
        'Clearing runtime parameter "c1" for component "federation-upstream" on vhost '
        '"/" ...\n')
    fails(b, "clear_parameter", "federation-upstream", "c1", msg="Parameter does not exist",
          code=69)
    fails(b, "set_parameter", "federation-upstream", "c3", "notjson",
          msg="JSON decoding error. Reason: badarg", code=69)
    fails(b, "set_parameter", "nope", "c3", "{}",
          msg="Error:\nValidation failed\n\ncomponent nope not found\n", code=69)
    fails(b, "set_parameter", "-p", "novh", "federation-upstream", "c3", "{}",
          msg="Virtual host 'novh' does not exist", code=65)
    fails(b, "list_parameters", "-p", "novh", msg="Virtual host 'novh' does not exist", code=65)
    fails(b, "set_parameter", "policy", "c3", "{}",
          msg="policies may not be set using this method", code=69)
    assert ctl(b, "set_parameter", "shovel", "x").returncode == 64  # usage: VALUE missing
    assert rows(ok(b, "list_parameters", "-p", "v2"))[1:] == [
        ["federation-upstream", "c2", '{"uri":"amqp://y"}'],
        ["shovel", "s", SHOVEL]]


def rows(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.splitlines() if not line.endswith("...")]


def test_global_parameters(fresh_broker):
    b = fresh_broker
    assert ok(b, "set_global_parameter", "gg", '{"a":1}') == (
        'Setting global runtime parameter "gg" to "{"a":1}" ...\n')
    ok(b, "set_global_parameter", "cluster_name", '"edge"')
    assert ok(b, "list_global_parameters") == (
        'Listing global runtime parameters ...\nname\tvalue\ncluster_name\t"edge"\n'
        'gg\t{"a":1}\n')
    assert json.loads(ok(b, "list_global_parameters", "--json"))[1] == {
        "name": "gg", "value": '{"a":1}'}
    fails(b, "set_global_parameter", "gg", "nojson", msg="JSON decoding error", code=69)
    assert ok(b, "clear_global_parameter", "gg") == (
        'Clearing global runtime parameter "gg" ...\n')
    fails(b, "clear_global_parameter", "gg", msg="Parameter does not exist", code=69)
