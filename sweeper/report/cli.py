"""``python -m sweeper.report <experiment> [--tracking-uri URI] [--out DIR] [--parent-run ID]``: rebuild a report from MLflow."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import ConfigError, StoreUnavailable
from ..masking import mask
from ..names import check_name
from ..tracking import Tracker
from .build import write_report
from .render import print_table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sweeper.report", description="Rebuild a study's tradeoff report from MLflow.")
    ap.add_argument("experiment", help="the study's MLflow experiment (= the study name)")
    ap.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db")
    ap.add_argument("--out", default="reports", help="folder for the report (a subfolder per experiment)")
    ap.add_argument("--parent-run", default=None, help="the study (parent) run to report, when the experiment holds several")
    args = ap.parse_args(argv)
    from ..stores import (
        DEFAULT_TRACKING,
        absolute_sqlite,
        check_database_reachable,
        check_not_foreign,
        check_reachable,
        check_report_folder,
        check_tracking_scheme,
        on_database_server,
        sqlite_file,
    )

    uri = absolute_sqlite(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING)
    try:
        check_name("experiment", args.experiment)
        check_report_folder("--out", Path(args.out), args.experiment)
        check_tracking_scheme("--tracking-uri" if args.tracking_uri else "MLFLOW_TRACKING_URI", uri)
        if uri.lower().startswith(("http://", "https://")):
            check_reachable(uri, "start it, or pass the --tracking-uri of a store that is up")
        if on_database_server(uri):  # MLflow would retry a dead server for minutes
            check_database_reachable("--tracking-uri" if args.tracking_uri else "MLFLOW_TRACKING_URI", uri)
        store = sqlite_file(uri)
        if store is not None and not store.exists():
            raise ConfigError("--tracking-uri", uri, "no MLflow store there; run from the folder holding mlruns/ or pass --tracking-uri")
        check_not_foreign("--tracking-uri" if args.tracking_uri else "MLFLOW_TRACKING_URI", uri, "mlflow")
        from mlflow.tracking import MlflowClient

        names = [e.name for e in MlflowClient(tracking_uri=uri).search_experiments()]  # active ones only
        tracker = Tracker(uri, args.experiment)  # refuses a deleted experiment, naming the restore command
        if args.experiment not in names:
            raise ConfigError("experiment", args.experiment, f"not found; existing: {', '.join(sorted(names)) or 'none'}")
        report = write_report(tracker, args.experiment, args.out, parent_id=args.parent_run)
    except ConfigError as exc:
        print(f"error: {mask(str(exc))}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"error: {mask(str(exc))}", file=sys.stderr)
        return 3
    print_table(report.rows, report.axis_rows, report.recommendations, report.search, report.across)
    print(f"report: {report.folder / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
