"""The wheel: it builds, installs beside the project's environment without a second torch,
runs from the installed copy, and declares the project's own pins."""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`python -m build --wheel` of a copy of the sources (no build/ left in the repo);
    no isolation, so nothing is downloaded."""
    src = tmp_path_factory.mktemp("wheel-src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (built,) = out.glob("ddpm_repro-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed with --no-deps into a target folder (torch stays the venv's)."""
    target = tmp_path_factory.mktemp("target")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
         str(target), str(wheel)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return target


def run_installed(target: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH puts the installed copy ahead of the venv's editable install of the sources
    env = {**os.environ, "PYTHONPATH": str(target), "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_wheel_holds_the_package_and_its_data_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "ddpm_repro/reporting/paper_tables.json" in names
    assert "ddpm_repro/diffusion/gaussian_diffusion.py" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "pipelines/"))]
    assert not [n for n in names if n.endswith((".pt", ".npz", ".pyc"))]


def test_the_wheel_declares_the_projects_pins(wheel):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (meta,) = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA")]
    text = zipfile.ZipFile(wheel).read(meta).decode()
    required = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Requires-Dist: ")]
    runtime = [r for r in required if "extra ==" not in r]

    def pins(specs: list[str]) -> dict:
        return {r.name.lower(): r.specifier for r in map(Requirement, specs)}

    assert pins(runtime) == pins(project["dependencies"])
    assert str(pins(runtime)["torch"]) == "==2.14.1" and str(pins(runtime)["mlflow"]) == "==3.17.2"
    version = re.search(r"^Version: (.+)$", text, re.M).group(1)
    from ddpm_repro import __version__

    assert version == __version__


def test_the_installed_copy_runs_without_the_source_tree(installed, tmp_path):
    where = run_installed(installed, "-c", "import ddpm_repro.cli, torch; print(ddpm_repro.cli.__file__)",
                          cwd=tmp_path)  # fmt: skip
    assert where.returncode == 0, where.stderr[-2000:]
    assert Path(where.stdout.strip()).is_relative_to(installed)  # not src/ of the repo
    # the console script the wheel declares, and every command's --help, from the installed copy
    script = (installed / "bin" / "ddpm-repro").read_text()
    assert "from ddpm_repro.cli import main" in script
    result = run_installed(installed, str(installed / "bin" / "ddpm-repro"), "--help", cwd=tmp_path)
    assert result.returncode == 0 and "usage: ddpm-repro" in result.stdout, result.stderr[-2000:]
    version = run_installed(installed, "-m", "ddpm_repro.cli", "--version", cwd=tmp_path)
    assert version.stdout.startswith("ddpm-repro 0.")


def test_the_installed_copy_finds_its_package_data(installed, tmp_path):
    code = "from ddpm_repro.reporting.paper import paper_tables; print(len(paper_tables()))"
    result = run_installed(installed, "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) > 0
