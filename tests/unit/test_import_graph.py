"""The import graph of pitstop/, read with ``ast`` (nothing is imported): the layers the README describes.

- no import cycle, counting imports inside functions too (a function-level import only hides a cycle);
  ``if TYPE_CHECKING:`` blocks aside (they name types, nothing runs);
- the engine imports the plug-in contract, never a plug-in module (at any level, inside functions too), and
  never Prefect;
- Prefect is imported by one adapter module only (``flows/*.py`` are thin entry files outside the package);
- the installed distribution holds no top-level package ``checks`` or ``flows``.
"""

from __future__ import annotations

import ast
import re
import sysconfig
import tomllib
from importlib.metadata import Distribution, distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "pitstop"

ENGINE = {"pitstop.plan", "pitstop.executor", "pitstop.runner", "pitstop.resume", "pitstop.audit",
          "pitstop.context", "pitstop.runbook", "pitstop.dag", "pitstop.registry", "pitstop.plugin",
          "pitstop.runstate", "pitstop.window"}
PREFECT_ADAPTER = "pitstop.prefect_adapter"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(name: str, *, module_level_only: bool, type_checking: bool = False) -> set[str]:
    """Modules ``name`` imports (absolute names; ``from pkg import sub`` counts ``pkg.sub`` when it is one)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node) and not type_checking:
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join([*base, node.module] if node.module else base)
                else:
                    mod = node.module or ""
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES)
            if module_level_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if isinstance(node, ast.ClassDef):
                    visit(node.body)
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list) and children and isinstance(children[0], ast.stmt | ast.excepthandler):
                    visit([c for c in children if isinstance(c, ast.stmt)] if field != "handlers"
                          else [s for h in children for s in h.body])

    visit(tree.body)
    return found


def plugin_modules() -> set[str]:
    """The modules the ``pitstop.plugins`` entry points name, and the areas' packages they live in."""
    eps = [ep for ep in installed().entry_points if ep.group == "pitstop.plugins"]
    named = {ep.value.partition(":")[0] for ep in eps}
    areas = ("pitstop.fleet", "pitstop.backup", "pitstop.maintenance_mode", "pitstop.cleanup")
    found = named | {m for m in MODULES if m.startswith((*areas, "pitstop.checks."))}
    return found - FLEET_SHARED


# The fleet's infrastructure that the engine and the SSH connector use (fan a step out over hosts, resolve the
# inventory, verify host keys): part of the fleet package, but no step module; they import none either.
FLEET_SHARED = {"pitstop.fleet", "pitstop.fleet.fanout", "pitstop.fleet.inventory", "pitstop.fleet.hostkeys"}


def test_the_fleet_infrastructure_imports_no_plug_in() -> None:
    plugins = plugin_modules()
    assert "pitstop.fleet.tuning" in plugins
    bad = {m: sorted(i for i in imports(m, module_level_only=False) if i in plugins) for m in FLEET_SHARED}
    assert {m: v for m, v in bad.items() if v} == {}


def test_no_import_cycle_at_any_level() -> None:
    graph = {m: {i for i in imports(m, module_level_only=False) if i in MODULES and i != m} for m in MODULES}
    # a package's __init__ runs before its submodules: importing ``pkg.sub`` also imports ``pkg``
    for m in list(graph):
        graph[m] |= {p for i in graph[m] for p in _parents(i) if p in MODULES and p != m and not m.startswith(p + ".")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                dfs(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_the_engine_imports_the_contract_never_a_plug_in_or_prefect() -> None:
    plugins = plugin_modules()
    assert "pitstop.maintenance_mode.steps" in plugins and "pitstop.backup.steps" in plugins
    bad = {m: sorted(i for i in imports(m, module_level_only=False)
                     if i in plugins or i == "prefect" or i.startswith(("prefect.", PREFECT_ADAPTER)))
           for m in ENGINE if m in MODULES}
    assert {m: v for m, v in bad.items() if v} == {}


def test_prefect_is_imported_by_one_adapter_package() -> None:
    users = sorted(m for m in MODULES if any(i == "prefect" or i.startswith("prefect.")
                                             for i in imports(m, module_level_only=False)))
    assert PREFECT_ADAPTER in users
    assert [m for m in users if m != PREFECT_ADAPTER and not m.startswith(PREFECT_ADAPTER + ".")] == []
    for flow_file in (ROOT / "flows").glob("*.py"):  # thin entry files: they re-export the adapter's flows
        text = flow_file.read_text()
        assert not re.search(r"^\s*(from|import) prefect", text, re.M), flow_file


def installed() -> Distribution:
    """pitstop's installed metadata (site-packages), not the ``pitstop.egg-info`` build folder beside the code."""
    found = [d for d in distributions(path=[sysconfig.get_paths()["purelib"]]) if d.metadata["Name"] == "pitstop"]
    assert found, "pitstop is not installed in this environment (make install)"
    return found[0]


def test_installed_distribution_has_no_top_level_checks_or_flows() -> None:
    dist = installed()
    top = set((dist.read_text("top_level.txt") or "").split())
    assert top == {"pitstop"}, top
    files = [str(f) for f in dist.files or []]
    assert not [f for f in files if f.split("/")[0] in ("checks", "flows") or f.startswith(("checks.", "flows."))]
    for f in dist.files or []:  # an editable install records a path finder: it maps pitstop and nothing else
        if f.name.startswith("__editable__") and f.suffix == ".py":
            mapping = re.search(r"^MAPPING[^=]*=\s*(\{.*?\})$", f.locate().read_text(), re.M)
            assert mapping is not None and set(ast.literal_eval(mapping.group(1))) == {"pitstop"}, mapping
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["pitstop*"]  # what a wheel built from this tree holds


LAYERS = {  # module prefix -> what it must not import, at any level (inside functions and TYPE_CHECKING too)
    "pitstop.notify.notifier": ("pitstop.context", "pitstop.executor"),
    "pitstop.notify.feed": ("pitstop.context", "pitstop.executor"),
    "pitstop.notify.notices": ("pitstop.context", "pitstop.executor"),
    "pitstop.notify.channels": ("pitstop.context", "pitstop.executor"),
    "pitstop.report.builder": ("pitstop.cleanup", "pitstop.fleet", "pitstop.maintenance_mode", "pitstop.context"),
    "pitstop.pgretry": ("pitstop.context",),
    "pitstop.connectors": ("pitstop.context", "pitstop.executor", "pitstop.maintenance_mode", "pitstop.cleanup",
                           "pitstop.backup"),
}


def test_layers_lean_the_right_way() -> None:
    wrong = {}
    for m in MODULES:
        banned = next((b for prefix, b in LAYERS.items() if m == prefix or m.startswith(prefix + ".")), None)
        if banned:
            found = sorted(i for i in imports(m, module_level_only=False, type_checking=True)
                           if any(i == b or i.startswith(b + ".") for b in banned))
            if found:
                wrong[m] = found
    assert wrong == {}


def test_only_the_cli_imports_the_prefect_adapter() -> None:
    """The adapter sits on top (it imports the runner, notify, report, deploy): below it nothing imports it, not
    even inside a function; what the engine needs from Prefect is handed in. The CLI modules choose the engine."""
    users = sorted(m for m in MODULES if not m.startswith(PREFECT_ADAPTER) and not m.startswith("pitstop.cli")
                   and any(i == PREFECT_ADAPTER or i.startswith(PREFECT_ADAPTER + ".")
                           for i in imports(m, module_level_only=False)))
    assert users == []
