"""Does pruning change the answer? Pruned vs unpruned `+sweep=dropout` over several sampler seeds.

Stronger dropout learns more slowly in the first epochs, so a pruner that compares early curves can
remove exactly the strong-regularization trials a study is meant to evaluate. For each sampler seed
and pruner variant, this runs the real sweep (`python -m sweeper +sweep=dropout`, replication off),
takes the study's selection (its best trial on validation; the baseline counts), and replicates every
selection on the same fresh seeds. A variant passes when, for every sampler seed, the paired 95% CI
of (its selection's test accuracy - the unpruned selection's) reaches 0 or lies above it, while it
trains <= 60% of the unpruned studies' epochs.

    python benchmarks/pruning_bias.py                     # 3 sampler seeds, 5 variants, 10 replicate seeds (~30 min, 1 core)
    python benchmarks/pruning_bias.py --variants none old --sampler-seeds 0
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {
    "none": ["sweep.pruner.name=none"],
    "old": ["sweep.pruner.name=median", "sweep.pruner.n_warmup_steps=2", "sweep.pruner.warmup_fraction=null"],  # the previous default
    "median_w0.3": ["sweep.pruner.name=median", "sweep.pruner.warmup_fraction=0.3"],
    "median_w0.5": ["sweep.pruner.name=median", "sweep.pruner.warmup_fraction=0.5"],
    "top3rd_w0.3": ["sweep.pruner.name=percentile", "sweep.pruner.percentile=66.7", "sweep.pruner.warmup_fraction=0.3"],
    "hyperband": ["sweep.pruner.name=hyperband", "sweep.pruner.min_resource=2", "sweep.pruner.reduction_factor=3"],
}


def run_study(folder: Path, name: str, sampler_seed: int, overrides: list[str], extra: list[str]) -> dict:
    import optuna

    args = [
        sys.executable,
        "-m",
        "sweeper",
        "+sweep=dropout",
        f"sweep.study_name={name}",
        f"sweep.sampler.seed={sampler_seed}",
        "sweep.replicates=0",
        "trainer.threads=1",
        *overrides,
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=folder, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/mlruns/optuna.db")
    trials = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    best = study.best_trial
    return {
        "p": 0.0 if best.user_attrs.get("baseline") else float(best.params["regularizer.p"]),
        "epochs": sum(int(t.user_attrs.get("epochs_trained", 0)) for t in trials),
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sampler-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=["none", "old", "median_w0.3", "top3rd_w0.3", "hyperband"])
    ap.add_argument("--replicates", type=int, default=10)
    ap.add_argument("--extra", nargs="*", default=[], help="overrides for every study (e.g. sweep.n_trials=10)")
    a = ap.parse_args()
    import torch

    from sweeper import config, runtime
    from sweeper.stats import paired
    from sweeper.trial import prepare, run_trial

    runtime.setup()
    torch.set_num_threads(1)
    cache: dict[tuple[float, int], float] = {}

    def test_acc(p: float, seed: int) -> float:
        if (p, seed) not in cache:
            ovs = ["regularizer=none"] if p == 0 else ["regularizer=dropout", f"regularizer.p={p!r}"]
            cfg = config.load(["+sweep=dropout", *a.extra, *ovs, f"seed={seed}", "trainer.threads=1"])
            cache[(p, seed)] = run_trial(cfg, None, prepared=prepare(cfg), evaluate_test=True).metrics["test_acc"]
        return cache[(p, seed)]

    seeds = [7000 + i for i in range(a.replicates)]  # never a search seed (search runs at seed 0)
    results: dict[str, dict[int, dict]] = {v: {} for v in a.variants}
    with tempfile.TemporaryDirectory() as tmp:
        for s in a.sampler_seeds:
            for v in a.variants:
                results[v][s] = r = run_study(Path(tmp), f"dropout_{v.replace('.', '_')}_s{s}", s, VARIANTS[v], a.extra)
                print(
                    f"sampler seed {s} {v:>12}: selected p={r['p']:.3f}, {r['epochs']} epochs, {r['pruned']} pruned, {r['seconds']:.0f} s",
                    flush=True,
                )
    print("\nreplicating every selection on seeds", seeds[0], "...", seeds[-1], flush=True)
    total_none = sum(results["none"][s]["epochs"] for s in a.sampler_seeds) if "none" in results else None
    for v in a.variants:
        verdicts = []
        for s in a.sampler_seeds:
            mine = [test_acc(results[v][s]["p"], x) for x in seeds]
            ref = [test_acc(results["none"][s]["p"], x) for x in seeds]
            c = paired(mine, ref)
            lo = c.ci_low if c.ci_low is not None else c.diff
            hi = c.ci_high if c.ci_high is not None else c.diff
            ok = hi >= 0
            verdicts.append(ok)
            print(
                f"  {v:>12} seed {s}: p={results[v][s]['p']:.3f} vs unpruned p={results['none'][s]['p']:.3f}: "
                f"test {sum(mine) / len(mine):.4f} vs {sum(ref) / len(ref):.4f}, paired diff {c.diff * 100:+.2f} points "
                f"[{lo * 100:+.2f}, {hi * 100:+.2f}] {'ok' if ok else 'WORSE'}"
            )
        epochs = sum(results[v][s]["epochs"] for s in a.sampler_seeds)
        share = epochs / total_none if total_none else float("nan")
        print(
            f"{v:>12}: {epochs} epochs = {share:.2f} of unpruned; selections within the paired CI on "
            f"{sum(verdicts)}/{len(verdicts)} sampler seeds -> {'PASS' if all(verdicts) and share <= 0.6 else 'fail'}",
            flush=True,
        )


if __name__ == "__main__":
    main()
