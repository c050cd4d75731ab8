"""jacal's query strategy inside the real modAL and skorch (skipped where they are not installed).

The versions that work together are in :mod:`jacal.acquisition.modal`'s docstring. With
``JACAL_MODAL_EXAMPLE`` set to a copy of modAL's ``examples/pytorch_integration.py``, the example runs
with only its query strategy swapped for jacal's (it reads MNIST from the shared data folder; slow on
a CPU: ten queries over a 49,000-image pool).
"""
import inspect
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import jacal
import jacal.acquisition.modal as jmodal

modAL = pytest.importorskip("modAL")
skorch = pytest.importorskip("skorch")
from sklearn.utils import check_X_y  # noqa: E402

if "force_all_finite" not in inspect.signature(check_X_y).parameters:
    pytest.skip("modAL 0.4.2.1 calls check_X_y(force_all_finite=...), which scikit-learn >= 1.8 removed",
                allow_module_level=True)

from modAL.models import ActiveLearner  # noqa: E402
from skorch import NeuralNetClassifier  # noqa: E402


class SmallCNN(nn.Module):
    """modAL's example network, at 8x8 (dropout included: its mode matters)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25))
        self.fcs = nn.Sequential(nn.Linear(8 * 3 * 3, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))

    def forward(self, x):
        return self.fcs(self.convs(x).flatten(1))


@pytest.fixture
def counted(monkeypatch):
    """Counts jacal passes (calls of acquire from the adapter)."""
    calls = []

    def counting_acquire(*args, **kwargs):
        calls.append(args[2])
        return jacal.acquire(*args, **kwargs)

    monkeypatch.setattr(jmodal, "acquire", counting_acquire)
    return calls


@pytest.fixture(scope="module")
def digits():
    d = jacal.load_dataset("digits", n_train=400, seed=0)
    x = d.x_train.numpy().astype(np.float32)
    return x[:40], d.y_train.numpy()[:40], x[40:], d.y_train.numpy()[40:]


@pytest.mark.parametrize("n_instances", [1, 2, 7])
def test_real_modal_learner_with_skorch(digits, counted, n_instances):
    x0, y0, pool, y_pool = digits
    torch.manual_seed(0)
    net = NeuralNetClassifier(SmallCNN, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, max_epochs=3,
                              train_split=None, verbose=0, device="cpu")
    learner = ActiveLearner(estimator=net, query_strategy=jacal.modal_query_strategy("jacobian"),
                            X_training=x0, y_training=y0)
    module = net.module_
    assert module.training  # skorch leaves the module in train mode after fit
    idx, rows = learner.query(pool, n_instances=n_instances)
    assert len(counted) == 1, "one jacal pass per query"
    assert len(idx) == n_instances == len(rows) and len(set(idx.tolist())) == n_instances
    assert np.array_equal(rows, pool[idx])
    assert module.training and all(m.training for m in module.modules())  # given back in train mode
    with torch.no_grad():
        ref = jacal.acquire(module.eval(), torch.from_numpy(pool), n_instances, strategy="jacobian")
    module.train()
    assert np.array_equal(idx, ref.indices)
    idx2, _, scores = learner.query(pool, n_instances=n_instances, return_metrics=True)
    assert len(counted) == 2 and np.array_equal(idx2, idx) and np.allclose(scores, ref.scores[ref.indices])
    learner.teach(pool[idx], y_pool[idx], only_new=True)  # modAL's loop goes on
    assert module is not None


def test_modal_pytorch_integration_example(mnist_root, counted, monkeypatch):
    """modAL's examples/pytorch_integration.py with only its query strategy swapped for jacal's."""
    path = os.environ.get("JACAL_MODAL_EXAMPLE")
    if not path:
        pytest.skip("set JACAL_MODAL_EXAMPLE to modAL's examples/pytorch_integration.py to run it")
    source = Path(path).read_text()
    original = "learner = ActiveLearner(\n    estimator=classifier,\n"
    assert source.count(original) == 1, "the example's ActiveLearner call changed"
    swapped = source.replace(original, original + "    query_strategy=jacal.modal_query_strategy('jacobian'),\n")
    monkeypatch.chdir(mnist_root)  # the example reads MNIST('.'): found there, nothing downloaded
    sizes = []
    real_teach = ActiveLearner.teach

    def teach(self, X, y, **kwargs):
        sizes.append(len(X))
        return real_teach(self, X, y, **kwargs)

    monkeypatch.setattr(ActiveLearner, "teach", teach)
    exec(compile(swapped, path, "exec"), {"__name__": "__main__", "jacal": jacal})
    assert counted == [100] * 10, "one jacal pass per query, 100 items each"
    assert sizes == [100] * 10, "every n_instances honoured"
