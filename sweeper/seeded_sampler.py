"""The configured Optuna sampler, seeded per trial from ``(sweep.sampler.seed, trial number)``.

Every worker process (``workers=N``, another machine, a Slurm task, a Kubernetes pod) builds its own
sampler from the same config. Seeded once per process, the workers drew the same random start-up
suggestions in the same order: with two workers every trial of the start-up phase was trained twice
(trials 1 and 2 both ``regularizer.p=0.3518``, 3 and 4 both ``0.4434``, ...). Trial numbers are unique
in a study, so seeding each trial's draw from its number gives every trial its own draw, whichever
process asks, and a study run by one worker is still reproducible from the seed. Optuna's own
``reseed_rng`` would also separate the workers, but with fresh entropy: no run could be repeated.
The grid sampler is left as it is (``study.make_sampler``): its seed shuffles the grid, and grid point
``i`` must be the same point in every worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from .seed_streams import substream


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed of its own for each (seed, trial number)."""
    return substream(seed, number)


class TrialSeededSampler(BaseSampler):
    """Delegates every call about a trial to ``make(trial_seed(seed, trial.number))``, built once per trial (the
    samplers used here keep their state in the study, not in the sampler object, except their random state)."""

    _KEEP = 256  # trials whose sampler is kept (a trial normally ends in this process: after_trial drops it)

    def __init__(self, make: Callable[[int], BaseSampler], seed: int):
        self._make, self._seed = make, int(seed)
        self._by_number: dict[int, BaseSampler] = {}

    def _of(self, trial: FrozenTrial) -> BaseSampler:
        inner = self._by_number.get(trial.number)
        if inner is None:
            if len(self._by_number) >= self._KEEP:
                self._by_number.pop(next(iter(self._by_number)))
            inner = self._by_number[trial.number] = self._make(trial_seed(self._seed, trial.number))
        return inner

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._of(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._of(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution) -> Any:
        return self._of(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._of(trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self._of(trial).after_trial(study, trial, state, values)
        self._by_number.pop(trial.number, None)

    def reseed_rng(self) -> None:  # the draws are fixed by (seed, trial number); nothing to reseed
        pass
