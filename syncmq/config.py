"""Configuration: one option set from defaults < INI file < SYNCMQ_* env vars < flags.

The only importer of configargparse and python-json-logger (with ``syncmq.cli``).
"""

from __future__ import annotations

import json
import logging
import sys

import configargparse

from . import __version__
from .options import OPTIONS, ServerConfig, make_config, parse_size, plain

__all__ = ["build_parser", "parse_size", "server_config", "setup_logging"]

def build_parser() -> configargparse.ArgumentParser:
    """The command line, from ``syncmq.options.OPTIONS`` (one argument per row)."""
    p = configargparse.ArgumentParser(
        prog="syncmq",
        description="syncmq: an AMQP 0-9-1 broker in pure Python",
        config_file_parser_class=configargparse.IniConfigParser(["syncmq"], split_ml_text_to_list=False),
        auto_env_var_prefix="SYNCMQ_",
        args_for_setting_config_path=["-c", "--config"],
        config_arg_help_message=plain(OPTIONS[0].doc),
    )
    for o in OPTIONS:
        if o.name == "config":
            continue  # configargparse's own (args_for_setting_config_path)
        help_text = configargparse.SUPPRESS if o.hidden else plain(o.doc) + (
            "" if o.flag or o.default is None else " (default %(default)s)")
        if o.flag:
            p.add_argument(f"--{o.name}", action="store_true", help=help_text)
        elif o.multiple:
            p.add_argument(f"--{o.name}", action="append", type=o.type, default=[],
                           metavar=o.metavar, help=help_text)
        else:
            p.add_argument(f"--{o.name}", type=o.type, default=o.default, choices=o.choices,
                           metavar=None if o.choices else o.metavar, help=help_text)
    p.add_argument("--version", action="version", version=f"syncmq {__version__}")
    return p


def server_config(args) -> ServerConfig:
    """Parsed arguments -> a validated :class:`ServerConfig`; raises ValueError naming the
    option."""
    return make_config({o.field: getattr(args, o.field) for o in OPTIONS if not o.cli_only})


# Text log lines: control characters (C0, DEL, C1, Unicode line/paragraph separators) and the
# backslash are written as escapes, so a value a client chose (a user name, a queue name, a
# client property) can never end a line and forge the next one. JSON lines escape by format.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
                 ord("\\"): "\\\\", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def escape_log_value(value: object) -> str:
    return str(value).translate(_ESCAPES)


_BARE_UNSAFE = frozenset(' "=\'')


def format_log_field(value: object) -> str:
    """A ``key=value`` field's value in a text line: numbers, booleans (``true``/``false``)
    and ``null`` as JSON writes them, dicts and lists as compact JSON (ASCII, so no value
    can end the line), a string bare when it is plain, else in double quotes with ``"`` and
    ``\\`` and control characters escaped."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        if isinstance(value, (set, frozenset)):
            value = sorted(value, key=str)
        return json.dumps(value, default=str, separators=(",", ":"))
    s = str(value)
    escaped = escape_log_value(s)
    if s and escaped == s and not _BARE_UNSAFE.intersection(s):
        return s
    return '"' + escaped.replace('"', '\\"') + '"'


def format_log_message(text: str) -> str:
    """The message of a text line, before its ``key=value`` fields: bare when a reader can
    tell where it ends and read it as is (the fields start at the first `` key=``: a message
    without ``=``, ``"``, a backslash or a control character, not empty, not padded with
    spaces; spaces and ``'`` are fine, unlike in a bare field value), else double-quoted
    with escapes exactly as :func:`format_log_field` quotes a string, as logfmt does.
    ``login refused user=admin`` as a bare message would read as a message and a field."""
    escaped = escape_log_value(text)
    if (escaped == text and text and "=" not in text and '"' not in text
            and text.strip(" ") == text):
        return text
    return '"' + escaped.replace('"', '\\"') + '"'


_RECORD_KEYS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime"}


class _TextFormatter(logging.Formatter):
    """``time LEVEL name: message key=value ...``, message and values escaped, the message
    quoted when it could be taken for fields (:func:`format_log_message`; a traceback, which
    is ours, keeps its lines)."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.msg, record.args
        record.msg, record.args = format_log_message(record.getMessage()), None
        try:
            base = super().format(record)
        finally:
            record.msg, record.args = saved
        extras = [f"{escape_log_value(k)}={format_log_field(v)}"
                  for k, v in record.__dict__.items() if k not in _RECORD_KEYS]
        if extras:
            base += " " + " ".join(extras)
        return base


def resolve_log_format(fmt: str, path: str | None) -> str:
    """``auto``: text when the lines go to a terminal (stderr is a tty, no ``--log-file``),
    JSON otherwise (a pipe, a file, a supervisor's or journald's capture)."""
    if fmt != "auto":
        return fmt
    try:
        tty = path is None and sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stderr
        tty = False
    return "text" if tty else "json"


def log_handler(fmt: str, path: str | None) -> logging.Handler:
    """A handler writing ``fmt`` (json, text or auto) lines to ``path`` or stderr."""
    fmt = resolve_log_format(fmt, path)
    if path:
        handler: logging.Handler = logging.handlers.WatchedFileHandler(path)
    else:
        handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        try:
            from pythonjsonlogger.json import JsonFormatter
        except ImportError:  # python-json-logger < 3
            from pythonjsonlogger.jsonlogger import JsonFormatter
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "asctime": "time"},
        ))
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def setup_logging(level: str, fmt: str, path: str | None) -> logging.Handler:
    """Configure the root logger (the console script only); returns the handler (reopened on
    SIGHUP when a file)."""
    handler = log_handler(fmt, path)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


import logging.handlers  # noqa: E402  (WatchedFileHandler)
