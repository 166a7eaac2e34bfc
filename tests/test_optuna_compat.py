"""The private Optuna APIs sweeper relies on (sweeper/optuna_compat.py), checked against the installed Optuna."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from sweeper import optuna_compat


def test_check_passes_on_the_pinned_optuna():
    assert optuna.__version__.startswith(optuna_compat.TESTED_SERIES + ".")
    optuna_compat.check()


def test_check_fails_loudly_naming_a_removed_api(monkeypatch):
    monkeypatch.delattr(optuna.Study, "_pop_waiting_trial_id")
    with pytest.raises(RuntimeError, match=r"optuna\.Study\._pop_waiting_trial_id is gone .*optuna>=5\.0,<5\.1"):
        optuna_compat.check()


def test_pop_takes_queued_slots_in_order_and_never_creates_a_trial():
    study = optuna.create_study()
    for x in (1.0, 2.0):
        study.enqueue_trial({"x": x}, user_attrs={"slot": x})
    popped = []
    while (got := optuna_compat.pop_waiting_trial(study)) is not None:
        trial, trial_id = got
        popped.append((trial.suggest_float("x", 0, 10), trial.user_attrs["slot"]))
        assert study._storage.get_trial(trial_id).number == trial.number
        study.tell(trial, 0.0)
    assert popped == [(1.0, 1.0), (2.0, 2.0)]
    assert len(study.trials) == 2 and all(t.state == TrialState.COMPLETE for t in study.trials)


def test_sampler_may_stop_the_study_inside_our_loop():
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"x": [0, 1]}))
    study.enqueue_trial({})
    with pytest.raises(RuntimeError, match="supposed to be invoked inside"):
        study.stop()
    optuna_compat.allow_sampler_stop(study)
    study.stop()  # what GridSampler does when the grid is used up: allowed now


def test_a_popped_trial_has_a_heartbeat_before_the_sampler_runs(tmp_path):
    """Optuna's stale check skips a RUNNING trial with no heartbeat, so a worker killed between the pop and its
    first heartbeat (while the sampler builds the Trial) left the trial RUNNING forever (found by chaos.py)."""
    import time

    from optuna.storages import RDBStorage, fail_stale_trials

    storage = RDBStorage(f"sqlite:///{tmp_path}/o.db", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)
    for _ in range(2):
        study.enqueue_trial({})
    with_heartbeat, _ = optuna_compat.pop_waiting_trial(study, storage)
    without, _ = optuna_compat.pop_waiting_trial(study)  # the old behaviour, for contrast
    time.sleep(2.5)  # both "workers" died right after the pop
    fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states[with_heartbeat.number] == TrialState.FAIL  # goes stale and can be retried
    assert states[without.number] == TrialState.RUNNING  # would have stayed RUNNING forever


@pytest.mark.parametrize(
    "make_pruner",
    [
        lambda: optuna.pruners.MedianPruner(n_startup_trials=2),
        lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
        lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=8, reduction_factor=2),
    ],
    ids=["median", "successive_halving", "hyperband"],
)
def test_prune_many_decides_as_should_prune_does_in_turn(make_pruner):
    """A population's members are judged from one read of the study; the decisions must be those of calling
    ``should_prune`` for each in turn (including SuccessiveHalving's rung values written along the way)."""
    import random

    def study_with_running_trials():
        # the same name twice: Hyperband assigns brackets by a hash of the study name and trial number
        study = optuna.create_study(study_name="s", sampler=optuna.samplers.RandomSampler(seed=0), pruner=make_pruner())
        rng = random.Random(0)
        for _ in range(6):  # finished trials with curves
            t = study.ask()
            for step in range(8):
                t.report(rng.random(), step)
            study.tell(t, rng.random())
        running = [study.ask() for _ in range(8)]
        for step in range(4):
            for t in running:
                t.report(rng.random(), step)
        return study, running

    study, running = study_with_running_trials()
    one_by_one = {t._trial_id: t.should_prune() for t in running}
    study, running = study_with_running_trials()
    batched = optuna_compat.prune_many(study, [t._trial_id for t in running])
    assert batched == one_by_one
    assert any(batched.values()) and not all(batched.values())  # the case tells something
    if isinstance(study.pruner, optuna.pruners.SuccessiveHalvingPruner):  # rung values reached the storage
        assert any(k.startswith("completed_rung") for t in running for k in study._storage.get_trial(t._trial_id).system_attrs)


def test_check_looks_up_the_storage_attribute_on_the_study():
    study = optuna.create_study()
    optuna_compat.check(study)
    del study._storage
    with pytest.raises(RuntimeError, match=r"optuna\.Study\._storage is gone"):
        optuna_compat.check(study)


def test_a_running_trial_that_never_beat_is_failed_and_retried_after_the_grace_period(tmp_path):
    """Optuna's stale check skips a RUNNING trial without any heartbeat for ever (``optuna ask``, a notebook's
    ``optimize`` without heartbeats): a sweep waiting for it never ended. Only such trials older than the grace
    period are failed; a trial that beats, and one that has only just started, are left alone."""
    import time

    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    callback = RetryHeartbeatStaleTrialCallback(3)
    storage = RDBStorage(f"sqlite:///{tmp_path}/o.db", heartbeat_interval=1, grace_period=1, heartbeat_stale_trial_callback=callback)
    study = optuna.create_study(storage=storage)
    foreign = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # what `optuna ask` leaves
    study.enqueue_trial({})
    beating, _ = optuna_compat.pop_waiting_trial(study, storage)
    time.sleep(1.5)
    storage.record_heartbeat(beating._trial_id)  # alive
    fresh = study.ask()  # no heartbeat yet, but within the grace period
    assert optuna_compat.fail_unbeaten_trials(study, storage) == [foreign._trial_id]
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert trials[foreign.number].state == TrialState.FAIL
    assert "without ever sending a heartbeat" in trials[foreign.number].user_attrs["fail_reason"]
    assert trials[beating.number].state == trials[fresh.number].state == TrialState.RUNNING
    (retry,) = [t for t in trials.values() if t.system_attrs.get("failed_trial") == foreign.number]
    assert retry.state == TrialState.WAITING and retry.params == trials[foreign.number].params
    assert optuna_compat.fail_unbeaten_trials(study, None) == []  # no heartbeat storage: nothing to judge by
