"""The management WSGI application: the gate, the dashboard's files, ``/metrics`` and
``/api/...``.

:meth:`App.admit` runs on the HTTP server's I/O thread with the request's headers only
(see :mod:`.httpd`): every ``/api/...`` request is authenticated with HTTP basic auth against
the broker's user store (``broker.users.authenticate``, the check AMQP logins use, so
``guest`` is refused from a non-loopback address here too) and its user must hold a
management tag; a POST must declare ``application/json`` (a cross-site HTML form can POST
``text/plain`` with the browser's cached credentials, never JSON without a CORS preflight);
the body must fit the endpoint's limit. Only then is the body read.

``/metrics`` (Prometheus) answers broker-wide aggregated families; ``/metrics/per-object``
adds one sample per queue. As RabbitMQ's Prometheus endpoint, the aggregated one needs no
credentials by default (``metrics_auth``: ``per-object`` (default) guards only the
per-object endpoint, ``all`` guards both, ``none`` neither). The dashboard's static files
(``/``, ``/static/...``, see :mod:`.ui`) need no credentials: the page logs in by calling
the API. A 401 to a request with ``X-Requested-With`` (the dashboard's calls) carries no
``WWW-Authenticate``, so the browser shows the page's login form, not its own dialog.

Every refusal is RabbitMQ's JSON error shape ``{"error": ..., "reason": ...}``; an
unexpected exception is logged and answered 500 without its text. CORS headers are sent only
to origins listed in ``cors_origins``; a CORS preflight (``OPTIONS`` from such an origin) is
answered without credentials, since browsers never send any with it (RabbitMQ's
``is_authorized`` passes OPTIONS too), and never reaches the API.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

import syncmq.management.metrics as metrics
import syncmq.management.ui as ui

from ..broker.auth import User
from .api import API, MANAGEMENT_TAGS, HTTPError, Request, bad_request, has_tag
from .resources.overview import _node as node_facts  # /api/nodes' facts, one reader
from .state import Context

log = logging.getLogger("syncmq.management")

REALM = 'Basic realm="RabbitMQ Management"'
MAX_JSON_DEPTH = 32  # RabbitMQ objects nest 3 deep; deeper input is refused, not recursed
STATUS_TEXT = {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified",
               400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
               405: "Method Not Allowed", 413: "Payload Too Large",
               415: "Unsupported Media Type", 500: "Internal Server Error",
               503: "Service Unavailable"}
_LOGIN_FAILED = HTTPError(401, "not_authorized", "Login failed")


@dataclass
class Admission:
    """What the gate decided from a request's headers."""

    user: User | None
    refusal: HTTPError | None
    limit: int  # bytes of body this request may send


def segments(path: str) -> list[str]:
    """``/api/queues/%2F/q`` as ``["api", "queues", "%2F", "q"]`` (still percent-encoded, so
    an encoded ``/`` stays inside its segment)."""
    raw = path.split("/")[1:]
    if raw and raw[-1] == "":
        raw.pop()
    return raw


def _json_ctype(ctype: str) -> bool:
    return ctype.split(";", 1)[0].strip().lower() == "application/json"


class App:
    """The WSGI application (shared by the server's threads; holds no per-request state)."""

    def __init__(self, ctx: Context, settings) -> None:
        self.ctx = ctx
        self.settings = settings
        self.api = API(ctx)
        self.scrapes = metrics.Scrapes(ctx, self.api.rates,
                                       functools.partial(node_facts, self.api))
        self.assets = ui.load_assets()

    def start(self) -> None:
        self.api.history.start()

    def stop(self) -> None:
        self.api.history.stop()

    # ---- the gate (I/O thread, headers only) ----

    def admit(self, method: str, uri: str, headers: dict[str, str], content_length: int,
              peer: Any) -> Admission:
        parts = segments(uri.split("?", 1)[0])
        s = self.settings
        limit = s.max_body
        user = None
        try:
            # a CORS preflight never carries credentials (RabbitMQ's is_authorized passes
            # OPTIONS); an allowed origin's is answered by _respond, never by the API
            origin = headers.get("ORIGIN")
            preflight = method == "OPTIONS" and bool(origin) and origin in s.cors_origins
            if parts[:1] == ["api"] and not preflight:
                user = self.authenticate(headers.get("AUTHORIZATION", ""), peer)
                if parts == ["api", "definitions"] and method == "POST":
                    limit = s.max_definitions_body
                if method == "POST" and not _json_ctype(headers.get("CONTENT_TYPE", "")):
                    raise HTTPError(415, "unsupported_media_type",
                                    "a POST must have Content-Type: application/json")
            elif parts[:1] == ["metrics"] and self._metrics_guarded(parts):
                user = self.authenticate(headers.get("AUTHORIZATION", ""), peer)
            if content_length > limit:
                raise HTTPError(413, "payload_too_large",
                                f"request body larger than {limit} bytes")
        except HTTPError as e:
            return Admission(None, e, 0)
        return Admission(user, None, limit)

    def _metrics_guarded(self, parts: list[str]) -> bool:
        mode = self.settings.metrics_auth
        return mode == "all" or (mode == "per-object" and parts != ["metrics"])

    def authenticate(self, header: str, peer: Any) -> User:
        """The basic-auth user, who must hold a management tag; else 401."""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            raise _LOGIN_FAILED
        try:
            name, sep, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise _LOGIN_FAILED from None
        if not sep:
            raise _LOGIN_FAILED
        user, reason = self.ctx.broker.users.authenticate(name, password, peer)
        if user is None:
            log.warning("HTTP access denied: %s", reason,
                        extra={"peer": f"{peer[0]}:{peer[1]}", "user": name})
            raise _LOGIN_FAILED
        if not has_tag(user, *MANAGEMENT_TAGS):
            raise HTTPError(401, "not_authorised", "Not management user")
        return user

    # ---- the application (worker threads) ----

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        extra: list[tuple[str, str]] = self._cors(environ)
        try:
            refusal = environ.get("syncmq.refusal")
            if refusal is not None:
                raise refusal
            status, ctype, body, headers = self._respond(environ)
        except HTTPError as e:
            status, ctype = e.status, "application/json"
            body = json.dumps({"error": e.error, "reason": e.reason}).encode()
            headers = []
            if e.status == 401 and not environ.get("HTTP_X_REQUESTED_WITH"):
                headers.append(("WWW-Authenticate", REALM))
        except Exception:
            log.exception("management request failed",
                          extra={"path": environ.get("REQUEST_URI", "")})
            status, ctype, headers = 500, "application/json", []
            body = json.dumps({"error": "internal_error",
                               "reason": "internal error (see the broker's log)"}).encode()
        out = [("Cache-Control", "no-cache"), *headers, *extra]
        if ctype:
            out.append(("Content-Type", ctype))
        if environ["REQUEST_METHOD"] != "HEAD" or not any(
                k == "Content-Length" for k, _ in out):
            out.append(("Content-Length", str(len(body))))
        start_response(f"{status} {STATUS_TEXT.get(status, 'Error')}", out)
        return [b""] if environ["REQUEST_METHOD"] == "HEAD" else [body]

    def _cors(self, environ: dict) -> list[tuple[str, str]]:
        origin = environ.get("HTTP_ORIGIN")
        if not origin or origin not in self.settings.cors_origins:
            return []
        return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin"),
                ("Access-Control-Allow-Credentials", "true")]

    def _respond(self, environ: dict) -> tuple[int, str | None, bytes, list]:
        method = environ["REQUEST_METHOD"]
        uri = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
        path, _, query = uri.partition("?")
        parts = segments(path)
        view = metrics.view_of(parts)
        if view is not None and method in ("GET", "HEAD"):
            return 200, metrics.CONTENT_TYPE, self.scrapes.get(view, query), []
        if method in ("GET", "HEAD") and (not parts or parts[0] in ("static", "index.html")):
            asset = self.assets.get(path)
            if asset is not None:
                return self._asset(environ, asset)
        if method == "OPTIONS" and self._cors(environ):
            return 204, None, b"", [
                ("Access-Control-Allow-Methods", "GET, PUT, POST, DELETE"),
                ("Access-Control-Allow-Headers", "Authorization, Content-Type"),
                ("Access-Control-Max-Age", "600")]
        if not parts or parts[0] != "api":
            raise HTTPError(404, "Object Not Found", "Not Found")
        req = Request(method=method, parts=[unquote(p) for p in parts[1:]],
                      query=dict(parse_qsl(query)), body=self._body(environ),
                      user=environ["syncmq.user"],
                      headers={k[5:].replace("_", "-").lower(): v
                               for k, v in environ.items() if k.startswith("HTTP_")})
        resp = self.api.handle(req)
        if resp.status == 204 or resp.body is None:
            return resp.status, None, b"", resp.headers
        return resp.status, "application/json", json.dumps(resp.body).encode(), resp.headers

    def _asset(self, environ: dict, asset: ui.Asset) -> tuple[int, str | None, bytes, list]:
        """A dashboard file, with its ETag (304 when the browser has it) and the page's
        security headers."""
        headers = [("ETag", asset.etag), *ui.SECURITY_HEADERS.items()]
        if environ.get("HTTP_IF_NONE_MATCH") == asset.etag:
            return 304, None, b"", headers
        if environ["REQUEST_METHOD"] == "HEAD":
            headers.append(("Content-Length", str(len(asset.data))))
        return 200, asset.content_type, asset.data, headers

    def _body(self, environ: dict) -> Any:
        """The request's JSON body (None when empty); 400 ``not_json`` for anything else."""
        try:
            n = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise bad_request("bad Content-Length") from None
        raw = environ["wsgi.input"].read(n) if n > 0 else b""
        if not raw.strip():
            return None
        try:
            body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
        except (ValueError, RecursionError):
            raise bad_request("not_json") from None
        if not _shallow(body) or (_SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(body)):
            raise bad_request("not_json")
        return body


class MetricsOnly:
    """The Prometheus port's application (``--prometheus-port``): the ``/metrics``
    endpoints of an :class:`App` (its gate, renderings and credentials rule), 404 for every
    other path, answered from the headers."""

    def __init__(self, app: App) -> None:
        self.app = app

    def admit(self, method: str, uri: str, headers: dict[str, str], content_length: int,
              peer: Any) -> Admission:
        if metrics.view_of(segments(uri.split("?", 1)[0])) is None:
            return Admission(None, HTTPError(404, "Object Not Found", "Not Found"), 0)
        return self.app.admit(method, uri, headers, content_length, peer)

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        return self.app(environ, start_response)


def _no_constant(name: str) -> Any:
    raise ValueError(name)  # NaN, Infinity: not JSON


def _finite(text: str) -> float:
    v = float(text)
    if v in (float("inf"), float("-inf")):
        raise ValueError(text)
    return v


# A JSON escape of a UTF-16 surrogate (raw UTF-8 cannot hold one: that is already not_json)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(obj: Any) -> bool:
    """Whether a string (key or value) in ``obj`` holds a lone surrogate (``"\\ud800"``): no
    UTF-8 string can, so no AMQP name, key or body either (RabbitMQ's decoder refuses it);
    accepted, it failed later, half-way through a change or when delivered. Iterative."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, str):
            if _LONE_SURROGATE.search(o):
                return True
        elif isinstance(o, dict):
            stack.extend(o)
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
    return False


def _shallow(obj: Any) -> bool:
    """Whether ``obj`` nests at most :data:`MAX_JSON_DEPTH` containers deep (iterative)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            o = list(o.values())
        elif not isinstance(o, list):
            continue
        if d > MAX_JSON_DEPTH:
            return False
        stack.extend((x, d + 1) for x in o if isinstance(x, (dict, list)))
    return True
