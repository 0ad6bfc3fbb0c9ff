"""syncmq for test suites: the pytest plugin (``syncmq.testing.plugin``, registered through
the ``pytest11`` entry point as ``syncmq``) and the helpers it hands out
(``syncmq.testing.helpers``: :class:`BrokerAdmin`, :class:`Leftovers`,
:class:`PeekedMessage`). See docs/testing.md.

Loading the plugin imports nothing but this package and pytest: the helpers are imported on
first use.
"""

__all__ = ["BrokerAdmin", "Leftovers", "PeekedMessage", "with_vhost"]


def __getattr__(name: str):
    if name in __all__:
        from . import helpers

        return getattr(helpers, name)
    raise AttributeError(f"module 'syncmq.testing' has no attribute {name!r}")
