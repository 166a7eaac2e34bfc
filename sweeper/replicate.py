"""Retrain each technique's best configuration (and named reference configs) over fresh seeds.

Selection happened on validation during the search; replicates confirm on test. Their seeds come
from ``config.replicate_seeds`` (``sweep.replicate_seed``, default ``seed + 1000``), which the search
never used, for every row including the baseline: replicate 0 of a tuned technique is never the
search's lucky winner itself (no winner's curse). Every row gets the same seeds, so the report
compares rows paired by seed.

With ``sweep.replicates_max > sweep.replicates`` replication has two looks (docs/statistics.md):
look 1 runs ``replicates`` seeds for every row; look 2 adds seeds up to ``replicates_max`` to the
baseline and to up to ``LEADERS`` inconclusive leaders (not significant, test point estimate above
the baseline, ranked by validation accuracy). Each look is tested at alpha/2 (Bonferroni over the
looks), so the family-wise error rate stays at alpha whatever look 2 does.

Replicates are MLflow runs nested under the study's parent run, tagged ``role=replicate``,
``replicate_of`` (the technique label or ``ref:<name>``), ``seed``, ``source_trial`` and ``look``.
They are the only runs of a study that evaluate the test split. A replicate that already finished is
found in MLflow and not redone, so an interrupted replication resumes where it stopped. The first seed
of each configuration also logs its model (``mlflow.pytorch.log_model`` with signature and example).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from . import config as config_mod
from .study import slots
from .tracking import Tracker

LEADERS = 3  # at most this many inconclusive techniques get look-2 seeds


@dataclass
class Candidate:
    key: str  # technique label, or "ref:<name>"
    overrides: list[str]
    source_trial: int | None


def best_per_technique(study: optuna.Study, cfg: DictConfig) -> list[Candidate]:
    """The best completed trial of every technique in the study (by the first objective, on validation)."""
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    best: dict[str, optuna.trial.FrozenTrial] = {}
    for t in slots(study.get_trials(deepcopy=False)):
        if t.state != TrialState.COMPLETE or t.values is None:
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
    return {(r.data.tags["replicate_of"], int(r.data.tags["seed"])) for r in tracker.finished_children(parent, "replicate")}


def replicate(study: optuna.Study, cfg: DictConfig, argv: list[str], tracker: Tracker, parent: str, storage: RDBStorage) -> int:
    """Run the missing replicates of every look; returns how many were run by this process. Each replicate is a
    claim slot (``claims.py``): invocations finishing the same study together split the work, never doubling it."""
    k = int(cfg.sweep.replicates)
    if k == 0 or cfg.sweep.axis:
        return 0
    cands = candidates(study, cfg)
    ran = _run(cands, config_mod.replicate_seeds(cfg, k), 1, study, cfg, argv, tracker, parent, storage)
    if config_mod.looks(cfg.sweep) == 2:
        extend = second_look(tracker, study.study_name, cands)
        if extend:
            leaders = ", ".join(c.key for c in extend if c.key != "none")
            print(f"look 2: adding seeds to {leaders} and the baseline", file=sys.stderr)
        ran += _run(extend, config_mod.replicate_seeds(cfg), 2, study, cfg, argv, tracker, parent, storage)
    return ran


def second_look(tracker: Tracker, experiment: str, cands: list[Candidate]) -> list[Candidate]:
    """The baseline plus the inconclusive leaders after look 1 (decided from the MLflow store alone)."""
    from .report import build_rows, collect

    rows = build_rows(collect(tracker, experiment))
    open_rows = [
        r
        for r in rows
        if r.comparison is not None and not r.key.startswith("ref:") and not r.comparison.significant and r.comparison.diff > 0
    ]
    open_rows.sort(key=lambda r: -(r.val_rep.mean if r.val_rep else 0.0))
    keys = {"none"} | {r.key for r in open_rows[:LEADERS]}
    return [c for c in cands if c.key in keys] if len(keys) > 1 else []


def _run(
    cands: list[Candidate],
    seeds: list[int],
    look: int,
    study: optuna.Study,
    cfg: DictConfig,
    argv: list[str],
    tracker: Tracker,
    parent: str,
    storage: RDBStorage,
) -> int:
    from .claims import digest, open_slots, run_slots
    from .trial import prepare, run_trial

    done = done_replicates(tracker, parent)
    first = config_mod.replicate_seeds(cfg, 1)[0]
    by_key = {c.key: c for c in cands}
    plan = digest([[c.key, c.overrides] for c in cands] + [seeds])  # a changed plan (a new best) gets new slots
    items = [{"key": c.key, "seed": s} for c in cands for s in seeds if (c.key, s) not in done]
    studies = [open_slots(storage, f"{study.study_name}.replicates.look{look}.{plan}", items)]
    total = sum(len(s.get_trials(deepcopy=False)) for s in studies)
    counter: list[int] = []

    def job(item: dict[str, Any], claim: optuna.Trial) -> float | None:
        cand, seed = by_key[item["key"]], int(item["seed"])
        counter.append(seed)
        print(f"replicate {len(counter)}/{total}: {cand.key} seed={seed}", file=sys.stderr)
        rep_cfg = config_mod.load(argv + cand.overrides + [f"seed={seed}"])
        prepared = prepare(rep_cfg)

        def log_model(run_id: str, model: Any, splits: Any) -> None:  # the first seed of each configuration keeps its model
            uri = tracker.log_model(run_id, model, splits.x_test[:2])
            tracker.set_tags(run_id, {"model_uri": uri})

        result = run_trial(
            rep_cfg,
            tracker,
            prepared=prepared,
            run_name=f"{study.study_name}-{cand.key}-seed{seed}",
            parent_run_id=parent,
            evaluate_test=True,
            before_end=log_model if seed == first else None,
            on_run_created=lambda rid: claim.set_user_attr("mlflow_run_id", rid),
            tags={
                "role": "replicate",
                "study": study.study_name,
                "replicate_of": cand.key,
                "seed": seed,
                "look": look,
                "overrides": " ".join(cand.overrides),
                "source_trial": "" if cand.source_trial is None else cand.source_trial,
            },
        )
        return float(result.metrics["test_acc"]) if result.status == "completed" else None

    return run_slots(studies, storage, job, float(cfg.sweep.heartbeat_interval), int(cfg.sweep.max_retry))
