"""How many trials one worker trains at once: ``sweep.population`` as given, refused when that many members do not
fit in memory, or ``auto``'s pick. The rule and its numbers come from benchmarks/bench_population.py (README,
"Population training"): stacking pays while a step is dispatch-bound (small models); it buys nothing once the
matmuls themselves dominate, where auto trains one model at a time."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

from . import config as config_mod
from .errors import ConfigError

AUTO_CPU = 8  # per-member epoch time (2 cores, seed MLP): K=1 59 ms, 2: 40, 4: 36, 8: 31, 16: 30, 32: 32
AUTO_CUDA = 64  # not measured (no GPU was lent); benchmarks/gpu_check.sh prints the scaling to set it from
# auto on CPU: above this many parameters per member, one model at a time. Measured per-member epoch time, K=1 vs
# K=8: 52,650 parameters 59 vs 31 ms; 235,146: 126 vs 110 ms; 1,863,690: 1195 vs 1478 ms (stacking is slower)
CPU_MAX_PARAMS = 500_000
MEMORY_SHARE = 0.5  # of the memory free when the worker starts, for all of its members together
EVAL_ROWS = 4096  # rows per evaluation chunk (Population._evaluate)


def device(cfg: DictConfig) -> str:
    import torch

    if cfg.trainer.accelerator == "cpu" or not torch.cuda.is_available():
        return "cpu"
    return "cuda"


def layer_dims(cfg: DictConfig, input_shape: tuple[int, ...], n_classes: int) -> list[int]:
    return [math.prod(input_shape), *[int(h) for h in cfg.model.hidden], n_classes]


def param_count(dims: list[int]) -> int:
    return sum(a * b + b for a, b in zip(dims, dims[1:]))


def member_bytes(cfg: DictConfig, input_shape: tuple[int, ...], n_classes: int) -> int:
    """A member's own memory: its parameters five times (weights, gradients, Adam's two moments, early stopping's
    best copy) plus the activations of a training batch (forward, mask, backward) and of an evaluation chunk."""
    dims = layer_dims(cfg, input_shape, n_classes)
    width = sum(dims[1:])
    return 4 * (5 * param_count(dims) + 4 * int(cfg.data.batch_size) * width + 2 * EVAL_ROWS * width)


def free_bytes(dev: str) -> int:
    if dev == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    import psutil

    return int(psutil.virtual_memory().available)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def resolve(cfg: DictConfig, workers: int = 1) -> int:
    """``sweep.population`` as a number of members (validated: an int >= 1 or "auto"). Loads the data's shape."""
    from .data import load_splits
    from .population import vectorizable

    value: Any = cfg.sweep.population
    if value == "auto":
        if vectorizable(cfg, []) is not None:  # the CNN, SGD, checkpointing: every trial would train alone anyway
            return 1
    elif int(value) == 1:
        return 1
    splits = load_splits(cfg.data)
    per_member = member_bytes(cfg, splits.input_shape, splits.n_classes)
    dev = device(cfg)
    free = free_bytes(dev) / max(1, workers)
    fit = max(1, int(MEMORY_SHARE * free // per_member))
    if value == "auto":
        if dev == "cpu" and param_count(layer_dims(cfg, splits.input_shape, splits.n_classes)) > CPU_MAX_PARAMS:
            return 1
        k = min(AUTO_CUDA if dev == "cuda" else AUTO_CPU, fit)
        if workers > 1:  # one worker must not take every trial while the others wait
            k = min(k, math.ceil(config_mod.n_trials(cfg.sweep) / workers))
        return max(1, k)
    k = int(value)
    if k > fit:
        raise ConfigError(
            "sweep.population",
            k,
            f"{k} members of this model need about {_gib(k * per_member)} on {dev}; {_gib(free)} is free for this worker and "
            f"members may use {MEMORY_SHARE:.0%} of it, room for {fit}: use a smaller K or auto",
        )
    return k
