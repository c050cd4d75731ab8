import torch

import jacal
from jacal.population import ModelConfig, train_population


def test_random_translate_shifts_with_zero_fill():
    from jacal.augment import random_translate

    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4) + 1
    g = torch.Generator().manual_seed(0)
    y = random_translate(x, 1, g)
    assert y.shape == x.shape
    for i in range(2):  # each output is x shifted by some (dy, dx) ∈ {-1,0,1}², zero-filled
        ok = False
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                shifted = torch.zeros(4, 4)
                src = x[i, 0]
                for r in range(4):
                    for c in range(4):
                        rr, cc = r + dy, c + dx
                        if 0 <= rr < 4 and 0 <= cc < 4:
                            shifted[r, c] = src[rr, cc]
                ok |= torch.equal(shifted, y[i, 0])
        assert ok


def test_augmentation_with_flips_on_colour_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    data = jacal.Splits("fake-colour", x, y, x[:16], y[:16], 10)
    cfgs = [ModelConfig(width=16, depth=1, batch_size=16, steps=8, seed=0),
            ModelConfig(width=16, depth=1, batch_size=16, steps=8, seed=0, augment=True)]
    pop, res = train_population(cfgs, data, hflip=True)
    assert pop.weights[0].shape == (2, 192, 16)
    assert not torch.equal(pop.weights[0][0], pop.weights[0][1])  # only the augmented member saw other inputs
    assert all(0.0 <= r["train_accuracy"] <= 1.0 for r in res)
