"""Feature passes at scale: bald's MC samples batched through the model against a per-sample
reference, and jacobian_norm's predictions from its own pass (the selection paths are tested in
tests/acquisition/test_selection.py)."""
import numpy as np
import pytest
import torch
from torch import nn

import jacal
from jacal import features as F
from jacal.acquisition.scores import bald as bald_score


# ---- bald: the MC samples batched through the model


class _Recorder:
    """Forward hook on a dropout layer: each pass's mask (output / (input / (1 − p)), 1 where the input is 0)."""

    def __init__(self, layer):
        self.masks, self.p = [], layer.p
        layer.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        if module.training:
            x = inputs[0]
            self.masks.append(torch.where(x != 0, output * (1 - self.p) / torch.where(x != 0, x, 1), 1.0).round())


@pytest.mark.parametrize("rows", [8192, 12])  # all samples in one pass; 3 samples of a 4-item chunk per pass
def test_batched_mc_dropout_equals_a_per_sample_reference_with_its_masks(monkeypatch, rows):
    monkeypatch.setattr(F, "MC_BATCH_ROWS", rows)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Dropout(0.4), nn.Linear(7, 3)).eval()
    rec = _Recorder(model[2])
    x = torch.randn(10, 5)
    f = F.extract_features(model, x, need={"mc", "bald"}, batch_size=4, mc_samples=7, seed=3)
    assert f.mc_probs.shape == (7, 10, 3)
    # reassemble: per chunk (4, 4, 2 items) the passes' masks, sample-major
    by_chunk, i = [], 0
    for b in (4, 4, 2):
        parts = []
        while sum(p.shape[0] for p in parts) < 7 * b:
            parts.append(rec.masks[i])
            i += 1
        by_chunk.append(torch.cat(parts).reshape(7, b, 7))
    assert i == len(rec.masks)
    mask = torch.cat(by_chunk, dim=1).double()  # (T, N, 7)
    w1, b1, w2, b2 = (p.detach().double() for p in (model[0].weight, model[0].bias, model[3].weight, model[3].bias))
    ref = np.empty((7, 10, 3))
    for s in range(7):  # one sample, one point at a time, float64
        for n in range(10):
            hid = torch.relu(x[n].double() @ w1.T + b1) * mask[s, n] / 0.6
            ref[s, n] = torch.softmax(hid @ w2.T + b2, dim=0).numpy()
    np.testing.assert_allclose(f.mc_probs, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f.bald, bald_score(ref), rtol=1e-4, atol=1e-6)
    assert not model.training and not model[2].training  # modes restored


def test_batched_mc_dropout_has_the_per_sample_loops_distribution():
    """Masks independent across samples and items: the batched samples' mean and spread per item and
    class match T separate passes (the old loop) within Monte Carlo error."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3)).eval()
    x = torch.randn(5, 6)
    T = 600
    batched = F.extract_features(model, x, need={"mc"}, mc_samples=T, seed=0).mc_probs
    model[2].train()
    torch.manual_seed(123)
    with torch.no_grad():
        loop = np.stack([torch.softmax(model(x).double(), dim=1).numpy() for _ in range(T)])
    model[2].eval()
    se = np.sqrt(batched.var(0) / T + loop.var(0) / T)
    assert (np.abs(batched.mean(0) - loop.mean(0)) < 5 * se + 1e-9).all()
    np.testing.assert_allclose(batched.std(0), loop.std(0), rtol=0.25, atol=1e-3)
    corr = np.corrcoef(batched[:, 0, 0], batched[:, 1, 0])[0, 1]  # items' masks independent
    assert abs(corr) < 0.2


@pytest.mark.parametrize("method", ["mlp", "vjp", "projection"])
@pytest.mark.parametrize("numpy_in", [False, True])
def test_jacobian_norm_returns_the_predictions_of_its_own_pass(method, numpy_in):
    model = jacal.mlp(12, 4, width=8, depth=2, seed=0).eval()
    x = torch.randn(37, 12)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    norms, pred = jacal.jacobian_norm(model, x.numpy() if numpy_in else x, method=method, batch_size=10,
                                      return_predictions=True)
    assert len(calls) == (4 if method == "vjp" else 0)  # vjp: one forward per chunk; mlp: the closed form's own
    with torch.no_grad():
        np.testing.assert_array_equal(np.asarray(pred), model(x).argmax(1).numpy())
    np.testing.assert_allclose(np.asarray(norms), np.asarray(jacal.jacobian_norm(model, x, method=method, batch_size=10)))


