"""rabbitmq-c's command-line tools (Debian ``amqp-tools``) against syncmq."""

from __future__ import annotations

import shutil
import subprocess

import pytest

TOOLS = ("amqp-declare-queue", "amqp-publish", "amqp-consume", "amqp-get", "amqp-delete-queue")
pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="rabbitmq-c's amqp-tools are not installed (CI installs the Debian package)")


@pytest.fixture
def amqp_url(broker):
    return f"amqp://guest:guest@127.0.0.1:{broker.port}"


def tool(name, url, *args, stdin=None, check=True):
    r = subprocess.run([name, "-u", url, *args], input=stdin, capture_output=True, text=True,
                       timeout=30)
    if check:
        assert r.returncode == 0, f"{name} {args}: rc={r.returncode} {r.stdout}{r.stderr}"
    return r


def test_declare_publish_get(amqp_url, unique):
    assert tool("amqp-declare-queue", amqp_url, "-q", unique).stdout.strip() == unique
    tool("amqp-publish", amqp_url, "-r", unique, "-b", "hello", "-C", "text/plain",
         "-H", "k: v")
    tool("amqp-publish", amqp_url, "-r", unique, "-b", "world", "-p")
    assert tool("amqp-get", amqp_url, "-q", unique).stdout == "hello"
    assert tool("amqp-get", amqp_url, "-q", unique).stdout == "world"
    empty = tool("amqp-get", amqp_url, "-q", unique, check=False)
    assert empty.returncode == 2 and empty.stdout == ""  # basic.get-empty
    assert tool("amqp-delete-queue", amqp_url, "-q", unique).stdout.strip() == "0"


def test_get_missing_queue_is_404(amqp_url, unique):
    r = tool("amqp-get", amqp_url, "-q", unique + "-missing", check=False)
    assert r.returncode == 1
    assert (f"server channel error 404, message: NOT_FOUND - no queue '{unique}-missing' "
            "in vhost '/'") in r.stderr


def test_server_named_queue(amqp_url):
    name = tool("amqp-declare-queue", amqp_url, "-q", "").stdout.strip()
    assert name.startswith("amq.gen-")
    tool("amqp-delete-queue", amqp_url, "-q", name)


def test_line_buffered_publish_and_consume_in_order(amqp_url, unique):
    tool("amqp-declare-queue", amqp_url, "-q", unique, "-d")
    lines = [f"line {i}" for i in range(10)]
    tool("amqp-publish", amqp_url, "-r", unique, "-l", stdin="\n".join(lines) + "\n")
    # amqp-consume runs the command once per message with the body on its stdin; -c stops it
    # after that many (acking each after the command exits), -p sets basic.qos
    # (each body keeps its newline)
    r = tool("amqp-consume", amqp_url, "-q", unique, "-c", "10", "-p", "3", "--", "cat")
    assert r.stdout.splitlines() == lines
    assert tool("amqp-get", amqp_url, "-q", unique, check=False).returncode == 2
    tool("amqp-delete-queue", amqp_url, "-q", unique)


def test_consume_binds_to_exchange(amqp_url, unique):
    # amqp-consume -e/-r declares a server-named exclusive queue and binds it; publish once the
    # consumer is ready (it is once the queue exists, so poll the consumer's output instead of
    # sleeping: the first message published after the bind ends the wait)
    p = subprocess.Popen(["amqp-consume", "-u", amqp_url, "-e", "amq.topic", "-r",
                          f"{unique}.#", "-c", "2", "-A", "--", "cat"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = ""
        for i in range(100):  # bounded: at most 100 tries of 0.1 s
            tool("amqp-publish", amqp_url, "-e", "amq.topic", "-r", f"{unique}.a.b",
                 "-b", f"m{i};")
            try:
                out, err = p.communicate(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            pytest.fail("amqp-consume received nothing")
        assert p.returncode == 0, err
        got = out.split(";")[:2]
        assert len(got) == 2 and all(g.startswith("m") for g in got)
        assert int(got[1][1:]) == int(got[0][1:]) + 1  # consecutive: in order, none lost
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_delete_if_empty_refused(amqp_url, unique):
    tool("amqp-declare-queue", amqp_url, "-q", unique)
    tool("amqp-publish", amqp_url, "-r", unique, "-b", "x")
    r = tool("amqp-delete-queue", amqp_url, "-q", unique, "--if-empty", check=False)
    assert r.returncode == 1
    assert "406" in r.stderr and "not empty" in r.stderr
    assert tool("amqp-delete-queue", amqp_url, "-q", unique).stdout.strip() == "1"
