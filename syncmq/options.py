"""Every broker option, declared once.

``OPTIONS`` is the one table. From it come: the command-line parser (``syncmq.config``, which
adds INI and ``SYNCMQ_*`` environment support), the config object (:class:`ServerConfig`, one
field per option), the keyword arguments of the embeddable ``syncmq.Server(**options)`` (the
same names, ``-`` spelt ``_``) and README.md's option table (``python -m syncmq.options
--write README.md``; ``tests/test_options.py`` fails when README and the table differ).

To add an option: add one :class:`Option` row here (``default`` as it would be typed on the
command line, ``type`` converting such a string), read ``config.<field>`` where it is used,
then regenerate README.md. A leaf module: imports nothing from syncmq but the version.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    an absolute size (``512MiB``, ``1G``, bytes); 0 disables. A Python int is bytes, a float
    a fraction."""
    if isinstance(spec, int):
        return max(spec, 0)
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


def server_properties(text: Any) -> dict[str, str]:
    """``--server-properties product=RabbitMQ,version=3.10.8``: string overrides of the
    connection.start server properties (any key but ``capabilities``, the feature table
    clients act on, which stays RabbitMQ's). A dict is taken as it is (``Server(...)``)."""
    items = text.items() if isinstance(text, dict) else (
        part.partition("=")[::2] if "=" in part else (part, None)
        for part in filter(None, (p.strip() for p in str(text).split(","))))
    props: dict[str, str] = {}
    for key, value in items:
        key = str(key).strip()
        if not key or value is None:
            raise ValueError(f"--server-properties: not KEY=VALUE: {key!r}")
        if len(key.encode("utf-8")) > 255:  # a field-table key is a shortstr
            raise ValueError(f"--server-properties: key longer than 255 octets: {key[:40]!r}...")
        if key == "capabilities":
            raise ValueError("--server-properties: the capabilities table cannot be overridden")
        props[key] = str(value).strip()
    return props


def positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise ValueError
    return v


def port(text: str) -> int:
    v = int(text)
    if not 0 <= v <= 65535:
        raise ValueError
    return v


@dataclass(frozen=True)
class Option:
    """One option. ``name`` is the flag without dashes (also the INI key); ``default`` is the
    command-line spelling (``None``: unset); ``type`` converts a string (``None`` for flags,
    which are ``store_true``). ``doc`` is README's text (Markdown) and ``--help``'s (plain);
    ``shown_default`` replaces ``default`` in README. ``cli_only`` options (daemonizing, the
    config file) are not ``Server`` arguments; ``hidden`` ones are for tests and tuning and
    are neither in ``--help`` nor in README."""

    name: str
    default: str | None
    doc: str
    type: Callable[[str], Any] | None = str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    shown_default: str | None = None
    cli_only: bool = False
    hidden: bool = False
    multiple: bool = False  # repeatable flag: a list of values (``Server``: a list or tuple)

    @property
    def field(self) -> str:
        return self.name.replace("-", "_")

    @property
    def flag(self) -> bool:
        return self.type is None

    def convert(self, value: Any) -> Any:
        """A command-line string (or an already typed value) -> the config value."""
        if self.flag:
            if not isinstance(value, bool):
                raise ValueError(f"--{self.name} takes True or False, not {value!r}")
            return value
        if value is None:
            return None
        if self.multiple:
            values = [value] if isinstance(value, str) else list(value)
            return tuple(self.type(v) for v in values)
        value = self.type(value)  # every converter takes a string or a number
        if self.choices and value not in self.choices:
            raise ValueError(f"--{self.name}: {value!r} is not one of {', '.join(self.choices)}")
        return value

    def typed_default(self) -> Any:
        if self.flag:
            return False
        if self.multiple:
            return ()
        return None if self.default is None else self.type(self.default)


Opt = Option
OPTIONS: tuple[Option, ...] = (
    Opt("config", None, "INI file with a `[syncmq]` section", metavar="FILE", cli_only=True,
      shown_default="none"),
    Opt("bind", "127.0.0.1", "address to listen on", metavar="ADDR"),
    Opt("port", "5672", "AMQP port; `0` binds an ephemeral port and logs it (`\"port\"` in the "
      "start-up line)", type=port, metavar="N"),
    Opt("data-dir", "syncmq-data", "journal directory", metavar="DIR"),
    Opt("workers", "2", "worker threads; each connection is pinned to one", type=positive,
      metavar="N"),
    Opt("log-level", "info", "`debug`, `info`, `warning`, `error`, `critical`", metavar="L",
      choices=("debug", "info", "warning", "error", "critical")),
    Opt("log-format", "auto", "`json` (one JSON object a line), `text` (`time LEVEL logger: "
      "message key=value ...`) or `auto`: text when logging to a terminal, JSON otherwise",
      metavar="F", choices=("auto", "json", "text")),
    Opt("log-file", None, "log file, reopened on SIGHUP (for logrotate)", metavar="PATH",
      shown_default="stderr"),
    Opt("frame-max", "131072", "largest frame offered in `connection.tune` (>= 4096)", type=int,
      metavar="N"),
    Opt("channel-max", "2047", "most channels a connection may open", type=int, metavar="N"),
    Opt("heartbeat", "60", "heartbeat interval offered in `connection.tune`; 0 disables",
      type=int, metavar="S"),
    Opt("handshake-timeout", "10", "seconds a client has to complete the AMQP handshake",
      type=float, metavar="S"),
    Opt("max-message-size", "128MiB", "largest message body accepted (a bigger one is a 406 "
      "channel error)", type=parse_size, metavar="SIZE"),
    Opt("users-file", None, "TOML file of users, vhosts and permissions, reloaded on SIGHUP "
      "([docs/users-file.md](docs/users-file.md))", metavar="PATH",
      shown_default="none (only `guest`/`guest`, from localhost)"),
    Opt("management-port", "15672", "management HTTP API and `/metrics`, bound to `--bind`; `0` "
      "binds an ephemeral port and logs it (`\"management_port\"` in the start-up line); `-1` "
      "disables", type=int, metavar="N"),
    Opt("no-management", None, "do not start the management HTTP API", type=None),
    Opt("management-max-body", "1MiB", "largest management request body, except a definitions "
        "import (413 beyond, before the body is read)", type=parse_size, metavar="SIZE"),
    Opt("management-max-definitions-body", "64MiB", "largest `POST /api/definitions` body", type=parse_size, metavar="SIZE"),
    Opt("management-read-timeout", "30", "seconds a management request (headers and body) may "
        "take to arrive; slower ones are dropped", type=float, metavar="S"),
    Opt("management-idle-timeout", "60", "seconds a kept-alive management connection may stay "
        "idle", type=float, metavar="S"),
    Opt("management-max-connections", "100", "open management connections at most; later "
        "clients wait in the kernel's backlog", type=int, metavar="N"),
    Opt("management-threads", "4", "threads answering management requests", type=int,
        metavar="N"),
    Opt("prometheus-port", "15692", "Prometheus `/metrics` endpoints on their own port, as "
        "RabbitMQ's rabbitmq_prometheus (they are on the management port too), bound to "
        "`--bind`; `0` binds an ephemeral port and logs it (`\"prometheus_port\"` in the "
        "start-up line); `-1` disables", type=int, metavar="N"),
    Opt("metrics-auth", "per-object", "which Prometheus endpoints need credentials: "
        "`per-object` (all but the aggregated `/metrics`), `all`, `none`", metavar="MODE", choices=("per-object", "all", "none")),
    Opt("management-cors-origin", None, "an origin allowed to call the API from a browser "
        "(repeatable); no CORS headers otherwise", metavar="URL", multiple=True, shown_default="none"),
    Opt("memory-high-watermark", "0.4", "memory alarm: a fraction of total RAM or a size "
      "(`512MiB`); when the memory the broker accounts for (queued messages and bodies in "
      "memory, connection buffers) is above it, or RSS above 1.5 times it, connections that "
      "publish get `connection.blocked` and are not read until it is back under 0.9 times "
      "it; `0` disables", type=memory_limit, metavar="X"),
    Opt("disk-free-limit", "50MB", "disk alarm: the same when the data dir's file system has "
      "less free space; `0` disables", type=parse_size, metavar="SIZE"),
    Opt("memory-budget", "0", "memory for the bodies of queued messages (`256MiB`); bodies "
      "beyond it spill to a few files in `DATA_DIR/spill` (emptied at start-up) and are read "
      "back on delivery; persistent bodies on durable queues are read back from the journal "
      "instead of being written twice, so a backlog larger than RAM costs the budget plus a "
      "few hundred bytes a message ([docs/architecture.md](docs/architecture.md), \"Memory "
      "budget\")", type=parse_size, metavar="SIZE", shown_default="`0` (unlimited)"),
    Opt("allocator", "malloc", "object allocator of the broker's interpreter: `malloc` "
      "(glibc's; memory freed after a backlog drained goes back to the OS) or `pymalloc` "
      "(CPython's default: 6 to 12 per cent fewer instructions per message, but arenas pinned "
      "by a few live objects keep 2-3x the idle RSS after backlogs); the `syncmq` command re-executes "
      "itself (same pid) with `PYTHONMALLOC` set when needed; an embedding program sets "
      "`PYTHONMALLOC` itself ([docs/architecture.md](docs/architecture.md), \"Memory "
      "accounting and return\")", metavar="A", choices=("malloc", "pymalloc"), cli_only=True),
    Opt("queue-page-window", "4096", "with `--memory-budget`: a classic (non-priority) queue "
      "keeps at most this many ready messages in memory and pages the rest out, whole, to "
      "files in `DATA_DIR/spill` (a persistent body the journal holds: by reference), read "
      "back in batches as the head drains: a paged transient message costs no memory, a "
      "persistent one its packed journal entry (~30 B) "
      "([docs/architecture.md](docs/architecture.md), \"Paged queues\"); `0` disables", type=int, metavar="N"),
    Opt("queue-flow-high", "20000", "credit flow: a queue with consumers and more than this "
      "many ready messages withholds credit from the connections publishing to it (they are "
      "not read, state `flow`) until it is down to half of it; a connection that also "
      "consumes with acks is never paused ([docs/architecture.md](docs/architecture.md), "
      "\"Flow control\"); `0` disables", type=int, metavar="N"),
    Opt("queue-flow-high-bytes", "256MiB", "credit flow by size: a queue with consumers and "
      "more than this many bytes of ready message bodies also withholds credit from its "
      "publishing connections (state `flow`) until it is down to half of both thresholds "
      "(large messages pause a publisher before the message count does); `0` disables", type=parse_size, metavar="SIZE"),
    Opt("max-connections", "0", "refuse connections beyond this many open ones (checked at "
      "accept and at `connection.open`: 530); sockets still in the handshake do not count",
      type=int, metavar="N", shown_default="`0` (no limit)"),
    Opt("max-handshakes", "1000", "refuse new sockets while this many have not completed the "
      "AMQP handshake (each is closed after `--handshake-timeout`); `0`: no limit", type=int,
      metavar="N"),
    Opt("server-properties", None, "override or add `connection.start` server properties, e.g. "
      "`product=RabbitMQ,version=3.10.8` for client code that checks them; the `capabilities` "
      "table stays RabbitMQ's ([docs/compatibility.md](docs/compatibility.md#server-properties"
      "-and-capabilities))", type=server_properties, metavar="K=V,...",
      shown_default="none (product `syncmq`, syncmq's version)"),
    Opt("daemonize", None, "detach from the terminal (hosts without a supervisor; the command "
      "returns once the broker listens, 1 if it failed)", type=None, cli_only=True),
    Opt("pid-file", None, "write the broker's pid to this file (removed on exit)",
      metavar="PATH", cli_only=True, shown_default="none"),
    Opt("fsync", "batch", "journal fsync policy: `batch` (group commit: one fsync per batch of "
      "records, confirms wait for it), `always` (one fsync per append), `never` (leave it to "
      "the OS; confirms after the write)", metavar="MODE", choices=("batch", "always", "never")),
    Opt("tls-port", None, "also listen for AMQP over TLS (amqps); `0` binds an ephemeral port "
      "(`\"tls_port\"` in the start-up line)", type=port, metavar="N", shown_default="none"),
    Opt("tls-cert", None, "server certificate chain (PEM); required with `--tls-port`",
      metavar="PATH", shown_default="none"),
    Opt("tls-key", None, "private key (PEM) of `--tls-cert`; required with `--tls-port`",
      metavar="PATH", shown_default="none"),
    Opt("tls-ca", None, "CA certificates (PEM) used to verify client certificates",
      metavar="PATH", shown_default="none"),
    Opt("tls-verify-peer", None, "ask clients for a certificate and verify it (needs "
      "`--tls-ca`)", type=None),
    Opt("tls-fail-if-no-peer-cert", None, "refuse TLS clients without a valid certificate "
      "(implies `--tls-verify-peer`); offers the EXTERNAL mechanism (the certificate's CN "
      "names the user)", type=None),
    Opt("ssl-cert-login-from", "common_name", "EXTERNAL user name, as RabbitMQ's "
      "`ssl_cert_login_from`: `common_name` (several CNs are joined with `,`) or "
      "`distinguished_name` (the subject in RFC 4514 form, e.g. `CN=app,O=x`)", metavar="M",
      choices=("common_name", "distinguished_name")),
    # tests: a small segment size makes segments roll and compaction run early
    Opt("journal-segment-bytes", "64MiB", "journal segment size", type=parse_size, hidden=True),
    # tests, tuning: unsent output per connection above which its consumers get no deliveries
    # and it is not read, until sent down to a quarter of it (docs/architecture.md)
    Opt("max-pending-output", "8MiB", "unsent output per connection before it is throttled",
      type=parse_size, hidden=True),
)
BY_FIELD: dict[str, Option] = {o.field: o for o in OPTIONS}


def validate(c: Any) -> None:
    """Cross-field checks on converted values (a namespace or a config); raises ValueError
    naming the option."""
    if c.frame_max < 4096:
        raise ValueError("--frame-max must be >= 4096")
    if not -1 <= c.management_port <= 65535:
        raise ValueError("--management-port must be between 0 and 65535, or -1 to disable")
    if not -1 <= c.prometheus_port <= 65535:
        raise ValueError("--prometheus-port must be between 0 and 65535, or -1 to disable")
    if c.management_read_timeout <= 0 or c.management_idle_timeout <= 0:
        raise ValueError("--management-read-timeout/--management-idle-timeout must be > 0")
    if c.management_max_connections < 1 or c.management_threads < 1:
        raise ValueError("--management-max-connections/--management-threads must be >= 1")
    if not 1 <= c.channel_max <= 65535:
        raise ValueError("--channel-max must be between 1 and 65535")
    if c.heartbeat < 0:
        raise ValueError("--heartbeat must be >= 0")
    if c.max_connections < 0:
        raise ValueError("--max-connections must be >= 0")
    if c.max_handshakes < 0:
        raise ValueError("--max-handshakes must be >= 0")
    if c.tls_port is not None:
        if not c.tls_cert or not c.tls_key:
            raise ValueError("--tls-port needs --tls-cert and --tls-key")
        for opt in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(c, opt)
            if path and not os.path.isfile(path):
                raise ValueError(f"--{opt.replace('_', '-')}: no such file {path}")
        if (c.tls_verify_peer or c.tls_fail_if_no_peer_cert) and not c.tls_ca:
            raise ValueError("--tls-verify-peer/--tls-fail-if-no-peer-cert need --tls-ca")
    if c.journal_segment_bytes < 1024:
        raise ValueError("--journal-segment-bytes must be >= 1024")


# Not options: set by code that builds a server, never by a flag.
_INTERNAL = [
    ("shutdown_timeout", float, field(default=10.0)),
    ("journal", bool, field(default=True)),  # False: nothing on disk (tests of the broker)
    ("extra", dict, field(default_factory=dict)),
]

ServerConfig = dataclasses.make_dataclass(
    "ServerConfig",
    [(o.field, Any, field(default=o.typed_default())) for o in OPTIONS if not o.cli_only]
    + _INTERNAL,
    namespace={"__doc__": "One field per non-CLI-only option of ``OPTIONS`` (converted and "
               "validated: build it with :func:`make_config`), plus internal settings. "
               "``management_port`` (``prometheus_port``) is None when the management API "
               "(the Prometheus port) is off."},
)
ServerConfig.__module__ = __name__


def make_config(values: dict[str, Any]) -> Any:
    """Option values by field name (command-line strings or typed values; missing ones take
    the table's default) -> a validated :class:`ServerConfig`. Raises ValueError naming the
    option, TypeError for a name that is not an option."""
    kw: dict[str, Any] = {}
    internal = {name for name, _, _ in _INTERNAL}
    for key, value in values.items():
        opt = BY_FIELD.get(key)
        if opt is None and key in internal:
            kw[key] = value
            continue
        if opt is None or opt.cli_only:
            raise TypeError(f"unknown option {key!r}")
        try:
            kw[key] = opt.convert(value)
        except (TypeError, ValueError) as e:
            raise ValueError(str(e) if str(e).startswith("--")
                             else f"--{opt.name}: bad value {value!r}") from None
    config = ServerConfig(**kw)
    validate(config)
    if config.no_management or config.management_port < 0:
        config.management_port = None
    if config.prometheus_port < 0:
        config.prometheus_port = None
    if config.tls_fail_if_no_peer_cert:
        config.tls_verify_peer = True
    return config


def plain(doc: str) -> str:
    """README Markdown -> ``--help`` text: links become their text, backticks go."""
    return re.sub(r"\[([^]]+)\]\([^)]+\)", r"\1", doc).replace("`", "")


def markdown_table() -> str:
    """README.md's option table (the lines between its ``options`` markers)."""
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    for o in OPTIONS:
        if o.hidden:
            continue
        names = f"`-c`, `--{o.name} {o.metavar}`" if o.name == "config" else (
            f"`--{o.name}`" if o.flag else f"`--{o.name} {o.metavar}`")
        if o.shown_default is not None:
            default = o.shown_default
        else:
            default = "off" if o.flag else f"`{o.default}`"
        rows.append(f"| {names} | {default} | {o.doc} |")
    return "\n".join(rows) + "\n"


BEGIN, END = "<!-- options:begin (python -m syncmq.options --write README.md) -->", \
    "<!-- options:end -->"


def splice(text: str) -> str:
    """``text`` with the part between the markers replaced by :func:`markdown_table`."""
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError("README.md has no options markers")
    return f"{head}{BEGIN}\n{markdown_table()}{END}{tail}"


def main(argv: list[str]) -> int:
    """``--check FILE`` exits 1 when FILE's table differs from the table; ``--write FILE``
    rewrites it; no argument prints the table."""
    if not argv:
        sys.stdout.write(markdown_table())
        return 0
    mode, path = argv
    with open(path) as f:
        text = f.read()
    new = splice(text)
    if mode == "--check":
        if new != text:
            sys.stderr.write(f"{path}: option table is stale; run python -m syncmq.options "
                             f"--write {path}\n")
            return 1
        return 0
    with open(path, "w") as f:
        f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
