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
    if key is None or report.at_chance:  # a model that learned nothing is no champion (the report says why)
        return None
    description = _description(report, key, study_name)
    if storage is None:
        return _register(tracker, key, study_name, description)
    from .claims import digest, open_slots, run_slots

    registered: list[str | None] = []

    def job(item: dict, claim: object) -> float:
        registered.append(_register(tracker, key, study_name, description))
        return 1.0

    seeds = sorted({s for r in report.rows if r.key == key for s in r.seeds})
    slots = open_slots(storage, f"{study_name}.registry.{key}.{digest(seeds)}", [{"key": key}])
    run_slots([slots], storage, job, 2)
    return registered[0] if registered else None  # None: another invocation registered it


def _description(report: Report, key: str, study_name: str) -> str:
    row = next((r for r in report.rows if r.key == key), None)
    if row is None:
        return f"Recommended by study {study_name}: {key} (best accuracy priority)"
    s, c = row.test, row.comparison
    ci = f" [{s.ci_low:.4f}, {s.ci_high:.4f}]" if s.ci_low is not None else ""
    versus = "the baseline itself (no technique beat it beyond noise)" if c is None else c.reason
    return (
        f"Recommended by study {study_name} for accuracy: {key} ({row.params}); test accuracy {s.mean:.4f}{ci} over "
        f"{s.n} replicate seeds never used by the search; vs baseline: {versus}."
    )


def _register(tracker: Tracker, key: str, study_name: str, description: str | None = None) -> str | None:
    runs = tracker.search_runs(f"tags.role = 'replicate' and tags.replicate_of = '{key}'")
    with_model = sorted((r for r in runs if r.data.tags.get("model_uri")), key=lambda r: int(r.data.tags["seed"]))
    if not with_model:
        return None
    name = "sweeper-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", study_name)
    version = tracker.register_model(
        with_model[0].data.tags["model_uri"], name, description or f"Recommended by study {study_name}: {key} (best accuracy priority)"
    )
    return f"{name} version {version} ({key})"
