"""Register the report's accuracy choice in the MLflow Model Registry as ``sweeper-<study>``."""

from __future__ import annotations

import re

from .report import Report
from .tracking import Tracker


def register_recommended(tracker: Tracker, report: Report, study_name: str) -> str | None:
    """The model of the configuration the report chose for accuracy (its first replicate seed)."""
    key = report.choice
    if key is None:
        return None
    runs = tracker.search_runs(f"tags.role = 'replicate' and tags.replicate_of = '{key}'")
    with_model = sorted((r for r in runs if r.data.tags.get("model_uri")), key=lambda r: int(r.data.tags["seed"]))
    if not with_model:
        return None
    name = "sweeper-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", study_name)
    version = tracker.register_model(
        with_model[0].data.tags["model_uri"], name, f"Recommended by study {study_name}: {key} (best accuracy priority)"
    )
    return f"{name} version {version} ({key})"
