"""The management HTTP server: stdlib ``ThreadingHTTPServer`` in thread ``syncmq-management``.

Every ``/api/...`` request is authenticated with HTTP basic auth against the broker's user
store (``broker.users.authenticate``, the check AMQP logins use, so ``guest`` is refused from
a non-loopback address here too). ``/metrics`` (Prometheus) needs no credentials, as
RabbitMQ's Prometheus endpoint, and neither do the dashboard's static files (``/``,
``/static/...``, see :mod:`.ui`): the page logs in by calling the API with the user's
credentials. A 401 to a request with ``X-Requested-With`` (the dashboard's calls) carries no
``WWW-Authenticate``, so the browser shows the page's login form, not its own dialog. Request threads are daemon threads: a stuck client never
holds up shutdown. Access is logged at debug level through ``logging`` (never to stderr
directly, so the log stays one JSON object a line).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

import syncmq.management.metrics as metrics
import syncmq.management.ui as ui

from .api import API, HTTPError, Request
from .state import Context

log = logging.getLogger("syncmq.management")

MAX_BODY = 64 * 1024 * 1024  # definitions of a large broker fit; anything bigger is refused
REALM = 'Basic realm="RabbitMQ Management"'


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: API
    ctx: Context
    assets: dict[str, ui.Asset]

    def handle_error(self, request, client_address) -> None:
        """An exception outside a request's dispatch (reading the request line or headers):
        a client that went away (a browser leaving the page resets its connections) is not
        an error; anything else is logged as one record, never printed to stderr (socketserver's
        default), so the log stays one JSON object a line."""
        exc = sys.exc_info()[1]
        peer = f"{client_address[0]}:{client_address[1]}"
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("management client went away: %s", exc, extra={"peer": peer})
            return
        log.error("management HTTP request failed: %r", exc, extra={"peer": peer})


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "syncmq-management"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib's name)
        log.debug("http %s", format % args, extra={"peer": self._peer()})

    def _peer(self) -> str:
        return f"{self.client_address[0]}:{self.client_address[1]}"

    def do_GET(self) -> None:  # noqa: N802 (stdlib's naming)
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        asset = self.server.assets.get(path)
        if asset is None:
            self._send(404, b"", None)
            return
        self._send_asset(asset, head=True)

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    # ---- the request ----

    def _dispatch(self, method: str) -> None:
        try:
            self._dispatch_inner(method)
        except HTTPError as e:
            challenge = e.status == 401 and not self.headers.get("X-Requested-With")
            self._send_json(e.status, {"error": e.error, "reason": e.reason},
                            {"WWW-Authenticate": REALM} if challenge else None)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:
            log.exception("management API request failed",
                          extra={"peer": self._peer(), "path": self.path})
            self._send_json(500, {"error": "Internal Server Error", "reason": str(e)})

    def _dispatch_inner(self, method: str) -> None:
        url = urlsplit(self.path)
        raw = url.path.split("/")[1:]
        if raw and raw[-1] == "":
            raw.pop()
        body = self._read_body()
        if raw == ["metrics"] and method == "GET":
            api = self.server.api
            self._send(200, metrics.render(api.ctx, api.rates).encode(), metrics.CONTENT_TYPE)
            return
        if method == "GET" and (not raw or raw[0] in ("static", "index.html")):
            asset = self.server.assets.get(url.path)
            if asset is not None:
                self._send_asset(asset)
                return
        if not raw or raw[0] != "api":
            raise HTTPError(404, "Object Not Found", "Not Found")
        user = self._authenticate()
        if method == "POST" and body.strip() and not self._json_body():
            # A cross-site HTML form can POST text/plain with the browser's cached basic-auth
            # credentials; it cannot send application/json without a CORS preflight (which
            # this server never grants). As RabbitMQ, a POST body must be declared JSON.
            raise HTTPError(415, "unsupported_media_type",
                            "a request body must have Content-Type: application/json")
        try:
            parsed = json.loads(body) if body.strip() else None
        except ValueError:
            raise HTTPError(400, "bad_request", "body is not valid JSON") from None
        req = Request(
            method=method,
            parts=[unquote(p) for p in raw[1:]],
            query=dict(parse_qsl(url.query)),
            body=parsed,
            user=user,
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        resp = self.server.api.handle(req)
        if resp.status == 204 or resp.body is None:
            self._send(resp.status, b"", None)
        else:
            self._send_json(resp.status, resp.body)

    def _json_body(self) -> bool:
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        return ctype == "application/json"

    def _read_body(self) -> bytes:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise HTTPError(400, "bad_request", "bad Content-Length") from None
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            raise HTTPError(413, "bad_request", "request body too large")
        return self.rfile.read(n) if n else b""

    def _authenticate(self):
        header = self.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            raise HTTPError(401, "not_authorized", "Login failed")
        try:
            name, sep, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise HTTPError(401, "not_authorized", "Login failed") from None
        if not sep:
            raise HTTPError(401, "not_authorized", "Login failed")
        user, reason = self.server.ctx.broker.users.authenticate(
            name, password, self.client_address)
        if user is None:
            log.warning("HTTP access denied: %s", reason,
                        extra={"peer": self._peer(), "user": name})
            raise HTTPError(401, "not_authorized", "Login failed")
        return user

    # ---- the response ----

    def _send_json(self, status: int, obj, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _send_asset(self, asset: ui.Asset, head: bool = False) -> None:
        """A dashboard file, with its ETag (304 when the browser has it) and the page's
        security headers."""
        if self.headers.get("If-None-Match") == asset.etag:
            self._send(304, b"", None, {"ETag": asset.etag, **ui.SECURITY_HEADERS})
            return
        headers = {"ETag": asset.etag, **ui.SECURITY_HEADERS}
        if head:
            self.send_response(200)
            self.send_header("Content-Type", asset.content_type)
            self.send_header("Content-Length", str(len(asset.data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            return
        self._send(200, asset.data, asset.content_type, headers)

    def _send(self, status: int, data: bytes, ctype: str | None,
              headers: dict | None = None) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if data:
            self.wfile.write(data)


class ManagementServer:
    """The HTTP listener; :meth:`start` binds and serves in thread ``syncmq-management``."""

    def __init__(self, ctx: Context, host: str, port: int) -> None:
        self.ctx = ctx
        self.host = host
        self.port = port
        self.httpd: _HTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    def start(self) -> tuple[str, int]:
        """Bind (port 0 = ephemeral) and serve; returns the bound address. Raises OSError."""
        cls = _HTTPServer
        if ":" in self.host:
            cls = type("_HTTPServer6", (_HTTPServer,), {"address_family": socket.AF_INET6})
        httpd = cls((self.host, self.port), _Handler)
        httpd.ctx = self.ctx
        httpd.api = API(self.ctx)
        httpd.assets = ui.load_assets()
        httpd.api.history.start()
        self.httpd = httpd
        self.address = httpd.server_address[:2]
        self.thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                       name="syncmq-management", daemon=True)
        self.thread.start()
        return self.address

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.api.history.stop()
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
