"""One small class per regularization technique.

A technique owns a few keys of the flat ``regularizer`` config node (their "off" defaults live in
``params``), says whether it is switched on, and contributes any of: a penalty added to the
training loss, a change to the model (dropout / batch-norm slots), a step after each optimizer
update (proximal L1), optimizer options (decoupled weight decay), and Lightning callbacks (early
stopping). Adding a technique = one subclass here + one YAML file in ``conf/regularizer/``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from .errors import ConfigError

REGISTRY: dict[str, type[Regularizer]] = {}


class Regularizer:
    name: ClassVar[str]
    params: ClassVar[dict[str, Any]]  # key -> "off" default

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        REGISTRY[cls.name] = cls

    def __init__(self, values: dict[str, Any]):
        self.values = values

    @classmethod
    def is_active(cls, values: dict[str, Any]) -> bool:
        raise NotImplementedError

    @classmethod
    def validate(cls, values: dict[str, Any], optim_name: str) -> None:
        """Raise ConfigError for a bad value of one of this technique's keys."""

    def model_options(self) -> dict[str, Any]:
        return {}

    def penalty(self, weights: list[torch.Tensor]) -> torch.Tensor | None:
        return None

    def after_step(self, weights: list[torch.Tensor], lr: float, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Runs after each optimizer step (``optimizer`` is the one that just stepped, for its state)."""

    def optimizer_options(self) -> dict[str, Any]:
        return {}

    def callbacks(self) -> list:
        return []

    @property
    def needs_after_step(self) -> bool:
        return type(self).after_step is not Regularizer.after_step


def _proximal_step(
    w: torch.Tensor, lr: float, optimizer: torch.optim.Optimizer | None, group: dict[str, Any] | None = None
) -> torch.Tensor | float:
    """The size of the step the optimizer just took for each element of ``w`` per unit of gradient (``group``:
    w's param group, found by the caller once; runs after every optimizer step, so nothing here syncs the device)."""
    state = optimizer.state.get(w, {}) if optimizer is not None else {}
    if "exp_avg_sq" not in state:  # SGD (with or without momentum), or before Adam's first step
        return lr
    if group is None:
        group = next(g for g in optimizer.param_groups if any(p is w for p in g["params"]))  # type: ignore[union-attr]
    beta2, eps = group["betas"][1], group["eps"]
    v_hat = state["exp_avg_sq"] / (1 - beta2 ** state["step"])  # step stays a tensor: no host sync per step
    return group["lr"] / (v_hat.sqrt() + eps)


def _non_negative(values: dict, key: str) -> None:
    v = values[key]
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
        raise ConfigError(f"regularizer.{key}", v, "must be a finite number >= 0")


class L1(Regularizer):
    """lambda * sum|w| over weight matrices/kernels; optional proximal soft-threshold step."""

    name = "l1"
    params = {"l1": 0.0, "proximal": False}

    @classmethod
    def is_active(cls, values):
        return values["l1"] > 0

    @classmethod
    def validate(cls, values, optim_name):
        _non_negative(values, "l1")
        if not isinstance(values["proximal"], bool):
            raise ConfigError("regularizer.proximal", values["proximal"], "must be true or false")

    def penalty(self, weights):
        if self.values["proximal"]:
            return None  # handled exactly by the soft-threshold step, not by its subgradient
        return self.values["l1"] * sum(w.abs().sum() for w in weights)

    def after_step(self, weights, lr, optimizer=None):
        """Soft-threshold each weight by the step the optimizer actually took for it.

        The proximal operator of ``lambda*|w|`` for a step of size ``s`` is ``sign(w) max(|w| - s*lambda, 0)``.
        SGD's step size is ``lr`` for every weight. Adam's (and AdamW's) per-weight step is
        ``lr / (sqrt(v_hat) + eps)`` with ``v_hat = exp_avg_sq / (1 - beta2**t)``, so its threshold is
        ``lr*lambda / (sqrt(v_hat) + eps)``: a flat ``lr*lambda`` would be tiny next to Adam's actual steps
        and give almost no exact zeros at the strengths people search."""
        if not self.values["proximal"]:
            return
        lam = float(self.values["l1"])
        if optimizer is not None and getattr(self, "_groups_of", (None,))[0] is not optimizer:  # once per optimizer
            self._groups_of = (optimizer, {id(p): g for g in optimizer.param_groups for p in g["params"]})
        groups = self._groups_of[1] if optimizer is not None else {}
        with torch.no_grad():
            for w in weights:
                threshold = _proximal_step(w, lr, optimizer, groups.get(id(w))) * lam
                w.copy_(torch.sign(w) * torch.clamp(w.abs() - threshold, min=0.0))

    @property
    def needs_after_step(self) -> bool:
        return bool(self.values["proximal"])


class L2(Regularizer):
    """Explicit lambda * sum w^2 penalty in the loss (coupled: it passes through Adam's scaling)."""

    name = "l2"
    params = {"l2": 0.0}

    @classmethod
    def is_active(cls, values):
        return values["l2"] > 0

    @classmethod
    def validate(cls, values, optim_name):
        _non_negative(values, "l2")

    def penalty(self, weights):
        return self.values["l2"] * sum(w.pow(2).sum() for w in weights)


class WeightDecay(Regularizer):
    """Decoupled weight decay (AdamW): shrinks weights directly, outside Adam's gradient scaling."""

    name = "weight_decay"
    params = {"weight_decay": 0.0}

    @classmethod
    def is_active(cls, values):
        return values["weight_decay"] > 0

    @classmethod
    def validate(cls, values, optim_name):
        _non_negative(values, "weight_decay")
        if values["weight_decay"] > 0 and optim_name != "adam":
            raise ConfigError(
                "regularizer.weight_decay",
                values["weight_decay"],
                "decoupled weight decay needs optim.name=adam (it becomes AdamW); with sgd use regularizer=l2",
            )

    def optimizer_options(self):
        return {"decoupled_weight_decay": self.values["weight_decay"]}


class Dropout(Regularizer):
    """Inverted dropout after each hidden layer's activation (scaled in training, identity in eval)."""

    name = "dropout"
    params = {"p": 0.0}

    @classmethod
    def is_active(cls, values):
        return values["p"] > 0

    @classmethod
    def validate(cls, values, optim_name):
        p = values["p"]
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p < 1:
            raise ConfigError("regularizer.p", p, "dropout rate must be in [0, 1)")

    def model_options(self):
        return {"dropout": float(self.values["p"])}


class BatchNorm(Regularizer):
    """Batch norm after each hidden Linear/Conv, before the activation; no loss term.

    Its regularizing effect is the noise of mini-batch statistics; ``bn_ghost`` (ghost batch size) sets
    that noise without changing the optimizer's batch size (null: the whole mini-batch)."""

    name = "batchnorm"
    params = {"batchnorm": False, "bn_momentum": 0.1, "bn_ghost": None}

    @classmethod
    def is_active(cls, values):
        return bool(values["batchnorm"])

    @classmethod
    def validate(cls, values, optim_name):
        if not isinstance(values["batchnorm"], bool):
            raise ConfigError("regularizer.batchnorm", values["batchnorm"], "must be true or false")
        m = values["bn_momentum"]
        if not isinstance(m, (int, float)) or not 0 < m <= 1:
            raise ConfigError("regularizer.bn_momentum", m, "must be in (0, 1]")
        g = values["bn_ghost"]
        if g is not None and (not isinstance(g, int) or isinstance(g, bool) or g < 2):
            raise ConfigError("regularizer.bn_ghost", g, "ghost batch size must be an integer >= 2 (or null: the whole mini-batch)")

    def model_options(self):
        ghost = self.values["bn_ghost"]
        return {"batchnorm": True, "bn_momentum": float(self.values["bn_momentum"]), "bn_ghost": None if ghost is None else int(ghost)}


class EarlyStopping(Regularizer):
    """Stop when the monitored validation metric stops improving; restore the best epoch's weights."""

    name = "early_stopping"
    params = {"patience": None, "min_delta": 0.0, "monitor": "val_loss"}
    MONITORS = {"val_loss": "min", "val_acc": "max"}

    @classmethod
    def is_active(cls, values):
        return values["patience"] is not None

    @classmethod
    def validate(cls, values, optim_name):
        pat = values["patience"]
        if pat is not None and (not isinstance(pat, int) or isinstance(pat, bool) or pat < 1):
            raise ConfigError("regularizer.patience", pat, "must be an integer >= 1 (or null: off)")
        _non_negative(values, "min_delta")
        if values["monitor"] not in cls.MONITORS:
            raise ConfigError("regularizer.monitor", values["monitor"], f"allowed: {', '.join(cls.MONITORS)}")

    def callbacks(self):
        from .callbacks import RestoringEarlyStopping

        monitor = self.values["monitor"]
        return [
            RestoringEarlyStopping(
                monitor=monitor,
                mode=self.MONITORS[monitor],
                patience=int(self.values["patience"]),
                min_delta=float(self.values["min_delta"]),
                verbose=False,
            )
        ]


def defaults() -> dict[str, Any]:
    """Every technique's keys with their "off" values: the base of the ``regularizer`` node."""
    out: dict[str, Any] = {}
    for cls in REGISTRY.values():
        out.update(cls.params)
    return out


def build(values: dict[str, Any], optim_name: str = "adam") -> list[Regularizer]:
    """Validate the flat regularizer node and return the active techniques, in registry order."""
    known = defaults()
    for key in values:
        if key not in known:
            raise ConfigError(f"regularizer.{key}", values[key], f"unknown key; allowed: {', '.join(known)}")
    merged = {**known, **values}
    for cls in REGISTRY.values():
        cls.validate(merged, optim_name)
    return [cls(merged) for cls in REGISTRY.values() if cls.is_active(merged)]


def model_options(active: list[Regularizer]) -> dict[str, Any]:
    """What the active techniques switch on in the model (dropout rate, batch norm): build_model's options."""
    options: dict[str, Any] = {}
    for r in active:
        options.update(r.model_options())
    return options


def label(active: list[Regularizer]) -> str:
    """A technique label for tags and reports: 'none', 'dropout', 'elastic_net', 'dropout+l2+...'."""
    names = [r.name for r in active]
    if "l1" in names and "l2" in names:
        names = ["elastic_net" if n == "l1" else n for n in names if n != "l2"]
    return "+".join(names) if names else "none"


def weight_parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    """Weight matrices and kernels only: Linear and Conv weights, never biases or norm layers."""
    return [m.weight for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
