"""What a person sees of a running study: one live progress bar, and the final table of top trials."""

from __future__ import annotations

import sys
import threading
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from . import config as config_mod
from .study import counts, slots


class Progress:
    """Polls the study's storage once a second (covers every worker process) and draws one bar on a terminal. When
    stderr is not a terminal (a Slurm or `docker compose logs` file, a pipe) it writes one plain line each time a
    trial finishes instead: a redrawn bar there is a line of carriage returns every second, for hours."""

    def __init__(self, study: optuna.Study, total: int, interval: float = 1.0):
        self.study, self.total, self.interval = study, total, interval
        self.stop = threading.Event()
        self.bar = None
        if sys.stderr.isatty():
            self.bar = tqdm(total=total, desc=f"study {study.study_name}", unit="trial", file=sys.stderr, dynamic_ncols=True, leave=True)
        self.last_line: tuple[int, str] | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def refresh(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        c = counts(trials)
        done = c["complete"] + c["pruned"] + c["fail"]
        total = max(self.total, len(slots(trials)))
        best = _best_text(self.study, trials)
        if self.bar is None:
            if self.last_line != (done, best):
                self.last_line = (done, best)
                print(
                    f"study {self.study.study_name}: {done}/{total} finished, pruned={c['pruned']} failed={c['fail']} "
                    f"running={c['running']} best={best}",
                    file=sys.stderr,
                    flush=True,
                )
            return
        self.bar.total, self.bar.n = total, done
        self.bar.set_postfix_str(f"pruned={c['pruned']} failed={c['fail']} running={c['running']} best={best}", refresh=False)
        self.bar.refresh()

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:
                pass

    def __enter__(self) -> Progress:
        self.refresh()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        try:
            self.refresh()
        finally:
            if self.bar is not None:
                self.bar.close()


def _best_text(study: optuna.Study, trials: list[FrozenTrial]) -> str:
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if not done:
        return "-"
    if len(study.directions) > 1:
        return f"{len(study.best_trials)} on Pareto front"
    best = study.best_trial
    return f"{best.value:.4f} (#{best.number})"


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    trials = [t for t in slots(study.get_trials(deepcopy=False)) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if len(study.directions) > 1:
        front = {t.number for t in study.best_trials}
        return sorted(trials, key=lambda t: (t.number not in front, t.number))[:k]
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1

    def key(t: FrozenTrial) -> tuple[bool, Any]:
        done = t.state == TrialState.COMPLETE
        last = t.intermediate_values.get(max(t.intermediate_values, default=0), 0)
        value = t.value if done else last
        return (not done, sign * (value or 0.0))

    return sorted(trials, key=key)[:k]


def table(study: optuna.Study, cfg: DictConfig) -> str:
    """The final table printed after a study (and logged to its parent run as top_trials.txt)."""
    objs = config_mod.objectives(cfg.sweep)
    head = ["trial", "state", *[m for m, _ in objs], "technique", "epochs", "params"]
    rows = []
    for t in top_trials(study, int(cfg.sweep.top_k)):
        values = [f"{v:.4f}" for v in t.values] if t.values else ["-"] * len(objs)
        params = (
            "baseline"
            if t.user_attrs.get("baseline")
            else ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        )
        rows.append(
            [
                str(t.number),
                t.state.name.lower(),
                *values,
                str(t.user_attrs.get("technique", "")),
                str(t.user_attrs.get("epochs_trained", "")),
                params,
            ]
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()

    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)])
