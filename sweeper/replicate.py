"""Retrain each technique's best configuration (and named reference configs) over K seeds.

Replicates are MLflow runs nested under the study's parent run, tagged ``role=replicate``,
``replicate_of`` (the technique label or ``ref:<name>``), ``seed`` and ``source_trial``. They
are the only runs that evaluate the test split. A replicate that already finished is found in
MLflow and not redone, so an interrupted replication resumes where it stopped. The first seed of
each configuration also logs its model (``mlflow.pytorch.log_model`` with signature and example).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState

from . import config as config_mod
from .study import slots
from .tracking import Tracker


@dataclass
class Candidate:
    key: str  # technique label, or "ref:<name>"
    overrides: list[str]
    source_trial: int | None


def best_per_technique(study: optuna.Study, cfg: DictConfig) -> list[Candidate]:
    """The best completed trial of every technique in the study (by the first objective)."""
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    best: dict[str, optuna.trial.FrozenTrial] = {}
    for t in slots(study.get_trials(deepcopy=False)):
        if t.state != TrialState.COMPLETE:
            continue
        label = t.user_attrs.get("technique", "?")
        cur = best.get(label)
        if cur is None or (t.values[0] > cur.values[0] if maximize else t.values[0] < cur.values[0]):
            best[label] = t
    return [Candidate(label, list(t.user_attrs.get("overrides", [])), t.number) for label, t in best.items()]


def candidates(study: optuna.Study, cfg: DictConfig) -> list[Candidate]:
    refs = [Candidate(f"ref:{name}", list(ovs), None) for name, ovs in (cfg.sweep.references or {}).items()]
    return best_per_technique(study, cfg) + refs


def done_replicates(tracker: Tracker, parent: str) -> set[tuple[str, int]]:
    runs = tracker.search_runs(f"tags.role = 'replicate' and tags.`mlflow.parentRunId` = '{parent}'")
    return {(r.data.tags["replicate_of"], int(r.data.tags["seed"])) for r in runs if r.info.status == "FINISHED"}


def replicate(study: optuna.Study, cfg: DictConfig, argv: list[str], tracker: Tracker, parent: str) -> int:
    """Run the missing replicates; returns how many were run now."""
    from .trial import prepare, run_trial

    k = int(cfg.sweep.replicates)
    if k == 0 or cfg.sweep.axis:
        return 0
    done = done_replicates(tracker, parent)
    todo = [(c, i) for c in candidates(study, cfg) for i in range(k) if (c.key, cfg.seed + i) not in done]
    for n, (cand, i) in enumerate(todo, 1):
        seed = int(cfg.seed) + i
        print(f"replicate {n}/{len(todo)}: {cand.key} seed={seed}", file=sys.stderr)
        rep_cfg = config_mod.load(argv + cand.overrides + [f"seed={seed}"])
        prepared = prepare(rep_cfg)

        def log_model(run_id, model, splits):  # the first seed of each configuration keeps its model
            uri = tracker.log_model(run_id, model, splits.x_test[:2])
            tracker.set_tags(run_id, {"model_uri": uri})

        run_trial(
            rep_cfg,
            tracker,
            prepared=prepared,
            run_name=f"{study.study_name}-{cand.key}-seed{seed}",
            parent_run_id=parent,
            evaluate_test=True,
            before_end=log_model if i == 0 else None,
            tags={
                "role": "replicate",
                "study": study.study_name,
                "replicate_of": cand.key,
                "seed": seed,
                "overrides": " ".join(cand.overrides),
                "source_trial": "" if cand.source_trial is None else cand.source_trial,
            },
        )
    return len(todo)
