"""``syncmqctl`` verbs for dynamic shovels, as rabbitmqctl's shovel plugin adds them:
``shovel_status``, ``restart_shovel [-p VHOST] NAME``, ``delete_shovel [-p VHOST] NAME``.

They go through the management API (``/api/shovels``, ``/api/parameters/shovel``) like every
remote verb (``ctl_remote``); importing this module adds them to ``ctl_remote.VERBS``
(``ctl.run_remote`` does).
"""

from __future__ import annotations

from .ctl_remote import VERBS, Client, _banner, _table, _vq


def shovel_status(c: Client, args) -> None:
    """rabbitmqctl's ``shovel_status``: every shovel's state (``GET /api/shovels``)."""
    _banner(args, "Shovel status on node ...")
    _table(args, c.call("GET", "/api/shovels"), args.columns or [
        "name", "vhost", "type", "state", "src_uri", "dest_uri", "reason", "timestamp"])


def _shovel_missing(args) -> str:
    return (f"Shovel with the given name was not found on the target node and / or virtual "
            f"host '{args.vhost}'")


def delete_shovel(c: Client, args) -> None:
    """Delete a dynamic shovel: its runtime parameter goes, the shovel stops."""
    _banner(args, f"Deleting shovel {args.name} in vhost {args.vhost}")
    c.call("DELETE", f"/api/parameters/shovel/{_vq(args.vhost)}/{_vq(args.name)}",
           not_found=_shovel_missing(args))


def restart_shovel(c: Client, args) -> None:
    """Restart a dynamic shovel (new connections, as the management API's restart)."""
    _banner(args, f"Restarting dynamic Shovel {args.name} in virtual host {args.vhost}")
    c.call("DELETE", f"/api/shovels/vhost/{_vq(args.vhost)}/{_vq(args.name)}/restart",
           not_found=_shovel_missing(args))


SHOVEL_VERBS = {
    "shovel_status": (shovel_status, "the dynamic shovels' status", ["cols"]),
    "delete_shovel": (delete_shovel, "delete a dynamic shovel", ["-p", "name"]),
    "restart_shovel": (restart_shovel, "restart a dynamic shovel", ["-p", "name"]),
}
VERBS.update(SHOVEL_VERBS)
