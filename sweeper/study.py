"""Open or join one Optuna study: sampler, pruner, the exact trial slots, and the study's parent MLflow run.

A study of ``n_trials`` is created once with ``n_trials`` WAITING trial slots (slot 0 is the
unregularized baseline). Every worker, in this process, in ``workers=N`` child processes or on
other machines, pops those slots until none are left (``worker.py``), so the total is exact however
many workers join and however often the command is re-run. A later run with a larger
``sweep.n_trials`` tops the slots up; a changed search space, direction or trial setting is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from . import config as config_mod
from .errors import ConfigError
from .masking import mask
from .search_space import SearchParam, signature
from .seeded_sampler import TrialSeededSampler
from .tracking import Tracker, close_runs

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


# --- sampler and pruner --------------------------------------------------------------------------
def _grid_values(d: Any) -> list[Any]:
    """Every value of a grid axis: the choices, or low, low + step, ..., high."""
    if hasattr(d, "choices"):
        return list(d.choices)
    return [d.low + i * d.step for i in range(int(round((d.high - d.low) / d.step)) + 1)]


def make_sampler(sweep: Any, space: dict[str, SearchParam], multi: bool) -> optuna.samplers.BaseSampler:
    """The configured sampler; with a seed, seeded per trial (``seeded_sampler``: workers must not draw alike). The
    grid sampler is not: its seed fixes the grid's order, which every worker must share (it hands out grid points by
    trial number, so its workers do not draw alike anyway)."""
    s = sweep.sampler
    if s.name == "cmaes" and multi:
        raise ConfigError("sweep.sampler.name", s.name, "cmaes is single-objective; use tpe or nsga2")
    grid = {p.name: _grid_values(p.distribution) for p in space.values()} if s.name == "grid" else {}

    def make(seed: int | None) -> optuna.samplers.BaseSampler:
        if s.name == "tpe":
            # constant_liar: trials running in parallel count as bad, so workers do not sample near-duplicates
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=s.n_startup_trials, multivariate=True, group=True, constant_liar=True
            )
        if s.name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if s.name == "grid":
            return optuna.samplers.GridSampler(grid, seed=seed)
        if s.name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=s.n_startup_trials, warn_independent_sampling=False)
        if s.name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=s.n_startup_trials)
        return optuna.samplers.NSGAIISampler(seed=seed)

    if s.seed is None or s.name == "grid":  # the grid's seed shuffles the grid: every worker needs the same order
        return make(s.seed)
    return TrialSeededSampler(make, int(s.seed))


def make_pruner(sweep: Any, max_epochs: int) -> optuna.pruners.BasePruner:
    p = sweep.pruner
    warmup = p.n_warmup_steps if p.warmup_fraction is None else math.ceil(p.warmup_fraction * max_epochs)
    if p.name == "median":
        return optuna.pruners.MedianPruner(p.n_startup_trials, warmup, p.interval_steps)
    if p.name == "percentile":
        return optuna.pruners.PercentilePruner(p.percentile, p.n_startup_trials, warmup, p.interval_steps)
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_resource, reduction_factor=p.reduction_factor)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource, max_resource=max_epochs, reduction_factor=p.reduction_factor)
    return optuna.pruners.NopPruner()


# --- slots ------------------------------------------------------------------------------------------
def slots(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The study's logical trials: a trial replaced by its retry does not count twice."""
    replaced = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t for t in trials if t.number not in replaced]


def counts(trials: list[FrozenTrial]) -> dict[str, int]:
    out = {s.name.lower(): 0 for s in TrialState}
    for t in slots(trials):
        out[t.state.name.lower()] += 1
    return out


def _top_up_slots(study: optuna.Study, sweep: Any) -> None:
    """Queue the missing slots: slot 0 is the baseline; in a compare sweep each later slot is pinned
    to one technique, round-robin, so every technique gets the same budget even if the study stops early."""
    n_trials = config_mod.n_trials(sweep)
    with_baseline = sweep.baseline is not None
    have = slots(study.get_trials(deepcopy=False))
    if len(have) > n_trials:
        print(
            f"note: study {study.study_name} already has {len(have)} trials; sweep.n_trials={n_trials} does not remove any", file=sys.stderr
        )
    techniques = list(sweep.techniques or [])
    for i in range(len(have), n_trials):
        baseline = with_baseline and i == 0
        user_attrs = {"slot": i, **({"baseline": True} if baseline else {})}
        if techniques and not baseline:  # pinned: Optuna's public queue with fixed parameters
            study.enqueue_trial({"regularizer": techniques[(i - with_baseline) % len(techniques)]}, user_attrs=user_attrs)
        else:  # an empty slot; no fixed parameters (GridSampler refuses partially fixed ones)
            # the grid sampler gives every trial a grid point unless it has fixed params: the baseline (which
            # trains sweep.baseline, not a grid point) must not use one up, or one point would never be trained
            system_attrs: dict[str, Any] = {"fixed_params": {}} if baseline and sweep.sampler.name == "grid" else {}
            study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=user_attrs, system_attrs=system_attrs))


# --- opening a study ----------------------------------------------------------------------------------
def _study_signature(cfg: DictConfig, space: dict[str, SearchParam]) -> dict[str, Any]:
    return {"space": signature(space), "objectives": config_mod.objectives(cfg.sweep)}


# Settings that do not change what a trial trains: where things are and how the work is run (a worker on another
# host may keep its data elsewhere, run on a GPU, or use another population size). Everything else in data, model,
# regularizer, optim, trainer and seed, and the sweep's baseline, must match for a trial to join a study.
NOT_RESULTS = frozenset(
    [
        "data.root",
        "data.path",
        "data.download",
        "data.eval_batch_size",
        "trainer.accelerator",
        "trainer.devices",
        "trainer.threads",
        "trainer.deterministic",
        "trainer.checkpoint_every",
    ]
)
RESULT_GROUPS = ("data", "model", "regularizer", "optim", "trainer")


def trial_settings(cfg: DictConfig, space: dict[str, SearchParam]) -> dict[str, Any]:
    """The fixed settings every trial of the study trains with (flattened ``key: value``; searched keys, and the
    whole group when a config group is searched, left out). A resumed study, or a worker joining it, with other
    values would mix trials trained differently in one ranking, e.g. trials of 2 epochs against a baseline of 1."""
    flat: dict[str, Any] = {"seed": int(cfg.seed), "sweep.baseline": list(cfg.sweep.baseline or [])}
    for group in RESULT_GROUPS:
        if group not in space:
            flat.update(config_mod.flatten(config_mod.to_dict(cfg[group]), group))
    return _normalize({k: v for k, v in flat.items() if k not in space and k not in NOT_RESULTS})


def data_file_digest(cfg: DictConfig) -> str | None:
    """A csv's content hash, the data identity a resumed study is checked against: ``data.path`` itself is left out
    of the settings (each worker machine may keep its copy elsewhere), so a file edited or replaced between runs
    mixed trials trained on different data in one ranking. None for the named datasets (their name is their data)."""
    if cfg.data.name != "csv" or not cfg.data.path:
        return None
    h = hashlib.sha1()
    with open(cfg.data.path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _check_same_data(existing: optuna.Study, cfg: DictConfig, url: str, now: str | None) -> None:
    """``now``: ``data_file_digest(cfg)``, computed once by the caller (it reads the whole file)."""
    stored = existing.user_attrs.get("sweeper_data_file")
    if stored is None:
        if now is not None:  # a study from before the check records its file now
            existing.set_user_attr("sweeper_data_file", now)
        return
    if now is None or stored == now:
        return
    name = existing.study_name
    raise ConfigError(
        "data.path",
        cfg.data.path,
        f"its content is not that of the file study {name!r} in {mask(url)} was run on (sha1 {now}, the study's {stored}): "
        f"its trials would not be comparable; resume it with that file, or start a new one with sweep.study_name={name}_v2",
    )


def _check_same_settings(existing: optuna.Study, cfg: DictConfig, space: dict[str, SearchParam], url: str) -> None:
    stored = existing.user_attrs.get("sweeper_settings")
    now = trial_settings(cfg, space)
    if stored is None:  # a study from before settings were recorded: they are recorded now
        existing.set_user_attr("sweeper_settings", now)
        return
    for key in sorted(set(stored) | set(now)):
        if stored.get(key) != now.get(key):
            name = existing.study_name
            raise ConfigError(
                key,
                now.get(key),
                f"study {name!r} in {mask(url)} was run with {key}={json.dumps(stored.get(key))}: its trials would not be "
                f"comparable; resume it with the same settings, or start a new one with sweep.study_name={name}_v2",
            )


def _normalize(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=list))


def open_study(
    cfg: DictConfig, space: dict[str, SearchParam], url: str, tracker: Tracker, storage: optuna.storages.BaseStorage
) -> tuple[optuna.Study, str]:
    """Create the study (slots, parent run) or join an existing one; refuse a changed space/direction.
    Returns the study and its parent MLflow run id."""
    sw = cfg.sweep
    name = sw.study_name or sw.name
    objs = config_mod.objectives(sw)
    directions: list[Any] = [d for _, d in objs]  # "maximize" / "minimize"
    sampler = make_sampler(sw, space, len(objs) > 1)
    pruner = make_pruner(sw, cfg.trainer.max_epochs)
    sig = _study_signature(cfg, space)
    fingerprint = data_file_digest(cfg)
    try:
        existing = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        existing = None
    if existing is not None:
        stored = existing.user_attrs.get("sweeper_signature")
        old_dirs = [d.name.lower() for d in existing.directions]
        if old_dirs != directions or (stored is not None and _normalize(stored) != _normalize(sig)):
            what = "direction" if old_dirs != directions else "search space or objective"
            raise ConfigError(
                "sweep.study_name",
                name,
                f"a study with this name already exists in {mask(url)} with a "
                f"different {what}; start a new one with sweep.study_name={name}_v2 (or delete the old study)",
            )
        _check_same_settings(existing, cfg, space, url)
        _check_same_data(existing, cfg, url, fingerprint)
        _check_parent_run(existing, tracker)
        study = existing
    else:
        tracker.experiment_id  # noqa: B018 (created now, before the study: a store that cannot be written leaves no study)
        try:
            study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner, directions=directions)
            study.set_user_attr("sweeper_signature", sig)
            study.set_user_attr("sweeper_settings", trial_settings(cfg, space))
            if fingerprint:
                study.set_user_attr("sweeper_data_file", fingerprint)
            study.set_metric_names([m for m, _ in objs])  # optuna-dashboard shows val_acc, not "Objective 0"
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it a moment ago
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    parent = _ensure_setup(study, cfg, space, tracker, url, storage)
    _close_orphan_runs(study, tracker)
    return study, parent


def _check_parent_run(study: optuna.Study, tracker: Tracker) -> None:
    """Find the study's MLflow parent run: the tracker follows it into its experiment, whatever that is called now
    (renamed in the UI, the study's name found no experiment, and a new empty one got the study's later runs while
    the report, reading the new one, found no parent run). A study whose parent run was deleted (the UI's Delete,
    ``mlflow runs delete``) cannot be resumed: every write to the run fails (MLflow: "must be in the 'active'
    state"), which was a traceback mid-setup."""
    parent = study.user_attrs.get("mlflow_parent_run_id")
    if not parent:
        return
    run = tracker.run_or_none(parent)
    stage = "purged" if run is None else run.info.lifecycle_stage
    if stage == "active":
        if run.info.experiment_id != tracker.known_experiment_id:
            tracker.follow(run.info.experiment_id)
            print(f"note: study {study.study_name}'s MLflow experiment is now named {tracker.experiment_name!r}; its runs go there")
        return
    name = study.study_name
    uri = mask(tracker.uri)
    if stage == "deleted":
        undo = f"restore it with `MLFLOW_TRACKING_URI={uri} mlflow runs restore --run-id {parent}` and re-run, or"
        raise ConfigError(
            "sweep.study_name",
            name,
            f"the study's MLflow parent run {parent} was deleted in {uri}; {undo} start a new study with sweep.study_name={name}_v2",
        )
    raise ConfigError(  # purged (``mlflow gc``), or the Optuna storage is paired with another tracking store now
        "sweep.study_name",
        name,
        f"the study's MLflow parent run {parent} is not in {uri}: it was purged, or the study ran with another tracking "
        f"store (point tracking.uri or MLFLOW_TRACKING_URI at that one); or start a new study with sweep.study_name={name}_v2",
    )


def _close_orphan_runs(study: optuna.Study, tracker: Tracker) -> None:
    """A trial that failed while the tracking server was down can leave its MLflow run RUNNING
    (found by the run's trial_number tag, even if the trial never learned the run id).

    Only a trial that had already finished when its state was read counts: a worker closes its run before it tells
    the trial, so such a run has no owner left. A WAITING trial in that read may be popped by another worker a moment
    later, and the run it opens is live (the two-worker test saw this: a second worker starting up closed the first
    worker's live run, and its late ``failed`` tag outlived the owner's ``completed``)."""
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}  # read before the runs: see above
    running = tracker.search_runs(f"attributes.status = 'RUNNING' and tags.role = 'trial' and tags.study = '{study.study_name}'")
    orphans = [r.info.run_id for r in running if states.get(int(r.data.tags.get("trial_number", -1))) in finished]
    if orphans:
        close_runs(tracker, orphans, "FAILED", "trial ended while its worker had no tracking server")


def deleted(storage: optuna.storages.BaseStorage, name: str) -> bool:
    """The study is no longer in its storage (``optuna delete-study`` while it ran): every storage call then raises
    Optuna's ``KeyError('Record does not exist.')``."""
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return True
    return False


def close_deleted(study: optuna.Study, tracker: Tracker, parent: str, url: str) -> str:
    """Close the deleted study's runs that are still RUNNING (its parent and the trials in flight) FAILED, naming
    why; returns the one-line error."""
    reason = f"its Optuna study was deleted from {mask(url)} while the sweep ran"
    running = tracker.search_runs(f"attributes.status = 'RUNNING' and tags.study = '{study.study_name}'")
    close_runs(tracker, [r.info.run_id for r in running if r.info.run_id != parent], "FAILED", reason)
    tracker.set_tags(parent, {"failure_reason": reason})
    tracker.end_run(parent, "FAILED")
    return (
        f"error: study {study.study_name} was deleted from {mask(url)} while this sweep ran (optuna delete-study?); "
        "its MLflow runs were closed FAILED; running the same command again starts the study over from trial 0"
    )


def describe(cfg: DictConfig, space: dict[str, SearchParam]) -> str:
    """The experiment's description in the MLflow UI: the study's question, objective and where the report is."""
    sw = cfg.sweep
    objective = ", ".join(f"{m} ({d})" for m, d in config_mod.objectives(sw))
    question = f"Checks the claim: {sw.claim}. " if sw.claim else ""
    return (
        f"Study `{sw.study_name or sw.name}`: which regularization helps, and how strongly? {question}"
        f"Searched: {', '.join(f'{p.name} = {p.text}' for p in space.values())}. Objective: {objective} on the validation "
        f"split; {config_mod.n_trials(sw)} trials; the baseline is `{' '.join(sw.baseline or []) or 'none'}`. "
        f"The tradeoff report is on the parent run (`role=study`) under artifacts `report/report.html`."
    )


def first_to_create(storage: optuna.storages.BaseStorage, name: str) -> bool:
    """True in exactly one of the processes that ask, however many ask at once: the one whose creation of the
    (empty) companion study ``name`` succeeded; study names are unique in a storage, so creation is atomic."""
    try:
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], name)
        return True
    except optuna.exceptions.DuplicatedStudyError:
        return False


def _ensure_setup(
    study: optuna.Study, cfg: DictConfig, space: dict[str, SearchParam], tracker: Tracker, url: str, storage: optuna.storages.BaseStorage
) -> str:
    """Parent MLflow run and the trial slots, set up by exactly one of the processes that open the study together
    (``first_to_create``: creating a companion study is atomic); the others wait for its ``sweeper_ready_slots`` mark.
    Reading an attribute and then setting it was not atomic: two workers starting together both set the study up,
    each queued slots (9 trials for sweep.n_trials=5) and each created a parent run. A setup whose process died
    before its mark is finished by the next process after 30 s."""
    n = config_mod.n_trials(cfg.sweep)
    attrs = study.user_attrs
    if not first_to_create(storage, f"{study.study_name}.setup.n{n}"):
        deadline = time.monotonic() + 30
        while attrs.get("sweeper_ready_slots") != n and time.monotonic() < deadline:
            time.sleep(0.5)
            attrs = study.user_attrs
        if attrs.get("sweeper_ready_slots") != n:
            print(f"note: the setup of study {study.study_name} did not finish within 30 s; finishing it here", file=sys.stderr)
    ready = attrs.get("sweeper_ready_slots") == n
    if not ready:
        study.set_user_attr("sweeper_setup_by", f"{os.uname().nodename}:{os.getpid()}")
    parent = attrs.get("mlflow_parent_run_id")
    if not parent:
        sw = cfg.sweep
        params = config_mod.flatten(config_mod.to_dict(sw), "sweep")
        params.pop("sweep.n_trials")  # params are immutable; n_trials may grow on a later run (tag below)
        params.update(config_mod.flat_params(cfg))
        parent = tracker.start_run(
            study.study_name,
            params=params,
            tags={
                "role": "study",
                "study": study.study_name,
                "optuna_storage": mask(url),
                "sampler": sw.sampler.name,
                "pruner": sw.pruner.name,
            },
        )
        study.set_user_attr("mlflow_parent_run_id", parent)
        tracker.describe_experiment(describe(cfg, space))
    tracker.set_tags(
        parent,
        {
            "n_trials": config_mod.n_trials(cfg.sweep),
            "objectives": json.dumps(config_mod.objectives(cfg.sweep)),
            "searched_params": json.dumps(list(space)),
            "log_params": json.dumps([p.name for p in space.values() if getattr(p.distribution, "log", False)]),
            "axis": cfg.sweep.axis or "",
            "alpha": cfg.sweep.alpha,
            "looks": config_mod.looks(cfg.sweep),
            "margin": cfg.sweep.margin,
            "claim": cfg.sweep.claim or "",
            "claim_reference": cfg.sweep.claim_reference or "",
        },
    )
    if not ready:
        _top_up_slots(study, cfg.sweep)
        study.set_user_attr("sweeper_ready_slots", n)
    return str(parent)
