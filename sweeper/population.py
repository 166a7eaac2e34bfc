"""Population training: K trials trained as one vectorized model (stacked weights, batched matmuls, grouped convolutions).

Small models are dispatch-bound: one optimizer step of the 784-64-32-10 MLP on a 32-row batch costs about
a millisecond, almost all of it per-op overhead. Stacking K members' weights and running every layer as
one ``torch.baddbmm`` costs little more per step than one model, so K trials train in about the time of a
few. Each member keeps what the one-model path (``trial.run_trial``) gives that configuration and seed:

* its initial weights (the same ``seed_everything(seed)`` + ``build_model`` as the one-model path),
* its data order (its own generator, seeded as ``TensorDataModule`` seeds it: one permutation per epoch),
* its loss (cross-entropy + its own L1 / L2 coefficients), its optimizer (Adam, or AdamW with its own
  decoupled weight decay; the same update torch's single-tensor Adam makes, per member learning rate and
  step count), its proximal L1 step, its dropout rate, its batch-norm statistics (batch statistics in
  training, its own running mean and variance with its own momentum for evaluation), its early-stopping
  state (monitor, patience, min_delta, best weights and statistics restored at the end) and its own epoch
  budget.

So with dropout off, member k's per-epoch losses and accuracies equal the one-model path's within float
rounding (batched matmuls sum in another order); with dropout on, its masks are drawn differently: from its
own generator, seeded from its seed alone (``_DropoutMasks``), so a member's results do not depend on K, on
the other members, or on when they joined.
Members join and leave at epoch boundaries: a member that completes, is pruned, stops early or fails
(non-finite loss) leaves, and the caller refills its slot before the next epoch. The MLP and the CNN with
Adam are vectorized, with or without batch norm (ghost batch norm included). The CNN's conv blocks run as
grouped convolutions: the members' batches side by side as channel groups, (B, K*C, H, W), one group per
member (``groups=K``), so max-pooling and BatchNorm2d statistics stay per member; the dense head is the
MLP's. ``vectorizable`` says why a configuration cannot be (SGD, checkpointing), and it trains alone.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from .data import batch_bounds
from .models import ACTIVATIONS, build_model, conv_grid, eval_rows, ghost_chunks, max_pool2, model_output_widths
from .regularizers import model_options
from .seed_streams import substream

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam / AdamW defaults, which the one-model path uses
# a conv layer runs grouped (groups=K) only when each member's input channels are a multiple of this; otherwise one
# plain convolution per member. On an AMD EPYC (AVX2) a grouped convolution's weight gradient summed in another order
# than nn.Conv2d's for 1-6 and 12 input channels per group (2e-6 to 6e-6 relative; 0 for 8, 16, 32): batch norm and
# Adam amplified that to 2e-4 in the seed CNN's val_loss after one epoch on digits (3e-8 with per-member first layers)
GROUPED_CHANNELS = 16
MASK_ROWS = 256  # dropout masks are drawn for this many training rows (whole batches) at a time (_DropoutMasks)


def vectorizable(cfg: DictConfig, regularizers: list) -> str | None:
    """None when this configuration can train inside a population, else why not (one line)."""
    if cfg.model.name not in ("mlp", "cnn"):
        return f"model={cfg.model.name} is not vectorized (the MLP and the CNN are)"
    if cfg.optim.name != "adam":
        return f"optim.name={cfg.optim.name} is not vectorized (Adam/AdamW are)"
    if cfg.trainer.checkpoint_every:
        return "trainer.checkpoint_every is not supported inside a population"
    return None


def population_key(cfg: DictConfig) -> tuple:
    """Members with equal keys can share one stacked model: same layer shapes and kinds, same data and batches."""
    d, m = cfg.data, cfg.model
    return (
        m.name,
        tuple(m.hidden),
        tuple(m.get("channels", ())),
        m.activation,
        bool(cfg.regularizer.get("batchnorm", False)),  # batch-norm layers or not
        cfg.regularizer.get("bn_ghost") if cfg.regularizer.get("batchnorm", False) else None,  # one ghost size per population
        d.name,
        d.path,
        d.split_seed,
        float(d.train_fraction),
        tuple(float(d.split[k]) for k in ("train", "val", "test")),
        int(d.batch_size),
        cfg.trainer.accelerator,
    )


@dataclass
class Member:
    """One configuration inside a population; ``handle`` is the caller's (e.g. the Optuna trial)."""

    handle: Any
    cfg: DictConfig
    regularizers: list
    max_epochs: int
    order_seed: int
    # hyperparameters, per member
    lr: float = 1e-3
    l1: float = 0.0
    proximal: bool = False
    l2: float = 0.0
    weight_decay: float = 0.0
    dropout: float = 0.0
    es: dict[str, Any] | None = None  # monitor, mode, patience, min_delta
    bn_momentum: float = 0.1
    bn_ghost: int | None = None  # ghost batch norm's sub-batch size (the same for every member of a population)
    # of each parameter: "w" Linear weight, "b" its bias, "g"/"be" BatchNorm1d's scale/shift; "k" Conv2d kernel, "kb"
    # its bias, "g2"/"be2" BatchNorm2d's scale/shift (a layer followed by batch norm has no bias: models._dense_head)
    kinds: tuple[str, ...] = ()
    # state between epochs
    params: list[torch.Tensor] = field(default_factory=list)  # in model.parameters() order: W1, b1, [g1, be1,] W2, ...
    bn_mean: list[torch.Tensor] = field(default_factory=list)  # running statistics, one per batch-norm layer
    bn_var: list[torch.Tensor] = field(default_factory=list)
    bn_batches: int = 0  # batches (ghost: sub-batches) each batch-norm layer has normalized: its num_batches_tracked
    exp_avg: list[torch.Tensor] = field(default_factory=list)
    exp_avg_sq: list[torch.Tensor] = field(default_factory=list)
    step: int = 0
    generator: torch.Generator | None = None
    mask_generator: torch.Generator | None = None  # its dropout masks' (Population.add: on the population's device)
    history: list[dict[str, float]] = field(default_factory=list)
    es_best: float | None = None
    es_wait: int = 0
    best_params: list[torch.Tensor] | None = None
    best_bn: tuple[list[torch.Tensor], list[torch.Tensor], int] | None = None  # running mean, var, batches seen
    best_epoch: int | None = None
    stopped_early: bool = False
    status: str = "running"  # running | completed | stopped | pruned | failed
    reason: str | None = None
    epoch_seconds: list[float] = field(default_factory=list)  # amortized: the population's epoch / its size

    @property
    def epoch(self) -> int:
        return len(self.history)


def new_member(handle: Any, cfg: DictConfig, regularizers: list, input_shape, n_classes: int, max_epochs: int, order_seed: int) -> Member:
    """The member's initial weights exactly as the one-model path builds them for this config and seed."""
    seed = int(cfg.seed)  # what the one-model path's pl.seed_everything seeds, without importing Lightning
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model = build_model(cfg.model, input_shape, n_classes, **model_options(regularizers))
    params = [p.detach().clone() for p in model.parameters()]
    kinds: list[str] = []
    norms = _batch_norms(model)
    for mod in model.modules():  # modules() and parameters() walk the layers in the same order
        kind = next((v for t, v in _KINDS.items() if isinstance(mod, t)), [])
        kinds += kind if getattr(mod, "bias", None) is not None else kind[:1]
    assert len(kinds) == len(params), (kinds, [p.shape for p in params])
    values = {**{k: v for r in regularizers for k, v in r.values.items()}}
    names = {r.name for r in regularizers}
    es = None
    if "early_stopping" in names:
        from .regularizers import EarlyStopping

        es = {
            "monitor": values["monitor"],
            "mode": EarlyStopping.MONITORS[values["monitor"]],
            "patience": int(values["patience"]),
            "min_delta": float(values["min_delta"]),
        }
    return Member(
        handle=handle,
        cfg=cfg,
        regularizers=regularizers,
        max_epochs=max_epochs,
        order_seed=order_seed,
        lr=float(cfg.optim.lr),
        l1=float(values.get("l1", 0.0)) if "l1" in names else 0.0,
        proximal=bool(values.get("proximal", False)) if "l1" in names else False,
        l2=float(values.get("l2", 0.0)) if "l2" in names else 0.0,
        weight_decay=float(values.get("weight_decay", 0.0)) if "weight_decay" in names else 0.0,
        dropout=float(values.get("p", 0.0)) if "dropout" in names else 0.0,
        es=es,
        bn_momentum=float(values.get("bn_momentum", 0.1)),
        bn_ghost=None if values.get("bn_ghost") is None else int(values["bn_ghost"]),
        kinds=tuple(kinds),
        params=params,
        bn_mean=[mod.running_mean.clone() for mod in norms],  # type: ignore[union-attr]
        bn_var=[mod.running_var.clone() for mod in norms],  # type: ignore[union-attr]
        exp_avg=[torch.zeros_like(p) for p in params],
        exp_avg_sq=[torch.zeros_like(p) for p in params],
        generator=torch.Generator().manual_seed(order_seed),
    )


_KINDS = {
    torch.nn.Linear: ["w", "b"],
    torch.nn.BatchNorm1d: ["g", "be"],
    torch.nn.Conv2d: ["k", "kb"],
    torch.nn.BatchNorm2d: ["g2", "be2"],
}
WEIGHTS = ("w", "k")  # what penalties and decoupled decay apply to: Linear and Conv weights (regularizers.weight_parameters)


def _batch_norms(model: torch.nn.Module) -> list[torch.nn.BatchNorm1d | torch.nn.BatchNorm2d]:
    return [mod for mod in model.modules() if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]


def _per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K, ...) values shaped to broadcast over a stacked layer ``like`` (K, ...)."""
    return values.reshape(-1, *[1] * (like.dim() - 1))


@dataclass
class _AdamCall:
    """One fused Adam/AdamW call of a training step: these layers of these members (views taken once per epoch)."""

    lr: float
    decay: float
    layers: list[int]
    members: list[int]
    params: list[torch.Tensor]
    exp_avgs: list[torch.Tensor]
    exp_avg_sqs: list[torch.Tensor]
    steps: list[torch.Tensor]


def _adam_calls(members: list[Member], n_layers: int, weights: list[int], by_member: list, steps: list[torch.Tensor]) -> list[_AdamCall]:
    """The fused Adam calls of every step of an epoch: one per (learning rate, weight decay) group of members, split
    into the Linear weights and the rest only when the group decays (decoupled decay applies to weights only)."""
    groups: dict[tuple[float, float], list[int]] = {}
    for i, m in enumerate(members):
        groups.setdefault((m.lr, m.weight_decay), []).append(i)
    others = [j for j in range(n_layers) if j not in weights]
    calls = []
    for (lr, wd), ids in groups.items():
        for js, decay in [(weights, wd), (others, 0.0)] if wd > 0 else [(list(range(n_layers)), 0.0)]:
            params, exp_avgs, exp_avg_sqs = ([t[j][i] for j in js for i in ids] for t in by_member)
            calls.append(_AdamCall(lr, decay, js, ids, params, exp_avgs, exp_avg_sqs, [steps[i] for _ in js for i in ids]))
    return calls


class _Norms:
    """The members' batch-norm state for one epoch, stacked: running mean and variance (K, F) per layer, updated in
    place by training batches with each member's momentum, as ``torch.nn.BatchNorm1d`` does (normalize with the
    batch's biased variance, track the unbiased one); with ghost batch norm, per sub-batch as ``models._Ghost``."""

    EPS = 1e-5  # BatchNorm1d's default

    def __init__(self, members: list[Member], device: torch.device):
        self.mean = [torch.stack([m.bn_mean[j] for m in members]) for j in range(len(members[0].bn_mean))]
        self.var = [torch.stack([m.bn_var[j] for m in members]) for j in range(len(members[0].bn_var))]
        self.momentum = torch.tensor([m.bn_momentum for m in members], dtype=torch.float32, device=device).view(-1, 1)
        self.ghost = members[0].bn_ghost
        self.batches = 0  # this epoch's batches normalized by each layer (the first layer counts)

    def apply(self, j: int, h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, training: bool) -> torch.Tensor:
        g = self.ghost
        if training and g is not None and h.shape[1] > g:  # sub-batches of g rows, as models.GhostBatchNorm1d
            return torch.cat([self._normalize(j, c, scale, shift, True) for c in ghost_chunks(h, g, 1)], 1)
        return self._normalize(j, h, scale, shift, training)

    def _normalize(self, j: int, h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, training: bool) -> torch.Tensor:
        if training:
            mean, var = h.mean(1), h.var(1, unbiased=False)  # (K, F): each member over its own batch
            self.batches += j == 0
            with torch.no_grad():
                n = h.shape[1]
                self.mean[j].lerp_(mean, self.momentum)
                self.var[j].lerp_(var * n / (n - 1), self.momentum)
        else:
            mean, var = self.mean[j], self.var[j]
        return (h - mean.unsqueeze(1)) * torch.rsqrt(var.unsqueeze(1) + self.EPS) * scale.unsqueeze(1) + shift.unsqueeze(1)

    def apply2d(self, j: int, h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, training: bool) -> torch.Tensor:
        """BatchNorm2d in the conv layout (B, K*C, H, W): each member's C channels are its own; ghost sub-batches split
        the rows (dim 0), as ``models.GhostBatchNorm2d`` does."""
        g = self.ghost
        if training and g is not None and h.shape[0] > g:
            return torch.cat([self._normalize2d(j, c, scale, shift, True) for c in ghost_chunks(h, g)])
        return self._normalize2d(j, h, scale, shift, training)

    def _normalize2d(self, j: int, h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, training: bool) -> torch.Tensor:
        k = self.mean[j].shape[0]
        if not training:
            return F.batch_norm(h, self.mean[j].view(-1), self.var[j].view(-1), scale.reshape(-1), shift.reshape(-1), False, 0.0, self.EPS)
        self.batches += j == 0
        with torch.no_grad():  # the running statistics with each member's momentum; the unbiased variance, as BatchNorm2d
            var, mean = torch.var_mean(h, dim=(0, 2, 3), correction=1)
            self.mean[j].lerp_(mean.view(k, -1), self.momentum)
            self.var[j].lerp_(var.view(k, -1), self.momentum)
        return F.batch_norm(h, None, None, scale.reshape(-1), shift.reshape(-1), True, 0.0, self.EPS)


def mask_seed(seed: int) -> int:
    """The seed of a member's dropout masks: a stream of its seed of its own, apart from its initial weights'."""
    return substream(seed, 0xD80)


class _DropoutMasks:
    """The members' inverted-dropout multipliers (0 or 1/(1-p)) for one epoch. Each member's come from its own
    generator (``Member.mask_generator``), drawn ``MASK_ROWS`` rows (whole batches) at a time, layer by layer, in the
    epoch's row order, so they depend only on its seed, the data's size and the batch size: not on K, the other
    members or when it joined (torch's global generator, which the one-model path's nn.Dropout uses, is reseeded by
    every joining member). One draw per member and layer per window, not per step: the step multiplies by a slice."""

    def __init__(self, members: list[Member], P: list[torch.Tensor], kinds: tuple[str, ...], bounds: list[tuple[int, int]]):
        self.generators = [m.mask_generator if m.dropout > 0 else None for m in members]
        self.p = torch.tensor([m.dropout for m in members], dtype=torch.float32, device=P[0].device).view(-1, 1, 1)
        self.keep_scale = 1.0 / (1.0 - self.p)
        self.widths = [P[j].shape[2] for j, kind in enumerate(kinds) if kind == "w"][:-1]  # hidden dense outputs
        self.bounds = bounds  # the epoch's batches (data.batch_bounds)
        self.per_window = max(1, MASK_ROWS // max(1, bounds[0][1] - bounds[0][0]))  # batches per draw
        self.window: tuple[int, int] = (0, 0)  # batch indexes [first, last) the drawn masks cover
        self.drawn: list[torch.Tensor] = []

    def rows(self, b: int) -> list[torch.Tensor]:
        """Batch ``b``'s multipliers, (K, B, width) per hidden dense layer."""
        if not self.window[0] <= b < self.window[1]:
            self._draw(b)
        origin = self.bounds[self.window[0]][0]
        start, end = self.bounds[b]
        return [m[:, start - origin : end - origin] for m in self.drawn]

    def _draw(self, b: int) -> None:
        last = min(len(self.bounds), b + self.per_window)
        rows = self.bounds[last - 1][1] - self.bounds[b][0]
        self.window, self.drawn = (b, last), []
        for width in self.widths:
            u = torch.empty(len(self.generators), rows, width, device=self.p.device)
            for k, g in enumerate(self.generators):
                if g is None:
                    u[k].fill_(1.0)  # p = 0: always kept, scale 1
                else:
                    u[k].uniform_(generator=g)
            self.drawn.append(u.ge_(self.p).mul_(self.keep_scale))


class Population:
    """Trains its members one epoch at a time as one stacked model on ``device``."""

    def __init__(self, splits, batch_size: int, activation: str, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.splits = splits.to(self.device) if splits.x_train.device != self.device else splits
        self.batch_size = batch_size
        self.act = ACTIVATIONS[activation]()
        self.members: list[Member] = []
        self.pools: list[bool] = []  # the CNN's: whether each conv block max-pools, as models.CNN places them
        self.widest = 1  # numbers per row of one member's widest layer output (``models.eval_rows``)

    def _inputs(self, kinds: tuple[str, ...], x: torch.Tensor) -> torch.Tensor:
        return x if kinds[0] == "k" else x.flatten(1)  # the CNN keeps (N, C, H, W); the MLP flattens, as nn.Flatten

    def add(self, member: Member) -> None:
        if self.members and member.kinds != self.members[0].kinds:
            raise ValueError(f"member layers {member.kinds} differ from the population's {self.members[0].kinds}")
        for name in ("params", "exp_avg", "exp_avg_sq", "bn_mean", "bn_var"):
            setattr(member, name, [t.to(self.device) for t in getattr(member, name)])
        if member.dropout > 0 and member.mask_generator is None:
            member.mask_generator = torch.Generator(device=self.device).manual_seed(mask_seed(int(member.cfg.seed)))
        if not self.members:
            self.widest = max(model_output_widths(member.cfg.model, self.splits.input_shape, self.splits.n_classes))
            if member.kinds[0] == "k":
                _, height, width = self.splits.input_shape
                self.pools = [pool for *_, pool in conv_grid(height, width, member.kinds.count("k"))]
        self.members.append(member)

    def remove(self, member: Member) -> None:
        self.members.remove(member)

    # --- one epoch of every member ----------------------------------------------------------------
    def train_epoch(self) -> list[Member]:
        """Train every member one epoch, validate it, update its early stopping; returns the members (each with
        ``history[-1]`` set, or status ``failed`` with a reason). The caller decides pruning and removes members."""
        import time

        members = list(self.members)
        if not members:
            return []
        t0 = time.perf_counter()
        k = len(members)
        dev = self.device
        kinds = members[0].kinds
        # every layer is one (K, ...) leaf, Linear weights stored transposed as (K, in, out) so that baddbmm and its
        # backward need no transposed copies; the optimizer is torch's fused Adam kernel (_adam_calls)
        flip = lambda t, kind: t.t() if kind == "w" else t
        stack = lambda name: [torch.stack([flip(getattr(m, name)[j], kind) for m in members]).contiguous() for j, kind in enumerate(kinds)]
        P, M, V = stack("params"), stack("exp_avg"), stack("exp_avg_sq")
        for t in P:
            t.requires_grad_(True)
        weights = [j for j, kind in enumerate(kinds) if kind in WEIGHTS]  # penalties and decay: Linear/Conv weights only
        bn = _Norms(members, dev)
        col = lambda values: torch.tensor(values, dtype=torch.float32, device=dev).view(k, 1, 1)
        l1_values, l2_values = [0.0 if m.proximal else m.l1 for m in members], [m.l2 for m in members]
        l1, l2 = col(l1_values), col(l2_values)
        prox = [m.l1 if m.proximal else 0.0 for m in members]
        prox_lr, prox_lam = (col([m.lr for m in members]), col(prox)) if any(prox) else (None, None)
        step_t = [torch.tensor(float(m.step), device=dev) for m in members]  # float32, as torch.optim.Adam keeps it
        by_member = [[t.detach().unbind(0) for t in ts] for ts in (P, M, V)]  # views of the leaves, taken once per epoch
        calls = _adam_calls(members, len(kinds), weights, by_member, step_t)
        x_train, x_val = self._inputs(kinds, self.splits.x_train), self._inputs(kinds, self.splits.x_val)
        n = len(self.splits.y_train)
        order = torch.stack([torch.randperm(n, generator=m.generator) for m in members]).to(dev)  # (K, n)
        sums = torch.zeros(k, 2, device=dev)
        bounds = batch_bounds(n, self.batch_size)  # the one-model path's batches (data.batch_bounds)
        masks = _DropoutMasks(members, P, kinds, bounds) if any(m.dropout for m in members) else None
        for b, (start, end) in enumerate(bounds):
            idx = order[:, start:end]
            rows = idx.reshape(-1)  # index_select is several times faster than x[idx] here
            x, y = x_train.index_select(0, rows).view(k, -1, *x_train.shape[1:]), self.splits.y_train[idx]  # (K, B, ...), (K, B)
            logits = self._forward(P, kinds, x, masks.rows(b) if masks is not None else None, bn, training=True)
            task = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none").view(k, -1).mean(1)
            # the penalties' gradients are added by hand (d/dw of l2*w^2 is 2*l2*w, of l1*|w| is l1*sign(w)): one pass
            # over the weights each, where autograd would take several full-size multiplications per layer
            pen = torch.zeros(k, device=dev)
            full = torch.autograd.grad(task.sum(), P)
            with torch.no_grad():
                if any(l1_values):  # decided on the host: no device sync per step
                    pen += l1.view(k) * sum(torch.linalg.vector_norm(P[j].flatten(1), 1, dim=1) for j in weights)
                    for j in weights:
                        full[j].addcmul_(P[j].sign(), _per_member(l1, P[j]))
                if any(l2_values):
                    pen += l2.view(k) * sum(torch.linalg.vector_norm(P[j].flatten(1), dim=1).square() for j in weights)  # no temporary
                    for j in weights:
                        full[j].addcmul_(P[j], _per_member(l2, P[j]), value=2.0)
            grads = [g.unbind(0) for g in full]
            torch._foreach_add_(step_t, 1)
            for c in calls:
                fused = torch._fused_adamw_ if c.decay > 0 else torch._fused_adam_
                fused(
                    c.params,
                    [grads[j][i] for j in c.layers for i in c.members],
                    c.exp_avgs,
                    c.exp_avg_sqs,
                    [],
                    c.steps,
                    lr=c.lr,
                    beta1=BETA1,
                    beta2=BETA2,
                    weight_decay=c.decay,
                    eps=EPS,
                    amsgrad=False,
                    maximize=False,
                )
            if prox_lr is not None:
                with torch.no_grad():
                    steps_now = torch.stack(step_t)
                    for j in weights:
                        at = lambda t: _per_member(t, P[j])  # noqa: B023 (used at once)
                        self._proximal(P[j].detach(), V[j], at(steps_now), at(prox_lr), at(prox_lam))
            sums += torch.stack((task.detach(), pen), 1) * y.shape[1]
        P = [t.detach() for t in P]
        step_counts = [int(t.item()) for t in step_t]
        train_seconds = time.perf_counter() - t0
        with torch.no_grad():
            val_loss, val_acc = self._evaluate(P, kinds, bn, x_val, self.splits.y_val)
            _, train_acc = self._evaluate(P, kinds, bn, x_train, self.splits.y_train)
        sums_l, val_loss_l, val_acc_l, train_acc_l = sums.tolist(), val_loss.tolist(), val_acc.tolist(), train_acc.tolist()
        for i, m in enumerate(members):
            m.params, m.exp_avg, m.exp_avg_sq = ([flip(t[i], kind).clone() for t, kind in zip(ts, kinds)] for ts in (P, M, V))
            m.bn_mean, m.bn_var = [t[i].clone() for t in bn.mean], [t[i].clone() for t in bn.var]
            m.bn_batches += bn.batches
            m.step = step_counts[i]
            m.epoch_seconds.append(train_seconds / k)
            train_loss, train_penalty = sums_l[i][0] / n, sums_l[i][1] / n
            if not (math.isfinite(train_loss) and math.isfinite(train_penalty)):
                m.status, m.reason = "failed", f"loss became non-finite (train_loss={train_loss}) at epoch {m.epoch}"
                continue
            if not math.isfinite(val_loss_l[i]):
                m.status, m.reason = "failed", f"validation loss became non-finite at epoch {m.epoch}"
                continue
            metrics = {
                "train_loss": train_loss,
                "train_penalty": train_penalty,
                "train_acc": train_acc_l[i],
                "val_loss": val_loss_l[i],
                "val_acc": val_acc_l[i],
                "gen_gap": train_acc_l[i] - val_acc_l[i],
            }
            m.history.append(metrics)
            self._early_stopping(m, metrics)
            if m.status == "running" and m.epoch >= m.max_epochs:
                m.status = "completed"
        return members

    def _forward(self, P: list[torch.Tensor], kinds: tuple[str, ...], x: torch.Tensor, masks=None, bn=None, training=False) -> torch.Tensor:
        """The CNN's conv blocks Conv -> [BatchNorm2d] -> activation -> [max-pool] (``models.CNN``), then blocks
        Linear -> [BatchNorm] -> activation -> [Dropout] and the output Linear (``models.MLP``). ``x`` is (K, B, ...),
        each member's batch; ``P`` holds each layer stacked over the members, Linear weights transposed (K, in, out);
        ``masks``: the batch's dropout multipliers, one (K, B, width) per hidden dense layer (``_DropoutMasks``)."""
        h, i, norm, site = x, 0, 0, 0
        if kinds[0] == "k":  # the members' batches side by side as channel groups: (B, K*C, H, W), groups=K
            k, b = x.shape[:2]
            h = x.transpose(0, 1).reshape(b, -1, *x.shape[3:])
            block = 0
            while kinds[i] == "k":
                w = P[i]  # (K, out, in, 3, 3)
                bias = kinds[i + 1] == "kb"
                c_in = w.shape[2]
                if c_in % GROUPED_CHANNELS:  # e.g. the image's own channels: one plain convolution per member
                    h = torch.cat(
                        [F.conv2d(h[:, j * c_in : (j + 1) * c_in], w[j], P[i + 1][j] if bias else None, padding=1) for j in range(k)], 1
                    )
                else:
                    h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), P[i + 1].reshape(-1) if bias else None, padding=1, groups=k)
                i += 1 + bias
                if kinds[i] == "g2":
                    h = bn.apply2d(norm, h, P[i], P[i + 1], training)
                    i, norm = i + 2, norm + 1
                h = self.act(h)
                if self.pools[block]:
                    h = max_pool2(h)
                block += 1
            h = h.reshape(b, k, -1).transpose(0, 1)  # (K, B, C*H*W): each member's features in nn.Flatten's order
        while True:
            bias = i + 1 < len(P) and kinds[i + 1] == "b"
            h = torch.baddbmm(P[i + 1].unsqueeze(1), h, P[i]) if bias else torch.bmm(h, P[i])  # weights (K, in, out)
            i += 1 + bias
            if i == len(P):
                return h
            if kinds[i] == "g":
                h = bn.apply(norm, h, P[i], P[i + 1], training)
                i, norm = i + 2, norm + 1
            h = self.act(h)
            if masks is not None and training:  # inverted dropout with each member's own rate and masks (p = 0: ones)
                h = h * masks[site]
                site += 1

    def _evaluate(self, P: list[torch.Tensor], kinds: tuple[str, ...], bn, x: torch.Tensor, y: torch.Tensor):
        """(mean cross-entropy, accuracy) per member, eval mode (no dropout, batch norm's running statistics), in
        chunks whose K members' activations together are one cache-sized chunk on a CPU (``models.eval_rows``)."""
        k = P[0].shape[0]
        # on a GPU, EVAL_ROWS rows per member for the MLP; shared by the CNN's (its conv activations are K times one model's)
        chunk = eval_rows(self.widest, x.device, k if x.device.type == "cpu" or kinds[0] == "k" else 1)
        loss = torch.zeros(k, device=x.device)
        correct = torch.zeros(k, device=x.device)
        for i in range(0, len(y), chunk):
            xs, ys = x[i : i + chunk], y[i : i + chunk]
            logits = self._forward(P, kinds, xs.unsqueeze(0).expand(k, *xs.shape), bn=bn)
            loss += F.cross_entropy(logits.transpose(1, 2), ys.unsqueeze(0).expand(k, -1), reduction="none").sum(1)
            correct += (logits.argmax(2) == ys).sum(1)
        return loss / len(y), correct / len(y)

    @staticmethod
    def _proximal(weights, exp_avg_sq, steps, lr, lam) -> None:
        """Soft-threshold each weight by the step Adam took for it (``regularizers.L1.after_step``), per member;
        Adam keeps its step count as a float32 tensor, so the bias correction is float32 here too."""
        bc2 = 1 - BETA2**steps
        threshold = lr / ((exp_avg_sq / bc2).sqrt() + EPS) * lam
        weights.copy_(torch.sign(weights) * torch.clamp(weights.abs() - threshold, min=0.0))

    @staticmethod
    def _early_stopping(m: Member, metrics: dict[str, float]) -> None:
        """Lightning's EarlyStopping rule (improvement: beyond min_delta in the monitor's direction), plus the
        best epoch's weights kept for ``finish``."""
        if m.es is None:
            return
        current = metrics[m.es["monitor"]]
        better = (lambda a, b: a < b) if m.es["mode"] == "min" else (lambda a, b: a > b)
        delta = -m.es["min_delta"] if m.es["mode"] == "min" else m.es["min_delta"]
        if m.es_best is None or better(current - delta, m.es_best):
            m.es_best, m.es_wait = current, 0
            m.best_params = [p.clone() for p in m.params]
            m.best_bn = ([t.clone() for t in m.bn_mean], [t.clone() for t in m.bn_var], m.bn_batches)
            m.best_epoch = m.epoch - 1
        else:
            m.es_wait += 1
            if m.es_wait >= m.es["patience"]:
                m.status, m.stopped_early = "stopped", True

    # --- a member's final model ---------------------------------------------------------------------
    def model_of(self, m: Member) -> torch.nn.Module:
        """The member as a plain model (the one-model path's class), best early-stopping weights restored."""
        options = model_options(m.regularizers)
        model = build_model(m.cfg.model, self.splits.input_shape, self.splits.n_classes, **options).to(self.device)
        src = m.best_params if m.best_params is not None else m.params
        means, variances, batches = m.best_bn if m.best_bn is not None else (m.bn_mean, m.bn_var, m.bn_batches)
        norms = _batch_norms(model)
        with torch.no_grad():
            for p, value in zip(model.parameters(), src):
                p.copy_(value)
            for mod, mean, var in zip(norms, means, variances):
                mod.running_mean.copy_(mean)  # type: ignore[union-attr]
                mod.running_var.copy_(var)  # type: ignore[union-attr]
                mod.num_batches_tracked.fill_(batches)  # type: ignore[union-attr]
        return model


def train_until_done(population: Population, on_epoch: Callable[[Member], str | None] | None = None) -> None:
    """Run epochs until every member has left (tests and benchmarks; the worker refills between epochs).
    ``on_epoch(member)`` may return "pruned" to end a running member."""
    while population.members:
        for m in population.train_epoch():
            if m.status == "running" and on_epoch is not None and on_epoch(m) == "pruned":
                m.status = "pruned"
            if m.status != "running":
                population.remove(m)
