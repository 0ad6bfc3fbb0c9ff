"""The federation plugin's runtime parameters, ``federation-upstream`` and
``federation-upstream-set``, syncmq against the private RabbitMQ 3.10.8 node (its federation
plugin on): every value of tests/test_federation_upstreams.py, refused or accepted, gives the
same status and body on both over ``PUT /api/parameters/...``, and ``syncmqctl
set_parameter`` the same exit code, standard output and error text as ``rabbitmqctl
set_parameter`` for a few of them.

Not compared (stated in docs/compatibility.md): a value that is neither an object nor a list
(RabbitMQ's validator crashes: 500; syncmq's store refuses it with 400); an upstream set
given as an empty object (both accept it; RabbitMQ then lists it as ``[]``, syncmq as
``{}``); texts whose Erlang term is long enough for RabbitMQ to wrap it over lines (a URI's
parse error with a stack trace)."""

from __future__ import annotations

import os
from urllib.parse import quote

from test_ctl_remote import ctl as syncmqctl
from test_federation_upstreams import SET_CASES, SET_OK, UPSTREAM_CASES, UPSTREAM_OK
from test_parameters_differential import call
from test_rabbitmqadmin import rabbit_mgmt  # noqa: F401 (fixture)

TAG = os.urandom(3).hex()  # the RabbitMQ node is shared by the session


def _values() -> list[tuple[str, object]]:
    return ([("federation-upstream", v) for v, _ in UPSTREAM_CASES]
            + [("federation-upstream", v) for v in UPSTREAM_OK]
            + [("federation-upstream-set", v) for v, _ in SET_CASES]
            + [("federation-upstream-set", v) for v in SET_OK if v != {}])


def _script(port: int, vh: str) -> list:
    v = quote(vh, safe="")
    out = []
    for component, value in _values():
        path = f"/parameters/{component}/{v}/up"
        status, body = call(port, "PUT", path, {"value": value})
        got = [component, value, status, body]
        if status in (201, 204):
            got.append(call(port, "GET", path))
            assert call(port, "DELETE", path)[0] == 204
        out.append(got)
    return out


def test_federation_parameters_refused_and_accepted_as_rabbitmq(rabbit_mgmt, broker):  # noqa: F811
    vh = f"fedparams-{TAG}"
    got = {}
    for port in (rabbit_mgmt, broker.management_port):
        assert call(port, "PUT", f"/vhosts/{vh}")[0] in (201, 204)
        try:
            got[port] = _script(port, vh)
        finally:
            call(port, "DELETE", f"/vhosts/{vh}")
    ours, theirs = got[broker.management_port], got[rabbit_mgmt]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a == b
    assert {g[2] for g in theirs} == {201, 400}  # (both kinds compared)


def test_set_parameter_as_rabbitmqctl(rabbitmq, broker):
    values = ['{}', '{"uri": 5}', '{"uri":"amqp://x","ack-mode":"nope"}',
              '{"uri":"amqp://x","prefetch-count":-1}', '[{"upstream": 1}]']
    for value in values:
        for component in ("federation-upstream", "federation-upstream-set"):
            if value.startswith("[") != component.endswith("-set"):
                continue
            args = ("set_parameter", component, f"ctl-{TAG}", value)
            theirs = rabbitmq.rabbitmqctl(*args, check=False)
            ours = syncmqctl(broker, *args)
            assert (ours.returncode, ours.stdout, ours.stderr) == \
                (theirs.returncode, theirs.stdout, theirs.stderr), args
            if theirs.returncode == 0:
                rabbitmq.rabbitmqctl("clear_parameter", component, f"ctl-{TAG}")
                assert syncmqctl(broker, "clear_parameter", component,
                                 f"ctl-{TAG}").returncode == 0
