"""The Lightning callbacks a one-model trial trains with. Kept apart so that importing the package (and the
population engine, which trains without Lightning) does not import Lightning (~3 s here)."""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping as _LightningEarlyStopping
from mlflow.entities import Metric

from .errors import StoreUnavailable, TrialAbandoned

if TYPE_CHECKING:
    import optuna

    from .tracking import Tracker


class RestoringEarlyStopping(_LightningEarlyStopping):
    """Lightning's EarlyStopping that also keeps the best epoch's weights and restores them at the end."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.best_state: dict | None = None
        self.best_epoch: int | None = None

    def _run_early_stopping_check(self, trainer):
        before = self.best_score.clone()
        super()._run_early_stopping_check(trainer)
        if self.best_state is None or not torch.equal(before, self.best_score):
            module = trainer.lightning_module
            self.best_state = copy.deepcopy(module.state_dict())
            self.best_epoch = trainer.current_epoch

    def on_fit_end(self, trainer, pl_module):
        if self.best_state is not None:
            pl_module.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:  # a resumed trial keeps its best weights and patience count
        return {**super().state_dict(), "best_state": self.best_state, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        self.best_state, self.best_epoch = state.pop("best_state", None), state.pop("best_epoch", None)
        super().load_state_dict(state)


class EpochLogger(pl.Callback):
    """Sends the module's per-epoch metrics to MLflow, buffered: one batched call at most every
    ``interval`` seconds and at the end of fit (or on any exception, e.g. pruning). On SQLite each call
    is a committed transaction (~10 ms), so one call per epoch would cost more than the epoch itself
    for small models; the MLflow UI still sees the curves grow every few seconds."""

    def __init__(self, tracker: Tracker, run_id: str, interval: float = 2.0):
        self.tracker, self.run_id, self.interval = tracker, run_id, interval
        self.buffer: list[Metric] = []
        self.last = time.monotonic()

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not pl_module.epoch_metrics:
            return
        ts = int(time.time() * 1000)
        self.buffer += [Metric(k, float(v), ts, trainer.current_epoch) for k, v in pl_module.epoch_metrics.items()]
        if time.monotonic() - self.last >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            items, self.buffer = self.buffer, []
            self.tracker.log_metric_items(self.run_id, items)
        self.last = time.monotonic()

    def on_fit_end(self, trainer, pl_module):
        self.flush()

    def on_exception(self, trainer, pl_module, exception):
        if not isinstance(exception, StoreUnavailable):  # a lost store: nothing more to send
            self.flush()


class History(pl.Callback):
    """Per-epoch metrics, and the wall time of each epoch's training loop (validation excluded)."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self.seconds: list[float] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds.append(time.perf_counter() - self._t0)

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking and pl_module.epoch_metrics:
            self.epochs.append(dict(pl_module.epoch_metrics))

    def state_dict(self) -> dict[str, Any]:  # saved in checkpoints: a resumed trial reports every epoch
        return {"epochs": self.epochs, "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs, self.seconds = list(state["epochs"]), list(state["seconds"])


class MlflowCheckpoint(pl.Callback):
    """Every ``every`` epochs: a Lightning checkpoint (model, optimizer, loop, callback and data-order state) saved
    as the run's artifact ``checkpoints/last.ckpt``, after the epoch's metrics were sent, so a retried trial resumes
    from it instead of epoch 0 (``worker.py``)."""

    def __init__(self, tracker: Tracker, run_id: str, every: int, logger: EpochLogger | None):
        self.tracker, self.run_id, self.every, self.logger = tracker, run_id, every, logger

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every:
            return
        if self.logger is not None:
            self.logger.flush()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "last.ckpt"
            trainer.save_checkpoint(path)
            self.tracker.log_artifact(self.run_id, path, "checkpoints")


class OwnershipCheck(pl.Callback):
    """Stops training at the end of the epoch in which the heartbeat found the trial taken over. Runs before the
    pruning callback, which would otherwise report to a finished trial."""

    def __init__(self, heartbeat: Any):  # worker.Heartbeat
        self.heartbeat = heartbeat

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.heartbeat.lost.is_set():
            raise TrialAbandoned(self.heartbeat.lost_reason())


class ReportOnly(pl.Callback):
    """Reports the per-epoch metric to Optuna like the pruning callback, but never prunes."""

    def __init__(self, trial: optuna.Trial, monitor: str):
        self.trial, self.monitor = trial, monitor

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not trainer.sanity_checking:
            self.trial.report(float(value), step=pl_module.current_epoch)
