"""requirements.txt alone provides every module the runtime imports (scripts/check-runtime proves it end to end)."""

import ast
import importlib.util
import re
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
OURS = {"websubhub", "subscriptions", "tasks"}
# What runs in production: the project's packages and the files gunicorn and manage.py load.
RUNTIME_SOURCES = [*ROOT.glob("websubhub/**/*.py"), *ROOT.glob("subscriptions/**/*.py"), *ROOT.glob("tasks/*.py")]
RUNTIME_SOURCES += [ROOT / "gunicorn.conf.py", ROOT / "manage.py"]
# The broker transports the hub is documented to run on; kombu imports them only when the URL asks.
TRANSPORTS = ["kombu.transport.redis", "kombu.transport.pyamqp", "kombu.transport.filesystem"]


def _top_level_imports(path: Path, *, unconditional_only: bool = False) -> set[str]:
    """Top-level names of the modules a file imports; unconditional_only: only its module-level statements."""
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in tree.body if unconditional_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - OURS - set(sys.stdlib_module_names) - {"__future__"}


def _runtime_closure() -> set[str]:
    """Canonical names of requirements.txt's distributions and everything they require, extras included."""
    wanted = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            wanted.append(Requirement(line))
    seen: set[str] = set()
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        key = name + "[" + ",".join(sorted(requirement.extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        seen.add(name)
        try:
            declared = requires(name) or []
        except PackageNotFoundError:
            continue
        for text in declared:
            dependency = Requirement(text)
            extras = requirement.extras or {""}
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": extra}) for extra in extras):
                wanted.append(dependency)
    return {key for key in seen if "[" not in key}


def _providers(module: str) -> set[str]:
    return {canonicalize_name(name) for name in packages_distributions().get(module, [])}


def test_every_module_the_runtime_and_its_broker_transports_import_comes_from_requirements_txt() -> None:
    # given what the hub's own code imports, and what the broker transports it runs on import
    imported = set().union(*(_top_level_imports(path) for path in RUNTIME_SOURCES))
    for transport in TRANSPORTS:
        # Their guarded imports (`if os.name == "nt":`, optional speedups) are not requirements.
        imported |= _top_level_imports(Path(importlib.util.find_spec(transport).origin), unconditional_only=True)
    # then each such module is installed by requirements.txt or what it requires, not by the dev extras
    closure = _runtime_closure()
    missing = {module: sorted(_providers(module)) for module in imported if not _providers(module) & closure}
    assert not missing, f"imported at runtime but not installed by requirements.txt: {missing}"


def test_the_closure_reads_extras_and_markers() -> None:
    closure = _runtime_closure()
    # psycopg[binary] brings psycopg-binary; celery brings kombu, which brings amqp.
    assert {"psycopg", "psycopg-binary", "celery", "kombu", "amqp"} <= closure
    assert not {"pytest", "ruff", "schemathesis", "playwright"} & closure
    assert re.fullmatch(r"[a-z0-9-]+", next(iter(closure)))
