"""syncmq.broker.erlterm: Erlang's ``~p`` of decoded JSON values. The expected texts are
what ``erl`` (OTP of RabbitMQ 3.10.8) prints, and, for binaries and floats, what RabbitMQ's
HTTP API answers (tests/interop/test_vhost_limits_differential.py)."""

from __future__ import annotations

import ast
import pathlib

import pytest

from syncmq.broker.erlterm import binary, charlist, erl_float, proplist, term


@pytest.mark.parametrize("f,text", [
    (1000.0, "1.0e3"), (100.0, "100.0"), (0.1, "0.1"), (0.001, "0.001"), (1e-4, "0.0001"),
    (1e-5, "1.0e-5"), (1.5e-7, "1.5e-7"), (0.0001234, "1.234e-4"), (-1000.0, "-1.0e3"),
    (3.5, "3.5"), (-2.5, "-2.5"), (1e20, "1.0e20"), (1e100, "1.0e100"), (1e15, "1.0e15"),
    (123456789.0, "123456789.0"), (12345678901234567890.0, "1.2345678901234567e19"),
    (0.0, "0.0"), (-0.0, "-0.0")])
def test_float(f, text):
    assert erl_float(f) == text == term(f)


@pytest.mark.parametrize("s,text", [
    ("x", '<<"x">>'), ("", "<<>>"), ("é", '<<"é">>'), ("中", '<<"中">>'),
    ("ā", "<<196,129>>"),  # byte 0x81 is not printable Latin-1: byte values
    ('a\n"\\', '<<"a\\n\\"\\\\">>'), ("\t\x1b\x0b\b\f\r", '<<"\\t\\e\\v\\b\\f\\r">>'),
    ("\x7f", "<<127>>"), ("\x01\x02", "<<1,2>>")])
def test_binary(s, text):
    assert binary(s) == text == term(s)


def test_terms():
    assert term(None) == "null" and term(True) == "true" and term(False) == "false"
    assert term([1, None, "a"]) == '[1,null,<<"a">>]'
    assert term([104, 105]) == '"hi"' and term([104, 1]) == "[104,1]"
    assert term([196, 129]) == "[196,129]" and term([233]) == "\"é\""
    assert term([]) == "[]" and term([True]) == "[true]"
    assert term({"b": 1, "a": 2, "ab": [False]}) == '#{<<"a">> => 2,<<"ab">> => [false],<<"b">> => 1}'
    assert term(("a", 1)) == '{<<"a">>,1}'
    assert proplist([("zz", 1e3), ("é", "é")]) == '[{<<"zz">>,1.0e3},{<<"é">>,<<"é">>}]'
    assert proplist({"b": 1, "a": 2}) == '[{<<"a">>,2},{<<"b">>,1}]'
    assert proplist([("é", 1), ("f", 2), ("ā", 3)]) == '[{<<"f">>,2},{<<"é">>,1},{<<196,129>>,3}]'
    assert charlist("amqp") == '"amqp"' and charlist("ā") == "[196,129]"


def test_is_a_leaf():
    path = pathlib.Path(__file__).parent.parent / "syncmq" / "broker" / "erlterm.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert not node.level and not (node.module or "").startswith("syncmq")
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("syncmq") for a in node.names)
