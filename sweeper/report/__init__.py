"""The tradeoff report, built from the MLflow store alone (so it can be rebuilt any time, local or server).

``python -m sweeper.report <experiment> [--tracking-uri URI] [--out DIR]``

Flow: ``collect`` (parent, trial and replicate runs) -> ``rows`` (statistics per configuration)
-> ``recommend`` (one choice per priority) -> ``plots`` -> ``render`` (md/html/csv), assembled by
``build.write_report`` into a temporary folder and moved into place only when complete.
"""

from .build import Report, write_report
from .cli import main
from .collect import StudyData, collect
from .recommend import accuracy_choice, recommend
from .render import print_table
from .rows import BASELINE, Row, axis_table, build_rows

__all__ = [
    "BASELINE",
    "Report",
    "Row",
    "StudyData",
    "accuracy_choice",
    "axis_table",
    "build_rows",
    "collect",
    "main",
    "print_table",
    "recommend",
    "write_report",
]
