"""Slow, obviously-correct references: float64, one point and one class at a time."""
import copy

import torch


def reference_jacobian_norm(model, x, output="softmax"):
    """‖∂f(x_n)/∂x_n‖_F for each n, from :func:`reference_jacobian` (one point, one class at a time)."""
    return reference_jacobian(model, x, output).flatten(1).norm(dim=1)


def relative_error(a, b):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return ((a - b).abs() / b.abs().clamp_min(1e-30)).max().item()


def reference_jacobian(model, x, output="softmax"):
    """Full Jacobians ``(N, K, D)`` ∂f(x_n)/∂x_n, float64, one point and one class at a time."""
    m = copy.deepcopy(model).double().eval()
    out = []
    for n in range(x.shape[0]):
        xn = x[n:n + 1].detach().double().clone().requires_grad_(True)
        z = m(xn)
        f = {"softmax": torch.softmax, "log-softmax": torch.log_softmax}.get(output, lambda t, dim: t)(z, dim=1)
        rows = []
        for k in range(f.shape[1]):
            (g,) = torch.autograd.grad(f[0, k], xn, retain_graph=True)
            rows.append(g.reshape(-1))
        out.append(torch.stack(rows))
    return torch.stack(out)


def reference_boundary(model, x):
    """Each item's nearest boundary, float64, one item and one class pair at a time: ``(runner_up (N,),
    distance (N,))`` with ``a, b`` the top two logits and distance ``(z_a − z_b) / ‖∇ₓ(z_a − z_b)‖``."""
    m = copy.deepcopy(model).double().eval()
    runner, dist = [], []
    for n in range(x.shape[0]):
        xn = x[n:n + 1].detach().double().clone().requires_grad_(True)
        z = m(xn)[0]
        a, b = torch.topk(z, 2).indices.tolist()
        gap = z[a] - z[b]
        (g,) = torch.autograd.grad(gap, xn)
        runner.append(b)
        dist.append((gap / g.norm()).item())
    return torch.tensor(runner), torch.tensor(dist, dtype=torch.float64)
