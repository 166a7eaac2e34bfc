"""The LightningModule: task loss + regularization penalty, metrics computed once per epoch.

Manual optimization keeps the per-step path short (forward, penalty, backward, step, optional
proximal step); per-batch sums stay on the device and are read once per epoch, so logging costs
one call per epoch, not per step.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from .data import InMemoryBatches, Splits, batch_bounds
from .errors import TrialFailed
from .models import add_eval_sums, evaluate
from .regularizers import Regularizer, weight_parameters


class RegularizedModule(pl.LightningModule):
    def __init__(self, model: torch.nn.Module, regularizers: list[Regularizer], optim_cfg, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.model = model
        self.regularizers = regularizers
        self.optim_name, self.lr, self.momentum = optim_cfg.name, float(optim_cfg.lr), float(optim_cfg.momentum)
        self.automatic_optimization = False
        self._weights = weight_parameters(model)
        self._post_step = [r for r in regularizers if r.needs_after_step]
        self.epoch_metrics: dict[str, float] = {}

    def forward(self, x):
        return self.model(x)

    def penalty(self) -> torch.Tensor | None:
        terms = [t for r in self.regularizers if (t := r.penalty(self._weights)) is not None]
        if not terms:
            return None
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return total

    def configure_optimizers(self):
        opts: dict = {}
        for r in self.regularizers:
            opts.update(r.optimizer_options())
        if self.optim_name == "sgd":
            return torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=self.momentum)
        wd = opts.get("decoupled_weight_decay", 0.0)
        if wd > 0:
            weight_ids = {id(w) for w in self._weights}
            groups = [
                {"params": self._weights, "weight_decay": wd},
                {"params": [p for p in self.model.parameters() if id(p) not in weight_ids], "weight_decay": 0.0},
            ]
            return torch.optim.AdamW(groups, lr=self.lr)
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)

    def on_fit_start(self):
        dm = self.trainer.datamodule  # type: ignore[attr-defined]
        if dm is not None and hasattr(dm, "move_to"):
            dm.move_to(self.device)

    def on_train_epoch_start(self):
        self._sums = torch.zeros(2, device=self.device)  # task loss * n, penalty * n
        self._seen = 0

    def training_step(self, batch, batch_idx):
        """One Lightning batch = up to STEPS_PER_ITEM mini-batches, one optimizer step each."""
        xs, ys = batch
        for start, end in batch_bounds(len(ys), self.batch_size):  # chunks start on batch boundaries
            self._optimizer_step(xs[start:end], ys[start:end])

    def _optimizer_step(self, x, y):
        task = F.cross_entropy(self.model(x), y)
        pen = self.penalty()
        opt = self.optimizers(use_pl_optimizer=False)
        assert isinstance(opt, torch.optim.Optimizer)  # one optimizer (configure_optimizers)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(task if pen is None else task + pen)
        opt.step()
        for r in self._post_step:
            r.after_step(self._weights, self.lr, opt)
        n = len(y)
        self._seen += n
        if pen is None:
            self._sums[0] += task.detach() * n
        else:
            self._sums += torch.stack((task.detach(), pen.detach())) * n

    def on_validation_epoch_start(self):
        self._val = torch.zeros(3, device=self.device)  # loss sum, correct, n

    def validation_step(self, batch, batch_idx):
        x, y = batch
        add_eval_sums(self.model, x, y, self._val)  # a big batch in cache-sized chunks (CPU)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        task_sum, pen_sum = self._sums.tolist()
        n = self._seen
        train_loss, train_penalty = task_sum / n, pen_sum / n
        if not (math.isfinite(train_loss) and math.isfinite(train_penalty)):
            raise TrialFailed(f"loss became non-finite (train_loss={train_loss}) at epoch {self.current_epoch}")
        splits = self.trainer.datamodule.splits  # type: ignore[attr-defined]
        _, train_acc = evaluate(self.model, splits.x_train, splits.y_train)  # eval mode: no dropout noise
        val_loss_sum, val_correct, val_n = self._val.tolist()
        val_loss, val_acc = val_loss_sum / val_n, val_correct / val_n
        if not math.isfinite(val_loss):
            raise TrialFailed(f"validation loss became non-finite at epoch {self.current_epoch}")
        self.epoch_metrics = {
            "train_loss": train_loss,
            "train_penalty": train_penalty,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "gen_gap": train_acc - val_acc,
        }
        self.log_dict(self.epoch_metrics, on_epoch=True, prog_bar=False, logger=False)


class TensorDataModule(pl.LightningDataModule):
    """Serves the splits as in-memory batches; ``move_to`` puts them on the training device once."""

    STEPS_PER_ITEM = 8  # mini-batches per Lightning batch (see InMemoryBatches)

    def __init__(self, splits: Splits, batch_size: int, eval_batch_size: int, seed: int):
        super().__init__()
        self.splits, self.batch_size, self.eval_batch_size = splits, batch_size, eval_batch_size
        self._train = InMemoryBatches(splits.x_train, splits.y_train, batch_size, True, seed, per_item=self.STEPS_PER_ITEM)

    def move_to(self, device: torch.device) -> None:
        if self.splits.x_train.device != device:
            self.splits = self.splits.to(device)
            self._train.x, self._train.y = self.splits.x_train, self.splits.y_train

    def state_dict(self) -> dict:  # saved in checkpoints: a resumed trial continues the same data order
        return {"generator": self._train.generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._train.generator.set_state(state_dict["generator"])

    def train_dataloader(self):
        return self._train

    def val_dataloader(self):
        return InMemoryBatches(self.splits.x_val, self.splits.y_val, self.eval_batch_size, False)
