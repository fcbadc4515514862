"""The package's layers (docs/design.md, "Layers"): the core modules never import upward."""

import ast
from pathlib import Path

import pytest

from .test_stage_deps import PACKAGE, _imports, _module_name

LOW = ("diffusion", "models", "data")  # the core math, the networks, the data
HIGHER = (
    "config",
    "training",
    "evaluation",
    "tracking",
    "cli",
    "reporting",
    "sampling",
    "sharding",
    "launch",
)


def _upward_imports(path: Path) -> list[str]:
    """The ddpm_repro modules of a higher layer that `path` imports anywhere, functions included."""
    imported = _imports([ast.parse(path.read_text())], _module_name(path), path.name == "__init__.py")
    return sorted(m for m in imported if m.split(".")[1] in HIGHER)


@pytest.mark.parametrize("layer", LOW)
def test_the_core_layers_import_nothing_from_a_higher_layer(layer):
    found = {str(p.relative_to(PACKAGE)): _upward_imports(p) for p in sorted((PACKAGE / layer).rglob("*.py"))}
    assert found and not {k: v for k, v in found.items() if v}, found


def test_the_layer_check_sees_an_import_inside_a_function():
    # models/official.py once imported config and training inside a function
    tree = ast.parse("def convert():\n    from ..training.checkpoint import FORMAT_VERSION\n")
    assert _imports([tree], "ddpm_repro.models.official", False) == {"ddpm_repro.training.checkpoint"}
