import copy

import pytest
import torch
import torch.nn.functional as F

from jacal import evaluate, load_dataset, mlp, train
from jacal.data import Splits


def test_train_is_seeded_and_fits_digits():
    d = load_dataset("digits")
    r1 = train(mlp(64, 10, width=64, depth=1, seed=0), d, epochs=20, batch_size=32, lr=3e-3, seed=0)
    r2 = train(mlp(64, 10, width=64, depth=1, seed=0), d, epochs=20, batch_size=32, lr=3e-3, seed=0)
    assert r1.train_accuracy > 0.98 and r1.test_accuracy > 0.9
    assert (r1.train_accuracy, r1.test_loss) == (r2.train_accuracy, r2.test_loss)
    assert r1.gap == pytest.approx(r1.train_accuracy - r1.test_accuracy)
    full = train(mlp(64, 10, width=16, depth=1, seed=0), d, batch_size=None, steps=5, optimizer="sgd", lr=0.1)
    assert full.steps == 5 and full.epochs == 5
    with pytest.raises(ValueError, match="optimizer"):
        train(mlp(64, 10, width=4, depth=1), d, optimizer="lbfgs")
    with pytest.raises(ValueError, match="lr"):
        train(mlp(64, 10, width=4, depth=1), d, lr=float("nan"))


def _early_stopping_reference(model, x, y, xv, yv, *, lr, batch_size, max_epochs, patience, seed):
    """Early stopping written out epoch by epoch: Adam, a seeded permutation per epoch, validation
    accuracy after each, stop after ``patience`` epochs without a better one, restore the best."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    best_acc, best_state, best_epoch, since, epoch = -1.0, None, 0, 0, 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), batch_size):
            idx = order[s:s + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = float((model(xv).argmax(1) == yv).float().mean())
        if acc > best_acc:
            best_acc, best_state, best_epoch, since = acc, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            since += 1
            if since >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return epoch, best_epoch, best_acc


@pytest.fixture(scope="module")
def small():
    d = load_dataset("digits")
    train_part = Splits("digits", d.x_train[:90], d.y_train[:90], d.x_test[:0], d.y_test[:0], d.n_classes)
    return train_part, (d.x_train[200:260], d.y_train[200:260])


@pytest.mark.parametrize("patience", [1, 3])
def test_early_stopping_equals_the_written_out_reference(small, patience):
    data, (xv, yv) = small
    kw = dict(lr=1e-3, batch_size=32, seed=4)
    model = mlp(64, 10, width=16, depth=1, dropout=0.25, seed=1)
    reference = copy.deepcopy(model)
    torch.manual_seed(0)  # dropout masks, the same for both runs
    epochs, best_epoch, best_acc = _early_stopping_reference(reference, data.x_train, data.y_train, xv, yv,
                                                            max_epochs=200, patience=patience, **kw)
    torch.manual_seed(0)
    r = train(model, data, epochs=200, val=(xv, yv), patience=patience, **kw)
    assert epochs < 200, "the reference never stopped early: the test would not pin early stopping"
    assert r.epochs == epochs and r.steps == epochs * 3  # 90 items in batches of 32: 3 steps per epoch
    assert epochs == best_epoch + patience  # stopped `patience` epochs after the last improvement
    assert r.best_epoch == best_epoch and r.val_accuracy == pytest.approx(best_acc)
    for name, w in reference.state_dict().items():  # the best weights, not the last ones
        assert torch.equal(model.state_dict()[name], w), name
    assert not model.training
    assert evaluate(model, xv, yv)[0] == pytest.approx(best_acc)


def test_validation_without_patience_runs_every_epoch_and_keeps_the_best(small):
    data, (xv, yv) = small
    model = mlp(64, 10, width=16, depth=1, seed=2)
    reference = copy.deepcopy(model)
    _, best_epoch, best_acc = _early_stopping_reference(reference, data.x_train, data.y_train, xv, yv, lr=3e-2,
                                                        batch_size=32, max_epochs=30, patience=10 ** 9, seed=0)
    r = train(model, data, epochs=30, lr=3e-2, batch_size=32, seed=0, val=(xv, yv))
    assert r.epochs == 30 and r.best_epoch == best_epoch < 30  # the best epoch's weights, not the last ones
    assert r.val_accuracy == pytest.approx(best_acc)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.state_dict().items())
    assert set(r.to_dict()) >= {"val_accuracy", "best_epoch"}


def test_early_stopping_options_are_checked(small):
    data, (xv, yv) = small
    plain = train(mlp(64, 10, width=4, depth=1, seed=0), data, epochs=1)
    assert "val_accuracy" not in plain.to_dict() and "best_epoch" not in plain.to_dict()
    with pytest.raises(ValueError, match="patience.*val"):
        train(mlp(64, 10, width=4, depth=1), data, epochs=1, patience=3)
    with pytest.raises(ValueError, match="patience"):
        train(mlp(64, 10, width=4, depth=1), data, epochs=1, val=(xv, yv), patience=0)
    with pytest.raises(TypeError, match="val"):
        train(mlp(64, 10, width=4, depth=1), data, epochs=1, val=xv)
    with pytest.raises(ValueError, match="val"):
        train(mlp(64, 10, width=4, depth=1), data, epochs=1, val=(xv, yv[:3]))
