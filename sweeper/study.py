"""The Optuna side of a sweep: storage, sampler, pruner, trial slots, workers, resume and retries.

A study of ``n_trials`` is created once with ``n_trials`` WAITING trial slots (the first one is
the unregularized baseline). Every worker, in this process, in ``workers=N`` child processes or
on other machines, pops WAITING slots until none are left, so the total is exact however many
workers join and however often the command is re-run. A running trial sends heartbeats; a
worker that dies (SIGKILL) leaves a trial that goes stale, is marked FAIL, has its MLflow run
closed FAILED and is re-queued (Optuna's RetryHeartbeatStaleTrialCallback, bounded retries).
Ctrl-C marks the running trial FAIL (and its MLflow run KILLED) and re-queues it for the resume.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import warnings
from typing import Any

import lightning.pytorch as pl
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from . import config as config_mod
from .errors import ConfigError
from .masking import mask
from .search_space import SearchParam, format_override, signature
from .tracking import Tracker, TrackingUnavailable, close_runs

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2")
SLOT = "sweeper_slot"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


# --- storage ------------------------------------------------------------------------------------
def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    return {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}


def check_storage(url: str) -> None:
    """Refuse unsupported schemes and unreachable databases within ~10 s; never prints the password."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError("storage", mask(url), f"not a database URL; supported schemes: {', '.join(SUPPORTED_SCHEMES)}") from None
    if parsed.drivername not in SUPPORTED_SCHEMES:
        raise ConfigError("storage", mask(url), f"unsupported scheme {parsed.drivername!r}; supported: {', '.join(SUPPORTED_SCHEMES)}")
    if parsed.drivername == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = os.path.dirname(os.path.abspath(parsed.database))
            if not os.path.isdir(folder) and not os.access(os.path.dirname(folder) or ".", os.W_OK):
                raise ConfigError("storage", url, f"folder {folder} does not exist and cannot be created")
        return
    engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    try:
        with engine.connect():
            pass
    except Exception as exc:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise ConfigError("storage", mask(url), f"cannot connect to {parsed.host}:{parsed.port or 5432}: {mask(first)}") from None
    finally:
        engine.dispose()


def _sqlite_dir(url: str) -> None:
    if url.startswith("sqlite:///") and ":memory:" not in url:
        os.makedirs(os.path.dirname(url[len("sqlite:///"):]) or ".", exist_ok=True)


class StaleTrialHandler:
    """A worker died mid-trial: close its MLflow run FAILED, then re-queue the trial (bounded)."""

    def __init__(self, tracker: Tracker | None, max_retry: int):
        self.tracker = tracker
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if self.tracker is not None and run_id:
            close_runs(self.tracker, [run_id], "FAILED", "worker stopped sending heartbeats (killed or lost)")
        self.retry(study, trial)


def make_storage(url: str, sweep: Any, tracker: Tracker | None) -> RDBStorage:
    """Optuna's RDB storage with heartbeats. Workers that start together on an empty database race to
    create its tables (the loser gets a unique-violation error), so creation is retried a few times."""
    import random

    from sqlalchemy.exc import SQLAlchemyError

    _sqlite_dir(url)
    for attempt in range(5):
        try:
            return RDBStorage(url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=int(sweep.heartbeat_interval),
                              grace_period=int(sweep.grace_period),
                              heartbeat_stale_trial_callback=StaleTrialHandler(tracker, int(sweep.max_retry)))
        except SQLAlchemyError:
            if attempt == 4:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


# --- sampler and pruner --------------------------------------------------------------------------
def make_sampler(sweep: Any, space: dict[str, SearchParam], multi: bool) -> optuna.samplers.BaseSampler:
    s = sweep.sampler
    seed = s.seed
    if s.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials, multivariate=True,
                                          group=True, constant_liar=True)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "grid":
        grid = {}
        for p in space.values():
            d = p.distribution
            grid[p.name] = list(d.choices) if hasattr(d, "choices") else \
                [d.low + i * d.step for i in range(int(round((d.high - d.low) / d.step)) + 1)]
        return optuna.samplers.GridSampler(grid, seed=seed)
    if s.name == "cmaes":
        if multi:
            raise ConfigError("sweep.sampler.name", s.name, "cmaes is single-objective; use tpe or nsga2")
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=s.n_startup_trials,
                                            warn_independent_sampling=False)
    if s.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=s.n_startup_trials)
    return optuna.samplers.NSGAIISampler(seed=seed)


def make_pruner(sweep: Any, max_epochs: int) -> optuna.pruners.BasePruner:
    p = sweep.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(p.n_startup_trials, p.n_warmup_steps, p.interval_steps)
    if p.name == "percentile":
        return optuna.pruners.PercentilePruner(p.percentile, p.n_startup_trials, p.n_warmup_steps, p.interval_steps)
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_resource, reduction_factor=p.reduction_factor)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource, max_resource=max_epochs,
                                              reduction_factor=p.reduction_factor)
    return optuna.pruners.NopPruner()


def pruning_monitor(cfg: DictConfig) -> str | None:
    """The per-epoch metric the pruner watches, or None when pruning cannot apply."""
    objs = config_mod.objectives(cfg.sweep)
    if cfg.sweep.pruner.name == "none" or len(objs) > 1 or objs[0][0] not in config_mod.EPOCH_METRICS:
        return None
    return objs[0][0]


# --- slots ------------------------------------------------------------------------------------------
def slots(trials: list) -> list:
    """The study's logical trials: a trial replaced by its retry does not count twice."""
    replaced = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t for t in trials if t.number not in replaced]


def counts(trials: list) -> dict[str, int]:
    out = {s.name.lower(): 0 for s in TrialState}
    for t in slots(trials):
        out[t.state.name.lower()] += 1
    return out


def _study_signature(cfg: DictConfig, space: dict[str, SearchParam]) -> dict:
    return {"space": signature(space), "objectives": config_mod.objectives(cfg.sweep)}


def _pop_waiting(study: optuna.Study) -> optuna.Trial | None:
    """Like Study.ask() but never creates a trial: the slot count stays exact with many workers."""
    study._thread_local.cached_all_trials = None
    trial_id = study._pop_waiting_trial_id()
    return None if trial_id is None else optuna.Trial(study, trial_id)


# --- opening a study ----------------------------------------------------------------------------------
def open_study(cfg: DictConfig, space: dict[str, SearchParam], url: str, tracker: Tracker,
               storage: RDBStorage) -> tuple[optuna.Study, str]:
    """Create the study (slots, parent run) or join an existing one; refuse a changed space/direction."""
    sw = cfg.sweep
    name = sw.study_name or sw.name
    objs = config_mod.objectives(sw)
    directions = [d for _, d in objs]
    sampler = make_sampler(sw, space, len(objs) > 1)
    pruner = make_pruner(sw, cfg.trainer.max_epochs)
    sig = _study_signature(cfg, space)
    try:
        existing = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        existing = None
    if existing is not None:
        stored = existing.user_attrs.get("sweeper_signature")
        old_dirs = [d.name.lower() for d in existing.directions]
        if old_dirs != directions or (stored is not None and _normalize(stored) != _normalize(sig)):
            what = "direction" if old_dirs != directions else "search space or objective"
            raise ConfigError("sweep.study_name", name, f"a study with this name already exists in {mask(url)} with a "
                              f"different {what}; start a new one with sweep.study_name={name}_v2 (or delete the old study)")
        study = existing
    else:
        try:
            study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                        directions=directions)
            study.set_user_attr("sweeper_signature", sig)
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it a moment ago
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    parent = _ensure_setup(study, cfg, space, tracker, url)
    _close_orphan_runs(study, tracker)
    return study, parent


def _close_orphan_runs(study: optuna.Study, tracker: Tracker) -> None:
    """A trial that failed while the tracking server was down can leave its MLflow run RUNNING
    (found by the run's trial_number tag, even if the trial never learned the run id)."""
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    running = tracker.search_runs("attributes.status = 'RUNNING' and tags.role = 'trial'")
    orphans = [r.info.run_id for r in running
               if states.get(int(r.data.tags.get("trial_number", -1))) not in (None, TrialState.RUNNING)]
    if orphans:
        close_runs(tracker, orphans, "FAILED", "trial ended while its worker had no tracking server")


def _normalize(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, sort_keys=True, default=list))


def _ensure_setup(study: optuna.Study, cfg: DictConfig, space: dict[str, SearchParam], tracker: Tracker,
                  url: str) -> str:
    """Parent MLflow run and the trial slots; the creator does it, joiners wait for it (idempotent)."""
    deadline = time.monotonic() + 30
    while "sweeper_ready" not in study.user_attrs and time.monotonic() < deadline:
        if "sweeper_setup_by" not in study.user_attrs:
            study.set_user_attr("sweeper_setup_by", f"{os.uname().nodename}:{os.getpid()}")
            break
        time.sleep(0.5)
    attrs = study.user_attrs
    parent = attrs.get("mlflow_parent_run_id")
    if not parent:
        sw = cfg.sweep
        params = config_mod.flatten(OmegaConf.to_container(sw, resolve=True), "sweep")
        params.pop("sweep.n_trials")  # params are immutable; n_trials may grow on a later run (tag below)
        params.update(config_mod.flat_params(cfg))
        parent = tracker.start_run(study.study_name, params=params,
                                   tags={"role": "study", "study": study.study_name, "optuna_storage": mask(url),
                                         "sampler": sw.sampler.name, "pruner": sw.pruner.name})
        study.set_user_attr("mlflow_parent_run_id", parent)
    tracker.set_tags(parent, {"n_trials": config_mod.n_trials(cfg.sweep),
                              "objectives": json.dumps(config_mod.objectives(cfg.sweep)),
                              "searched_params": json.dumps(list(space)),
                              "axis": cfg.sweep.axis or "", "alpha": cfg.sweep.alpha})
    _top_up_slots(study, cfg.sweep)
    study.set_user_attr("sweeper_ready", True)
    return parent


def _top_up_slots(study: optuna.Study, sweep: Any) -> None:
    """Queue the missing slots: slot 0 is the baseline; in a compare sweep each later slot is pinned
    to one technique, round-robin, so every technique gets the same budget even if the study stops early."""
    n_trials = config_mod.n_trials(sweep)
    with_baseline = sweep.baseline is not None
    have = slots(study.get_trials(deepcopy=False))
    if len(have) > n_trials:
        print(f"note: study {study.study_name} already has {len(have)} trials; sweep.n_trials={n_trials} "
              f"does not remove any", file=sys.stderr)
    techniques = list(sweep.techniques or [])
    for i in range(len(have), n_trials):
        baseline = with_baseline and i == 0
        system_attrs: dict[str, Any] = {SLOT: i}
        if techniques and not baseline:
            system_attrs["fixed_params"] = {"regularizer": techniques[(i - with_baseline) % len(techniques)]}
        study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs=system_attrs,
                                                  user_attrs={"baseline": True} if baseline else {}))


# --- running trials ------------------------------------------------------------------------------------
class Heartbeat:
    """Records a running trial's heartbeat every interval from a daemon thread."""

    def __init__(self, storage: RDBStorage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:
                pass

    def __enter__(self):
        self.storage.record_heartbeat(self.trial_id)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _suggest(trial: optuna.Trial, p: SearchParam) -> Any:
    d = p.distribution
    if isinstance(d, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(p.name, d.choices)
    if isinstance(d, optuna.distributions.IntDistribution):
        return trial.suggest_int(p.name, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_float(p.name, d.low, d.high, step=d.step, log=d.log)


def suggest(trial: optuna.Trial, space: dict[str, SearchParam]) -> list[str]:
    """Ask Optuna for every applicable parameter; returns them as Hydra overrides (groups first)."""
    chosen: dict[str, Any] = {}
    for p in space.values():
        if p.applies(chosen):
            chosen[p.name] = _suggest(trial, p)
    groups = [format_override(k, v) for k, v in chosen.items() if k in config_mod.GROUPS]
    return groups + [format_override(k, v) for k, v in chosen.items() if k not in config_mod.GROUPS]


class ReportOnly(pl.Callback):
    """Reports the per-epoch metric to Optuna like the pruning callback, but never prunes."""

    def __init__(self, trial: optuna.Trial, monitor: str):
        self.trial, self.monitor = trial, monitor

    def on_validation_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not trainer.sanity_checking:
            self.trial.report(float(value), step=pl_module.current_epoch)


class Worker:
    """Pops trial slots of one study until none are waiting or running, and runs each as a Lightning trial."""

    def __init__(self, argv: list[str], cfg: DictConfig, space: dict[str, SearchParam], url: str,
                 tracker: Tracker, study: optuna.Study, storage: RDBStorage, parent_run_id: str):
        self.argv, self.cfg, self.space, self.url = argv, cfg, space, url
        self.tracker, self.study, self.storage, self.parent = tracker, study, storage, parent_run_id
        self.monitor = pruning_monitor(cfg)
        self.objectives = config_mod.objectives(cfg.sweep)

    def run(self) -> None:
        poll = max(1.0, self.cfg.sweep.heartbeat_interval / 2)
        # This loop plays Study.optimize's role: samplers may call study.stop() (GridSampler does when
        # the grid is used up), which Optuna only allows inside optimize. Our loop ends on empty slots.
        self.study._thread_local.in_optimize_loop = True
        while True:
            fail_stale_trials(self.study)
            trial = _pop_waiting(self.study)
            if trial is None:
                running = [t for t in slots(self.study.get_trials(deepcopy=False)) if t.state == TrialState.RUNNING]
                if not running:
                    return
                time.sleep(poll)  # another worker may die; its trial would come back to the queue
                continue
            self.run_one(trial)

    def run_one(self, trial: optuna.Trial) -> None:
        """Run a popped slot; Ctrl-C anywhere marks it FAIL and re-queues it for the next run."""
        try:
            with Heartbeat(self.storage, trial._trial_id, self.cfg.sweep.heartbeat_interval):
                self._run_one(trial)
        except (KeyboardInterrupt, TrackingUnavailable) as exc:
            reason = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else "tracking server lost"
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish the bookkeeping even on a second Ctrl-C
            try:
                trial.set_user_attr("fail_reason", f"{reason}; re-queued for the next run")
                frozen = self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                if frozen.state == TrialState.FAIL:
                    RetryHeartbeatStaleTrialCallback(max_retry=self.cfg.sweep.max_retry)(self.study, frozen)
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)
            raise

    def _run_one(self, trial: optuna.Trial) -> None:
        from optuna_integration import PyTorchLightningPruningCallback

        from .trial import prepare, run_trial

        baseline = bool(trial.user_attrs.get("baseline"))
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        try:
            overrides = list(self.cfg.sweep.baseline or []) if baseline else suggest(trial, self.space)
            trial_cfg = config_mod.load(self.argv + overrides)
            prepared = prepare(trial_cfg)
        except ConfigError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            self.study.tell(trial, state=TrialState.FAIL)
            return
        callbacks = []
        if self.monitor:  # the baseline reports its curve (a reference for the pruner) but is never pruned
            callbacks.append(ReportOnly(trial, self.monitor) if baseline
                             else PyTorchLightningPruningCallback(trial, monitor=self.monitor))
        name = self.study.study_name
        trial.set_user_attr("technique", prepared.technique)
        trial.set_user_attr("overrides", overrides)
        result = run_trial(trial_cfg, self.tracker, prepared=prepared, run_name=f"{name}-trial-{trial.number}",
                           parent_run_id=self.parent, callbacks=callbacks,
                           tags={"study": name, "trial_number": trial.number, "role": "trial",
                                 "baseline": baseline, "optuna_trial_id": trial._trial_id,
                                 "searched": json.dumps(trial.params),
                                 **({"axis_value": trial.params.get(self.cfg.sweep.axis)} if self.cfg.sweep.axis else {})},
                           on_run_created=lambda rid: trial.set_user_attr("mlflow_run_id", rid),
                           evaluate_test=False)  # search trials never see the test split
        trial.set_user_attr("epochs_trained", len(result.history))
        if result.status == "completed":
            missing = [m for m, _ in self.objectives if m not in result.metrics]
            if missing:  # cannot happen for validated metric names; guards against silent NaN objectives
                self.study.tell(trial, state=TrialState.FAIL)
                raise ConfigError("sweep.metric", missing[0], "the first trial did not produce it")
            values = [float(result.metrics[m]) for m, _ in self.objectives]
            for key in ("best_val_acc", "train_time_s", "sparsity_zero"):
                trial.set_user_attr(key, result.metrics.get(key))
            self.study.tell(trial, values if len(values) > 1 else values[0])
        elif result.status == "pruned":
            trial.set_user_attr("pruned_epoch", len(result.history))
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            trial.set_user_attr("fail_reason", result.reason)
            self.study.tell(trial, state=TrialState.FAIL)


# --- processes ------------------------------------------------------------------------------------------
def _context(cfg: DictConfig, argv: list[str]):
    """Everything a worker needs, rebuilt from argv in every process (workers share no memory)."""
    space = config_mod.validate_sweep(cfg)
    url = config_mod.storage_url(cfg)
    tracker = Tracker(config_mod.tracking_uri(cfg), cfg.sweep.study_name or cfg.sweep.name, cfg.tracking.artifact_root)
    storage = make_storage(url, cfg.sweep, tracker)
    return space, url, tracker, storage


def worker_process(argv: list[str], threads: int) -> None:
    """Entry point of a `workers=N` child process (spawned, so it starts with fresh torch state)."""
    import torch

    torch.set_num_threads(threads)
    cfg = config_mod.load(argv)
    space, url, tracker, storage = _context(cfg, argv)
    study, parent = open_study(cfg, space, url, tracker, storage)
    try:
        Worker(argv, cfg, space, url, tracker, study, storage, parent).run()
    except KeyboardInterrupt:
        sys.exit(130)
    except TrackingUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(3)


def run_study(cfg: DictConfig, argv: list[str]) -> int:
    url = config_mod.storage_url(cfg)
    check_storage(url)
    config_mod.check_tracking_server(cfg)
    try:
        return _run_study(cfg, argv)
    except TrackingUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


def _run_study(cfg: DictConfig, argv: list[str]) -> int:
    from .progress import Progress, finalize

    space, url, tracker, storage = _context(cfg, argv)
    study, parent = open_study(cfg, space, url, tracker, storage)
    tracker.client.update_run(parent, status="RUNNING")
    n_workers = int(cfg.workers)
    progress = Progress(study, config_mod.n_trials(cfg.sweep))
    worker_argv = [a for a in argv if not a.startswith("workers=")]
    children: list[mp.Process] = []
    try:
        with progress:
            if n_workers == 1:
                Worker(worker_argv, cfg, space, url, tracker, study, storage, parent).run()
            else:
                threads = cfg.trainer.threads or max(1, (os.cpu_count() or 1) // n_workers)
                ctx = mp.get_context("spawn")
                children = [ctx.Process(target=worker_process, args=(worker_argv, threads), daemon=False)
                            for _ in range(n_workers)]
                for c in children:
                    c.start()
                for c in children:
                    c.join()
    except KeyboardInterrupt:
        for c in children:
            if c.is_alive():
                os.kill(c.pid, signal.SIGINT)
        for c in children:
            c.join(timeout=60)
        tracker.end_run(parent, "KILLED")
        print(f"interrupted: study {study.study_name} can be resumed by running the same command", file=sys.stderr)
        return 130
    return finalize(study, cfg, tracker, parent, worker_argv)
