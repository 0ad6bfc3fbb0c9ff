"""The AMQP 0-9-1 codec: pure, stdlib-only, no I/O.

* :mod:`syncmq.wire.errors` -- AMQPError / AMQPConnectionError / AMQPChannelError.
* :mod:`syncmq.wire.fields` -- field values, field tables and arrays (RabbitMQ's type codes).
* :mod:`syncmq.wire.frames` -- cutting frames out of a byte stream; encoding method, content
  and delivery frames as scatter/gather chunks.
* :mod:`syncmq.wire._spec` -- generated from spec/ by spec/codegen.py: constants and reply
  codes, ``Method`` classes (``Basic.Publish``...), ``METHODS``, ``decode_method``,
  ``BasicProperties``.

Rule: decoding anything malformed raises :class:`AMQPConnectionError` with a spec reply code,
never another exception.
"""
