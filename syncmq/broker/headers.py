"""The headers exchange's matcher and the validation of its binding arguments (``x-match``).

See ``syncmq.broker.routing`` for the matchers' contract and costs.
"""

from __future__ import annotations

import calendar
from datetime import datetime
from decimal import Decimal

from .erlterm import term
from .matcher import _EMPTY, _MISSING, _NO_ARGS, Matcher, _freeze, _freeze_table
from .pmap import pm_del, pm_from_dict, pm_set

# ---------------------------------------------------------------------------------------------
# headers

_X_MATCH_MODES = {
    "all": (True, False),
    "any": (False, False),
    "all-with-x": (True, True),
    "any-with-x": (False, True),
}

_PLAIN_TYPES = frozenset((str, int, float, bytes, bool))
_NUMBER_TYPES = (int, float)
_BINARY_TYPES = (str, bytes, bytearray, memoryview)
_SEQ_TYPES = (list, tuple)
_COMPLEX = object()  # "compare with _values_equal" marker in a compiled binding


def validate_headers_binding(arguments: dict | None) -> str | None:
    """None if ``arguments`` is a valid headers-exchange binding, else a reply text for the
    broker's 406 PRECONDITION_FAILED.  O(1).

    As RabbitMQ (rabbit_exchange_type_headers:validate_binding): ``x-match`` may be absent
    (meaning ``all``); otherwise it must be a long string (``str`` from the codec) equal to
    ``all``, ``any``, ``all-with-x`` or ``any-with-x``.
    """
    if not arguments:
        return None
    value = arguments.get("x-match", _MISSING)
    if value is _MISSING:
        return None
    if type(value) is str:
        if value in _X_MATCH_MODES:
            return None
        return (f"Invalid x-match field value {_erl(value)}; "
                "expected all, any, all-with-x, or any-with-x")
    if isinstance(value, bytes | bytearray | memoryview):
        # the codec hands a long string over as bytes only when it is not UTF-8 (so it cannot
        # be a valid mode); bytes that are UTF-8 came from a byte array ('x'), the wrong type
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return (f"Invalid x-match field value {_erl(bytes(value))}; "
                    "expected all, any, all-with-x, or any-with-x")
        kind = "binary"
    else:
        kind = _FIELD_KIND.get(type(value), type(value).__name__)
        if kind == "signedint" and not -2 ** 31 <= value < 2 ** 31:
            kind = "long"
    return f"Invalid x-match field type {kind} (value {_erl(value)}); expected longstr"


def _erl(value) -> str:
    """A value as RabbitMQ's text prints it (:mod:`.erlterm`; a missing one is ``undefined``)."""
    return "undefined" if value is None else term(value)


# RabbitMQ's field type names (rabbit_binary_parser), as rabbit_exchange_type_headers prints
# them; the codec keeps Python values, so these are the types a client encodes them as
_FIELD_KIND = {bool: "bool", int: "signedint", float: "double", Decimal: "decimal",
               dict: "table", list: "array", tuple: "array", datetime: "timestamp",
               type(None): "void"}


def _x_match(args: dict) -> tuple[bool, bool]:
    """(match all?, include x- keys?) of a binding; anything unknown counts as ``all``."""
    value = args.get("x-match")
    return _X_MATCH_MODES.get(value, (True, False)) if type(value) is str else (True, False)


def _as_bytes(v) -> bytes:
    return v.encode("utf-8") if type(v) is str else bytes(v)


def _values_equal(p, d) -> bool:
    """Whether header value ``d`` matches binding value ``p``, the way RabbitMQ compares them.

    RabbitMQ compares the untyped values with Erlang ``==``: numbers by value (so 1 matches 1.0
    and a long matches a short int), strings and byte arrays by their bytes, booleans only with
    booleans, decimals by scale and digits, timestamps as seconds.
    """
    tp = type(p)
    td = type(d)
    if tp is td:
        if tp in _PLAIN_TYPES:
            return p == d
        if tp is dict:
            if p.keys() != d.keys():
                return False
            return all(_values_equal(v, d[k]) for k, v in p.items())
        if tp is list or tp is tuple:
            return len(p) == len(d) and all(map(_values_equal, p, d))
        if tp is Decimal:
            return p == d and p.as_tuple().exponent == d.as_tuple().exponent
        return p == d
    if tp is bool or td is bool:
        return False
    if tp in _NUMBER_TYPES and td in _NUMBER_TYPES:
        return p == d
    if isinstance(p, _BINARY_TYPES) and isinstance(d, _BINARY_TYPES):
        return _as_bytes(p) == _as_bytes(d)
    if isinstance(p, _SEQ_TYPES) and isinstance(d, _SEQ_TYPES):
        return len(p) == len(d) and all(map(_values_equal, p, d))
    if tp is Decimal or td is Decimal:
        return False
    if tp is datetime and td is int:
        return calendar.timegm(p.utctimetuple()) == d
    if tp is int and td is datetime:
        return calendar.timegm(d.utctimetuple()) == p
    try:
        return bool(p == d)
    except Exception:
        return False


def _compile_headers_binding(args: dict):
    """``(match_all, items)`` with items ``(key, value, kind)``; kind None means "void: key
    present is enough", a type means "same type and ==", ``_COMPLEX`` means ``_values_equal``.
    Returns None for a binding that can never match (``any`` with nothing to compare)."""
    match_all, with_x = _x_match(args)
    items = []
    for key, value in args.items():
        if key == "x-match":
            continue
        if not with_x and isinstance(key, str) and key.startswith("x-"):
            continue
        if value is None:
            kind = None
        elif type(value) in _PLAIN_TYPES:
            kind = type(value)
        else:
            kind = _COMPLEX
        items.append((key, value, kind))
    if not items and not match_all:
        return None
    return (match_all, tuple(items))


class HeadersMatcher(Matcher):
    """Headers exchange, as RabbitMQ (rabbit_exchange_type_headers).  Routing key ignored.

    * ``x-match``: ``all`` (default, also for any value that slipped past validation), ``any``,
      ``all-with-x``, ``any-with-x``.  ``x-match`` itself never takes part; other binding keys
      starting with ``x-`` take part only in the ``-with-x`` modes.
    * A binding value of void (None) matches when the header is present, whatever its value.
    * Other values: see ``_values_equal`` (numbers by value, strings/bytes by bytes, ...).
    * ``all`` with nothing left to compare matches every message (even one without headers);
      ``any`` with nothing left to compare matches none.

    Index: ``_specs``, a persistent map ``{(destination, routing_key, frozen arguments):
    (destination, match_all, items)}``, one entry per binding that can match (see
    ``_compile_headers_binding``), in binding order; a bind or unbind sets or deletes one
    entry: O(log N + size of the arguments).  Routing tries every entry, skipping a
    destination already matched: O(sum of binding sizes) per publish, as in RabbitMQ (past
    ``pmap.SMALL`` entries, over the map's ``as_dict``, built on a version's first route).
    """

    __slots__ = ("_specs",)

    exchange_type = "headers"

    def _validate(self, args: dict) -> None:
        error = validate_headers_binding(args)
        if error is not None:
            raise ValueError(error)

    def _build_index(self) -> None:
        specs = {}
        for dest, per_dest in self._bindings.items():
            for key, per_key in per_dest.items():
                for akey, args in per_key.items():
                    spec = _compile_headers_binding(args)
                    if spec is not None:
                        specs[(dest, key, akey)] = (dest, *spec)
        self._specs = pm_from_dict(specs)

    def _copy_index_to(self, other) -> None:
        other._specs = self._specs

    def _index_added(self, dest, key, args, new_dest, new_key) -> None:
        spec = _compile_headers_binding(args)
        if spec is not None:
            self._specs = pm_set(self._specs, (dest, key, _freeze_table(args)), (dest, *spec))

    def _index_removed(self, dest, key, args, gone_dest, gone_key) -> None:
        self._specs = pm_del(self._specs, (dest, key, _freeze_table(args)))

    def _index_removed_dest(self, dest, per_dest) -> None:
        specs = self._specs
        for key, per_key in per_dest.items():
            for akey in per_key:
                specs = pm_del(specs, (dest, key, akey))
        self._specs = specs

    def _index_state(self):
        return {b: (d, a, [(k, _freeze(v), t is None) for k, v, t in items])
                for b, (d, a, items) in self._specs.items()}

    def route(self, routing_key: str = "", headers: dict | None = None) -> set | frozenset:
        """Destinations with a binding matching ``headers`` (None: no headers).

        O(sum of the sizes of the bindings tried); allocates a set only if something matches.
        """
        specs = self._specs
        if not specs:
            return _EMPTY
        entries = specs.values() if type(specs) is dict else specs.as_dict().values()
        h = headers if headers else _NO_ARGS
        missing = _MISSING
        res = None
        for dest, match_all, items in entries:
            if res is not None and dest in res:
                continue
            if match_all:
                for key, value, kind in items:
                    hv = h.get(key, missing)
                    if hv is missing:
                        break
                    if kind is None:
                        continue
                    if type(hv) is kind:
                        if hv != value:
                            break
                    elif not _values_equal(value, hv):
                        break
                else:  # every item matched
                    if res is None:
                        res = {dest}
                    else:
                        res.add(dest)
            else:
                for key, value, kind in items:
                    hv = h.get(key, missing)
                    if hv is missing:
                        continue
                    if kind is None or (hv == value if type(hv) is kind
                                        else _values_equal(value, hv)):
                        if res is None:
                            res = {dest}
                        else:
                            res.add(dest)
                        break
        return _EMPTY if res is None else res
