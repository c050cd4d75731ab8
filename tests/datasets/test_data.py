import pickle

import numpy as np
import pytest
import torch
from _helpers import fake_mnist_family

from jacal import JacalError, load_dataset


def test_digits_offline_default():
    d = load_dataset()
    assert d.name == "digits" and d.n_classes == 10
    assert d.x_train.shape == (1347, 1, 8, 8) and d.x_test.shape == (450, 1, 8, 8)
    assert d.x_train.dtype == torch.float32 and 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1.0
    assert d.flattened().x_train.shape == (1347, 64)
    sub = load_dataset("digits", n_train=100, n_test=50, seed=3)
    assert len(sub.x_train) == 100 and sub.x_train.equal(load_dataset("digits", n_train=100, n_test=50, seed=3).x_train)
    with pytest.raises(ValueError, match="n_train"):
        load_dataset("digits", n_train=5000)


def test_fashion_mnist_from_fake_idx_files(tmp_path):
    x_tr, y_tr, _, y_te = fake_mnist_family(tmp_path, "FashionMNIST")
    d = load_dataset("fashion-mnist", root=tmp_path)
    assert d.x_train.shape == (20, 1, 28, 28) and d.n_classes == 10
    np.testing.assert_allclose(d.x_train[:, 0].numpy(), x_tr / 255.0, rtol=1e-6)
    assert d.y_test.tolist() == list(y_te)


def test_mnist_npz_fallback(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "mnist.npz", x_train=rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 12), x_test=rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
             y_test=rng.integers(0, 10, 6))
    d = load_dataset("mnist", root=tmp_path)
    assert d.x_train.shape == (12, 1, 28, 28) and d.x_test.shape == (6, 1, 28, 28)


def test_cifar10_and_100_from_fake_pickles(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    rng = np.random.default_rng(2)

    def dump(path, obj):
        with open(path, "wb") as f:
            pickle.dump(obj, f)

    c10 = tmp_path / "cifar-10-batches-py"
    c10.mkdir()
    first = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    for i in range(1, 6):
        dump(c10 / f"data_batch_{i}", {"data": first if i == 1 else rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                                        "labels": list(rng.integers(0, 10, 4))})
    dump(c10 / "test_batch", {"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "labels": [0, 1, 2]})
    dump(c10 / "batches.meta", {"label_names": [str(i) for i in range(10)]})
    d = load_dataset("cifar10", root=tmp_path)
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (3, 3, 32, 32) and d.n_classes == 10
    # channel-first, same pixels as CIFAR's row-major R, G, B planes
    np.testing.assert_allclose(d.x_train[0].numpy(), first[0].reshape(3, 32, 32) / 255.0, rtol=1e-6)

    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    dump(c100 / "train", {"data": rng.integers(0, 256, (5, 3072), dtype=np.uint8), "fine_labels": [0, 50, 99, 3, 4]})
    dump(c100 / "test", {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "fine_labels": [7, 8]})
    dump(c100 / "meta", {"fine_label_names": [str(i) for i in range(100)]})
    d = load_dataset("cifar100", root=tmp_path)
    assert d.n_classes == 100 and d.y_train.tolist() == [0, 50, 99, 3, 4]


def test_missing_dataset_clear_error(tmp_path):
    with pytest.raises(JacalError, match="not found under .* `download=True`"):
        load_dataset("fashion-mnist", root=tmp_path)
    with pytest.raises(JacalError, match="does not exist"):
        load_dataset("cifar10", root=tmp_path / "absent")
    with pytest.raises(ValueError, match="`name`"):
        load_dataset("svhn")


def test_real_mnist_when_present(mnist_root):
    d = load_dataset("mnist", root=mnist_root, n_train=1000, n_test=500)
    assert d.x_train.shape == (1000, 1, 28, 28) and d.n_classes == 10
    assert set(d.y_train.tolist()) == set(range(10))
