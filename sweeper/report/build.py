"""Build every output of a report in a temporary folder, then move it into place (never a partial report)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..names import check_name
from ..tracking import Tracker
from .collect import collect
from .plots import make_plots
from .recommend import _small_data, accuracy_choice, recommend
from .render import render, search_rows, seed_rows
from .rows import Row, axis_table, build_rows


@dataclass
class Report:
    folder: Path
    rows: list[Row]
    axis_rows: list[dict]
    recommendations: list[tuple[str, str]]
    plots: dict[str, str]
    choice: str | None = None  # the accuracy recommendation: the configuration the registry registers
    search: list[list[str]] | None = None  # the search's results, when nothing was replicated
    across: list[list[str]] | None = None  # mean and CI over searched seeds (``-m seed=1,2,3``)


def write_report(tracker: Tracker, experiment: str, out_root: str | Path, log_to_parent: bool = True) -> Report:
    """Build every output in a temporary folder, then move it to <out_root>/<experiment>/ (never partial)."""
    check_name("experiment", experiment)  # it becomes a folder name under out_root
    data = collect(tracker, experiment)
    rows = build_rows(data)
    axis_rows = axis_table(data)
    choice = accuracy_choice(rows)
    recs = (
        recommend(rows, axis_rows, data.axis, choice, data.margin)
        if rows
        else ([("small data", _small_data(axis_rows, data.axis))] if axis_rows else [])
    )
    final = Path(out_root) / experiment
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=final.parent))
    try:
        plots = make_plots(data, rows, axis_rows, tmp)
        render(data, rows, axis_rows, recs, plots, tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if log_to_parent:
        for f in sorted(final.iterdir()):
            tracker.log_artifact(data.parent.info.run_id, f, "report")
    return Report(final, rows, axis_rows, recs, plots, choice, None if rows or axis_rows else search_rows(data), seed_rows(data))
