#!/usr/bin/env python3
"""Generate ``syncmq/wire/_spec.py`` from ``spec/amqp0-9-1.extended.xml``.

This script owns the mapping from RabbitMQ's extended AMQP 0-9-1 XML to Python: constants and
reply codes, one ``Method`` subclass per AMQP method (nested in one namespace class per AMQP
class: ``Basic.Publish``), the ``METHODS`` table, ``decode_method`` and ``BasicProperties``.

    python spec/codegen.py            # (re)write syncmq/wire/_spec.py
    python spec/codegen.py --check    # exit 1 if the file on disk differs from what it would write

The output is deterministic (XML order, no timestamps). Each method gets straight-line
``encode``/``decode`` code: runs of fixed-size arguments (octet/short/long/longlong/timestamp and
packed bits) are one precompiled ``struct.Struct`` call, strings are sliced inline, tables call
:mod:`syncmq.wire.fields`.
"""

from __future__ import annotations

import argparse
import keyword
import struct
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC_XML = ROOT / "spec" / "amqp0-9-1.extended.xml"
OUTPUT = ROOT / "syncmq" / "wire" / "_spec.py"

BASE_TYPES = {"octet", "short", "long", "longlong", "bit", "shortstr", "longstr", "timestamp", "table"}
FIXED_FORMATS = {"octet": "B", "short": "H", "long": "I", "longlong": "Q", "timestamp": "Q"}

# Constants RabbitMQ's broker uses that the XML lacks. RabbitMQ's own machine-readable spec
# (amqp-rabbitmq-0.9.1.json, which its framing code is generated from) defines no-route = 312
# as a soft error; basic.return of an unroutable mandatory message carries it.
EXTRA_CONSTANTS = [("no-route", 312, "soft-error")]

# Methods RabbitMQ's broker speaks that the XML lacks (again from amqp-rabbitmq-0.9.1.json):
# connection.blocked/unblocked (resource alarms, capability "connection.blocked") and
# connection.update-secret/-ok (credential refresh). (class, name, method id, fields)
EXTRA_METHODS = [
    ("connection", "blocked", 60, [("reason", "shortstr")]),
    ("connection", "unblocked", 61, []),
    ("connection", "update-secret", 70, [("new-secret", "longstr"), ("reason", "shortstr")]),
    ("connection", "update-secret-ok", 71, []),
]

# The basic class's last property is called "reserved" in the XML (formerly cluster-id);
# clients (pika, py-amqp) call it cluster_id.
PROPERTY_RENAMES = {"reserved": "cluster_id"}

# shortstr fields that are encoded truncated to 255 octets rather than rejected: the reply text
# of a close may quote peer-chosen names and must never make the close itself fail.
TRUNCATED_SHORTSTR = {"reply-text"}


@dataclass
class Field:
    xml_name: str
    py_name: str | None  # None for a reserved field
    type: str


@dataclass
class MethodSpec:
    klass: str
    name: str
    class_id: int
    method_id: int
    synchronous: bool
    content: bool
    label: str
    fields: list[Field]

    @property
    def py_class(self) -> str:
        return camel(self.name)


@dataclass
class ClassSpec:
    name: str
    index: int
    label: str
    methods: list[MethodSpec]
    properties: list[Field]


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def py_name(name: str) -> str:
    name = name.replace("-", "_")
    return name + "_" if keyword.iskeyword(name) else name


def constant_name(name: str) -> str:
    return name.upper().replace("-", "_")


def load(path: Path) -> tuple[list[tuple[str, int, str]], list[ClassSpec]]:
    root = ET.parse(path).getroot()
    domains = {d.get("name"): d.get("type") for d in root.findall("domain")}

    def resolve(field: ET.Element) -> str:
        kind = field.get("type") or field.get("domain")
        seen = set()
        while kind not in BASE_TYPES:
            if kind in seen or kind not in domains:
                raise SystemExit(f"cannot resolve the type of field {field.get('name')!r}")
            seen.add(kind)
            kind = domains[kind]
        return kind

    def fields_of(element: ET.Element, renames: dict[str, str] | None = None) -> list[Field]:
        out = []
        for f in element.findall("field"):
            name = f.get("name")
            if renames and name in renames:
                pyname: str | None = renames[name]
            elif f.get("reserved") == "1":
                pyname = None
            else:
                pyname = py_name(name)
            out.append(Field(name, pyname, resolve(f)))
        return out

    constants = [
        (c.get("name"), int(c.get("value")), c.get("class") or "") for c in root.findall("constant")
    ]
    known = {name for name, _, _ in constants}
    constants += [c for c in EXTRA_CONSTANTS if c[0] not in known]

    classes = []
    for c in root.findall("class"):
        cid = int(c.get("index"))
        methods = [
            MethodSpec(
                klass=c.get("name"),
                name=m.get("name"),
                class_id=cid,
                method_id=int(m.get("index")),
                synchronous=m.get("synchronous") == "1",
                content=m.get("content") == "1",
                label=(m.get("label") or "").strip(),
                fields=fields_of(m),
            )
            for m in c.findall("method")
        ]
        known_methods = {m.name for m in methods}
        for klass, mname, mid, mfields in EXTRA_METHODS:
            if klass == c.get("name") and mname not in known_methods:
                methods.append(MethodSpec(
                    klass=klass, name=mname, class_id=cid, method_id=mid, synchronous=False,
                    content=False, label=f"{mname} (RabbitMQ extension)",
                    fields=[Field(n, py_name(n), t) for n, t in mfields]))
        classes.append(
            ClassSpec(
                name=c.get("name"),
                index=cid,
                label=(c.get("label") or "").strip(),
                methods=methods,
                properties=fields_of(c, PROPERTY_RENAMES),
            )
        )
    return constants, classes


# ------------------------------------------------------------------------------------------------
# method code generation


class Structs:
    """Collects the struct formats the generated code needs (emitted once, at module level)."""

    def __init__(self) -> None:
        self.formats: set[str] = {"H", "I", "Q"}

    def name(self, fmt: str) -> str:
        self.formats.add(fmt)
        return f"_S_{fmt}"

    def lines(self) -> list[str]:
        return [f'_S_{fmt} = struct.Struct(">{fmt}")' for fmt in sorted(self.formats, key=lambda f: (len(f), f))]


def segments(fields: list[Field]) -> list[tuple[str, object]]:
    """Group fields: ('fixed', [items]) runs, where an item is ('int', fmt, field) or
    ('bits', [fields]) (one octet, up to 8 consecutive bits), and ('var', field) otherwise."""
    out: list[tuple[str, object]] = []
    fixed: list[tuple] = []
    last_bits: list[Field] | None = None
    for f in fields:
        if f.type == "bit":
            if last_bits is None or len(last_bits) == 8:
                last_bits = []
                fixed.append(("bits", last_bits))
            last_bits.append(f)
            continue
        last_bits = None
        if f.type in FIXED_FORMATS:
            fixed.append(("int", FIXED_FORMATS[f.type], f))
        else:
            if fixed:
                out.append(("fixed", fixed))
                fixed = []
            out.append(("var", f))
    if fixed:
        out.append(("fixed", fixed))
    return out


def item_format(item: tuple) -> str:
    return "B" if item[0] == "bits" else item[1]


PY_TYPES = {
    "octet": "int",
    "short": "int",
    "long": "int",
    "longlong": "int",
    "timestamp": "int",
    "bit": "bool",
    "shortstr": "str",
    "longstr": "bytes | str",
    "table": "dict[str, Any] | None",
}
DEFAULTS = {
    "octet": "0",
    "short": "0",
    "long": "0",
    "longlong": "0",
    "timestamp": "0",
    "bit": "False",
    "shortstr": '""',
    "longstr": 'b""',
    "table": "None",
}


def gen_decode(m: MethodSpec, structs: Structs, ind: str) -> list[str]:
    L: list[str] = []
    body: list[str] = []
    utf8 = '"utf-8", "surrogateescape"' if m.content else ""
    bit_var = 0
    for kind, payload in segments(m.fields):
        if kind == "fixed":
            items = payload
            fmt = "".join(item_format(i) for i in items)
            size = struct.calcsize(">" + fmt)
            targets = []
            after = []
            for item in items:
                if item[0] == "int":
                    f = item[2]
                    targets.append(f"self.{f.py_name}" if f.py_name else "_")
                else:
                    bits = item[1]
                    if all(b.py_name is None for b in bits):
                        targets.append("_")
                        continue
                    var = f"bits{bit_var}"
                    bit_var += 1
                    targets.append(var)
                    for i, b in enumerate(bits):
                        if b.py_name:
                            after.append(f"self.{b.py_name} = ({var} & {1 << i}) != 0")
            target = ", ".join(targets) + ("," if len(targets) == 1 else "")
            if all(t == "_" for t in targets):
                body.append(f"o += {size}")
                # still bounds-checked by the final length check
            else:
                body.append(f"{target} = {structs.name(fmt)}.unpack_from(buf, o)")
                body.append(f"o += {size}")
            body.extend(after)
            continue
        f = payload
        if f.type == "shortstr":
            if f.py_name is None:
                body.append("o += 1 + buf[o]")
            else:
                body.append("e = o + 1 + buf[o]")
                body.append(f"self.{f.py_name} = buf[o + 1 : e].decode({utf8})")
                body.append("o = e")
        elif f.type == "longstr":
            if f.py_name is None:
                body.append("o += 4 + _U32(buf, o)[0]")
            else:
                body.append("e = o + 4 + _U32(buf, o)[0]")
                body.append(f"self.{f.py_name} = buf[o + 4 : e]")
                body.append("o = e")
        elif f.type == "table":
            body.append("e = o + 4 + _U32(buf, o)[0]")
            body.append("if e > len(buf):")
            body.append("    raise IndexError")
            if f.py_name is not None:
                body.append(f"self.{f.py_name} = _decode_table_body(buf, o + 4, e) if e > o + 4 else {{}}")
            else:
                body.append("_decode_table_body(buf, o + 4, e)")
            body.append("o = e")
        else:  # pragma: no cover
            raise SystemExit(f"unhandled type {f.type}")

    L.append(f"{ind}@classmethod")
    L.append(f"{ind}def decode(cls, buf: bytes | bytearray | memoryview, offset: int = 4) -> Self:")
    L.append(f'{ind}    """Decode the arguments in ``buf[offset:]`` (after the class and method ids)."""')
    L.append(f"{ind}    if buf.__class__ is not bytes:")
    L.append(f"{ind}        buf = bytes(buf)")
    L.append(f"{ind}    self = _new(cls)")
    if not body:
        L.append(f"{ind}    if len(buf) != offset:")
        L.append(f"{ind}        raise _cannot_decode(cls, len(buf) - offset)")
        L.append(f"{ind}    return self")
        return L
    L.append(f"{ind}    o = offset")
    L.append(f"{ind}    try:")
    L.extend(f"{ind}        {line}" for line in body)
    L.append(f"{ind}    except _TRUNCATED:")
    L.append(f"{ind}        raise _cannot_decode(cls, -1) from None")
    if not m.content and any(f.type == "shortstr" and f.py_name for f in m.fields):
        L.append(f"{ind}    except UnicodeDecodeError:")
        L.append(f"{ind}        raise _bad_utf8(cls) from None")
    if any(f.type == "table" for f in m.fields):
        L.append(f"{ind}    except AMQPConnectionError as exc:")
        L.append(f"{ind}        raise _in_method(exc, cls) from None")
    L.append(f"{ind}    if o != len(buf):")
    L.append(f"{ind}        raise _cannot_decode(cls, len(buf) - o)")
    L.append(f"{ind}    return self")
    return L


def gen_encode(m: MethodSpec, structs: Structs, ind: str) -> list[str]:
    pre: list[str] = []
    parts: list[str | bytes] = [struct.pack(">HH", m.class_id, m.method_id)]
    var = 0
    for kind, payload in segments(m.fields):
        if kind == "fixed":
            items = payload
            fmt = "".join(item_format(i) for i in items)
            args = []
            for item in items:
                if item[0] == "int":
                    f = item[2]
                    args.append(f"self.{f.py_name}" if f.py_name else "0")
                else:
                    terms = [f"({1 << i} if self.{b.py_name} else 0)" for i, b in enumerate(item[1]) if b.py_name]
                    if len(terms) == 1:
                        terms[0] = terms[0][1:-1]
                    args.append(" | ".join(terms) if terms else "0")
            if all(a == "0" for a in args):
                parts.append(bytes(struct.calcsize(">" + fmt)))
            elif fmt == "B":
                parts.append(f"_BYTE[{args[0]}]")
            else:
                parts.append(f"{structs.name(fmt)}.pack({', '.join(args)})")
            continue
        f = payload
        if f.py_name is None:
            parts.append({"shortstr": b"\x00", "longstr": b"\x00\x00\x00\x00", "table": b"\x00\x00\x00\x00"}[f.type])
        elif f.type == "shortstr" and f.xml_name in TRUNCATED_SHORTSTR:
            parts.append(f"_truncated_shortstr(self.{f.py_name})")
        elif f.type == "shortstr":
            v = f"v{var}"
            var += 1
            pre.append(f"{v} = self.{f.py_name}")
            pre.append(f"if {v}.__class__ is not bytes:")
            pre.append(f"    {v} = _shortstr_bytes({v})")
            pre.append(f"if len({v}) > 255:")
            pre.append(f'    raise ValueError("{f.py_name} is longer than 255 octets")')
            parts.append(f"_BYTE[len({v})]")
            parts.append(v)
        elif f.type == "longstr":
            v = f"v{var}"
            var += 1
            pre.append(f"{v} = self.{f.py_name}")
            pre.append(f"if {v}.__class__ is not bytes:")
            pre.append(f"    {v} = _longstr_bytes({v})")
            parts.append(f"_S_I.pack(len({v}))")
            parts.append(v)
        elif f.type == "table":
            parts.append(f"_encode_table(self.{f.py_name})")
    # merge adjacent constants
    merged: list[str | bytes] = []
    for p in parts:
        if isinstance(p, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += p
        else:
            merged.append(p)
    exprs = [repr(p) if isinstance(p, bytes) else p for p in merged]

    L = [f"{ind}def encode(self) -> bytes:", f'{ind}    """The method-frame payload: class id, method id, arguments."""']
    if len(exprs) == 1:
        L.append(f"{ind}    return {exprs[0]}")
        return L
    L.append(f"{ind}    try:")
    L.extend(f"{ind}        {line}" for line in pre)
    joined = f'{ind}        return b"".join(({", ".join(exprs)}))'
    if len(joined) <= 100:
        L.append(joined)
    else:
        L.append(f'{ind}        return b"".join(')
        L.append(f"{ind}            (")
        L.extend(f"{ind}                {e}," for e in exprs)
        L.append(f"{ind}            )")
        L.append(f"{ind}        )")
    L.append(f"{ind}    except _ENCODE_ERRORS as exc:")
    L.append(f"{ind}        raise _cannot_encode(self, exc) from None")
    return L


def gen_method(m: MethodSpec, structs: Structs) -> list[str]:
    ind = "        "
    named = [f for f in m.fields if f.py_name]
    L = [f"    class {m.py_class}(Method):"]
    label = f": {m.label}" if m.label else ""
    L.append(f'        """{m.klass}.{m.name} ({m.class_id}/{m.method_id}){label}."""')
    L.append("")
    slots = ", ".join(f'"{f.py_name}"' for f in named)
    L.append(f"        __slots__ = ({slots}{',' if len(named) == 1 else ''})")
    L.append(f"        CLASS_ID = {m.class_id}")
    L.append(f"        METHOD_ID = {m.method_id}")
    L.append(f"        INDEX = {m.class_id << 16 | m.method_id}")
    L.append(f'        NAME = "{m.klass}.{m.name}"')
    L.append(f"        SYNCHRONOUS = {m.synchronous}")
    L.append(f"        HAS_CONTENT = {m.content}")
    L.append(f"        FIELDS = ({slots}{',' if len(named) == 1 else ''})")
    types = ", ".join(f'"{f.type}"' for f in named)
    L.append(f"        FIELD_TYPES = ({types}{',' if len(named) == 1 else ''})")
    if named:
        L.append("")
        params = ", ".join(f"{f.py_name}: {PY_TYPES[f.type]} = {DEFAULTS[f.type]}" for f in named)
        line = f"        def __init__(self, {params}) -> None:"
        if len(line) <= 100:
            L.append(line)
        else:
            L.append("        def __init__(")
            L.append("            self,")
            L.extend(f"            {f.py_name}: {PY_TYPES[f.type]} = {DEFAULTS[f.type]}," for f in named)
            L.append("        ) -> None:")
        for f in named:
            L.append(f"            self.{f.py_name} = {f.py_name}")
    L.append("")
    L.extend(gen_encode(m, structs, ind))
    L.append("")
    L.extend(gen_decode(m, structs, ind))
    return L


# ------------------------------------------------------------------------------------------------
# content properties


def gen_properties(c: ClassSpec, structs: Structs) -> list[str]:
    props = c.properties
    if len(props) > 15:  # pragma: no cover - 0-9-1 has no property-flags continuation in use
        raise SystemExit("more than 15 properties need a continuation flags word")
    names = [p.py_name for p in props]
    cname = f"{camel(c.name)}Properties"
    L = [f"class {cname}:"]
    L.append(f'    """The content properties of class {c.name} ({c.index}), all optional (None = absent).')
    L.append("")
    L.append("    ``decode`` takes the raw properties as they follow class-id, weight and body-size in a")
    L.append("    content header (the 16-bit property-flags word first); ``encode`` produces the same.")
    L.append("    Short strings decode with ``surrogateescape`` (RabbitMQ does not check their UTF-8);")
    L.append("    ``timestamp`` is an int (seconds), ``headers`` a dict.")
    L.append('    """')
    L.append("")
    quoted = ", ".join(f'"{n}"' for n in names)
    L.append(f"    __slots__ = ({quoted})")
    L.append(f"    CLASS_ID = {c.index}")
    L.append(f"    FIELDS = ({quoted})")
    L.append(f"    FIELD_TYPES = ({', '.join(repr(p.type) for p in props)})".replace("'", '"'))
    L.append("")
    L.append("    def __init__(")
    L.append("        self,")
    for p in props:
        L.append(f"        {p.py_name}: {PROP_PY_TYPES[p.type]} | None = None,")
    L.append("    ) -> None:")
    for p in props:
        L.append(f"        self.{p.py_name} = {p.py_name}")
    L.append("")
    # encode
    L.append("    def encode(self) -> bytes:")
    L.append('        """Property flags followed by the values of the properties that are not None."""')
    L.append("        flags = 0")
    L.append('        parts = [b""]')
    L.append("        try:")
    for i, p in enumerate(props):
        bit = 1 << (15 - i)
        L.append(f"            v = self.{p.py_name}")
        L.append("            if v is not None:")
        L.append(f"                flags |= {bit}")
        if p.type == "shortstr":
            L.append("                parts.append(_encode_shortstr(v))")
        elif p.type == "longstr":
            L.append("                parts.append(_S_I.pack(len(v)) + _longstr_bytes(v))")
        elif p.type == "table":
            L.append("                parts.append(_encode_table(v))")
        elif p.type == "bit":  # pragma: no cover - 0-9-1 basic has no bit properties
            raise SystemExit("bit properties are not supported")
        else:
            fmt = FIXED_FORMATS[p.type]
            L.append(f"                parts.append({structs.name(fmt)}.pack(v))")
    L.append("        except _ENCODE_ERRORS as exc:")
    L.append("            text = f\"INTERNAL_ERROR - cannot encode content properties: {exc}\"")
    L.append("            raise AMQPConnectionError(INTERNAL_ERROR, text) from None")
    L.append("        parts[0] = _S_H.pack(flags)")
    L.append('        return b"".join(parts)')
    L.append("")
    # decode
    L.append("    @classmethod")
    L.append("    def decode(cls, raw: bytes | bytearray | memoryview) -> Self:")
    L.append('        """Decode property flags and values; 502 SYNTAX_ERROR if malformed."""')
    L.append("        if raw.__class__ is not bytes:")
    L.append("            raw = bytes(raw)")
    L.append("        self = _new(cls)")
    L.append("        try:")
    L.append("            flags = _S_H.unpack_from(raw, 0)[0]")
    L.append("            o = 2")
    for i, p in enumerate(props):
        bit = 1 << (15 - i)
        L.append(f"            if flags & {bit}:")
        if p.type == "shortstr":
            L.append("                e = o + 1 + raw[o]")
            L.append(f'                self.{p.py_name} = raw[o + 1 : e].decode("utf-8", "surrogateescape")')
            L.append("                o = e")
        elif p.type == "longstr":
            L.append("                e = o + 4 + _U32(raw, o)[0]")
            L.append(f"                self.{p.py_name} = raw[o + 4 : e]")
            L.append("                o = e")
        elif p.type == "table":
            L.append(f"                self.{p.py_name}, o = _decode_table(raw, o)")
        elif p.type == "octet":
            L.append(f"                self.{p.py_name} = raw[o]")
            L.append("                o += 1")
        else:
            fmt = FIXED_FORMATS[p.type]
            L.append(f"                self.{p.py_name} = {structs.name(fmt)}.unpack_from(raw, o)[0]")
            L.append(f"                o += {struct.calcsize('>' + fmt)}")
        L.append("            else:")
        L.append(f"                self.{p.py_name} = None")
    L.append("        except _TRUNCATED:")
    L.append('            raise AMQPConnectionError(SYNTAX_ERROR, "SYNTAX_ERROR - content properties are truncated") from None')
    L.append("        if o != len(raw):")
    L.append(
        "            raise AMQPConnectionError(\n"
        "                SYNTAX_ERROR,\n"
        '                "SYNTAX_ERROR - content properties are truncated"\n'
        "                if o > len(raw)\n"
        '                else "SYNTAX_ERROR - content properties have trailing octets",\n'
        "            )"
    )
    L.append("        return self")
    L.append("")
    L.append("    def __eq__(self, other: object) -> bool:")
    L.append("        if other.__class__ is not self.__class__:")
    L.append("            return NotImplemented")
    L.append("        return all(getattr(self, n) == getattr(other, n) for n in self.FIELDS)")
    L.append("")
    L.append("    __hash__ = None  # type: ignore[assignment]")
    L.append("")
    L.append("    def __repr__(self) -> str:")
    L.append("        args = \", \".join(f\"{n}={getattr(self, n)!r}\" for n in self.FIELDS if getattr(self, n) is not None)")
    L.append("        return f\"{type(self).__name__}({args})\"")
    return L


PROP_PY_TYPES = {
    "octet": "int",
    "short": "int",
    "long": "int",
    "longlong": "int",
    "timestamp": "int",
    "bit": "bool",
    "shortstr": "str",
    "longstr": "bytes",
    "table": "dict[str, Any]",
}


# ------------------------------------------------------------------------------------------------
# module


HEADER = '''\
"""AMQP 0-9-1 methods, content properties and constants, generated from the XML spec.

GENERATED by spec/codegen.py from spec/amqp0-9-1.extended.xml -- DO NOT EDIT.
Run ``python spec/codegen.py`` to regenerate; ``python spec/codegen.py --check`` (run by
tests/test_codegen.py) fails when this file is stale.

This module owns: the spec's constants and reply codes (``REPLY_NAMES``), one ``Method``
subclass per AMQP method nested in a namespace class per AMQP class (``Basic.Publish``), the
``METHODS`` table keyed by ``INDEX`` (= class id << 16 | method id), ``decode_method`` and
``BasicProperties``.

Conventions:

* Field names are the spec's with ``-`` -> ``_`` and a trailing ``_`` on Python keywords
  (``global_``). Reserved fields are not exposed: they are encoded as zero / empty and skipped
  on decode.
* ``shortstr`` is ``str`` (UTF-8). In methods without content, invalid UTF-8 is a 501
  FRAME_ERROR, as RabbitMQ's generated ``decode_method_fields`` asserts UTF-8 there; in
  content-bearing methods (basic.publish/return/deliver/get-ok) and in content properties
  RabbitMQ skips that check, so they decode with ``surrogateescape`` (lossless, re-encodes to
  the same octets). Encoding accepts ``str`` or bytes-likes; more than 255 octets raises 541,
  except ``reply_text``, which is cut at 255 octets. ``longstr`` decodes to ``bytes`` and
  encodes from ``bytes`` or ``str``. Tables are dicts (``None`` encodes as the empty table and
  compares equal to ``{}``); see :mod:`syncmq.wire.fields`.
* Reply texts are RabbitMQ-style, ``"FRAME_ERROR - explanation"``.
* Decoding malformed arguments raises ``AMQPConnectionError`` carrying the method's class and
  method id: 501 FRAME_ERROR for truncated arguments, trailing octets or bad UTF-8 (RabbitMQ:
  ``rabbit_misc:frame_error`` -> "cannot decode", and ``assert_utf8``), 502 SYNTAX_ERROR for a
  malformed field table inside the arguments (from :mod:`syncmq.wire.fields`). An unknown class
  or method id raises 540 NOT_IMPLEMENTED (RabbitMQ's ``lookup_method_name`` just exits and
  drops the connection without a reply code; 540 is the spec's code for functionality the
  server does not implement).
* Encoding a value that does not fit its field raises ``AMQPConnectionError`` 541
  INTERNAL_ERROR: that is the broker's bug, not the peer's.
"""

from __future__ import annotations

import struct
from typing import Any, Self

from .errors import AMQPConnectionError
from .fields import decode_table as _decode_table
from .fields import decode_table_body as _decode_table_body
from .fields import encode_shortstr as _encode_shortstr
from .fields import encode_table as _encode_table
from .fields import longstr_bytes as _longstr_bytes
from .fields import shortstr_bytes as _shortstr_bytes
from .fields import truncated_shortstr as _truncated_shortstr
'''

HELPERS = '''\
_U32 = _S_I.unpack_from
_BYTE = tuple(bytes((i,)) for i in range(256))
_new = object.__new__
_TRUNCATED = (struct.error, IndexError)
_ENCODE_ERRORS = (struct.error, TypeError, ValueError, OverflowError, AMQPConnectionError)


def _cannot_decode(cls: type[Method], extra: int) -> AMQPConnectionError:
    why = "truncated arguments" if extra < 0 else f"{extra} trailing octets after the arguments"
    return AMQPConnectionError(FRAME_ERROR, f"FRAME_ERROR - cannot decode {cls.NAME}: {why}", cls.CLASS_ID, cls.METHOD_ID)


def _bad_utf8(cls: type[Method]) -> AMQPConnectionError:
    return AMQPConnectionError(FRAME_ERROR, f"FRAME_ERROR - malformed UTF-8 in shortstr of {cls.NAME}", cls.CLASS_ID, cls.METHOD_ID)


def _in_method(exc: AMQPConnectionError, cls: type[Method]) -> AMQPConnectionError:
    return AMQPConnectionError(exc.reply_code, f"{exc.reply_text} in {cls.NAME}", cls.CLASS_ID, cls.METHOD_ID)


def _cannot_encode(method: Method, exc: Exception) -> AMQPConnectionError:
    if isinstance(exc, AMQPConnectionError):
        text = exc.reply_text.partition(" - ")[2] or exc.reply_text
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = f"INTERNAL_ERROR - cannot encode {method.NAME}: {text}"
    return AMQPConnectionError(INTERNAL_ERROR, text, method.CLASS_ID, method.METHOD_ID)


def _norm(value: Any) -> Any:
    return None if value.__class__ is dict and not value else value


class Method:
    """Base of every generated method class.

    Class attributes: ``CLASS_ID``, ``METHOD_ID``, ``INDEX`` (class id << 16 | method id, also the
    first four payload octets read as a big-endian uint32), ``NAME`` ("basic.publish"),
    ``SYNCHRONOUS``, ``HAS_CONTENT``, ``FIELDS`` (argument names) and ``FIELD_TYPES`` (their
    AMQP types: octet, short, long, longlong, timestamp, bit, shortstr, longstr, table).
    """

    __slots__ = ()
    CLASS_ID: int = 0
    METHOD_ID: int = 0
    INDEX: int = 0
    NAME: str = ""
    SYNCHRONOUS: bool = False
    HAS_CONTENT: bool = False
    FIELDS: tuple[str, ...] = ()
    FIELD_TYPES: tuple[str, ...] = ()

    def encode(self) -> bytes:
        """The method-frame payload: class id, method id, arguments."""
        raise NotImplementedError

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview, offset: int = 4) -> Self:
        """Decode the arguments in ``buf[offset:]`` (after the class and method ids)."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        for name in self.FIELDS:
            if _norm(getattr(self, name)) != _norm(getattr(other, name)):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__qualname__}({args})"
'''

FOOTER = '''\
def decode_method(payload: bytes | bytearray | memoryview) -> Method:
    """Decode a method-frame payload (class id, method id, arguments) into its Method.

    501 FRAME_ERROR if shorter than the two ids (RabbitMQ's ``analyze_frame`` -> unknown_frame),
    540 NOT_IMPLEMENTED for an unknown class or method, otherwise whatever ``decode`` raises.
    """
    if payload.__class__ is not bytes:
        payload = bytes(payload)
    if len(payload) < 4:
        raise AMQPConnectionError(FRAME_ERROR, f"FRAME_ERROR - method frame payload of {len(payload)} octets is too short")
    index = _U32(payload, 0)[0]
    cls = _METHODS_GET(index)
    if cls is None:
        class_id = index >> 16
        method_id = index & 0xFFFF
        if class_id in CLASS_NAMES:
            text = f"NOT_IMPLEMENTED - unknown method {method_id} in class {CLASS_NAMES[class_id]} ({class_id})"
        else:
            text = f"NOT_IMPLEMENTED - unknown class {class_id} (method {method_id})"
        raise AMQPConnectionError(NOT_IMPLEMENTED, text, class_id, method_id)
    return cls.decode(payload, 4)
'''


def generate(path: Path = SPEC_XML) -> str:
    constants, classes = load(path)
    structs = Structs()
    out: list[str] = [HEADER]

    out.append("# Constants (the spec's <constant> elements" + ("; NO_ROUTE from RabbitMQ's JSON spec)" if EXTRA_CONSTANTS else ")"))
    for name, value, _ in constants:
        out.append(f"{constant_name(name)} = {value}")
    out.append("")
    reply = [(v, constant_name(n)) for n, v, cls in constants if cls in ("soft-error", "hard-error") or n == "reply-success"]
    out.append("#: Reply code -> its name, as used in close reply texts (\"NOT_FOUND - ...\").")
    out.append("REPLY_NAMES: dict[int, str] = {")
    for v, n in sorted(reply):
        out.append(f'    {v}: "{n}",')
    out.append("}")
    soft = sorted(v for n, v, cls in constants if cls == "soft-error")
    hard = sorted(v for n, v, cls in constants if cls == "hard-error")
    out.append("#: Reply codes that close a channel (soft errors) / the connection (hard errors).")
    out.append(f"SOFT_ERRORS: frozenset[int] = frozenset({{{', '.join(map(str, soft))}}})")
    out.append(f"HARD_ERRORS: frozenset[int] = frozenset({{{', '.join(map(str, hard))}}})")
    out.append("")
    out.append("#: Class id -> AMQP class name.")
    out.append("CLASS_NAMES: dict[int, str] = {")
    for c in classes:
        out.append(f'    {c.index}: "{c.name}",')
    out.append("}")
    out.append("")

    body: list[str] = []
    for c in classes:
        body.append("")
        body.append("")
        body.append(f"class {camel(c.name)}:")
        body.append(f'    """{c.name} (class {c.index}): {c.label}."""')
        body.append("")
        body.append(f"    CLASS_ID = {c.index}")
        body.append(f'    NAME = "{c.name}"')
        for m in c.methods:
            body.append("")
            body.extend(gen_method(m, structs))
    prop_classes = [c for c in classes if c.properties]
    for c in prop_classes:
        body.append("")
        body.append("")
        body.extend(gen_properties(c, structs))

    out.extend(structs.lines())
    out.append(HELPERS)
    out.extend(body)
    out.append("")
    out.append("")
    out.append("#: Every method class, keyed by ``INDEX`` (class id << 16 | method id).")
    out.append("METHODS: dict[int, type[Method]] = {")
    for c in classes:
        for m in c.methods:
            out.append(f"    {m.class_id << 16 | m.method_id}: {camel(c.name)}.{m.py_class},")
    out.append("}")
    out.append("_METHODS_GET = METHODS.get")
    out.append("")
    out.append("")
    out.append(FOOTER.rstrip("\n"))
    out.append("")
    out.append("")
    names = ["METHODS", "Method", "decode_method", "REPLY_NAMES", "SOFT_ERRORS", "HARD_ERRORS", "CLASS_NAMES"]
    names += [constant_name(n) for n, _, _ in constants]
    names += [camel(c.name) for c in classes]
    names += [f"{camel(c.name)}Properties" for c in prop_classes]
    out.append("__all__ = [")
    for n in names:
        out.append(f'    "{n}",')
    out.append("]")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the output file is stale")
    parser.add_argument("--spec", type=Path, default=SPEC_XML)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = generate(args.spec)
    if args.check:
        try:
            current = args.output.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            print(f"{args.output} is stale: run python spec/codegen.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8", newline="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
