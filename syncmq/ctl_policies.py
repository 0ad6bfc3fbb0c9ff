"""``syncmqctl`` verbs for policies and operator policies, with rabbitmqctl 3.10's argument
forms, banners and tables: ``set_policy [-p VHOST] [--priority N] [--apply-to X] NAME
PATTERN DEFINITION``, ``clear_policy [-p VHOST] NAME``, ``list_policies [-p VHOST]`` and the
same for ``set_operator_policy``, ``clear_operator_policy``, ``list_operator_policies``.
DEFINITION is JSON text, as for rabbitmqctl.

They go through the management API (``/api/policies``, ``/api/operator-policies``) like
every remote verb (``ctl_remote``); importing this module adds them to ``ctl_remote.VERBS``
(``ctl.run_remote`` does). Errors print RabbitMQ's reason (``Error:`` then the text, HTML
escapes undone as rabbitmqctl never had them) and exit with rabbitmqctl's code for the
case (``syncmq.ctl_errors``).
"""

from __future__ import annotations

import html
import json

from .ctl_errors import no_vhost
from .ctl_remote import VERBS, Client, RemoteError, _banner, _table, _vq

COLUMNS = ["vhost", "name", "pattern", "apply-to", "definition", "priority"]
KINDS = {"policy": ("policies", "policy", "policies"),
         "operator": ("operator-policies", "operator policy override",
                      "operator policy overrides")}


def _call(c: Client, method: str, path: str, body=None, not_found=None):
    """``Client.call`` with a 400's reason printed as rabbitmqctl prints it (no status)."""
    try:
        return c.call(method, path, body, not_found=not_found)
    except RemoteError as e:
        text = str(e)
        if text.startswith("400 "):
            raise RemoteError(html.unescape(text[4:]).rstrip("\n")) from None
        raise


def _setter(kind: str):
    path, what, _ = KINDS[kind]

    def run(c: Client, args) -> None:
        _banner(args, f'Setting {what} "{args.name}" for pattern "{args.pattern}" to '
                      f'"{args.definition}" with priority "{args.priority}" for vhost '
                      f'"{args.vhost}" ...')
        try:
            definition = json.loads(args.definition)
        except ValueError:
            raise RemoteError("JSON decoding error. Reason: badarg") from None
        _call(c, "PUT", f"/api/{path}/{_vq(args.vhost)}/{_vq(args.name)}",
              {"pattern": args.pattern, "definition": definition, "priority": args.priority,
               "apply-to": args.apply_to},
              not_found=no_vhost(args.vhost))
    return run


def _clearer(kind: str):
    path, _, _ = KINDS[kind]
    what = "policy" if kind == "policy" else "operator policy"

    def run(c: Client, args) -> None:
        _banner(args, f'Clearing {what} "{args.name}" on vhost "{args.vhost}" ...')
        _call(c, "DELETE", f"/api/{path}/{_vq(args.vhost)}/{_vq(args.name)}",
              not_found="Parameter does not exist")
    return run


def _lister(kind: str):
    path, _, what = KINDS[kind]

    def run(c: Client, args) -> None:
        _banner(args, f'Listing {what} for vhost "{args.vhost}" ...')
        rows = _call(c, "GET", f"/api/{path}/{_vq(args.vhost)}", not_found=no_vhost(args.vhost))
        rows = [{**r, "definition": json.dumps(r["definition"], separators=(",", ":"),
                                               ensure_ascii=False)} for r in rows]
        _table(args, rows, args.columns or COLUMNS, empty_line=True)
    return run


_SET = ["-p", "--priority:int=0", "--apply-to:str=all", "name", "pattern", "definition"]
POLICY_VERBS = {
    "set_policy": (_setter("policy"), "set a policy (DEFINITION is JSON)", _SET),
    "clear_policy": (_clearer("policy"), "clear a policy", ["-p", "name"]),
    "list_policies": (_lister("policy"), "list the policies of a vhost", ["-p", "cols"]),
    "set_operator_policy": (_setter("operator"), "set an operator policy (DEFINITION is "
                            "JSON)", _SET),
    "clear_operator_policy": (_clearer("operator"), "clear an operator policy",
                              ["-p", "name"]),
    "list_operator_policies": (_lister("operator"), "list the operator policies of a vhost",
                               ["-p", "cols"]),
}
VERBS.update(POLICY_VERBS)
