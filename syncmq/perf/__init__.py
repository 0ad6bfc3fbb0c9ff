"""syncmq-perf: a PerfTest-class load generator for any AMQP 0-9-1 broker.

:mod:`syncmq.perf.client` is a minimal blocking client built on :mod:`syncmq.wire` (the only
part of syncmq this package imports); :mod:`syncmq.perf.workers` are the producer and consumer
processes; :mod:`syncmq.perf.cli` is the ``syncmq-perf`` command.
"""
