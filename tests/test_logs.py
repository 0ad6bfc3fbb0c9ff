"""The broker's log with --log-format json: every line is one JSON object, and the lines that
operators alert on carry the fields to do it (listeners at start-up; peer, user and vhost on
connection open/close; reply_code on channel and connection errors)."""

from __future__ import annotations

import base64
import contextlib
import json
import urllib.error
import urllib.request

import pika
import pika.exceptions
import pytest
from amqp_helpers import connect


def _http(b, method: str, path: str, auth: str = "guest:guest") -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{b.management_port}{path}", method=method)
    req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_every_line_is_json_with_the_fields_operators_need(broker_factory):
    b = broker_factory()
    # a normal connection with a channel error (404) and a clean close
    with contextlib.closing(connect(b.port)) as conn:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            ch.queue_declare("no-such-queue", passive=True)
    b.wait_for_log("connection closed by client")
    # a connection error (530: unknown vhost)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        connect(b.port, virtual_host="no-such-vhost")
    b.wait_for_log("connection error")
    # a refused AMQP login, a refused HTTP login, a connection closed from the API
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        connect(b.port, credentials=pika.PlainCredentials("guest", "wrong"))
    assert _http(b, "GET", "/api/overview", "guest:wrong") == 401
    conn = connect(b.port)
    try:
        name = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{b.management_port}/api/connections",
            headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}),
            timeout=20).read())[0]["name"]
        assert _http(b, "DELETE", "/api/connections/" + urllib.request.quote(name, safe="")) \
            == 204
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
            while True:
                conn.process_data_events(0.1)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    assert b.stop() == 0
    b.wait_for_log('"stopped"')

    records = []
    for line in b.lines:
        rec = json.loads(line)  # every line, or the test fails here naming it
        assert isinstance(rec, dict), line
        for k in ("time", "level", "name", "message"):
            assert k in rec, (k, line)
        records.append(rec)

    start = next(r for r in records if r["message"].endswith(" started"))
    assert start["version"] and start["data_dir"] == b.data_dir
    assert {li["protocol"] for li in start["listeners"]} == {"amqp", "http"}
    assert start["port"] == b.port and start["management_port"] == b.management_port

    opened = [r for r in records if r["message"] == "connection opened"]
    closed = [r for r in records if r["message"] in ("connection closed by client",
                                                      "client unexpectedly closed TCP connection")]
    assert len(opened) >= 2 and closed
    for r in opened + closed:
        assert r["peer"].startswith("127.0.0.1:") and r["user"] == "guest", r
        assert r["vhost"] == "/", r

    errors = [r for r in records if " error: " in r["message"]]
    assert {r["reply_code"] for r in errors} >= {404, 530}
    for r in errors:
        assert isinstance(r["reply_code"], int) and "peer" in r and "user" in r, r
    chan_err = next(r for r in errors if r["reply_code"] == 404)
    assert chan_err["channel"] == 1 and chan_err["vhost"] == "/"

    forced = [r for r in records if "management API" in r["message"]
              and r.get("reply_code") == 320]
    assert forced and forced[0]["vhost"] == "/" and forced[0]["user"] == "guest"
    refused = [r for r in records if r["level"] == "WARNING" and "user" in r
               and ("login refused" in r["message"] or "HTTP access denied" in r["message"])]
    assert len(refused) == 2
    assert all("wrong" not in json.dumps(r) for r in records)  # never a password


def test_text_format_escapes_control_characters(tmp_path):
    """A user name with a newline (and other control characters) cannot forge a log line in
    --log-format text: the refused login is one line, the characters shown as escapes."""
    import re
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "syncmq.cli", "--port", "0", "--data-dir", str(tmp_path / "d"),
         "--log-format", "text", "--management-port", "-1", "--prometheus-port", "-1"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r" port=(\d+)", line)
            if m and "started" in line:
                port = int(m.group(1))
                break
        forged = "x\n2026-01-01 00:00:00,000 INFO syncmq.connection: connection opened " \
                 "user=admin\r\x1b[2K\u2028"
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            connect(port, credentials=pika.PlainCredentials(forged, "wrong"))
        for line in proc.stderr:
            lines.append(line)
            if "login refused" in line:
                break
    finally:
        proc.terminate()
        lines += proc.stderr.readlines()
        proc.wait(30)
    hits = [line for line in lines if "connection opened" in line]
    assert len(hits) == 1, hits  # the refusal, with the forged text inside it, escaped
    assert "login refused" in hits[0] and "x\\n2026-01-01" in hits[0]
    assert "\\r\\x1b[2K\\u2028" in hits[0]
    assert not any(line.startswith("2026-01-01") for line in lines)


def _text_line(message: str, **fields) -> str:
    """One record through --log-format text's formatter."""
    import logging

    from syncmq.config import log_handler

    record = logging.LogRecord("syncmq.test", logging.INFO, __file__, 1, "%s", (message,),
                               None)
    record.__dict__.update(fields)
    return log_handler("text", None).formatter.format(record)


def _read_text_line(line: str) -> tuple[str, dict]:
    """A reader of text lines as logfmt reads them: the message (quoted, or bare up to the
    first `` key=``), then ``key=value`` fields (quoted values unescaped)."""
    import re

    rest = line.split(": ", 1)[1]
    quoted = r'"((?:[^"\\]|\\.)*)"'
    m = re.match(quoted, rest)
    if m:
        message, rest = m.group(1).replace('\\"', '"').replace("\\\\", "\\"), rest[m.end():]
    else:
        m = re.search(r" [\w.]+=", rest)
        message, rest = (rest[:m.start()], rest[m.start():]) if m else (rest, "")
    fields = {}
    for m in re.finditer(r' ([\w.]+)=(?:' + quoted + r'|(\S*))', rest):
        v = m.group(2)
        fields[m.group(1)] = m.group(3) if v is None else v.replace('\\"', '"')
    return message, fields


@pytest.mark.parametrize("message", [
    "connection opened", "queue 'q' deleted", "login refused user=admin",
    'a "quoted" word', "", " padded ", "ends with key=", "back\\slash"])
def test_text_message_is_quoted_when_it_could_be_read_as_fields(message):
    """--log-format text: a message that contains ``=`` or ``"`` (or needs escapes, or is
    empty or padded) is double-quoted as a field value is, so a reader tells it from the
    fields; a plain one stays bare (spaces and ``'`` are fine in a message)."""
    line = _text_line(message, user="bob", vhost="/")
    assert _read_text_line(line) == (message, {"user": "bob", "vhost": "/"}), line
    plain = "=" not in message and '"' not in message and "\\" not in message \
        and message and message.strip() == message
    assert (": " + message + " user=" in line) == bool(plain), line
