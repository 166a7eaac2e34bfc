"""Everything MLflow: experiments, parent/child runs, metrics, tags, artifacts. Nothing else imports mlflow.

Runs are driven through ``MlflowClient`` with explicit run ids (no global active run), so
trials, workers and the study's parent run never step on each other. Every string that could
hold a URL goes through ``masking.mask`` first: no password reaches params, tags or artifacts.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .cache import cache_dir
from .errors import ConfigError, TrackingUnavailable, write_failure
from .masking import mask
from .stores import artifact_location, artifacts_beside, ensure_sqlite_dir, sqlite_file, sqlite_init_lock, use_wal


def _unavailable(exc: Exception) -> bool:
    text = str(exc)
    return any(
        s in text
        for s in (
            "Max retries exceeded",
            "Connection refused",
            "Failed to establish",
            "Read timed out",
            "RemoteDisconnected",
            "Connection aborted",
        )
    )


def _guard(method):
    """Turn a lost MLflow server, or a store that can no longer be written, into one clear exception (exit 3)
    instead of a retry storm or a traceback."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            if isinstance(exc, TrackingUnavailable):
                raise
            reason = write_failure(exc)
            if reason is not None:
                raise TrackingUnavailable(
                    f"MLflow store {mask(self.uri)} cannot be written ({reason}); fix it and re-run the same command: "
                    "the study resumes where it stopped"
                ) from None
            if not _unavailable(exc):
                raise
            raise TrackingUnavailable(
                f"MLflow tracking server {mask(self.uri)} is unreachable ({type(exc).__name__}); the study can be resumed when it is back"
            ) from None

    return wrapper


def _dataset_insert_race(exc: Exception) -> bool:
    """A concurrent insert of the same dataset (PostgreSQL's dataset_pk, SQLite's UNIQUE on datasets)."""
    text = str(exc)
    return "dataset_pk" in text or "UNIQUE constraint failed: datasets" in text


def _seed_new_sqlite_store(uri: str) -> None:
    """A new local store starts as a copy of an empty, fully migrated one kept in the cache folder, one per MLflow
    version: MLflow builds a new store by running every schema migration since its first release, ~1.6 s on a
    2-core machine, paid by every new project folder (and every test's store). The copy holds the schema alone
    (no experiment: MLflow adds its Default experiment, with this store's artifact root, when it opens it).
    Best effort: without a usable cache MLflow migrates the store itself, as before. Callers hold the store's
    ``sqlite_init_lock``."""
    import os
    import shutil

    import mlflow

    path = sqlite_file(uri)
    if path is None or path.exists():
        return
    template = cache_dir() / "mlflow-schema" / f"mlflow-{mlflow.__version__}.db"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if not _usable_template(template):
            _build_template(template)
        shutil.copyfile(template, tmp)
        os.replace(tmp, path)
    except Exception:  # any failure leaves the store to MLflow, which migrates it (and reports its own errors)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _usable_template(template: Path) -> bool:
    import sqlite3

    if not template.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{template}?mode=ro", uri=True)) as con:
            return bool(con.execute("SELECT version_num FROM alembic_version").fetchall())
    except sqlite3.Error:
        return False


def _build_template(template: Path) -> None:
    """MLflow's own table creation and migrations (``_initialize_tables``) on a private file, renamed into place."""
    import os

    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    template.parent.mkdir(parents=True, exist_ok=True)
    tmp = template.with_name(f".{template.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
    try:
        _initialize_tables(engine)
        os.replace(tmp, template)
    finally:
        engine.dispose()
        tmp.unlink(missing_ok=True)


class Tracker:
    """One MLflow experiment in one tracking store."""

    def __init__(self, uri: str, experiment: str, artifact_root: str | None = None):
        ensure_sqlite_dir(uri)
        self.uri, self.experiment_name = uri, experiment
        self._artifact_root = artifact_location(artifact_root) if artifact_root else None
        with sqlite_init_lock(uri):  # MLflow migrates a new store on first use: one process at a time
            _seed_new_sqlite_store(uri)
            self.client = self._client(uri)
            self._experiment_id = self._find_experiment(experiment)
            use_wal(uri)

    @_guard
    def _client(self, uri: str) -> MlflowClient:
        """The client opens the store at once (a new one gets its Default experiment written then): a store that
        cannot be written fails here, named as the MLflow store."""
        return MlflowClient(tracking_uri=uri)

    @property
    def experiment_id(self) -> str:
        """Created on first use, so that a study found elsewhere (``follow``) leaves no empty experiment behind."""
        if self._experiment_id is None:
            self._experiment_id = self._create_experiment(self.experiment_name)
        return self._experiment_id

    @property
    def known_experiment_id(self) -> str | None:
        """The experiment's id if it exists yet (found by name, created, or followed), without creating it."""
        return self._experiment_id

    @_guard
    def follow(self, experiment_id: str) -> None:
        """Use this experiment (a study's parent run lives there) whatever its name now: renamed in the UI, the
        name no longer finds it."""
        exp = self.client.get_experiment(experiment_id)
        self._refuse_deleted(exp.name, exp)
        self._experiment_id, self.experiment_name = experiment_id, exp.name

    def _refuse_deleted(self, name: str, exp: Any) -> None:
        if exp is None or exp.lifecycle_stage != "deleted":
            return
        eid = exp.experiment_id
        raise ConfigError(
            "experiment",
            name,
            f"this MLflow experiment (id {eid}) was deleted and is in the trash; restore it with `MLFLOW_TRACKING_URI="
            f"{mask(self.uri)} mlflow experiments restore --experiment-id {eid}` (nothing can be logged to it in the trash, "
            f"where the UI's Delete and `mlflow experiments delete` put it), or use another name (a sweep: "
            f"sweep.study_name={name}_v2; one run: tracking.experiment=...)",
        )

    @_guard
    def _find_experiment(self, name: str) -> str | None:
        exp = self.client.get_experiment_by_name(name)
        self._refuse_deleted(name, exp)
        if exp is not None and self._artifact_root:
            wanted = f"{self._artifact_root}/{name}"
            if exp.artifact_location.rstrip("/") != wanted:  # it was silently ignored
                print(
                    f"note: MLflow experiment {name!r} keeps its artifact location {exp.artifact_location} (MLflow fixes it "
                    f"when the experiment is created); tracking.artifact_root applies to new experiments",
                    file=sys.stderr,
                )
        return None if exp is None else str(exp.experiment_id)

    @_guard
    def _create_experiment(self, name: str) -> str:
        location = self._artifact_root
        if location is None and self.uri.startswith("sqlite:///"):  # artifacts beside the database file
            location = artifacts_beside(self.uri).resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location and f"{location}/{name}")
        except MlflowException:  # another worker created it first
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return str(exp.experiment_id)

    # --- runs -------------------------------------------------------------------------------
    @_guard
    def start_run(
        self, name: str, params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None, parent_run_id: str | None = None
    ) -> str:
        all_tags = {k: mask(str(v)) for k, v in (tags or {}).items()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    @_guard
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """MLflow's client writes them 100 a batch (its limit), as it splits every batch below."""
        self.client.log_batch(run_id, params=[Param(k, mask(str(v))[:6000]) for k, v in params.items()])

    @_guard
    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step) for k, v in metrics.items() if v is not None]
        if items:
            self.client.log_batch(run_id, metrics=items)

    @_guard
    def log_metric_items(self, run_id: str, items: list) -> None:
        self.client.log_batch(run_id, metrics=items)  # 1,000 a batch: MLflow's client splits longer lists itself

    @_guard
    def log_final(self, run_id: str, metrics: dict[str, float], tags: dict[str, Any], step: int = 0, series: list | None = None) -> None:
        """Final metrics and tags in one call, with ``series`` (per-epoch Metric items not logged yet): one store write
        fewer per population member (MLflow's client splits a batch past its 1,000 entities itself)."""
        ts = int(time.time() * 1000)
        finals = [Metric(k, float(v), ts, step) for k, v in metrics.items() if v is not None]
        self.client.log_batch(run_id, metrics=[*(series or []), *finals], tags=[RunTag(k, mask(str(v))) for k, v in tags.items()])

    @_guard
    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, mask(str(v))) for k, v in tags.items()])

    @_guard
    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, mask(text), artifact_file)

    def log_json(self, run_id: str, obj: Any, artifact_file: str) -> None:
        self.log_text(run_id, json.dumps(obj, indent=2, default=str), artifact_file)

    @_guard
    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    @_guard
    def log_model(self, run_id: str, model, input_example) -> str:
        """mlflow.pytorch.log_model into an existing run, with signature and input example; returns its URI."""
        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        from .runtime import quiet_libraries

        quiet_libraries()  # importing mlflow.pytorch re-enables Lightning's loggers
        model = model.to("cpu").eval()
        example = input_example.detach().cpu().numpy()
        with torch.no_grad():
            signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                signature=signature,
                input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            )
        return info.model_uri

    @_guard
    def register_model(self, model_uri: str, name: str, description: str) -> str:
        """Register in the MLflow Model Registry; returns the new version."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        version = mlflow.register_model(model_uri, name)
        self.client.update_registered_model(name, description=description)
        self.client.update_model_version(name, version.version, description=description)
        self.client.set_registered_model_alias(name, "champion", version.version)  # aliases replace the deprecated stages
        return version.version

    @_guard
    def log_dataset(self, run_id: str, name: str, digest: str, source: str, profile: dict[str, Any]) -> None:
        """The run's training data as an MLflow dataset input (the UI's Datasets column)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name, digest=digest, source_type="sweeper", source=json.dumps({"uri": source}), profile=json.dumps(profile))
        inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])]
        for attempt in range(3):
            try:
                self.client.log_inputs(run_id, inputs)
                return
            except MlflowException as exc:
                # MLflow looks the dataset up, then inserts it: workers logging the same new dataset at once lose the
                # race with a unique violation (the whole call rolled back); again, the dataset exists and is linked
                if attempt == 2 or not _dataset_insert_race(exc):
                    raise
                time.sleep(0.05 * (attempt + 1))

    @_guard
    def describe_experiment(self, text: str) -> None:
        """The experiment's description in the MLflow UI (``mlflow.note.content``), and its kind: MLflow 3's UI opens
        experiments without one on the GenAI overview instead of the runs table."""
        self.client.set_experiment_tag(self.experiment_id, "mlflow.note.content", mask(text))
        self.client.set_experiment_tag(self.experiment_id, "mlflow.experimentKind", "custom_model_development")

    @contextlib.contextmanager
    def system_metrics(self, run_id: str, interval: float) -> Iterator[None]:
        """CPU, memory, disk, network (and GPU where NVML sees one) on ``run_id`` every ``interval`` seconds, by
        MLflow's own monitor (``system/*`` metrics in the UI), while the block runs; interval 0: off."""
        if not interval:
            yield
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, resume_logging=True, tracking_uri=self.uri)
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()
            # a closing sample: the monitor drops the one it collected when it is stopped, so a block shorter than
            # the interval (a fast population sweep) would otherwise leave no system metrics at all
            with contextlib.suppress(Exception):
                monitor.collect_metrics()
                monitor.publish_metrics(monitor.aggregate_metrics())
                monitor.mlflow_logger.flush()

    @_guard
    def mark_running(self, run_id: str) -> None:
        """A resumed study's parent run is RUNNING again while workers run."""
        self.client.update_run(run_id, status="RUNNING")

    @_guard
    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """status: FINISHED, FAILED or KILLED."""
        self.client.set_terminated(run_id, status=status)

    @_guard
    def get_run(self, run_id: str):
        return self.client.get_run(run_id)

    @_guard
    def run_or_none(self, run_id: str):
        """The run, or None when it is gone (purged: ``mlflow gc``) or the id cannot name one (a study attribute
        edited by hand: MLflow's INVALID_PARAMETER_VALUE was a traceback); a deleted one is returned (lifecycle
        ``deleted``)."""
        try:
            return self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    @_guard
    def search_runs(self, filter_string: str = "", max_results: int = 10000) -> list:
        return self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=max_results)

    @_guard
    def deleted_children(self, parent: str) -> list:
        """The parent run's child runs that are in MLflow's trash (deleted in the UI or with ``mlflow runs delete``):
        searches leave them out, so a report would silently lose them."""
        from mlflow.entities import ViewType

        flt = f"tags.mlflow.parentRunId = '{parent}'"
        return self.client.search_runs([self.experiment_id], filter_string=flt, run_view_type=ViewType.DELETED_ONLY, max_results=10000)

    @_guard
    def download_artifact(self, run_id: str, path: str, dst: str | Path) -> Path | None:
        """The artifact's local copy, or None when the run has no such artifact."""
        try:
            return Path(self.client.download_artifacts(run_id, path, str(dst)))
        except (MlflowException, OSError):
            return None

    def copy_epoch_history(self, src: str, dst: str, keys: Iterable[str], through_step: int) -> None:
        """Per-epoch curves of ``src`` up to ``through_step`` into ``dst`` (a resumed trial's run shows every epoch)."""
        items = [m for k in keys for m in self.metric_history(src, k) if m.step <= through_step]
        if items:
            self.log_metric_items(dst, items)

    def finished_children(self, parent: str, role: str) -> list:
        """FINISHED runs of one role (replicate, cost, ...) under a parent run: work that is never redone."""
        runs = self.search_runs(f"tags.role = '{role}' and tags.`mlflow.parentRunId` = '{parent}'")
        return [r for r in runs if r.info.status == "FINISHED"]

    @_guard
    def metric_history(self, run_id: str, key: str) -> list:
        return self.client.get_metric_history(run_id, key)


def close_runs(tracker: Tracker, run_ids: Iterable[str], status: str, reason: str) -> None:
    """Close runs that a dead worker left RUNNING (used by the stale-trial callback)."""
    for run_id in run_ids:
        try:
            if tracker.get_run(run_id).info.status == "RUNNING":
                tracker.set_tags(run_id, {"state": "failed", "failure_reason": reason})
                tracker.end_run(run_id, status)
        except MlflowException:
            pass
