"""Process-wide set-up in one place, called from ``main()`` (and from each spawned worker process).

Nothing in the package changes environment variables, warning filters or logger levels at import
time; everything the process changes is here, with the reason next to it.
"""

from __future__ import annotations

import logging
import os
import warnings
from types import ModuleType

_QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning", "lightning_fabric", "mlflow", "alembic")


def lightning() -> ModuleType:
    """``lightning.pytorch``, imported where a trial trains with it (not at start-up: ~3 s here, and the population
    engine trains without it). Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 at import so CUDA checks avoid fork
    poisoning; on a CUDA build without a GPU it makes every optimizer step re-probe NVML (torch.optim's
    graph-capture check). We never fork after CUDA init (workers are spawned), so the plain runtime check is safe
    and much cheaper: the variable is removed again after the import. Lightning also sets its loggers to INFO when
    it is imported, after ``setup`` quieted them, so every one-model trial printed "GPU available: False ..." and a
    tip (twice: once more through the root logger): they are quieted again here."""
    import lightning.pytorch as pl

    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    quiet_libraries()
    return pl


def setup() -> None:
    """Idempotent; does not import Lightning (``lightning()`` does, where a trial needs it)."""
    import optuna

    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)  # in case Lightning was imported already (see lightning())

    # A lost MLflow server must fail a worker within about a minute; MLflow's default retries take
    # minutes. Users can still set their own values (setdefault).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    # MLflow sets its loggers to INFO when imported, which happens after this (lazily, where tracking starts), so
    # quiet_libraries below cannot hold them: its system-metrics monitor printed three INFO lines per sweep, and in
    # server mode every closed run printed its URL. MLflow reads its level from this variable at import.
    if not os.environ.get("MLFLOW_LOGGING_LEVEL"):  # empty counts as unset, as MLflow reads it
        os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # We send heartbeats from our own thread (worker.Heartbeat), outside Study.optimize, on purpose.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    # Batches are sliced from in-memory tensors: DataLoader workers would only add overhead.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    stop_gracefully_on_sigterm()


_TERMINATED = False  # a SIGTERM, not a Ctrl-C, is what interrupted this process


def raise_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM's handler (``stop_gracefully_on_sigterm``): a KeyboardInterrupt, remembered as a SIGTERM."""
    global _TERMINATED
    _TERMINATED = True
    raise KeyboardInterrupt


def stop_gracefully_on_sigterm() -> None:
    """SIGTERM (Kubernetes deleting a pod, Slurm preempting a job, ``docker compose down``) stops the process as a
    Ctrl-C does: trials in progress are re-queued and their runs closed KILLED, at once, instead of the process
    dying and its trials waiting ``sweep.grace_period`` to be found stale. Only from the main thread, and only over
    the default disposition (a handler someone else installed is kept)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, raise_on_sigterm)


def note_sigterm() -> None:
    """A SIGTERM that was held (``worker.sigint_deferred``) and is raised now."""
    global _TERMINATED
    _TERMINATED = True


def interrupted_by() -> str:
    """What interrupted the process, for failure reasons: ``Ctrl-C`` or ``SIGTERM``."""
    return "SIGTERM" if _TERMINATED else "Ctrl-C"


def interrupt_status() -> int:
    """The exit status of an interrupted command: 130 after Ctrl-C (128 + SIGINT), 143 after SIGTERM (128 + 15)."""
    return 143 if _TERMINATED else 130


def freeze_heap() -> None:
    """Put every object alive now out of the cyclic garbage collector's reach (``gc.freeze``), when the command is
    done: interpreter exit runs one full collection over everything still alive (torch, MLflow, SQLAlchemy, Optuna,
    matplotlib), which took 1.4 s of a 13 s sweep here, 0.2 s frozen. (Freezing once the stores are open, before
    training, changed nothing measurable in trials/min, so it is not done.)"""
    import gc

    gc.freeze()


def quiet_libraries() -> None:
    """Lightning and MLflow log at INFO by default (and mlflow.pytorch re-enables Lightning's loggers)."""
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow logs every failed SQL statement with its whole traceback before raising it; sweeper turns the raised
    # error into one line (a full or read-only disk: exit 3), so the logged copy is noise.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
