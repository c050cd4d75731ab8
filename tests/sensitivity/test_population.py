import pytest
import torch

import jacal
from jacal.population import (ModelConfig, PopulationMLP, population_codes, population_jacobian_norm,
                              population_transitions, train_population)


@pytest.fixture(scope="module")
def digits():
    return jacal.load_dataset("digits", n_train=300, n_test=100, seed=0)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("momentum", 0.02), ("adam", 3e-3), ("rmsprop", 1e-3)])
def test_population_member_equals_solo_training(digits, optimizer, lr):
    cfgs = [ModelConfig(width=32, depth=2, optimizer=optimizer, lr=lr * f, batch_size=32, steps=60, seed=s,
                        weight_variance=v)
            for s, f, v in [(0, 1.0, 2.0), (1, 0.5, 1.0), (2, 2.0, 3.0)]]
    pop, results = train_population(cfgs, digits)
    for i, c in enumerate(cfgs):
        solo = jacal.mlp(64, 10, width=32, depth=2, weight_variance=c.weight_variance, seed=c.seed)
        r = jacal.train(solo, digits, optimizer=optimizer, lr=c.lr, batch_size=32, steps=60, seed=c.seed)
        member = pop.member(i, c, 64, 10)
        for a, b in zip(member.parameters(), solo.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        assert results[i]["train_accuracy"] == pytest.approx(r.train_accuracy, abs=1 / 300 + 1e-9)
        assert results[i]["test_loss"] == pytest.approx(r.test_loss, rel=1e-3)


def test_population_of_one_equals_solo_full_batch(digits):
    c = ModelConfig(width=16, depth=1, optimizer="sgd", lr=0.5, batch_size=0, steps=30, seed=4)
    pop, res = train_population([c], digits)
    solo = jacal.mlp(64, 10, width=16, depth=1, seed=4)
    r = jacal.train(solo, digits, optimizer="sgd", lr=0.5, batch_size=None, steps=30, seed=4)
    for a, b in zip(pop.member(0, c, 64, 10).parameters(), solo.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert res[0]["train_loss"] == pytest.approx(r.train_loss, rel=1e-4)


def test_random_labels_and_augmentation_are_per_model(digits):
    base = dict(width=32, depth=1, batch_size=32, steps=40, lr=3e-3)
    cfgs = [ModelConfig(seed=0, **base), ModelConfig(seed=0, random_labels=True, **base),
            ModelConfig(seed=0, augment=True, **base)]
    pop, res = train_population(cfgs, digits)
    # same seed, same init and order: only the label/augmentation flag differs
    assert not torch.equal(pop.weights[0][0], pop.weights[0][1])
    assert not torch.equal(pop.weights[0][0], pop.weights[0][2])
    assert res[1]["test_accuracy"] < res[0]["test_accuracy"]
    pop0, res0 = train_population(cfgs[:1], digits)
    torch.testing.assert_close(pop0.weights[0][0], pop.weights[0][0], rtol=1e-5, atol=1e-6)


def test_mixed_groups_rejected(digits):
    with pytest.raises(ValueError, match="share"):
        train_population([ModelConfig(width=8, depth=1), ModelConfig(width=16, depth=1)], digits)


@pytest.mark.parametrize("activation", ["relu", "hard-tanh", "tanh"])
def test_population_metrics_match_single_model_functions(digits, activation):
    cfgs = [ModelConfig(width=24, depth=2, activation=activation, seed=s, weight_variance=3.0) for s in range(3)]
    pop = PopulationMLP.from_configs(cfgs, 64, 10, torch.device("cpu"))
    x = digits.x_test[:40]
    norms = population_jacobian_norm(pop, x, batch_size=16)
    traj = jacal.ellipse(digits.x_test[0], digits.x_test[1], digits.x_test[2], 48).float()
    steps = population_transitions(pop, traj)
    codes = population_codes(pop, x)
    for i, c in enumerate(cfgs):
        m = pop.member(i, c, 64, 10)
        torch.testing.assert_close(norms[i].float(), jacal.jacobian_norm(m, x), rtol=1e-5, atol=0)
        assert torch.equal(codes[i], jacal.activation_codes(m, x))
        assert torch.equal(steps[i], jacal.transitions(m, traj).per_step)
    wide = PopulationMLP.from_configs([ModelConfig(width=128, depth=1, seed=0)], 64, 10, torch.device("cpu"))
    torch.testing.assert_close(population_jacobian_norm(wide, x)[0].float(),
                               jacal.jacobian_norm(wide.member(0, ModelConfig(width=128, depth=1, seed=0), 64, 10), x),
                               rtol=1e-5, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_population_on_cuda_matches_cpu(digits):
    cfgs = [ModelConfig(width=16, depth=1, lr=3e-3, batch_size=32, steps=20, seed=s) for s in range(3)]
    cpu_pop, cpu_res = train_population(cfgs, digits)
    gpu_pop, gpu_res = train_population(cfgs, digits, device=torch.device("cuda"))
    for a, b in zip(cpu_pop.parameters, gpu_pop.parameters):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(population_jacobian_norm(gpu_pop, digits.x_test[:20]),
                               population_jacobian_norm(cpu_pop, digits.x_test[:20]), rtol=1e-3, atol=0)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.2), ("momentum", 0.05), ("adam", 3e-3), ("rmsprop", 1e-3)])
def test_until_fit_stops_each_model_where_a_fixed_run_of_that_length_ends(digits, optimizer, lr):
    """A model trained until it fits is frozen at the first check where it fits: its weights are
    exactly those of a fixed run of that many steps; a member that cannot fit trains to the cap."""
    fits = ModelConfig(width=64, depth=1, optimizer=optimizer, lr=lr, batch_size=32, steps=2000, seed=3,
                       until_fit=0.99)
    stuck = ModelConfig(width=64, depth=1, optimizer=optimizer, lr=lr * 1e-4, batch_size=32, steps=2000, seed=4,
                        until_fit=0.99)
    pop, res = train_population([fits, stuck], digits)
    s = res[0]["steps"]
    assert 0 < s < 2000 and s % 100 == 0 and res[0]["train_accuracy"] >= 0.99
    assert res[1]["steps"] == 2000 and res[1]["train_accuracy"] < 0.99
    fixed, fixed_res = train_population([ModelConfig(**{**fits.to_dict(), "steps": s, "until_fit": 0.0})], digits)
    for a, b in zip(pop.parameters, fixed.parameters):
        assert torch.equal(a[0], b[0])
    assert fixed_res[0]["steps"] == s
    earlier, _ = train_population([ModelConfig(**{**fits.to_dict(), "steps": s - 100, "until_fit": 0.0})], digits)
    acc, _ = jacal.population.population_evaluate(earlier, digits.x_train.reshape(len(digits.x_train), -1),
                                                   digits.y_train)
    assert float(acc[0]) < 0.99  # it did not fit at the check before


def test_until_fit_group_ends_when_all_fit(digits):
    cfgs = [ModelConfig(width=64, depth=1, optimizer="adam", lr=3e-3, batch_size=32, steps=5000, seed=s,
                        until_fit=0.99) for s in range(3)]
    calls = []
    _, res = train_population(cfgs, digits, progress=lambda step, total: calls.append(step))
    assert max(r["steps"] for r in res) < 5000
    assert len(calls) <= max(r["steps"] for r in res) + 1 and calls[-1] == 5000  # the bar completes
