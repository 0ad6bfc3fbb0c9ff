"""The EXTERNAL login name of a TLS client certificate, derived as RabbitMQ derives it.

RabbitMQ's ``ssl_cert_login_from`` (syncmq: ``--ssl-cert-login-from``):

- ``common_name``: the subject's CN; a subject with several CNs gives them all joined with
  ``,`` in subject order (``O=x, CN=app, CN=admin`` -> ``app,admin``), never one of them;
- ``distinguished_name``: the whole subject as an RFC 4514 string, RDNs in reverse order
  joined with ``,``, the values of a multi-valued RDN joined with ``+``, short attribute names
  (``CN``, ``O``, ``OU``, ``C``, ...), values escaped: a leading space or ``#``, a trailing
  space and ``" + , ; < > \\`` get a backslash; every byte of the value's UTF-8 below 32 or
  from 126 up is written ``\\XX`` (upper-case hex).

The input is ``ssl.SSLSocket.getpeercert()``'s dict (``subject``: a tuple of RDNs, each a
tuple of ``(long name, value)``). An attribute RabbitMQ has no short name for keeps the name
OpenSSL gives it (RabbitMQ would print its dotted OID).
"""

from __future__ import annotations

MODES = ("common_name", "distinguished_name")

_SHORT = {
    "surname": "SN", "givenName": "GIVENNAME", "initials": "INITIALS",
    "generationQualifier": "GENERATIONQUALIFIER", "commonName": "CN", "localityName": "L",
    "stateOrProvinceName": "ST", "organizationName": "O", "organizationalUnitName": "OU",
    "title": "TITLE", "countryName": "C", "serialNumber": "SERIALNUMBER",
    "pseudonym": "PSEUDONYM", "domainComponent": "DC", "emailAddress": "EMAILADDRESS",
    "streetAddress": "STREET", "userId": "UID",
}
_SPECIAL = frozenset(b'"+,;<>\\')


def escape_rdn_value(value: str) -> str:
    """RFC 4514 escaping as rabbit_cert_info does it (byte-wise on the UTF-8 encoding)."""
    raw = value.encode("utf-8", "surrogateescape")
    out = []
    last = len(raw) - 1
    for i, b in enumerate(raw):
        if (i == 0 and b in (0x20, 0x23)) or (i == last and b == 0x20) or b in _SPECIAL:
            out.append("\\" + chr(b))
        elif b < 32 or b >= 126:
            out.append(f"\\{b:02X}")
        else:
            out.append(chr(b))
    return "".join(out)


def distinguished_name(cert: dict) -> str:
    rdns = cert.get("subject", ())
    return ",".join(
        "+".join(f"{_SHORT.get(k, k)}={escape_rdn_value(v)}" for k, v in rdn)
        for rdn in reversed(rdns))


def common_names(cert: dict) -> list[str]:
    return [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]


def login_name(cert: dict, mode: str = "common_name") -> str | None:
    """The user name ``cert`` logs in as under ``mode``; None when it has none (no CN)."""
    if mode == "distinguished_name":
        return distinguished_name(cert)
    cns = common_names(cert)
    return ",".join(cns) if cns else None
