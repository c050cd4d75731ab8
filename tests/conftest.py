import signal
import sys
from pathlib import Path

import pytest
import torch

# the shared helpers (_helpers, _cli, _reference, _tolerance, _formats, _pools) sit here, above the
# test folders (one per package, plus integration/ and project/): importable from every folder
sys.path.insert(0, str(Path(__file__).parent))

MNIST_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# A runner started in the background by a non-interactive shell ignores SIGINT, and a child inherits an
# ignored signal (Python then raises no KeyboardInterrupt in it). With a handler here instead, every
# child starts with SIGINT's default, as from a terminal, which the Ctrl-C tests need.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _threads():
    """Give torch its thread count back after each test: a benchmark run in-process sets its own, and
    a later in-process run would round its sums differently from the CLI subprocesses it is compared to."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained():
    """``(model, data)``: a small MLP trained on digits, shared by the confidence tests (library and CLI)."""
    import jacal

    d = jacal.load_dataset("digits")
    m = jacal.mlp(64, 10, width=32, depth=1, seed=0)
    jacal.train(m, d, epochs=3, seed=0)
    return m.eval(), d


@pytest.fixture
def mnist_root():
    if not (MNIST_ROOT / "MNIST" / "raw").exists():
        pytest.skip("real MNIST not present at ../shared/data")
    return MNIST_ROOT


def _finished_run(tmp_path_factory, command, args, folder):
    """Run ``jacal COMMAND --out ... ARGS --json`` once in-process; (out folder, its --json summary)."""
    import json

    from typer.testing import CliRunner

    from jacal.cli.app import app

    out = tmp_path_factory.mktemp(folder) / "run"
    r = CliRunner().invoke(app, [command, "--out", str(out), *args, "--json"])
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout)


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory):
    """A finished tiny `jacal replicate` run: (out folder, its --json summary); shared, never modified."""
    from _helpers import REPLICATE_TINY

    return _finished_run(tmp_path_factory, "replicate", REPLICATE_TINY, "rep")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A finished tiny `jacal loop` run: (out folder, its --json summary); shared, never modified."""
    from _helpers import LOOP_TINY

    return _finished_run(tmp_path_factory, "loop", LOOP_TINY, "loop")
