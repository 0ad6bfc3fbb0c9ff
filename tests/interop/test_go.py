"""RabbitMQ's Go client (amqp091-go) against syncmq: ``tests/interop/go`` is built once per
session, offline, against Debian's packaged client, and each scenario runs it once."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
GO_SRC = os.path.join(HERE, "go")
GOPATH = "/usr/share/gocode"
CLIENT = os.path.join(GOPATH, "src", "github.com", "rabbitmq", "amqp091-go")

SCENARIOS = ["basic", "get_nack", "qos", "confirms", "tx", "exchange_types", "errors",
             "cancel_notify", "exclusive"]


@pytest.fixture(scope="session")
def go_client(tmp_path_factory) -> str:
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed (CI installs golang-go)")
    if not os.path.isdir(CLIENT):
        pytest.skip(f"amqp091-go is not installed at {CLIENT} (CI installs "
                    "golang-github-rabbitmq-amqp091-go-dev)")
    out = str(tmp_path_factory.mktemp("go-interop") / "interop")
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOFLAGS="",
               GOCACHE=os.environ.get("GOCACHE") or os.path.join(os.path.dirname(out), "cache"))
    r = subprocess.run([go, "build", "-o", out, "."], cwd=GO_SRC, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"go build failed:\n{r.stdout}{r.stderr}"
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_go_scenario(go_client, broker, unique, scenario):
    uri = f"amqp://guest:guest@127.0.0.1:{broker.port}/"
    r = subprocess.run([go_client, "-uri", uri, "-scenario", scenario, "-prefix", unique],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{scenario}: {r.stdout}{r.stderr}\nbroker:\n{broker.log_tail()}"
    assert r.stdout.strip() == f"OK {scenario}"
