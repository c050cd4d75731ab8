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
