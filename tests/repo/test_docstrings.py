"""Every public function, class and method in src/ddpm_repro says what it does:
public means a name without a leading "_", and a docstring of a few words at least."""

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "ddpm_repro"
MIN_WORDS = 3  # "Return x." says nothing; "Write text atomically." is the least we take

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _top_level(body: list[ast.stmt]) -> Iterator[Definition]:
    """Definitions in `body`, looking inside module-level if/try blocks (optional imports)."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node
        elif isinstance(node, ast.If):
            yield from _top_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _top_level(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                yield from _top_level(handler.body)


def _public(module: ast.Module) -> Iterator[tuple[str, Definition]]:
    """(qualified name, node) for each public module-level definition and each public method
    (forward, properties, state_dict ...) of a public class."""
    for node in _top_level(module.body):
        if node.name.startswith("_"):
            continue
        yield node.name, node
        if isinstance(node, ast.ClassDef):
            for member in _top_level(node.body):
                if not member.name.startswith("_"):
                    yield f"{node.name}.{member.name}", member


def _problems() -> list[str]:
    problems = []
    for py in sorted(SRC.rglob("*.py")):
        where = py.relative_to(SRC.parent).with_suffix("").as_posix().replace("/", ".")
        for name, node in _public(ast.parse(py.read_text(), filename=str(py))):
            doc = ast.get_docstring(node)
            if doc is None:
                problems.append(f"{where}.{name} (line {node.lineno}): no docstring")
            elif len(doc.split()) < MIN_WORDS:
                problems.append(f"{where}.{name} (line {node.lineno}): docstring too short: {doc!r}")
    return problems


def test_every_public_definition_has_a_docstring():
    problems = _problems()
    assert not problems, f"{len(problems)} public definitions lack a docstring:\n" + "\n".join(problems)


def test_the_walk_finds_methods_properties_and_enums():
    # The check above is only as good as its walk: it must reach these kinds of definition.
    names = {
        name
        for py in (SRC / "diffusion" / "gaussian_diffusion.py", SRC / "training" / "ema.py")
        for name, _ in _public(ast.parse(py.read_text()))
    }
    assert {"ModelVarType", "ModelVarType.is_learned", "GaussianDiffusion.q_sample"} <= names
    assert {"EMA.state_dict", "EMA.load_state_dict"} <= names
    assert not any(part.startswith("_") for name in names for part in name.split("."))
