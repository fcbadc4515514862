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
