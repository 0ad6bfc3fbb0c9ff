"""docs/testing.md's examples run as tests (Celery worker included), and the page shows
them as they are in examples/testing/. ``python tests/test_testing_docs.py --write`` puts the
files' current text into the page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_args import plugin_args

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "testing.md"
EXAMPLES = ROOT / "examples" / "testing"
MARK = re.compile(r"<!-- example: (\S+) -->\n(```python\n.*?```\n)?", re.DOTALL)


def render(text: str) -> str:
    """The page with each ``<!-- example: PATH -->`` followed by PATH's text in a block."""
    def block(m: re.Match) -> str:
        code = (ROOT / m.group(1)).read_text()
        return f"<!-- example: {m.group(1)} -->\n```python\n{code}```\n"
    return MARK.sub(block, text)


def test_page_shows_every_example_as_it_is() -> None:
    text = DOC.read_text()
    shown = {m.group(1) for m in MARK.finditer(text)}
    assert shown == {f"examples/testing/{p.name}" for p in EXAMPLES.glob("*.py")}
    assert render(text) == text, "stale: run python tests/test_testing_docs.py --write"


def test_examples_pass() -> None:
    for module in ("pika", "kombu", "celery", "aio_pika", "flask"):
        pytest.importorskip(module, reason="pip install -e '.[test,interop]'")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    plugin = plugin_args(env, cwd=str(EXAMPLES))
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin,
         "--rootdir", str(EXAMPLES), "-c", os.devnull, str(EXAMPLES)],
        capture_output=True, text=True, cwd=EXAMPLES, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    sources = "".join(f.read_text() for f in EXAMPLES.glob("test_*.py"))
    n = len(re.findall(r"^def test_", sources, re.MULTILINE))
    assert f"{n} passed" in p.stdout, p.stdout[-2000:]


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    DOC.write_text(render(DOC.read_text()))
