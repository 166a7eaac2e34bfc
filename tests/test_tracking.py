"""The Tracker's batching against a real SQLite MLflow store: what it merges into one write still all arrives."""

from __future__ import annotations

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from sweeper.tracking import Tracker
from sweeper.trial import close_run


def _series(n_epochs: int, keys: int) -> list[Metric]:
    return [Metric(f"m{k}", float(epoch * 100 + k), 1, epoch) for epoch in range(n_epochs) for k in range(keys)]


def test_a_closed_run_gets_its_pending_epoch_metrics_with_the_final_ones(mlflow_uri):
    """close_run's series (a population member's last buffered epochs) lands with the final metrics and tags, also
    past MLflow's 1,000 entities a batch (metrics and tags together), which MLflow's client splits."""
    tracker = Tracker(mlflow_uri, "tracking-test")
    client = MlflowClient(mlflow_uri)
    # 3 epochs x 5 metrics, 2 finals, 3 tags: one batch; 997 + 2 metrics fit MLflow's 1,000 metrics, + 3 tags do not
    for n_epochs, keys in ((3, 5), (997, 1)):
        run_id = tracker.start_run("member")
        series = _series(n_epochs, keys)
        finals = {"epochs_trained": n_epochs, "x": 0.5}
        close_run(tracker, run_id, "pruned", "FINISHED", "Trial was pruned at epoch 2.", finals, n_epochs, series)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["state"] == "pruned" and run.data.tags["pruned_epoch"] == str(n_epochs)
        assert run.data.metrics["epochs_trained"] == n_epochs and run.data.metrics["x"] == 0.5
        for k in range(keys):
            history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, f"m{k}"))
            assert history == [(epoch, float(epoch * 100 + k)) for epoch in range(n_epochs)]


def test_artifact_root_is_absolute_and_an_existing_experiment_keeps_its_own_with_a_note(tmp_path, monkeypatch, capsys):
    """``tracking.artifact_root=relative/dir`` was stored as given (the UI started from another folder found no
    artifacts), and for an experiment that already existed it was silently ignored (MLflow fixes the location when
    the experiment is created)."""
    from conftest import tiny

    from sweeper.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(tiny("trainer.max_epochs=1", "tracking.artifact_root=relative/dir")) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeper")
    assert exp.artifact_location == (tmp_path / "relative" / "dir" / "sweeper").as_uri()
    run = client.search_runs([exp.experiment_id])[0]
    assert "config.yaml" in [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "note:" not in capsys.readouterr().err
    assert main(tiny("trainer.max_epochs=1", "tracking.artifact_root=elsewhere")) == 0
    err = capsys.readouterr().err
    assert f"note: MLflow experiment 'sweeper' keeps its artifact location {exp.artifact_location} (MLflow fixes it" in err
    assert not (tmp_path / "elsewhere").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")  # checked before the server is tried
    assert main(tiny("tracking.artifact_root=elsewhere")) == 2
    assert "error: tracking.artifact_root: 'elsewhere' is invalid; a local folder cannot be a tracking server's" in (
        capsys.readouterr().err
    )
