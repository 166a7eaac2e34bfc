"""Faults and hostile input, tried as a user or an operator would (issue: stalled workers, broken or read-only
stores, unreachable tracking URIs, path traversal, degenerate data). Real stores and real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import all_runs, check_links, load_study, run_cli, sweep_args

from sweeper.__main__ import main

SQLITE_GARBAGE = b"\x00\x13not a database at all\xff" * 50


def _at_once(job, items: list) -> list[Exception]:
    """``job(item)`` for every item, each in its own thread, all released together by a barrier; the exceptions."""
    import threading

    barrier, errors = threading.Barrier(len(items)), []

    def run(item):
        barrier.wait()
        try:
            job(item)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize("store,argv", [("optuna.db", sweep_args("dropout")), ("mlflow.db", ["data=digits"])])
def test_garbage_store_file_is_named_and_left_untouched(sweep_dir, capsys, store, argv):
    path = sweep_dir / "mlruns" / store
    path.write_bytes(SQLITE_GARBAGE)
    assert main(argv) == 2
    _one_line_error(capsys, str(path), "not a SQLite database", "left untouched", "move it away")
    assert path.read_bytes() == SQLITE_GARBAGE


@pytest.mark.parametrize("store,argv", [("optuna.db", sweep_args("dropout")), ("mlflow.db", ["data=digits"])])
def test_damaged_store_behind_a_sqlite_header_is_named_and_left_untouched(sweep_dir, capsys, store, argv):
    """A file that starts like SQLite but is not readable as one (overwritten past its header) gets the same one
    line, with SQLite's own word for the damage, instead of SQLAlchemy's traceback from inside the store."""
    import contextlib
    import sqlite3

    path = sweep_dir / "mlruns" / store
    damaged = b"SQLite format 3\x00" + SQLITE_GARBAGE
    path.write_bytes(damaged)
    assert main(argv) == 2
    _one_line_error(capsys, str(path), "(file is not a database)", "left untouched", "move it away")
    assert path.read_bytes() == damaged
    path.unlink()  # a real store cut short (a copy interrupted mid-way): its schema pages are gone
    with contextlib.closing(sqlite3.connect(path)) as con:
        con.executescript("CREATE TABLE a (x TEXT); INSERT INTO a VALUES (hex(randomblob(9000)));")
    with open(path, "r+b") as f:
        f.truncate(4096 + 100)
    truncated = path.read_bytes()
    assert main(argv) == 2
    _one_line_error(capsys, str(path), "(truncated: 4196 of its", "left untouched")
    assert path.read_bytes() == truncated


@pytest.mark.parametrize(
    "argv,field",
    [
        (sweep_args("dropout", "sweep.name=../../elsewhere/evil"), "sweep.name"),
        (sweep_args("dropout", "sweep.study_name=/tmp/abs"), "sweep.study_name"),
        (sweep_args("dropout", "sweep.study_name=.hidden"), "sweep.study_name"),
        (sweep_args("dropout", "sweep.name=a/b"), "sweep.name"),
        (["data=digits", "tracking.experiment=../up"], "tracking.experiment"),
        (["data=digits", "tracking.experiment=nul\x00byte"], "tracking.experiment"),  # Hydra's parser refuses it first
    ],
)
def test_names_that_become_paths_are_validated(sweep_dir, capsys, argv, field):
    before = set(Path(sweep_dir).parent.iterdir())
    assert main(argv) == 2
    err = _one_line_error(capsys, field)
    assert "\x00" not in err  # a NUL byte is shown escaped, never printed raw
    assert "no path separators, no leading dot" in err or "LexerNoViableAlt" in err
    assert set(Path(sweep_dir).parent.iterdir()) == before  # nothing written beside (or above) the working folder
    assert not (sweep_dir / "mlruns" / "optuna.db").exists()


def test_a_sweep_refuses_another_experiment_name_and_notes_the_variable(sweep_dir, capsys, monkeypatch):
    """A sweep's experiment is its study name: ``tracking.experiment=team`` on a sweep was silently ignored (its runs
    went to ``dropout`` and a report of ``team`` found nothing), so it is refused; the same name is accepted, and
    $MLFLOW_EXPERIMENT_NAME (single runs' convention) gets a note instead of going unmentioned."""
    from mlflow.tracking import MlflowClient

    assert main(sweep_args("dropout", "tracking.experiment=team")) == 2
    _one_line_error(capsys, "tracking.experiment: 'team' is invalid; a sweep's MLflow experiment is its study", "sweep.study_name=team")
    assert not (sweep_dir / "mlruns" / "optuna.db").exists()
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "elsewhere")
    argv = sweep_args("dropout", "sweep.n_trials=1", "sweep.replicates=0", "sweep.timing_repeats=0", "sweep.study_name=mine")
    assert main([*argv, "tracking.experiment=mine"]) == 0
    assert "note: MLFLOW_EXPERIMENT_NAME=elsewhere is for single runs; this sweep's MLflow experiment is its study name, mine" in (
        capsys.readouterr().err
    )
    names = {e.name for e in MlflowClient(tracking_uri=f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}").search_experiments()}
    assert names == {"Default", "mine"}


def test_reference_names_are_validated_too():
    from omegaconf import OmegaConf

    from sweeper import config
    from sweeper.errors import ConfigError

    cfg = config.load(["+sweep=dropout"])
    OmegaConf.set_readonly(cfg, False)
    cfg.sweep.references = {"../x": ["regularizer.p=0.2"]}
    cfg.sweep.claim_reference = None
    with pytest.raises(ConfigError, match=r"sweep.references.../x: '../x' is invalid; use letters"):
        config.validate_sweep(cfg)


def test_report_cli_refuses_a_traversal_experiment_name(sweep_dir, capsys, tmp_path):
    from sweeper.report import main as report_main

    assert report_main(["../../evil", "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, "experiment", "no path separators")
    assert not (tmp_path / "r").exists() and not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize(
    "where,needle",
    [
        ("afile", "afile is a file, not a folder"),
        ("afile/below", "afile is a file, not a folder"),
        ("reports", "reports/dropout is a file, not a folder"),  # the study's own report folder is a file
        ("/proc/sweeper-report", "creating a folder in /proc failed"),  # permission bits say yes (root), the kernel no
    ],
)
def test_an_unwritable_report_folder_is_refused_before_anything_trains(sweep_dir, capsys, where, needle):
    """The report is the sweep's last write: a folder it cannot go to must fail the command at once (exit 2, one
    line), not after every trial has trained. The same check guards the report CLI's --out."""
    from sweeper.report import main as report_main

    (sweep_dir / "afile").write_text("mine")
    (sweep_dir / "reports").mkdir()
    (sweep_dir / "reports" / "dropout").write_text("mine too")
    studies = sweep_dir / "mlruns" / "optuna.db"
    assert main(sweep_args("dropout", f"sweep.report_dir={where}")) == 2
    _one_line_error(capsys, "sweep.report_dir", needle)
    assert not studies.exists()  # no study was made, nothing trained
    assert report_main(["dropout", "--out", where]) == 2
    _one_line_error(capsys, "--out", needle)
    assert (sweep_dir / "afile").read_text() == "mine" and (sweep_dir / "reports" / "dropout").read_text() == "mine too"


def test_csv_with_one_class_is_refused(tmp_path, capsys, mlflow_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    path = tmp_path / "one.csv"
    path.write_text("a,b,label\n" + "".join(f"{i},{i * 2},same\n" for i in range(40)))
    assert main(["data=csv", f"data.path={path}"]) == 2
    _one_line_error(capsys, "data.label", "at least 2 classes", "have 1")
    assert all_runs(mlflow_uri) == []


def test_csv_whose_splits_cannot_hold_every_class_is_refused(tmp_path, capsys, mlflow_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    path = tmp_path / "rare.csv"
    path.write_text("a,label\n" + "".join(f"{i},common\n" for i in range(40)) + "1,rare\n")
    assert main(["data=csv", f"data.path={path}"]) == 2
    _one_line_error(capsys, "data.split")


def test_sweep_options_that_mean_less_work(sweep_dir, capsys):
    """references=null is no references; pruner none draws no intermediate plot (and no Optuna warning);
    replicates=0 says replication is off and reports the search results only."""
    argv = sweep_args("dropout", "sweep.n_trials=2", "sweep.references=null", "sweep.pruner.name=none", "sweep.replicates=0")
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "replication is off (sweep.replicates=0)" in out and "plot_intermediate_values" not in err + out
    assert "pruning feature" not in err + out
    md = (sweep_dir / "reports" / "dropout" / "report.md").read_text()
    assert "## Search results (no replication)" in md and "| trial | state | technique |" in md
    assert "intermediate_values" not in out


@pytest.mark.slow
def test_unreachable_tracking_uri_in_local_mode_fails_fast_masked_exit_3(tmp_path):
    t0 = time.monotonic()
    proc = run_cli(["data=digits"], cwd=tmp_path, env={"MLFLOW_TRACKING_URI": "http://ana:s3cret@127.0.0.1:1"}, timeout=60)
    assert proc.returncode == 3 and time.monotonic() - t0 < 30
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "http://ana:***@127.0.0.1:1" in err[0] and "unreachable" in err[0] and "s3cret" not in proc.stderr
    assert not (tmp_path / "mlruns").exists()


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder on a read-only bind mount (root ignores file modes, so a real read-only file system is used)."""
    src, mnt = tmp_path / "src", tmp_path / "ro"
    (src / "mlruns").mkdir(parents=True)
    mnt.mkdir()
    ok = subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True).returncode == 0
    ok = ok and subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], capture_output=True).returncode == 0
    if not ok:
        if os.environ.get("CI"):
            pytest.fail("cannot create a read-only bind mount (CI runs as root)")
        pytest.skip("needs root for a read-only bind mount")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["data=digits"], sweep_args("dropout")])
def test_read_only_mlruns_is_one_line_naming_the_path(read_only_dir, capsys, monkeypatch, argv):
    monkeypatch.chdir(read_only_dir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(argv) == 2
    _one_line_error(capsys, str(read_only_dir / "mlruns"), "not writable", "read-only file system")


def _running_trial_of(storage: str, name: str, pid: int):
    try:
        study = load_study(storage, name)
    except KeyError:
        return None
    return next((t for t in study.trials if t.state.name == "RUNNING" and t.user_attrs.get("worker", "").endswith(f":{pid}")), None)


def _freeze_outside_a_write(pid: int, stores: list[Path]) -> None:
    """SIGSTOP ``pid`` at a moment it holds no store's write lock. Frozen inside a write transaction, it would block
    every other writer of these SQLite stores: they stop after the busy timeout, exit 3 (that case is
    test_a_store_locked_past_its_busy_timeout_stops_with_exit_3_and_resumes_exactly; here, B must go on)."""
    import sqlite3

    def writable(path: Path) -> bool:
        con = sqlite3.connect(path, timeout=0.5, isolation_level=None)  # another live writer's short commit may finish
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            con.close()

    for _ in range(50):
        os.kill(pid, signal.SIGSTOP)
        if all(writable(p) for p in stores):
            return
        os.kill(pid, signal.SIGCONT)  # frozen inside a write: let it finish, try again
        time.sleep(0.05)
    raise AssertionError(f"worker {pid} held a store's write lock at each of 50 tries")


@pytest.mark.slow
def test_stalled_worker_abandons_its_taken_trial_quietly_and_stores_agree(sweep_dir):
    """Worker A is frozen (SIGSTOP) past the grace period mid-trial; worker B fails and retries A's trial; A wakes
    (SIGCONT), abandons the trial with one line, leaves its run FAILED and goes on with the next slot."""
    # the one-model path's take-over check (OwnershipCheck); one population = several trials is another test's matter
    args = [*sweep_args("dropout", "sweep.n_trials=8", "trainer.max_epochs=30", "sweep.replicates=0", "sweep.population=1")]
    args.append("trainer.threads=1")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logs = [open(sweep_dir / f"w{i}.log", "w") for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=sweep_dir, env=env, stdout=logs[i], stderr=subprocess.STDOUT)
        for i in range(2)
    ]
    victim = procs[0]
    storage = str(sweep_dir / "mlruns" / "optuna.db")
    deadline = time.time() + 120
    while time.time() < deadline and _running_trial_of(storage, "dropout", victim.pid) is None:
        time.sleep(0.2)
    stalled = _running_trial_of(storage, "dropout", victim.pid)
    assert stalled is not None, "worker A never started a trial"
    _freeze_outside_a_write(victim.pid, [sweep_dir / "mlruns" / "optuna.db", sweep_dir / "mlruns" / "mlflow.db"])
    # grace_period=4: B fails and retries A's trial meanwhile, when it looks between two of its own trials (a fixed
    # 12 s wait was too short once, on a loaded machine: B was still inside one trial and A woke owning its trial)
    deadline = time.time() + 120
    while time.time() < deadline and load_study(storage, "dropout").trials[stalled.number].state.name != "FAIL":
        time.sleep(0.5)
    os.kill(victim.pid, signal.SIGCONT)
    for p in procs:
        p.wait(timeout=240)
    for f in logs:
        f.close()
    log_a = (sweep_dir / "w0.log").read_text()
    assert procs[0].returncode == 0 and procs[1].returncode == 0, log_a[-3000:]
    assert "Traceback" not in log_a and "UpdateFinishedTrialError" not in log_a
    assert f"trial {stalled.number} was retried elsewhere" in log_a
    study = load_study(storage, "dropout")
    by_number = {t.number: t for t in study.trials}
    assert by_number[stalled.number].state.name == "FAIL"
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 8  # the retry replaced the stalled trial: the total stays exact
    runs = [r for r in all_runs(f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}") if r.data.tags.get("role") == "trial"]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    per_trial: dict[int, list] = {}
    for r in runs:
        per_trial.setdefault(int(r.data.tags["trial_number"]), []).append(r)
    assert all(len(v) == 1 for v in per_trial.values())  # trial <-> run stays 1:1
    expected = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
    for number, (run,) in per_trial.items():
        assert run.info.status == expected[by_number[number].state.name], (number, run.info.status, by_number[number].state)
    assert sum(r.info.status == "FINISHED" for r in runs) == 8


def test_a_registration_slower_than_the_grace_period_is_not_taken_over(tmp_path, monkeypatch):
    """The registration claim beats at the storage's heartbeat interval. With a fixed 5 s beat and a shorter
    sweep.grace_period, another invocation's stale check took over a registration still running and registered a
    second version (seen in the full suite: two PostgreSQL workers, grace 4 s)."""
    import threading
    from types import SimpleNamespace

    import optuna
    from optuna.storages import fail_stale_trials

    from sweeper import registry, stores

    storage = stores.make_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=1, grace_period=2)
    calls = []

    def slow_register(*args, **kwargs):
        calls.append(1)
        time.sleep(3.5)  # longer than the grace period
        return "sweeper-s version 1 (dropout)"

    monkeypatch.setattr(registry, "_register", slow_register)
    done = threading.Event()

    def other_invocation():  # what another process finishing the same study does while it waits for the claim
        while not done.is_set():
            for summary in optuna.get_all_study_summaries(storage):
                if ".registry." in summary.study_name:
                    fail_stale_trials(optuna.load_study(study_name=summary.study_name, storage=storage))
            time.sleep(0.2)

    watcher = threading.Thread(target=other_invocation, daemon=True)
    watcher.start()
    try:
        report = SimpleNamespace(choice="dropout", rows=[], at_chance=None)
        assert registry.register_recommended(None, report, "s", storage) == "sweeper-s version 1 (dropout)"
    finally:
        done.set()
        watcher.join()
    assert len(calls) == 1


def test_a_claim_failed_as_stale_while_its_process_stalled_is_reported_not_a_crash(tmp_path, capsys):
    # Optuna refuses to tell a trial that another invocation failed as stale ("Cannot tell a FAIL trial", a
    # ValueError); the claim loop used to catch only UpdateFinishedTrialError and the command died with exit 1
    from optuna.storages import fail_stale_trials

    from sweeper import claims, stores

    # beats every 10 s, stale after 2 s: a process stalled between two beats
    storage = stores.make_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=10, grace_period=2)
    study = claims.open_slots(storage, "s.replicates", [{"seed": 1}])

    def stalled_job(item, trial):
        time.sleep(3)  # no heartbeat in the meantime: past the 2 s grace period
        fail_stale_trials(study)  # what another invocation's check does meanwhile
        return 1.0

    assert claims.run_slots([study], storage, stalled_job, 0) == 1
    assert "claim s.replicates #0 was retried elsewhere while this process stalled" in capsys.readouterr().err
    assert [t.state.name for t in study.get_trials()] == ["FAIL"]


def test_a_run_whose_link_never_reached_its_trial_is_closed_when_the_trial_goes_stale(tmp_path):
    # a worker SIGKILLed between creating a trial's MLflow run and recording its id on the trial (a population worker
    # opens its members' runs one after another) left that run RUNNING forever: the stale check only knew the link
    # (seen in CI: test_two_server_workers_one_killed_study_completes_and_no_password_leaks)
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    from sweeper import optuna_compat, stores
    from sweeper.tracking import Tracker
    from sweeper.worker import StaleTrialHandler

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "s")
    handler = StaleTrialHandler(tracker, max_retry=1)
    storage = stores.make_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=1, grace_period=1, stale_trial_callback=handler)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING))
    popped = [optuna_compat.pop_waiting_trial(study, storage) for _ in range(2)]
    assert all(p is not None for p in popped)
    tags = lambda n: {"role": "trial", "study": "s", "trial_number": n}
    linked = tracker.start_run("t0", tags=tags(0))
    popped[0][0].set_user_attr("mlflow_run_id", linked)
    orphan = tracker.start_run("t1", tags=tags(1))  # killed before the link: only its tags name its trial
    other = tracker.start_run("replicate", tags={"role": "replicate", "study": "s", "trial_number": 1})
    time.sleep(2.5)  # no heartbeats: both trials are stale
    fail_stale_trials(study)
    assert [tracker.get_run(r).info.status for r in (linked, orphan, other)] == ["FAILED", "FAILED", "RUNNING"]
    assert tracker.get_run(orphan).data.tags["failure_reason"] == "worker stopped sending heartbeats (killed or lost)"
    assert sorted(t.state.name for t in study.get_trials()) == ["FAIL", "FAIL", "WAITING", "WAITING"]  # both retried


def test_a_starting_worker_closes_only_runs_whose_trial_had_finished(tmp_path):
    # a worker starting up closes the runs a lost tracking server left RUNNING; it took any trial not RUNNING in its read
    # for finished, so a WAITING trial that the first worker popped a moment later had its live run closed FAILED, and
    # the late "failed" tag outlived the owner's "completed" (seen in CI: test_two_local_workers_on_sqlite)
    import optuna
    from optuna.trial import TrialState

    from sweeper import stores
    from sweeper.study import _close_orphan_runs
    from sweeper.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "s")
    storage = stores.make_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=1, grace_period=4)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING))  # 0: popped by a live worker meanwhile
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))  # 1: failed while the tracking server was down
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=1.0))  # 2: the same, then told
    tags = lambda n, name="s": {"role": "trial", "study": name, "trial_number": n}
    live, lost, told = (tracker.start_run(f"t{n}", tags=tags(n)) for n in (0, 1, 2))
    elsewhere = tracker.start_run("t1 of another study", tags=tags(1, "other"))
    _close_orphan_runs(study, tracker)
    statuses = [tracker.get_run(r).info.status for r in (live, lost, told, elsewhere)]
    assert statuses == ["RUNNING", "FAILED", "FAILED", "RUNNING"]
    assert tracker.get_run(lost).data.tags["failure_reason"] == "trial ended while its worker had no tracking server"


def test_processes_opening_a_new_study_together_set_it_up_once(sweep_dir):
    # reading "set up yet?" and then marking it was not atomic: two workers starting together both queued the slots
    # (9 trials for sweep.n_trials=5) and both created a parent run (seen in CI: two server workers). Threads with
    # their own stores stand in for the processes; a barrier makes them open the study at the same moment.
    from sweeper import config
    from sweeper.study import open_study, slots
    from sweeper.worker import study_context

    cfg = config.load(sweep_args("dropout", "sweep.n_trials=5"))
    contexts = [study_context(cfg) for _ in range(4)]
    parents: list[str] = []
    errors = _at_once(lambda ctx: parents.append(open_study(cfg, ctx.space, ctx.url, ctx.tracker, ctx.storage)[1]), contexts)
    assert not errors and len(set(parents)) == 1
    study = load_study(sweep_dir / "mlruns" / "optuna.db", "dropout")
    assert len(slots(study.trials)) == 5 and [t.user_attrs["slot"] for t in study.trials] == list(range(5))
    runs = all_runs(f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}")
    assert [r.info.run_id for r in runs if r.data.tags.get("role") == "study"] == parents[:1]


@pytest.mark.slow
def test_invocations_publishing_one_report_at_once_all_succeed_and_leave_one_whole_report(tmp_path):
    # two workers finishing one study write its report together; "remove, then rename" failed one of them in CI
    from sweeper.report.build import publish

    final = tmp_path / "dropout"

    def job(writer):
        for n in range(25):
            tmp = tmp_path / f".report-{writer}-{n}"
            tmp.mkdir()
            for name in ("report.md", "report.html", "report.csv", "learning_curves.png"):
                (tmp / name).write_text(f"{writer}-{n}")
            publish(tmp, final)

    assert _at_once(job, [0, 1, 2, 3]) == []
    assert {f.name for f in final.iterdir()} == {"report.md", "report.html", "report.csv", "learning_curves.png"}
    assert len({f.read_text() for f in final.iterdir()}) == 1  # one writer's whole report, not a mix
    assert [p.name for p in tmp_path.iterdir()] == ["dropout"]  # nothing set aside is left behind


def test_workers_logging_the_same_new_dataset_at_once_do_not_fail(pg_database):
    # MLflow's log_inputs looks the dataset up, then inserts it: two workers whose first trials logged the same new
    # dataset together failed one of them with "duplicate key value violates unique constraint dataset_pk" (seen in
    # CI: the Slurm test's second task died joining its first trial). Threads with their own runs, a barrier per round
    from sweeper.tracking import Tracker

    tracker = Tracker(pg_database.replace("postgresql://", "postgresql+psycopg2://"), "datasets")
    for round_ in range(5):
        runs = [tracker.start_run(f"r{round_}.{i}") for i in range(4)]
        digest = f"d{round_}"
        errors = _at_once(lambda run_id: tracker.log_dataset(run_id, "digits", digest, "sklearn.datasets.load_digits", {"train": 1}), runs)  # noqa: B023
        assert not errors, errors[0]
        for r in runs:  # every run has its input, all of them the one dataset
            assert [i.dataset.digest for i in tracker.get_run(r).inputs.dataset_inputs] == [f"d{round_}"]


@pytest.mark.slow
def test_two_invocations_finishing_one_study_never_run_a_replicate_twice(sweep_dir):
    """Replicates, cost timings and the registration are claimed atomically (companion Optuna studies): two real
    processes that reach replication together split the work and never repeat a (configuration, seed)."""
    base = sweep_args("dropout", "sweep.n_trials=2")
    assert main([*base, "sweep.replicates=0"]) == 0  # the search is done; replication has not run
    argv = [*base, "sweep.replicates=3", "sweep.timing_repeats=3"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sweeper", *argv], cwd=sweep_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    runs = all_runs(f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}")
    reps = [(r.data.tags["replicate_of"], r.data.tags["seed"]) for r in runs if r.data.tags.get("role") == "replicate"]
    assert len(reps) == len(set(reps)) == 9  # none, dropout, ref:seed_dropout_0.2 x 3 seeds, each exactly once
    costs = sorted(r.data.tags["replicate_of"] for r in runs if r.data.tags.get("role") == "cost")
    assert costs == ["dropout", "ref:seed_dropout_0.2"]
    both = [sum(f"replicate {i}/" in o for i in range(1, 10)) for o in outs]
    assert sum(both) == 9  # the nine replicates were split between the two processes
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}")
    assert len(client.search_model_versions("name = 'sweeper-dropout'")) == 1


@pytest.mark.slow
def test_checkpointed_trial_killed_mid_training_resumes_from_its_last_checkpoint(sweep_dir):
    """trainer.checkpoint_every=2: the worker is SIGKILLed after a checkpoint; the retry resumes from it, its run
    links the killed attempt and holds every epoch's curve, and it reports the full epoch count."""
    from mlflow.tracking import MlflowClient

    epochs = 30
    args = [
        *sweep_args(
            "dropout",
            "sweep.n_trials=3",
            f"trainer.max_epochs={epochs}",
            "trainer.checkpoint_every=2",
            "sweep.replicates=0",
            "sweep.pruner.name=none",
        ),
        "trainer.threads=1",
    ]
    uri = f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    victim = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=sweep_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = str(sweep_dir / "mlruns" / "optuna.db")
    deadline, target = time.time() + 120, None
    while time.time() < deadline and target is None:  # wait until the running trial has saved a checkpoint
        time.sleep(0.2)
        t = _running_trial_of(storage, "dropout", victim.pid)
        run_id = t.user_attrs.get("mlflow_run_id") if t is not None else None
        if run_id and any(a.path.endswith("last.ckpt") for a in client.list_artifacts(run_id, "checkpoints")):
            target = t
    assert target is not None, "no checkpoint appeared"
    victim.kill()
    victim.wait()
    time.sleep(5)  # past grace_period=4: the re-run fails the stale trial and retries it
    assert main(args) == 0
    study = load_study(storage, "dropout")
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == target.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert retry[0].user_attrs["epochs_trained"] == epochs  # the same number of epochs as an uninterrupted trial
    run = client.get_run(retry[0].user_attrs["mlflow_run_id"])
    assert run.data.tags["resumed_from_run"] == target.user_attrs["mlflow_run_id"]
    resumed_at = int(run.data.tags["resumed_from_epoch"])
    assert resumed_at >= 2 and resumed_at % 2 == 0
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc"))
    assert steps == list(range(epochs))  # one run holds the whole curve: copied epochs + trained epochs
    assert int(run.data.metrics["epochs_trained"]) == epochs
    assert client.get_run(target.user_attrs["mlflow_run_id"]).info.status == "FAILED"


@pytest.fixture
def small_disk(tmp_path):
    """A working folder on its own 96 MB tmpfs, which the test can fill up mid-study (a full disk) and free again."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("cannot mount a tmpfs (CI runs as root)")
        pytest.skip("needs root for a tmpfs")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_a_store_locked_past_its_busy_timeout_stops_with_exit_3_and_resumes_exactly(sweep_dir):
    # a worker frozen in the middle of a write holds a local SQLite store's write lock: the other workers wait for the
    # busy timeout (MLflow's 20 s here) and stop with one line, exit 3 (it was a traceback and exit 1: seen when the
    # stalled-worker test froze its victim inside a write)
    import sqlite3

    args = sweep_args("dropout", "sweep.n_trials=2", "sweep.population=1", "sweep.replicates=0")
    holder = sqlite3.connect(sweep_dir / "mlruns" / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, as a process stopped inside a transaction keeps it
    try:
        proc = run_cli(args, cwd=sweep_dir)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: MLflow store sqlite:///") and "cannot be written (database is locked: another process" in last
    proc = run_cli(args, cwd=sweep_dir)  # the lock is gone: the same command finishes the study exactly
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_links(load_study(sweep_dir / "mlruns" / "optuna.db", "dropout"), f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}", 2)


@pytest.mark.slow
def test_disk_full_mid_study_stops_with_exit_3_and_resumes_exactly(small_disk, monkeypatch):
    mnt = small_disk
    # one model at a time: "two trials complete" must mean mid-study (a population finishes its 6 members together)
    args = [*sweep_args("dropout", "sweep.n_trials=6", "trainer.max_epochs=15", "sweep.replicates=0", "sweep.population=1")]
    args.append("trainer.threads=1")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeper", *args], cwd=mnt, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    storage = str(mnt / "mlruns" / "optuna.db")
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if sum(t.state.name == "COMPLETE" for t in load_study(storage, "dropout").trials) >= 2:
                break
        except Exception:
            pass
        time.sleep(0.2)
    filler = mnt / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)  # until the disk is full
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        filler.unlink()  # the fix: space again
    assert proc.returncode == 3, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "cannot be written" in last and "re-run the same command" in last, last
    assert "Traceback" not in err
    time.sleep(5)  # past grace_period=4: a trial left RUNNING is stale on the re-run and retried
    monkeypatch.chdir(mnt)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(args) == 0
    study = load_study(storage, "dropout")
    replaced = {n for t in study.trials for n in t.system_attrs.get("retry_history", [])}
    logical = [t for t in study.trials if t.number not in replaced]
    assert len(logical) == 6 and all(t.state.name in ("COMPLETE", "PRUNED") for t in logical)
    runs = [r for r in all_runs(f"sqlite:///{mnt / 'mlruns' / 'mlflow.db'}") if r.data.tags.get("role") == "trial"]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert sum(r.info.status == "FINISHED" for r in runs) == 6


@pytest.mark.slow
def test_workers_starting_together_on_a_new_store_do_not_race_its_creation(tmp_path):
    """Found by benchmarks/chaos.py: MLflow migrates a new SQLite store on first use, and workers starting at the
    same moment crashed with 'duplicate column name' / 'database is locked' until store creation was serialized."""
    args = [*sweep_args("dropout", "sweep.n_trials=4", "trainer.max_epochs=1", "sweep.replicates=0"), "trainer.threads=1"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(3)]  # fmt: skip
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(o[-1500:] for o in outs)
    assert not any("Traceback" in o for o in outs)
    study = load_study(tmp_path / "mlruns" / "optuna.db", "dropout")
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials) == 4


@pytest.mark.slow
def test_a_trial_started_outside_sweeper_does_not_keep_the_sweep_waiting_for_ever(sweep_dir):
    """`optuna ask` on a sweeper study leaves a RUNNING trial that never sends a heartbeat; Optuna's stale check
    skips such trials, so the re-run waited for it for ever. Now it is failed after sweep.grace_period and its
    retry (the same params) is trained, the study ends with no RUNNING trial and every slot 1:1 with a run."""
    import optuna

    args = sweep_args("dropout", "sweep.n_trials=3", "sweep.replicates=0")
    assert main(args) == 0
    storage = str(sweep_dir / "mlruns" / "optuna.db")
    foreign = load_study(storage, "dropout").ask({"regularizer.p": optuna.distributions.FloatDistribution(0.05, 0.6)})
    time.sleep(5)  # past grace_period=4
    proc = run_cli(args, cwd=sweep_dir, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = load_study(storage, "dropout").get_trials()
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert trials[foreign.number].state.name == "FAIL"
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == foreign.number]
    assert retry.state.name == "COMPLETE" and retry.params == foreign.params
    check_links(load_study(storage, "dropout"), f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}", 4)


@pytest.mark.slow
def test_runs_deleted_in_the_mlflow_ui_are_refused_or_reported_never_a_traceback(sweep_dir, capsys):
    """The UI's Delete moves an experiment or run to MLflow's trash, where nothing can be logged to it: re-running
    the sweep ended in MLflow's "must be in the 'active' state" traceback mid-setup. Now a deleted experiment or
    parent run is one line (exit 2, nothing written, the restore command named), and a deleted replicate run is a
    warning at the top of the report (it is a seed missing from its comparison), not a silent change of verdict."""
    from mlflow.tracking import MlflowClient

    from sweeper.report.cli import main as report_main

    args = sweep_args("dropout", "sweep.n_trials=3", "sweep.replicates=2", "sweep.timing_repeats=0")
    assert main(args) == 0
    uri = f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}"
    client, storage = MlflowClient(tracking_uri=uri), sweep_dir / "mlruns" / "optuna.db"
    exp = client.get_experiment_by_name("dropout")
    parent = load_study(storage, "dropout").user_attrs["mlflow_parent_run_id"]
    studies_before = len(load_study(storage, "dropout")._storage.get_all_studies())
    capsys.readouterr()

    client.delete_experiment(exp.experiment_id)
    assert main([*args, "sweep.n_trials=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: experiment: 'dropout' is invalid; this MLflow experiment")
    assert f"mlflow experiments restore --experiment-id {exp.experiment_id}" in err and "sweep.study_name=dropout_v2" in err
    assert report_main(["dropout", "--tracking-uri", uri]) == 2  # was "not found; existing: Default"
    assert "was deleted and is in the trash; restore it with" in capsys.readouterr().err
    client.restore_experiment(exp.experiment_id)

    client.delete_run(parent)
    assert main([*args, "sweep.n_trials=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"the study's MLflow parent run {parent} was deleted" in err
    assert f"mlflow runs restore --run-id {parent}" in err
    assert len(load_study(storage, "dropout")._storage.get_all_studies()) == studies_before  # nothing was set up
    assert len(load_study(storage, "dropout").trials) == 3
    client.restore_run(parent)

    other = f"sqlite:///{sweep_dir / 'other.db'}"  # the Optuna storage paired with another (empty) tracking store
    assert main([*args, "sweep.n_trials=4", f"tracking.uri={other}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"the study's MLflow parent run {parent} is not in {other}: it was purged" in err
    assert "point tracking.uri or MLFLOW_TRACKING_URI at that one" in err
    assert MlflowClient(tracking_uri=other).search_runs(["0"]) == [] and len(load_study(storage, "dropout").trials) == 3
    load_study(storage, "dropout").set_user_attr("mlflow_parent_run_id", "x/../y")  # edited by hand (optuna CLI)
    assert main([*args, "sweep.n_trials=4"]) == 2  # was MLflow's INVALID_PARAMETER_VALUE traceback
    assert "the study's MLflow parent run x/../y is not in" in capsys.readouterr().err
    load_study(storage, "dropout").set_user_attr("mlflow_parent_run_id", parent)

    replicate = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("role") == "replicate")
    client.delete_run(replicate.info.run_id)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"* warning: 1 run(s) of this study are in MLflow's trash (1 replicate: {replicate.info.run_id})" in out
    assert "mlflow runs restore --run-id <id>" in (sweep_dir / "reports" / "dropout" / "report.md").read_text()


@pytest.mark.slow
def test_a_study_follows_its_experiment_renamed_in_the_mlflow_ui(sweep_dir, capsys):
    """Renamed in the UI, the study's name found no experiment: the re-run made a new empty one, put its new trial
    runs there (their parent in the old one) and the report failed ("has no study (parent) run"). The study now
    follows its parent run into the renamed experiment, and no other experiment is made."""
    from mlflow.tracking import MlflowClient

    args = sweep_args("dropout", "sweep.n_trials=2", "sweep.replicates=0")
    assert main(args) == 0
    uri = f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("dropout")
    client.rename_experiment(exp.experiment_id, "dropout_nice")
    capsys.readouterr()
    assert main([*args[:-1], "sweep.n_trials=3", "sweep.replicates=2", "sweep.timing_repeats=0"]) == 0
    out = capsys.readouterr().out
    assert "note: study dropout's MLflow experiment is now named 'dropout_nice'; its runs go there" in out
    assert "in experiment 'dropout_nice'" in out and "* best accuracy:" in out
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "dropout_nice"]
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("role") == "study")
    trials = [r for r in runs if r.data.tags.get("role") == "trial"]
    assert len(trials) == 3 and all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    assert sum(r.data.tags.get("role") == "replicate" for r in runs) == 6


@pytest.mark.slow
@pytest.mark.parametrize("population", ["1", "auto"])
def test_a_trial_told_by_another_client_while_it_trains_is_abandoned_with_that_reason(sweep_dir, population):
    """`optuna tell` on a trial a worker is training: the worker leaves it (its run FAILED, the study goes on), and
    says what happened; it used to call it a stale retry ("retried elsewhere while this worker was stalled")."""
    import optuna
    from mlflow.tracking import MlflowClient

    args = sweep_args("dropout", "sweep.n_trials=2", "sweep.replicates=0", "trainer.max_epochs=400", "sweep.pruner.name=none")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeper", *args, f"sweep.population={population}"],
        cwd=sweep_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    storage = f"sqlite:///{sweep_dir / 'mlruns' / 'optuna.db'}"
    target, deadline = None, time.time() + 120
    while target is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            study = optuna.load_study(study_name="dropout", storage=storage)
        except KeyError:
            continue
        running = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs]
        target = running[0] if running else None
    assert target is not None, "no trial started training"
    study.tell(target.number, 0.5)  # what `optuna tell --trial-number N --values 0.5` does
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-2000:]
    assert f"trial {target.number} was finished by another client while it trained (another client told it COMPLETE" in err
    assert "retried elsewhere" not in err
    run = MlflowClient(tracking_uri=f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}").get_run(target.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "another client told it COMPLETE" in run.data.tags["failure_reason"]
    assert load_study(storage, "dropout").trials[target.number].value == 0.5  # the other client's word stands


@pytest.mark.slow
def test_a_study_deleted_while_it_runs_ends_in_one_line_and_leaves_no_run_running(sweep_dir):
    """``optuna delete-study`` on a running sweep: every storage call then raised Optuna's KeyError('Record does not
    exist.'), a traceback, and the parent and in-flight runs stayed RUNNING in MLflow. Now: one line, exit 3, every
    run of the study closed (the in-flight ones FAILED with the reason)."""
    import optuna
    from mlflow.tracking import MlflowClient

    args = sweep_args("dropout", "sweep.n_trials=40", "trainer.max_epochs=10", "sweep.replicates=0", "sweep.timing_repeats=0")
    cmd = [sys.executable, "-m", "sweeper", *args]
    proc = subprocess.Popen(cmd, cwd=sweep_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    storage = f"sqlite:///{sweep_dir / 'mlruns' / 'optuna.db'}"
    deadline = time.time() + 120
    while time.time() < deadline:  # a few trials finished, others training
        time.sleep(0.3)
        try:
            states = [t.state.name for t in optuna.load_study(study_name="dropout", storage=storage).get_trials(deepcopy=False)]
        except Exception:  # not created yet
            continue
        if states.count("COMPLETE") + states.count("PRUNED") >= 2 and "RUNNING" in states:
            break
    optuna.delete_study(study_name="dropout", storage=storage)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("study dropout:")]  # progress lines
    assert lines == [lines[-1]] and lines[-1].startswith("error: study dropout was deleted from sqlite:///"), err
    assert "Traceback" not in err
    client = MlflowClient(tracking_uri=f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("dropout").experiment_id])
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if r.data.tags.get("role") == "study"]
    assert parent.info.status == "FAILED" and "deleted" in parent.data.tags["failure_reason"]
