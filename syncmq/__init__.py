"""syncmq: an AMQP 0-9-1 broker in pure Python."""

__version__ = "0.3.0"
