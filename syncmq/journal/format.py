"""The journal's on-disk format, byte by byte.

The journal knows nothing of AMQP: names are ``str``, counters are ``int``, and anything the
broker wants stored verbatim (encoded field tables, encoded content-header properties, message
bodies) is opaque ``bytes``.

This module is the format's description and its one import point (``from . import format as
fmt``); the code lives in ``encoding`` (constants, framing, record builders) and ``records``
(decoded record types, decoders).

Data directory
==============

::

    <data_dir>/LOCK                       advisory lock (flock) held by the open journal
    <data_dir>/0000000000000001.seg       segment files, 16 lower-case hex digits, ascending
    <data_dir>/0000000000000002.seg
    <data_dir>/0000000000000002.seg.tmp   compaction output being written (deleted on recovery)

Segments are read in ascending number order; that order, and the order of records inside a
segment, is the *log order*. Only the highest-numbered segment (the *current* one) is ever
appended to. Compaction (see ``compaction.py``) replaces a run of closed segments
``a..b`` by one file named ``b`` whose header says ``covers_from = a``; the files ``a..b-1``
are then stale and are deleted (by compaction, or by recovery if it crashed first).

Segment file
============

Every segment starts with a fixed header (:data:`FILE_HEADER`, big-endian, 32 bytes)::

    offset  size  field
    0       8     magic        b"SYNCMQJ1"
    8       2     version      u16, currently 1 (:data:`VERSION`)
    10      2     flags        u16, 0 (reserved)
    12      8     segment_no   u64, equals the number in the file name
    20      8     covers_from  u64, lowest segment number whose records this file stands for:
                               == segment_no for a segment written by appends; < segment_no
                               for a compaction output (files covers_from..segment_no-1 are
                               stale)
    28      4     header_crc   u32, CRC-32 of bytes 0..27

followed by zero or more records back to back, up to the end of the file.

Record
======

Each record is a fixed 9-byte header (:data:`RECORD_HEADER`, big-endian) and a payload::

    offset  size    field
    0       4       length   u32, number of payload bytes (not counting this header);
                             at most :data:`MAX_PAYLOAD`
    4       4       crc      u32, zlib CRC-32 of the type byte followed by the payload
    8       1       type     u8, one of the ``T_*`` codes below
    9       length  payload  type-specific, see below

A record is *torn or corrupt* if its header runs past the end of the file, its length exceeds
``MAX_PAYLOAD`` or the end of the file, or its CRC does not match. Recovery stops at the first
such record and truncates the file there. A record whose CRC matches but whose payload does not
decode (or whose type is unknown to this version) was written whole, so recovery skips it and
logs it, rather than discarding everything after it.

Payload field encodings (all integers big-endian, unsigned)::

    u8 / u16 / u64       1 / 2 / 8 bytes
    str                  u16 byte length, then that many bytes of UTF-8
    bytes                u32 byte length, then the bytes (opaque to the journal)
    str-list             u16 count, then count x str
    id-list              u32 count, then count x u64
    run-list             u32 count, then count x (first:u64, n:u64), each n >= 1: the ids
                         first .. first+n-1 of each run

Payloads by type (``flags`` are the broker's bits, stored verbatim)::

    1  VHOST_ADD         name:str
    2  VHOST_DELETE      name:str
    3  EXCHANGE_DECLARE  vhost:str name:str type:str flags:u16 arguments:bytes
    4  EXCHANGE_DELETE   vhost:str name:str
    5  QUEUE_DECLARE     vhost:str name:str flags:u16 arguments:bytes
    6  QUEUE_DELETE      vhost:str name:str
    7  QUEUE_PURGE       vhost:str name:str
    8  BINDING_ADD       vhost:str source:str destination:str destination_kind:u8
                         routing_key:str arguments:bytes      (destination_kind 0 queue, 1 exchange)
    9  BINDING_REMOVE    same as BINDING_ADD
    10 PUBLISH           msg_id:u64 vhost:str queues:str-list exchange:str routing_key:str
                         properties:bytes body:bytes
    13 PUBLISH_AT        msg_id:u64 vhost:str queues:str-list exchange:str routing_key:str
                         properties:bytes published_ms:u64 body:bytes
    11 ACK               vhost:str queue:str msg_ids:id-list
    12 DELIVERED         vhost:str queue:str msg_ids:id-list
    14 TX                count:u32 bytes:u64   (a transaction: see "Transactions" below)
    15 ID_MARK           max_id:u64            (see "Message ids" below)
    16 PARAM_SET         vhost:str component:str name:str value:bytes   (value: JSON text)
    17 PARAM_CLEAR       vhost:str component:str name:str
    18 GLOBAL_SET        name:str value:bytes                           (value: JSON text)
    19 GLOBAL_CLEAR      name:str
    20 DELIVERED_RUNS    vhost:str queue:str runs:run-list   (see "Delivered runs" below)

The body is the last field of PUBLISH and PUBLISH_AT, so it is the last ``len(body)`` bytes
of the record (``reader.py`` reads bodies back from there).

PUBLISH_AT (added after version 1's first records; a journal without it still recovers, and a
PUBLISH is still written for a message no TTL applies to) is a PUBLISH that also carries the
wall-clock time of the publish in ms since the epoch, written when a TTL applies to the message
on one of its queues: recovery hands it to the broker so that a TTL keeps counting from the
original publish across restarts (each queue's deadline is ``published_ms`` plus the lower of
its ``x-message-ttl`` and the message's ``expiration``, both known at recovery). Everything
that reads ``(msg_id, vhost, queues)`` treats both types alike.

Transactions (TX, added after version 1's first records; older journals have none): a TX
record is followed, in the same segment, by the ``count`` records of one ``tx.commit`` (its
publishes, acks, dead-letter publishes; ``bytes`` of them in all, headers included), written
as one unit. Recovery applies them only if all of them are there, whole: a TX whose records run
past the end of the file or tear is cut off *with* the TX record (the tail is truncated at the
TX), so after any crash a committed batch is all there or not at all. The TX record itself
changes nothing; compaction (closed segments only, where the unit is complete) drops it and
keeps the records on their own merits.

Message ids (ID_MARK, added after version 1's first records; older journals have none and
still recover): ``next_msg_id`` is one more than the highest id named by any record on disk,
ID_MARK included. Without marks, compaction dropping the highest-id dead PUBLISH and its ACK
made that number go backwards, and a restart reused ids. So the writer puts an ID_MARK (the
highest id applied so far, records written earlier in the same batch included) right after
the header of every segment it creates, in the same fsynced write, and appends one to the
segment it reopens after recovery when the journal starts (fsynced before compaction can
run; a recovery that only reads changes no file). The current segment, which compaction never
touches, thus always holds a mark at least as high as every id before it, and compaction
drops every ID_MARK of the closed segments it rewrites. An ID_MARK changes nothing else.

Runtime parameters (PARAM_*/GLOBAL_*, added after version 1's first records; older journals
have none and still recover): the broker's runtime-parameter store (``broker/parameters.py``:
policies, vhost limits, shovels... as RabbitMQ keeps them) writes one PARAM_SET per change of
the parameter ``(vhost, component, name)``, holding the whole new value as JSON text, and one
PARAM_CLEAR when it is cleared; GLOBAL_SET/GLOBAL_CLEAR the same for the global parameter
``name``. A set replaces the previous value whole, so only the last PARAM_SET of a parameter
is live (compaction drops the earlier ones); a clear is a tombstone, kept while a set of its
parameter is still on disk before it. VHOST_DELETE clears every parameter of the vhost.

Delivered runs (DELIVERED_RUNS, added after version 1's first records; older journals have
none and still recover, their DELIVERED records as before): a DELIVERED of every id of its
runs, 16 bytes a run instead of 8 an id. The broker writes them after an unclean stop, when it
journals the redelivered flag of every recovered message (``Durability.journal_started``): a
recovered backlog's ids are a few long runs, so 10,000,000 marks are a record of a few bytes
instead of 80 MB of ids (issue #22). Replay marks a run chunk by chunk of the message table
(``MessageTable.mark_delivered_run``); compaction keeps the parts of the runs still live and
delivered on that queue, as runs. A version before it skips the record (logged as
undecodable), so a downgrade loses those flags (the messages stay, redelivered=false).

Meaning (applied in log order by recovery, see ``recovery.py`` and ``state.py``):

* A declare of an existing entity replaces its flags/arguments (a re-declare); a QUEUE_DECLARE
  of a queue that does not exist starts it empty.
* QUEUE_DELETE removes the queue, its bindings (as destination) and its messages; QUEUE_PURGE
  removes its messages; EXCHANGE_DELETE removes the exchange and the bindings where it is
  source or destination; VHOST_DELETE removes everything in the vhost.
* Bindings are identified by all their fields (``arguments`` compared as bytes: the broker must
  encode equal tables to equal bytes).
* PUBLISH puts one message on each listed queue; ``msg_id`` must be unique for the life of the
  data directory (recovery reports ``next_msg_id``). ACK removes the message from one queue; a
  message is dead once it is on no queue. DELIVERED marks it delivered on that queue (recovery
  reports ``delivered=True``, i.e. redelivered); DELIVERED_RUNS the same for each id of its
  runs. ACK/DELIVERED ids unknown at that point are ignored.
"""


from __future__ import annotations

from .encoding import (
    DEST_EXCHANGE,
    DEST_QUEUE,
    FILE_HEADER,
    MAGIC,
    MAX_PAYLOAD,
    PUBLISH_TYPES,
    RECORD_HEADER,
    SEGMENT_SUFFIX,
    T_ACK,
    T_BINDING_ADD,
    T_BINDING_REMOVE,
    T_DELIVERED,
    T_DELIVERED_RUNS,
    T_EXCHANGE_DECLARE,
    T_EXCHANGE_DELETE,
    T_GLOBAL_CLEAR,
    T_GLOBAL_SET,
    T_ID_MARK,
    T_PARAM_CLEAR,
    T_PARAM_SET,
    T_PUBLISH,
    T_PUBLISH_AT,
    T_QUEUE_DECLARE,
    T_QUEUE_DELETE,
    T_QUEUE_PURGE,
    T_TX,
    T_VHOST_ADD,
    T_VHOST_DELETE,
    TMP_SUFFIX,
    TYPE_NAMES,
    VERSION,
    FormatError,
    check_record,
    decode_file_header,
    encode_ack,
    encode_binding_add,
    encode_binding_remove,
    encode_delivered,
    encode_delivered_runs,
    encode_exchange_declare,
    encode_exchange_delete,
    encode_file_header,
    encode_global_clear,
    encode_global_set,
    encode_id_mark,
    encode_param_clear,
    encode_param_set,
    encode_publish,
    encode_publish_at,
    encode_queue_declare,
    encode_queue_delete,
    encode_queue_purge,
    encode_tx,
    encode_vhost_add,
    encode_vhost_delete,
    frame,
    parse_segment_name,
    segment_name,
)
from .records import (
    Ack,
    BindingAdd,
    BindingRemove,
    Delivered,
    DeliveredRuns,
    ExchangeDeclare,
    ExchangeDelete,
    GlobalClear,
    GlobalSet,
    IdMark,
    ParamClear,
    ParamSet,
    Publish,
    QueueDeclare,
    QueueDelete,
    QueuePurge,
    Record,
    Tx,
    VhostAdd,
    VhostDelete,
    decode_ids_record,
    decode_payload,
    decode_publish,
    decode_publish_head,
    decode_publish_meta,
    decode_record,
    iter_records,
    publish_body_span,
    tx_unit_end,
)

__all__ = [
    "MAGIC", "VERSION", "FILE_HEADER", "RECORD_HEADER", "MAX_PAYLOAD", "FormatError",
    "SEGMENT_SUFFIX", "TMP_SUFFIX",
    "T_VHOST_ADD", "T_VHOST_DELETE", "T_EXCHANGE_DECLARE", "T_EXCHANGE_DELETE",
    "T_QUEUE_DECLARE", "T_QUEUE_DELETE", "T_QUEUE_PURGE", "T_BINDING_ADD", "T_BINDING_REMOVE",
    "T_PUBLISH", "T_ACK", "T_DELIVERED", "T_PUBLISH_AT", "PUBLISH_TYPES", "TYPE_NAMES",
    "DEST_QUEUE", "DEST_EXCHANGE",
    "VhostAdd", "VhostDelete", "ExchangeDeclare", "ExchangeDelete", "QueueDeclare",
    "QueueDelete", "QueuePurge", "BindingAdd", "BindingRemove", "Publish", "Ack", "Delivered",
    "Record", "encode_file_header", "decode_file_header", "segment_name", "parse_segment_name",
    "frame", "decode_payload", "decode_record", "iter_records", "check_record",
    "encode_vhost_add", "encode_vhost_delete", "encode_exchange_declare",
    "encode_exchange_delete", "encode_queue_declare", "encode_queue_delete",
    "encode_queue_purge", "encode_binding_add", "encode_binding_remove", "encode_publish",
    "encode_ack", "encode_delivered", "encode_publish_at", "publish_body_span",
    "decode_publish_head", "decode_ids_record", "decode_publish", "decode_publish_meta",
    "T_TX", "Tx", "encode_tx", "tx_unit_end", "T_ID_MARK", "IdMark", "encode_id_mark",
    "T_PARAM_SET", "T_PARAM_CLEAR", "T_GLOBAL_SET", "T_GLOBAL_CLEAR", "ParamSet", "ParamClear",
    "GlobalSet", "GlobalClear", "encode_param_set", "encode_param_clear", "encode_global_set",
    "encode_global_clear", "T_DELIVERED_RUNS", "DeliveredRuns", "encode_delivered_runs",
]
