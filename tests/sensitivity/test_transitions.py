import math

import pytest
import torch
from torch import nn

from jacal import activation_codes, ellipse, mlp, random_ellipse, transitions


def _hand_net():
    """x ∈ R: a = relu(x − .25), b = relu(x − .5), g = relu(−.1 + a − 2b).

    Along x: 0 → 1, a and b each cross once and g's pre-activation crosses 0 twice (at .35
    and .65), so a closed 0 → 1 → 0 trip has exactly 2·(1 + 1 + 2) = 8 crossings, while the
    two samples {0, 1} see only the first layer's 4.
    """
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1), nn.ReLU(), nn.Linear(1, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [1.0]]))
        net[0].bias.copy_(torch.tensor([-0.25, -0.5]))
        net[2].weight.copy_(torch.tensor([[1.0, -2.0]]))
        net[2].bias.fill_(-0.1)
    return net


def test_hand_built_net_known_crossings():
    net = _hand_net()
    traj = torch.tensor([[0.0], [1.0]])
    exact = transitions(net, traj, method="exact")
    assert exact.count == 8
    assert exact.layer_counts == [4, 4]
    assert exact.per_step.tolist() == [4, 4]
    assert exact.sampled_count == 4
    sampled = transitions(net, traj)
    assert sampled.count == 4 and sampled.method == "sampled"
    # dense sampling of the same path sees all 8
    dense = torch.linspace(0, 1, 101).unsqueeze(1)
    dense = torch.cat([dense, dense.flip(0)[1:-1]])
    assert transitions(net, dense).count == 8


def test_codes_for_three_piece_activations():
    net = nn.Sequential(nn.Linear(1, 1), nn.ReLU6(), nn.Linear(1, 1), nn.Hardsigmoid(), nn.Linear(1, 2))
    with torch.no_grad():
        net[0].weight.fill_(1.0); net[0].bias.zero_()
        net[2].weight.fill_(1.0); net[2].bias.fill_(-3.5)
    x = torch.tensor([[-1.0], [1.0], [7.0]])
    # relu6 pre-activation: −1, 1, 7 → codes 0, 1, 2; hardsigmoid pre-activation relu6(x) − 3.5:
    # −3.5, −2.5, 2.5 → codes 0, 1, 1
    assert activation_codes(net, x).tolist() == [[0, 0], [1, 1], [2, 1]]
    res = transitions(net, x, method="exact")
    # path −1 → 1 → 7 → −1: relu6 crosses 0 (1), then 6 (1), then 6 and 0 (2) = 4; hardsigmoid
    # crosses −3 twice = 2
    assert res.count == 6 and res.sampled_count == 6


@pytest.mark.parametrize("activation", ["relu", "relu6", "hard-tanh", "hard-sigmoid", "leaky-relu"])
def test_exact_agrees_with_very_dense_float64_sampling(activation):
    torch.manual_seed(0)
    net = mlp(5, 3, width=8, depth=3, activation=activation, weight_variance=4.0, bias_variance=0.5, seed=7).double()
    if activation == "hard-sigmoid":
        for m in net:  # spread pre-activations across the [-3, 3] breakpoints
            if isinstance(m, nn.Linear):
                m.weight.data.mul_(4.0)
    anchors = torch.randn(3, 5, dtype=torch.float64) * 2
    traj = ellipse(anchors[0], anchors[1], anchors[2], 12)
    exact = transitions(net, traj, method="exact")
    # refine the same polygon: 4000 samples on each of its 12 straight segments
    t = torch.linspace(0, 1, 4001, dtype=torch.float64)[:-1].unsqueeze(1)
    nxt = torch.roll(traj, -1, 0)
    dense = torch.cat([traj[i] + t * (nxt[i] - traj[i]) for i in range(len(traj))])
    assert exact.count == transitions(net, dense).count
    assert exact.count >= exact.sampled_count
    assert exact.count > 0


def test_smooth_activation_flagged_and_exact_refused():
    net = mlp(4, 2, width=6, depth=2, activation="tanh", seed=0)
    traj = torch.randn(10, 4)
    res = transitions(net, traj)
    assert res.smooth is True and res.n_units == 12
    with pytest.raises(ValueError, match="piecewise-linear"):
        transitions(net, traj, method="exact")
    relu = transitions(mlp(4, 2, width=6, depth=2, seed=0), traj)
    assert relu.smooth is False


def test_transitions_bad_input():
    net = mlp(4, 2, width=6, depth=1, seed=0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        transitions(net, torch.tensor([[0.0, 0, 0, float("nan")], [1.0, 1, 1, 1]]))
    with pytest.raises(ValueError, match="at least 2 points"):
        transitions(net, torch.zeros(1, 4))
    with pytest.raises(ValueError, match="rejected input"):
        transitions(net, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="no activation modules"):
        transitions(nn.Sequential(nn.Linear(4, 2)), torch.zeros(5, 4))


def test_ellipse_passes_through_anchors():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    pts = ellipse(a[0], a[1], a[2], 60)
    assert pts.shape == (60, 1, 4, 4)
    # angles π/3, π, 5π/3 are samples 10, 30, 50 of 60
    for i, j in zip((10, 30, 50), range(3)):
        torch.testing.assert_close(pts[i], a[j], rtol=0, atol=1e-12)
    # and it is planar: centred points span 2 dimensions
    s = torch.linalg.svdvals(pts.reshape(60, -1) - pts.reshape(60, -1).mean(0))
    assert s[2] < 1e-10 * s[0]


def test_ellipse_shape_mismatch():
    with pytest.raises(ValueError, match="one shape"):
        ellipse(torch.zeros(3), torch.zeros(4), torch.zeros(3), 6)


def test_random_ellipse_is_far_from_data():
    from jacal import load_dataset

    d = load_dataset("digits")
    x = d.x_train.reshape(len(d.x_train), -1).double()
    pts = random_ellipse(d.x_train, 30, seed=1).reshape(30, -1)
    # distance from ellipse points to their nearest training point vs the data's own
    # nearest-neighbour distances
    to_data = torch.cdist(pts, x).min(1).values
    within = torch.cdist(x[:300], x)
    within.fill_diagonal_(math.inf)
    nn_data = within.min(1).values
    assert to_data.min() > nn_data.quantile(0.9)
    assert random_ellipse(d.x_train, 30, seed=1).equal(random_ellipse(d.x_train, 30, seed=1))


@pytest.mark.parametrize("activation", ["relu", "hard-tanh", "relu6"])
def test_exact_affine_many_trajectories_equals_exact_one_at_a_time(activation):
    """The batched count from weights (used by the C2 experiment) = transitions(method="exact") per
    trajectory, and = a very dense float64 sampling of the same polygons."""
    from jacal.sensitivity.transitions import exact_transitions_affine

    net = mlp(5, 3, width=8, depth=3, activation=activation, weight_variance=4.0, bias_variance=0.5, seed=3).double()
    lins = [m for m in net if isinstance(m, nn.Linear)]
    act = next(m for m in net if not isinstance(m, (nn.Linear, nn.Flatten)))
    g = torch.Generator().manual_seed(1)
    trajs = torch.stack([ellipse(*(torch.randn(3, 5, generator=g, dtype=torch.float64) * 2), 12) for _ in range(5)])
    got = exact_transitions_affine([m.weight.T for m in lins], [m.bias for m in lins], act, trajs, chunk=2)
    assert got.shape == (5, 12) and got.dtype == torch.int64
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)[:-1].unsqueeze(1)
    for e in range(5):
        one = transitions(net, trajs[e], method="exact")
        assert got[e].tolist() == one.per_step.tolist()
        nxt = torch.roll(trajs[e], -1, 0)
        dense = torch.cat([trajs[e][i] + t * (nxt[i] - trajs[e][i]) for i in range(12)])
        assert int(got[e].sum()) == transitions(net, dense).count
    assert int(got.sum()) > 0


def test_exact_affine_refuses_smooth_and_bad_shapes():
    from jacal.sensitivity.transitions import exact_transitions_affine

    w, b = [torch.ones(2, 3), torch.ones(3, 2)], [torch.zeros(3), torch.zeros(2)]
    with pytest.raises(ValueError, match="piecewise-linear"):
        exact_transitions_affine(w, b, nn.Tanh(), torch.zeros(1, 6, 2))
    with pytest.raises(ValueError, match=r"\(E, k, 2\)"):
        exact_transitions_affine(w, b, nn.ReLU(), torch.zeros(1, 6, 3))
    with pytest.raises(ValueError, match="NaN or Inf"):
        exact_transitions_affine(w, b, nn.ReLU(), torch.full((1, 6, 2), float("nan")))


def test_random_ellipse_constructions_and_length():
    from jacal.sensitivity.trajectories import closed_length

    x = torch.rand(50, 1, 8, 8) * 0.2 + 0.4  # data in [0.4, 0.6]
    dm = random_ellipse(x, 60, seed=2)
    sn = random_ellipse(x, 60, seed=2, construction="standard-normal").reshape(60, -1)
    # the standard-normal anchors are N(0, 1) per feature: samples 10, 30, 50 have std ≈ 1, mean ≈ 0
    anchors = sn[[10, 30, 50]]
    assert 0.8 < float(anchors.std()) < 1.2 and abs(float(anchors.mean())) < 0.2
    # data-matched anchors have the data's per-feature scale
    assert float(dm.reshape(60, -1)[[10, 30, 50]].std()) < 0.3
    with pytest.raises(ValueError, match="construction"):
        random_ellipse(x, 6, construction="uniform")
    square = torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0]])
    assert closed_length(square) == pytest.approx(8.0)
    # a fine ellipse's polygon length → the ellipse's perimeter (a circle of radius r: 2πr)
    circle = ellipse(torch.tensor([math.cos(math.pi / 3), math.sin(math.pi / 3)]), torch.tensor([-1.0, 0.0]),
                     torch.tensor([math.cos(5 * math.pi / 3), math.sin(5 * math.pi / 3)]), 600)
    assert closed_length(circle) == pytest.approx(2 * math.pi, rel=1e-4)
