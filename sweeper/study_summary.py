"""When every slot is finished: the study's best values, summary and Optuna's own plots on its parent run."""

from __future__ import annotations

import functools
import json
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial

from . import config as config_mod
from .progress import table
from .tracking import Tracker


def record_study(study: optuna.Study, cfg: DictConfig, tracker: Tracker, parent: str, counts: dict[str, int]) -> list[str]:
    """Best values/tags, counts, study_summary.json, top_trials.txt and plots/*.png; returns the plot names."""
    objs = config_mod.objectives(cfg.sweep)
    names = [m for m, _ in objs]
    summary: dict[str, Any] = {"study": study.study_name, "counts": counts, "objectives": objs}
    if counts["complete"]:
        if len(objs) == 1:
            best = study.best_trial
            summary["best"] = {"number": best.number, "value": best.value, "params": best.params}
            tracker.log_metrics(parent, {f"best_{names[0]}": best.value})
            tracker.set_tags(parent, {"best_trial": best.number, "best_params": json.dumps(best.params)})
        else:
            summary["pareto_front"] = [{"number": t.number, "values": t.values, "params": t.params} for t in study.best_trials]
            tracker.set_tags(parent, {"pareto_trials": [t.number for t in study.best_trials]})
    tracker.log_metrics(parent, {"n_completed": counts["complete"], "n_pruned": counts["pruned"], "n_failed": counts["fail"]})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        made = optuna_plots(study, folder, names)
        for name in made:
            tracker.log_artifact(parent, folder / f"{name}.png", "plots")
    summary["plots"] = made
    tracker.log_json(parent, summary, "study_summary.json")
    tracker.log_text(parent, table(study, cfg), "top_trials.txt")
    return made


def _history_of_objective(study: optuna.Study, i: int, name: str) -> Any:
    from optuna.visualization import matplotlib as ovm

    return ovm.plot_optimization_history(study, target=lambda t: t.values[i], target_name=name)


def searched_params(trials: list[FrozenTrial]) -> set[str]:
    """The parameters the completed trials searched (the enqueued baseline has none)."""
    return {k for t in trials if t.state.name == "COMPLETE" for k in t.params}


def optuna_plots(study: optuna.Study, folder: Path, objective_names: list[str]) -> list[str]:
    """Optuna's own plots as PNGs; a plot that needs more finished trials, or would say nothing (the importance of
    the only searched parameter), is skipped, not faked. Skipping that one also spares the sweep scikit-learn's
    import (``optuna.importance`` imports it even for its default evaluator: ~0.75 s here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    made = []
    jobs: list[tuple[str, Callable[[], Any]]] = []
    trials = study.get_trials(deepcopy=False)
    if len(objective_names) == 1:
        jobs.append(("optimization_history", lambda: ovm.plot_optimization_history(study, target_name=objective_names[0])))
        if len(searched_params(trials)) >= 2:  # importances are shares of 1: one parameter always gets all of it
            jobs.append(("param_importances", lambda: ovm.plot_param_importances(study)))
        if any(t.intermediate_values for t in trials):  # nothing to draw without
            jobs.append(("intermediate_values", lambda: ovm.plot_intermediate_values(study)))
    else:
        for i, name in enumerate(objective_names):
            jobs.append(
                (
                    f"optimization_history_{name}",
                    functools.partial(_history_of_objective, study, i, name),
                )
            )
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
