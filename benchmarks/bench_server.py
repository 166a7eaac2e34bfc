"""Team-setup benchmark: trials per minute with 1, 2 and 4 workers against a local MLflow server (basic auth,
PostgreSQL backend, started by deploy/mlflow-server.sh) + PostgreSQL Optuna storage, and the per-trial tracking
overhead against three servers on the same databases: MLflow's defaults (no credential cache, asyncio event
loop), the credential cache alone, and what deploy/mlflow-server.sh runs (cache + uvloop); vs the embedded
SQLite store and no tracking.

    python benchmarks/bench_server.py                   # needs the local PostgreSQL (trust auth) like the tests
    python benchmarks/bench_server.py --overhead-only   # only the per-trial overhead (about 2 minutes)
"""

from __future__ import annotations

import argparse
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


SERVERS = {  # label -> environment for deploy/mlflow-server.sh
    "MLflow defaults (no credential cache, asyncio loop)": {"MLFLOW_AUTH_CACHE_TTL_SECONDS": "0", "MLFLOW_EVENT_LOOP": "asyncio"},
    "credential cache only": {"MLFLOW_AUTH_CACHE_TTL_SECONDS": "60", "MLFLOW_EVENT_LOOP": "asyncio"},
    "deploy/mlflow-server.sh (cache 60 s + uvloop)": {},
}


def start_server(base_env: dict[str, str], extra: dict[str, str], tmp: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**base_env, **extra, "MLFLOW_PORT": str(port), "MLFLOW_AUTH_CONFIG_PATH": str(tmp / f"auth-{port}.ini")}
    proc = subprocess.Popen(
        ["sh", str(REPO / "deploy" / "mlflow-server.sh")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    while True:
        try:
            if requests.get(f"{uri}/health", timeout=2).ok:
                return proc, uri
        except requests.RequestException:
            time.sleep(0.5)


def throughput(uri: str, password: str, optuna_url: str, tmp: Path) -> None:
    """Trials/min of 1, 2 and 4 workers against one server."""
    wenv = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": password,
        "SWEEPER_OPTUNA_STORAGE": optuna_url,
    }
    rates = {}
    for n in (1, 2, 4):
        name = f"bench_w{n}"
        args = ["+sweep=dropout", "tracking=server", "data=digits", "trainer.max_epochs=5", "sweep.n_trials=16"]
        args += ["sweep.pruner.name=none", "sweep.replicates=0", f"sweep.study_name={name}", f"workers={n}"]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=tmp, env=wenv, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        study = optuna.load_study(study_name=name, storage=optuna_url)
        done = [t for t in study.trials if t.state.is_finished()]
        span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
        rates[n] = len(done) / span * 60
        print(f"[server] workers={n}: {rates[n]:.1f} trials/min ({len(done)} trials, command {wall:.1f} s)")
    print(f"[server] speed-up 2 workers {rates[2] / rates[1]:.2f}x, 4 workers {rates[4] / rates[1]:.2f}x on {os.cpu_count()} cores")


def overhead(uris: dict[str, str], password: str, tmp: Path, repeats: int) -> None:
    """Per-trial tracking overhead: the same trial with no tracking, embedded SQLite and each server, interleaved."""
    os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=password)
    from sweeper import config
    from sweeper.tracking import Tracker
    from sweeper.trial import prepare, run_trial

    cfg = config.load(["data=digits", "trainer.max_epochs=5"])
    prepared = prepare(cfg)
    trackers = {"no tracking": None, "embedded SQLite": Tracker(f"sqlite:///{tmp}/local.db", "bench")}
    trackers.update({label: Tracker(uri, "bench") for label, uri in uris.items()})
    times: dict[str, list[float]] = {k: [] for k in trackers}
    for tr in trackers.values():  # warm-up: imports, first connections, experiment creation
        run_trial(cfg, tr, prepared=prepared, evaluate_test=False)
    for _ in range(repeats):
        for k, tr in trackers.items():
            t0 = time.perf_counter()
            run_trial(cfg, tr, prepared=prepared, evaluate_test=False)
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["no tracking"]
    print(f"[server] trial on digits, 5 epochs, median of {repeats} interleaved runs:")
    for k, v in med.items():
        print(f"[server]   {k:<55} {v:.3f} s" + ("" if k == "no tracking" else f"  (+{v - base:.3f} s tracking overhead)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overhead-only", action="store_true", help="skip the 1/2/4-worker throughput part")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sweeper-bench-server-"))
    dbs = {k: f"bench_{k}_{uuid.uuid4().hex[:6]}" for k in ("mlflow", "auth", "optuna")}
    admin = psycopg2.connect(PG)
    admin.autocommit = True
    for db in dbs.values():
        admin.cursor().execute(f'CREATE DATABASE "{db}"')
    password = secrets.token_hex(8)
    base_env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "MLFLOW_BACKEND_STORE_URI": db_url(dbs["mlflow"]),
        "MLFLOW_AUTH_DB_URI": db_url(dbs["auth"]),
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp / "artifacts"),
        "MLFLOW_ADMIN_USERNAME": "admin",
        "MLFLOW_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_HOST": "127.0.0.1",
    }
    servers: list[subprocess.Popen] = []
    try:
        uris = {}
        for label, extra in SERVERS.items():  # one after another: the first run migrates the shared databases
            proc, uris[label] = start_server(base_env, extra, tmp)
            servers.append(proc)
        if not args.overhead_only:
            throughput(uris[list(SERVERS)[-1]], password, db_url(dbs["optuna"]), tmp)
        overhead(uris, password, tmp, args.repeats)
    finally:
        for proc in servers:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        for db in dbs.values():
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
