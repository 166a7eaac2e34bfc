"""What MLflow costs the population command at most: the dropout question (as in bench_population.py) run with
the real tracker and with every MLflow store call a no-op, interleaved, plus MLflow's import in a fresh process.

This bounds what moving MLflow out of the training process (an asynchronous writer process) could gain: the
no-op run still imports MLflow, so its import time is printed separately and the bound is the sum. The no-op
run's report step fails (it has no parent run to read); only its trials are timed.

    python benchmarks/bench_tracking_bound.py [--repeats 3] [--population auto]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_population import SWEEP

NULL_TRACKER = '''
import contextlib, sys, uuid
import sweeper.tracking as tracking, sweeper.worker as worker

class NullTracker:
    """Every store call returns at once; run ids are made up."""
    def __init__(self, uri, experiment, artifact_root=None):
        self.uri, self.experiment_id = uri, "0"
    def start_run(self, *a, **k): return uuid.uuid4().hex
    def search_runs(self, *a, **k): return []
    def finished_children(self, *a, **k): return []
    def metric_history(self, *a, **k): return []
    def get_run(self, *a, **k): raise RuntimeError("no store")
    @contextlib.contextmanager
    def system_metrics(self, *a, **k): yield
    def __getattr__(self, name): return lambda *a, **k: None

tracking.Tracker = worker.Tracker = NullTracker
from sweeper.__main__ import main
sys.exit(main(sys.argv[1:]))
'''


def run(null: bool, name: str, population: str, folder: Path) -> dict:
    import optuna

    args = [*SWEEP, "trainer.accelerator=cpu", f"sweep.population={population}", f"sweep.study_name={name}"]
    cmd = [sys.executable, "-c", NULL_TRACKER, *args] if null else [sys.executable, "-m", "sweeper", *args]
    start = time.time()
    proc = subprocess.run(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.time() - start
    if proc.returncode and not null:
        raise SystemExit(proc.stderr[-3000:])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'mlruns' / 'optuna.db'}").get_trials(deepcopy=False)
    first = min(t.datetime_start.timestamp() for t in trials if t.datetime_start)
    done = [t for t in trials if t.state.is_finished()]
    last = max(t.datetime_complete.timestamp() for t in done)
    return {"startup": first - start, "span": last - first, "rate": len(done) / (last - first) * 60, "to_last": last - start, "wall": wall}


def import_seconds(code: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", f"import time, torch; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--population", default="auto")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="sweeper-bench-tracking-"))
    results: dict[bool, list[dict]] = {False: [], True: []}
    for i in range(args.repeats):
        for null in (False, True):
            results[null].append(run(null, f"{'null' if null else 'real'}{i}", args.population, folder))
    med = lambda null, key: statistics.median(r[key] for r in results[null])
    mlflow_import = statistics.median(import_seconds("import mlflow, mlflow.store.tracking.sqlalchemy_store") for _ in range(3))
    print(f"[tracking] the dropout question, sweep.population={args.population}, median of {args.repeats} interleaved runs each:")
    for null, label in ((False, "MLflow tracking"), (True, "every store call a no-op")):
        print(
            f"[tracking]   {label}: startup {med(null, 'startup'):.2f} s, trials {med(null, 'span'):.2f} s "
            f"({med(null, 'rate'):.1f} trials/min), process start to last trial {med(null, 'to_last'):.2f} s"
        )
    saved = med(False, "to_last") - med(True, "to_last")
    print(
        f"[tracking]   store calls: {saved:.2f} s to the last trial ({med(True, 'rate') / med(False, 'rate'):.2f}x trials/min); "
        f"importing MLflow and its SQL store after torch: {mlflow_import:.2f} s; at most {saved + mlflow_import:.2f} s "
        f"of {med(False, 'wall'):.2f} s for the whole command, if both left the training process entirely"
    )


if __name__ == "__main__":
    main()
