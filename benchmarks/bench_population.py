"""Population training vs one model at a time, measured side by side in one run.

1. Core: K dropout configurations of the seed MLP on mnist5k, trained by the population engine vs one after
   another by the one-model path (``trial.run_trial``, no tracking), same epochs.
2. The dropout question as a whole command, from process start (20 trials, <= 10 epochs, mnist5k split
   3000/1000/1000, TPE seed 0, median pruner, MLflow on, no replication): a plain PyTorch loop over the
   same configurations (the floor: each trained for the epochs its trial trained), ``sweep.population=1``
   and ``sweep.population=K``; trials/min, wall time, startup (process start to the first trial taken),
   and the best validation accuracy.

    python benchmarks/bench_population.py [--k 16] [--population 8] [--sampler-seeds 1] [--accelerator gpu]
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

ACCELERATOR = "cpu"  # --accelerator
SWEEP = [
    "+sweep=dropout",
    "sweep.n_trials=20",
    "trainer.max_epochs=10",
    "data.split.train=0.6",
    "data.split.val=0.2",
    "data.split.test=0.2",
    "sweep.pruner.name=median",
    "sweep.replicates=0",
    "sweep.timing_repeats=0",
]


def one_at_a_time_vs_population(cfgs: list, epochs: int) -> tuple[float, float]:
    """Seconds to train these configurations one after another on the one-model path, then as one population."""
    from sweeper.population import Population, new_member, train_until_done
    from sweeper.population_size import device
    from sweeper.trial import data_order_seed, prepare, run_trial

    prepared = [prepare(c) for c in cfgs]
    t0 = time.perf_counter()
    for c, p in zip(cfgs, prepared):
        run_trial(c, None, prepared=p, evaluate_test=False)
    single = time.perf_counter() - t0
    s = prepared[0].splits
    t0 = time.perf_counter()
    pop = Population(s, 32, "relu", device(cfgs[0]))
    for c, p in zip(cfgs, prepared):
        pop.add(new_member(None, c, p.regularizers, s.input_shape, s.n_classes, epochs, data_order_seed(c)))
    train_until_done(pop)
    return single, time.perf_counter() - t0


def core(k: int, epochs: int, model: str = "mlp") -> None:
    import torch

    from sweeper import config, runtime

    runtime.setup()
    base = [f"model={model}", f"trainer.max_epochs={epochs}", f"trainer.accelerator={ACCELERATOR}", "regularizer=dropout"]
    cfgs = [config.load([*base, f"regularizer.p={0.05 + 0.5 * i / k}", f"seed={i}"]) for i in range(k)]
    single, together = one_at_a_time_vs_population(cfgs, epochs)
    print(
        f"[core] {model}: {k} members x {epochs} epochs, mnist5k, {torch.get_num_threads()} threads: one at a time "
        f"{single:.1f} s, population {together:.1f} s: {single / together:.2f}x"
    )


def scaling(sizes: list[int], model: list[str] = []) -> None:  # noqa: B006 (read only)
    """Per-member epoch time by population size and model size (the rule behind ``sweep.population=auto``)."""
    import torch

    from sweeper import config, runtime
    from sweeper.population import Population, new_member
    from sweeper.population_size import device, param_count
    from sweeper.trial import data_order_seed, prepare

    runtime.setup()
    base = [f"trainer.accelerator={ACCELERATOR}", "regularizer=dropout", "regularizer.p=0.2", *model]
    cfg = config.load(base)
    p = prepare(cfg)
    s = p.splits
    line = []
    for k in sizes:
        pop = Population(s, 32, "relu", device(cfg))
        for i in range(k):
            c = config.load([*base, f"seed={i}"])
            pop.add(new_member(None, c, p.regularizers, s.input_shape, s.n_classes, 100, data_order_seed(c)))
        pop.train_epoch()  # warm-up
        t0 = time.perf_counter()
        for _ in range(2):
            pop.train_epoch()
        per_member = (time.perf_counter() - t0) / 2 / k
        line.append(f"K={k}: {per_member * 1000:.0f} ms")
    n = param_count(cfg, s.input_shape, s.n_classes)
    print(
        f"[scaling] per-member epoch time, {cfg.model.name.upper()} {list(cfg.model.channels) if cfg.model.name == 'cnn' else ''}"
        f"{list(cfg.model.hidden)} ({n:,} parameters), mnist5k, {device(cfg)}, "
        f"{torch.get_num_threads()} threads: " + ", ".join(line)
    )


def cnn_grouped_vs_separate(k: int = 8, batch: int = 32, steps: int = 20) -> None:
    """The CNN's conv blocks alone: a training step (forward + backward) of the seed CNN's conv blocks for K members
    as grouped convolutions (groups=K, what the population engine runs) vs K separate models, no framework."""
    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda" if ACCELERATOR == "gpu" and torch.cuda.is_available() else "cpu")

    def blocks(x, w1, w2, g):  # conv(3x3) -> ReLU -> max-pool, twice (models.CNN with channels [16, 32])
        h = F.max_pool2d(F.relu(F.conv2d(x, w1, padding=1, groups=g)), 2)
        return F.max_pool2d(F.relu(F.conv2d(h, w2, padding=1, groups=g)), 2)

    weights = lambda n: [torch.randn(n * c, c_in, 3, 3, device=dev, requires_grad=True) for c_in, c in ((1, 16), (16, 32))]
    xs = torch.randn(batch, k, 28, 28, device=dev)
    stacked, alone = weights(k), [weights(1) for _ in range(k)]

    def timed(step) -> float:
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / steps * 1000

    grouped = timed(lambda: blocks(xs, *stacked, k).sum().backward())
    separate = timed(lambda: [blocks(xs[:, i : i + 1], w1, w2, 1).sum().backward() for i, (w1, w2) in enumerate(alone)])
    print(
        f"[cnn] conv blocks of the seed CNN, {k} members x {batch} rows, forward + backward on {dev.type}: grouped convolutions "
        f"{grouped:.1f} ms/step, {k} separate models {separate:.1f} ms/step: {separate / grouped:.2f}x"
    )


def replication(configs: int, seeds: int, epochs: int) -> None:
    """Replicates: ``configs`` configurations x ``seeds`` seeds, one at a time vs as one population."""
    from sweeper import config, runtime

    runtime.setup()
    techniques = [["regularizer=none"], ["regularizer=l2", "regularizer.l2=1e-4"], ["regularizer=dropout", "regularizer.p=0.2"]][:configs]
    cfgs = [
        config.load([f"trainer.max_epochs={epochs}", f"trainer.accelerator={ACCELERATOR}", *t, f"seed={1000 + s}"])
        for t in techniques
        for s in range(seeds)
    ]
    single, together = one_at_a_time_vs_population(cfgs, epochs)
    print(
        f"[replication] {configs} configurations x {seeds} seeds x {epochs} epochs: one at a time {single:.1f} s, "
        f"one population {together:.1f} s: {single / together:.2f}x"
    )


def command(args: list[str], folder: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of ``python -m sweeper args`` run in ``folder``. RSS is sampled every 20 ms:
    a child's ru_maxrss would not do, Linux carries this (large) benchmark process's peak over into it at exec."""
    import psutil

    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=folder, stdout=subprocess.DEVNULL, stderr=err)
        child, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                peak = max(peak, child.memory_info().rss)
            except psutil.Error:
                break
            time.sleep(0.02)
        proc.wait()
        wall = time.perf_counter() - t0
        if proc.returncode:
            err.seek(0)
            raise SystemExit(err.read().decode()[-3000:])
    return wall, peak / 2**20


def sweep(population: str, sampler_seed: int, folder: Path) -> dict:
    import optuna

    name = f"bench_p{population}_s{sampler_seed}"
    args = [*SWEEP, f"trainer.accelerator={ACCELERATOR}", f"sweep.population={population}", f"sweep.sampler.seed={sampler_seed}"]
    start = time.time()
    wall, rss = command([*args, f"sweep.study_name={name}"], folder)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'mlruns' / 'optuna.db'}")
    trials = study.get_trials(deepcopy=False)
    first = min(t.datetime_start.timestamp() for t in trials if t.datetime_start)
    done = [t for t in trials if t.state.is_finished()]
    span = max(t.datetime_complete.timestamp() for t in done) - first
    best = max(t.value for t in done if t.value is not None)
    return {"wall": wall, "rss": rss, "startup": first - start, "rate": len(done) / span * 60, "best": best, "trials": trials}


def defaults(folder: Path) -> None:
    """The default commands, whole (replication, timing probes and report included), one model at a time vs auto."""
    for sweep_name in ("dropout", "compare"):
        walls = {}
        for population in ("1", "auto"):
            where = folder / f"defaults_{sweep_name}_{population}"
            where.mkdir()
            walls[population], rss = command([f"+sweep={sweep_name}", f"sweep.population={population}"], where)
            line = f"python -m sweeper +sweep={sweep_name} sweep.population={population}"
            print(f"[defaults] {line}: {walls[population]:.1f} s, peak RSS {rss:.0f} MiB")
        print(f"[defaults]   +sweep={sweep_name}: auto {walls['1'] / walls['auto']:.2f}x faster than 1")


def plain_loop(trials) -> float:
    """The floor: the same configurations trained by a bare PyTorch loop, no tracking, no framework."""
    import torch
    import torch.nn.functional as F

    from sweeper import config
    from sweeper.data import load_splits

    cfg = config.load([a for a in SWEEP if not a.startswith(("+sweep", "sweep."))])
    s = load_splits(cfg.data)
    x, y = s.x_train.flatten(1), s.y_train
    xv, yv = s.x_val.flatten(1), s.y_val
    t0 = time.perf_counter()
    for t in trials:
        torch.manual_seed(t.number)
        p = float(t.params.get("regularizer.p", 0.0))
        layers: list[torch.nn.Module] = []
        for a, b in ((784, 64), (64, 32)):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()] + ([torch.nn.Dropout(p)] if p else [])
        model = torch.nn.Sequential(*layers, torch.nn.Linear(32, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(t.number)
        for _ in range(int(t.user_attrs.get("epochs_trained", 10))):
            model.train()
            perm = torch.randperm(len(y), generator=g)
            for i in range(0, len(y), 32):
                idx = perm[i : i + 32]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                F.cross_entropy(model(xv), yv)
                (model(x).argmax(1) == y).float().mean()
    return time.perf_counter() - t0


def main() -> None:
    global ACCELERATOR
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=16, help="members in the core comparison")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--population", default="auto", help="sweep.population of the whole-command comparison")
    parser.add_argument("--sampler-seeds", type=int, default=1)
    parser.add_argument("--sizes", default="1,2,4,8,16,32", help="population sizes of the scaling part")
    parser.add_argument("--accelerator", default="cpu", help="cpu or gpu (benchmarks/gpu_check.sh)")
    parser.add_argument("--skip-core", action="store_true", help="skip the core, scaling and replication parts")
    parser.add_argument("--only-core", action="store_true", help="only the core, scaling and replication parts")
    parser.add_argument("--defaults", action="store_true", help="also time the default dropout and compare commands")
    args = parser.parse_args()
    ACCELERATOR = args.accelerator
    sizes = [int(k) for k in args.sizes.split(",")]
    if not args.skip_core:
        core(args.k, args.epochs)
        scaling(sizes)
        scaling([1, 8], ["model.hidden=[256,128]"])
        scaling([1, 8], ["model.hidden=[1024,1024]"])
        replication(3, 10, 5)
        for k in (4, 8):
            core(k, 2, "cnn")
        scaling([1, 2, 4, 8], ["model=cnn"])
        cnn_grouped_vs_separate()
    if args.only_core:
        return
    folder = Path(tempfile.mkdtemp(prefix="sweeper-bench-population-"))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    results: dict[str, list[dict]] = {"1": [], args.population: []}
    for seed in range(args.sampler_seeds):
        for k in results:
            results[k].append(sweep(k, seed, folder))
    floor = plain_loop(results["1"][0]["trials"])
    med = lambda k, key: statistics.median(r[key] for r in results[k])
    print(f"[sweep] the dropout question (20 trials, <= 10 epochs, 3000/1000/1000, median pruner), {args.sampler_seeds} sampler seed(s):")
    print(f"[sweep]   plain PyTorch loop over the same configurations (floor): {floor:.1f} s")
    for k in results:
        print(
            f"[sweep]   sweep.population={k}: command {med(k, 'wall'):.1f} s ({med(k, 'wall') / floor:.2f}x the floor), "
            f"startup {med(k, 'startup'):.1f} s, {med(k, 'rate'):.1f} trials/min, peak RSS {med(k, 'rss'):.0f} MiB, best val_acc "
            + ", ".join(f"{r['best']:.4f}" for r in results[k])
        )
    p = args.population
    rate, wall = med(p, "rate") / med("1", "rate"), med("1", "wall") / med(p, "wall")
    print(f"[sweep]   population={p} vs 1: {rate:.2f}x trials/min, {wall:.2f}x command time")
    from sweeper import config
    from sweeper.data import load_splits
    from sweeper.population_size import population_bytes, resolve

    cfg = config.load([*SWEEP, f"trainer.accelerator={ACCELERATOR}", f"sweep.population={p}"])
    k, s = resolve(cfg), load_splits(cfg.data)
    growth = med(p, "rss") - med("1", "rss")
    print(
        f"[sweep]   peak RSS grew {growth:.0f} MiB for K={k} members; sweep.population's estimate of K members' own memory: "
        f"{population_bytes(cfg, s.input_shape, s.n_classes, k) / 2**20:.0f} MiB"
    )
    if args.defaults:
        defaults(folder)


if __name__ == "__main__":
    main()
