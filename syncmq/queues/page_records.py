"""The page record of a paged queue's tail (``queues/paged.py``): one self-contained,
length-framed record per message (seq, redelivered, exchange, routing key, raw properties,
CC/BCC keys, msg id, persistent flag, TTL and body, or with ``_JOURNAL`` only the body's
length: the journal holds it), and the page segment a queue appends them to. Pure functions
of their arguments; the queue owns the files."""

from __future__ import annotations

import struct

# length, seq, msg_id, flags, ttl, len(exchange), len(routing key), len(properties),
# number of CC keys, number of BCC keys, len(body); then the strings, the body, the length
_HEAD = struct.Struct("<IqqBqBBIHHI")
_LEN = struct.Struct("<I")
_REDELIVERED, _PERSISTENT, _TTL, _JOURNAL = 1, 2, 4, 8


def _key(s: str) -> bytes:
    b = s.encode("utf-8", "surrogateescape")
    return bytes((len(b),)) + b


def _encode(seq: int, message, redelivered: bool, body: bytes | None) -> bytes:
    """One page record (see the module docstring); ``body`` None: the body is the journal's
    (``_JOURNAL``: the record holds its length, not its bytes)."""
    ex = message.exchange.encode("utf-8", "surrogateescape")
    rk = message.routing_key.encode("utf-8", "surrogateescape")
    props = message.properties
    cc, bcc = message.cc, message.bcc
    keys = b"".join(_key(k) for k in (*cc, *bcc)) if cc or bcc else b""
    ttl = message.ttl
    flags = ((_REDELIVERED if redelivered else 0) | (_PERSISTENT if message.persistent else 0)
             | (_TTL if ttl is not None else 0) | (_JOURNAL if body is None else 0))
    if body is None:
        blen, body = message.size, b""
    else:
        blen = len(body)
    n = _HEAD.size + len(ex) + len(rk) + len(props) + len(keys) + len(body) + _LEN.size
    return b"".join((_HEAD.pack(n, seq, message.msg_id, flags, ttl or 0, len(ex), len(rk),
                                len(props), len(cc), len(bcc), blen),
                     ex, rk, props, keys, body, _LEN.pack(n)))


def _decode(buf: bytes, names: dict, cls) -> tuple:
    """The pair of the one record ``buf`` holds, its message a new ``cls`` (the broker's
    ``Message``; ``names``: interned exchange names and routing keys). A ``_JOURNAL``
    record's message has ``body`` None and no store reference yet:
    :meth:`PagedReadyQueue._adopt_run` gives it its body (or a store reference)."""
    return _decode_many(buf, 1, names, cls)[0][0]


#: most distinct names (exchanges, routing keys) a queue keeps decoded (``_decode_many``)
NAMES_MAX = 1024


def _name(raw: bytes, names: dict) -> str:
    """``raw`` decoded, and kept in ``names`` while it holds fewer than :data:`NAMES_MAX`
    (``_decode_many``'s miss; a hit is looked up inline)."""
    name = raw.decode("utf-8", "surrogateescape")
    if len(names) < NAMES_MAX:
        names[raw] = name
    return name


def _decode_many(buf: bytes, want: int, names: dict, cls) -> tuple[list, int]:
    """The pairs of up to ``want`` whole records at the start of ``buf`` (a page-in's
    chunk: one loop, no call per record), and the offset after the last one. Exchange
    names and routing keys are decoded once per distinct name (kept in ``names``, at most
    :data:`NAMES_MAX` of them)."""
    pairs = []
    append = pairs.append
    p, end = 0, len(buf)
    unpack, hsize = _HEAD.unpack_from, _HEAD.size
    new = cls.__new__
    while len(pairs) < want and p + hsize <= end:
        (n, seq, msg_id, flags, ttl, lex, lrk, lprops, ncc, nbcc, lbody) = unpack(buf, p)
        if p + n > end:
            break
        q = p + hsize
        m = new(cls)
        exb = buf[q:q + lex]
        ex = names.get(exb)
        m.exchange = _name(exb, names) if ex is None else ex
        q += lex
        rkb = buf[q:q + lrk]
        rk = names.get(rkb)
        m.routing_key = _name(rkb, names) if rk is None else rk
        q += lrk
        m.properties = buf[q:q + lprops]
        q += lprops
        if ncc or nbcc:
            keys = []
            for _ in range(ncc + nbcc):
                k = buf[q]
                keys.append(buf[q + 1:q + 1 + k].decode("utf-8", "surrogateescape"))
                q += 1 + k
            m.cc = tuple(keys[:ncc])
            m.bcc = tuple(keys[ncc:])
        else:
            m.cc = m.bcc = ()
        m.body = None if flags & _JOURNAL else buf[q:q + lbody]
        m.size = lbody
        m.msg_id = msg_id
        m.store_key = 0
        m.confirm = None  # (paged out and back: an early confirm falls back to the fsync)
        m._props = None
        m._exchange_rk = None
        m.persistent = bool(flags & _PERSISTENT)
        m.ttl = ttl if flags & _TTL else None
        append((seq, (m, bool(flags & _REDELIVERED))))
        p += n
    return pairs, p


class _Seg:
    __slots__ = ("fd", "path", "end")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.end = 0  # bytes written (the next record's offset)
