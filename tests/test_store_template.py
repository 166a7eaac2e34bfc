"""A new local MLflow store is a copy of the cached empty, migrated schema (``tracking._seed_new_sqlite_store``):
the same schema as MLflow's own migrations give, no migrations run for the second store, and a broken cache file
is rebuilt instead of breaking the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import mlflow.store.db.utils
import pytest
from mlflow.tracking import MlflowClient

from sweeper.tracking import Tracker


def _schema(db: Path) -> dict:
    """Every table's columns (name, type, not null, default, primary key), its indexes (columns, unique, origin:
    the names and order of automatic indexes follow the order of creation), and the schema revision."""
    with sqlite3.connect(db) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]

        def indexes(table: str) -> list:
            found = con.execute(f'PRAGMA index_list("{table}")').fetchall()  # seq, name, unique, origin, partial
            return sorted((tuple(c[2] for c in con.execute(f'PRAGMA index_info("{i[1]}")')), i[2], i[3]) for i in found)

        out: dict = {t: (con.execute(f'PRAGMA table_info("{t}")').fetchall(), indexes(t)) for t in tables}
        out["revision"] = con.execute("SELECT version_num FROM alembic_version").fetchall()
    return out


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SWEEPER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "mlflow-schema" / f"mlflow-{mlflow.__version__}.db"


def test_a_second_new_store_runs_no_migration_and_has_the_migrated_schema(tmp_path, cache, monkeypatch):
    Tracker(f"sqlite:///{tmp_path / 'first' / 'mlflow.db'}", "e")
    assert cache.exists()

    def no_migrations(engine):
        raise AssertionError("the store was migrated instead of copied")

    monkeypatch.setattr(mlflow.store.db.utils, "_initialize_tables", no_migrations)
    second = Tracker(f"sqlite:///{tmp_path / 'second' / 'mlflow.db'}", "e")
    monkeypatch.undo()
    (tmp_path / "native").mkdir()
    native = MlflowClient(f"sqlite:///{tmp_path / 'native' / 'mlflow.db'}")  # MLflow alone: its own migrations
    assert _schema(tmp_path / "second" / "mlflow.db") == _schema(tmp_path / "native" / "mlflow.db")
    defaults = [second.client.get_experiment("0"), native.get_experiment("0")]
    assert [e.name for e in defaults] == ["Default", "Default"]
    run = second.start_run("r", tags={"k": "v"}, parent_run_id=None)
    second.log_metrics(run, {"m": 1.5}, step=2)
    second.end_run(run)
    got = second.get_run(run)
    assert got.data.metrics == {"m": 1.5} and got.info.status == "FINISHED"
    assert got.info.artifact_uri.startswith((tmp_path / "second" / "artifacts").as_uri())


def test_a_broken_cached_schema_is_rebuilt_and_the_store_still_opens(tmp_path, cache):
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"\x00not a database\xff" * 40)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "e")
    assert tracker.experiment_id == tracker.client.get_experiment_by_name("e").experiment_id  # made on first use
    with sqlite3.connect(cache) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchall()


def test_an_existing_store_is_never_replaced(tmp_path, cache):
    db = tmp_path / "mlflow.db"
    tracker = Tracker(f"sqlite:///{db}", "kept")
    run = tracker.start_run("r", tags={}, parent_run_id=None)
    Tracker(f"sqlite:///{db}", "kept")
    assert Tracker(f"sqlite:///{db}", "kept").get_run(run).info.run_id == run


def test_a_url_with_driver_arguments_names_the_same_file(tmp_path, cache, monkeypatch):
    """``sqlite:///.../mlflow.db?timeout=30``: the copy, the creation lock and the WAL switch go to mlflow.db itself
    (they used to go to a file literally named ``mlflow.db?timeout=30``, and the real store was migrated instead)."""
    Tracker(f"sqlite:///{tmp_path / 'first.db'}", "e")  # builds the cached schema
    monkeypatch.setattr(mlflow.store.db.utils, "_initialize_tables", lambda engine: pytest.fail("migrated instead of copied"))
    folder = tmp_path / "store"
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}?timeout=30", "e")
    tracker.start_run("r", tags={}, parent_run_id=None)
    assert not [p.name for p in folder.iterdir() if "?" in p.name]
    with sqlite3.connect(folder / "mlflow.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
