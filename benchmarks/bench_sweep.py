"""Sweep-level benchmarks (issue #3), each with its baseline measured in the same run.

    python benchmarks/bench_sweep.py [--only wall,pruning,workers,mlflow]

- wall:    `python -m sweeper +sweep=dropout` with default settings, wall time of the whole command.
- pruning: +sweep=dropout with the median pruner vs pruner=none (same seed and trial count):
           total epochs trained and best validation accuracy.
- workers: workers=1 vs workers=2 on the same study shape: trials per minute (from trial timestamps,
           so process start-up is excluded) and whole-command wall time.
- mlflow:  one trial's wall time with MLflow tracking (SQLite store) vs without, interleaved repeats.
Every study runs in a fresh temporary folder (its own ./mlruns).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sweep(args: list[str]) -> tuple[float, optuna.Study, str]:
    folder = tempfile.mkdtemp(prefix="sweeper-bench-")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    name = next((a.split("=", 1)[1] for a in args if a.startswith("sweep.study_name=")), "dropout")
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/mlruns/optuna.db")
    return wall, study, folder


def finished(study):
    return [t for t in study.trials if t.state.is_finished()]


def bench_wall() -> None:
    wall, study, _ = sweep(["+sweep=dropout"])
    states = [t.state.name for t in finished(study)]
    print(
        f"[wall] python -m sweeper +sweep=dropout: {wall:.1f} s for {len(states)} trials "
        f"({states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned); best val_acc "
        f"{study.best_value:.4f}"
    )


def bench_pruning() -> None:
    out = {}
    for label, extra in (("median pruner", []), ("no pruning", ["sweep.pruner.name=none"])):
        wall, study, _ = sweep(["+sweep=dropout", *extra])
        epochs = sum(t.user_attrs.get("epochs_trained", 0) for t in finished(study))
        out[label] = (epochs, study.best_value, wall)
        print(f"[pruning] {label:<13}: {epochs:4d} epochs, best val_acc {study.best_value:.4f}, {wall:.1f} s")
    (e1, b1, _), (e0, b0, _) = out["median pruner"], out["no pruning"]
    print(
        f"[pruning] epochs ratio {e1 / e0:.2f} (target <= 0.60); best val_acc difference {(b1 - b0) * 100:+.2f} points (target within 0.5)"
    )


def trials_per_minute(study) -> float:
    done = finished(study)
    start = min(t.datetime_start for t in done)
    end = max(t.datetime_complete for t in done)
    return len(done) / ((end - start).total_seconds() / 60)


def bench_workers() -> None:
    rates = {}
    for n in (1, 2):
        wall, study, _ = sweep(["+sweep=dropout", "sweep.n_trials=16", "sweep.pruner.name=none", "trainer.max_epochs=10", f"workers={n}"])
        rates[n] = trials_per_minute(study)
        print(f"[workers] workers={n}: {rates[n]:.1f} trials/min, whole command {wall:.1f} s")
    print(f"[workers] speed-up {rates[2] / rates[1]:.2f}x (target >= 1.6x) on {os.cpu_count()} cores")


def bench_mlflow(repeats: int = 5) -> None:
    from sweeper import config
    from sweeper.tracking import Tracker
    from sweeper.trial import prepare, run_trial

    folder = Path(tempfile.mkdtemp(prefix="sweeper-bench-"))
    cfg = config.load(["trainer.max_epochs=20", "regularizer=dropout"])
    prepared = prepare(cfg)
    tracker = Tracker(f"sqlite:///{folder}/mlflow.db", "bench")
    run_trial(cfg, None, prepared=prepared)  # warm-up
    with_t, without_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_trial(cfg, None, prepared=prepared, evaluate_test=False)
        without_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_trial(cfg, tracker, prepared=prepared, evaluate_test=False, parent_run_id=None)
        with_t.append(time.perf_counter() - t0)
    a, b = statistics.median(without_t), statistics.median(with_t)
    print(
        f"[mlflow] trial without tracking {a:.3f} s, with SQLite MLflow tracking {b:.3f} s: "
        f"overhead {(b - a):.3f} s = {(b - a) / a * 100:.1f}% (target < 5%)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="wall,pruning,workers,mlflow")
    chosen = ap.parse_args().only.split(",")
    for name in chosen:
        globals()[f"bench_{name}"]()


if __name__ == "__main__":
    main()
