"""Differential suite: the scripted pika sessions of ``scenarios.py`` run against syncmq and
against a private RabbitMQ node started for the test session; their transcripts (methods,
reply codes and texts, message order, flags, properties, headers) must be equal.

A scenario in ``scenarios.KNOWN_DIFFERENCES`` is a documented difference (see
docs/compatibility.md): it is expected to differ (strict xfail), so the day syncmq matches
RabbitMQ there the test says so and the entry must go.
"""

from __future__ import annotations

import os
import pprint

import pytest

pytest.importorskip("pika", reason="pika is not installed")
import scenarios  # noqa: E402  (tests/interop is on sys.path)


def _params():
    for name in scenarios.SCENARIOS:
        marks = []
        if name in scenarios.KNOWN_DIFFERENCES:
            marks.append(pytest.mark.xfail(strict=True,
                                           reason=scenarios.KNOWN_DIFFERENCES[name]))
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_params()))
def test_same_transcript(rabbitmq, broker, name):
    prefix = f"diff-{os.urandom(4).hex()}"
    expected = scenarios.run(rabbitmq.port, prefix, name)
    got = scenarios.run(broker.port, prefix, name)
    assert got == expected, (
        f"{name}: syncmq and RabbitMQ differ\n--- RabbitMQ\n{pprint.pformat(expected)}\n"
        f"--- syncmq\n{pprint.pformat(got)}")
