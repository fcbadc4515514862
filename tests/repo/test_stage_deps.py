"""DVC sees every file a stage's results depend on: the import closure of the stage's handler
in cli.py must be covered by that stage's `deps` in dvc.yaml.

The closure is static and conservative: every `import` in the handler, in the cli.py
functions it calls, in `main` (which runs every command; `build_parser` names every handler
but calls none) and, recursively, anywhere in each
imported module (imports inside functions included), plus each imported module's packages'
`__init__.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "ddpm_repro"
HANDLERS = {  # the stage's command -> its handler in cli.py
    "prepare": "_prepare",
    "reference": "_reference",
    "train": "_train",
    "sample": "_sample",
    "nll": "_nll",
    "evaluate": "_evaluate",
    "report": "_report",
}
DATA_FILES = {"reporting/paper_tables.json"}  # read at run time by the module beside it


def _module_file(dotted: str) -> Path | None:
    """ddpm_repro.a.b -> src/ddpm_repro/a/b.py or a/b/__init__.py; None outside the package."""
    parts = dotted.split(".")
    if parts[0] != "ddpm_repro":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(nodes: list[ast.AST], module: str, is_package: bool) -> set[str]:
    """The ddpm_repro modules that the import statements under `nodes` name (a `from X import
    y` also counts X.y, in case y is a module)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found.update(alias.name for alias in sub.names)
            elif isinstance(sub, ast.ImportFrom):
                if sub.level:
                    base = package.split(".")
                    base = base[: len(base) - (sub.level - 1)]
                    target = ".".join(base + ([sub.module] if sub.module else []))
                else:
                    target = sub.module or ""
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in sub.names)
    return {m for m in found if _module_file(m) is not None}


def _closure(modules: set[str]) -> set[Path]:
    """Every file imported, directly or not, by `modules`, with their packages' __init__.py."""
    seen: set[Path] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            path = _module_file(".".join(parts[:i]))
            if path is None or path in seen:
                continue
            seen.add(path)
            tree = ast.parse(path.read_text())
            todo.extend(_imports([tree], _module_name(path), path.name == "__init__.py"))
    return seen


def handler_closure(handler: str) -> set[str]:
    """The files (relative to the repository root) that the cli handler's results can depend on."""
    cli = PACKAGE / "cli.py"
    tree = ast.parse(cli.read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    module_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    roots, todo = set(), [handler, "main"]
    while todo:  # the handler, main, and the cli.py functions they call
        name = todo.pop()
        if name in roots:
            continue
        roots.add(name)
        if name == "build_parser":  # it names every handler, to wire them; it calls none
            continue
        todo.extend(n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name) and n.id in functions)
    modules = _imports(module_level + [functions[n] for n in roots], "ddpm_repro.cli", False)
    files = _closure(modules) | {cli}
    for data in DATA_FILES:
        if any(f.parent == (PACKAGE / data).parent for f in files):
            files.add(PACKAGE / data)
    return {str(f.relative_to(ROOT)) for f in files}


def stage_deps() -> dict[str, list[str]]:
    """dvc.yaml: the command of each stage (and -cond variant) -> its deps."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        command = body["cmd"].split()[1]
        out[name] = (command, [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])])
    return out


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", list(stage_deps()))
def test_every_file_in_the_stage_handlers_import_closure_is_a_dvc_dependency(stage):
    command, deps = stage_deps()[stage]
    missing = sorted(p for p in handler_closure(HANDLERS[command]) if not _covered(p, deps))
    assert not missing, f"dvc.yaml stage {stage!r} misses deps: {missing}"


def test_the_closure_follows_imports_inside_functions_and_packages():
    files = handler_closure("_sample")
    assert "src/ddpm_repro/seeding.py" in files  # sampling.py imports it inside a function
    assert "src/ddpm_repro/diffusion/__init__.py" in files
    assert "src/ddpm_repro/cli.py" in files
    assert "src/ddpm_repro/reporting/claims.py" not in handler_closure("_prepare")
