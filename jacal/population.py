"""Train and measure populations of same-shaped MLPs as one batched computation.

A *group* is a list of :class:`ModelConfig` that share width, depth, activation, optimizer, batch
size and step count. Their weights are stacked along a leading model axis ``P`` and trained with
batched matrix products; every model keeps its own initialization (the same draw as
:class:`jacal.models.MLP` with its seed), learning rate, optimizer state, data order (the same
``randperm`` sequence as :func:`jacal.train` with its seed), labels and augmentation. A member's
result therefore equals its solo :func:`jacal.train` run up to float rounding.

The optimizers are written out here (vectorized over models) because ``torch.optim`` applies one
learning rate per parameter tensor and a stacked tensor holds P models; their update rules follow
``torch.optim``'s defaults exactly (SGD; SGD momentum 0.9; Adam β=(0.9, 0.999), ε=1e-8; RMSprop
α=0.99, ε=1e-8), which the tests check against a solo run with ``torch.optim``.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from jacal._internal.activations import activation_spec
from jacal.augment import random_hflip, random_translate
from jacal.data import Splits
from jacal.models import ACTIVATIONS, MLP
from jacal.sensitivity.jacobian import scaled_output_rows

__all__ = ["ModelConfig", "PopulationMLP", "train_population", "population_jacobian_norm",
           "population_codes", "population_transitions", "population_evaluate", "random_labels_for"]


@dataclass(frozen=True)
class ModelConfig:
    """One model of a sweep. ``batch_size=0`` means full batch.

    ``until_fit`` > 0 trains the model until its training accuracy (clean inputs, its own labels,
    checked every :data:`FIT_CHECK_EVERY` steps) reaches ``until_fit``, for at most ``steps`` steps
    (the steps it took are reported); 0 trains exactly ``steps`` steps.
    """

    width: int
    depth: int
    activation: str = "relu"
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 64
    steps: int = 1000
    weight_variance: float = 2.0
    bias_variance: float = 0.0
    augment: bool = False
    random_labels: bool = False
    seed: int = 0
    until_fit: float = 0.0

    def group_key(self) -> Tuple:
        """Models with equal keys train together as one population."""
        return (self.width, self.depth, self.activation, self.optimizer, self.batch_size, self.steps)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


FIT_CHECK_EVERY = 100


def random_labels_for(cfg: ModelConfig, n: int, n_classes: int) -> torch.Tensor:
    """The fixed random training labels of a random-label model (seeded by its seed)."""
    gen = torch.Generator().manual_seed(1_000_003 + int(cfg.seed))
    return torch.randint(0, n_classes, (n,), generator=gen)


class PopulationMLP:
    """P fully-connected nets of one shape: weights ``(P, in, out)``, biases ``(P, 1, out)``."""

    def __init__(self, weights: List[torch.Tensor], biases: List[torch.Tensor], activation: str) -> None:
        self.weights = weights
        self.biases = biases
        self.activation = activation
        self._act = ACTIVATIONS[activation]()
        self._spec = activation_spec(self._act)

    @classmethod
    def from_configs(cls, configs: Sequence[ModelConfig], input_dim: int, n_classes: int,
                     device: torch.device) -> "PopulationMLP":
        """Initialize each member exactly as ``MLP(..., seed=cfg.seed)`` would."""
        members = [MLP(input_dim, n_classes, width=c.width, depth=c.depth, activation=c.activation,
                       weight_variance=c.weight_variance, bias_variance=c.bias_variance, seed=c.seed)
                   for c in configs]
        linears = [[m for m in net if isinstance(m, torch.nn.Linear)] for net in members]
        n_layers = len(linears[0])
        weights = [torch.stack([lin[i].weight.detach().T for lin in linears]).contiguous().to(device)
                   for i in range(n_layers)]
        biases = [torch.stack([lin[i].bias.detach()[None, :] for lin in linears]).contiguous().to(device)
                  for i in range(n_layers)]
        return cls(weights, biases, configs[0].activation)

    @property
    def n_models(self) -> int:
        return self.weights[0].shape[0]

    @property
    def parameters(self) -> List[torch.Tensor]:
        return self.weights + self.biases

    def n_params(self) -> int:
        """Parameters per model."""
        return int(sum(w[0].numel() for w in self.weights) + sum(b[0].numel() for b in self.biases))

    def n_neurons(self) -> int:
        """Hidden units per model."""
        return int(sum(w.shape[2] for w in self.weights[:-1]))

    def forward(self, x: torch.Tensor, *, return_preacts: bool = False):
        """Logits ``(P, B, K)`` for ``x`` shared ``(B, D)`` or per model ``(P, B, D)``."""
        h = x
        pre = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w) if h.ndim == 3 else torch.matmul(h, w) + b
            if i < len(self.weights) - 1:
                if return_preacts:
                    pre.append(h)
                h = self._act(h)
        return (h, pre) if return_preacts else h

    def member(self, i: int, config: ModelConfig, input_dim: int, n_classes: int) -> MLP:
        """Member ``i`` as a standalone :class:`jacal.models.MLP` (CPU)."""
        net = MLP(input_dim, n_classes, width=config.width, depth=config.depth, activation=config.activation,
                  weight_variance=config.weight_variance, bias_variance=config.bias_variance, seed=config.seed)
        lins = [m for m in net if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            for lin, w, b in zip(lins, self.weights, self.biases):
                lin.weight.copy_(w[i].T.cpu())
                lin.bias.copy_(b[i, 0].cpu())
        return net.eval()


# ---------------------------------------------------------------------------------------------
# vectorized optimizers (per-model learning rates)


class _PopulationOptimizer:
    def __init__(self, name: str, params: List[torch.Tensor], lr: torch.Tensor) -> None:
        self.name, self.params, self.t = name, params, 0
        self.lr = [lr.reshape(-1, *([1] * (p.ndim - 1))).to(p) for p in params]
        self.state = [dict() for _ in params]

    def freeze(self, done: torch.Tensor) -> None:
        """Stop updating the models flagged in ``done`` (P,): their learning rate becomes 0, so every
        rule here leaves their parameters exactly as they are."""
        keep = (~done).to(self.lr[0].dtype)
        self.lr = [lr * keep.reshape(-1, *([1] * (lr.ndim - 1))).to(lr) for lr in self.lr]

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        self.t += 1
        for p, g, lr, st in zip(self.params, grads, self.lr, self.state):
            if self.name == "sgd":
                p.addcmul_(g, lr, value=-1.0)
            elif self.name == "momentum":
                buf = st.get("buf")
                buf = g.clone() if buf is None else buf.mul_(0.9).add_(g)
                st["buf"] = buf
                p.addcmul_(buf, lr, value=-1.0)
            elif self.name == "adam":
                if not st:
                    st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
                m, v = st["m"], st["v"]
                m.lerp_(g, 0.1)
                v.mul_(0.999).addcmul_(g, g, value=0.001)
                bc1, bc2 = 1 - 0.9 ** self.t, 1 - 0.999 ** self.t
                denom = v.sqrt().div_(math.sqrt(bc2)).add_(1e-8)
                p.addcdiv_(m * (lr / bc1), denom, value=-1.0)
            elif self.name == "rmsprop":
                if not st:
                    st["sq"] = torch.zeros_like(p)
                sq = st["sq"]
                sq.mul_(0.99).addcmul_(g, g, value=0.01)
                p.addcdiv_(g * lr, sq.sqrt().add_(1e-8), value=-1.0)
            else:
                raise ValueError(f"unknown optimizer {self.name!r}")


# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def population_evaluate(pop: PopulationMLP, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 2048
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-model ``(accuracy (P,), mean cross-entropy (P,))`` on ``x (N, D)`` and labels ``y``
    ``(N,)`` shared or ``(P, N)`` per model."""
    dev = pop.weights[0].device
    p = pop.n_models
    correct = torch.zeros(p, dtype=torch.float64, device=dev)
    loss = torch.zeros(p, dtype=torch.float64, device=dev)
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(dev)
        yb = (y[..., i:i + batch_size]).to(dev)
        yb = yb.expand(p, -1) if yb.ndim == 1 else yb
        z = pop.forward(xb)
        loss += F.cross_entropy(z.reshape(-1, z.shape[-1]), yb.reshape(-1), reduction="none").reshape(p, -1).sum(1).double()
        correct += (z.argmax(-1) == yb).sum(1).double()
    n = max(len(x), 1)
    return (correct / n).cpu(), (loss / n).cpu()


def train_population(configs: Sequence[ModelConfig], data: Splits, *, device: torch.device = torch.device("cpu"),
                     max_shift: Optional[int] = None, hflip: bool = False,
                     progress: Optional[Callable[[int, int], Any]] = None) -> Tuple[PopulationMLP, List[Dict[str, float]]]:
    """Train a group of same-shaped models together.

    Args:
        configs: models sharing :meth:`ModelConfig.group_key`.
        data: the dataset (images ``(N, C, H, W)`` or flat ``(N, D)``).
        device: where to train.
        max_shift: translation range for models with ``augment=True`` (default: 1 pixel for
            8×8 images, 2 otherwise).
        hflip: also flip horizontally (CIFAR) for augmented models.
        progress: optional ``callback(step, total_steps)``.

    Returns:
        The trained :class:`PopulationMLP` and one metrics dict per model (train/test accuracy and
        loss, gap, steps trained, wall time per model = group time / P). A group whose models all
        train ``until_fit`` ends as soon as the last of them fits.
    """
    if not configs:
        raise ValueError("Expected at least one config.")
    key = configs[0].group_key()
    if any(c.group_key() != key for c in configs):
        raise ValueError("All configs of a population must share width, depth, activation, optimizer, batch size and steps.")
    start = time.perf_counter()
    p = len(configs)
    x_img = data.x_train
    n, d, k = len(x_img), data.input_dim, data.n_classes
    img_shape = tuple(x_img.shape[1:])
    x_flat = x_img.reshape(n, d).to(device)
    bs = n if configs[0].batch_size == 0 else min(configs[0].batch_size, n)
    per_epoch = math.ceil(n / bs)
    steps = configs[0].steps
    labels = torch.stack([random_labels_for(c, n, k) if c.random_labels else data.y_train for c in configs]).to(device)
    aug = torch.tensor([c.augment for c in configs], device=device)
    if max_shift is None:
        max_shift = 1 if img_shape[-1] <= 8 else 2
    can_augment = len(img_shape) == 3
    order_gens = [torch.Generator().manual_seed(int(c.seed)) for c in configs]
    aug_gen = torch.Generator().manual_seed(int(sum(c.seed * (i + 1) for i, c in enumerate(configs))) % (2 ** 63))
    pop = PopulationMLP.from_configs(configs, d, k, device)
    for t in pop.parameters:
        t.requires_grad_(True)
    opt = _PopulationOptimizer(configs[0].optimizer, pop.parameters,
                               torch.tensor([c.lr for c in configs], dtype=x_flat.dtype))
    shared_full_batch = bs == n and not bool(aug.any())
    orders = None
    target = torch.tensor([c.until_fit for c in configs], dtype=torch.float64)
    stopped_at = torch.full((p,), steps, dtype=torch.long)
    for step in range(steps):
        if step and step % FIT_CHECK_EVERY == 0 and bool((target > 0).any()):
            active = stopped_at == steps
            acc, _ = population_evaluate(pop, x_flat, labels)
            done = active & (target > 0) & (acc >= target)
            if bool(done.any()):
                stopped_at[done] = step
                opt.freeze(stopped_at < steps)
            if not bool((stopped_at == steps).any()):
                if progress is not None:
                    progress(steps, steps)
                break
        if step % per_epoch == 0:
            orders = torch.stack([torch.randperm(n, generator=g) for g in order_gens]).to(device)
        j = step % per_epoch
        idx = orders[:, j * bs:(j + 1) * bs]  # (P, b)
        yb = labels.gather(1, idx)
        if shared_full_batch:
            xb = x_flat  # every model sees the whole set; order does not change the mean loss
            yb = labels
        else:
            xb = x_flat[idx]  # (P, b, D)
            if can_augment and bool(aug.any()):
                rows = torch.nonzero(aug).flatten()
                sub = xb[rows].reshape(-1, *img_shape)
                sub = random_translate(sub, max_shift, aug_gen)
                if hflip:
                    sub = random_hflip(sub, aug_gen)
                xb = xb.clone()
                xb[rows] = sub.reshape(len(rows), -1, d)
        z = pop.forward(xb)
        loss = F.cross_entropy(z.reshape(-1, k), yb.reshape(-1), reduction="none").reshape(p, -1).mean(1).sum()
        grads = torch.autograd.grad(loss, pop.parameters)
        opt.step(grads)
        if progress is not None:
            progress(step + 1, steps)
    for t in pop.parameters:
        t.requires_grad_(False)
    tr_acc, tr_loss = population_evaluate(pop, data.x_train.reshape(n, d), labels)
    te_acc, te_loss = population_evaluate(pop, data.x_test.reshape(len(data.x_test), d), data.y_test)
    wall = (time.perf_counter() - start) / p
    results = []
    for i in range(p):
        results.append({"train_accuracy": float(tr_acc[i]), "test_accuracy": float(te_acc[i]),
                        "train_loss": float(tr_loss[i]), "test_loss": float(te_loss[i]),
                        "gap": float(tr_acc[i] - te_acc[i]), "steps": int(stopped_at[i]), "wall_time_s": wall})
    return pop, results


@torch.no_grad()
def population_jacobian_norm(pop: PopulationMLP, x: torch.Tensor, *, output: str = "softmax",
                             batch_size: int = 256) -> torch.Tensor:
    """Per-model, per-point ``‖∂f/∂x‖_F`` ``(P, N)`` in one batched closed-form pass per chunk.

    Same algorithm as :func:`jacal.jacobian_norm`'s ``"mlp"`` method, with a model axis.
    """
    dev = pop.weights[0].device
    n = len(x)
    xf = x.reshape(n, -1)
    p = pop.n_models
    out = torch.empty(p, n, dtype=torch.float64)
    w1 = pop.weights[0]  # (P, D, n1)
    gram = w1.transpose(1, 2) @ w1 if w1.shape[1] > w1.shape[2] else None  # (P, n1, n1)
    for s in range(0, n, batch_size):
        xb = xf[s:s + batch_size].to(dev, w1.dtype)
        z, pre = pop.forward(xb, return_preacts=True)
        derivs = [pop._spec.derivative(h) for h in pre]
        b = z.shape[1]
        rows, scale = scaled_output_rows(z.reshape(p * b, -1), output)
        a = rows.reshape(p, b, rows.shape[1], rows.shape[2])  # (P, b, R, K)
        for li in range(len(pop.weights) - 1, 0, -1):
            a = torch.matmul(a, pop.weights[li].transpose(1, 2).unsqueeze(1))  # (P, b, R, in)
            a = a * derivs[li - 1].unsqueeze(2)
        if gram is not None:
            sq = (torch.matmul(a, gram.unsqueeze(1)) * a).sum(dim=(2, 3))
        else:
            sq = torch.matmul(a, w1.transpose(1, 2).unsqueeze(1)).pow(2).sum(dim=(2, 3))
        out[:, s:s + b] = (sq.double() * scale.reshape(p, b) ** 2).cpu()
    return out.clamp_min(0).sqrt()


@torch.no_grad()
def population_codes(pop: PopulationMLP, x: torch.Tensor) -> torch.Tensor:
    """Region codes ``(P, N, H)`` int8 of every hidden unit of every model."""
    _, pre = pop.forward(x.reshape(len(x), -1).to(pop.weights[0].device, pop.weights[0].dtype), return_preacts=True)
    return torch.cat([pop._spec.codes(h) for h in pre], dim=2)


@torch.no_grad()
def population_transitions(pop: PopulationMLP, trajectory: torch.Tensor) -> torch.Tensor:
    """Sampled transitions per step ``(P, k)`` around a closed trajectory ``(k, ...)``."""
    codes = population_codes(pop, trajectory).to(torch.int16)
    return (codes - torch.roll(codes, -1, dims=1)).abs().sum(dim=2).cpu()
