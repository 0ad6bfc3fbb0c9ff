"""Options are declared once (``syncmq.options.OPTIONS``): the parser, the config object,
``syncmq.Server``'s keywords and README's table all come from it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from syncmq import options
from syncmq.config import build_parser, server_config

ROOT = Path(__file__).resolve().parent.parent


def test_readme_table_is_current() -> None:
    p = subprocess.run([sys.executable, "-m", "syncmq.options", "--check", "README.md"],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr


def test_check_fails_on_a_stale_table(tmp_path: Path) -> None:
    stale = tmp_path / "README.md"
    stale.write_text((ROOT / "README.md").read_text().replace("address to listen on",
                                                              "where to listen"))
    p = subprocess.run([sys.executable, "-m", "syncmq.options", "--check", str(stale)],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 1 and "stale" in p.stderr
    subprocess.run([sys.executable, "-m", "syncmq.options", "--write", str(stale)], check=True,
                   cwd=ROOT)
    assert stale.read_text() == (ROOT / "README.md").read_text()


def test_every_row_is_a_flag_a_field_and_a_readme_line() -> None:
    parser_dests = {a.dest for a in build_parser()._actions}
    fields = {f.name for f in dataclasses.fields(options.ServerConfig)}
    table = options.markdown_table()
    for o in options.OPTIONS:
        assert o.field in parser_dests or o.name == "config", o.name
        assert (o.field in fields) != o.cli_only, o.name
        assert (f"`--{o.name}" in table) != o.hidden, o.name


def test_help_renders_every_option() -> None:
    """argparse expands ``%`` in help texts: a ``%`` in a row's doc broke ``--help`` (and
    every tool that reads it, e.g. bench/instr_per_msg.py) with a TypeError."""
    text = build_parser().format_help()
    for o in options.OPTIONS:
        assert o.hidden or f"--{o.name}" in text or o.name == "config", o.name


def test_parser_defaults_equal_config_defaults() -> None:
    """The CLI with no flags and ServerConfig() with no arguments are the same broker."""
    assert server_config(build_parser().parse_args([])) == options.make_config({})


def test_make_config_takes_cli_strings_or_values() -> None:
    c = options.make_config({"max_message_size": "1MiB", "port": "0", "heartbeat": 5,
                             "memory_high_watermark": "64MiB", "no_management": True})
    assert (c.max_message_size, c.port, c.heartbeat) == (1 << 20, 0, 5)
    assert c.memory_high_watermark == 64 << 20 and c.management_port is None
    assert options.make_config({"memory_high_watermark": 1000}).memory_high_watermark == 1000
    assert options.make_config({}).queue_flow_high_bytes == 256 << 20
    assert options.make_config({"queue_flow_high_bytes": "4MiB"}).queue_flow_high_bytes == 4 << 20


@pytest.mark.parametrize("values,named", [
    ({"port": 70000}, "--port"),
    ({"frame_max": 100}, "--frame-max"),
    ({"log_format": "xml"}, "--log-format"),
    ({"max_message_size": "big"}, "--max-message-size"),
    ({"queue_flow_high_bytes": "lots"}, "--queue-flow-high-bytes"),
    ({"tls_port": 0}, "--tls-port"),
    ({"no_management": "yes"}, "--no-management"),
])
def test_bad_values_name_the_option(values, named) -> None:
    with pytest.raises(ValueError, match=named):
        options.make_config(values)


def test_unknown_and_cli_only_names_are_refused() -> None:
    for name in ("prot", "daemonize", "pid_file", "config"):
        with pytest.raises(TypeError, match=name):
            options.make_config({name: 1})


def test_server_properties_key_longer_than_a_table_key_is_refused_at_start() -> None:
    """A field-table key is a shortstr: a longer one cannot be sent in connection.start, so
    a broker started with it would fail every client's handshake (541); it is refused when
    the option is read instead, by the CLI and by ``syncmq.Server``."""
    from syncmq.embedded import Server

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--server-properties", "k" * 256 + "=v"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--server-properties", "é" * 128 + "=v"])  # 256 octets
    with pytest.raises(ValueError):
        Server(server_properties={"k" * 256: "v"})
    ok = build_parser().parse_args(["--server-properties", "k" * 255 + "=v"])
    assert server_config(ok).server_properties == {"k" * 255: "v"}
