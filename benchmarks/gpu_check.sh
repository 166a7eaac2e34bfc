#!/usr/bin/env bash
# GPU checks, for the day a GPU machine is available (nothing here runs in CI; under 5 minutes).
# Usage, from the repository root with the project installed:  bash benchmarks/gpu_check.sh
# Prints: the device every run trained on, a one-model run on CUDA, a workers=auto sweep pinning one worker per
# GPU (CUDA_VISIBLE_DEVICES), then the population engine on CUDA: its equivalence tests (members equal the
# one-model path) and its benchmark (core speed-up, per-member epoch time by K up to 256: the data for
# population_size.AUTO_CUDA, which is not measured yet; the MLP and the CNN), and a population sweep with
# sweep.population=auto.
set -euo pipefail
repo=$(pwd)
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA GPU visible"
print(f"GPUs: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
PY
work=$(mktemp -d)
cd "$work"
time python -m sweeper trainer.accelerator=gpu trainer.max_epochs=5
time python -m sweeper +sweep=dropout workers=auto trainer.accelerator=gpu sweep.n_trials=8 sweep.replicates=2 \
  sweep.timing_repeats=3 trainer.max_epochs=5
python - <<'PY'
from mlflow.tracking import MlflowClient
client = MlflowClient(tracking_uri="sqlite:///mlruns/mlflow.db")
exp = client.get_experiment_by_name("dropout")
runs = client.search_runs([exp.experiment_id], max_results=1000)
devices = sorted({r.data.tags.get("device") for r in runs if r.data.tags.get("role") == "trial"})
print("trial runs trained on:", devices)
assert all(d and d.startswith("cuda") for d in devices), devices
PY
time python -m sweeper +sweep=dropout trainer.accelerator=gpu sweep.n_trials=16 sweep.replicates=0 sweep.timing_repeats=0 \
  trainer.max_epochs=5 sweep.study_name=dropout_population 2>&1 | grep -E "population|completed" || true
cd "$repo"
SWEEPER_TEST_ACCELERATOR=gpu python -m pytest -q -p no:cacheprovider tests/test_population.py \
  -k "equals_the_one_model_path or distribution_over_seeds or leave_when_done"
python benchmarks/bench_population.py --accelerator gpu --only-core --k 32 --sizes 1,8,32,64,128,256
echo "gpu_check: OK ($work)"
