"""The worker loop with populations (``sweep.population=K``): up to K trials train at once as one stacked model.

Each member is still one Optuna trial (its own heartbeat, its per-epoch reports to the pruner, its tell)
and one MLflow child run (the same params, dataset input, config, tags and metrics as the one-model path,
plus ``population_size``). Members with the same ``population.population_key`` share a population; others
get their own, trained in turn. Between epochs, members that completed, stopped early, were pruned or
failed leave (their trials are told at once) and free slots are refilled from the waiting trials, so no
population waits for its slowest member. A trial whose configuration cannot be vectorized (SGD,
checkpointing) runs alone on the one-model path, with a one-line notice the first time.

Concurrent asks: several trials are suggested before any is told. TPE runs with ``constant_liar=True``
(``study.make_sampler``), so trials still running count as bad guesses and the sampler does not hand out
near-duplicates.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from mlflow.entities import Metric
from optuna.storages import fail_stale_trials
from optuna.trial import TrialState

from . import config as config_mod
from . import optuna_compat, runtime
from .errors import StoreUnavailable
from .population import Member, Population, new_member, population_key, vectorizable
from .population_size import device
from .study import slots
from .worker import Heartbeat, Worker, requeue, run_name, sigint_deferred


@dataclass
class Slot:
    """What the worker keeps for one member: its trial, heartbeat, MLflow run and unsent epoch metrics."""

    trial: optuna.Trial
    trial_id: int
    heartbeat: Heartbeat
    baseline: bool
    run_id: str | None = None
    buffer: list = field(default_factory=list)  # epoch metrics not yet sent
    last_flush: float = field(default_factory=time.monotonic)


class PopulationWorker(Worker):
    """``Worker`` with ``sweep.population`` = K > 1."""

    FLUSH_SECONDS = 2.0  # per-epoch metrics go to MLflow at most this often per member (as EpochLogger)

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.size = int(self.cfg.sweep.population)
        self.populations: dict[tuple, Population] = {}
        self.noticed: set[str] = set()

    def members(self) -> list[Member]:
        return [m for p in self.populations.values() for m in p.members]

    def run(self) -> None:
        optuna_compat.check(self.study)
        poll = max(1.0, self.cfg.sweep.heartbeat_interval / 2)
        optuna_compat.allow_sampler_stop(self.study)
        try:
            while True:
                self._refill()
                if not self.members():
                    if optuna_compat.fail_unbeaten_trials(self.study, self.ctx.storage):
                        continue  # trials that never beat (optuna ask, a dead pop): failed, their retries wait
                    running = [t for t in slots(self.study.get_trials(deepcopy=False)) if t.state == TrialState.RUNNING]
                    if not running:
                        return
                    time.sleep(poll)  # another worker may die; its trial would come back to the queue
                    continue
                for pop in list(self.populations.values()):
                    self._epoch(pop)
                self.populations = {k: p for k, p in self.populations.items() if p.members}
        except (KeyboardInterrupt, StoreUnavailable) as exc:
            self._give_back_all(exc)
            raise

    # --- joining ---------------------------------------------------------------------------------------
    def _refill(self) -> None:
        """Pop waiting trials until the worker holds K members (a trial that must run alone runs now). Popping and
        joining finish before a Ctrl-C is raised, so every popped trial is a member (re-queued by ``run``), told,
        or re-queued here."""
        while len(self.members()) < self.size:
            alone = None
            try:
                with sigint_deferred():
                    fail_stale_trials(self.study)
                    popped = optuna_compat.pop_waiting_trial(self.study, self.ctx.storage)
                    if popped is None:
                        return
                    alone = self._join(*popped)
            except KeyboardInterrupt:
                if alone is not None:
                    requeue(
                        self.study,
                        alone[0],
                        int(self.cfg.sweep.max_retry),
                        f"interrupted ({runtime.interrupted_by()}); re-queued for the next run",
                    )
                raise
            if alone is not None:
                self.run_one(*alone)  # the one-model path, with its own heartbeat and Ctrl-C handling

    def _join(self, trial: optuna.Trial, trial_id: int) -> tuple[optuna.Trial, int] | None:
        """Make the trial a member; returns it instead when it must train alone."""
        heartbeat = Heartbeat(self.ctx.storage, trial_id).__enter__()
        try:
            return self._join_owned(trial, trial_id, heartbeat)
        except BaseException as exc:  # a lost store while joining: the trial goes back to the queue if it can
            heartbeat.__exit__()
            with contextlib.suppress(Exception):
                requeue(self.study, trial, int(self.cfg.sweep.max_retry), f"{type(exc).__name__} while joining; re-queued")
            raise

    def _join_owned(self, trial: optuna.Trial, trial_id: int, heartbeat: Heartbeat) -> tuple[optuna.Trial, int] | None:
        from .trial import data_order_seed, open_run

        configured = self.configure(trial)
        if configured is None:
            heartbeat.__exit__()
            return None
        baseline, overrides, cfg, prepared = configured
        why = vectorizable(cfg, prepared.regularizers)
        if why is not None:
            heartbeat.__exit__()
            if why not in self.noticed:
                self.noticed.add(why)
                print(f"note: {why}; such trials train one at a time (sweep.population applies to the rest)", file=sys.stderr)
            return trial, trial_id  # run alone by the caller; suggesting again returns the same values
        trial.set_user_attr("technique", prepared.technique)
        trial.set_user_attr("overrides", overrides)
        splits = prepared.splits
        member = new_member(
            None, cfg, prepared.regularizers, splits.input_shape, splits.n_classes, config_mod.max_epochs(cfg), data_order_seed(cfg)
        )
        slot = Slot(trial, trial_id, heartbeat, baseline)
        member.handle = slot
        slot.run_id = open_run(
            self.tracker,
            cfg,
            prepared,
            run_name(trial.number, prepared.technique, trial.params, baseline),
            self.parent,
            self.run_tags(trial, trial_id, baseline),
            lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
        )
        key = population_key(cfg)
        if key not in self.populations:
            self.populations[key] = Population(splits, int(cfg.data.batch_size), cfg.model.activation, device(cfg))
        self.populations[key].add(member)
        return None

    # --- one epoch of one population ---------------------------------------------------------------------
    def _epoch(self, pop: Population) -> None:
        """Train one epoch; every member reports, then the pruner judges them all from one read of the study
        (``optuna_compat.prune_many``), then those that are done leave."""
        members = pop.train_epoch()
        judged: dict[int, Member] = {}
        for m in members:
            slot: Slot = m.handle
            new_epoch = m.status != "failed"  # a failed member's epoch produced no metrics
            if new_epoch:
                self._buffer(slot, m)
            if slot.heartbeat.lost.is_set():
                m.status, m.reason = "abandoned", None
            elif new_epoch and self.monitor:  # as the pruning callback: every epoch, the last one included
                slot.trial.report(m.history[-1][self.monitor], step=m.epoch - 1)
                if not slot.baseline:  # the baseline reports but is never pruned
                    judged[slot.trial_id] = m
        for trial_id, prune in optuna_compat.prune_many(self.study, judged).items() if judged else ():
            if prune:
                m = judged[trial_id]
                m.status, m.reason = "pruned", f"Trial was pruned at epoch {m.epoch - 1}."
        for m in members:
            if m.status != "running":
                with sigint_deferred():  # the run is closed and the trial told, or neither
                    pop.remove(m)
                    self._leave(pop, m)

    def _buffer(self, slot: Slot, m: Member) -> None:
        ts = int(time.time() * 1000)
        slot.buffer += [Metric(k, float(v), ts, m.epoch - 1) for k, v in m.history[-1].items()]
        slot.buffer.append(Metric("population_size", float(len(self.members())), ts, m.epoch - 1))
        if time.monotonic() - slot.last_flush >= self.FLUSH_SECONDS:
            self._flush(slot)

    def _flush(self, slot: Slot) -> None:
        if slot.buffer and slot.run_id:
            items, slot.buffer = slot.buffer, []
            self.tracker.log_metric_items(slot.run_id, items)
        slot.last_flush = time.monotonic()

    def _leave(self, pop: Population, m: Member) -> None:
        """Tell the member's trial and close its run, exactly as the one-model path would."""
        from .trial import TrialResult, close_run, final_metrics

        slot: Slot = m.handle
        series, slot.buffer = slot.buffer, []  # the last epochs' metrics go with the final ones (close_run)
        slot.heartbeat.__exit__()
        epochs = len(m.history)
        status = {"stopped": "completed"}.get(m.status, m.status)
        metrics: dict[str, float] = {"epochs_trained": epochs}
        if status == "completed" and not slot.heartbeat.owned():
            status, m.reason = "abandoned", slot.heartbeat.lost_reason()
        if status == "completed":
            model = pop.model_of(m)
            metrics = final_metrics(
                model, pop.splits, pop.device, m.history, m.stopped_early, m.best_epoch, sum(m.epoch_seconds), self.evaluate_test
            )
            metrics["population_size"] = float(len(pop.members) + 1)
        if status == "abandoned":
            m.reason = m.reason or slot.heartbeat.lost_reason()
        mlflow_status = "FINISHED" if status in ("completed", "pruned") else "FAILED"
        assert slot.run_id is not None
        close_run(self.tracker, slot.run_id, status, mlflow_status, m.reason, metrics, epochs, series)
        if status == "abandoned":
            self._abandoned(slot.trial, slot.trial_id)
            return
        self._tell(slot.trial, TrialResult(status, metrics, m.history, m.reason, slot.run_id))

    # --- Ctrl-C or a lost store ----------------------------------------------------------------------------
    def _give_back_all(self, exc: BaseException) -> None:
        """Every member's trial back to the queue (FAIL + retry) and its run KILLED, before the exception goes on."""
        reason = f"interrupted ({runtime.interrupted_by()})" if isinstance(exc, KeyboardInterrupt) else "a store was lost"
        for m in self.members():
            slot: Slot = m.handle
            slot.heartbeat.__exit__()
            try:
                if slot.run_id and not isinstance(exc, StoreUnavailable):
                    self.tracker.set_tags(slot.run_id, {"state": "killed", "failure_reason": reason})
                    self.tracker.end_run(slot.run_id, "KILLED")
                requeue(self.study, slot.trial, int(self.cfg.sweep.max_retry), f"{reason}; re-queued for the next run")
            except Exception:
                if not isinstance(exc, StoreUnavailable):
                    raise
        self.populations.clear()


def worker_class(cfg) -> type[Worker]:
    """The worker loop a sweep runs: one model at a time (sweep.population=1), or populations. Takes the resolved
    size (``population_size.resolve``; ``auto`` is not a number yet)."""
    return PopulationWorker if int(cfg.sweep.population) > 1 else Worker
