"""Every use of a private Optuna API, in one place, each with the reason no public API serves.

Tested against the pinned Optuna (``optuna>=5.0,<5.1``) by ``tests/test_optuna_compat.py``;
``check()`` runs before a worker takes a trial, so an upgrade that removes one of these fails at
once with a message naming it, instead of silently mis-counting trials.
"""

from __future__ import annotations

import copy
from collections.abc import Container, Iterable
from datetime import datetime
from typing import Any, cast

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages._rdb import models as _rdb_models
from optuna.study import study as _study_module
from optuna.trial import FrozenTrial, TrialState

TESTED_SERIES = "5.0"

# (where, attribute, why no public API serves)
_PRIVATE: tuple[tuple[str, str, str], ...] = (
    (
        "optuna.Study",
        "_pop_waiting_trial_id",
        "take a queued trial slot without ever creating a new trial (Study.ask creates one when the queue is "
        "empty, which would break the study's exact trial total with many workers)",
    ),
    (
        "optuna.study.study._ThreadLocalStudyAttribute",
        "cached_all_trials",
        "clear the study's trial cache before a popped trial is sampled, as Study.ask does",
    ),
    (
        "optuna.study.study._ThreadLocalStudyAttribute",
        "in_optimize_loop",
        "let samplers call study.stop() inside our worker loop, as inside Study.optimize",
    ),
    (
        "optuna.storages._rdb.models",
        "TrialHeartbeatModel",
        "find RUNNING trials that never recorded a heartbeat (fail_unbeaten_trials): the storage's public API "
        "reads heartbeats only inside its stale check, which skips such trials",
    ),
    (
        "optuna.Study",
        "_storage",
        "give the pruners of one population epoch one snapshot of the study's trials (prune_many): Study has no "
        "public way to answer several pruning questions from one read of the storage",
    ),
)
_OWNERS = {
    "optuna.Study": optuna.Study,
    "optuna.storages._rdb.models": _rdb_models,
    "optuna.study.study._ThreadLocalStudyAttribute": getattr(_study_module, "_ThreadLocalStudyAttribute", None),
}


def check(study: optuna.Study | None = None) -> None:
    """Raise RuntimeError naming the missing private API (the installed Optuna is not the tested series). An
    attribute that ``Study.__init__`` sets (``_storage``) is looked up on ``study`` when one is given."""
    for where, attr, why in _PRIVATE:
        owner = _OWNERS[where]
        if attr == "_storage":  # an instance attribute: only a live study has it
            if study is None:
                continue
            owner = study
        if owner is None or not (hasattr(owner, attr) or attr in getattr(owner, "__annotations__", {})):
            raise RuntimeError(
                f"optuna {optuna.__version__}: {where}.{attr} is gone (needed to {why}); sweeper is "
                f"tested with optuna {TESTED_SERIES}.x: install optuna>={TESTED_SERIES},<5.1"
            )


def pop_waiting_trial(study: optuna.Study, storage: Any = None) -> tuple[optuna.Trial, int] | None:
    """Like Study.ask() but never creates a trial: (trial, its storage id), or None when no WAITING slot is left.

    With ``storage`` (heartbeats on), the trial's first heartbeat is recorded right after the pop, before
    the Trial is built: building it runs the sampler (tens of ms with multivariate TPE), and Optuna's stale
    check skips a RUNNING trial that has no heartbeat at all, so a worker killed in that window would leave
    a trial RUNNING forever (found by benchmarks/chaos.py). ``Study.ask`` clears the study's per-thread trial
    cache before building a Trial (the sampler reads it); we do the same.
    """
    study._thread_local.cached_all_trials = None
    trial_id = study._pop_waiting_trial_id()
    if trial_id is None:
        return None
    if storage is not None:
        storage.record_heartbeat(trial_id)
    return optuna.Trial(study, trial_id), trial_id


def fail_unbeaten_trials(study: optuna.Study, storage: Any) -> list[int]:
    """Fail the study's RUNNING trials that never recorded a heartbeat and started more than the storage's grace
    period ago, and hand each to the storage's stale-trial callback (sweeper's retries it and closes its runs), as
    ``fail_stale_trials`` does for a trial whose heartbeat stopped. Optuna's stale check skips a trial without any
    heartbeat for ever, so a trial started outside sweeper (``optuna ask``, a notebook's ``study.optimize`` without
    heartbeats) kept every waiting worker waiting for ever. Returns the failed trials' ids (none without a
    heartbeat storage)."""
    if storage is None or storage.get_heartbeat_interval() is None:
        return []
    grace = storage.grace_period or 2 * (storage.get_heartbeat_interval() or 5)
    now = datetime.now()  # datetime_start is the starting process's naive local datetime.now(), as here
    old = {
        t._trial_id: t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.datetime_start is not None and (now - t.datetime_start).total_seconds() > grace
    }
    if not old:
        return []
    session = storage.scoped_session()
    try:
        model = _rdb_models.TrialHeartbeatModel
        beaten = {tid for (tid,) in session.query(model.trial_id).filter(model.trial_id.in_(list(old)))}
    finally:
        storage.scoped_session.remove()
    failed = []
    for trial_id in sorted(set(old) - beaten):
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", f"RUNNING for over {grace:g} s without ever sending a heartbeat")
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
        except UpdateFinishedTrialError:  # its own process finished it meanwhile
            pass
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial_id in failed:
        if callback is not None:
            callback(study, copy.deepcopy(storage.get_trial(trial_id)))
    return failed


def allow_sampler_stop(study: optuna.Study) -> None:
    """Samplers may call ``study.stop()`` (GridSampler does when its grid is used up), which Optuna only
    allows inside ``Study.optimize``. Our worker loop plays optimize's role (it ends when no slot is
    left), so it marks itself as the optimize loop."""
    study._thread_local.in_optimize_loop = True


class _Snapshot:
    """The study's storage as the pruner sees it while deciding one population epoch: every read of the study's
    trials is answered from one read taken after all members reported; writes (SuccessiveHalving's rung values)
    go through to the storage and into the snapshot, so later decisions of the same epoch see them."""

    def __init__(self, study: optuna.Study):
        self._storage, self._study_id, self._directions = study._storage, study._study_id, study.directions
        self._trials = {t._trial_id: t for t in self._storage.get_all_trials(self._study_id, deepcopy=False)}  # by number

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._study_id

    def get_study_directions(self, study_id: int) -> list:
        return list(self._directions)

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        trials = [t for t in self._trials.values() if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return copy.deepcopy(self._trials[trial_id])

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._storage.set_trial_system_attr(trial_id, key, value)
        updated = copy.copy(self._trials[trial_id])  # the storage's cached object is shared: never mutated
        updated.system_attrs = {**updated.system_attrs, key: value}
        self._trials[trial_id] = updated


def prune_many(study: optuna.Study, trial_ids: Iterable[int]) -> dict[int, bool]:
    """``Trial.should_prune()`` for several running trials at once, from one read of the study's trials instead of
    two per trial (a population's members all report before any is judged; the decisions equal judging them in
    turn, except that a member told in the same epoch is not yet a finished trial for the others, as with
    concurrent workers). Single-objective only, like ``Trial.should_prune``."""
    if len(study.directions) > 1:
        raise NotImplementedError("Trial.should_prune is not supported for multi-objective optimization.")
    snapshot = _Snapshot(study)
    view = optuna.Study(study.study_name, storage=cast(BaseStorage, snapshot), sampler=study.sampler, pruner=study.pruner)
    return {trial_id: study.pruner.prune(view, snapshot.get_trial(trial_id)) for trial_id in trial_ids}
