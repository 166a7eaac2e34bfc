"""Sweeps end to end on real stores: states, MLflow parent/children, resume, pruning, workers, SIGKILL."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import all_runs, check_links, load_study, run_cli, start_interruptible, sweep_args
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sweeper.__main__ import main

pytestmark = pytest.mark.slow  # subprocesses, PostgreSQL, multi-worker studies


def test_four_trial_sweep_subprocess_states_and_mlflow_links(sweep_dir):
    # an interval longer than this sweep: the system metrics below are the closing sample (Tracker.system_metrics)
    # MLFLOW_LOGGING_LEVEL empty (as unset): an in-process test before this one may have set it in the environment
    args = sweep_args("dropout", "sweep.n_trials=4", "tracking.system_metrics_interval=60")
    proc = run_cli(args, cwd=sweep_dir, env={"MLFLOW_LOGGING_LEVEL": ""})
    assert proc.returncode == 0, proc.stderr
    assert "study dropout: 4 completed" in proc.stdout and "baseline" in proc.stdout
    assert "sweep.population=auto: 8 trial(s) at once per worker on cpu" in proc.stdout  # the default trains populations
    # stderr is a pipe (a log file): plain progress lines, one per change of the finished count, never a redrawn bar
    progress = [line for line in proc.stderr.splitlines() if line.startswith("study dropout: ")]
    assert "\r" not in proc.stderr and "trial/s" not in proc.stderr
    assert progress[0].startswith("study dropout: 0/4 finished") and progress[-1].startswith("study dropout: 4/4 finished")
    assert len(progress) <= 5 and "best=" in progress[-1]
    # the libraries' INFO logs (MLflow's system-metrics monitor, Lightning's banner) stay out of the terminal
    assert not [line for line in (proc.stdout + proc.stderr).splitlines() if " INFO " in line or "GPU available" in line]
    study = load_study(sweep_dir / "mlruns" / "optuna.db", "dropout")
    uri = f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}"
    parent, children = check_links(study, uri, 4)
    assert len(children) == 4 and all(r.data.metrics["population_size"] >= 1 for r in children.values())
    assert study.trials[0].user_attrs["baseline"] and study.trials[0].params == {}
    assert all("regularizer.p" in t.params for t in study.trials[1:])
    assert children[study.trials[0].user_attrs["mlflow_run_id"]].data.tags["technique"] == "none"
    arts = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/intermediate_values.png"} <= arts
    assert "plots/param_importances.png" not in arts  # one searched parameter (test_statistics: the plot rule)
    assert parent.data.metrics["best_val_acc"] == max(t.value for t in study.trials)
    assert parent.info.status == "FINISHED" and "best_params" in parent.data.tags
    # MLflow's system metrics monitor sampled the machine onto the parent run
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(parent.data.metrics)
    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name("dropout")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs table
    # the exited command left each store whole in its .db file (its write-ahead log written back): a copy of the
    # file alone has every trial and run
    copies = sweep_dir / "copies"
    copies.mkdir()
    for name in ("optuna.db", "mlflow.db"):
        shutil.copy(sweep_dir / "mlruns" / name, copies / name)
    assert len(load_study(copies / "optuna.db", "dropout").trials) == 4
    assert len(all_runs(f"sqlite:///{copies / 'mlflow.db'}")) == len(all_runs(uri)) > 5  # trials, parent, replicates, probes
    # re-running a finished study prints its results and runs nothing
    again = run_cli(sweep_args("dropout", "sweep.n_trials=4"), cwd=sweep_dir)
    assert again.returncode == 0 and "study dropout: 4 completed" in again.stdout
    assert len(load_study(sweep_dir / "mlruns" / "optuna.db", "dropout").trials) == 4


def test_interrupt_then_resume_runs_only_the_rest(sweep_dir):
    # one model at a time, no pruning and 40 epochs: trials 3-5 are still to come when two have completed, however
    # fast the machine (with pruning, the rest could finish in a second and Ctrl-C would land after the sweep)
    args = sweep_args("dropout", "sweep.n_trials=5", "trainer.max_epochs=40", "sweep.population=1", "sweep.pruner.name=none")
    proc = start_interruptible(args, sweep_dir)
    db = sweep_dir / "mlruns" / "optuna.db"
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            done = [t for t in load_study(db, "dropout").trials if t.state == TrialState.COMPLETE]
        except Exception:
            continue
        if len(done) >= 2:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    study = load_study(db, "dropout")
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    uri = f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}"
    assert not [r for r in all_runs(uri) if r.info.status == "RUNNING"]
    killed = [r for r in all_runs(uri) if r.info.status == "KILLED" and r.data.tags.get("role") == "trial"]
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(killed) <= len(interrupted) <= 1  # Ctrl-C may land before the trial's MLflow run exists
    proc = run_cli(args, cwd=sweep_dir)
    assert proc.returncode == 0, proc.stderr
    check_links(load_study(db, "dropout"), uri, 5)


def test_a_reader_holding_the_stores_open_never_stalls_a_sweep(sweep_dir):
    # the MLflow UI, a notebook or the `optuna` CLI reading a local store while a sweep writes it: in SQLite's
    # default rollback mode an open read transaction blocks every commit, and the sweep would stall for the busy
    # timeout (MLflow's 20 s, Optuna's 60 s) and fail with "database is locked"; the stores are put in WAL mode
    args = sweep_args("dropout", "sweep.population=1", "tracking.system_metrics_interval=0")
    assert main([*args, "sweep.n_trials=1"]) == 0
    readers = []
    for name in ("mlflow.db", "optuna.db"):
        reader = sqlite3.connect(sweep_dir / "mlruns" / name, isolation_level=None)
        assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a read snapshot, held while the sweep runs
        readers.append(reader)
    assert main([*args, "sweep.n_trials=3"]) == 0  # in rollback mode: "database is locked" after the busy timeout
    for reader in readers:
        reader.execute("COMMIT")
        reader.close()
    check_links(load_study(sweep_dir / "mlruns" / "optuna.db", "dropout"), f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}", 3)


def test_pruning_prunes_a_hopeless_trial_in_both_stores(sweep_dir):
    args = sweep_args(
        "dropout",
        "sweep.n_trials=3",
        "trainer.max_epochs=4",
        "sweep.baseline=['optim.lr=0.01']",
        "sweep.pruner.name=median",  # the pruning mechanism itself, with a pruner that acts after one trial
        "sweep.pruner.n_startup_trials=1",
        "sweep.pruner.n_warmup_steps=1",
        "sweep.params.regularizer.p=choice(0.0)",
        "optim.lr=1e-7",
        # one model at a time: in a population the first trials train together, so no trial has completed (the
        # median pruner's reference) until the first wave ends; pruning inside populations: test_population.py
        "sweep.population=1",
    )
    assert main(args) == 0
    study = load_study(sweep_dir / "mlruns" / "optuna.db", "dropout")
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.COMPLETE and states[1:] == [TrialState.PRUNED] * 2
    uri = f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}"
    parent, children = check_links(study, uri, 3)
    for t in study.trials[1:]:
        run = children[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags["state"] == "pruned"
        assert run.data.tags["pruned_epoch"] == str(t.user_attrs["pruned_epoch"]) == "2"
        assert run.data.metrics["epochs_trained"] == 2


def test_two_local_workers_on_sqlite(sweep_dir):
    proc = run_cli(sweep_args("dropout", "sweep.n_trials=6", "workers=2"), cwd=sweep_dir)
    assert proc.returncode == 0, proc.stderr
    study = load_study(sweep_dir / "mlruns" / "optuna.db", "dropout")
    check_links(study, f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}", 6)
    assert len({t.number for t in study.trials}) == len(study.trials) == 6
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2


def _start(args, cwd, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "sweeper", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_independent_workers_on_postgresql(sweep_dir, pg_database):
    args = sweep_args("dropout", "sweep.n_trials=6", f"storage={pg_database}")
    procs = [_start(args, sweep_dir), _start(args, sweep_dir)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outs]
    study = load_study(pg_database, "dropout")
    check_links(study, f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}", 6)
    assert len({t.number for t in study.trials}) == 6


def test_sigkill_one_worker_mid_trial_is_retried_and_study_completes(sweep_dir):
    args = sweep_args("dropout", "sweep.n_trials=5", "trainer.max_epochs=25", "sweep.population=1")  # populations: test_population
    victim, survivor = _start(args, sweep_dir), _start(args, sweep_dir)
    db = sweep_dir / "mlruns" / "optuna.db"
    deadline, killed_trial = time.time() + 120, None
    while time.time() < deadline and killed_trial is None:
        time.sleep(0.3)
        try:
            trials = load_study(db, "dropout").trials
        except Exception:
            continue
        for t in trials:
            if (
                t.state == TrialState.RUNNING
                and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
                and "mlflow_run_id" in t.user_attrs
            ):
                killed_trial = t.number
    assert killed_trial is not None
    victim.kill()
    victim.wait()
    out, err = survivor.communicate(timeout=240)
    assert survivor.returncode == 0, err
    study = load_study(db, "dropout")
    uri = f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}"
    check_links(study, uri, 5)
    dead = study.trials[killed_trial]
    assert dead.state == TrialState.FAIL
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed_trial]
    assert len(retry) == 1 and retry[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry[0].params == dead.params
    dead_run = MlflowClient(tracking_uri=uri).get_run(dead.user_attrs["mlflow_run_id"])
    assert dead_run.info.status == "FAILED" and "heartbeat" in dead_run.data.tags["failure_reason"]
