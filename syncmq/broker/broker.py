"""The broker: vhosts, users and the names it generates. Knows nothing of frames or sockets."""

from __future__ import annotations

import base64
import os
import threading

from .auth import UserStore
from .vhost import VirtualHost


def _random_suffix() -> str:
    return base64.urlsafe_b64encode(os.urandom(16)).decode("ascii").rstrip("=")


def generate_queue_name() -> str:
    """A server-named queue, as RabbitMQ names them: ``amq.gen-`` + 22 url-safe characters."""
    return "amq.gen-" + _random_suffix()


def generate_consumer_tag() -> str:
    return "amq.ctag-" + _random_suffix()


class Broker:
    """Top of the broker model. ``vhosts`` is mutated only under ``lock``; read without it."""

    def __init__(self, users: UserStore | None = None) -> None:
        # Guards adding and removing vhosts.
        self.lock = threading.Lock()
        self.vhosts: dict[str, VirtualHost] = {"/": VirtualHost("/")}
        self.users = users or UserStore()

    def add_vhost(self, name: str) -> VirtualHost:
        with self.lock:
            vh = self.vhosts.get(name)
            if vh is None:
                vh = self.vhosts[name] = VirtualHost(name)
            return vh
