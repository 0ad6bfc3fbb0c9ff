"""TLS test helpers: a throw-away CA, server and client certificates (cryptography), a
broker with a TLS listener, and pika parameters for it. Used by test_tls.py and
test_auth_edges.py (importable as ``tls_helpers``)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import pathlib
import ssl

import pika
import pytest

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _name(cn: str):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer_key, issuer_name, key, *, ca=False, san=None):
    """``subject``: a CN, or an ``x509.Name`` as it is."""
    now = datetime.datetime.now(datetime.UTC)
    name = subject if isinstance(subject, x509.Name) else _name(subject)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path, cert=None, key=None):
    data = b""
    if cert is not None:
        data += cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    path.write_bytes(data)
    return str(path)


def make_pki(d):
    """The CA, a server certificate for localhost/127.0.0.1, client certificates for
    ``guest`` and ``nobody``, as PEM files in directory ``d``; a dict of file names (and the
    CA's key and certificate)."""
    d = pathlib.Path(d)
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("syncmq test CA", ca_key, _name("syncmq test CA"), ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("localhost", ca_key, ca.subject, srv_key,
                san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    files = {"ca_key": ca_key, "ca_cert": ca, "dir": d, "ca": _write(d / "ca.pem", ca), "cert": _write(d / "server.pem", srv),
             "key": _write(d / "server.key", key=srv_key)}
    for cn in ("guest", "nobody"):
        k = ec.generate_private_key(ec.SECP256R1())
        c = _cert(cn, ca_key, ca.subject, k)
        files[cn] = (_write(d / f"{cn}.pem", c), _write(d / f"{cn}.key", key=k))
    return files


def tls_broker(broker_factory, pki, *extra):
    b = broker_factory("--tls-port", "0", "--tls-cert", pki["cert"], "--tls-key", pki["key"],
                       "--tls-ca", pki["ca"], *extra)
    line = b.wait_for_log('"tls_port"')
    b.tls_port = json.loads(line)["tls_port"]
    return b


def tls_params(port, pki, client=None, **kw):
    ctx = ssl.create_default_context(cafile=pki["ca"])
    if client:
        ctx.load_cert_chain(*pki[client])
    return pika.ConnectionParameters("127.0.0.1", port, ssl_options=pika.SSLOptions(ctx, "localhost"),
                                     **kw)




def client_cert(pki, tag: str, subject) -> tuple[str, str]:
    """Files (cert, key) of a client certificate for ``subject`` signed by the test CA."""
    k = ec.generate_private_key(ec.SECP256R1())
    c = _cert(subject, pki["ca_key"], pki["ca_cert"].subject, k)
    d = pki["dir"]
    return _write(d / f"{tag}.pem", c), _write(d / f"{tag}.key", key=k)
