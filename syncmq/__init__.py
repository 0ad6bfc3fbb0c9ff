"""syncmq: an AMQP 0-9-1 broker in pure Python.

``syncmq.Server(**options)`` runs one in this process (``syncmq.embedded``); it is imported on
first use, so ``import syncmq`` stays cheap and imports nothing else.
"""

__version__ = "0.14.0"
__all__ = ["Server", "__version__"]


def __getattr__(name: str):
    if name == "Server":
        from .embedded import Server  # the public API, above every layer: imported lazily

        return Server
    raise AttributeError(f"module 'syncmq' has no attribute {name!r}")
