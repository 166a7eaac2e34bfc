"""A sweep, top to bottom: check the stores -> open or join the study -> run workers -> (when every
slot is finished) study summary and plots -> replication -> report -> model registry."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import optuna
from omegaconf import DictConfig, read_write

from . import config as config_mod
from . import population_size, runtime, stores
from .errors import StoreUnavailable, write_failure
from .masking import mask
from .population_worker import worker_class
from .progress import Progress, table
from .study import close_deleted, counts, deleted, open_study
from .worker import StudyContext, run_workers, study_context, worker_plan


def run_sweep(cfg: DictConfig, argv: list[str]) -> int:
    """Exit status: 0 done (or other workers still finishing), 130 interrupted (143 by SIGTERM), 3 tracking server lost.
    Bad storage, tracking or population settings raise ConfigError before anything is written."""
    config_mod.check_fixed_configs(cfg, argv)
    stores.check_separate_stores(cfg)
    stores.check_storage(stores.storage_url(cfg))
    stores.check_report_folder("sweep.report_dir", Path(cfg.sweep.report_dir), cfg.sweep.study_name or cfg.sweep.name)
    try:
        stores.check_tracking(cfg)
        _check_model_fits(cfg)
        argv = _resolve_population(cfg, argv)
        _note_experiment_variable(cfg)
        return _sweep(cfg, argv)
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except Exception as exc:  # an Optuna storage write that failed (StorageInternalError wraps the SQLite error)
        reason = write_failure(exc)
        if reason is None:
            raise
        print(
            f"error: Optuna storage {mask(stores.storage_url(cfg))} cannot be written ({reason}); fix it and re-run the "
            "same command: the study resumes where it stopped",
            file=sys.stderr,
        )
        return 3


def _note_experiment_variable(cfg: DictConfig) -> None:
    """$MLFLOW_EXPERIMENT_NAME names one run's experiment; a sweep's is its study name. Said once, so runs found in
    another experiment than the variable names are not a surprise."""
    env, study = os.environ.get("MLFLOW_EXPERIMENT_NAME"), cfg.sweep.study_name or cfg.sweep.name
    if env and env != study:
        note = f"note: MLFLOW_EXPERIMENT_NAME={env} is for single runs; this sweep's MLflow experiment is its study name, {study}"
        print(note, file=sys.stderr)


def _check_model_fits(cfg: DictConfig) -> None:
    """The sweep's model must fit in memory before a study is made for it (ConfigError, exit 2, nothing written)."""
    from .data import load_splits

    splits = load_splits(cfg.data)
    population_size.check_model_fits(cfg, splits.input_shape, splits.n_classes)


def _resolve_population(cfg: DictConfig, argv: list[str]) -> list[str]:
    """Fix ``sweep.population`` to a number for this host (``auto`` depends on its device and memory) in the config
    and in the arguments the workers are started with."""
    workers = 1 if cfg.launcher.name == "slurm" else len(worker_plan(cfg))  # slurm: one worker per array task
    asked = cfg.sweep.population
    with read_write(cfg.sweep):
        cfg.sweep.population = population_size.resolve(cfg, workers)
    if asked == "auto":
        alone = population_size.own_time_objective(cfg)
        print(
            f"sweep.population=auto: {cfg.sweep.population} trial(s) at once per worker on {population_size.device(cfg)}"
            + (f" ({alone})" if alone else "")
        )
    kept = [a for a in argv if not a.lstrip("+").startswith("sweep.population=")]
    return [*kept, f"sweep.population={cfg.sweep.population}"]


def _sweep(cfg: DictConfig, argv: list[str]) -> int:
    # 1. open or join the study (its trial slots and its parent MLflow run)
    ctx = study_context(cfg)
    study, parent = open_study(cfg, ctx.space, ctx.url, ctx.tracker, ctx.storage)
    ctx.tracker.mark_running(parent)
    try:
        return _run_and_report(cfg, argv, ctx, study, parent)
    except KeyError:  # Optuna's "Record does not exist.": the study was deleted while it ran
        if not deleted(ctx.storage, study.study_name):
            raise
        print(close_deleted(study, ctx.tracker, parent, ctx.url), file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # while training, or later (summary, replication, report): the parent run is KILLED
        ctx.tracker.end_run(parent, "KILLED")
        print(
            f"interrupted ({runtime.interrupted_by()}): study {study.study_name} can be resumed by running the same command",
            file=sys.stderr,
        )
        return runtime.interrupt_status()


def _run_and_report(cfg: DictConfig, argv: list[str], ctx: StudyContext, study: optuna.Study, parent: str) -> int:
    # 2. workers take slots until none are left; the bar follows every worker through the storage
    tracker = ctx.tracker
    worker_argv = [a for a in argv if not a.startswith("workers=")]
    with Progress(study, config_mod.n_trials(cfg.sweep)), tracker.system_metrics(parent, cfg.tracking.system_metrics_interval):
        if cfg.launcher.name == "slurm":  # a job array of workers on the cluster; this process waits
            from .launchers import run_slurm

            run_slurm(cfg, worker_argv, worker_class(cfg))
        else:
            run_workers(cfg, worker_argv, ctx, study, parent, worker_class(cfg))

    # 3. the final table; the rest waits until every slot is finished (another worker may still run one)
    c = counts(study.get_trials(deepcopy=False))
    pending = c["waiting"] + c["running"]
    print(
        f"\nstudy {study.study_name}: {c['complete']} completed, {c['pruned']} pruned, {c['fail']} failed"
        + (f", {pending} still pending" if pending else "")
    )
    print(table(study, cfg))
    if c["complete"] == 0:
        print("no trial completed: nothing to compare", file=sys.stderr)
    if pending:
        return 0

    # 4. study summary and Optuna's plots on the parent run
    from .study_summary import record_study

    made = record_study(study, cfg, tracker, parent, c)
    print(f"parent run {parent} in experiment {tracker.experiment_name!r}: plots {', '.join(made) or 'none'}")
    if c["complete"]:
        from .costs import measure_costs
        from .registry import register_recommended
        from .replicate import candidates, replicate
        from .report import print_table, write_report

        # 5. replication over fresh seeds, 6. interleaved cost timings, 7. the report, 8. the registered model
        if not cfg.sweep.replicates and not cfg.sweep.axis:
            print("replication is off (sweep.replicates=0): the report shows the search's validation results only")
        t0 = time.perf_counter()
        n_rep = replicate(study, cfg, worker_argv, tracker, parent, ctx.storage)
        if cfg.sweep.replicates and not cfg.sweep.axis:
            configs = {c.key: c.overrides for c in candidates(study, cfg)}
            measure_costs(cfg, worker_argv, configs, tracker, parent, study.study_name, ctx.storage)
        t1 = time.perf_counter()
        report = write_report(tracker, study.study_name, cfg.sweep.report_dir, parent_id=parent)
        t2 = time.perf_counter()
        tracker.log_metrics(parent, {"replication_s": t1 - t0, "report_s": t2 - t1})
        print()
        print_table(report.rows, report.axis_rows, report.recommendations, report.search, report.across)
        registered = register_recommended(tracker, report, study.study_name, ctx.storage)
        if registered:
            print(f"registered model: {registered}")
        elif report.at_chance:
            print("no model registered: every replicated configuration is at chance level (see the warning above)")
        print(f"report: {report.folder / 'report.html'}  ({n_rep} replicate runs in {t1 - t0:.1f} s, report in {t2 - t1:.1f} s)")
    tracker.end_run(parent, "FINISHED")
    return 0
