"""The import directions `docs/architecture.md` states, checked on the source (every import, late ones included).

    switchboard/  (the composition root: CLI, `run`, doctor wiring)  may import everything below
        bots/     may import core/ and knowledge/
        core/     may import knowledge/
        knowledge/ imports none of ours

Nothing imports `switchboard/` but itself (and the tests). Imports are read with `ast`, so an import inside a
function counts as much as one at the top, and `importlib.import_module("…")` with a literal name counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("core", "knowledge", "bots", "switchboard", "coordination")
ALLOWED: dict[str, set[str]] = {
    "knowledge": {"knowledge"},
    "coordination": {"coordination"},
    "core": {"core", "knowledge", "coordination"},
    "bots": {"bots", "core", "knowledge", "coordination"},
    "switchboard": set(OURS),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in a file, relative imports resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append((node.lineno, first.value))
    return sorted(found)


def _is_dynamic_import(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in ("import_module", "__import__")


def violations() -> list[str]:
    problems: list[str] = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, module in imported_modules(path):
                top = module.split(".")[0]
                if top in OURS and top not in allowed:
                    where = path.relative_to(ROOT)
                    problems.append(f"{where}:{line} imports {module} ({package}/ may import only "
                                    f"{', '.join(sorted(allowed))})")
    return problems


def test_every_package_imports_only_in_the_allowed_directions() -> None:
    problems = violations()
    assert not problems, "import boundaries crossed:\n  " + "\n  ".join(problems)


def test_the_checker_sees_late_relative_and_dynamic_imports(tmp_path, monkeypatch) -> None:
    module = tmp_path / "knowledge" / "sub" / "mod.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "import os\n"
        "def late():\n"
        "    from core.settings import load_settings\n"
        "from ..base import open_store\n"
        "import importlib\n"
        "importlib.import_module('bots.startup')\n",
        encoding="utf-8")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert imported_modules(module) == [(1, "os"), (3, "core.settings"), (4, "knowledge.base"),
                                        (5, "importlib"), (6, "bots.startup")]
    assert violations() == [
        "knowledge/sub/mod.py:3 imports core.settings (knowledge/ may import only knowledge)",
        "knowledge/sub/mod.py:6 imports bots.startup (knowledge/ may import only knowledge)",
    ]


@pytest.mark.parametrize("package", OURS)
def test_each_package_is_checked(package: str) -> None:
    assert list((ROOT / package).rglob("*.py")), f"{package}/ has no Python files: is the checker looking in ROOT?"
