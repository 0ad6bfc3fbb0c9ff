"""The layering of DESIGN.md, checked by reading every module's imports (ast).

Imports point downwards only: cli/config -> server -> reactor/workers -> methods ->
{protocol, broker} -> {queues, journal} -> wire. protocol and broker never import each other.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "syncmq"

# layer name -> rank; a module may import only modules of a strictly lower rank, or its own
# package. Same-rank siblings listed in ALLOWED_SAME may import each other one way.
RANK = {
    "testing": 8,
    "cli": 7, "config": 7, "embedded": 7, "__main__": 7, "ctl": 7, "ctl_remote": 7,
    "ctl_params": 7, "ctl_migration": 7, "ctl_rules": 7, "ctl_policies": 7, "ctl_status": 7,
    "ctl_shovel": 7,
    "ctl_limits": 7, "ctl_errors": 7, "ctl_output": 7,
    "perf": 7,
    "server": 6, "alarms": 5, "management": 6,
    "reactor": 5, "shovel": 5, "workers": 4,
    "methods": 3,
    "protocol": 2, "broker": 2,
    "queues": 1, "journal": 1, "memory": 1,
    "wire": 0, "options": 0,
    "__init__": -1,
}
ALLOWED_SAME = {("__main__", "cli"), ("embedded", "config"), ("cli", "config"), ("server", "management"),
                ("ctl", "ctl_remote"), ("ctl", "ctl_params"), ("ctl_params", "ctl_remote"),
                ("ctl_remote", "ctl_migration"), ("ctl", "ctl_rules"),
                ("ctl_remote", "ctl_rules"), ("ctl", "ctl_policies"),
                ("ctl_policies", "ctl_remote"),
                ("ctl", "ctl_status"), ("ctl_status", "ctl_remote"),
                ("ctl", "ctl_shovel"), ("ctl_shovel", "ctl_remote"),
                ("ctl", "ctl_limits"), ("ctl_limits", "ctl_remote"), ("ctl_limits", "ctl_params"),
                ("ctl", "ctl_errors"), ("ctl_remote", "ctl_errors"), ("ctl_rules", "ctl_errors"),
                ("ctl_params", "ctl_errors"), ("ctl_policies", "ctl_errors"),
                ("ctl_remote", "ctl_output"), ("ctl_output", "ctl_errors")}


def _layer(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "syncmq"
    return parts[1] if len(parts) > 1 else "__init__"


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        yield name, path


_ALL: set[str] = set()


def _imports(name: str, path: pathlib.Path, runtime_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    if runtime_only:
        # imports under ``if TYPE_CHECKING:`` exist for annotations only; they cannot make a
        # cycle at run time (the direction rule still applies to them)
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                node.body = []
    if name == "syncmq":
        # the package's lazy ``__getattr__`` re-exports the public API (syncmq.Server) on
        # first use: not an import of the package itself
        tree.body = [n for n in tree.body
                     if not (isinstance(n, ast.FunctionDef) and n.name == "__getattr__")]
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("syncmq"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("syncmq"):
                # ``from pkg import submodule`` imports the submodule, not (only) the package
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in _ALL]
                found.update(subs if subs else [mod])
    return found


_ALL.update(name for name, _ in _modules())


@pytest.mark.parametrize("name,path", list(_modules()), ids=lambda v: str(v))
def test_imports_point_downwards(name, path):
    me = _layer(name)
    for imp in _imports(name, path):
        other = _layer(imp)
        if other == me or other == "__init__":
            continue
        if (me, other) in ALLOWED_SAME:
            continue
        assert RANK[other] < RANK[me], f"{name} imports {imp}: {other} is not below {me}"
        assert {me, other} != {"protocol", "broker"}, f"{name} imports {imp}"


def test_no_import_cycles():
    graph = {name: _imports(name, path, runtime_only=True) for name, path in _modules()}
    names = set(graph)
    for k in graph:
        graph[k] = {i for i in graph[k] if i in names and i != k}
    visiting, done = set(), set()

    def visit(n, stack):
        if n in done:
            return
        assert n not in visiting, "import cycle: " + " -> ".join(stack + [n])
        visiting.add(n)
        for m in graph[n]:
            visit(m, stack + [n])
        visiting.discard(n)
        done.add(n)

    for n in graph:
        visit(n, [])
