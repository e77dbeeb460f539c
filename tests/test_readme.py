"""The README's Python example is a test."""

import re
from pathlib import Path


def test_readme_python_examples_run():
    text = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README should carry a Python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
