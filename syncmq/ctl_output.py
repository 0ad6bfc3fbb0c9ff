"""``syncmqctl``'s output in the remote mode (``syncmq.ctl_remote``): rabbitmqctl's
formatters (``table``: tab-separated with a header line, ``json``, ``pretty_table``), its
banners, the columns (info keys) each listing takes, and the standard output held back until
the broker first answers (rabbitmqctl prints nothing on standard output for a node it cannot
reach).
"""

from __future__ import annotations

import argparse
import io
import json

from .ctl_errors import CtlError, Kind


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return "[" + ", ".join(v) + "]"  # rabbitmqctl's table: [management, monitoring]
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _pick(row: dict, column: str):
    """A column of a row; dotted names reach into nested objects."""
    v = row
    for part in ALIASES.get(column, column).split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v


# rabbitmqctl's column names -> the management API's fields
ALIASES = {
    "source_name": "source", "source_kind": "source_kind",
    "destination_name": "destination", "destination_kind": "destination_type",
    "queue_name": "queue.name", "channel_pid": "channel_details.name",
    "peer_address": "peer_host",
}


FORMATTERS = ("table", "json", "pretty_table")


def _json_out(args) -> bool:
    return args.json or args.formatter == "json"


def _table(args, rows: list[dict], columns: list[str], empty_line: bool = False) -> None:
    """Rows as rabbitmqctl's formatters print them: ``table`` (tab-separated, a header
    line), ``json`` (a list of objects), ``pretty_table`` (a boxed table). ``empty_line``:
    no rows print one empty line, not the header (rabbitmqctl's list_policies,
    list_parameters, list_topic_permissions...)."""
    if empty_line and not rows and args.formatter == "table" and not _json_out(args):
        print()
        return
    if _json_out(args):
        print(json.dumps([{c: _pick(r, c) for c in columns} for r in rows], indent=1))
        return
    cells = [[_cell(_pick(r, c)) for c in columns] for r in rows]
    if args.formatter == "pretty_table":
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
        rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
        print(rule)
        for i, line in enumerate([columns, *cells]):
            print("| " + " | ".join(v.ljust(w) for v, w in zip(line, widths, strict=True))
                  + " |")
            if i == 0:
                print(rule)
        print(rule)
        return
    print("\t".join(columns))
    for row in cells:
        print("\t".join(row))


def _banner(args, text: str) -> None:
    if not args.quiet and not _json_out(args):
        print(text)


# rabbitmqctl 3.10's info keys of its listings (``rabbitmqctl help VERB``): another column is
# a usage error (64), as there; syncmq's aliases (ALIASES) are accepted too
INFO_KEYS = {verb: set(keys.split()) | set(ALIASES) for verb, keys in {
    "list_queues": "arguments auto_delete consumer_capacity consumer_utilisation consumers "
                   "disk_reads disk_writes durable exclusive exclusive_consumer_pid "
                   "exclusive_consumer_tag head_message_timestamp leader members memory "
                   "message_bytes message_bytes_persistent message_bytes_ram "
                   "message_bytes_ready message_bytes_unacknowledged messages "
                   "messages_persistent messages_ram messages_ready messages_ready_ram "
                   "messages_unacknowledged messages_unacknowledged_ram name online "
                   "owner_pid pid policy slave_pids state synchronised_slave_pids type",
    "list_exchanges": "arguments auto_delete durable internal name policy type",
    "list_bindings": "arguments destination_kind destination_name routing_key source_kind "
                     "source_name",
    "list_connections": "auth_mechanism channel_max channels client_properties connected_at "
                        "frame_max host name peer_cert_issuer peer_cert_subject "
                        "peer_cert_validity peer_host peer_port pid port protocol recv_cnt "
                        "recv_oct send_cnt send_oct send_pend ssl ssl_cipher ssl_hash "
                        "ssl_key_exchange ssl_protocol state timeout user vhost",
    "list_channels": "acks_uncommitted confirm connection consumer_count "
                     "global_prefetch_count messages_unacknowledged messages_uncommitted "
                     "messages_unconfirmed name number pid prefetch_count transactional user "
                     "vhost",
    "list_consumers": "ack_required active activity_status arguments channel_pid consumer_tag "
                      "prefetch_count queue_name",
    "list_vhosts": "cluster_state default_queue_type description name tags tracing",
    # rabbitmqctl takes no columns for these three; syncmqctl picks among its own
    "list_users": "user tags", "list_permissions": "user configure write read",
    "list_user_permissions": "vhost configure write read",
}.items()}


class HeldOutput(io.TextIOBase):
    """Standard output held back until the broker first answers (``release``), then written
    through; ``drop`` forgets what is held (the broker never answered: rabbitmqctl prints no
    banner for a node it cannot reach)."""

    def __init__(self, out) -> None:
        self.out, self.held = out, io.StringIO()

    def write(self, text: str) -> int:
        return (self.held or self.out).write(text)

    def flush(self) -> None:
        (self.held or self.out).flush()

    def isatty(self) -> bool:
        """The real output's (``ctl_status`` prints bold titles on a terminal only)."""
        return self.out.isatty()

    def release(self) -> None:
        if self.held is not None:
            self.out.write(self.held.getvalue())
            self.held = None

    def drop(self) -> None:
        self.held = None


def check_columns(args: argparse.Namespace) -> None:
    """rabbitmqctl's argument validation of a listing's columns (its info keys), before
    anything is printed or asked."""
    keys = INFO_KEYS.get(args.verb)
    bad = [c for c in getattr(args, "columns", None) or [] if keys and c not in keys]
    if bad:
        raise CtlError(f"Error (argument validation): Info key(s) {','.join(bad)} are not "
                          "supported", Kind.USAGE, header=False)
