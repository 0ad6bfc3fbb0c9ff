"""JSON values printed as Erlang's ``~p`` prints the terms RabbitMQ decodes them to, for
validation messages with RabbitMQ's texts (``actually was <<"x">>``).

A JSON string is an Erlang binary (``<<"x">>``, ``<<"é"/utf8>>`` beyond Latin-1), an object a
map (``#{<<"k">> => 1}``, keys sorted as Erlang sorts binaries), ``null`` the atom ``null``.
Erlang's line wrapping of long terms is not reproduced (one line always).
"""

from __future__ import annotations

import json


def _binary(s: str) -> str:
    body = json.dumps(s, ensure_ascii=False)[1:-1]
    if any(ord(c) > 255 for c in s):
        return f'<<"{body}"/utf8>>'
    return f'<<"{body}">>'


def fmt(value: object) -> str:
    """``io_lib:format("~p", [Term])`` of the term RabbitMQ decodes ``value`` to (one line)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _binary(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: kv[0].encode())
        return "#{" + ",".join(f"{fmt(k)} => {fmt(v)}" for k, v in items) + "}"
    return repr(value)


def fmt_pairs(pairs: list[tuple[str, object]]) -> str:
    """A proplist: ``[{<<"k">>,1}]``."""
    return "[" + ",".join("{" + fmt(k) + "," + fmt(v) + "}" for k, v in pairs) + "]"


def fmt_string(s: str) -> str:
    """An Erlang string (a char list) as ``~p`` prints it: ``"foo"``."""
    return json.dumps(s, ensure_ascii=False)
