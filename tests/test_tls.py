"""TLS listener: amqps with pika, TLS 1.2+ only, client certificates and EXTERNAL."""

from __future__ import annotations

import socket
import ssl

import pika
import pytest

pytest.importorskip("cryptography.x509")
from tls_helpers import make_pki, tls_broker, tls_params  # noqa: E402

_params = tls_params  # (test_embedded imports make_pki and _params from here)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_amqps_round_trip_with_large_message(broker_factory, pki):
    b = tls_broker(broker_factory, pki)
    conn = pika.BlockingConnection(tls_params(b.tls_port, pki))
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
    b = tls_broker(broker_factory, pki)
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
    b = tls_broker(broker_factory, pki)
    with socket.create_connection(("127.0.0.1", b.tls_port), timeout=10) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01" * 100)
        try:  # an alert, then the broker hangs up (EOF or reset); a timeout fails the test
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
    b.wait_for_log("TLS handshake with")
    # the broker still serves
    conn = pika.BlockingConnection(tls_params(b.tls_port, pki))
    conn.close()


def test_external_auth_with_client_certificate(broker_factory, pki):
    b = tls_broker(broker_factory, pki, "--tls-fail-if-no-peer-cert")
    conn = pika.BlockingConnection(tls_params(b.tls_port, pki, "guest",
                                           credentials=pika.credentials.ExternalCredentials()))
    ch = conn.channel()
    ch.queue_declare("external-ok", exclusive=True)
    conn.close()
    b.wait_for_log('"user": "guest"')
    # a certificate whose CN is no user is refused
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(tls_params(b.tls_port, pki, "nobody",
                                        credentials=pika.credentials.ExternalCredentials(),
                                        connection_attempts=1))
    b.wait_for_log("from the client certificate")


def test_fail_if_no_peer_cert_refuses_clients_without_one(broker_factory, pki):
    b = tls_broker(broker_factory, pki, "--tls-fail-if-no-peer-cert")
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(tls_params(b.tls_port, pki, connection_attempts=1))
    # and with a certificate, PLAIN still works
    conn = pika.BlockingConnection(tls_params(b.tls_port, pki, "guest"))
    conn.close()


def test_tls_options_need_cert_and_key(tmp_path):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "syncmq.cli", "--port", "0", "--data-dir",
                        str(tmp_path), "--tls-port", "0"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and "--tls-port" in p.stderr
