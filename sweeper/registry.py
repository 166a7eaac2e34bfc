"""Register the report's accuracy choice in the MLflow Model Registry as ``sweeper-<study>``."""

from __future__ import annotations

import re

from optuna.storages import RDBStorage

from .report import Report
from .tracking import Tracker


def register_recommended(tracker: Tracker, report: Report, study_name: str, storage: RDBStorage | None = None) -> str | None:
    """The model of the configuration the report chose for accuracy (its first replicate seed). With ``storage``,
    registration is a claim slot: two invocations finishing the same study together register one version."""
    key = report.choice
    if key is None:
        return None
    if storage is None:
        return _register(tracker, key, study_name)
    from .claims import digest, open_slots, run_slots

    registered: list[str | None] = []

    def job(item: dict, claim: object) -> float:
        registered.append(_register(tracker, key, study_name))
        return 1.0

    seeds = sorted({s for r in report.rows if r.key == key for s in r.seeds})
    slots = open_slots(storage, f"{study_name}.registry.{key}.{digest(seeds)}", [{"key": key}])
    run_slots([slots], storage, job, 5.0, 2)
    return registered[0] if registered else None  # None: another invocation registered it


def _register(tracker: Tracker, key: str, study_name: str) -> str | None:
    runs = tracker.search_runs(f"tags.role = 'replicate' and tags.replicate_of = '{key}'")
    with_model = sorted((r for r in runs if r.data.tags.get("model_uri")), key=lambda r: int(r.data.tags["seed"]))
    if not with_model:
        return None
    name = "sweeper-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", study_name)
    version = tracker.register_model(
        with_model[0].data.tags["model_uri"], name, f"Recommended by study {study_name}: {key} (best accuracy priority)"
    )
    return f"{name} version {version} ({key})"
