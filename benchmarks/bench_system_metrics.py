"""What MLflow's system-metrics monitor costs on a sweep's parent run (tracking.system_metrics_interval).

One sample is: collect (CPU, memory, disk, network via psutil; GPU via NVML where present), the monitor's
check that the run is still RUNNING, and one batched log call. This times that work directly, N samples
in a row on a real MLflow SQLite store, and prints it as a share of one core at each interval.

    python benchmarks/bench_system_metrics.py [--samples 50]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{Path(tempfile.mkdtemp(prefix='sweeper-bench-sysm-')) / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("bench")).info.run_id
    monitor = SystemMetricsMonitor(run_id, sampling_interval=1, tracking_uri=uri)
    monitor.collect_metrics()  # first psutil call primes its counters
    costs = []
    for _ in range(args.samples):
        t0 = time.perf_counter()
        monitor.collect_metrics()
        MlflowClient(uri).get_run(run_id)  # the monitor's status check, once per sample
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
        costs.append(time.perf_counter() - t0)
    ms = statistics.median(costs) * 1000
    logged = len(client.get_metric_history(run_id, "system/cpu_utilization_percentage"))
    print(f"[system metrics] {ms:.1f} ms per sample (median of {args.samples}; {logged} samples logged)")
    for interval in (10, 5, 1):
        print(f"[system metrics]   at tracking.system_metrics_interval={interval}: {ms / (interval * 1000) * 100:.2f}% of one core")


if __name__ == "__main__":
    main()
