"""The README's two commands are what CI runs."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_commands():
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 2
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert blocks[0].strip() in ci and blocks[1].strip() in ci


def test_library_example_in_readme_runs():
    blocks = re.findall(r"```python\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # the "Library in ten lines" block
    assert namespace["norms"].shape == (450,) and namespace["codes"].shape[0] == 450
