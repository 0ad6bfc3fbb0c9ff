"""Configuration: one option set from defaults < INI file < SYNCMQ_* env vars < flags.

The only importer of configargparse and python-json-logger (with ``syncmq.cli``).
"""

from __future__ import annotations

import logging
import os
import re
import sys

import configargparse

from . import __version__

_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'256MiB' -> 268435456; plain numbers are bytes."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r}")
    n = int(m.group(1))
    unit = (m.group(2) or "B").upper()
    mult = {"B": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[unit[0]]
    return n * mult


def memory_limit(spec: str) -> int:
    """``--memory-high-watermark``: a fraction of total RAM (``0.4``, RabbitMQ's default) or
    an absolute size (``512MiB``, ``1G``, bytes); 0 disables."""
    text = str(spec).strip()
    try:
        fraction = float(text)
    except ValueError:
        return parse_size(text)
    if fraction <= 0:
        return 0
    if fraction > 1:
        return int(fraction)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
    return int(total * fraction)


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise ValueError
    return v


def _port(text: str) -> int:
    v = int(text)
    if not 0 <= v <= 65535:
        raise ValueError
    return v


def server_properties(text: str) -> dict[str, str]:
    """``--server-properties product=RabbitMQ,version=3.10.8``: string overrides of the
    connection.start server properties (any key but ``capabilities``, which is the feature
    table clients act on and stays syncmq's)."""
    props: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in str(text).split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"not KEY=VALUE: {item!r}")
        if key == "capabilities":
            raise ValueError("the capabilities table cannot be overridden")
        props[key] = value.strip()
    return props


def build_parser() -> configargparse.ArgumentParser:
    p = configargparse.ArgumentParser(
        prog="syncmq",
        description="syncmq: an AMQP 0-9-1 broker in pure Python",
        config_file_parser_class=configargparse.IniConfigParser(["syncmq"], split_ml_text_to_list=False),
        auto_env_var_prefix="SYNCMQ_",
        args_for_setting_config_path=["-c", "--config"],
        config_arg_help_message="INI file with a [syncmq] section (same names, no dashes)",
    )
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=_port, default=5672,
                   help="AMQP port; 0 picks an ephemeral port and logs it (default %(default)s)")
    p.add_argument("--data-dir", default="syncmq-data", help="journal directory (default %(default)s)")
    p.add_argument("--workers", type=_positive, default=2,
                   help="worker threads; each connection is pinned to one (default %(default)s)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error", "critical"],
                   help="log level (default %(default)s)")
    p.add_argument("--log-format", default="json", choices=["json", "text"],
                   help="log line format (default %(default)s)")
    p.add_argument("--log-file", default=None, help="log to this file instead of stderr")
    p.add_argument("--frame-max", type=int, default=131072,
                   help="largest frame offered in connection.tune, >= 4096 (default %(default)s)")
    p.add_argument("--channel-max", type=int, default=2047,
                   help="most channels per connection offered in tune (default %(default)s)")
    p.add_argument("--heartbeat", type=int, default=60,
                   help="heartbeat interval offered in tune, seconds; 0 disables (default %(default)s)")
    p.add_argument("--handshake-timeout", type=float, default=10.0,
                   help="seconds a client has to complete the AMQP handshake (default %(default)s)")
    p.add_argument("--max-message-size", type=parse_size, default="128MiB",
                   help="largest message body accepted (default %(default)s)")
    p.add_argument("--tls-port", type=_port, default=None,
                   help="also listen for AMQP over TLS (amqps) on this port (0: ephemeral)")
    p.add_argument("--tls-cert", default=None, help="server certificate chain (PEM) for TLS")
    p.add_argument("--tls-key", default=None, help="private key (PEM) of --tls-cert")
    p.add_argument("--tls-ca", default=None,
                   help="CA certificates (PEM) to verify client certificates with")
    p.add_argument("--tls-verify-peer", action="store_true",
                   help="ask clients for a certificate and verify it against --tls-ca")
    p.add_argument("--tls-fail-if-no-peer-cert", action="store_true",
                   help="refuse TLS clients without a valid certificate (implies "
                        "--tls-verify-peer); enables the EXTERNAL mechanism")
    p.add_argument("--memory-high-watermark", default="0.4",
                   help="block publishers (connection.blocked) while the broker's resident "
                        "memory is above this: a fraction of total RAM (RabbitMQ's default "
                        "0.4) or a size such as 512MiB; 0 disables")
    p.add_argument("--disk-free-limit", type=parse_size, default="50MB",
                   help="block publishers while the data dir's file system has less free "
                        "space than this (default %(default)s; 0 disables)")
    p.add_argument("--max-connections", type=int, default=0,
                   help="refuse connections beyond this many (0: no limit)")
    p.add_argument("--daemonize", action="store_true",
                   help="detach from the terminal (for hosts without a supervisor); the "
                        "command returns once the broker listens, 1 if it could not start")
    p.add_argument("--pid-file", default=None, help="write the broker's pid here")
    p.add_argument("--fsync", default="batch", choices=["batch", "always", "never"],
                   help="journal fsync policy: batch (group commit, default), always (one "
                        "fsync per append), never (leave it to the OS)")
    # Hidden (tests): a small segment size makes segments roll and compaction run early.
    p.add_argument("--journal-segment-bytes", type=parse_size, default="64MiB",
                   help=configargparse.SUPPRESS)
    # Hidden (tests, tuning): unsent output per connection above which its consumers get no
    # deliveries and it is not read, until sent down to a quarter of it (docs/architecture.md).
    p.add_argument("--max-pending-output", type=parse_size, default="8MiB",
                   help=configargparse.SUPPRESS)
    p.add_argument("--memory-budget", type=parse_size, default="0",
                   help="bytes of queued message bodies kept in memory (e.g. 256MiB); bodies "
                        "beyond it spill to DATA_DIR/spill; 0 (default) keeps them all in "
                        "memory")
    p.add_argument("--users-file", default=None,
                   help="TOML file of users, vhosts and permissions (docs/users-file.md); "
                        "reloaded on SIGHUP; default: only guest/guest from localhost")
    p.add_argument("--management-port", type=int, default=15672,
                   help="management HTTP API and /metrics port, bound to --bind; 0 picks an "
                        "ephemeral port and logs it; -1 disables (default %(default)s)")
    p.add_argument("--no-management", action="store_true",
                   help="do not start the management HTTP API")
    p.add_argument("--server-properties", type=server_properties, default={},
                   help="override connection.start server properties, e.g. "
                        "'product=RabbitMQ,version=3.10.8' for client code that checks them "
                        "(docs/compatibility.md); default: product syncmq, syncmq's version")
    p.add_argument("--version", action="version", version=f"syncmq {__version__}")
    return p


def validate(args) -> None:
    """Cross-field checks; raises ValueError naming the option."""
    if args.frame_max < 4096:
        raise ValueError("--frame-max must be >= 4096")
    if not -1 <= args.management_port <= 65535:
        raise ValueError("--management-port must be between 0 and 65535, or -1 to disable")
    if not 1 <= args.channel_max <= 65535:
        raise ValueError("--channel-max must be between 1 and 65535")
    if args.heartbeat < 0:
        raise ValueError("--heartbeat must be >= 0")
    try:
        args.memory_high_watermark = memory_limit(args.memory_high_watermark)
    except ValueError:
        raise ValueError(
            f"--memory-high-watermark: not a fraction or size: {args.memory_high_watermark!r}"
        ) from None
    if args.max_connections < 0:
        raise ValueError("--max-connections must be >= 0")
    if args.tls_port is not None:
        if not args.tls_cert or not args.tls_key:
            raise ValueError("--tls-port needs --tls-cert and --tls-key")
        for opt in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(args, opt)
            if path and not os.path.isfile(path):
                raise ValueError(f"--{opt.replace('_', '-')}: no such file {path}")
        if (args.tls_verify_peer or args.tls_fail_if_no_peer_cert) and not args.tls_ca:
            raise ValueError("--tls-verify-peer/--tls-fail-if-no-peer-cert need --tls-ca")
    if args.journal_segment_bytes < 1024:
        raise ValueError("--journal-segment-bytes must be >= 1024")


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


def setup_logging(level: str, fmt: str, path: str | None) -> logging.Handler:
    """Configure the root logger; returns the handler (reopened on SIGHUP when a file)."""
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
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


import logging.handlers  # noqa: E402  (WatchedFileHandler)
