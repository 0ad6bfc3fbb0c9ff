"""``syncmqctl`` verbs for vhost limits, with rabbitmqctl 3.10's argument forms, banners and
output (read off rabbitmqctl against RabbitMQ 3.10.8): ``set_vhost_limits [-p VHOST] JSON``
(replaces the vhost's limits with JSON), ``clear_vhost_limits [-p VHOST]``,
``list_vhost_limits [-p VHOST] [--global]``.

They go through the management API: the whole value is the runtime parameter
``vhost-limits``/``limits`` (``/api/parameters``, as rabbitmqctl sets it), the listing is
``/api/vhost-limits``. Importing this module adds them to ``ctl_remote.VERBS`` (``ctl.run_remote``
does). Errors print RabbitMQ's reason and exit with rabbitmqctl's code for the case
(``syncmq.ctl_errors``).
"""

from __future__ import annotations

import json

from .ctl_params import _call, _no_vhost, _value
from .ctl_remote import VERBS, Client, _banner, _json_out, _table, _vq


def _path(vhost: str) -> str:
    return f"/api/parameters/vhost-limits/{_vq(vhost)}/limits"


def _text(value) -> str:
    """rabbitmqctl's JSON text of a value: keys sorted (whatever order the parameter has),
    an emptied ``[]`` is ``{}``."""
    return json.dumps(value or {}, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def set_vhost_limits(c: Client, args) -> None:
    _banner(args, f'Setting vhost limits to "{args.definition}" for vhost "{args.vhost}" ...')
    _call(c, "PUT", _path(args.vhost), {"value": _value(args.definition)},
          not_found=_no_vhost(args.vhost))


def clear_vhost_limits(c: Client, args) -> None:
    _banner(args, f'Clearing vhost "{args.vhost}" limits ...')
    _call(c, "DELETE", _path(args.vhost), not_found="Parameter does not exist")


def list_vhost_limits(c: Client, args) -> None:
    if args.global_:
        _banner(args, "Listing limits for all vhosts ...")
        rows = _call(c, "GET", "/api/vhost-limits")
        _table(args, [{"vhost": r["vhost"], "limits": _text(r["value"])} for r in rows],
               ["vhost", "limits"])
        return
    _banner(args, f'Listing limits for vhost "{args.vhost}" ...')
    rows = _call(c, "GET", f"/api/vhost-limits/{_vq(args.vhost)}",
                 not_found=_no_vhost(args.vhost))
    text = _text(rows[0]["value"]) if rows else ""
    if _json_out(args):
        print(json.dumps({"result": "ok", "value": text}))
    else:
        print(text)


LIMIT_VERBS = {
    "set_vhost_limits": (set_vhost_limits, "set a vhost's limits (JSON, e.g. "
                         "'{\"max-connections\": 10}')", ["-p", "definition"]),
    "clear_vhost_limits": (clear_vhost_limits, "clear a vhost's limits", ["-p"]),
    "list_vhost_limits": (list_vhost_limits, "list a vhost's limits (--global: every vhost's)",
                          ["-p", "--global"]),
}
VERBS.update(LIMIT_VERBS)
