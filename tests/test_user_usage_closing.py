"""A user's channel count is never taken after its connection gave its counts back (issue #16).

A reply held for the journal (``durable_reply``: a durable queue.declare) parks the methods
that came after it in the same read; if the connection is closed by the server meanwhile
(management DELETE /api/connections, shutdown), the parked methods resume in state
``closing``, after ``Session.release`` gave back the user's counts. RabbitMQ drops every
non-channel-0 method once it sent connection.close (rabbit_reader ``?IS_STOPPING``); a
parked channel.open that was handled anyway took a count for user ``max-channels`` that
nothing gave back, so the user lost a channel for the broker's life.

The fsync gate (tests/test_fsync_gate.py) holds the durable reply: no sleep for timing.
"""

from __future__ import annotations

import os
import urllib.parse

from amqp_raw import FRAME_METHOD, connect, encode_frame
from brokerproc import BrokerProcess
from test_fsync_gate import Gate, pytestmark  # noqa: F401  (Linux /proc/locks only)
from test_management import call

from syncmq.wire import _spec


def test_parked_channel_open_after_server_close_takes_no_count(tmp_path):
    gate = Gate(str(tmp_path / "fsync-gate"))
    env = dict(os.environ, SYNCMQ_TEST_FSYNC_GATE=gate.path)
    b = BrokerProcess(str(tmp_path / "data"), env=env).start()
    try:
        assert call(b, "PUT", "/api/user-limits/guest/max-channels", {"value": 2})[0] == 204
        c = connect(b.port)
        c.open_channel(1)
        (conn,) = [x["name"] for x in call(b, "GET", "/api/connections")[1]]
        gate.hold()
        # one read: the durable declare is held for its fsync, channel.open 2 parked behind
        c.send(encode_frame(FRAME_METHOD, 1, _spec.Queue.Declare(queue="held",
                                                                 durable=True).encode())
               + encode_frame(FRAME_METHOD, 2, _spec.Channel.Open().encode()))
        gate.wait_for_journal(c, _spec.Queue.DeclareOk)
        path = "/api/connections/" + urllib.parse.quote(conn, safe="")
        assert call(b, "DELETE", path)[0] == 204
        assert c.expect_close()[0] == 320  # the server closed it: counts given back
        gate.release()  # the parked channel.open resumes in state closing
        c.send_close_ok()  # handled after the parked methods (same worker, in order)
        c.expect_eof()
        c.close()
        # guest may open its two channels again: nothing of the closed connection counts
        c2 = connect(b.port)
        c2.open_channel(1)
        c2.open_channel(2)
        c2.close()
    finally:
        gate.release()
        os.close(gate.fd)
        rc = b.stop()
    assert rc == 0, b.log_tail()
    assert not b.tracebacks(), "\n".join(b.tracebacks())
