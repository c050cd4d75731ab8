import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

MNIST_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def mnist_root():
    if not (MNIST_ROOT / "MNIST" / "raw").exists():
        pytest.skip("real MNIST not present at ../shared/data")
    return MNIST_ROOT


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory):
    """A finished tiny `jacal replicate` run: (out folder, its --json summary); shared, never modified."""
    import json

    from typer.testing import CliRunner

    from _helpers import REPLICATE_TINY
    from jacal.cli.app import app

    out = tmp_path_factory.mktemp("rep") / "full"
    r = CliRunner().invoke(app, ["replicate", "--out", str(out), *REPLICATE_TINY, "--json"])
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A finished tiny `jacal loop` run: (out folder, its --json summary); shared, never modified."""
    import json

    from typer.testing import CliRunner

    from _helpers import LOOP_TINY
    from jacal.cli.app import app

    out = tmp_path_factory.mktemp("loop") / "a"
    r = CliRunner().invoke(app, ["loop", "--out", str(out), *LOOP_TINY, "--json"])
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout)
