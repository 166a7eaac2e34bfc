"""The worker loop: pop a trial slot, suggest, train it as a Lightning trial, tell Optuna; repeat.

Runs in the invoking process, in ``workers=N`` spawned child processes, or on other machines that
point at the same storage. A running trial sends heartbeats from a thread; a worker that dies
(SIGKILL) leaves a trial that goes stale, is marked FAIL, has its MLflow run closed FAILED and is
re-queued (Optuna's RetryHeartbeatStaleTrialCallback, bounded retries). Ctrl-C marks the running
trial FAIL (its MLflow run KILLED) and re-queues it for the next run.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from omegaconf import DictConfig
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from . import config as config_mod
from . import optuna_compat, runtime, stores
from .errors import ABANDONED, ConfigError, StoreUnavailable
from .search_space import SearchParam, format_override
from .study import deleted, open_study, slots
from .tracking import Tracker, close_runs

if TYPE_CHECKING:
    import lightning.pytorch as pl


def pruning_monitor(cfg: DictConfig) -> str | None:
    """The per-epoch metric the pruner watches, or None when pruning cannot apply."""
    objs = config_mod.objectives(cfg.sweep)
    if cfg.sweep.pruner.name == "none" or len(objs) > 1 or objs[0][0] not in config_mod.EPOCH_METRICS:
        return None
    return objs[0][0]


def run_name(number: int, technique: str, params: dict[str, Any], baseline: bool) -> str:
    """A readable MLflow run name: ``t5 dropout p=0.069`` (the searched values, last key component)."""
    from .config import GROUPS

    shown = [
        f"{k.rsplit('.', 1)[-1]}={v:.3g}" if isinstance(v, float) else f"{k.rsplit('.', 1)[-1]}={v}"
        for k, v in params.items()
        if k not in GROUPS
    ]
    return " ".join([f"t{number}", technique, *(["(baseline)"] if baseline else shown)])


class StaleTrialHandler:
    """A worker died mid-trial: close its MLflow run FAILED, then re-queue the trial (bounded).

    The run is found by the link on the trial (``mlflow_run_id``) and by its own tags (study, trial number): a
    worker killed between creating the run and recording the link on the trial left a run that only its tags
    name (seen with SIGKILL on a population worker, whose members open their runs one after another)."""

    def __init__(self, tracker: Tracker | None, max_retry: int):
        self.tracker = tracker
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.tracker is not None:
            close_runs(self.tracker, self.runs_of(study, trial), "FAILED", "worker stopped sending heartbeats (killed or lost)")
        self.retry(study, trial)

    def runs_of(self, study: optuna.Study, trial: FrozenTrial) -> list[str]:
        """The linked run, and every RUNNING trial run tagged with this study and trial number."""
        assert self.tracker is not None
        linked = trial.user_attrs.get("mlflow_run_id")
        tagged = self.tracker.search_runs(
            f"tags.role = 'trial' and tags.study = '{study.study_name}' and tags.trial_number = '{trial.number}' "
            "and attributes.status = 'RUNNING'"
        )
        return list(dict.fromkeys([*([linked] if linked else []), *(r.info.run_id for r in tagged)]))


def requeue(study: optuna.Study, trial: optuna.Trial, max_retry: int, reason: str | None = None) -> None:
    """Give back a trial this process is leaving (Ctrl-C, a lost store): FAIL it and queue its retry, finishing
    the bookkeeping even through a second Ctrl-C. Used for study trials and for claim slots alike."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if reason:
            trial.set_user_attr("fail_reason", reason)
        frozen = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        if frozen.state == TrialState.FAIL:
            RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, frozen)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class StudyContext:
    """Everything a worker needs, rebuilt from the config in every process (workers share no memory)."""

    space: dict[str, SearchParam]
    url: str
    tracker: Tracker
    storage: RDBStorage


def study_context(cfg: DictConfig) -> StudyContext:
    space = config_mod.validate_sweep(cfg)
    url = stores.storage_url(cfg)
    tracker = Tracker(stores.tracking_uri(cfg), cfg.sweep.study_name or cfg.sweep.name, cfg.tracking.artifact_root)
    storage = stores.make_storage(
        url, int(cfg.sweep.heartbeat_interval), int(cfg.sweep.grace_period), StaleTrialHandler(tracker, int(cfg.sweep.max_retry))
    )
    return StudyContext(space, url, tracker, storage)


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Ctrl-C inside the block is held until it ends, then raised: bookkeeping that must not be cut in half (pop a
    trial and record its run; close a run and tell its trial) finishes first. Main thread only (signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    term = signal.getsignal(signal.SIGTERM)
    hold_term = term is runtime.raise_on_sigterm  # SIGTERM stops the process as Ctrl-C does (runtime.stop_gracefully_on_sigterm)
    if hold_term:
        signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if hold_term:
            signal.signal(signal.SIGTERM, term)
    if received:
        if signal.SIGTERM in received:
            runtime.note_sigterm()
        raise KeyboardInterrupt


def pop_slot(study: optuna.Study, storage: RDBStorage | None, max_retry: int) -> tuple[optuna.Trial, int] | None:
    """Pop a WAITING slot with Ctrl-C held until the pop is done; an interrupt that lands during it re-queues the
    slot, so an interrupt never leaves a slot RUNNING (popping writes the store and runs the sampler: tens of ms)."""
    popped = None
    try:
        with sigint_deferred():
            popped = optuna_compat.pop_waiting_trial(study, storage)
    except KeyboardInterrupt:
        if popped is not None:
            requeue(study, popped[0], max_retry, f"interrupted ({runtime.interrupted_by()}); re-queued for the next run")
        raise
    return popped


def _told_by_another(storage: Any, trial_id: int) -> str | None:
    """What another client told this worker's trial while it trained (``optuna tell``), as text; None when it was
    failed as stale and retried while this worker stalled (or the storage cannot say: the common cause)."""
    try:
        state = storage.get_trial(trial_id).state
    except Exception:
        return None
    if state in (TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING):
        return None
    return f"another client told it {state.name} while this worker trained it (e.g. `optuna tell`)"


def taken_over(storage: Any, trial_id: int) -> str:
    """Why a trial is no longer this worker's (the run's failure reason); a trial another client finished used to be
    called a stale retry too."""
    told = _told_by_another(storage, trial_id)
    return ABANDONED if told is None else f"trial taken over: {told}"


class Heartbeat:
    """Records a running trial's heartbeat every interval from a daemon thread, and notices when the trial is no
    longer this worker's: a process frozen past the grace period (SIGSTOP, swapping, a suspended laptop) finds on
    waking that its trial was failed as stale and retried elsewhere (``lost`` is set). It beats at the storage's own
    interval (``stores.make_storage``): the grace period other processes' stale checks apply is set against that one,
    and a fixed beat slower than the grace period let them take over a claim still running."""

    def __init__(self, storage: RDBStorage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self.interval = float(storage.get_heartbeat_interval() or 5)  # every storage here has one (make_storage)
        self.stop = threading.Event()
        self.lost = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def lost_reason(self) -> str:
        return taken_over(self.storage, self.trial_id)

    def owned(self) -> bool:
        """Still RUNNING, as this worker left it (one storage read)."""
        if self.lost.is_set():
            return False
        try:
            if self.storage.get_trial(self.trial_id).state != TrialState.RUNNING:
                self.lost.set()
        except Exception:  # a storage hiccup is not a lost trial
            pass
        return not self.lost.is_set()

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:
                pass
            self.owned()

    def __enter__(self) -> Heartbeat:
        self.storage.record_heartbeat(self.trial_id)  # synchronous: the trial is ours from here
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _suggest(trial: optuna.Trial, p: SearchParam) -> Any:
    d = p.distribution
    if isinstance(d, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(p.name, d.choices)
    if isinstance(d, optuna.distributions.IntDistribution):
        return trial.suggest_int(p.name, d.low, d.high, step=d.step, log=d.log)
    assert isinstance(d, optuna.distributions.FloatDistribution)
    return trial.suggest_float(p.name, d.low, d.high, step=d.step, log=d.log)


def suggest(trial: optuna.Trial, space: dict[str, SearchParam]) -> list[str]:
    """Ask Optuna for every applicable parameter; returns them as Hydra overrides (groups first)."""
    chosen: dict[str, Any] = {}
    for p in space.values():
        if p.applies(chosen):
            chosen[p.name] = _suggest(trial, p)
    groups = [format_override(k, v) for k, v in chosen.items() if k in config_mod.GROUPS]
    return groups + [format_override(k, v) for k, v in chosen.items() if k not in config_mod.GROUPS]


class Worker:
    """Pops trial slots of one study until none are waiting or running, and runs each as a Lightning trial."""

    def __init__(self, argv: list[str], cfg: DictConfig, ctx: StudyContext, study: optuna.Study, parent_run_id: str):
        self.argv, self.cfg, self.ctx, self.study, self.parent = argv, cfg, ctx, study, parent_run_id
        self.space, self.tracker = ctx.space, ctx.tracker
        self.monitor = pruning_monitor(cfg)
        self.objectives = config_mod.objectives(cfg.sweep)

    def run(self) -> None:
        optuna_compat.check()
        poll = max(1.0, self.cfg.sweep.heartbeat_interval / 2)
        optuna_compat.allow_sampler_stop(self.study)
        while True:
            fail_stale_trials(self.study)
            popped = pop_slot(self.study, self.ctx.storage, int(self.cfg.sweep.max_retry))
            if popped is None:
                if optuna_compat.fail_unbeaten_trials(self.study, self.ctx.storage):
                    continue  # trials that never beat (optuna ask, a dead pop): failed, their retries wait
                running = [t for t in slots(self.study.get_trials(deepcopy=False)) if t.state == TrialState.RUNNING]
                if not running:
                    return
                time.sleep(poll)  # another worker may die; its trial would come back to the queue
                continue
            self.run_one(*popped)

    def _abandoned(self, trial: optuna.Trial, trial_id: int) -> None:
        """One line, no traceback: the trial is another worker's (or client's) now; its MLflow run was closed FAILED."""
        told = _told_by_another(self.ctx.storage, trial_id)
        what = (
            "was retried elsewhere while this worker was stalled past sweep.grace_period"
            if told is None
            else f"was finished by another client while it trained ({told})"
        )
        print(
            f"worker {os.uname().nodename}:{os.getpid()}: trial {trial.number} {what}; abandoned it (its MLflow run stays FAILED)",
            file=sys.stderr,
        )

    def run_one(self, trial: optuna.Trial, trial_id: int) -> None:
        """Run a popped slot; Ctrl-C anywhere marks it FAIL and re-queues it for the next run."""
        try:
            with Heartbeat(self.ctx.storage, trial_id) as heartbeat:
                self._run_one(trial, trial_id, heartbeat)
        except optuna.exceptions.UpdateFinishedTrialError:  # taken over while stalled, found at any storage write
            self._abandoned(trial, trial_id)
        except (KeyboardInterrupt, StoreUnavailable) as exc:
            reason = f"interrupted ({runtime.interrupted_by()})" if isinstance(exc, KeyboardInterrupt) else "a store was lost"
            try:
                requeue(self.study, trial, int(self.cfg.sweep.max_retry), f"{reason}; re-queued for the next run")
            except Exception:
                if not isinstance(exc, StoreUnavailable):
                    raise
                # the Optuna storage cannot be written either: the trial stays RUNNING, goes stale, and is retried
                # by the next run after the fix
            raise

    def _run_one(self, trial: optuna.Trial, trial_id: int, heartbeat: Heartbeat) -> None:
        from optuna_integration import PyTorchLightningPruningCallback

        from .callbacks import OwnershipCheck, ReportOnly

        configured = self.configure(trial)
        if configured is None:
            return
        baseline, overrides, trial_cfg, prepared = configured
        callbacks: list[pl.Callback] = [OwnershipCheck(heartbeat)]
        if self.monitor:  # the baseline reports its curve (a reference for the pruner) but is never pruned
            callbacks.append(ReportOnly(trial, self.monitor) if baseline else PyTorchLightningPruningCallback(trial, monitor=self.monitor))
        trial.set_user_attr("technique", prepared.technique)
        trial.set_user_attr("overrides", overrides)
        with tempfile.TemporaryDirectory() as tmp:
            resume = self._checkpoint_of_failed_attempt(trial, trial_cfg, tmp)
            result = self._train(trial, trial_id, heartbeat, trial_cfg, prepared, baseline, callbacks, resume)
        if result.status == "abandoned" or not heartbeat.owned():
            self._abandoned(trial, trial_id)
            return
        self._tell(trial, result)

    def configure(self, trial: optuna.Trial) -> tuple[bool, list[str], DictConfig, Any] | None:
        """(baseline?, overrides, config, prepared data) of a popped trial; None after telling it FAIL for a
        configuration that does not validate (both worker loops)."""
        from .trial import prepare

        baseline = bool(trial.user_attrs.get("baseline"))
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        try:
            overrides = list(self.cfg.sweep.baseline or []) if baseline else suggest(trial, self.space)
            cfg = config_mod.load_with(self.argv, overrides)
            return baseline, overrides, cfg, prepare(cfg)
        except ConfigError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            self.study.tell(trial, state=TrialState.FAIL)
            return None

    def _checkpoint_of_failed_attempt(self, trial: optuna.Trial, cfg: DictConfig, tmp: str) -> tuple[str, str, int] | None:
        """A retried trial (its worker was killed) carries the failed attempt's run id; with checkpoints on, that run's
        last checkpoint is where training resumes. Returns (checkpoint path, old run id, epochs done) or None."""
        old_run = trial.user_attrs.get("mlflow_run_id")
        if not cfg.trainer.checkpoint_every or not old_run:
            return None
        path = self.tracker.download_artifact(old_run, "checkpoints/last.ckpt", tmp)
        if path is None:
            return None
        import torch

        epochs_done = int(torch.load(path, map_location="cpu", weights_only=False)["epoch"]) + 1
        return str(path), old_run, epochs_done

    def _train(
        self,
        trial: optuna.Trial,
        trial_id: int,
        heartbeat: Heartbeat,
        trial_cfg: DictConfig,
        prepared: Any,
        baseline: bool,
        callbacks: list[pl.Callback],
        resume: tuple[str, str, int] | None,
    ) -> Any:
        from .trial import EPOCH_METRICS, run_trial

        def on_run_created(run_id: str) -> None:
            trial.set_user_attr("mlflow_run_id", run_id)
            if resume is not None:  # one run holds the whole history; it links the attempt it continues
                _, old_run, epochs_done = resume
                self.tracker.set_tags(run_id, {"resumed_from_run": old_run, "resumed_from_epoch": epochs_done})
                self.tracker.copy_epoch_history(old_run, run_id, EPOCH_METRICS, epochs_done - 1)

        return run_trial(
            trial_cfg,
            self.tracker,
            prepared=prepared,
            run_name=run_name(trial.number, prepared.technique, trial.params, baseline),
            parent_run_id=self.parent,
            callbacks=callbacks,
            tags=self.run_tags(trial, trial_id, baseline),
            on_run_created=on_run_created,
            evaluate_test=self.evaluate_test,
            still_owned=heartbeat.owned,
            resume_from=None if resume is None else resume[0],
            lost_reason=heartbeat.lost_reason,
        )

    def run_tags(self, trial: optuna.Trial, trial_id: int, baseline: bool) -> dict[str, Any]:
        """The tags of a trial's MLflow run (both worker loops)."""
        axis = self.cfg.sweep.axis
        return {
            "study": self.study.study_name,
            "trial_number": trial.number,
            "role": "trial",
            "baseline": baseline,
            "optuna_trial_id": trial_id,
            "searched": json.dumps(trial.params),
            **({"axis_value": trial.params.get(axis)} if axis else {}),
        }

    @property
    def evaluate_test(self) -> bool:
        """Search trials never see the test split; grid sweeps (axis) and seed-only sweeps select nothing and are
        scored on it."""
        return bool(self.cfg.sweep.axis) or set(self.space) == {"seed"}

    def _tell(self, trial: optuna.Trial, result: Any) -> None:
        trial.set_user_attr("epochs_trained", len(result.history))
        if result.status == "completed":
            missing = [m for m, _ in self.objectives if m not in result.metrics]
            if missing:  # cannot happen for validated metric names; guards against silent NaN objectives
                self.study.tell(trial, state=TrialState.FAIL)
                raise ConfigError("sweep.metric", missing[0], "the first trial did not produce it")
            values = [float(result.metrics[m]) for m, _ in self.objectives]
            for key in ("best_val_acc", "train_time_s", "sparsity_zero"):
                trial.set_user_attr(key, result.metrics.get(key))
            self.study.tell(trial, values if len(values) > 1 else values[0])
        elif result.status == "pruned":
            trial.set_user_attr("pruned_epoch", len(result.history))
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            trial.set_user_attr("fail_reason", result.reason)
            self.study.tell(trial, state=TrialState.FAIL)


# --- processes ------------------------------------------------------------------------------------------
def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_workers(workers: Any, gpus: int) -> list[str | None]:
    """One entry per worker process: the GPU it is pinned to (CUDA_VISIBLE_DEVICES), or None (CPU / unpinned).
    ``workers=auto`` means one worker per GPU (one on a CPU machine); with N workers and G GPUs, worker i gets
    GPU i mod G."""
    n = max(gpus, 1) if workers == "auto" else int(workers)
    return [str(i % gpus) if gpus else None for i in range(n)]


def worker_plan(cfg: DictConfig) -> list[str | None]:
    """The local worker processes ``workers`` asks for, as their GPUs (None: CPU)."""
    return plan_workers(cfg.workers, gpu_count() if cfg.workers == "auto" or int(cfg.workers) > 1 else 0)


def worker_process(argv: list[str], threads: int, gpu: str | None = None, worker_cls: type[Worker] | None = None) -> None:
    """Entry point of a `workers=N` child process (spawned, so it starts with fresh torch state)."""
    if gpu is not None:  # before anything touches CUDA: this process sees exactly one GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    import torch

    runtime.setup()
    torch.set_num_threads(threads)
    cfg = config_mod.load(argv)
    ctx = study_context(cfg)
    study, parent = open_study(cfg, ctx.space, ctx.url, ctx.tracker, ctx.storage)
    try:
        (worker_cls or Worker)(argv, cfg, ctx, study, parent).run()
    except KeyboardInterrupt:
        sys.exit(runtime.interrupt_status())
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(3)
    except KeyError:  # the study was deleted while this worker ran: the parent process says so, in one line
        if not deleted(ctx.storage, study.study_name):
            raise
        sys.exit(3)
    finally:
        runtime.freeze_heap()  # the parent waits for this exit: skip its full collection (runtime.freeze_heap)


def run_workers(
    cfg: DictConfig, argv: list[str], ctx: StudyContext, study: optuna.Study, parent: str, worker_cls: type[Worker] | None = None
) -> None:
    """Run the study's slots: in this process (workers=1) or in N spawned processes sharing its storage.
    Ctrl-C is forwarded to the children, which re-queue their trials; then KeyboardInterrupt propagates."""
    plan = worker_plan(cfg)
    worker_cls = worker_cls or Worker
    if len(plan) == 1 and plan[0] in (None, "0"):
        worker_cls(argv, cfg, ctx, study, parent).run()
        return
    threads = cfg.trainer.threads or max(1, (os.cpu_count() or 1) // len(plan))
    spawn = mp.get_context("spawn")
    children = [spawn.Process(target=worker_process, args=(argv, threads, gpu, worker_cls), daemon=False) for gpu in plan]
    try:
        for c in children:
            c.start()
        for c in children:
            c.join()
    except KeyboardInterrupt:
        for c in children:
            if c.is_alive() and c.pid is not None:
                os.kill(c.pid, signal.SIGINT)
        for c in children:
            c.join(timeout=60)
        raise
