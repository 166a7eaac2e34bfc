"""How many trials one worker trains at once: ``sweep.population`` as given, refused when that many members do not
fit in memory, or ``auto``'s pick. The rule and its numbers come from benchmarks/bench_population.py (README,
"Population training"; every run in docs/population.md): stacking pays while a step is dispatch-bound (small
models); it buys nothing once the matmuls themselves dominate, where auto trains one model at a time."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

from . import config as config_mod
from .errors import ConfigError

AUTO_CPU = 8  # per-member epoch time (2 cores, seed MLP): K=1 59 ms, 2: 40, 4: 36, 8: 31, 16: 30, 32: 32
# the CNN on CPU is compute-bound: per-member epoch time (2 cores, AMD EPYC, seed CNN, mnist5k, cache-sized eval
# chunks and channels-last pooling) K=1 954 ms, 2: 1065, 4: 904, 8: 802 (noise +-20%); 2 epochs of K members, population vs
# one at a time on the Lightning path: K=2 1.55-2.20x, 4: 1.48-2.63x, 8: 1.19x (per member 0.93, 0.76-0.84, 1.03 s an
# epoch); auto takes 4, the best per-member time, and fewer trials asked before any is told than 8
AUTO_CPU_CNN = 4
AUTO_CUDA = 64  # not measured (no GPU was lent); benchmarks/gpu_check.sh prints the scaling to set it from
# auto on CPU: above this many parameters per member, one model at a time. Measured per-member epoch time, K=1 vs
# K=8: 52,650 parameters 59 vs 31 ms; 235,146: 126 vs 110 ms; 1,863,690: 1195 vs 1478 ms (stacking is slower)
CPU_MAX_PARAMS = 500_000
MEMORY_SHARE = 0.5  # of the memory free when the worker starts, for all of its members together


def device(cfg: DictConfig) -> str:
    import torch

    if cfg.trainer.accelerator == "cpu" or not torch.cuda.is_available():
        return "cpu"
    return "cuda"


def param_count(cfg: DictConfig, input_shape: tuple[int, ...], n_classes: int) -> int:
    """Parameters of one member (the model built on the meta device: no memory, no initialization)."""
    import torch

    from .models import build_model

    with torch.device("meta"):
        return sum(p.numel() for p in build_model(cfg.model, input_shape, n_classes).parameters())


def activation_width(cfg: DictConfig, input_shape: tuple[int, ...], n_classes: int) -> int:
    """Numbers one row's forward pass produces: every conv output (before pooling), hidden and output unit."""
    from .models import model_output_widths

    return sum(model_output_widths(cfg.model, input_shape, n_classes))


def _bytes(cfg: DictConfig, input_shape: tuple[int, ...], n_classes: int) -> tuple[int, int]:
    """(bytes each member adds, bytes the population shares). Each member: its parameters five times (weights,
    gradients, Adam's two moments, early stopping's best copy) and the activations of its training batch (forward,
    mask, backward). The evaluation chunk, at its largest (a GPU's; a CPU's are cache-sized, ``models.eval_rows``):
    EVAL_ROWS rows per member for the MLP; one chunk shared by the CNN's members, EVAL_ROWS // K rows each."""
    from .models import EVAL_ROWS

    width = activation_width(cfg, input_shape, n_classes)
    per_member = 5 * param_count(cfg, input_shape, n_classes) + 4 * int(cfg.data.batch_size) * width
    chunk = 2 * EVAL_ROWS * width
    return (4 * per_member, 4 * chunk) if cfg.model.name == "cnn" else (4 * (per_member + chunk), 0)


def population_bytes(cfg: DictConfig, input_shape: tuple[int, ...], n_classes: int, k: int) -> int:
    """K members' own memory (``_bytes``)."""
    per_member, shared = _bytes(cfg, input_shape, n_classes)
    return k * per_member + shared


def members_that_fit(cfg: DictConfig, input_shape: tuple[int, ...], n_classes: int, budget: float) -> int:
    """The largest K whose ``population_bytes`` is within ``budget`` (at least 1)."""
    per_member, shared = _bytes(cfg, input_shape, n_classes)
    return max(1, int((budget - shared) // per_member))


def free_bytes(dev: str) -> int:
    if dev == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    import psutil

    return int(psutil.virtual_memory().available)


def check_model_fits(cfg: DictConfig, input_shape: tuple[int, ...], n_classes: int) -> None:
    """One model's training memory (``population_size``'s estimate at K=1) must fit in the memory free now: a model
    that cannot be allocated is a one-line error naming the model's size, not torch's allocator traceback."""
    dev = device(cfg)
    need, free = population_bytes(cfg, input_shape, n_classes, 1), free_bytes(dev)
    if need > free:
        field_name, value = (
            ("model.hidden", list(cfg.model.hidden)) if cfg.model.name == "mlp" else ("model.channels", list(cfg.model.channels))
        )
        raise ConfigError(
            field_name,
            value,
            f"this {cfg.model.name.upper()} has {param_count(cfg, input_shape, n_classes):,} parameters and needs about "
            f"{need / 2**30:.1f} GiB to train (weights, gradients, Adam's moments, a batch's activations); "
            f"{free / 2**30:.1f} GiB is free on {dev}",
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


SHARED_TIME = ("train_time_s", "epoch_time_s")  # a member's are the population's epoch time / its size


def own_time_objective(cfg: DictConfig) -> str | None:
    """Why this study's trials must train alone, or None: an objective that is a trial's own training time, which
    members of a population share (every member logged the same amortized value, and a search minimizing it
    optimized a constant)."""
    timed = [m for m, _ in config_mod.objectives(cfg.sweep) if m in SHARED_TIME]
    if not timed:
        return None
    return f"the objective {timed[0]} is each trial's own training time, which members of a population share"


def resolve(cfg: DictConfig, workers: int = 1) -> int:
    """``sweep.population`` as a number of members (validated: an int >= 1 or "auto"). Loads the data's shape."""
    from .data import load_splits
    from .population import vectorizable

    value: Any = cfg.sweep.population
    alone = own_time_objective(cfg)
    if alone and value == "auto":
        return 1
    if alone and int(value) > 1:
        raise ConfigError("sweep.population", value, f"{alone}: use sweep.population=1 (auto picks 1 for such a study)")
    if value == "auto":
        if vectorizable(cfg, []) is not None:  # SGD, checkpointing: every trial would train alone anyway
            return 1
    elif int(value) == 1:
        return 1
    splits = load_splits(cfg.data)
    dev = device(cfg)
    free = free_bytes(dev) / max(1, workers)
    fit = members_that_fit(cfg, splits.input_shape, splits.n_classes, MEMORY_SHARE * free)
    if value == "auto":
        if dev == "cpu" and param_count(cfg, splits.input_shape, splits.n_classes) > CPU_MAX_PARAMS:
            return 1
        cpu = AUTO_CPU_CNN if cfg.model.name == "cnn" else AUTO_CPU
        k = min(AUTO_CUDA if dev == "cuda" else cpu, fit)
        if workers > 1:  # one worker must not take every trial while the others wait
            k = min(k, math.ceil(config_mod.n_trials(cfg.sweep) / workers))
        return max(1, k)
    k = int(value)
    if k > fit:
        need = population_bytes(cfg, splits.input_shape, splits.n_classes, k)
        raise ConfigError(
            "sweep.population",
            k,
            f"{k} members of this model need about {_gib(need)} on {dev}; {_gib(free)} is free for this worker and "
            f"members may use {MEMORY_SHARE:.0%} of it, room for {fit}: use a smaller K or auto",
        )
    return k
