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
