"""The layering contract (pyproject.toml `[tool.importlinter]`, docs/architecture.md) holds.

`lint-imports` (import-linter) checks the layers, the absence of cycles among sibling modules,
that environments are reached through their registry, and that josh_core never imports
Streamlit; it counts imports inside functions like any other. What it does not check is kept
here: that the list of environment packages in the contract is whole, and that no import inside
a function dodges a cycle (does the module it imports lead back to this one, through any
imports, as `llm/specs` <-> `policies/factory` once did with both halves inside functions?),
including cycles between a package and its own modules and through folders without an
`__init__.py`, which the contract's sibling check does not see.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "josh_core"

# Imports inside a function that close a cycle, each on purpose:
KNOWN_CYCLE_DODGES = {
    # ToolWOZ's build-time code (envs/toolwoz/build/) reads the runtime's data and is loaded
    # only when data must be made: data.py's prepare functions are its one door
    # (docs/environments.md; tests/test_env_imports.py checks no runtime import loads it).
    ("josh_core.envs.toolwoz.data", "josh_core.envs.toolwoz.build.prepare"): "build code only when data is made",
    ("josh_core.envs.toolwoz.data", "josh_core.envs.toolwoz.build.official"): "build code only when data is made",
}


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def test_the_layering_contract_is_kept():
    # The lint-imports of this interpreter's environment (the venv's bin/ may not be on PATH).
    beside = Path(sys.executable).with_name("lint-imports")
    lint_imports = str(beside) if beside.exists() else shutil.which("lint-imports")
    assert lint_imports, "lint-imports is missing: pip install -e '.[dev]'"
    done = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in done.stdout


def test_the_contract_names_every_environment_package():
    packages = {f"josh_core.envs.{path.parent.name}" for path in (PACKAGE / "envs").glob("*/__init__.py")}
    forbidden = set(_contracts()["envs-through-registry"]["forbidden_modules"])
    assert packages == forbidden, "list every environment package in the envs-through-registry contract"


def test_the_layers_name_every_top_level_module():
    """A module left out of the layers is checked by nothing: every module and package directly
    under josh_core sits in one layer."""
    named = {part.strip() for layer in _contracts()["layers"]["layers"] for part in layer.split("|")}
    present = {path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    present |= {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert present - named == set(), "add these modules to a layer in pyproject.toml [tool.importlinter]"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, inside a function) for each josh_core import in the file that runs when loaded
    or called (imports under `if TYPE_CHECKING:` never run and are left out)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base
                           for alias in child.names]
            found.extend((target, inside) for target in targets if target.split(".")[0] == "josh_core")
            visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    return found


def function_level_cycle_dodges() -> list[str]:
    files = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in files}
    late: list[tuple[str, str]] = []
    # A submodule imported while its package's __init__ runs loads fine (Python binds it to the
    # half-made package), so only the imports themselves are edges, as import-linter reads them.
    for name, path in files.items():
        for module, inside in _imports(path):
            if module == name or module not in files:
                continue
            if inside:
                late.append((name, module))
            graph[name].add(module)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    return sorted({f"{importer} imports {imported} inside a function: {imported} leads back to {importer}"
                   for importer, imported in late
                   if (importer, imported) not in KNOWN_CYCLE_DODGES and reaches(imported, importer)})


def test_no_import_inside_a_function_dodges_a_cycle():
    assert function_level_cycle_dodges() == []


def test_the_cycle_check_sees_a_dodged_cycle(tmp_path, monkeypatch):
    """The check above is only as good as its graph: a planted dodge is found."""
    fake = tmp_path / "josh_core"
    (fake / "sub").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "sub" / "__init__.py").write_text("")
    (fake / "sub" / "a.py").write_text("from josh_core.sub.b import thing\n")
    (fake / "sub" / "b.py").write_text("thing = 1\ndef later():\n    from josh_core.sub import a\n")
    (fake / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import josh_core.sub.a\n"
                               "def later():\n    import josh_core.sub.b\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert function_level_cycle_dodges() == [
        "josh_core.sub.b imports josh_core.sub.a inside a function: josh_core.sub.a leads back to josh_core.sub.b"]
