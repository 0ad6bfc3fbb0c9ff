"""The management API's refusals, as RabbitMQ's management plugin answers them: an HTTP
status and the JSON body ``{"error": ..., "reason": ...}``."""

from __future__ import annotations

from typing import Any


class HTTPError(Exception):
    def __init__(self, status: int, error: str, reason: Any) -> None:
        """``reason`` is a string, or (as RabbitMQ's ``not_boolean``) any JSON value."""
        super().__init__(reason)
        self.status, self.error, self.reason = status, error, reason


def not_found() -> HTTPError:
    return HTTPError(404, "Object Not Found", "Not Found")


def bad_request(reason: str) -> HTTPError:
    return HTTPError(400, "bad_request", reason)


def access_refused() -> HTTPError:
    return HTTPError(401, "not_authorised", "Access refused.")
