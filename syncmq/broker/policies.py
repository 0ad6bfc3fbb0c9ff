"""Policies and operator policies: validation, matching and the effective settings they give.

Pure functions over JSON values, with RabbitMQ 3.10.8's rules and texts (``rabbit_policy``,
``rabbit_policies``, ``rabbit_mirror_queue_misc``, the classic queue process's
``process_args_policy``; each rule below names the one it follows):

- A policy is ``{"pattern", "definition", "priority", "apply-to"}``; ``validate`` refuses a
  bad one with :class:`PolicyError`, whose text is RabbitMQ's reason (``Validation failed``
  + the first failing check, the definition's values printed as Erlang terms with ``~p``).
- At most one policy (and one operator policy) applies to a queue or exchange: the matching
  one with the highest priority. Ties: RabbitMQ 3.10 keeps the first of its Mnesia table's
  (hash) order, which is not specified; here the first by name (what an ordered store and a
  stable sort give, as later RabbitMQ versions do).
- ``effective_definition(policy, op_policy)``: ``rabbit_policy:merge_operator_definitions``:
  every key of both, the operator value winning by the lower value where both set it.
- ``queue_settings(arguments, definition)``: the queue's effective settings, each key as
  ``process_args_policy`` resolves it against the ``x-`` argument: ``res_min`` (the lower
  wins) for ``expires``, ``message-ttl``, ``max-length``, ``max-length-bytes``; ``res_arg``
  (the argument wins) for ``dead-letter-exchange``, ``dead-letter-routing-key``,
  ``overflow``. ``alternate-exchange`` of an exchange: the argument wins
  (``rabbit_policy:get_arg``). Everything else is argument-only (``x-max-priority``,
  ``x-single-active-consumer``, ``x-queue-type``).
- A policy holding a key the queue's type does not support (RabbitMQ 3.10.8's
  ``unsupported_policies``: ``dead-letter-strategy`` or ``delivery-limit`` on a classic
  queue, ``queue-mode`` or ``ha-*`` on a quorum queue...) does not match that queue at all:
  the next matching policy applies (:data:`UNSUPPORTED`).

Differences from RabbitMQ 3.10.8, on purpose: ``apply-to`` also takes ``classic_queues`` and
``quorum_queues`` (RabbitMQ 3.11+; the issue asks for them), and keys RabbitMQ accepts for
features syncmq does not have (``queue-mode``, ``queue-version``, ``ha-*``,
``delivery-limit``...) are accepted and named in :func:`not_applicable` (logged as a warning).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from .args import OVERFLOW_MODES, QueueOptions, queue_options
from .erlterm import proplist
from .erlterm import term as erl
from .parameters import ParameterError

APPLY_TO = ("all", "queues", "classic_queues", "quorum_queues", "exchanges")
# rabbit_policies' operator_policy_validator keys (3.10)
OPERATOR_KEYS = frozenset(("expires", "message-ttl", "max-length", "max-length-bytes",
                           "max-in-memory-length", "max-in-memory-bytes", "delivery-limit"))
# keys syncmq acts on (dead-letter-strategy: at-most-once is what syncmq does)
QUEUE_KEYS = ("expires", "message-ttl", "max-length", "max-length-bytes", "overflow",
              "dead-letter-exchange", "dead-letter-routing-key")
APPLICABLE = frozenset(QUEUE_KEYS + ("alternate-exchange",))


class PolicyError(ParameterError):
    """A refused policy; ``str(exc)`` is RabbitMQ's reason text (a ParameterError, as the
    runtime-parameter store's validators raise)."""


# ---- Erlang's ~p of a JSON value (the texts name values that way) ----

# ---- the definition's keys (rabbit_policies:validate_policy0 and friends) ----

def _nonneg(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _pos(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _binary(v: Any) -> bool:
    return isinstance(v, str)


def _one_of(*values: Any):
    return lambda v: any(v == x and type(v) is type(x) for x in values)


_MAX_AGE = re.compile(r"^[0-9]+[YMDhms]$")

# key -> (check, "~p is not a valid ..." reason)
_KEYS: dict[str, tuple[Any, str]] = {
    "alternate-exchange": (_binary, "alternate exchange name"),
    "dead-letter-exchange": (_binary, "dead letter exchange name"),
    "dead-letter-routing-key": (_binary, "dead letter routing key"),
    "dead-letter-strategy": (_one_of("at-most-once", "at-least-once"),
                             "dead letter strategy"),
    "message-ttl": (_nonneg, "message TTL"),
    "expires": (_pos, "queue expiry"),
    "max-length": (_nonneg, "maximum length"),
    "max-length-bytes": (_nonneg, "maximum length in bytes"),
    "max-in-memory-length": (_nonneg, "maximum memory in bytes"),
    "max-in-memory-bytes": (_nonneg, "maximum memory in bytes"),
    "queue-mode": (_one_of("default", "lazy"), "queue-mode value"),
    "queue-version": (_one_of(1, 2), "queue-version value"),
    "overflow": (_one_of(*OVERFLOW_MODES), "overflow value"),
    "delivery-limit": (_nonneg, "delivery limit"),
    "max-age": (lambda v: isinstance(v, str) and bool(_MAX_AGE.match(v)), "max age"),
    "queue-master-locator": (_one_of("min-masters", "client-local", "random"),
                             "queue-master-locator value"),
    "queue-leader-locator": (_one_of("client-local", "random", "least-leaders", "balanced"),
                             "queue leader locator value"),
    "initial-cluster-size": (_nonneg, "cluster size"),
    "stream-max-segment-size-bytes": (_nonneg, "segment size"),
    # the federation plugin's keys (RabbitMQ with rabbitmq_federation enabled, as most
    # exports that carry them come from): accepted, not applicable (syncmq runs no links)
    "federation-upstream": (_binary, "federation upstream name"),
    "federation-upstream-set": (_binary, "federation upstream set name"),
}
_HA_KEYS = ("ha-mode", "ha-params", "ha-sync-mode", "ha-sync-batch-size",
            "ha-promote-on-shutdown", "ha-promote-on-failure")


def _check_ha(d: dict) -> str | None:
    """rabbit_mirror_queue_misc:validate_policy, its first texts."""
    ha = {k: v for k, v in d.items() if k in _HA_KEYS}
    if not ha:
        return None
    mode = ha.get("ha-mode")
    if mode is None:
        return ("ha-mode must be specified to specify ha-params, ha-sync-mode or "
                "ha-promote-on-shutdown")
    if mode == "all":
        if "ha-params" in ha:
            return 'ha-mode="all" does not take parameters'
    elif mode == "exactly":
        p = ha.get("ha-params")
        if p is None:
            return 'ha-mode="exactly" takes an integer, none given'
        if not _pos(p):
            return f'ha-mode="exactly" takes an integer, {erl(p)} given'
    elif mode == "nodes":
        p = ha.get("ha-params")
        if p is None:
            return 'ha-mode="nodes" takes a list of strings, none given'
        if not isinstance(p, list) or not all(isinstance(x, str) for x in p):
            return f'ha-mode="nodes" takes a list of strings, {erl(p)} given'
    else:
        return f"{erl(mode)} is not a valid ha-mode value"
    return None


def _check_definition(definition: Any, operator: bool) -> None:
    if not isinstance(definition, dict):
        raise PolicyError(_failed(f"definition must be a dictionary: {erl(definition)}"))
    if not definition:
        raise PolicyError(_failed("no policy provided"))
    known = OPERATOR_KEYS if operator else set(_KEYS) | set(_HA_KEYS)
    for key in sorted(definition, key=str.encode):
        if key in known and key in _KEYS:
            check, what = _KEYS[key]
            if not check(definition[key]):
                raise PolicyError(_failed(f"{erl(definition[key])} is not a valid {what}"))
    if not operator:
        err = _check_ha(definition)
        if err:
            raise PolicyError(_failed(err))
    unknown = [(k, definition[k]) for k in definition if k not in known]
    if unknown:
        raise PolicyError(_failed(f"{proplist(unknown)} are not recognised policy settings"))


def _failed(text: str) -> str:
    return f"Validation failed\n\n{text}\n"


# ---- PCRE-ish pattern errors ----

_RE_ERRORS = (
    ("missing ), unterminated subpattern", "missing )"),
    ("unbalanced parenthesis", "unmatched parentheses"),
    ("unterminated character set", "missing terminating ] for character class"),
    ("nothing to repeat", "nothing to repeat"),
    ("multiple repeat", "nothing to repeat"),
    ("bad escape (end of pattern)", "\\ at end of pattern"),
)


def compile_pattern(pattern: str) -> re.Pattern:
    """The pattern as RabbitMQ's ``re:run`` uses it (unanchored search); PolicyError with
    RabbitMQ's text shape (PCRE's message and offset where we know them)."""
    try:
        return re.compile(pattern)
    except re.error as e:
        msg = str(e).split(" at position")[0]
        for py, pcre in _RE_ERRORS:
            if msg.startswith(py):
                msg = pcre
                break
        pos = (e.pos or 0) + 1 if msg == "missing )" else (e.pos or 0)
        raise PolicyError(_failed("pattern should be regular expression but is invalid: "
                                  f'{{"{msg}",{pos}}}')) from None


@dataclass(frozen=True)
class Policy:
    """One validated policy (or operator policy) of a vhost."""

    vhost: str
    name: str
    pattern: str
    apply_to: str
    priority: int | float
    definition: dict
    regex: re.Pattern = field(compare=False, repr=False)
    operator: bool = False

    def value(self) -> dict:
        """The runtime parameter's value, RabbitMQ's shape."""
        return {"pattern": self.pattern, "definition": self.definition,
                "priority": self.priority, "apply-to": self.apply_to}

    def listing(self) -> dict:
        """/api/policies' shape (and definitions' ``policies``)."""
        return {"vhost": self.vhost, "name": self.name, "pattern": self.pattern,
                "apply-to": self.apply_to, "definition": self.definition,
                "priority": self.priority}


def validate(vhost: str, name: str, value: Any, operator: bool = False) -> Policy:
    """A policy value as the parameter store holds it -> :class:`Policy`, or PolicyError
    with RabbitMQ's text (``rabbit_policy:validate``: priority, pattern, apply-to, then the
    definition)."""
    if not isinstance(value, dict):
        raise PolicyError(_failed(f"{erl(value)} not a list"))
    missing = [k for k in ("pattern", "definition") if k not in value]
    if missing:
        raise PolicyError("[" + ",".join(f"{{key_missing,{k}}}" for k in missing) + "]")
    priority = value.get("priority", 0)
    if not isinstance(priority, int | float) or isinstance(priority, bool):
        raise PolicyError(_failed(f"priority should be a number, actually was {erl(priority)}"))
    pattern = value["pattern"]
    if not isinstance(pattern, str):
        raise PolicyError(_failed(f"pattern should be a binary but was {erl(pattern)}"))
    regex = compile_pattern(pattern)
    apply_to = value.get("apply-to", "all")
    if apply_to not in APPLY_TO:
        shown = apply_to if isinstance(apply_to, str) else erl(apply_to)
        raise PolicyError(_failed(
            f"apply-to '{shown}' unrecognised; should be 'queues', 'classic_queues', "
            "'quorum_queues', 'exchanges' or 'all'"))
    definition = value["definition"]
    _check_definition(definition, operator)
    return Policy(vhost, name, pattern, apply_to, priority, dict(definition), regex, operator)


def not_applicable(policy: Policy) -> list[str]:
    """The definition's keys syncmq accepts but does nothing with (logged as a warning)."""
    d = policy.definition
    return [k for k in sorted(d) if k not in APPLICABLE
            and not (k == "dead-letter-strategy" and d[k] == "at-most-once")]


# ---- matching ----

# The policy keys a queue type does not take (RabbitMQ 3.10.8's queue type
# ``capabilities()``, ``unsupported_policies``, read off the node by
# tests/policy_scripts.py's key_applicability): a policy holding one of them is skipped for
# a queue of that type, and the next matching policy applies (``rabbit_policy:matches``).
_STREAM_ONLY = ("max-age", "stream-max-segment-size-bytes", "initial-cluster-size")
UNSUPPORTED = {
    "classic": frozenset(_STREAM_ONLY + ("queue-leader-locator", "delivery-limit",
                                         "dead-letter-strategy")),
    "quorum": frozenset(_STREAM_ONLY + ("queue-mode", "queue-master-locator") + _HA_KEYS),
}


def _applies(p: Policy, kind: str, queue_type: str) -> bool:
    a = p.apply_to
    if kind == "exchange":
        return a in ("exchanges", "all")
    if not (a in ("queues", "all") or a == f"{queue_type}_queues"):
        return False
    unsupported = UNSUPPORTED.get(queue_type)
    return unsupported is None or unsupported.isdisjoint(p.definition)


def match(policies: tuple[Policy, ...], name: str, kind: str,
          queue_type: str = "classic") -> Policy | None:
    """The policy that applies to the queue or exchange ``name`` (``kind`` "queue" or
    "exchange"): the highest priority among those whose pattern matches, whose apply-to
    covers it and (a queue) whose keys its type supports (:data:`UNSUPPORTED`);
    ``policies`` are in name order, so a tie goes to the first by name.
    O(len(policies) x keys)."""
    best = None
    for p in policies:
        if (best is None or p.priority > best.priority) and _applies(p, kind, queue_type) \
                and p.regex.search(name) is not None:
            best = p
    return best


def effective_definition(policy: Policy | None, op: Policy | None) -> dict:
    """``rabbit_policy:merge_operator_definitions``: both definitions' keys, sorted; where
    both set a key the lower value wins (every operator key merges with ``min``)."""
    if policy is None and op is None:
        return {}
    if op is None:
        return dict(sorted(policy.definition.items()))
    if policy is None:
        return dict(sorted(op.definition.items()))
    out = dict(policy.definition)
    for k, v in op.definition.items():
        out[k] = min(out[k], v) if k in out else v
    return dict(sorted(out.items()))


# ---- effective settings ----

_MIN_KEYS = {"expires": "expires", "message-ttl": "message_ttl", "max-length": "max_length",
             "max-length-bytes": "max_bytes"}
_ARG_KEYS = {"dead-letter-exchange": "dlx", "dead-letter-routing-key": "dlrk",
             "overflow": "overflow"}


def queue_settings(arguments: dict | None, definition: dict) -> QueueOptions:
    """The queue's effective settings from its ``x-`` arguments and the effective policy
    definition, each key resolved as RabbitMQ's classic queue does (``res_min`` / ``res_arg``,
    see the module docstring). Argument-only settings come from the arguments."""
    base = queue_options(arguments)
    if not definition:
        return base
    args = arguments or {}
    changes: dict[str, Any] = {}
    for key, attr in _MIN_KEYS.items():
        pol = definition.get(key)
        if pol is None:
            continue
        cur = getattr(base, attr)
        changes[attr] = pol if cur is None else min(pol, cur)
    for key, attr in _ARG_KEYS.items():
        pol = definition.get(key)
        if pol is not None and f"x-{key}" not in args:
            changes[attr] = pol
    if changes.get("expires") == 0:
        changes["expires"] = None
    return replace(base, **changes) if changes else base


def alternate_exchange(arguments: dict | None, definition: dict) -> str | None:
    """``rabbit_policy:get_arg(<<"alternate-exchange">>, ...)``: the argument, else the
    policy's."""
    ae = (arguments or {}).get("alternate-exchange")
    if ae is not None:
        return ae if isinstance(ae, str) else None
    pol = definition.get("alternate-exchange")
    return pol if isinstance(pol, str) else None
