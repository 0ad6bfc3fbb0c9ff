"""``-p syncmq.testing.plugin`` for an inner pytest run, unless that run loads the plugin
from an installed ``pytest11`` entry point anyway (then ``-p`` would register it twice).
Decided in the inner run's environment (its PYTHONPATH may reveal an entry point the outer
process does not see, e.g. a checkout's ``syncmq.egg-info``)."""

from __future__ import annotations

import subprocess
import sys

_PROBE = ("from importlib.metadata import entry_points as e; "
          "print(any(p.value == 'syncmq.testing.plugin' for p in e(group='pytest11')))")


def plugin_args(env: dict | None = None, cwd: str | None = None) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=cwd, text=True,
                         capture_output=True, check=True, timeout=60).stdout
    return [] if out.strip() == "True" else ["-p", "syncmq.testing.plugin"]
