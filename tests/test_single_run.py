"""`python -m sweeper` end to end: one MLflow run with every metric; bad input; NaN loss."""

import pytest
from conftest import all_runs, run_cli, tiny
from mlflow.tracking import MlflowClient
from optuna.exceptions import UpdateFinishedTrialError

from sweeper.__main__ import main

EPOCH_METRICS = {"train_loss", "train_penalty", "train_acc", "val_loss", "val_acc", "gen_gap"}
FINAL_METRICS = {
    "best_val_acc",
    "best_epoch",
    "epochs_trained",
    "stopped_early",
    "test_acc",
    "test_loss",
    "sparsity_zero",
    "sparsity_1e-3",
    "weight_l1",
    "weight_l2",
    "n_params",
    "train_time_s",
    "epoch_time_s",
    "inference_ms_per_1k",
}


@pytest.mark.slow
def test_cli_run_records_every_metric_params_and_config(tmp_path, mlflow_uri):
    proc = run_cli(tiny("trainer.max_epochs=3", "regularizer=[dropout,l2]"), cwd=tmp_path, env={"MLFLOW_TRACKING_URI": mlflow_uri})
    assert proc.returncode == 0, proc.stderr
    assert "completed" in proc.stdout and "test_acc" in proc.stdout
    # Lightning sets its loggers to INFO when imported (after start-up quieted them): no "GPU available" lines
    assert "GPU available" not in proc.stdout + proc.stderr and "litlogger" not in proc.stdout + proc.stderr
    runs = all_runs(mlflow_uri)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert set(run.data.metrics) >= EPOCH_METRICS | FINAL_METRICS
    client = MlflowClient(tracking_uri=mlflow_uri)
    assert len(client.get_metric_history(run.info.run_id, "val_acc")) == 3
    assert run.data.params["regularizer.p"] == "0.2" and run.data.params["data.name"] == "digits"
    assert run.data.tags["technique"] == "l2+dropout"
    arts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "config.yaml" in arts


BAD = [
    (["data=nope"], "data: 'nope'", "available: "),
    (["model=nope"], "model: 'nope'", "available: "),
    (["regularizer=nope"], "regularizer: 'nope'", "available: "),
    (["regularizer=dropout", "regularizer.p=1.0"], "regularizer.p: 1.0", "[0, 1)"),
    (["regularizer.p=-0.1"], "regularizer.p: -0.1", "[0, 1)"),
    (["regularizer=l1", "regularizer.l1=-1e-3"], "regularizer.l1: -0.001", ">= 0"),
    (["regularizer.l2=-1"], "regularizer.l2: -1", ">= 0"),
    (["regularizer.weight_decay=-1"], "regularizer.weight_decay: -1", ">= 0"),
    (["model.hidden=[]"], "model.hidden: []", "non-empty"),
    (["model.hidden=64"], "model.hidden: '64'", "must be a list: model.hidden=[64]"),  # OmegaConf: "int is not a ListConfig"
    (["model.hidden=[64,0]"], "model.hidden: [64, 0]", "positive"),
    (["model.hidden=[1e3]"], "model.hidden: '[1e3]'", "element 0: Value '1000.0' of type 'float'"),  # was "model.hidden[0]: None"
    (["model.hidden=[64,null]"], "model.hidden: '[64,null]'", "element 1: Invalid type assigned: NoneType"),
    (["data.batch_size=0"], "data.batch_size: 0", "> 0"),
    (["trainer.max_epochs=-2"], "trainer.max_epochs: -2", "> 0"),
    (["data.split.train=0.5"], "data.split:", "sum to 1"),
    (["data.split.train=0.85", "data.split.val=0.0"], "data.split.val: 0.0", "empty"),
    (["data=csv", "data.path=/no/such.csv"], "data.path: '/no/such.csv'", "does not exist"),
    (["data=csv", "data.path=/tmp"], "data.path: '/tmp'", "is a folder; data=csv needs a CSV file"),
    (["--cfg", "hydra"], "--cfg: 'hydra'", "use --cfg or --cfg job"),
    (["data=mnist", "data.root=/no/such/dir"], "data.root: '/no/such/dir'", "data.download=true"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs: 'abc'", "Integer"),
    (["regularizer.bogus=1"], "regularizer.bogus", "unknown key"),
    (["model.hidden=[100000,100000]"], "model.hidden: [100000, 100000]", "this MLP has 10,079,600,010 parameters and needs about"),
    (["trainer.accelerator=tpu9"], "trainer.accelerator: 'tpu9'", "auto, cpu"),
    (["trainer.devices=2"], "trainer.devices: 2", "only 1"),
    (["seed=-1"], "seed: -1", "[0, 2**32)"),
    (["regularizer=batchnorm", "data.batch_size=1"], "data.batch_size: 1", "batch norm needs at least 2 rows"),  # torch's error, exit 1
    (["data.split_seed=-1"], "data.split_seed: -1", "[0, 2**32)"),  # was scikit-learn's message under data.split
    (["optim.name=sgd", "optim.momentum=-0.5"], "optim.momentum: -0.5", "[0, 1)"),  # every trial failed, exit 0
    (["workers=0"], "workers: 0", "> 0"),
    (["regularizer=[dropout,nope]"], "regularizer: 'nope'", "available: "),
    (["regularizer=weight_decay", "optim.name=sgd"], "regularizer.weight_decay: 0.01", "optim.name=adam"),
]


@pytest.mark.parametrize("argv,field,allowed", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_one_line_nonzero_and_no_run(tmp_path, monkeypatch, capsys, argv, field, allowed):
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and field in err and allowed in err
    assert not store.exists() and not (tmp_path / "mlruns").exists()  # nothing was written


@pytest.mark.slow
def test_bad_input_exit_code_from_real_process(tmp_path):
    proc = run_cli(["regularizer=dropout", "regularizer.p=1.5"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: regularizer.p: 1.5 is invalid; dropout rate must be in [0, 1)"
    assert not (tmp_path / "mlruns").exists()


def test_nan_loss_ends_run_failed_with_reason(tmp_path, monkeypatch, capsys, mlflow_uri):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    assert main(tiny("optim.lr=1e12")) == 1
    out = capsys.readouterr().out
    assert "failed (loss became non-finite" in out and "Traceback" not in out
    run = all_runs(mlflow_uri)[0]
    assert run.info.status == "FAILED"
    assert "non-finite" in run.data.tags["failure_reason"] and run.data.tags["state"] == "failed"


def test_one_run_takes_its_experiment_from_mlflow_experiment_name_unless_the_config_names_one(tmp_path, monkeypatch, capsys, mlflow_uri):
    """MLflow's convention: $MLFLOW_EXPERIMENT_NAME picks the experiment when the code names none (it was ignored)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from_env")
    assert main(tiny("trainer.max_epochs=1")) == 0
    assert main(tiny("trainer.max_epochs=1", "tracking.experiment=from_cli")) == 0
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    assert main(tiny("trainer.max_epochs=1")) == 0
    assert "experiment: sweeper" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=mlflow_uri)
    counts = {e.name: len(client.search_runs([e.experiment_id])) for e in client.search_experiments()}
    assert counts == {"Default": 0, "from_env": 1, "from_cli": 1, "sweeper": 1}
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "../escape")  # a bad name from the variable names the variable
    assert main(tiny()) == 2
    assert capsys.readouterr().err.startswith("error: MLFLOW_EXPERIMENT_NAME: '../escape' is invalid; use letters")


@pytest.mark.parametrize("flags", [["--cfg"], ["--cfg", "job"], ["-c", "all"], ["+sweep=dropout", "--cfg", "job"]])
def test_cfg_prints_the_resolved_config_as_hydra_apps_do(tmp_path, monkeypatch, capsys, flags):
    """Hydra apps take ``--cfg job`` (``-c``, ``all``): the same resolved config here, nothing run or written."""
    monkeypatch.chdir(tmp_path)
    assert main([*flags, "trainer.max_epochs=7"]) == 0
    out = capsys.readouterr().out
    assert "max_epochs: 7" in out and ("n_trials:" in out) == ("+sweep=dropout" in flags)
    assert not (tmp_path / "mlruns").exists()


def test_help_lists_groups(capsys):
    assert main(["--help"]) == 0
    assert "regularizer: batchnorm, dropout" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_names_the_packages_that_decide_the_numbers(capsys, flag):
    from importlib.metadata import version

    assert main([flag]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"sweeper {version('sweeper')} (torch {version('torch')}, lightning {version('lightning')}") and "mlflow" in out


@pytest.mark.parametrize("argv", [["--info"], ["--cfg", "--bar"], ["-m", "regularizer.p=0.1,0.2", "--run"]])
def test_an_option_sweeper_does_not_take_is_one_line(tmp_path, monkeypatch, capsys, argv):
    """Hydra's override parser used to call these a LexerNoViableAltException."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    bad = next(a for a in argv[1:] + argv[:1] if a.startswith("--") and a != "--cfg")
    assert err == (
        f"error: option: '{bad}' is invalid; unknown option; sweeper takes --help, --version, --cfg [job], -m/--multirun, "
        "--config-dir DIR and key=value overrides (see --help)"
    )
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("exc,status", [(UpdateFinishedTrialError("taken over"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_a_run_whose_link_cannot_be_recorded_is_closed_not_left_running(mlflow_uri, exc, status):
    """open_run's caller records the run id on the trial first; if that fails (the trial was taken over while this
    worker stalled, or Ctrl-C), nobody else could ever find the run, so open_run closes it before re-raising."""
    from sweeper import config
    from sweeper.errors import ABANDONED
    from sweeper.tracking import Tracker
    from sweeper.trial import open_run, prepare

    cfg = config.load(tiny())
    tracker = Tracker(mlflow_uri, "links")

    def record(run_id: str) -> None:
        raise exc

    with pytest.raises(type(exc)):
        open_run(tracker, cfg, prepare(cfg), "t0", None, {"role": "trial"}, record)
    (run,) = all_runs(mlflow_uri)
    assert run.info.status == status
    if status == "FAILED":
        assert run.data.tags["failure_reason"] == ABANDONED


@pytest.mark.parametrize("where", ["log_params", "log_dataset", "log_text", "trainer"])
def test_ctrl_c_while_a_trial_starts_closes_its_run_killed(mlflow_uri, monkeypatch, where):
    """Ctrl-C after the run exists and before training (raised at that call, as the SIGINT handler would): the run
    was left RUNNING, since only training was inside run_trial's Ctrl-C block (seen in the interrupt-and-resume test:
    its SIGINT comes just as the next trial starts)."""
    from sweeper import config, trial
    from sweeper.tracking import Tracker

    cfg = config.load(tiny())
    tracker = Tracker(mlflow_uri, "starts")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "trainer":
        monkeypatch.setattr(trial, "_trainer", interrupted)
    else:
        monkeypatch.setattr(tracker, where, interrupted)
    with pytest.raises(KeyboardInterrupt):
        trial.run_trial(cfg, tracker, tags={"role": "trial"})
    (run,) = all_runs(mlflow_uri)
    assert (run.info.status, run.data.tags["state"], run.data.tags["failure_reason"]) == ("KILLED", "killed", "interrupted (Ctrl-C)")
