"""Workers on a cluster: ``launcher=slurm`` submits the sweep's workers as a Slurm job array with submitit.

Each array task runs the same worker loop as ``workers=N`` (``worker.worker_process``): it opens the study in
the shared storage, takes trial slots until none are left and logs to the shared MLflow parent run. The
submitting process only waits, so replication and the report run once, after the array. Ctrl-C cancels the
array; a cancelled task's trial goes stale and is retried by the next run (Optuna heartbeats).
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig


def _task(argv: list[str], threads: int, worker_cls: Any = None) -> None:
    """One array task: a worker of the study (runs on the cluster node, in a fresh process)."""
    from .worker import worker_process

    worker_process(argv, threads, None, worker_cls)  # Slurm sets CUDA_VISIBLE_DEVICES for the task's own GPUs


def executor_parameters(cfg: DictConfig) -> dict[str, Any]:
    """submitit parameters from ``launcher.*`` (generic names work with both executors; slurm_* only on Slurm)."""
    ln = cfg.launcher
    params: dict[str, Any] = {
        "timeout_min": int(ln.time_min),
        "cpus_per_task": int(ln.cpus_per_task),
        "mem_gb": float(ln.mem_gb),
        "gpus_per_node": int(ln.gpus_per_task),
        "tasks_per_node": 1,
        "nodes": 1,
        "name": f"sweeper-{cfg.sweep.study_name or cfg.sweep.name}",
    }
    if ln.executor == "slurm":
        params["slurm_array_parallelism"] = int(ln.workers)
        if ln.partition:
            params["slurm_partition"] = str(ln.partition)
        if ln.additional_parameters:
            params["slurm_additional_parameters"] = {str(k): v for k, v in ln.additional_parameters.items()}
    return params


def run_slurm(cfg: DictConfig, argv: list[str], worker_cls: Any = None) -> None:
    """Submit ``launcher.workers`` worker tasks as one job array and wait for all of them."""
    import submitit

    ln = cfg.launcher
    executor = submitit.AutoExecutor(folder=str(ln.folder), cluster="slurm" if ln.executor == "slurm" else "local")
    executor.update_parameters(**executor_parameters(cfg))
    threads = int(cfg.trainer.threads or ln.cpus_per_task)
    # the tasks must not submit again: they run the plain worker loop with the same overrides
    task_argv = [a for a in argv if not a.startswith(("launcher=", "launcher.", "+launcher"))]
    n = int(ln.workers)
    jobs = executor.map_array(_task, [task_argv] * n, [threads] * n, [worker_cls] * n)
    job_id = jobs[0].job_id.split("_")[0]
    print(f"submitted {len(jobs)} worker tasks ({ln.executor}): job {job_id}, logs in {os.path.abspath(str(ln.folder))}")
    try:
        failed = []
        for job in jobs:
            try:
                job.result()
            except Exception as exc:  # a task that died: its trials go stale and are retried by the others or a rerun
                failed.append(f"{job.job_id}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}")
        if failed:
            print(f"{len(failed)} worker task(s) failed: " + "; ".join(failed[:3]))
    except KeyboardInterrupt:
        for job in jobs:
            job.cancel(check=False)
        raise
