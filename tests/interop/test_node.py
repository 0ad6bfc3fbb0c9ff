"""Node's amqplib against syncmq: ``tests/interop/node/interop.js`` runs one scenario per
process (``npm ci`` in that directory installs amqplib from the committed lock file)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")
SCENARIOS = ["basic", "get_nack", "qos", "confirms", "exchange_types", "errors",
             "cancel_notify", "exclusive", "update_secret", "callback_api"]

NODE = shutil.which("node") or shutil.which("nodejs")
pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed (CI installs nodejs)"),
    pytest.mark.skipif(
        not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "amqplib")),
        reason="amqplib is not installed: run `npm ci` in tests/interop/node (CI does)"),
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_node_scenario(broker, unique, scenario):
    url = f"amqp://guest:guest@127.0.0.1:{broker.port}/"
    r = subprocess.run([NODE, "interop.js", url, scenario, unique], cwd=NODE_DIR,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{scenario}: {r.stdout}{r.stderr}\nbroker:\n{broker.log_tail()}"
    assert r.stdout.strip() == f"OK {scenario}"
