"""Runtime parameters: the one store of policies, limits, shovels and federation upstreams.

RabbitMQ keeps every piece of configuration that is neither a user nor an AMQP entity as a
*runtime parameter* ``(component, vhost, name) -> JSON value``, plus *global parameters*
``name -> JSON value``; so does syncmq, here, reachable as ``broker.parameters``. A feature
(policies, operator policies, vhost limits, shovels) is a *component*: it registers a
``validate`` callback (refuses a value with :class:`ParameterError`, whose text is RabbitMQ's
reason) and an ``apply`` callback (puts a value in force; ``None`` when it is cleared), and
never keeps a copy of the values of its own. Components RabbitMQ knows that nobody registered
(:data:`KNOWN_COMPONENTS`; the server registers them all, federation upstreams with a
``validate`` only) are stored and listed unvalidated, so that definitions round-trip; any other component name is refused as RabbitMQ
refuses it ("component X not found").

Durability: every change is journaled (PARAM_SET/PARAM_CLEAR, GLOBAL_SET/GLOBAL_CLEAR, see
``journal/format.py``) through ``Durability``, which marks the calling thread: the caller
answers only after the journal barrier (``Api.handle`` waits for HTTP, as for a declare).
Recovery hands the stored values back with :meth:`Parameters.restore` after exchanges, queues
and bindings exist, and each registered component's ``apply`` runs for them (a component that
registers later gets its stored values applied at :meth:`register`). Deleting a vhost clears
its parameters (:meth:`clear_vhost`, journaled, ``apply(vhost, name, None)`` for each).

Locks (both owned by this store; nothing else takes them):

* ``_change`` (re-entrant) serialises changes: validate, journal append, store and the
  component's ``apply`` run under it, so components see changes in the order they were
  journaled, and an ``apply`` may itself set or clear parameters. A caller must not hold a
  broker lock (vhost, queue, channel) when it calls :meth:`set`, :meth:`clear`,
  :meth:`register` or :meth:`clear_vhost`: ``apply`` takes such locks.
* ``_lock`` (a leaf) guards the swaps of the value maps. Readers (:meth:`get`, :meth:`list`,
  :meth:`values`) take it only to fetch a map; the maps are replaced on every change, never
  mutated, so what a reader got stays consistent without a lock.

Values are stored as decoded from their canonical JSON text (so a caller's object is never
shared) and handed out as they are: callers must not mutate them.

Invariants (:meth:`Parameters._check`): every stored value is JSON that encodes to the text
last journaled for it; no empty inner map is kept. (A component with stored values may be
unregistered for a while: recovery restores values before late components register.)
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

log = logging.getLogger("syncmq.parameters")

__all__ = ["Parameters", "ParameterError", "NotFound", "KNOWN_COMPONENTS", "HIDDEN_COMPONENTS",
           "validation_failed", "require_object_or_list"]

#: Components RabbitMQ's core and plugins define that syncmq accepts even when nothing in
#: syncmq registered them (stored and listed unvalidated; definitions round-trip).
KNOWN_COMPONENTS = frozenset({
    "policy", "operator_policy", "vhost-limits", "shovel", "federation-upstream",
    "federation-upstream-set",
})
#: Components RabbitMQ leaves out of ``/api/parameters`` and definitions' ``parameters`` and
#: refuses to set through ``/api/parameters`` (policies have ``/api/policies`` and their own
#: definitions key). RabbitMQ 3.10 lists ``operator_policy`` there, and exports it in
#: ``parameters``.
HIDDEN_COMPONENTS = frozenset({"policy"})

Validate = Callable[[str, str, Any], None]
Apply = Callable[[str, str, Any], None]
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class ParameterError(Exception):
    """A refused value or component; ``str(exc)`` is RabbitMQ's reason text (the API answers
    400 ``{"error": "bad_request", "reason": ...}``)."""


def validation_failed(*errors: str) -> ParameterError:
    """RabbitMQ's text for refused values: ``Validation failed\n\n`` then one line per
    error (what ``rabbit_runtime_parameters`` answers, e.g. for an unknown component)."""
    return ParameterError("Validation failed\n\n" + "".join(e + "\n" for e in errors))


def require_object_or_list(name: str, value: Any) -> None:
    """A value RabbitMQ's validators would crash on (500) is refused with this 400."""
    if not isinstance(value, (dict, list)):
        raise validation_failed(f"value of {name} must be a JSON object or list")


class NotFound(KeyError):
    """The vhost (or the parameter being cleared) does not exist (the API answers 404)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


@dataclass(frozen=True, slots=True)
class _Component:
    validate: Validate | None
    apply: Apply | None
    # (vhost, name, value, user): checks that depend on who sets the value (RabbitMQ's
    # validate/5 gets the user: a shovel's direct URI needs the user's access to its vhost);
    # not called without a user (definitions import, recovery)
    validate_user: Callable[[str, str, Any, str], None] | None = None


def encode_value(value: Any) -> bytes:
    """The canonical JSON text of a value (what the journal stores); ParameterError if the
    value is not JSON (NaN, a non-string key, an object Python's json cannot write)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                          sort_keys=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ParameterError(f"value is not JSON: {e}") from None


class Parameters:
    """The store; see the module docstring for ownership, locks and invariants."""

    def __init__(self, durability: Any = None,
                 vhost_exists: Callable[[str], bool] = lambda vhost: True) -> None:
        self._durability = durability  # ``broker.durability.Durability`` or None (memory)
        self._vhost_exists = vhost_exists
        self._change = threading.RLock()
        self._lock = threading.Lock()
        self._components: dict[str, _Component] = {}
        # component -> vhost -> read-only {name: value}; each map replaced, never mutated
        self._params: dict[str, dict[str, Mapping[str, Any]]] = {}
        self._globals: Mapping[str, Any] = _EMPTY

    # -- components -------------------------------------------------------------------------

    def register(self, component: str, *, validate: Validate | None = None,
                 apply: Apply | None = None,
                 validate_user: Callable[[str, str, Any, str], None] | None = None) -> None:
        """Make ``component`` known, with its callbacks; the values already stored for it
        (recovered before it registered) are applied at once. Registering twice is an error."""
        with self._change:
            if component in self._components:
                raise ValueError(f"component {component!r} already registered")
            self._components[component] = _Component(validate, apply, validate_user)
            if apply is not None:
                for vhost, values in list(self._params.get(component, {}).items()):
                    for name, value in values.items():
                        self._apply(component, apply, vhost, name, value)

    def components(self) -> list[str]:
        """Every component a value may be set for (registered or known), sorted."""
        return sorted(KNOWN_COMPONENTS | set(self._components))

    def _component(self, component: str) -> _Component | None:
        comp = self._components.get(component)
        if comp is None and component not in KNOWN_COMPONENTS:
            raise validation_failed(f"component {component} not found")
        return comp

    @staticmethod
    def _apply(component: str, apply: Apply, vhost: str, name: str, value: Any) -> None:
        """Run a component's apply; a failure is logged, never undoes the stored change (it
        is journaled already, and recovery would apply it again)."""
        try:
            apply(vhost, name, value)
        except Exception:
            log.exception("applying runtime parameter failed",
                          extra={"component": component, "vhost": vhost, "parameter": name})

    # -- vhost parameters -------------------------------------------------------------------

    def validate(self, component: str, vhost: str, name: str, value: Any,
                 check_vhost: bool = True, user: str | None = None) -> bytes:
        """Every check :meth:`set` makes, changing nothing (definitions import checks a whole
        file first, whose vhosts may not exist yet: ``check_vhost=False``); returns the
        value's JSON text. ParameterError or NotFound. ``user``: who sets it (the
        component's ``validate_user`` check)."""
        comp = self._component(component)
        if check_vhost and not self._vhost_exists(vhost):
            raise NotFound(vhost)
        for what, s in (("component", component), ("name", name)):
            if len(s.encode("utf-8", "surrogatepass")) > 0xFFFF:
                raise validation_failed(f"{what} is longer than 65535 bytes")
        if value is None:  # apply's None means cleared: a value is never null
            raise validation_failed(f"value of {name} must not be null")
        text = encode_value(value)
        if comp is None:
            require_object_or_list(name, value)
        else:
            if comp.validate is not None:
                comp.validate(vhost, name, value)
            if comp.validate_user is not None and user is not None:
                comp.validate_user(vhost, name, value, user)
        return text

    def set(self, component: str, vhost: str, name: str, value: Any,
            user: str | None = None) -> bool:
        """Validate, journal, store, then ``apply(vhost, name, value)`` (under ``_change``);
        True if the parameter is new (the API's 201, else 204). Setting the value a
        parameter already has changes nothing (RabbitMQ does not notify then) but still
        makes the caller's answer wait for the journal. ``user`` is the acting user
        (logged)."""
        with self._change:
            text = self.validate(component, vhost, name, value, user=user)
            comp = self._components.get(component)
            old = self._params.get(component, {}).get(vhost, _EMPTY)
            if name in old and encode_value(old[name]) == text:
                if self._durability is not None:
                    self._durability.touched()
                return False
            if self._durability is not None:
                self._durability.parameter_set(vhost, component, name, text)
            stored = json.loads(text)
            with self._lock:
                inner = dict(old)
                inner[name] = stored
                self._params.setdefault(component, {})[vhost] = MappingProxyType(inner)
            log.info("runtime parameter set", extra={"component": component, "vhost": vhost,
                                                     "parameter": name, "user": user})
            if comp is not None and comp.apply is not None:
                self._apply(component, comp.apply, vhost, name, stored)
            return name not in old

    def clear(self, component: str, vhost: str, name: str, user: str | None = None) -> bool:
        """Remove a parameter (journaled), then ``apply(vhost, name, None)``; False if it did
        not exist (nothing changed)."""
        with self._change:
            by_vhost = self._params.get(component, {})
            old = by_vhost.get(vhost, _EMPTY)
            if name not in old:
                return False
            if self._durability is not None:
                self._durability.parameter_cleared(vhost, component, name)
            with self._lock:
                inner = dict(old)
                del inner[name]
                if inner:
                    by_vhost[vhost] = MappingProxyType(inner)
                else:
                    del by_vhost[vhost]
                    if not by_vhost:
                        del self._params[component]
            log.info("runtime parameter cleared", extra={"component": component,
                                                         "vhost": vhost, "parameter": name,
                                                         "user": user})
            comp = self._components.get(component)
            if comp is not None and comp.apply is not None:
                self._apply(component, comp.apply, vhost, name, None)
            return True

    def clear_vhost(self, vhost: str) -> int:
        """The vhost is deleted: clear every parameter it has (each journaled, each applied
        with None). Returns how many."""
        with self._change:
            keys = [(c, name) for c, by_vhost in list(self._params.items())
                    for name in by_vhost.get(vhost, _EMPTY)]
            for component, name in keys:
                self.clear(component, vhost, name)
            return len(keys)

    def get(self, component: str, vhost: str, name: str) -> Any | None:
        """The value, or None."""
        return self._params.get(component, {}).get(vhost, _EMPTY).get(name)

    def values(self, component: str, vhost: str) -> Mapping[str, Any]:
        """The read-only ``{name: value}`` map of a component in a vhost, without copying (the
        hot path of policy matching): a snapshot that later changes do not alter."""
        with self._lock:
            return self._params.get(component, {}).get(vhost, _EMPTY)

    def list(self, component: str | None = None, vhost: str | None = None) -> list[dict]:
        """RabbitMQ's shape ``[{"vhost", "component", "name", "value"}]``, sorted as RabbitMQ
        lists them (vhost, name; then component); ``component``/``vhost`` narrow it."""
        with self._lock:
            comps = list(self._params.items())
        out = []
        for comp, by_vhost in comps:
            if component is not None and comp != component:
                continue
            for vh, values in list(by_vhost.items()):
                if vhost is not None and vh != vhost:
                    continue
                out.extend({"vhost": vh, "component": comp, "name": n, "value": v}
                           for n, v in values.items())
        out.sort(key=lambda p: (p["vhost"], p["name"], p["component"]))
        return out

    # -- global parameters ------------------------------------------------------------------

    def set_global(self, name: str, value: Any, user: str | None = None) -> bool:
        """Set a global parameter (journaled; no component, no validation but JSON); True if
        it is new."""
        with self._change:
            if len(name.encode("utf-8", "surrogatepass")) > 0xFFFF:
                raise validation_failed("name is longer than 65535 bytes")
            text = encode_value(value)
            old = self._globals
            if name in old and encode_value(old[name]) == text:
                if self._durability is not None:
                    self._durability.touched()
                return False
            if self._durability is not None:
                self._durability.global_set(name, text)
            new = dict(old)
            new[name] = json.loads(text)
            with self._lock:
                self._globals = MappingProxyType(new)
            log.info("global parameter set", extra={"parameter": name, "user": user})
            return name not in old

    def clear_global(self, name: str, user: str | None = None) -> bool:
        with self._change:
            old = self._globals
            if name not in old:
                return False
            if self._durability is not None:
                self._durability.global_cleared(name)
            new = dict(old)
            del new[name]
            with self._lock:
                self._globals = MappingProxyType(new)
            log.info("global parameter cleared", extra={"parameter": name, "user": user})
            return True

    def get_global(self, name: str) -> Any | None:
        return self._globals.get(name)

    def list_global(self) -> list[dict]:
        """``[{"name", "value"}]`` sorted by name."""
        return [{"name": n, "value": v} for n, v in sorted(self._globals.items())]

    # -- recovery ---------------------------------------------------------------------------

    def restore(self, parameters: Iterable[tuple[str, str, str, bytes]],
                global_parameters: Iterable[tuple[str, bytes]]) -> int:
        """Recovery: put the journaled values back (``(vhost, component, name, json)`` and
        ``(name, json)``, as ``journal.format.ParamSet``/``GlobalSet``) without journaling
        them, then apply each registered component's. A value that is not JSON is logged and
        skipped. Returns how many parameters (vhost and global) were restored."""
        n = 0
        with self._change:
            applied: list[tuple[str, str, str, Any]] = []
            for vhost, component, name, raw in parameters:
                try:
                    value = json.loads(raw)
                except ValueError as e:
                    log.error("journal: runtime parameter %s/%s/%s is not JSON, skipped: %s",
                              component, vhost, name, e)
                    continue
                with self._lock:
                    by_vhost = self._params.setdefault(component, {})
                    inner = dict(by_vhost.get(vhost, _EMPTY))
                    inner[name] = value
                    by_vhost[vhost] = MappingProxyType(inner)
                applied.append((component, vhost, name, value))
                n += 1
            globals_ = dict(self._globals)
            for name, raw in global_parameters:
                try:
                    globals_[name] = json.loads(raw)
                    n += 1
                except ValueError as e:
                    log.error("journal: global parameter %s is not JSON, skipped: %s", name, e)
            with self._lock:
                self._globals = MappingProxyType(globals_)
            for component, vhost, name, value in applied:
                comp = self._components.get(component)
                if comp is not None and comp.apply is not None:
                    self._apply(component, comp.apply, vhost, name, value)
        return n

    # -- checks -----------------------------------------------------------------------------

    def _check(self) -> None:
        """Assert the invariants of the module docstring (tests; O(parameters))."""
        with self._change, self._lock:
            for comp, by_vhost in self._params.items():
                assert by_vhost, comp
                for vhost, values in by_vhost.items():
                    assert isinstance(values, MappingProxyType) and values, (comp, vhost)
                    for name, value in values.items():
                        assert isinstance(name, str)
                        assert json.loads(encode_value(value)) == value, (comp, vhost, name)
            assert isinstance(self._globals, MappingProxyType)
            for name, value in self._globals.items():
                assert json.loads(encode_value(value)) == value, name
