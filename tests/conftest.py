"""Shared fixtures: real MLflow SQLite stores (copied from one migrated template), CLI helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("SWEEPER_CACHE", str(REPO / ".pytest_cache" / "sweeper-data"))


@pytest.fixture(scope="session", autouse=True)
def process_setup() -> None:
    """What main() does first in every process (tests also train through run_trial directly)."""
    from sweeper import runtime

    runtime.setup()


@pytest.fixture
def mlflow_uri(tmp_path) -> str:
    """A new store's URL; the store is created as every new local store is, from the cached migrated schema
    (``tracking._seed_new_sqlite_store``, built once per test session in ``SWEEPER_CACHE``)."""
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def all_runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=10000) if exps else []


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m sweeper ...` as a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def start_interruptible(args: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m sweeper ...` started with SIGINT at its default disposition, so that the test's SIGINT is a Ctrl-C.
    A test run started in the background by a non-interactive shell (`cmd &`) inherits SIGINT ignored, and Python then
    installs no KeyboardInterrupt handler: the signal would be silently dropped and the sweep would run to the end."""
    import signal

    return subprocess.Popen(
        [sys.executable, "-m", "sweeper", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def tiny(*extra: str) -> list[str]:
    """Overrides for a tiny, fast run."""
    return ["data=digits", "trainer.max_epochs=2", "trainer.accelerator=cpu", "model.hidden=[32,16]", *extra]


PG_ADMIN = os.environ.get("SWEEPER_TEST_PG", "postgresql://root@127.0.0.1:5432/postgres")


@pytest.fixture
def pg_database():
    """A fresh PostgreSQL database on the local server, dropped afterwards. Fails (not skips) if down."""
    import uuid

    import psycopg2
    from sqlalchemy.engine import make_url

    name = f"sweeper_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG_ADMIN, connect_timeout=5)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def sweep_dir(tmp_path, monkeypatch) -> Path:
    """A working directory whose mlruns/ holds a new MLflow store, made as a sweep makes one (a copy of the cached
    migrated schema), so a test can lock or replace it before the sweep opens it."""
    from sweeper.tracking import _seed_new_sqlite_store

    (tmp_path / "mlruns").mkdir()
    _seed_new_sqlite_store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert (tmp_path / "mlruns" / "mlflow.db").exists()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load_study(path_or_url: str, name: str):
    import optuna

    path_or_url = str(path_or_url)
    url = path_or_url if "://" in path_or_url else f"sqlite:///{path_or_url}"
    return optuna.load_study(study_name=name, storage=url)


def sweep_args(name: str = "dropout", *extra: str) -> list[str]:
    """A tiny sweep on digits (short heartbeats so stale-trial tests are quick)."""
    return [
        f"+sweep={name}",
        "data=digits",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "model.hidden=[32,16]",
        "sweep.heartbeat_interval=1",
        "sweep.grace_period=4",
        *extra,
    ]


def check_links(study, uri, n_trials):
    """Exactly n_trials finished slots, each 1:1 with a child run under the one parent run."""
    from optuna.trial import TrialState

    trials = study.get_trials()
    replaced = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    live = [t for t in trials if t.number not in replaced]
    assert len(live) == n_trials
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in live), [t.state for t in live]
    runs = all_runs(uri)
    parents = [r for r in runs if r.data.tags.get("role") == "study"]
    assert len(parents) == 1
    parent = parents[0]
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    children = {r.info.run_id: r for r in runs if r.data.tags.get("role") == "trial"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children.values())
    for t in live:
        run = children[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags["trial_number"] == str(t.number)
        assert run.data.tags["study"] == study.study_name
        assert run.data.tags["state"] == ("completed" if t.state == TrialState.COMPLETE else "pruned")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    return parent, children
