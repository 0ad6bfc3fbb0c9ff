"""TLS listener: amqps with pika, TLS 1.2+ only, client certificates and EXTERNAL."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl

import pika
import pytest

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _name(cn: str):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, issuer_key, issuer_name, key, *, ca=False, san=None):
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
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


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def make_pki(d):
    """A CA, a server certificate for localhost/127.0.0.1 and client certificates for
    guest and nobody, as PEM files in ``d``."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("syncmq test CA", ca_key, _name("syncmq test CA"), ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("localhost", ca_key, ca.subject, srv_key,
                san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    files = {"ca": _write(d / "ca.pem", ca), "cert": _write(d / "server.pem", srv),
             "key": _write(d / "server.key", key=srv_key)}
    for cn in ("guest", "nobody"):
        k = ec.generate_private_key(ec.SECP256R1())
        c = _cert(cn, ca_key, ca.subject, k)
        files[cn] = (_write(d / f"{cn}.pem", c), _write(d / f"{cn}.key", key=k))
    return files


def _tls_broker(broker_factory, pki, *extra):
    b = broker_factory("--tls-port", "0", "--tls-cert", pki["cert"], "--tls-key", pki["key"],
                       "--tls-ca", pki["ca"], *extra)
    line = b.wait_for_log('"tls_port"')
    b.tls_port = json.loads(line)["tls_port"]
    return b


def _params(port, pki, client=None, **kw):
    ctx = ssl.create_default_context(cafile=pki["ca"])
    if client:
        ctx.load_cert_chain(*pki[client])
    return pika.ConnectionParameters("127.0.0.1", port, ssl_options=pika.SSLOptions(ctx, "localhost"),
                                     **kw)


def test_amqps_round_trip_with_large_message(broker_factory, pki):
    b = _tls_broker(broker_factory, pki)
    conn = pika.BlockingConnection(_params(b.tls_port, pki))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    big = bytes(range(256)) * 4096 * 3  # 3 MiB: many frames, partial TLS writes
    ch.basic_publish("", q, b"small")
    ch.basic_publish("", q, big)
    assert ch.basic_get(q, auto_ack=True)[2] == b"small"
    assert ch.basic_get(q, auto_ack=True)[2] == big
    conn.close()
    # the plain listener works at the same time
    plain = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    plain.channel().queue_declare("plain-next-to-tls")
    plain.close()


def test_tls_below_1_2_refused(broker_factory, pki):
    b = _tls_broker(broker_factory, pki)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki["ca"])
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with pytest.warns(DeprecationWarning):
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", b.tls_port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                assert s.recv(10)


def test_garbage_instead_of_tls_handshake_is_closed(broker_factory, pki):
    b = _tls_broker(broker_factory, pki)
    with socket.create_connection(("127.0.0.1", b.tls_port), timeout=10) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01" * 100)
        try:  # an alert, then the broker hangs up (EOF or reset); a timeout fails the test
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
    b.wait_for_log("TLS handshake with")
    # the broker still serves
    conn = pika.BlockingConnection(_params(b.tls_port, pki))
    conn.close()


def test_external_auth_with_client_certificate(broker_factory, pki):
    b = _tls_broker(broker_factory, pki, "--tls-fail-if-no-peer-cert")
    conn = pika.BlockingConnection(_params(b.tls_port, pki, "guest",
                                           credentials=pika.credentials.ExternalCredentials()))
    ch = conn.channel()
    ch.queue_declare("external-ok", exclusive=True)
    conn.close()
    b.wait_for_log('"user": "guest"')
    # a certificate whose CN is no user is refused
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(_params(b.tls_port, pki, "nobody",
                                        credentials=pika.credentials.ExternalCredentials(),
                                        connection_attempts=1))
    b.wait_for_log("certificate CN")


def test_fail_if_no_peer_cert_refuses_clients_without_one(broker_factory, pki):
    b = _tls_broker(broker_factory, pki, "--tls-fail-if-no-peer-cert")
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(_params(b.tls_port, pki, connection_attempts=1))
    # and with a certificate, PLAIN still works
    conn = pika.BlockingConnection(_params(b.tls_port, pki, "guest"))
    conn.close()


def test_tls_options_need_cert_and_key(tmp_path):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "syncmq.cli", "--port", "0", "--data-dir",
                        str(tmp_path), "--tls-port", "0"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and "--tls-port" in p.stderr
