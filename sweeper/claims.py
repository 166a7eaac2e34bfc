"""Work that must happen once per study, however many invocations reach it at the same moment.

Two invocations finishing the same study together (two machines, a re-run racing a worker) would
both replicate, both time and both register. Each such job is a WAITING trial ("slot") of a
companion Optuna study in the same storage: popping a slot is an atomic row update (the same
mechanism that keeps the study's trial total exact), so no slot ever runs twice. A claimant that
dies leaves a slot whose heartbeat goes stale; it is failed and re-queued (bounded retries), and
Ctrl-C re-queues it at once. Companion studies are named ``<study>.<job>`` and created once: the
creator adds the slots, others wait for its ``ready`` mark.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.trial import TrialState

from . import optuna_compat, runtime


def open_slots(storage: RDBStorage, name: str, items: list[dict[str, Any]]) -> optuna.Study:
    """The companion study ``name`` with one slot per item (created once, atomically, by whoever comes first)."""
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        for item in items:
            study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=dict(item)))
        study.set_user_attr("ready", True)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        deadline = time.monotonic() + 60
        while "ready" not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.2)
        return study


def digest(obj: Any) -> str:
    """A short stable name part for a configuration (its overrides): a changed best configuration gets new slots."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _tell(storage: RDBStorage, study: optuna.Study, trial: optuna.Trial, trial_id: int, value: float | None) -> None:
    """A claim's result (None: FAIL). A claim this process stalled on past the grace period was failed as stale and
    retried elsewhere: Optuna refuses the tell (``Cannot tell a FAIL trial``, or UpdateFinishedTrialError), and the
    process says so and goes on instead of crashing."""
    try:
        if value is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        if storage.get_trial(trial_id).state == TrialState.RUNNING:
            raise  # not taken over: a real error
        print(f"claim {study.study_name} #{trial.number} was retried elsewhere while this process stalled", file=sys.stderr)


def _poll_seconds(storage: RDBStorage) -> float:
    """How long to wait before looking again for a slot another claimant may give back."""
    return max(1.0, (storage.get_heartbeat_interval() or 0) / 2)


def run_slots(
    studies: list[optuna.Study],
    storage: RDBStorage,
    job: Callable[[dict[str, Any], optuna.Trial], float | None],
    max_retry: int,
) -> int:
    """Pop and run slots of these companion studies until none is waiting or running (another claimant's may still
    come back); returns how many ran here. ``job`` returns a value (COMPLETE) or None (FAIL, not retried)."""
    from .worker import Heartbeat, pop_slot, requeue

    optuna_compat.check()
    ran = 0
    while True:
        popped = None
        for study in studies:
            fail_stale_trials(study)
            popped = pop_slot(study, storage, max_retry)
            if popped is not None:
                break
        if popped is None:
            if any([optuna_compat.fail_unbeaten_trials(s, storage) for s in studies]):
                continue  # slots that never beat: failed, their retries wait
            if not any(t.state == TrialState.RUNNING for s in studies for t in s.get_trials(deepcopy=False)):
                return ran
            time.sleep(_poll_seconds(storage))
            continue
        trial, trial_id = popped
        try:
            with Heartbeat(storage, trial_id):
                value = job(dict(trial.user_attrs), trial)
        except KeyboardInterrupt:
            requeue(study, trial, max_retry)
            raise
        ran += 1
        _tell(storage, study, trial, trial_id, value)


def run_slot_batches(
    studies: list[optuna.Study],
    storage: RDBStorage,
    batch_job: Callable[[list[tuple[dict[str, Any], optuna.Trial]]], list[float | None]],
    size: int,
    max_retry: int,
) -> int:
    """``run_slots`` for jobs that run together (a population): pop up to ``size`` slots, run them as one batch
    (each slot keeps its own heartbeat), tell each; until none is waiting or running. Returns how many ran here."""
    from .worker import Heartbeat, requeue, sigint_deferred

    optuna_compat.check()
    ran = 0
    while True:
        batch: list[tuple[optuna.Study, optuna.Trial, int]] = []
        try:
            with sigint_deferred():  # every popped slot is in the batch before a Ctrl-C is raised
                for study in studies:
                    fail_stale_trials(study)
                    while len(batch) < size and (popped := optuna_compat.pop_waiting_trial(study, storage)) is not None:
                        batch.append((study, *popped))
        except KeyboardInterrupt:
            for study, trial, _ in batch:
                requeue(study, trial, max_retry, f"interrupted ({runtime.interrupted_by()}); re-queued for the next run")
            raise
        if not batch:
            if any([optuna_compat.fail_unbeaten_trials(s, storage) for s in studies]):
                continue  # slots that never beat: failed, their retries wait
            if not any(t.state == TrialState.RUNNING for s in studies for t in s.get_trials(deepcopy=False)):
                return ran
            time.sleep(_poll_seconds(storage))
            continue
        beats = [Heartbeat(storage, trial_id).__enter__() for _, _, trial_id in batch]
        try:
            values = batch_job([(dict(trial.user_attrs), trial) for _, trial, _ in batch])
        except KeyboardInterrupt:
            for study, trial, _ in batch:
                requeue(study, trial, max_retry)
            raise
        finally:
            for beat in beats:
                beat.__exit__()
        ran += len(batch)
        for (study, trial, trial_id), value in zip(batch, values):
            _tell(storage, study, trial, trial_id, value)
