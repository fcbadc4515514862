"""The README's API example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_api_example_runs():
    block = re.search(r"## The diffusion API\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no '## The diffusion API' python block"
    namespace: dict = {}
    exec(compile(block.group(1), str(README), "exec"), namespace)  # noqa: S102
    assert namespace["samples"].shape == (4, 3, 32, 32)
    assert namespace["bpd"]["total_bpd"].shape == (2,)


def test_every_relative_link_in_the_readmes_points_to_a_file():
    root = README.parent
    for readme in [README, *sorted(root.glob("*/README.md")), *sorted((root / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme.read_text()):
            if "://" in target:
                continue
            assert (readme.parent / target).exists(), f"{readme.relative_to(root)} links to missing {target}"


def test_the_quick_start_is_two_commands():
    block = re.search(r"## Quick start\n\n```bash\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no quick start block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
