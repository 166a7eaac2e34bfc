"""Team-setup benchmark (issue #5): trials per minute with 1, 2 and 4 workers against a local MLflow
server (basic auth, PostgreSQL backend, started by deploy/mlflow-server.sh) + PostgreSQL Optuna
storage, and the per-trial overhead of server tracking vs the embedded SQLite store vs none.

    python benchmarks/bench_server.py      # needs the local PostgreSQL (trust auth) like the tests
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import psycopg2
import requests

REPO = Path(__file__).resolve().parents[1]
PG = os.environ.get("SWEEPER_TEST_PG", "postgresql://root@127.0.0.1:5432/postgres")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def db_url(name: str) -> str:
    return PG.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sweeper-bench-server-"))
    dbs = {k: f"bench_{k}_{uuid.uuid4().hex[:6]}" for k in ("mlflow", "auth", "optuna")}
    admin = psycopg2.connect(PG)
    admin.autocommit = True
    for db in dbs.values():
        admin.cursor().execute(f'CREATE DATABASE "{db}"')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    password = secrets.token_hex(8)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "MLFLOW_BACKEND_STORE_URI": db_url(dbs["mlflow"]),
        "MLFLOW_AUTH_DB_URI": db_url(dbs["auth"]),
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp / "artifacts"),
        "MLFLOW_ADMIN_USERNAME": "admin",
        "MLFLOW_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp / "auth.ini"),
    }
    server = subprocess.Popen(
        ["sh", str(REPO / "deploy" / "mlflow-server.sh")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if requests.get(f"{uri}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        wenv = {
            **os.environ,
            "MLFLOW_TRACKING_URI": uri,
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": password,
            "SWEEPER_OPTUNA_STORAGE": db_url(dbs["optuna"]),
        }
        rates = {}
        for n in (1, 2, 4):
            name = f"bench_w{n}"
            args = [
                "+sweep=dropout",
                "tracking=server",
                "data=digits",
                "trainer.max_epochs=5",
                "sweep.n_trials=16",
                "sweep.pruner.name=none",
                "sweep.replicates=0",
                f"sweep.study_name={name}",
                f"workers={n}",
            ]
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=tmp, env=wenv, check=True, capture_output=True)
            wall = time.perf_counter() - t0
            study = optuna.load_study(study_name=name, storage=db_url(dbs["optuna"]))
            done = [t for t in study.trials if t.state.is_finished()]
            span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
            rates[n] = len(done) / span * 60
            print(f"[server] workers={n}: {rates[n]:.1f} trials/min ({len(done)} trials, command {wall:.1f} s)")
        print(f"[server] speed-up 2 workers {rates[2] / rates[1]:.2f}x, 4 workers {rates[4] / rates[1]:.2f}x on {os.cpu_count()} cores")
        os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=password)
        from sweeper import config
        from sweeper.tracking import Tracker
        from sweeper.trial import prepare, run_trial

        cfg = config.load(["data=digits", "trainer.max_epochs=5"])
        prepared = prepare(cfg)
        trackers = {"none": None, "sqlite": Tracker(f"sqlite:///{tmp}/local.db", "bench"), "server": Tracker(uri, "bench")}
        times = {k: [] for k in trackers}
        run_trial(cfg, None, prepared=prepared)
        for _ in range(5):
            for k, tr in trackers.items():
                t0 = time.perf_counter()
                run_trial(cfg, tr, prepared=prepared, evaluate_test=False)
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"[server] trial (digits, 5 epochs): no tracking {med['none']:.3f} s, embedded SQLite "
            f"{med['sqlite']:.3f} s (+{med['sqlite'] - med['none']:.3f} s), MLflow server "
            f"{med['server']:.3f} s (+{med['server'] - med['none']:.3f} s)"
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
        for db in dbs.values():
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
