"""What the Optuna storage costs per trial, and how many trials per second one PostgreSQL serves.

Each simulated trial does the storage work of a sweeper trial, without training: pop a waiting slot
(atomic row update), record a heartbeat, suggest one parameter, set the user attrs a worker sets,
report and check pruning for every epoch (10), tell. First one worker alone (the per-trial storage
cost), then 1, 2, 4 and 8 worker processes hammering the same study (the storage's throughput on this
machine; the workers compete with PostgreSQL for the same 2 cores, so this is a lower bound).

    python benchmarks/bench_storage.py     # needs the local PostgreSQL (trust auth), like the tests
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
import uuid

import optuna
import psycopg2

PG = os.environ.get("SWEEPER_TEST_PG", "postgresql://root@127.0.0.1:5432/postgres")
EPOCHS = 10
optuna.logging.set_verbosity(optuna.logging.ERROR)


def _storage(url: str):
    from sweeper.stores import make_storage

    return make_storage(url, heartbeat_interval=5, grace_period=20)


def one_trial(study: optuna.Study, storage) -> bool:
    from sweeper import optuna_compat

    popped = optuna_compat.pop_waiting_trial(study, storage)
    if popped is None:
        return False
    trial, trial_id = popped
    storage.record_heartbeat(trial_id)
    p = trial.suggest_float("regularizer.p", 0.05, 0.6)
    for key, value in (("worker", f"host:{os.getpid()}"), ("technique", "dropout"), ("overrides", [f"regularizer.p={p}"])):
        trial.set_user_attr(key, value)
    for epoch in range(EPOCHS):
        trial.report(0.5 + epoch / 100 + p / 10, epoch)
        trial.should_prune()
    study.tell(trial, 0.6 + p / 10)
    return True


def worker(url: str, name: str, out) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    storage = _storage(url)
    study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler())
    n = 0
    while one_trial(study, storage):
        n += 1
    out.put(n)


def make_study(url: str, name: str, n: int) -> None:
    study = optuna.create_study(study_name=name, storage=_storage(url), direction="maximize")
    for _ in range(n):
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING))


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    db = f"bench_storage_{uuid.uuid4().hex[:6]}"
    admin = psycopg2.connect(PG)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{db}"')
    url = PG.rsplit("/", 1)[0] + "/" + db
    try:
        make_study(url, "single", 40)
        storage = _storage(url)
        study = optuna.load_study(study_name="single", storage=storage, sampler=optuna.samplers.RandomSampler())
        costs = []
        while True:
            t0 = time.perf_counter()
            if not one_trial(study, storage):
                break
            costs.append(time.perf_counter() - t0)
        per_trial = statistics.median(costs[5:])
        print(f"[storage] one worker: {per_trial * 1000:.0f} ms of storage work per trial ({EPOCHS} epochs; median of {len(costs) - 5})")
        ctx = mp.get_context("spawn")
        for n in (1, 2, 4, 8):
            name, total = f"w{n}", 40 * n
            make_study(url, name, total)
            out = ctx.Queue()
            procs = [ctx.Process(target=worker, args=(url, name, out)) for _ in range(n)]
            for p in procs:
                p.start()
            done_study = optuna.load_study(study_name=name, storage=storage)
            for p in procs:
                p.join()
            done = sum(out.get() for _ in procs)
            trials = [t for t in done_study.get_trials(deepcopy=False) if t.state.is_finished()]
            span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
            print(f"[storage] {n} worker processes: {done / span:.1f} trials/s ({done} trials in {span:.1f} s)")
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
