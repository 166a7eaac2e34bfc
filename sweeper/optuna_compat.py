"""Every use of a private Optuna API, in one place, each with the reason no public API serves.

Tested against the pinned Optuna (``optuna>=5.0,<5.1``) by ``tests/test_optuna_compat.py``;
``check()`` runs before a worker takes a trial, so an upgrade that removes one of these fails at
once with a message naming it, instead of silently mis-counting trials.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.study import study as _study_module

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
)
_OWNERS = {
    "optuna.Study": optuna.Study,
    "optuna.study.study._ThreadLocalStudyAttribute": getattr(_study_module, "_ThreadLocalStudyAttribute", None),
}


def check() -> None:
    """Raise RuntimeError naming the missing private API (the installed Optuna is not the tested series)."""
    for where, attr, why in _PRIVATE:
        owner = _OWNERS[where]
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


def allow_sampler_stop(study: optuna.Study) -> None:
    """Samplers may call ``study.stop()`` (GridSampler does when its grid is used up), which Optuna only
    allows inside ``Study.optimize``. Our worker loop plays optimize's role (it ends when no slot is
    left), so it marks itself as the optimize loop."""
    study._thread_local.in_optimize_loop = True
