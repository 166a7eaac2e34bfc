"""Chaos run: a study must stay exact while workers are killed and frozen.

PostgreSQL storage with 3 workers (and SQLite with 2): every ~10 s a random worker is SIGKILLed and
replaced; once, another is frozen (SIGSTOP) past the grace period and woken again. The study must end
with exactly ``--trials`` finished slots, every MLflow trial run's status must match its Optuna state
(COMPLETE/PRUNED <-> FINISHED, FAIL <-> FAILED or KILLED), no run RUNNING, one run per trial, and the
report must build. Prints the counts.

    python benchmarks/chaos.py                     # both stores (needs the local PostgreSQL)
    python benchmarks/chaos.py --store sqlite --trials 30
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("SWEEPER_TEST_PG", "postgresql://root@127.0.0.1:5432/postgres")


def start(folder: Path, args: list[str], logs: list) -> subprocess.Popen:
    log = open(folder / f"worker-{len(logs)}.log", "w")  # noqa: SIM115  (open for the worker's lifetime; closed at the end)
    logs.append(log)
    return subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=folder, stdout=log, stderr=subprocess.STDOUT)


def chaos(store: str, n_trials: int, n_workers: int, kill_every: float) -> bool:
    import optuna
    from mlflow.tracking import MlflowClient

    rng = random.Random(0)
    folder = Path(tempfile.mkdtemp(prefix=f"chaos-{store}-"))
    db_name = None
    if store == "postgresql":
        import psycopg2
        from sqlalchemy.engine import make_url

        db_name = f"sweeper_chaos_{uuid.uuid4().hex[:8]}"
        admin = psycopg2.connect(PG_ADMIN)
        admin.autocommit = True
        admin.cursor().execute(f'CREATE DATABASE "{db_name}"')
        storage = make_url(PG_ADMIN).set(database=db_name).render_as_string(hide_password=False)
    else:
        storage = f"sqlite:///{folder}/mlruns/optuna.db"
    args = [
        "+sweep=dropout",
        "data=digits",
        "model.hidden=[32,16]",
        "trainer.max_epochs=6",
        "trainer.accelerator=cpu",
        "trainer.threads=1",
        f"sweep.n_trials={n_trials}",
        "sweep.heartbeat_interval=1",
        "sweep.grace_period=4",
        "sweep.max_retry=20",
        "sweep.replicates=2",
        "sweep.timing_repeats=0",
        f"storage={storage}",
    ]
    logs: list = []
    # Chaos starts once the study exists, as in operation: a kill in a study's first seconds, during MLflow's
    # first migration of a new store or before the creator has queued the slots, is outside this benchmark.
    (folder / "mlruns").mkdir(parents=True, exist_ok=True)
    MlflowClient(tracking_uri=f"sqlite:///{folder}/mlruns/mlflow.db").search_experiments()
    workers = [start(folder, args, logs)]
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if len(optuna.load_study(study_name="dropout", storage=storage).trials) >= n_trials:
                break
        except Exception:
            pass
        time.sleep(0.5)
    workers += [start(folder, args, logs) for _ in range(n_workers - 1)]
    kills = freezes = 0
    frozen_once = False
    t0 = time.time()
    next_kill = t0 + kill_every

    def finished() -> int:
        try:
            study = optuna.load_study(study_name="dropout", storage=storage)
        except Exception:
            return 0
        replaced = {n for t in study.trials for n in t.system_attrs.get("retry_history", [])}
        return sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials if t.number not in replaced)

    while finished() < n_trials and time.time() - t0 < 900:
        time.sleep(0.5)
        alive = [w for w in workers if w.poll() is None]
        if time.time() >= next_kill and alive:
            victim = rng.choice(alive)
            victim.kill()
            victim.wait()
            kills += 1
            workers.append(start(folder, args, logs))
            next_kill = time.time() + kill_every * rng.uniform(0.7, 1.3)
        if not frozen_once and time.time() - t0 > kill_every * 1.5 and len(alive) > 1:
            sleeper = rng.choice([w for w in alive if w.poll() is None])
            sleeper.send_signal(signal.SIGSTOP)
            time.sleep(10)  # past grace_period=4
            sleeper.send_signal(signal.SIGCONT)
            freezes += 1
            frozen_once = True
    for w in workers:
        try:
            w.wait(timeout=600)
        except subprocess.TimeoutExpired:
            w.kill()
    for log in logs:
        log.close()
    uri = f"sqlite:///{folder}/mlruns/mlflow.db"
    study = optuna.load_study(study_name="dropout", storage=storage)
    replaced = {n for t in study.trials for n in t.system_attrs.get("retry_history", [])}
    logical = [t for t in study.trials if t.number not in replaced]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("dropout")
    runs = client.search_runs([exp.experiment_id], max_results=10000)
    trial_runs = [r for r in runs if r.data.tags.get("role") == "trial"]
    per_trial: dict[int, list] = {}
    for r in trial_runs:
        per_trial.setdefault(int(r.data.tags["trial_number"]), []).append(r)
    expected = {"COMPLETE": {"FINISHED"}, "PRUNED": {"FINISHED"}, "FAIL": {"FAILED", "KILLED"}}
    states = {t.number: t.state.name for t in study.trials}
    mismatched = [n for n, rs in per_trial.items() if rs[0].info.status not in expected.get(states.get(n, "?"), set())]
    duplicates = [n for n, rs in per_trial.items() if len(rs) > 1]
    running = [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    report = subprocess.run(
        [sys.executable, "-m", "sweeper.report", "dropout", "--out", str(folder / "reports")], cwd=folder, capture_output=True, text=True
    )
    abandoned = sum("abandoned it" in (folder / f"worker-{i}.log").read_text() for i in range(len(logs)))
    ok = (
        len(logical) == n_trials
        and all(t.state.name in ("COMPLETE", "PRUNED") for t in logical)
        and not mismatched
        and not duplicates
        and not running
        and report.returncode == 0
    )
    print(
        f"{store}: {n_workers} workers, {kills} SIGKILLs, {freezes} freeze past the grace period ({abandoned} trial abandoned "
        f"by the frozen worker), {time.time() - t0:.0f} s"
    )
    print(
        f"  optuna: {len(study.trials)} trials in all, {len(logical)} logical slots "
        f"({sum(t.state.name == 'COMPLETE' for t in logical)} complete, {sum(t.state.name == 'PRUNED' for t in logical)} pruned), "
        f"{sum(t.state.name == 'FAIL' for t in study.trials)} failed attempts retried"
    )
    print(
        f"  mlflow: {len(trial_runs)} trial runs ({sum(r.info.status == 'FINISHED' for r in trial_runs)} FINISHED, "
        f"{sum(r.info.status == 'FAILED' for r in trial_runs)} FAILED, {sum(r.info.status == 'KILLED' for r in trial_runs)} KILLED), "
        f"{len(mismatched)} state mismatches, {len(duplicates)} trials with duplicate runs, {len(running)} runs RUNNING"
    )
    print(f"  report: exit {report.returncode}; {'PASS' if ok else 'FAIL'}")
    if ok:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"  kept for inspection: {folder}")
    if db_name:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=["postgresql", "sqlite", "both"], default="both")
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--kill-every", type=float, default=10.0)
    a = ap.parse_args()
    results = []
    if a.store in ("postgresql", "both"):
        results.append(chaos("postgresql", a.trials, 3, a.kill_every))
    if a.store in ("sqlite", "both"):
        results.append(chaos("sqlite", a.trials, 2, a.kill_every))
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
