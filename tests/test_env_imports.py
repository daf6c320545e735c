"""Import rules of the environments, read from the source with `ast` (docs/environments.md).

Within josh_core the layering contract (pyproject.toml, tests/test_layers.py) also forbids
importing any environment package from outside josh_core/envs/; the rules here add what it
cannot see: the app, ui_common.py and bench/ (not packages), and ToolWOZ's build-time code.

1. ToolWOZ is reached through the registry only. No module outside `josh_core/envs/toolwoz/`
   (in josh_core/, app_pages/, app.py, ui_common.py, bench/) imports `josh_core.envs.toolwoz`
   or anything under it, nor the old `josh_core.toolwoz`, which must not exist any more.
   That includes the package itself: the registry (`josh_core.envs`) names the entry module
   by string and imports it on first use, so nothing else ever needs the package. Importing
   `josh_core.envs` (get_env, names, ...), `josh_core.envs.base` and `josh_core.envs.score` is
   how code outside an environment speaks to it. One exception, bench/bench_toolwoz.py, times
   ToolWOZ's own generation, loading and scoring, which only its modules expose. Tests may
   import ToolWOZ's modules: they test them.
2. Build-time code (`envs/toolwoz/build/`) is never imported by a runtime module of ToolWOZ
   at import time; the runtime reaches it only inside functions of `data.py` (prepare,
   prepare_official, ensure_prepared).
3. Imports among ToolWOZ's modules are top-level and acyclic. The only function-level ones
   are the two documented doors: data.py -> build/ (above) and environment.py -> cli.py (the
   `josh toolwoz` commands, loaded only when the `josh` command is built).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLWOZ = "josh_core.envs.toolwoz"
BUILD = f"{TOOLWOZ}.build"
CHECKED = [*sorted((ROOT / "josh_core").rglob("*.py")), *sorted((ROOT / "app_pages").rglob("*.py")),
           ROOT / "app.py", ROOT / "ui_common.py", *sorted((ROOT / "bench").glob("*.py"))]
ALLOWED_OUTSIDE = {"bench/bench_toolwoz.py": "times ToolWOZ's own generation, loading and scoring"}
FUNCTION_LEVEL_DOORS = {
    (f"{TOOLWOZ}.data", f"{BUILD}.prepare"),
    (f"{TOOLWOZ}.data", f"{BUILD}.official"),
    (f"{TOOLWOZ}.environment", f"{TOOLWOZ}.cli"),
}


@dataclass(frozen=True)
class Import:
    module: str  # the module imported (a submodule when `from package import submodule`)
    line: int
    in_function: bool  # runs when the function is called, not when the module is imported


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports_of(path: Path) -> list[Import]:
    """Every import in the file, with `from package import submodule` read as the submodule."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> list[Import]:
    """The imports of a module's source; `package` anchors its relative imports."""
    tree = ast.parse(source)
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(alias.name, child.lineno, inside) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.append(Import(sub if _is_module(sub) else base, child.lineno, inside))
            visit(child, inside)

    visit(tree, False)
    return found


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def toolwoz_modules() -> dict[str, Path]:
    folder = ROOT / "josh_core" / "envs" / "toolwoz"
    return {module_name(path): path for path in sorted(folder.rglob("*.py"))}


def test_no_module_outside_toolwoz_imports_it_and_the_old_package_is_gone():
    assert not (ROOT / "josh_core" / "toolwoz").exists(), "josh_core/toolwoz/ must not come back (no shim)"
    offending = []
    for path in CHECKED:
        where = str(path.relative_to(ROOT))
        if _under(module_name(path), TOOLWOZ) or where in ALLOWED_OUTSIDE:
            continue
        for imp in imports_of(path):
            if _under(imp.module, TOOLWOZ) or _under(imp.module, "josh_core.toolwoz"):
                offending.append(f"{where}:{imp.line} imports {imp.module}")
    assert not offending, "reach ToolWOZ through josh_core.envs.get_env:\n" + "\n".join(offending)


def test_the_checker_sees_every_form_of_import():
    """The rules here are only as good as imports_in: each way of writing an import is seen."""
    source = (
        "import josh_core.envs.toolwoz.env\n"
        "from josh_core.envs.toolwoz import store\n"
        "from josh_core.envs import toolwoz\n"
        "def later():\n    from .toolwoz.build import prepare\n"
    )
    seen = {(imp.module, imp.in_function) for imp in imports_in(source, "josh_core.envs")}
    assert seen == {
        ("josh_core.envs.toolwoz.env", False),
        ("josh_core.envs.toolwoz.store", False),
        ("josh_core.envs.toolwoz", False),
        ("josh_core.envs.toolwoz.build.prepare", True),
    }


def test_runtime_modules_never_import_build_modules_at_import_time():
    offending = []
    for name, path in toolwoz_modules().items():
        if _under(name, BUILD):
            continue
        for imp in imports_of(path):
            if _under(imp.module, BUILD) and (not imp.in_function or (name, imp.module) not in FUNCTION_LEVEL_DOORS):
                offending.append(f"{name}:{imp.line} imports {imp.module}")
    assert not offending, "runtime code reaches build/ only inside data.py's prepare functions:\n" + "\n".join(offending)


def test_loading_every_runtime_module_and_the_registry_entry_loads_no_build_module():
    runtime = [name for name in toolwoz_modules() if not _under(name, BUILD)]
    code = (
        "import importlib, sys\n"
        f"for name in {runtime!r}: importlib.import_module(name)\n"
        "from josh_core.envs import get_env\n"
        "get_env('toolwoz').describe()\n"
        f"print(sorted(m for m in sys.modules if m.startswith({BUILD!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_toolwoz_imports_are_top_level_and_acyclic():
    modules = toolwoz_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    late = []
    for name, path in modules.items():
        for imp in imports_of(path):
            if imp.module not in modules or imp.module == name:
                continue
            if imp.in_function:
                if (name, imp.module) not in FUNCTION_LEVEL_DOORS:
                    late.append(f"{name}:{imp.line} imports {imp.module} inside a function")
            else:
                graph[name].add(imp.module)
    assert not late, "\n".join(late)

    # Depth-first search for a back edge; report the cycle it closes.
    state: dict[str, str] = {}
    stack: list[str] = []

    def cycle_from(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := cycle_from(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for start in sorted(graph):
        if start not in state:
            found = cycle_from(start)
            assert found is None, "import cycle: " + " -> ".join(found)
