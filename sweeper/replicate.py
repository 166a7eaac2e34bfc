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
import time
from dataclasses import dataclass
from typing import Any

import optuna
from mlflow.entities import Metric
from omegaconf import DictConfig
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from . import config as config_mod
from . import population_size
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
    from .report.rows import BASELINE, UNREGULARIZED

    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    best: dict[str, optuna.trial.FrozenTrial] = {}
    trials = slots(study.get_trials(deepcopy=False))
    custom = any(t.user_attrs.get("baseline") and t.user_attrs.get("technique") != BASELINE for t in trials)
    for t in trials:
        if t.state != TrialState.COMPLETE or t.values is None:
            continue
        label = t.user_attrs.get("technique", "?")
        if t.user_attrs.get("baseline"):  # a regularized baseline (sweep.baseline=[regularizer=l2, ...]) is still the
            label = BASELINE  # baseline row: it was merged into its technique's row and the report compared nothing
        elif custom and label == BASELINE:
            label = UNREGULARIZED  # a searched unregularized trial, beside a regularized baseline
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
        extend = second_look(tracker, study.study_name, cands, parent)
        if extend:
            leaders = ", ".join(c.key for c in extend if c.key != "none")
            print(f"look 2: adding seeds to {leaders} and the baseline", file=sys.stderr)
        ran += _run(extend, config_mod.replicate_seeds(cfg), 2, study, cfg, argv, tracker, parent, storage)
    return ran


def second_look(tracker: Tracker, experiment: str, cands: list[Candidate], parent: str) -> list[Candidate]:
    """The baseline plus the inconclusive leaders after look 1 (decided from the MLflow store alone)."""
    from .report import build_rows, collect

    rows = build_rows(collect(tracker, experiment, parent))
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
    from .claims import digest, open_slots, run_slot_batches, run_slots
    from .trial import prepare, run_trial

    done = done_replicates(tracker, parent)
    first = config_mod.replicate_seeds(cfg, 1)[0]
    by_key = {c.key: c for c in cands}
    plan = digest([[c.key, c.overrides] for c in cands] + [seeds])  # a changed plan (a new best) gets new slots
    items = [{"key": c.key, "seed": s} for c in cands for s in seeds if (c.key, s) not in done]
    studies = [open_slots(storage, f"{study.study_name}.replicates.look{look}.{plan}", items)]
    total = sum(len(s.get_trials(deepcopy=False)) for s in studies)
    counter: list[int] = []

    def announce(key: str, seed: int, how: str = "") -> None:
        counter.append(seed)
        print(f"replicate {len(counter)}/{total}: {key} seed={seed}{how}", file=sys.stderr)

    def job(item: dict[str, Any], claim: optuna.Trial) -> float | None:
        cand, seed = by_key[item["key"]], int(item["seed"])
        announce(cand.key, seed)
        rep_cfg = config_mod.load_with(argv, [*cand.overrides, f"seed={seed}"])
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
            tags=tags(cand, seed),
        )
        return float(result.metrics["test_acc"]) if result.status == "completed" else None

    def tags(cand: Candidate, seed: int) -> dict[str, Any]:
        return {
            "role": "replicate",
            "study": study.study_name,
            "replicate_of": cand.key,
            "seed": seed,
            "look": look,
            "overrides": " ".join(cand.overrides),
            "source_trial": "" if cand.source_trial is None else cand.source_trial,
        }

    retries = int(cfg.sweep.max_retry)
    size = population_size.resolve(cfg)
    if size > 1:  # the seeds of a configuration (and others that share its shapes) train together
        batch = _population_job(job, announce, by_key, argv, tracker, parent, study.study_name, first, tags)
        return run_slot_batches(studies, storage, batch, size, retries)
    return run_slots(studies, storage, job, retries)


def _population_job(
    job, announce, by_key: dict[str, Candidate], argv: list[str], tracker: Tracker, parent: str, name: str, first: int, tags
):
    """A batch of replicate slots trained as populations; what cannot be vectorized runs through ``job`` alone."""

    def batch(items: list[tuple[dict[str, Any], optuna.Trial]]) -> list[float | None]:
        from .population import Population, new_member, population_key, train_until_done, vectorizable
        from .trial import data_order_seed, open_run, prepare

        results: list[float | None] = [None] * len(items)
        pops: dict[tuple, Population] = {}
        opened: list[_Opened] = []
        try:
            for i, (item, claim) in enumerate(items):
                cand, seed = by_key[item["key"]], int(item["seed"])
                cfg = config_mod.load_with(argv, [*cand.overrides, f"seed={seed}"])
                prepared = prepare(cfg)
                if vectorizable(cfg, prepared.regularizers) is not None:
                    results[i] = job(item, claim)
                    continue
                announce(cand.key, seed, " (in a population)")
                s = prepared.splits
                epochs = config_mod.max_epochs(cfg)
                member = new_member(i, cfg, prepared.regularizers, s.input_shape, s.n_classes, epochs, data_order_seed(cfg))
                run_id = open_run(tracker, cfg, prepared, f"{name}-{cand.key}-seed{seed}", parent, tags(cand, seed))
                claim.set_user_attr("mlflow_run_id", run_id)
                key = population_key(cfg)
                if key not in pops:
                    pops[key] = Population(s, int(cfg.data.batch_size), cfg.model.activation, population_size.device(cfg))
                pop = pops[key]
                pop.add(member)
                opened.append(_Opened(i, member, pop, run_id, seed == first))
            for o in opened:
                o.size = sum(x.population is o.population for x in opened)
            for pop in pops.values():
                train_until_done(pop)
            while opened:
                results[opened[0].index] = _close(tracker, opened[0])
                opened.pop(0)
        except KeyboardInterrupt:
            for o in opened:
                tracker.end_run(o.run_id, "KILLED")
            raise
        return results

    return batch


@dataclass
class _Opened:
    index: int
    member: Any
    population: Any
    run_id: str
    keep_model: bool
    size: int = 1  # members trained together


def _close(tracker: Tracker, o: _Opened) -> float | None:
    """A trained replicate member's run, as the one-model path leaves it: epoch curves, final metrics, model."""
    from .trial import EPOCH_METRICS, close_run, final_metrics

    m, pop = o.member, o.population
    ts = int(time.time() * 1000)
    curves = [Metric(k, float(v), ts, epoch) for epoch, h in enumerate(m.history) for k, v in h.items() if k in EPOCH_METRICS]
    if m.status not in ("completed", "stopped"):
        close_run(tracker, o.run_id, "failed", "FAILED", m.reason, {"epochs_trained": len(m.history)}, len(m.history), curves)
        return None
    model = pop.model_of(m)
    metrics = final_metrics(model, pop.splits, pop.device, m.history, m.stopped_early, m.best_epoch, sum(m.epoch_seconds), True)
    metrics["population_size"] = float(o.size)
    if o.keep_model:  # the first seed of each configuration keeps its model
        tracker.set_tags(o.run_id, {"model_uri": tracker.log_model(o.run_id, model, pop.splits.x_test[:2])})
    close_run(tracker, o.run_id, "completed", "FINISHED", None, metrics, len(m.history), curves)
    return float(metrics["test_acc"])
