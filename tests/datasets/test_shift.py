import pytest
import torch

from jacal import shift
from jacal.shift import CORRUPTIONS, FAR_OOD, SEVERITIES, corrupt, corruptions, far_ood, near_shift_digits


@pytest.fixture(scope="module")
def digits28():
    """Real handwritten digits in MNIST's layout (offline): (200, 1, 28, 28) in [0, 1]."""
    x, y = near_shift_digits((1, 28, 28))
    return x[:200]


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 16, 16)])
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruptions_keep_shape_and_range_and_are_seeded(name, shape):
    x = torch.rand(6, *shape, generator=torch.Generator().manual_seed(1))
    state = torch.random.get_rng_state()
    for s in SEVERITIES:
        a = corrupt(x, name, s, seed=3)
        assert a.shape == x.shape and a.dtype == torch.float32
        assert float(a.min()) >= 0 and float(a.max()) <= 1 and torch.isfinite(a).all()
        assert torch.equal(a, corrupt(x.numpy(), name, s, seed=3))  # numpy in, same result
        assert not torch.equal(a, x)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG neither read nor moved


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "rotate", "shear", "translate", "stripes",
                                  "dotted_lines"])
def test_random_corruptions_depend_on_the_seed_only(name, digits28):
    x = digits28[:20]
    a = corrupt(x, name, 2, seed=0)
    assert not torch.equal(a, corrupt(x, name, 2, seed=1))
    # the same images give the same output whatever was generated before
    corrupt(x, "gaussian_noise", 3, seed=0)
    assert torch.equal(a, corrupt(x, name, 2, seed=0))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_moves_images_further(name, digits28):
    dist = [float((corrupt(digits28, name, s, seed=0) - digits28).abs().mean()) for s in SEVERITIES]
    assert dist[0] < dist[1] < dist[2], dist


def test_known_values():
    x = torch.full((2, 1, 8, 8), 0.25)
    assert torch.allclose(corrupt(x, "brightness", 1), torch.full_like(x, 0.45))
    assert torch.allclose(corrupt(x, "invert", 3), torch.full_like(x, 0.75))
    assert torch.allclose(corrupt(x, "invert", 1), torch.full_like(x, 0.4 * 0.25 + 0.6 * 0.75))
    frac = float(((corrupt(torch.full((50, 1, 28, 28), 0.5), "impulse_noise", 2) != 0.5).float().mean()))
    assert frac == pytest.approx(0.12, abs=0.01)
    noisy = corrupt(torch.full((50, 1, 28, 28), 0.5), "gaussian_noise", 1)
    assert float((noisy - 0.5).std()) == pytest.approx(0.2, rel=0.05)
    stripes = corrupt(torch.zeros(20, 1, 28, 28), "stripes", 1)  # one 2-pixel stripe across the image
    assert set(stripes.sum(dim=(1, 2, 3)).tolist()) == {56.0}


def test_bad_inputs_are_one_line_value_errors():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="`corruption`"):
        corrupt(x, "fog", 1)
    with pytest.raises(ValueError, match="`severity`"):
        corrupt(x, "rotate", 4)
    with pytest.raises(ValueError, match=r"\(N ≥ 1, C, H, W\)"):
        corrupt(torch.rand(2, 64), "rotate", 1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        corrupt(x * 255, "rotate", 1)
    bad = x.clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        corrupt(bad, "rotate", 1)
    with pytest.raises(ValueError, match="`seed`"):
        corrupt(x, "rotate", 1, seed=-1)
    with pytest.raises(ValueError, match="`kind`"):
        far_ood("svhn", 3, (1, 8, 8))


def test_suite_iterates_every_pair():
    x = torch.rand(3, 1, 8, 8)
    got = [(n, s) for n, s, _ in corruptions(x, names=("rotate", "contrast"), severities=(1, 3))]
    assert got == [("rotate", 1), ("rotate", 3), ("contrast", 1), ("contrast", 3)]


@pytest.mark.parametrize("kind", FAR_OOD)
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)])
def test_far_ood(kind, shape):
    a = far_ood(kind, 12, shape, seed=0)
    assert a.shape == (12, *shape) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, far_ood(kind, 12, shape, seed=0)) and not torch.equal(a, far_ood(kind, 12, shape, seed=1))
    assert float(a.std()) > 0.05


def test_near_shift_digits_in_mnist_layout():
    x, y = near_shift_digits((1, 28, 28))
    assert x.shape == (1797, 1, 28, 28) and y.shape == (1797,) and set(y.tolist()) == set(range(10))
    assert float(x[:, :, :4].abs().max()) == 0 and float(x[:, :, -4:].abs().max()) == 0  # 20×20 box, centred
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    x8, _ = near_shift_digits((1, 8, 8))
    assert x8.shape == (1797, 1, 8, 8)
    assert shift.near_shift_digits((3, 28, 28))[0].shape == (1797, 3, 28, 28)
