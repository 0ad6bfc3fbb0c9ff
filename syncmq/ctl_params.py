"""``syncmqctl`` verbs for runtime parameters, with rabbitmqctl's argument forms, banners and
tables (checked against rabbitmqctl 3.10): ``set_parameter [-p VHOST] COMPONENT NAME VALUE``,
``clear_parameter [-p VHOST] COMPONENT NAME``, ``list_parameters [-p VHOST]``,
``set_global_parameter NAME VALUE``, ``clear_global_parameter NAME``,
``list_global_parameters``. VALUE is JSON text, as for rabbitmqctl.

They go through the management API (``/api/parameters``, ``/api/global-parameters``) like
every remote verb (``ctl_remote``); importing this module adds them to ``ctl_remote.VERBS``
(``ctl.run_remote`` does). Errors print RabbitMQ's reason (``Error:`` then the text) and
exit with rabbitmqctl's code for the case (``syncmq.ctl_errors``).
"""

from __future__ import annotations

import json

from .ctl_errors import CtlError, no_vhost
from .ctl_remote import VERBS, Client, RemoteError, _banner, _table, _vq


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        raise RemoteError("JSON decoding error. Reason: badarg") from None  # rabbitmqctl's


def _call(c: Client, method: str, path: str, body=None, not_found=None):
    """``Client.call`` with a 400's reason printed as RabbitMQ prints it (no status)."""
    try:
        return c.call(method, path, body, not_found=not_found)
    except RemoteError as e:
        text = str(e)
        if text.startswith("400 "):
            raise RemoteError(text[4:].replace("&lt;", "<").replace("&gt;", ">")) from None
        raise


def _no_vhost(vhost: str) -> CtlError:
    return no_vhost(vhost)


def set_parameter(c: Client, args) -> None:
    _banner(args, f'Setting runtime parameter "{args.name}" for component "{args.component}" '
                  f'to "{args.value}" in vhost "{args.vhost}" ...')
    _call(c, "PUT", f"/api/parameters/{_vq(args.component)}/{_vq(args.vhost)}/"
          f"{_vq(args.name)}", {"value": _value(args.value)}, not_found=_no_vhost(args.vhost))


def clear_parameter(c: Client, args) -> None:
    _banner(args, f'Clearing runtime parameter "{args.name}" for component "{args.component}" '
                  f'on vhost "{args.vhost}" ...')
    _call(c, "DELETE", f"/api/parameters/{_vq(args.component)}/{_vq(args.vhost)}/"
          f"{_vq(args.name)}", not_found="Parameter does not exist")


def _json_text(rows: list[dict]) -> list[dict]:
    """rabbitmqctl prints each value as its JSON text (``"edge"`` for a string; a string in
    ``--formatter json``)."""
    return [{**r, "value": json.dumps(r["value"], separators=(",", ":"), ensure_ascii=False)}
            for r in rows]


def list_parameters(c: Client, args) -> None:
    _banner(args, f'Listing runtime parameters for vhost "{args.vhost}" ...')
    _call(c, "GET", f"/api/vhosts/{_vq(args.vhost)}", not_found=_no_vhost(args.vhost))
    rows = [r for r in _call(c, "GET", "/api/parameters") if r["vhost"] == args.vhost]
    _table(args, _json_text(rows), args.columns or ["component", "name", "value"],
           empty_line=True)


def set_global_parameter(c: Client, args) -> None:
    _banner(args, f'Setting global runtime parameter "{args.name}" to "{args.value}" ...')
    _call(c, "PUT", f"/api/global-parameters/{_vq(args.name)}", {"value": _value(args.value)})


def clear_global_parameter(c: Client, args) -> None:
    _banner(args, f'Clearing global runtime parameter "{args.name}" ...')
    _call(c, "DELETE", f"/api/global-parameters/{_vq(args.name)}",
          not_found="Parameter does not exist")


def list_global_parameters(c: Client, args) -> None:
    _banner(args, "Listing global runtime parameters ...")
    rows = _call(c, "GET", "/api/global-parameters")
    _table(args, _json_text(rows), args.columns or ["name", "value"], empty_line=True)


PARAMETER_VERBS = {
    "set_parameter": (set_parameter, "set a runtime parameter (VALUE is JSON)",
                      ["-p", "component", "name", "value"]),
    "clear_parameter": (clear_parameter, "clear a runtime parameter",
                        ["-p", "component", "name"]),
    "list_parameters": (list_parameters, "list the runtime parameters of a vhost",
                        ["-p", "cols"]),
    "set_global_parameter": (set_global_parameter, "set a global runtime parameter (VALUE is "
                             "JSON)", ["name", "value"]),
    "clear_global_parameter": (clear_global_parameter, "clear a global runtime parameter",
                               ["name"]),
    "list_global_parameters": (list_global_parameters, "list the global runtime parameters",
                               ["cols"]),
}
VERBS.update(PARAMETER_VERBS)
