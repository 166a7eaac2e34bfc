"""Build every output of a report in a temporary folder, then move it into place (never a partial report)."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..masking import mask
from ..names import check_name
from ..tracking import Tracker
from .collect import collect
from .plots import make_plots
from .recommend import _small_data, accuracy_choice, chance_warning, deleted_warning, recommend
from .render import render, search_rows, seed_rows
from .rows import Row, axis_table, build_rows


def publish(tmp: Path, final: Path, tries: int = 50) -> None:
    """Move the finished folder ``tmp`` to ``final``, replacing what is there. Two invocations finishing one study
    write its report at the same moment (from the same runs); "remove, then rename" failed one of them (the other
    had removed a file first, or renamed its own folder in between: 'Directory not empty'). Here each moves the old
    folder aside under a name of its own (already gone: someone else moved it) and renames again when another
    folder took the place in between; the last rename wins, and every reader sees a whole report."""
    for _ in range(tries):
        aside = final.parent / f".old-{final.name}-{uuid.uuid4().hex}"
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            pass
        try:
            os.rename(tmp, final)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)
    raise OSError(f"report folder {final}: still replaced by other writers after {tries} tries")


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
    at_chance: str | None = None  # every replicated configuration at chance level: why nothing is registered


def write_report(
    tracker: Tracker, experiment: str, out_root: str | Path, log_to_parent: bool = True, parent_id: str | None = None
) -> Report:
    """Build every output in a temporary folder, then move it to <out_root>/<experiment>/ (never partial)."""
    check_name("experiment", experiment)  # it becomes a folder name under out_root
    data = collect(tracker, experiment, parent_id)
    rows = build_rows(data)
    axis_rows = axis_table(data)
    choice = accuracy_choice(rows)
    recs = (
        recommend(rows, axis_rows, data.axis, choice, data.margin)
        if rows
        else ([("small data", _small_data(axis_rows, data.axis))] if axis_rows else [])
    )
    at_chance = chance_warning(rows, data.classes, data.test_rows)
    if at_chance:
        recs = [("warning", at_chance), *recs]
    deleted = deleted_warning(data.deleted, mask(tracker.uri))
    if deleted:
        recs = [("warning", deleted), *recs]
    final = Path(out_root) / experiment
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=final.parent))
    try:
        plots = make_plots(data, rows, axis_rows, tmp)
        render(data, rows, axis_rows, recs, plots, tmp)
        if log_to_parent:  # from the private folder: once published, another invocation may swap it out
            for f in sorted(tmp.iterdir()):
                tracker.log_artifact(data.parent.info.run_id, f, "report")
        publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    search = None if rows or axis_rows else search_rows(data)
    return Report(final, rows, axis_rows, recs, plots, choice, search, seed_rows(data), at_chance)
