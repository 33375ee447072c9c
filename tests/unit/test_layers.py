"""The import graph has the layers README.md's Layout states, read from the source with ast (nothing is imported).

Edges (the WebSub view, the API, the admin, the commands, the tasks) call services and
selectors; services call models, the pure modules and the outbound HTTP modules;
nothing below calls up. Imports inside functions count too.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("subscriptions", "tasks", "websubhub")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Every module path.py imports, and each `from m import name` also as m.name (name may be a submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _matching(patterns: tuple[str, ...]) -> list[str]:
    return [name for name in MODULES if any(name == p or name.startswith(p + ".") for p in patterns)]


def _offences(importers: tuple[str, ...], forbidden: tuple[str, ...], *, allowed: tuple[str, ...] = ()) -> list[str]:
    found = []
    for name in _matching(importers):
        for imported in sorted(_imported(MODULES[name])):
            # (`from subscriptions import services` names the package too: a parent of what is allowed)
            if any(imported == a or imported.startswith(a + ".") or a.startswith(imported + ".") for a in allowed):
                continue
            if any(imported == f or imported.startswith(f + ".") for f in forbidden):
                found.append(f"{name} imports {imported}")
    return found


# The edges: what answers a request, a command or a message.
EDGES = (
    "subscriptions.api",
    "subscriptions.admin",
    "subscriptions.admin_site",
    "subscriptions.hub",
    "subscriptions.status_page",
    "subscriptions.management",
    "subscriptions.health",
    "subscriptions.templatetags",
    "tasks",
)
# The pure modules: rules and HTTP exchanges with no database.
PURE = ("subscriptions.topics", "subscriptions.delivery", "subscriptions.verification")
ORM = ("django.db", "subscriptions.models", "subscriptions.selectors", "subscriptions.services")


@pytest.mark.parametrize(
    ("importers", "forbidden", "allowed", "rule"),
    [
        (PURE, ("django", *ORM), (), "the pure modules import no Django, no models, no reads, no writes"),
        (
            (
                "subscriptions.rules",
                "subscriptions.netguard",
                "subscriptions.http",
                "subscriptions.http_transport",
                "subscriptions.outbound_tls",
            ),
            ("django.db", "subscriptions.selectors", "subscriptions.services"),
            (),
            "input rules and outbound HTTP touch no database (rules may use the models' length constants)",
        ),
        (
            ("subscriptions.models",),
            ("subscriptions.selectors", "subscriptions.services", *EDGES),
            (),
            "models call nothing up",
        ),
        (
            ("subscriptions.selectors", "subscriptions.filters"),
            ("subscriptions.services", *EDGES),
            (),
            "reads call no writes and no edge",
        ),
        (("subscriptions.services",), EDGES, (), "services call no edge (tasks are sent by name, websubhub/queues.py)"),
        (
            ("tasks",),
            ("subscriptions",),
            ("subscriptions.services",),
            "tasks are thin: they call services only",
        ),
        (
            EDGES,
            ("tasks",),
            ("tasks.retry",),
            "edges send tasks through services, never import them",
        ),
        (
            ("subscriptions.api", "subscriptions.hub", "subscriptions.status_page", "subscriptions.management"),
            ("subscriptions.admin",),
            (),
            "the API, the WebSub endpoint and the commands share nothing with the admin",
        ),
        (
            ("subscriptions.metrics.outcomes", "subscriptions.metrics.recording", "subscriptions.metrics.process"),
            ORM,
            (),
            "metric recording needs no database (only the scrape-time collectors read it)",
        ),
    ],
)
def test_layer_rule_holds(
    importers: tuple[str, ...], forbidden: tuple[str, ...], allowed: tuple[str, ...], rule: str
) -> None:
    assert _matching(importers), f"no module matches {importers}: the rule would check nothing"

    assert _offences(importers, forbidden, allowed=allowed) == [], rule


def test_no_module_reads_a_hub_setting_from_djangos_settings() -> None:
    # hub_settings (websubhub/hub_settings.py) is the one reader: checked, typed, reached by override_settings.
    readers = []
    for name, path in MODULES.items():
        if name in ("websubhub.settings", "websubhub.hub_settings"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("HUB_")
                and isinstance(node.value, ast.Name)
                and node.value.id == "settings"
            ):
                readers.append(f"{name}:{node.lineno} settings.{node.attr}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "getattr" and node.args:
                target = node.args[0]
                if isinstance(target, ast.Name) and target.id == "settings":
                    readers.append(f"{name}:{node.lineno} getattr(settings, ...)")
    assert readers == []


def test_the_settings_declaration_imports_the_app_only_when_it_parses_a_value() -> None:
    # The app's modules read hub_settings; importing them at the top would be an import cycle.
    top = _imported(MODULES["websubhub.hub_settings"], top_level_only=True)

    assert sorted(name for name in top if name.startswith(("subscriptions", "tasks"))) == []


def test_the_checker_sees_imports_inside_functions_and_relative_ones() -> None:
    # given: a module that imports the ORM only inside a function, relatively
    names = _imported(MODULES["subscriptions.services.delivering"])

    # then
    assert "subscriptions.models" in names
    assert "django.db.transaction" in names
    # and a rule that does not hold is reported, module by module
    assert "subscriptions.services.delivering imports subscriptions.models" in _offences(
        ("subscriptions.services",), ("subscriptions.models",)
    )
    assert _offences(("tasks",), ("subscriptions",), allowed=("subscriptions.services",)) == []
    assert "tasks.deliver imports subscriptions.services" in _offences(("tasks",), ("subscriptions",))
