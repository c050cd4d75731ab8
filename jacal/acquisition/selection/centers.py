"""A set of k-means++ centers over the rows of a pool: the one object the D² samplers draw over.

A center set gives, for the rows of its pool,

* ``row_d2(rows)``: the exact squared distance ``(m,)`` of a few rows to every center so far;
* ``add(j)``: row ``j`` is a center from now on;
* ``all_d2()``: every row's D² ``(N,)`` to every center so far (a pass over the pool, counted in
  ``passes``);
* ``d2_to(j)``: every row's squared distance ``(N,)`` to row ``j`` alone (a pass, the pass-per-pick
  sampler's update),

all float64. :class:`DenseCenters` holds embeddings ``x (N, d)``; :class:`OuterCenters` holds
BADGE's implicit gradient embeddings ``g_i = a_i ⊗ h_i``, never formed: their inner products factor
as ``⟨g_i, g_j⟩ = ⟨a_i, a_j⟩⟨h_i, h_j⟩``, so N × (K + d) numbers suffice (a million-item pool with
K = 10 and a 512-wide penultimate layer: 2 GB instead of 20 GB). Each also states what it reads,
for :func:`jacal.acquisition.selection.memory.seeding`: ``row_bytes`` (one row), ``vector_bytes``
(per-row vectors a pass reads besides), ``center_bytes`` (one center), ``setup_passes`` (passes
over the pool before the first draw) and ``n_start`` (the starting centers).
"""
from __future__ import annotations

from typing import Optional

import torch

from jacal.acquisition.selection import memory
from jacal.acquisition.selection.kernels import Distances, row_norms


class DenseCenters:
    """Centers in the space of ``x (N, d)``, held in float64 around the allowed rows' mean; start
    with :meth:`start` (given centers) or :meth:`start_at` (a row)."""

    setup_passes = 3  # the mean, the centred norms, the starting D²

    def __init__(self, x: torch.Tensor, allowed: torch.Tensor, capacity: int):
        self.x, self.allowed, self.capacity = x, allowed, capacity
        self.passes = self.n = self.n_start = 0

    def _begin(self, rows: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
        x = self.x
        self.flat = x.reshape(len(x), -1)
        self.row_bytes = memory.row_bytes(x)
        self.vector_bytes = x.element_size()
        self.center_bytes = 8 * (self.flat.shape[1] + 1)
        self.mu = self.dist.mu.reshape(-1).double()
        self.c = torch.empty(len(rows) + self.capacity, self.flat.shape[1], dtype=torch.float64)
        self.sq = torch.zeros(len(rows) + self.capacity, dtype=torch.float64)
        self.c[:len(rows)] = rows - self.mu
        self.sq[:len(rows)] = self.c[:len(rows)].pow(2).sum(1)
        self.n = self.n_start = self.ref_n = len(rows)
        self.ref = d2.clone()  # D² exact against the first ref_n centers
        return d2

    def start(self, centers: torch.Tensor) -> torch.Tensor:
        """Begin with ``centers (M, d)``; returns every row's D² ``(N,)`` to them (0 outside allowed)."""
        self.dist = Distances(self.x, self.allowed)
        return self._begin(centers.reshape(len(centers), -1).double(), self.dist.to_nearest(centers))

    def start_at(self, j: int) -> torch.Tensor:
        """Begin with row ``j``; returns every row's D² ``(N,)`` to it (any value outside allowed)."""
        self.dist = Distances(self.x, self.allowed)
        return self._begin(self.x[j].reshape(1, -1).double(), self.d2_to(j))

    def d2_to(self, j: int) -> torch.Tensor:
        return self.dist.to_row(j).double()

    def row_d2(self, rows: torch.Tensor) -> torch.Tensor:
        y = self.flat[rows].double() - self.mu
        d = y.pow(2).sum(1)[:, None] + self.sq[None, :self.n] - 2 * (y @ self.c[:self.n].T)
        return d.clamp_min(0).min(dim=1).values

    def add(self, j: int) -> None:
        self.c[self.n] = self.flat[j].double() - self.mu
        self.sq[self.n] = self.c[self.n].pow(2).sum()
        self.n += 1

    def all_d2(self) -> torch.Tensor:
        new = self.c[self.ref_n:self.n] + self.mu
        if len(new):
            self.ref = torch.minimum(self.ref, self.dist.to_nearest(new.to(self.x.dtype)))
            self.ref_n = self.n
            self.passes += 1
        return self.ref.clone()


class OuterCenters:
    """Centers among the implicit rows ``g_i = a_i ⊗ h_i`` of ``a (N, K)`` and ``h (N, d)``, held as
    row indices: ``‖g_i − g_j‖² = ‖g_i‖² + ‖g_j‖² − 2⟨a_i, a_j⟩⟨h_i, h_j⟩``, exact, g never formed.
    ``norms2 (N,)``: ``‖g_i‖²`` (0 outside allowed). Start with :meth:`start_at`."""

    setup_passes = 2  # the norms, the starting D²

    def __init__(self, a: torch.Tensor, h: torch.Tensor, allowed: torch.Tensor, capacity: int):
        self.a = a.double()
        self.h = h if h.dtype == torch.float32 else h.float()  # used as it is: no copy when float32
        self.allowed, self.capacity = allowed, capacity
        self.passes = self.n = self.n_start = 0
        self.norms2: Optional[torch.Tensor] = None

    def norms(self) -> torch.Tensor:
        """``‖g_i‖²`` ``(N,)`` float64, 0 outside allowed (one pass, kept)."""
        if self.norms2 is None:
            g2 = self.a.pow(2).sum(1) * row_norms(self.h, squared=True)
            self.norms2 = torch.where(self.allowed, g2, torch.zeros((), dtype=torch.float64))
            self.row_bytes = memory.row_bytes(self.a, self.h)
            self.vector_bytes = 8
            self.center_bytes = self.row_bytes + 8
        return self.norms2

    def start_at(self, j: int) -> torch.Tensor:
        self.norms()
        self.idx = torch.empty(self.capacity, dtype=torch.int64)
        self.idx[0] = j
        self.n = self.n_start = self.ref_n = 1
        self.ref = self.d2_to(j)
        return self.ref.clone()

    def d2_to(self, j: int) -> torch.Tensor:
        n2 = self.norms2
        d2 = (n2 + n2[j] - 2 * (self.a @ self.a[j]) * (self.h @ self.h[j]).double()).clamp_min(0)
        return torch.where(self.allowed, d2, torch.zeros((), dtype=torch.float64))

    def row_d2(self, rows: torch.Tensor) -> torch.Tensor:
        c, n2 = self.idx[:self.n], self.norms2
        ip = (self.a[rows] @ self.a[c].T) * (self.h[rows] @ self.h[c].T).double()
        d = n2[rows][:, None] + n2[c][None, :] - 2 * ip
        return d.clamp_min(0).min(dim=1).values

    def add(self, j: int) -> None:
        self.idx[self.n] = j
        self.n += 1

    def all_d2(self) -> torch.Tensor:
        for j in self.idx[self.ref_n:self.n].tolist():
            self.ref = torch.minimum(self.ref, self.d2_to(j))
            self.passes += 1
        self.ref_n = self.n
        return self.ref.clone()
