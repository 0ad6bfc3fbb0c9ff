"""Hypothesis settings for the fuzz tests.

Registers and loads the ``ci`` profile: ``max_examples`` from the ``SYNCMQ_FUZZ_EXAMPLES``
environment variable (default 200) and no per-example deadline (CI machines stall).
Run longer locally with e.g. ``SYNCMQ_FUZZ_EXAMPLES=20000 python -m pytest fuzz``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("SYNCMQ_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("SYNCMQ_HYPOTHESIS_PROFILE", "ci"))
