"""Shared fixtures: real MLflow SQLite stores (copied from one migrated template), CLI helpers."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("SWEEPER_CACHE", str(REPO / ".pytest_cache" / "sweeper-data"))


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """One migrated MLflow SQLite store; each test gets a copy (migrations cost ~1.5 s each)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(tmp_path, mlflow_template) -> str:
    dst = tmp_path / "mlruns" / "mlflow.db"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(mlflow_template, dst)
    return f"sqlite:///{dst}"


def all_runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=10000) if exps else []


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m sweeper ...` as a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def tiny(*extra: str) -> list[str]:
    """Overrides for a tiny, fast run."""
    return ["data=digits", "trainer.max_epochs=2", "trainer.accelerator=cpu", "model.hidden=[32,16]", *extra]
