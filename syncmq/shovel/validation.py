"""RabbitMQ's ``rabbit_parameter_validation`` checks, with its texts: what the shovel's
definition (``definition.py``) and the federation plugin's upstreams (``upstreams.py``)
validate their runtime parameters with.

A check is ``check(key, value) -> None | str | list[str]`` (no problem, or RabbitMQ's
text(s)); :func:`proplist` runs a list of ``(key, check, mandatory)`` over a value and
returns the problems in RabbitMQ's order. Pure functions: no state, no locks.
"""

from __future__ import annotations

from typing import Any

from ..broker.erlterm import proplist as erl_proplist
from ..broker.erlterm import term
from . import uri as urimod


def binary(key, v):
    return None if isinstance(v, str) else f"{key} should be binary, actually was {term(v)}"


def number(key, v):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    return None if ok else f"{key} should be a number, actually was {term(v)}"


def boolean(key, v):
    return None if isinstance(v, bool) else f"{key} should be boolean, actually was {term(v)}"


def enum(options):
    """One of ``options`` (strings); a value that is not a string is "not binary" first, as
    RabbitMQ's ``enum/1``."""
    def check(key, v):
        if not isinstance(v, str):
            return binary(key, v)
        if v in options:
            return None
        opts = "[" + ",".join(term(o) for o in options) + "]"
        return f"{key} should be one of {opts}, actually was {term(v)}"
    return check


def uris(key, v):
    """An AMQP URI (``amqp_uri:parse``) or a list of them, nested lists flattened; the first
    problem only."""
    if isinstance(v, str):
        try:
            urimod.parse(v)
        except urimod.URIError as e:
            return f'"{v}" not a valid URI: {e}'
        return None
    if not isinstance(v, list):
        return f"{key} should be list, actually was {term(v)}"
    for item in v:
        err = uris(key, item)
        if err is not None:
            return err
    return None


def proplist(name: str, constraints, value: Any) -> list[str]:
    """``rabbit_parameter_validation:proplist``: results come out in reverse order of the
    constraints, unrecognised keys first. A JSON object's keys are its terms; a list (what
    RabbitMQ hands on as it is) has no key any constraint takes: all of it is unrecognised."""
    if isinstance(value, list):
        rest: dict = {}
        extra = "[" + ",".join(term(x) for x in value) + "]" if value else None
    elif isinstance(value, dict):
        rest = dict(value)
        extra = None
    else:
        return [f"{name} not a list {term(value)}"]
    errors: list[str] = []
    for key, check, mandatory in constraints:
        if key in rest:
            err = check(key, rest.pop(key))
            if isinstance(err, list):
                errors[:0] = list(reversed(err))
            elif err is not None:
                errors.insert(0, err)
        elif mandatory:
            errors.insert(0, f'Key "{key}" not found in {name}')
    if rest:
        extra = erl_proplist(rest)
    if extra is not None:
        errors.insert(0, f"Unrecognised terms {extra} in {name}")
    return errors
