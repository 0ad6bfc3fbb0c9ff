"""AMQP URIs as RabbitMQ's Erlang client reads them (``amqp_uri``), for shovel endpoints.

- ``amqp://`` with no host is *this node* (RabbitMQ's direct connection): the shovel reaches
  the broker's own listener with its internal credentials (``auth.InternalLogin``); its vhost
  is the URI's path (``amqp:///vh``), ``/`` when there is none, as RabbitMQ's ``amqp_uri``.
  With a user (``amqp://u:p@/vh``) it logs in as that user, as RabbitMQ's direct connection
  does: with the password if one is given, trusted (no password) if not; that user's
  permissions and ``user_id`` rule then apply to what the shovel does.
- ``amqp://user:pass@host:port/vhost?query`` and ``amqps://`` (default ports 5672, 5671;
  user and password ``guest`` when absent, as the Erlang client).
- Query parameters applied: ``heartbeat`` (seconds), ``connection_timeout`` (ms),
  ``channel_max``, ``frame_max``, and for amqps ``cacertfile``, ``certfile``, ``keyfile``,
  ``verify`` (``verify_peer`` | ``verify_none``, the default as in RabbitMQ 3.10's client),
  ``server_name_indication`` (a host name, or ``disable``). Others are accepted and ignored,
  as RabbitMQ ignores unknown ones.

:func:`parse` raises :class:`URIError` with RabbitMQ's reason term (``{unexpected_uri_scheme,
"foo"}``); :func:`redact` is ``amqp_uri:remove_credentials``.
"""

from __future__ import annotations

import ssl
import urllib.parse
from dataclasses import dataclass, field

from ..broker.erlterm import charlist

INTEGER_PARAMS = ("heartbeat", "connection_timeout", "channel_max", "frame_max")


class URIError(ValueError):
    """``str(e)`` is the Erlang reason RabbitMQ prints after ``not a valid URI:``."""


@dataclass
class Endpoint:
    """One parsed URI. ``host`` None: this node (``local``)."""

    uri: str
    scheme: str
    host: str | None
    port: int
    username: str
    password: str
    vhost: str
    query: dict[str, str] = field(default_factory=dict)
    user_given: bool = False  # the URI names a user (``amqp://u@``, ``amqp://u:p@``)
    password_given: bool = False  # ... and a password

    @property
    def local(self) -> bool:
        return self.host is None

    def tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context for amqps (None for amqp)."""
        if self.scheme != "amqps":
            return None
        q = self.query
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if q.get("verify", "verify_none") == "verify_peer":
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.check_hostname = q.get("server_name_indication") != "disable"
            if q.get("cacertfile"):
                ctx.load_verify_locations(q["cacertfile"])
            else:
                ctx.load_default_certs()
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if q.get("certfile"):
            ctx.load_cert_chain(q["certfile"], q.get("keyfile") or None)
        return ctx

    def server_name(self) -> str | None:
        sni = self.query.get("server_name_indication")
        if sni == "disable":
            return None
        return sni or self.host


def _err(reason: str, uri: str) -> URIError:
    return URIError("{" + reason + "," + charlist(uri) + "}")


def parse(uri: str) -> Endpoint:
    try:
        u = urllib.parse.urlsplit(uri)
    except ValueError:
        raise _err("malformed_uri", uri) from None
    if ":" not in uri:  # (Erlang's uri_parser: the scheme is what comes before the ':')
        raise _err("{unable_to_parse_uri,no_scheme}", uri)
    scheme = u.scheme.lower()
    if scheme not in ("amqp", "amqps"):
        raise _err("{unexpected_uri_scheme," + charlist(uri.split(":", 1)[0]) + "}", uri)
    try:
        port = u.port
    except ValueError:
        port_text = u.netloc.rsplit(":", 1)[-1]
        if port_text.isdigit():
            raise _err("{port_out_of_range," + port_text + "}", uri) from None
        raise _err("malformed_uri", uri) from None
    if port is not None and not 0 < port < 65536:
        raise _err("{port_out_of_range," + str(port) + "}", uri)
    query = {k: v for k, v in urllib.parse.parse_qsl(u.query, keep_blank_values=True)}
    for key in INTEGER_PARAMS:
        if key in query and not query[key].lstrip("-").isdigit():
            raise _err("{invalid_amqp_params_parameter," + key + "," + charlist(query[key])
                       + ",{not_an_integer," + charlist(query[key]) + "}}", uri)
    if "verify" in query and query["verify"] not in ("verify_peer", "verify_none"):
        raise _err("{invalid_amqp_params_parameter,verify," + charlist(query["verify"])
                   + "}", uri)
    host = u.hostname or None
    path = u.path[1:] if u.path.startswith("/") else u.path
    vhost = urllib.parse.unquote(path) if path else "/"
    return Endpoint(
        uri=uri, scheme=scheme, host=host,
        port=port or (5671 if scheme == "amqps" else 5672),
        username=urllib.parse.unquote(u.username) if u.username is not None else "guest",
        password=urllib.parse.unquote(u.password) if u.password is not None else "guest",
        vhost=vhost, query=query, user_given=u.username is not None,
        password_given=u.password is not None)


def redact(uri: str) -> str:
    """The URI without its user info (``amqp://u:p@h/v`` -> ``amqp://h/v``), as RabbitMQ
    shows shovel URIs in its status and forward headers."""
    try:
        u = urllib.parse.urlsplit(uri)
    except ValueError:
        return uri
    if "@" not in u.netloc:
        return uri
    return urllib.parse.urlunsplit(u._replace(netloc=u.netloc.rsplit("@", 1)[1]))
