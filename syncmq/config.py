"""Configuration: one option set from defaults < INI file < SYNCMQ_* env vars < flags.

The only importer of configargparse and python-json-logger (with ``syncmq.cli``).
"""

from __future__ import annotations

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


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {
            k: v for k, v in record.__dict__.items()
            if k not in logging.LogRecord("", 0, "", 0, "", (), None).__dict__
            and k not in ("message", "asctime")
        }
        if extras:
            base += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return base


def log_handler(fmt: str, path: str | None) -> logging.Handler:
    """A handler writing ``fmt`` (json or text) lines to ``path`` or stderr."""
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
