"""Shared benchmark helpers: timing with device sync, MNIST-shaped inputs, JSON output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_NPZ_ENV = "JACAL_MNIST_NPZ"  # a path to mnist.npz that overrides ../shared/data/mnist.npz (gpu_suite.py sets it)


def mnist_npz() -> Path:
    """The compressed MNIST the benchmarks read: ``$JACAL_MNIST_NPZ``, else ``../shared/data/mnist.npz``."""
    return Path(os.environ[MNIST_NPZ_ENV]) if os.environ.get(MNIST_NPZ_ENV) else SHARED_MNIST / "mnist.npz"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time over ``repeats`` runs after one warm-up run."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timeit_interleaved(fns: dict, device: torch.device, repeats: int) -> dict:
    """Median wall time of each function, timed round-robin (one run of each per repeat, after a
    warm-up of each) so that drift in the machine's speed hits every method alike."""
    for fn in fns.values():
        fn()
    sync(device)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def mnist_like(n: int, seed: int = 0, split: str = "test") -> tuple:
    """``n`` real MNIST images (N, 1, 28, 28) in [0, 1] when :func:`mnist_npz` has them, else uniform noise."""
    npz = mnist_npz()
    if npz.exists():
        with np.load(npz) as f:
            raw = f[f"x_{split}"][:n]
        if len(raw) == n:  # one float32 allocation: no float temporaries to inflate peak-memory readings
            return torch.from_numpy(raw).to(torch.float32).div_(255.0).unsqueeze(1), f"mnist-{split}"
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), "uniform-noise"


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def print_json(obj: dict) -> None:
    print(json.dumps(obj, indent=2))
