"""The Prometheus families syncmq serves under RabbitMQ's names (data only).

Names, types and help texts are those of RabbitMQ 3.10.8's rabbitmq_prometheus plugin (read
off a node's scrape), grouped as the plugin groups them: by the core metrics table they come
from, which is also the ``family`` name ``/metrics/detailed?family=...`` takes. Each row is
``(name without the rabbitmq_ prefix, type, help, key)``; ``key`` names the value in the
row dicts :mod:`.prometheus` builds. The families of the plugin syncmq does not serve, and
why, are listed in docs/architecture.md ("Prometheus").
"""

from __future__ import annotations

C, G, U = "counter", "gauge", "untyped"

# table -> families. Tables without per-object labels are "global".
TABLES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "connection_churn_metrics": (
        ("connections_opened_total", C, "Total number of connections opened",
         "connections_opened"),
        ("connections_closed_total", C, "Total number of connections closed or terminated",
         "connections_closed"),
        ("channels_opened_total", C, "Total number of channels opened", "channels_opened"),
        ("channels_closed_total", C, "Total number of channels closed", "channels_closed"),
        ("queues_declared_total", C, "Total number of queues declared", "queues_declared"),
        ("queues_created_total", C, "Total number of queues created", "queues_created"),
        ("queues_deleted_total", C, "Total number of queues deleted", "queues_deleted"),
    ),
    "node_coarse_metrics": (
        ("process_open_fds", G, "Open file descriptors", "fd_used"),
        ("process_open_tcp_sockets", G, "Open TCP sockets", "sockets_used"),
        ("process_resident_memory_bytes", G, "Memory used in bytes", "mem_used"),
        ("disk_space_available_bytes", G, "Disk space available in bytes", "disk_free"),
        ("erlang_processes_used", G, "Erlang processes used", "proc_used"),
    ),
    "node_metrics": (
        ("process_max_fds", G, "Open file descriptors limit", "fd_total"),
        ("process_max_tcp_sockets", G, "Open TCP sockets limit", "sockets_total"),
        ("resident_memory_limit_bytes", G, "Memory high watermark in bytes", "mem_limit"),
        ("disk_space_available_limit_bytes", G, "Free disk space low watermark in bytes",
         "disk_free_limit"),
        ("erlang_processes_limit", G, "Erlang processes limit", "proc_total"),
        ("erlang_uptime_seconds", G, "Node uptime", "uptime"),
    ),
    "node_persister_metrics": (  # the journal's writes and fsyncs (none without a journal)
        ("io_write_ops_total", C, "Total number of I/O write operations", "io_write_count"),
        ("io_write_bytes_total", C, "Total number of I/O bytes written", "io_write_bytes"),
        ("io_sync_ops_total", C, "Total number of I/O sync operations", "io_sync_count"),
        ("io_sync_time_seconds_total", C, "Total I/O sync time", "io_sync_time"),
    ),
    "auth_attempt_metrics": (
        ("auth_attempts_total", C, "Total number of authorization attempts", "attempts"),
        ("auth_attempts_succeeded_total", C,
         "Total number of successful authentication attempts", "succeeded"),
        ("auth_attempts_failed_total", C, "Total number of failed authentication attempts",
         "failed"),
    ),
    # per source (remote address, user): kept only when tracking sources is on, which it is
    # not by default in RabbitMQ either (``track_auth_attempt_source``): no samples
    "auth_attempt_detailed_metrics": (
        ("auth_attempts_detailed_total", C,
         "Total number of authorization attempts with source info", "attempts"),
        ("auth_attempts_detailed_succeeded_total", C,
         "Total number of successful authorization attempts with source info", "succeeded"),
        ("auth_attempts_detailed_failed_total", C,
         "Total number of failed authorization attempts with source info", "failed"),
    ),
    "queue_coarse_metrics": (
        ("queue_messages_ready", G, "Messages ready to be delivered to consumers", "ready"),
        ("queue_messages_unacked", G,
         "Messages delivered to consumers but not yet acknowledged", "unacked"),
        ("queue_messages", G, "Sum of ready and unacknowledged messages - total queue depth",
         "messages"),
    ),
    "queue_consumer_count": (
        ("queue_consumers", G, "Consumers on a queue", "consumers"),
    ),
    "queue_metrics": (
        ("queue_consumers", G, "Consumers on a queue", "consumers"),
        ("queue_consumer_capacity", G, "Consumer capacity", "consumer_capacity"),
        ("queue_consumer_utilisation", G, "Same as consumer capacity", "consumer_utilisation"),
    ),
    "channel_metrics": (
        ("channel_consumers", G, "Consumers on a channel", "consumers"),
        ("channel_messages_unacked", G, "Delivered but not yet acknowledged messages",
         "unacked"),
        ("channel_messages_unconfirmed", G, "Published but not yet confirmed messages",
         "unconfirmed"),
        ("channel_messages_uncommitted", G,
         "Messages received in a transaction but not yet committed", "uncommitted"),
        ("channel_acks_uncommitted", G,
         "Message acknowledgements in a transaction not yet committed", "acks_uncommitted"),
        ("consumer_prefetch", G, "Limit of unacknowledged messages for each consumer",
         "prefetch"),
        ("channel_prefetch", G,
         "Total limit of unacknowledged messages for all consumers on a channel",
         "global_prefetch"),
    ),
    "channel_exchange_metrics": (
        ("channel_messages_published_total", C,
         "Total number of messages published into an exchange on a channel", "publish"),
        ("channel_messages_confirmed_total", C,
         "Total number of messages published into an exchange and confirmed on the channel",
         "confirm"),
        ("channel_messages_unroutable_returned_total", C,
         "Total number of messages published as mandatory into an exchange and returned to "
         "the publisher as unroutable", "return_unroutable"),
        ("channel_messages_unroutable_dropped_total", C,
         "Total number of messages published as non-mandatory into an exchange and dropped "
         "as unroutable", "drop_unroutable"),
    ),
    "channel_queue_metrics": (
        ("channel_get_ack_total", C,
         "Total number of messages fetched with basic.get in manual acknowledgement mode",
         "get_ack"),
        ("channel_get_total", C,
         "Total number of messages fetched with basic.get in automatic acknowledgement mode",
         "get_no_ack"),
        ("channel_messages_delivered_ack_total", C,
         "Total number of messages delivered to consumers in manual acknowledgement mode",
         "deliver_ack"),
        ("channel_messages_delivered_total", C,
         "Total number of messages delivered to consumers in automatic acknowledgement mode",
         "deliver_no_ack"),
        ("channel_messages_redelivered_total", C,
         "Total number of messages redelivered to consumers", "redeliver"),
        ("channel_messages_acked_total", C, "Total number of messages acknowledged by consumers",
         "ack"),
        ("channel_get_empty_total", C,
         "Total number of times basic.get operations fetched no message", "get_empty"),
    ),
    "connection_coarse_metrics": (
        ("connection_incoming_bytes_total", C, "Total number of bytes received on a connection",
         "recv_oct"),
        ("connection_outgoing_bytes_total", C, "Total number of bytes sent on a connection",
         "send_oct"),
    ),
    "connection_metrics": (
        ("connection_channels", G, "Channels on a connection", "channels"),
    ),
    "channel_queue_exchange_metrics": (
        ("queue_messages_published_total", C, "Total number of messages published to queues",
         "published"),
    ),
}

# Per-object labels of each table (RabbitMQ's, except where syncmq keeps counters per
# channel only: see docs/architecture.md). Tables not listed have none.
LABELS: dict[str, tuple[str, ...]] = {
    "auth_attempt_metrics": ("protocol",),
    "auth_attempt_detailed_metrics": ("remote_address", "username", "protocol"),
    "queue_coarse_metrics": ("vhost", "queue"),
    "queue_consumer_count": ("vhost", "queue"),
    "queue_metrics": ("vhost", "queue"),
    "channel_metrics": ("channel",),
    "channel_exchange_metrics": ("channel", "vhost"),
    "channel_queue_metrics": ("channel", "vhost"),
    "connection_coarse_metrics": ("channel",),
    "connection_metrics": ("channel",),
    "channel_queue_exchange_metrics": ("queue_vhost", "queue"),
}
# Tables whose labels stay when aggregated (they are not per object)
KEEP_LABELS = frozenset({"auth_attempt_metrics"})
QUEUE_TABLES = frozenset({"queue_coarse_metrics", "queue_consumer_count", "queue_metrics"})

# The rabbitmq_global_* families (RabbitMQ's global counters collector): always per
# protocol (and queue type), the same on every endpoint but /metrics/detailed.
PROTO = ("protocol",)
PROTO_QT = ("protocol", "queue_type")
GLOBAL: tuple[tuple[str, str, str, tuple[str, ...], str], ...] = (
    ("global_consumers", G, "Current number of consumers", PROTO, "consumers"),
    ("global_messages_acknowledged_total", C,
     "Total number of messages acknowledged by consumers", PROTO_QT, "ack"),
    ("global_messages_confirmed_total", C, "Total number of messages confirmed to publishers",
     PROTO, "confirm"),
    ("global_messages_delivered_consume_auto_ack_total", C,
     "Total number of messages delivered to consumers using basic.consume with automatic "
     "acknowledgment", PROTO_QT, "deliver_no_ack"),
    ("global_messages_delivered_consume_manual_ack_total", C,
     "Total number of messages delivered to consumers using basic.consume with manual "
     "acknowledgment", PROTO_QT, "deliver_ack"),
    ("global_messages_delivered_get_auto_ack_total", C,
     "Total number of messages delivered to consumers using basic.get with automatic "
     "acknowledgment", PROTO_QT, "get_no_ack"),
    ("global_messages_delivered_get_manual_ack_total", C,
     "Total number of messages delivered to consumers using basic.get with manual "
     "acknowledgment", PROTO_QT, "get_ack"),
    ("global_messages_delivered_total", C, "Total number of messages delivered to consumers",
     PROTO_QT, "deliver_get"),
    ("global_messages_get_empty_total", C,
     "Total number of times basic.get operations fetched no message", PROTO_QT, "get_empty"),
    ("global_messages_received_confirm_total", C,
     "Total number of messages received from publishers expecting confirmations", PROTO,
     "received_confirm"),
    ("global_messages_received_total", C, "Total number of messages received from publishers",
     PROTO, "publish"),
    ("global_messages_redelivered_total", C, "Total number of messages redelivered to consumers",
     PROTO_QT, "redeliver"),
    ("global_messages_routed_total", C, "Total number of messages routed to queues or streams",
     PROTO, "routed"),
    ("global_messages_unroutable_dropped_total", C,
     "Total number of messages published as non-mandatory into an exchange and dropped as "
     "unroutable", PROTO, "drop_unroutable"),
    ("global_messages_unroutable_returned_total", C,
     "Total number of messages published as mandatory into an exchange and returned to the "
     "publisher as unroutable", PROTO, "return_unroutable"),
    ("global_publishers", G, "Current number of publishers", PROTO, "publishers"),
)

# rabbitmq_global_messages_dead_lettered_<reason>_total: per queue type and dead-letter
# strategy (the series of ``broker.deadletter.DEAD_LETTER_SERIES``, each a sample)
DEAD_LETTER_LABELS = ("queue_type", "dead_letter_strategy")
DEAD_LETTERED = (
    ("confirmed", "Total number of messages dead-lettered and confirmed by target queues"),
    ("delivery_limit", "Total number of messages dead-lettered due to delivery-limit exceeded"),
    ("expired", "Total number of messages dead-lettered due to message TTL exceeded"),
    ("maxlen", "Total number of messages dead-lettered due to overflow drop-head or "
     "reject-publish-dlx"),
    ("rejected", "Total number of messages dead-lettered due to basic.reject or basic.nack"),
)

ALARMS = (
    ("alarms_file_descriptor_limit", "is 1 if file descriptor limit alarm is in effect", None),
    ("alarms_free_disk_space_watermark",
     "is 1 if free disk space watermark alarm is in effect", "disk"),
    ("alarms_memory_used_watermark", "is 1 if VM memory watermark alarm is in effect",
     "memory"),
)

TOTALS = (
    ("connections", "Connections currently open"),
    ("channels", "Channels currently open"),
    ("consumers", "Consumers currently connected"),
    ("queues", "Queues available"),
)

# /metrics/detailed only: cluster-wide families (prefix rabbitmq_cluster_)
CLUSTER = {
    "exchange_names": ("exchange_name", G, "Enumerates exchanges without any additional info. "
                       "This value is cluster-wide. A cheaper alternative to `exchange_bindings`"),
    "exchange_bindings": ("exchange_bindings", G,
                          "Number of bindings for an exchange. This value is cluster-wide."),
    "vhost_status": ("vhost_status", G, "Whether a given vhost is running"),
}
