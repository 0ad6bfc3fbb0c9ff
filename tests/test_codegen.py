"""The generated ``syncmq/wire/_spec.py`` is up to date and its ids come from the XML spec."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from syncmq.wire import _spec

ROOT = Path(__file__).resolve().parent.parent
CODEGEN = ROOT / "spec" / "codegen.py"
XML = ROOT / "spec" / "amqp0-9-1.extended.xml"


def test_generated_module_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(CODEGEN), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


def test_check_fails_on_stale_output(tmp_path: Path) -> None:
    stale = tmp_path / "_spec.py"
    stale.write_text((ROOT / "syncmq" / "wire" / "_spec.py").read_text() + "# edited\n")
    result = subprocess.run(
        [sys.executable, str(CODEGEN), "--check", "--output", str(stale)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 1


def test_generation_is_deterministic(tmp_path: Path) -> None:
    outputs = []
    for name in ("a.py", "b.py"):
        out = tmp_path / name
        subprocess.run([sys.executable, str(CODEGEN), "--output", str(out)], check=True, cwd=ROOT)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_ids_come_from_the_spec() -> None:
    root = ET.parse(XML).getroot()
    basic = next(c for c in root.findall("class") if c.get("name") == "basic")
    publish = next(m for m in basic.findall("method") if m.get("name") == "publish")
    class_id, method_id = int(basic.get("index")), int(publish.get("index"))
    assert (class_id, method_id) == (60, 40)
    assert _spec.Basic.Publish.CLASS_ID == class_id
    assert _spec.Basic.Publish.METHOD_ID == method_id
    assert _spec.Basic.Publish.INDEX == class_id << 16 | method_id
    assert _spec.Basic.Publish.HAS_CONTENT and not _spec.Basic.Publish.SYNCHRONOUS
    assert _spec.Queue.Declare.SYNCHRONOUS and not _spec.Queue.Declare.HAS_CONTENT

    methods = [(c, m) for c in root.findall("class") for m in c.findall("method")]
    import importlib.util

    spec = importlib.util.spec_from_file_location("syncmq_codegen", CODEGEN)
    codegen = importlib.util.module_from_spec(spec)
    sys.modules["syncmq_codegen"] = codegen  # dataclasses look their module up there
    spec.loader.exec_module(codegen)
    # plus RabbitMQ's extensions the XML lacks (connection.blocked/unblocked/update-secret)
    assert len(_spec.METHODS) == len(methods) + len(codegen.EXTRA_METHODS)
    assert _spec.Connection.Blocked.INDEX == 10 << 16 | 60
    assert _spec.Connection.Unblocked.INDEX == 10 << 16 | 61
    for c, m in methods:
        cls = _spec.METHODS[int(c.get("index")) << 16 | int(m.get("index"))]
        assert cls.NAME == f"{c.get('name')}.{m.get('name')}"


def test_reply_codes_come_from_the_spec() -> None:
    root = ET.parse(XML).getroot()
    for constant in root.findall("constant"):
        name = constant.get("name").upper().replace("-", "_")
        assert getattr(_spec, name) == int(constant.get("value"))
        if constant.get("class") in ("soft-error", "hard-error"):
            assert _spec.REPLY_NAMES[int(constant.get("value"))] == name
    assert _spec.NOT_FOUND == 404 and _spec.REPLY_NAMES[404] == "NOT_FOUND"
    assert _spec.FRAME_ERROR == 501 and _spec.SYNTAX_ERROR == 502
    assert _spec.NO_ROUTE == 312  # from RabbitMQ's JSON spec, not in the XML
    assert 404 in _spec.SOFT_ERRORS and 501 in _spec.HARD_ERRORS


def test_names_follow_the_spec() -> None:
    assert _spec.Basic.Qos.FIELDS == ("prefetch_size", "prefetch_count", "global_")
    assert _spec.Connection.StartOk.NAME == "connection.start-ok"
    assert _spec.Confirm.Select.FIELDS == ("nowait",)
    assert _spec.Tx.Commit.INDEX == 90 << 16 | 20
    assert _spec.BasicProperties.FIELDS[-1] == "cluster_id"
    assert len(_spec.BasicProperties.FIELDS) == 14
    for cls in _spec.METHODS.values():
        assert cls.__slots__ == cls.FIELDS
        assert len(cls.FIELD_TYPES) == len(cls.FIELDS)
