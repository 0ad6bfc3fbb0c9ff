"""JSON values printed as Erlang's ``~p`` prints the terms RabbitMQ decodes them to, for its
validation texts (``actually was <<"x">>``): the one rendering, used by policies, vhost and
user limits, headers and the shovel's definition checks. A leaf: imports nothing from syncmq.

Rules (checked against RabbitMQ 3.10.8, tests/interop/test_vhost_limits_differential.py):

- a string is a binary of its UTF-8 bytes. ``~p`` prints it quoted when every byte is a
  printable Latin-1 character (32..126, 160..255, ``\\n\\r\\t\\v\\b\\f\\e`` escaped), else as
  byte values. RabbitMQ sends the quoted bytes back unchanged, so the text shows the
  original UTF-8 (``<<"é">>``, ``<<"中">>``), while ``ā`` (a byte 0x81) is ``<<196,129>>``;
- a float has the shortest round-tripping digits, in fixed or ``1.0e3`` form, whichever is
  shorter (``io_lib_format``'s rule): 100.0, 1.0e3, 0.001, 1.0e-5, 123456789.0;
- ``null``/``true``/``false`` are atoms, lists lists (a list of printable character codes
  is a string: ``[104,105]`` is ``"hi"``); an object a map (:func:`term`, keys in
  Erlang's binary order) or a proplist (:func:`proplist`) as the caller's RabbitMQ code path
  decodes it.

Erlang's wrapping of terms longer than 80 columns is not reproduced (one line always).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

__all__ = ["term", "proplist", "binary", "charlist", "erl_float"]

_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x0B: "\\v",
            0x08: "\\b", 0x0C: "\\f", 0x1B: "\\e"}


def _printable(b: bytes) -> bool:
    return all(32 <= c < 127 or 160 <= c or c in _ESCAPES for c in b)


def _quoted(b: bytes, encoding: str = "utf-8") -> str:
    """The bytes as Erlang quotes them, then read back as UTF-8 (as RabbitMQ's text is;
    characters of a list, not bytes of a binary, read as Latin-1)."""
    out = bytearray()
    for c in b:
        esc = _ESCAPES.get(c)
        out += esc.encode() if esc else bytes((c,))
    return '"' + out.decode(encoding, errors="replace") + '"'


def binary(value: str | bytes) -> str:
    """``~p`` of a binary (a str is its UTF-8 bytes): ``<<"é">>`` or ``<<196,129>>``."""
    b = value.encode() if isinstance(value, str) else bytes(value)
    if _printable(b):
        return "<<" + (_quoted(b) if b else "") + ">>"
    return "<<" + ",".join(str(c) for c in b) + ">>"


def charlist(value: str | bytes) -> str:
    """``~p`` of an Erlang string made of a binary's bytes (``binary_to_list``):
    ``"foo"``, or ``[196,129]`` when a byte is not printable; ``[]`` when empty."""
    b = value.encode() if isinstance(value, str) else bytes(value)
    if b and _printable(b):
        return _quoted(b)
    return "[" + ",".join(str(c) for c in b) + "]"


def erl_float(f: float) -> str:
    """Shortest round-tripping digits, fixed or exponent form, whichever is shorter."""
    if math.isinf(f) or math.isnan(f):
        return repr(f)
    sign = "-" if math.copysign(1.0, f) < 0 else ""
    if f == 0:
        return sign + "0.0"
    _, digits, exp = Decimal(repr(abs(f))).normalize().as_tuple()
    s = "".join(map(str, digits))
    place = len(s) + exp  # value = 0.<s> * 10**place
    if 0 < place < len(s):
        return sign + s[:place] + "." + s[place:]
    if place == 0:
        return sign + "0." + s
    exp_l = str(place - 1)
    exp_cost = len(exp_l) + 1 + (2 if len(s) == 1 else 1)
    if place < 0 and 2 - place <= exp_cost:
        return sign + "0." + "0" * -place + s
    if place > 0 and place - len(s) + 2 <= exp_cost:
        return sign + s + "0" * (place - len(s)) + ".0"
    return sign + s[0] + "." + (s[1:] or "0") + "e" + exp_l


def term(v: Any) -> str:
    """``io_lib:format("~p", [T])`` of the term RabbitMQ decodes JSON value ``v`` to, objects
    as maps (``#{<<"a">> => 1}``); a tuple prints as an Erlang tuple."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return erl_float(v)
    if isinstance(v, (str, bytes)):
        return binary(v)
    if isinstance(v, tuple):
        return "{" + ",".join(term(x) for x in v) + "}"
    if isinstance(v, list):
        if v and all(type(x) is int and (32 <= x < 127 or 160 <= x < 256 or x in _ESCAPES)
                     for x in v):
            return _quoted(bytes(v), "latin-1")  # ~p prints a printable list as a string
        return "[" + ",".join(term(x) for x in v) + "]"
    if isinstance(v, dict):
        items = sorted(v.items(), key=lambda kv: kv[0].encode())
        return "#{" + ",".join(f"{term(k)} => {term(x)}" for k, x in items) + "}"
    return repr(v)


def proplist(pairs: Any) -> str:
    """A JSON object (a dict or its (key, value) pairs) as the proplist RabbitMQ lists from
    the map it decoded: ``[{<<"a">>,1},{<<"b">>,2}]``, keys in Erlang's binary order (the
    map's order, not the JSON text's)."""
    items = sorted(pairs.items() if isinstance(pairs, dict) else pairs,
                   key=lambda kv: kv[0].encode())
    return "[" + ",".join("{" + term(k) + "," + term(v) + "}" for k, v in items) + "]"
