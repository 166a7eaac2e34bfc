"""Training-epoch time of the sweeper trial path vs a plain PyTorch loop (issue #2 benchmark).

Same model (seed MLP), data (mnist5k train split), batch size 32, thread count, optimizer, and the
same per-epoch work (training steps, validation pass, eval-mode pass over the training split).
Prints per-epoch times and the ratio trial-path / plain-loop. Run by hand:

    python benchmarks/bench_epoch_overhead.py [--epochs 10] [--threads 2] [--data mnist5k]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from sweeper import config, runtime
from sweeper.data import load_splits
from sweeper.models import build_model, evaluate
from sweeper.trial import prepare, run_trial


def plain_loop(cfg, epochs: int) -> float:
    s = load_splits(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, s.input_shape, s.n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    gen = torch.Generator().manual_seed(0)
    bs = cfg.data.batch_size
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(s.y_train), generator=gen)
        x, y = s.x_train[perm], s.y_train[perm]
        for i in range(0, len(y), bs):
            loss = F.cross_entropy(model(x[i : i + bs]), y[i : i + bs])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        evaluate(model, s.x_val, s.y_val)
        evaluate(model, s.x_train, s.y_train)
    return (time.perf_counter() - t0) / epochs


def trial_path(cfg) -> float:
    result = run_trial(cfg, None, prepared=prepare(cfg))
    return result.metrics["epoch_time_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    runtime.setup()  # as main() does: e.g. no NVML probe on every optimizer step
    torch.set_num_threads(a.threads)
    cfg = config.load([f"data={a.data}", f"trainer.max_epochs={a.epochs}", f"trainer.threads={a.threads}", "trainer.accelerator=cpu"])
    load_splits(cfg.data)  # warm the data cache for both
    plain_loop(cfg, 1)  # warm-up
    plain, trial = [], []
    for _ in range(a.repeats):  # interleaved so machine noise hits both
        plain.append(plain_loop(cfg, a.epochs))
        trial.append(trial_path(cfg))
    p, t = min(plain), min(trial)
    print(f"data={a.data} batch={cfg.data.batch_size} threads={a.threads} epochs={a.epochs} (best of {a.repeats})")
    print(f"plain PyTorch loop : {p * 1000:8.1f} ms/epoch")
    print(f"sweeper trial path : {t * 1000:8.1f} ms/epoch")
    print(f"ratio              : {t / p:8.2f}x  (target <= 1.3x)")


if __name__ == "__main__":
    main()
