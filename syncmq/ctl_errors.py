"""``syncmqctl``'s errors and exit codes: rabbitmqctl's (sysexits.h), one mapping for both
modes (``--users-file`` offline, ``syncmq.ctl``; the management API, ``syncmq.ctl_remote``).

Every error a verb raises is a :class:`CtlError` carrying its :class:`Kind`; the exit code is
``EXIT_CODES[kind]``, here and nowhere else. Which kind a case has was read off rabbitmqctl
3.10.8 against a node (tests/interop/test_ctl_exit_codes_diff.py runs them side by side):

- ``USAGE`` (64, EX_USAGE): the command line (not enough / too many arguments, an unknown
  command, option or info key); also ``delete_queue`` of a missing queue (rabbitmqctl's own
  choice);
- ``DATA`` (65, EX_DATAERR): the data named is not there or not usable: a missing vhost where
  rabbitmqctl prints ``Virtual host 'x' does not exist`` with no ``Error:`` line
  (delete_vhost, set_vhost_limits, list_permissions, list_policies...), a wrong password for
  authenticate_user, a file to import that is missing, a directory to export to that is
  missing, a users file that cannot be read or written;
- ``NO_USER`` (67, EX_NOUSER): delete_user, change_password, set_user_tags,
  set/clear_permissions, set/clear_topic_permissions of a missing user;
- ``REFUSED`` (69, EX_UNAVAILABLE): the node refused the operation, rabbitmqctl's code for
  an error the node returns (validation failed, bad JSON, a parameter / policy / shovel /
  connection that does not exist, ``{:no_such_user, ...}``...): the default kind;
- ``UNREACHABLE`` (69 too): the node cannot be reached (or refused the CLI's credentials,
  as a wrong Erlang cookie does for rabbitmqctl). rabbitmqctl then prints nothing on
  standard output (no banner) and ``Error: unable to perform an operation on node ...`` on
  standard error; ``ctl_remote.run`` drops a banner held back until the first answer;
- ``SOFTWARE`` (70, EX_SOFTWARE): add_user of an existing user (and change_password with no
  password given, which rabbitmqctl 3.10 reports so).
"""

from __future__ import annotations

import argparse
import enum
import json
import sys


class Kind(enum.Enum):
    USAGE = "usage"
    DATA = "data"
    NO_USER = "no user"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    SOFTWARE = "software"


# the one mapping from an error's kind to syncmqctl's exit code (rabbitmqctl's)
EXIT_CODES = {Kind.USAGE: 64, Kind.DATA: 65, Kind.NO_USER: 67, Kind.REFUSED: 69,
              Kind.UNREACHABLE: 69, Kind.SOFTWARE: 70}


class CtlError(Exception):
    """An error of a syncmqctl verb: printed as ``Error:`` then the text on standard error
    (only the text when ``header`` is false, as rabbitmqctl prints a missing vhost), exit code
    ``EXIT_CODES[kind]``."""

    def __init__(self, text: str, kind: Kind = Kind.REFUSED, header: bool = True) -> None:
        super().__init__(text)
        self.kind = kind
        self.header = header


def report(e: CtlError) -> int:
    """Print ``e`` as rabbitmqctl prints its errors; the exit code."""
    print(f"Error:\n{e}" if e.header else str(e), file=sys.stderr)
    return EXIT_CODES[e.kind]


# ---- the errors several verbs share, with rabbitmqctl's texts and kinds ----

def no_vhost(vhost: str) -> CtlError:
    """A missing vhost as delete_vhost, list_permissions, set_vhost_limits, list_policies,
    set_parameter... report it (65, no ``Error:`` line)."""
    return CtlError(f"Virtual host '{vhost}' does not exist", Kind.DATA, header=False)


def no_vhost_refused(vhost: str) -> CtlError:
    """A missing vhost as set/clear_permissions and set/clear_topic_permissions report it."""
    return CtlError(f"Virtual host {vhost} does not exist", Kind.REFUSED)


def no_user(name: str, quoted: bool = True) -> CtlError:
    """A missing user as delete_user, change_password, set_user_tags (``quoted``) and the
    permission verbs (not quoted) report it: 67."""
    return CtlError(f'User "{name}" does not exist' if quoted else
                    f"User {name} does not exist", Kind.NO_USER)


def no_such_user(name: str) -> CtlError:
    """A missing user as list_user_permissions, list_user_topic_permissions and the user
    limit verbs report it (an Erlang term, 69)."""
    return CtlError(f"{{:no_such_user, {json.dumps(name)}}}", Kind.REFUSED)


class Parser(argparse.ArgumentParser):
    """argparse with rabbitmqctl's exit code for a bad command line (64, not argparse's 2);
    subparsers are of the same class (argparse's default)."""

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        self.print_usage(sys.stderr)
        self.exit(EXIT_CODES[Kind.USAGE], f"{self.prog}: error: {message}\n")
