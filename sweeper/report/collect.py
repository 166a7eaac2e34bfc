"""Read one study from the MLflow store alone: its parent run, trial runs and replicate runs."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..tracking import Tracker


@dataclass
class StudyData:
    experiment: str
    parent: Any
    trials: list
    replicates: list
    objectives: list[tuple[str, str]]
    searched: list[str]
    axis: str | None
    alpha: float
    histories: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # replicate key -> curves
    costs: dict[str, dict[str, float]] = field(default_factory=dict)  # replicate key -> cost-probe metrics
    looks: int = 1  # replication looks; each is tested at alpha / looks
    margin: float = 0.5  # equivalence margin, accuracy points
    claim: str = ""
    claim_reference: str = ""
    log_params: list[str] = field(default_factory=list)  # searched on a log scale: plotted on a log axis
    classes: int | None = None  # of the replicates' dataset (its MLflow dataset input), for the chance level
    test_rows: int | None = None
    deleted: list = field(default_factory=list)  # the study's child runs in MLflow's trash, left out of everything

    @property
    def alpha_per_look(self) -> float:
        return self.alpha / self.looks


def collect(tracker: Tracker, experiment: str, parent_id: str | None = None) -> StudyData:
    """``parent_id``: the study's parent run (a sweep knows it). Without it, the newest study run of the experiment,
    with a note when there are several: two Optuna storages (or a recreated one) can put two studies of one name
    into one MLflow experiment, and the newest parent run was taken even for the other study's own report."""
    runs = tracker.search_runs()
    parents = [r for r in runs if r.data.tags.get("role") == "study"]  # newest first (MLflow's order)
    if not parents:
        raise ConfigError("experiment", experiment, "has no study (parent) run; run a sweep into it first")
    if parent_id is not None:
        parent = next((r for r in parents if r.info.run_id == parent_id), None)
        if parent is None:
            ids = ", ".join(r.info.run_id for r in parents)
            raise ConfigError("--parent-run", parent_id, f"is not a study run of experiment {experiment}; its study runs: {ids}")
    else:
        parent = parents[0]
        if len(parents) > 1:
            others = ", ".join(r.info.run_id for r in parents[1:])
            print(
                f"note: experiment {experiment} holds {len(parents)} study runs; reporting the newest, {parent.info.run_id} "
                f"(others: {others}; choose one with --parent-run RUN_ID)",
                file=sys.stderr,
            )
    trials = [r for r in runs if r.data.tags.get("role") == "trial" and r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    finished = [r for r in trials if r.data.tags.get("state") in ("completed", "pruned")]
    if not finished:
        raise ConfigError("experiment", experiment, "the study has no finished trials yet: nothing to report")
    reps = [
        r
        for r in runs
        if r.data.tags.get("role") == "replicate"
        and r.info.status == "FINISHED"
        and r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        and "test_acc" in r.data.metrics
    ]
    tags = parent.data.tags
    classes, test_rows = _dataset_size(reps)
    data = StudyData(
        experiment,
        parent,
        trials,
        reps,
        [tuple(o) for o in json.loads(tags["objectives"])],
        json.loads(tags.get("searched_params", "[]")),
        tags.get("axis") or None,
        float(tags.get("alpha", 0.05)),
        looks=int(tags.get("looks", 1)),
        margin=float(tags.get("margin", 0.5)),
        claim=tags.get("claim", ""),
        claim_reference=tags.get("claim_reference", ""),
        log_params=json.loads(tags.get("log_params", "[]")),
        classes=classes,
        test_rows=test_rows,
        deleted=tracker.deleted_children(parent.info.run_id),
    )
    for r in runs:
        if (
            r.data.tags.get("role") == "cost"
            and r.info.status == "FINISHED"
            and r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        ):
            data.costs[r.data.tags["replicate_of"]] = dict(r.data.metrics)
    first_seed: dict[str, Any] = {}
    for r in reps:
        key, seed = r.data.tags["replicate_of"], int(r.data.tags["seed"])
        if key not in first_seed or seed < int(first_seed[key].data.tags["seed"]):
            first_seed[key] = r
    for key, r in first_seed.items():
        data.histories[key] = {
            m: [x.value for x in sorted(tracker.metric_history(r.info.run_id, m), key=lambda x: x.step)] for m in ("train_acc", "val_acc")
        }
    return data


def _dataset_size(reps: list) -> tuple[int | None, int | None]:
    """(classes, test rows) from a replicate's dataset input profile (``trial.open_run``); None when absent."""
    for r in reps:
        for di in getattr(r.inputs, "dataset_inputs", None) or []:
            try:
                profile = json.loads(di.dataset.profile or "{}")
                return int(profile["classes"]), int(profile["test"])
            except (ValueError, KeyError, TypeError):
                continue
    return None, None
