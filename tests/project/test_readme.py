"""The README's two commands are what CI runs, and the code blocks of the README and of the docs'
quickstart run as written."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _blocks(path: Path, lang: str) -> list:
    return re.findall(rf"```{lang}\n(.*?)\n```", path.read_text(encoding="utf-8"), flags=re.S)


def test_ci_runs_the_readme_commands():
    blocks = _blocks(ROOT / "README.md", "bash")
    assert len(blocks) == 2, "the README gives exactly two set-up commands: the main job and the tests"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert blocks[0].strip() in ci and blocks[1].strip() in ci
    assert "jacal replicate" in blocks[0] and "pytest" in blocks[1]


def test_readme_is_short_and_stays_inside_the_repository():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert "../" not in text and "/work/" not in text, "the README names a path outside the repository"
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"the README links to {target}, which does not exist"


def test_library_example_in_readme_runs():
    blocks = _blocks(ROOT / "README.md", "python")
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["batch"].indices.shape == (20,) and namespace["norms"].shape == (450,)


def test_quickstart_page_runs():
    """Every Python block of docs/getting-started/quickstart.md, in order, in one namespace."""
    blocks = _blocks(ROOT / "docs" / "getting-started" / "quickstart.md", "python")
    assert len(blocks) >= 2
    namespace = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"quickstart.md block {i}", "exec"), namespace)
    assert namespace["batch"].indices.shape == (20,)
    assert namespace["norms"].shape == (len(namespace["data"].x_test),)


@pytest.mark.parametrize("page", ["guide/acquisition.md"])
def test_guide_strategy_example_runs(page):
    """The strategy written out in the guide registers and is chosen by name (trained on digits)."""
    import numpy as np

    import jacal
    from jacal.acquisition import STRATEGIES

    block = next(b for b in _blocks(ROOT / "docs" / page, "python") if "register_strategy" in b)
    data = jacal.load_dataset("digits")
    model = jacal.mlp(data.input_dim, data.n_classes, width=32, depth=1, seed=0).eval()
    namespace = {"model": model, "pool": data.x_test}
    before = STRATEGIES.pop("class-balanced-jacobian", None)  # examples/custom_strategy.py registers the name
    try:
        exec(compile(block, page, "exec"), namespace)
        picks = namespace["res"].indices
        assert len(picks) == 20 and len(np.unique(picks)) == 20
    finally:
        STRATEGIES.pop("class-balanced-jacobian", None)
        if before is not None:
            STRATEGIES["class-balanced-jacobian"] = before
