"""What a person sees of a study: a live progress bar, the final table, and the parent run's artifacts."""
from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState
from tqdm import tqdm

from . import config as config_mod
from .study import counts, slots
from .tracking import Tracker


class Progress:
    """Polls the study's storage once a second (covers every worker process) and draws one bar."""

    def __init__(self, study: optuna.Study, total: int, interval: float = 1.0):
        self.study, self.total, self.interval = study, total, interval
        self.stop = threading.Event()
        self.bar = tqdm(total=total, desc=f"study {study.study_name}", unit="trial", file=sys.stderr,
                        dynamic_ncols=True, leave=True)
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def refresh(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        c = counts(trials)
        done = c["complete"] + c["pruned"] + c["fail"]
        self.bar.total = max(self.total, len(slots(trials)))
        self.bar.n = done
        best = _best_text(self.study, trials)
        self.bar.set_postfix_str(f"pruned={c['pruned']} failed={c['fail']} running={c['running']} best={best}",
                                 refresh=False)
        self.bar.refresh()

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:
                pass

    def __enter__(self):
        self.refresh()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        try:
            self.refresh()
        finally:
            self.bar.close()


def _best_text(study: optuna.Study, trials: list) -> str:
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if not done:
        return "-"
    if len(study.directions) > 1:
        return f"{len(study.best_trials)} on Pareto front"
    best = study.best_trial
    return f"{best.value:.4f} (#{best.number})"


def top_trials(study: optuna.Study, k: int) -> list:
    trials = [t for t in slots(study.get_trials(deepcopy=False)) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if len(study.directions) > 1:
        front = {t.number for t in study.best_trials}
        return sorted(trials, key=lambda t: (t.number not in front, t.number))[:k]
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1

    def key(t):
        done = t.state == TrialState.COMPLETE
        return (not done, sign * (t.value if done else t.intermediate_values.get(max(t.intermediate_values, default=0), 0)))

    return sorted(trials, key=key)[:k]


def table(study: optuna.Study, cfg: DictConfig) -> str:
    objs = config_mod.objectives(cfg.sweep)
    head = ["trial", "state", *[m for m, _ in objs], "technique", "epochs", "params"]
    rows = []
    for t in top_trials(study, int(cfg.sweep.top_k)):
        values = [f"{v:.4f}" for v in t.values] if t.values else ["-"] * len(objs)
        params = "baseline" if t.user_attrs.get("baseline") else \
            ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        rows.append([str(t.number), t.state.name.lower(), *values, str(t.user_attrs.get("technique", "")),
                     str(t.user_attrs.get("epochs_trained", "")), params])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def _plots(study: optuna.Study, folder: Path, objective_names: list[str]) -> list[str]:
    """Optuna's own plots as PNGs; a plot that needs more finished trials is skipped, not faked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    made = []
    jobs = []
    if len(objective_names) == 1:
        jobs += [("optimization_history", lambda: ovm.plot_optimization_history(study, target_name=objective_names[0])),
                 ("param_importances", lambda: ovm.plot_param_importances(study)),
                 ("intermediate_values", lambda: ovm.plot_intermediate_values(study))]
    else:
        for i, name in enumerate(objective_names):
            jobs.append((f"optimization_history_{name}", lambda i=i, name=name: ovm.plot_optimization_history(
                study, target=lambda t: t.values[i], target_name=name)))
        jobs.append(("pareto_front", lambda: ovm.plot_pareto_front(study, target_names=objective_names)))
    for name, job in jobs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = job()
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            fig.savefig(folder / f"{name}.png", dpi=100)
            plt.close(fig)
            made.append(name)
        except Exception:  # too few trials for this plot (e.g. importances need 2+ completed)
            plt.close("all")
    return made


def finalize(study: optuna.Study, cfg: DictConfig, tracker: Tracker, parent: str, argv: list[str]) -> int:
    """Print the final table; when every slot is finished: best values and plots to the parent run,
    replication of each technique's best over seeds, the tradeoff report, the registered model."""
    trials = study.get_trials(deepcopy=False)
    c = counts(trials)
    objs = config_mod.objectives(cfg.sweep)
    names = [m for m, _ in objs]
    pending = c["waiting"] + c["running"]
    print(f"\nstudy {study.study_name}: {c['complete']} completed, {c['pruned']} pruned, {c['fail']} failed"
          + (f", {pending} still pending" if pending else ""))
    print(table(study, cfg))
    if c["complete"] == 0:
        print("no trial completed: nothing to compare", file=sys.stderr)
    if pending:
        return 0
    summary: dict = {"study": study.study_name, "counts": c, "objectives": objs}
    if c["complete"]:
        if len(objs) == 1:
            best = study.best_trial
            summary["best"] = {"number": best.number, "value": best.value, "params": best.params}
            tracker.log_metrics(parent, {f"best_{names[0]}": best.value})
            tracker.set_tags(parent, {"best_trial": best.number, "best_params": json.dumps(best.params)})
        else:
            summary["pareto_front"] = [{"number": t.number, "values": t.values, "params": t.params}
                                       for t in study.best_trials]
            tracker.set_tags(parent, {"pareto_trials": [t.number for t in study.best_trials]})
    tracker.log_metrics(parent, {"n_completed": c["complete"], "n_pruned": c["pruned"], "n_failed": c["fail"]})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        made = _plots(study, folder, names)
        for name in made:
            tracker.log_artifact(parent, folder / f"{name}.png", "plots")
    summary["plots"] = made
    tracker.log_json(parent, summary, "study_summary.json")
    tracker.log_text(parent, table(study, cfg), "top_trials.txt")
    print(f"parent run {parent} in experiment {study.study_name!r}: plots {', '.join(made) or 'none'}")
    if c["complete"]:
        from .replicate import replicate
        from .report import print_table, register_recommended, write_report

        t0 = time.perf_counter()
        n_rep = replicate(study, cfg, argv, tracker, parent)
        t1 = time.perf_counter()
        report = write_report(tracker, study.study_name, cfg.sweep.report_dir)
        t2 = time.perf_counter()
        tracker.log_metrics(parent, {"replication_s": t1 - t0, "report_s": t2 - t1})
        print()
        print_table(report.rows, report.axis_rows, report.recommendations)
        registered = register_recommended(tracker, report, study.study_name)
        if registered:
            print(f"registered model: {registered}")
        print(f"report: {report.folder / 'report.html'}  ({n_rep} replicate runs in {t1 - t0:.1f} s, "
              f"report in {t2 - t1:.1f} s)")
    tracker.end_run(parent, "FINISHED")
    return 0
