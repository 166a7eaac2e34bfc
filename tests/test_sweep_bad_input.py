"""Bad sweep input: one line, non-zero exit, nothing written to either store."""

import sqlite3
import time

import pytest
from conftest import all_runs, load_study, sweep_args

from sweeper.__main__ import main

BAD = [
    (["+sweep=nope"], "sweep: 'nope'", "available: batchnorm, compare, data_size"),
    (["+sweep="], "sweep: '' is invalid; names no sweep", "available: batchnorm, compare, data_size"),  # "Could not find 'sweep/'"
    (sweep_args("compare", "sweep.techniques=dropout"), "sweep.techniques: 'dropout'", "must be a list: sweep.techniques=[dropout]"),
    (["data=digits", "sweep.n_trials=3"], "sweep.n_trials: '3'", "no sweep was chosen: add +sweep=NAME (available: batchnorm"),
    (sweep_args("dropout", "sweep.params.regularizer.p=interval(0.1"), "sweep.params.regularizer.p: 'interval(0.1'", "malformed"),
    (sweep_args("dropout", "sweep.params.regularizer.q=interval(0.1,0.2)"), "sweep.params.regularizer.q", "not a key of the config"),
    (sweep_args("dropout", "sweep.params.optim.lrate=interval(0.1,0.2)"), "sweep.params.optim.lrate", "not a key of the config"),
    (sweep_args("dropout", "sweep.n_trials=0"), "sweep.n_trials: 0", "> 0"),
    (sweep_args("dropout", "model.hidden=[100000,100000]"), "model.hidden: [100000, 100000]", "GiB to train (weights, gradients"),
    (sweep_args("dropout", "sweep.n_trials=100000000"), "sweep.n_trials: 100000000", "at most 10,000 trials (100,000,000 asked)"),
    (sweep_args("compare", "sweep.trials_per_technique=5000"), "sweep.trials_per_technique: 5000", "at most 10,000 trials (40,001"),
    (  # every searched trial would fail, and the sweep would still exit 0
        sweep_args("dropout", "sweep.params.regularizer.p=interval(-1,0.5)"),
        "sweep.params.regularizer.p: 'interval(-1,0.5)'",
        "its low end -1.0 is invalid: regularizer.p: dropout rate must be in [0, 1)",
    ),
    (
        sweep_args("dropout", "sweep.params.data.batch_size=choice(0,32)"),
        "sweep.params.data.batch_size: 'choice(0,32)'",
        "its choice 0 is invalid: data.batch_size: must be an integer > 0",
    ),
    (
        sweep_args("dropout", "sweep.params.trainer.max_epochs=interval(1,3)"),
        "sweep.params.trainer.max_epochs: 'interval(1,3)'",
        "trainer.max_epochs is an integer: search it with range(...) or tag(int, interval(...))",
    ),
    (
        sweep_args("dropout", "sweep.params.optim.name=choice(adam,rmsprop)"),
        "sweep.params.optim.name: 'choice(adam,rmsprop)'",
        "its choice 'rmsprop' is invalid: optim.name: allowed: adam, sgd",
    ),
    (  # a value listed twice: double weight in TPE/random, trained twice by the grid sampler
        sweep_args("dropout", "sweep.params.regularizer.p=choice(0.1,0.2,0.10)"),
        "sweep.params.regularizer.p: 'choice(0.1,0.2,0.10)'",
        "choice() lists 0.1 more than once",
    ),
    (
        sweep_args("dropout", "sweep.metrics=[val_acc,val_acc]", "sweep.directions=[maximize,maximize]"),
        "sweep.metrics: ['val_acc', 'val_acc']",
        "lists val_acc more than once",
    ),
    (  # trial 0 failed and the sweep exited 0 with no baseline
        sweep_args("dropout", "sweep.baseline=['regularizer.q=1']"),
        "sweep.baseline: ['regularizer.q=1']",
        "regularizer.q: unknown key 'q' in regularizer",
    ),
    (  # it stopped the sweep at replication, after the whole search
        sweep_args("dropout", "+sweep.references.bad=['regularizer.p=1.5']"),
        "sweep.references.bad: ['regularizer.p=1.5']",
        "regularizer.p: dropout rate must be in [0, 1)",
    ),
    (sweep_args("dropout", "sweep.replicates=100000000"), "sweep.replicates: 100000000", "at most 1,000 seeds per configuration"),
    (sweep_args("dropout", "sweep.sampler.name=bayes"), "sweep.sampler.name: 'bayes'", "tpe, random, grid"),
    (sweep_args("dropout", "sweep.pruner.name=early"), "sweep.pruner.name: 'early'", "median, percentile"),
    # each of these was Optuna's ValueError (or Hyperband's ZeroDivisionError) as a traceback, after the stores opened
    (sweep_args("dropout", "sweep.pruner.reduction_factor=1"), "sweep.pruner.reduction_factor: 1", "integer >= 2: each rung keeps"),
    (sweep_args("dropout", "sweep.pruner.min_resource=0"), "sweep.pruner.min_resource: 0", "integer >= 1: epochs before the first"),
    (sweep_args("dropout", "sweep.pruner.name=median", "sweep.pruner.n_startup_trials=-1"), "n_startup_trials: -1", "integer >= 0"),
    (sweep_args("dropout", "sweep.pruner.name=median", "sweep.pruner.n_warmup_steps=-1"), "n_warmup_steps: -1", "integer >= 0"),
    (sweep_args("dropout", "sweep.pruner.name=median", "sweep.pruner.interval_steps=0"), "interval_steps: 0", "integer >= 1"),
    (sweep_args("dropout", "sweep.pruner.name=percentile", "sweep.pruner.percentile=150"), "percentile: 150.0", "in [0, 100]"),
    (  # every batch-norm slot failed at its first step and the sweep exited 0
        sweep_args("compare", "data.batch_size=1", "sweep.techniques=[l2,batchnorm]"),
        "sweep.techniques: 'batchnorm'",
        "its data.batch_size=1: batch norm needs at least 2 rows per training batch",
    ),
    (  # the ghost batch would be the whole batch: plain batch norm, while the run says ghost batch norm
        sweep_args("batchnorm", "regularizer.bn_ghost=64", "data.batch_size=32"),
        "regularizer.bn_ghost: 64",
        "a ghost batch must not be larger than data.batch_size (32)",
    ),
    (  # the shipped batch-norm sweep searches bn_ghost in choice(4, 8, 16, 32): 16 and 32 do not fit a batch of 8
        sweep_args("batchnorm", "data.batch_size=8"),
        "sweep.params.regularizer.bn_ghost: 'choice(4, 8, 16, 32)'",
        "its choice 16 is invalid: regularizer.bn_ghost: a ghost batch must not be larger than data.batch_size (8)",
    ),
    (sweep_args("dropout", "sweep.sampler.seed=-1"), "sweep.sampler.seed: -1", "integer in [0, 2**32) or null"),  # was a ValueError
    (sweep_args("dropout", "sweep.sampler.n_startup_trials=-1"), "sweep.sampler.n_startup_trials: -1", "integer >= 0"),  # was accepted
    (sweep_args("dropout", "sweep.max_retry=-1"), "sweep.max_retry: -1", "integer >= 0"),  # was accepted (as 0)
    (sweep_args("dropout", "data.path=/dev/null"), "data.path: '/dev/null'", "used only by data=csv (data.name is digits)"),  # was ignored
    (  # was accepted: the technique got twice the trials of the others, against compare's equal budgets
        sweep_args("compare", "sweep.techniques=[l1,l1,l2]"),
        "sweep.techniques: ['l1', 'l1', 'l2']",
        "lists l1 more than once; use sweep.trials_per_technique",
    ),
    (sweep_args("dropout", "sweep.references=[foo]"), "sweep.references: '[foo]'", "mapping of name: [overrides]; add one with"),
    (sweep_args("dropout", "sweep.direction=up"), "sweep.direction: 'up'", "maximize, minimize"),
    (sweep_args("dropout", "sweep.metric=accuracy"), "sweep.metric: 'accuracy'", "val_acc, val_loss"),
    (sweep_args("dropout", "sweep.metric=val_loss"), "sweep.direction: 'maximize'", "val_loss is only ever minimized"),
    (
        sweep_args("dropout", "sweep.metrics=[val_acc,train_time_s]", "sweep.directions=[maximize,maximize]"),
        "sweep.directions: 'maximize'",
        "train_time_s is only ever minimized (the study would select its worst trials): set minimize",
    ),
    (sweep_args("dropout", "sweep.metric=test_acc"), "sweep.metric: 'test_acc'", "reporting only"),
    (sweep_args("dropout", "sweep.sampler.name=grid"), "sweep.params.regularizer.p", "grid sampler needs"),
    (sweep_args("dropout", "storage=redis://localhost:6379/0"), "storage: 'redis://localhost:6379/0'", "supported: sqlite, postgresql"),
    (sweep_args("dropout", "sweep.margin=-0.5"), "sweep.margin: -0.5", "number >= 0"),
    (sweep_args("dropout", "sweep.replicates_max=3"), "sweep.replicates_max: 3", "integer >= sweep.replicates (5)"),
    (
        sweep_args("dropout", "sweep.replicate_seed=abc"),
        "sweep.replicate_seed: 'abc'",
        "Value 'abc' of type 'str' could not be converted to Integer",
    ),
    (sweep_args("dropout", "sweep.replicate_seed=1.5"), "sweep.replicate_seed: '1.5'", "could not be converted to Integer"),
    (sweep_args("dropout", "sweep.replicate_seed=-3"), "sweep.replicate_seed: -3", "integer in [0, 2**32)"),
    (sweep_args("dropout", "seed=7", "sweep.replicate_seed=5"), "sweep.replicate_seed: 5", "would reuse the search seed 7"),
    (sweep_args("dropout", "sweep.timing_repeats=-1"), "sweep.timing_repeats: -1", "integer >= 3"),
    (sweep_args("dropout", "sweep.timing_repeats=2"), "sweep.timing_repeats: 2", "no usable interval"),
    (sweep_args("dropout", "sweep.claim_reference=nope"), "sweep.claim_reference: 'nope'", "seed_dropout_0.2"),
    (sweep_args("batchnorm", "regularizer.bn_ghost=1"), "regularizer.bn_ghost: 1", "integer >= 2"),
    (sweep_args("dropout", "launcher=slurm"), "storage: 'sqlite:///", "workers on other hosts cannot share a SQLite file"),
    (
        sweep_args("dropout", "launcher=slurm", "storage=postgresql://u:secret@127.0.0.1:9/optuna"),
        "tracking.uri: 'sqlite:///",
        "cannot share a local MLflow store",
    ),
    (sweep_args("dropout", "launcher=slurm", "launcher.executor=pbs"), "launcher.executor: 'pbs'", "allowed: slurm, local"),
    (sweep_args("dropout", "launcher=slurm", "launcher.workers=0"), "launcher.workers: 0", "integer > 0"),
    (sweep_args("dropout", "launcher=slurm", "workers=4"), "workers: 4", "launcher.workers=N"),
    (["launcher=slurm"], "launcher: 'slurm'", "add +sweep=<name>"),
    (sweep_args("dropout", "launcher=pbs"), "launcher: 'pbs'", "available: local, slurm"),
    (sweep_args("dropout", "sweep.population=0"), "sweep.population: 0", "integer >= 1 (members trained at once) or auto"),
    (sweep_args("dropout", "sweep.population=-3"), "sweep.population: -3", "integer >= 1 (members trained at once) or auto"),
    (sweep_args("dropout", "sweep.population=2.5"), "sweep.population: 2.5", "integer >= 1 (members trained at once) or auto"),
    (sweep_args("dropout", "sweep.population=many"), "sweep.population: 'many'", "integer >= 1 (members trained at once) or auto"),
    (sweep_args("dropout", "sweep.population=100000000"), "sweep.population: 100000000", "use a smaller K or auto"),
    (
        sweep_args("dropout", "tracking.uri=ftp://bob:hunter2@example.org/mlflow"),
        "tracking.uri: 'ftp://bob:***@example.org/mlflow'",
        "unsupported scheme 'ftp'; supported: sqlite://, postgresql://",
    ),
    (sweep_args("dropout", "tracking.uri=file:///tmp/old"), "tracking.uri: 'file:///tmp/old'", "MLflow 3 refuses its file store"),
    (sweep_args("dropout", "tracking.uri=old-mlruns"), "tracking.uri: 'old-mlruns'", "MLFLOW_ALLOW_FILE_STORE=true keeps the file store"),
    (sweep_args("dropout", "+sweep.n_trial=3"), "sweep.n_trial: 3", "unknown key; allowed: name, study_name, metric"),
    (sweep_args("dropout", "+trainer.max_epoch=3"), "trainer.max_epoch: 3", "unknown key; allowed: max_epochs"),
    (sweep_args("dropout", "+epochs=3"), "epochs: 3", "unknown key; allowed: data, model, regularizer"),
    (sweep_args("dropout", "optimizer.lr=0.1"), "optimizer.lr: '0.1'", "unknown top-level key 'optimizer'; top-level keys: data"),
    (
        sweep_args("dropout", "tracking.system_metrics_interval=0.1"),
        "tracking.system_metrics_interval: 0.1",
        "0 (off) or a number of seconds",
    ),
]


def _nothing_written(sweep_dir):
    assert not (sweep_dir / "mlruns" / "optuna.db").exists()
    assert all_runs(f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}") == []


@pytest.mark.parametrize("argv,field,allowed", BAD, ids=[b[1] for b in BAD])
def test_bad_sweep_input(sweep_dir, capsys, monkeypatch, argv, field, allowed):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and field in err and allowed in err, err
    _nothing_written(sweep_dir)


def test_file_store_is_used_when_mlflow_is_told_to_allow_it(sweep_dir, monkeypatch):
    """MLFLOW_ALLOW_FILE_STORE=true is MLflow's own opt-in to its file store: the scheme check lets it through."""
    from sweeper import config, stores

    cfg = config.load(sweep_args("dropout", f"tracking.uri=file://{sweep_dir / 'old-mlruns'}"))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    stores.check_tracking_scheme("tracking.uri", stores.tracking_uri(cfg))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")
    with pytest.raises(config.ConfigError, match="MLflow 3 refuses its file store"):
        stores.check_tracking_scheme("tracking.uri", stores.tracking_uri(cfg))
    for uri in ("databricks", "databricks://team", "postgresql+psycopg2://h/db", "HTTPS://mlflow.example.org"):
        stores.check_tracking_scheme("tracking.uri", uri)  # schemes MLflow opens are let through


def test_unreachable_storage_fails_fast_with_masked_password(sweep_dir, capsys):
    t0 = time.monotonic()
    assert main(sweep_args("dropout", "storage=postgresql://bob:hunter2@127.0.0.1:9/optuna")) == 2
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert "cannot connect to 127.0.0.1:9" in err and "hunter2" not in err and "bob:***@" in err
    _nothing_written(sweep_dir)


@pytest.mark.parametrize(
    "uri,needle",
    [
        ("postgresql://bob:hunter2@127.0.0.1:9/mlflow", "cannot connect to 127.0.0.1:9"),  # was minutes of MLflow's retries
        ("postgresql://nobody@127.0.0.1:5432/postgres", 'role "nobody" does not exist'),  # the local server, a bad role
        ("databricks", "Reading Databricks credential configuration failed"),  # was MLflow's traceback
    ],
)
def test_tracking_store_that_cannot_be_used_fails_fast_naming_the_variable(sweep_dir, capsys, monkeypatch, uri, needle):
    """A tracking store given by $MLFLOW_TRACKING_URI that is a dead or refusing database server, or Databricks
    without credentials: one line naming the variable, within seconds, before anything is written."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    monkeypatch.delenv("DATABRICKS_TOKEN", raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(sweep_dir / "no-databrickscfg"))
    t0 = time.monotonic()
    assert main(sweep_args("dropout")) == 2
    assert time.monotonic() - t0 < 15
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: MLFLOW_TRACKING_URI: ") and needle in err, err
    assert "hunter2" not in err
    assert not (sweep_dir / "mlruns" / "optuna.db").exists()


def test_resuming_with_other_trial_settings_is_refused_and_with_other_resources_is_not(sweep_dir, capsys):
    """A study resumed (or joined) with settings its trials train with changed would rank, e.g., trials of 3 epochs
    against a baseline of 2; the changed key is named with both values. Where and how the work runs may change."""
    assert main(sweep_args("dropout", "sweep.n_trials=1", "sweep.replicates=0", "sweep.timing_repeats=0")) == 0
    runs_before = len(all_runs(f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}"))
    capsys.readouterr()
    for change, named in (
        ("trainer.max_epochs=3", "trainer.max_epochs: 3 is invalid; study 'dropout' in sqlite:///"),
        ("optim.lr=0.01", "was run with optim.lr=0.001: its trials would not be comparable"),
        ("seed=4", "seed: 4 is invalid"),
        ("model.hidden=[64,32]", "was run with model.hidden=[32, 16]"),
        ("data.split_seed=1", "data.split_seed: 1 is invalid"),
    ):
        assert main(sweep_args("dropout", "sweep.n_trials=2", "sweep.replicates=0", change)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and named in err and "sweep.study_name=dropout_v2" in err, err
    assert len(load_study(sweep_dir / "mlruns" / "optuna.db", "dropout").trials) == 1
    assert len(all_runs(f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}")) == runs_before
    # the searched key's base value, the population size, threads and evaluation batch size do not change a trial
    same = ("regularizer.p=0.4", "sweep.population=1", "trainer.threads=1", "data.eval_batch_size=256", "sweep.replicates=0")
    assert main(sweep_args("dropout", "sweep.n_trials=1", "sweep.timing_repeats=0", *same)) == 0


@pytest.mark.slow
def test_existing_study_with_other_space_or_direction_is_refused(sweep_dir, capsys):
    assert main(sweep_args("dropout", "sweep.n_trials=1")) == 0
    runs_before = len(all_runs(f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}"))
    capsys.readouterr()
    for change in (["sweep.params.regularizer.p=interval(0.0,0.9)"], ["sweep.direction=minimize", "sweep.metric=val_loss"]):
        assert main(sweep_args("dropout", "sweep.n_trials=3", *change)) == 2
        err = capsys.readouterr().err
        assert "sweep.study_name: 'dropout'" in err and "sweep.study_name=dropout_v2" in err
    assert len(load_study(sweep_dir / "mlruns" / "optuna.db", "dropout").trials) == 1
    assert len(all_runs(f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}")) == runs_before
    # a new name is a new study
    assert (
        main(sweep_args("dropout", "sweep.n_trials=1", "sweep.study_name=dropout_v2", "sweep.direction=minimize", "sweep.metric=val_loss"))
        == 0
    )


@pytest.mark.slow
def test_resuming_a_csv_study_with_other_file_content_is_refused_and_a_copy_elsewhere_is_not(sweep_dir, capsys):
    """data.path is no setting (each worker machine keeps its own copy), so an edited or replaced csv used to mix
    trials trained on different data in one ranking; the file's content is the study's data identity now."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = [f"{rng.normal() + i % 2},{rng.normal()},{i % 2}" for i in range(200)]
    table = sweep_dir / "table.csv"
    table.write_text("a,b,label\n" + "\n".join(rows) + "\n")
    base = ["+sweep=dropout", "data=csv", "trainer.max_epochs=1", "sweep.replicates=0", "model.hidden=[8]"]
    assert main([*base, f"data.path={table}", "sweep.n_trials=2"]) == 0
    storage = sweep_dir / "mlruns" / "optuna.db"
    copy = sweep_dir / "elsewhere.csv"
    copy.write_bytes(table.read_bytes())
    table.write_text("a,b,label\n" + "\n".join(rows[:-1] + ["9,9,1"]) + "\n")  # one row edited
    capsys.readouterr()
    assert main([*base, f"data.path={table}", "sweep.n_trials=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: data.path: '{table}' is invalid; its content is not that of the file")
    assert "sweep.study_name=dropout_v2" in err and len(load_study(storage, "dropout").trials) == 2
    assert main([*base, f"data.path={copy}", "sweep.n_trials=3"]) == 0  # the same content at another path
    assert len(load_study(storage, "dropout").trials) == 3


def test_the_optuna_storage_and_the_mlflow_store_must_be_two_databases(sweep_dir, capsys, pg_database):
    """Both keep an alembic_version table: one database for both (or one store's file given as the other) ended in
    Optuna's "no longer compatible with the table schema" or alembic's "Can't locate revision" traceback, after
    the second had written its tables into the first's database. Each is refused in one line, nothing written."""
    mlflow_db, optuna_db = sweep_dir / "mlruns" / "mlflow.db", sweep_dir / "mlruns" / "optuna.db"
    assert main(sweep_args("dropout", f"storage=sqlite:///{mlflow_db}")) == 2  # the same file as the default MLflow store
    assert "is also the MLflow tracking store" in capsys.readouterr().err
    _nothing_written(sweep_dir)
    assert main(sweep_args("dropout", f"storage={pg_database}", f"tracking.uri={pg_database.replace('127.0.0.1', 'localhost')}")) == 2
    assert "each need a database of their own" in capsys.readouterr().err
    args = sweep_args("dropout", "sweep.n_trials=1", "sweep.replicates=0", "sweep.timing_repeats=0")
    assert main(args) == 0  # both stores exist now
    tables = lambda path: sqlite3.connect(path).execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
    before = (tables(mlflow_db), tables(optuna_db))
    assert main([*args, "sweep.study_name=other", f"storage=sqlite:///{mlflow_db}", f"tracking.uri=sqlite:///{sweep_dir / 'x.db'}"]) == 2
    assert "holds an MLflow tracking store, not the Optuna storage" in capsys.readouterr().err
    assert main([*args, f"tracking.uri=sqlite:///{optuna_db}", f"storage=sqlite:///{sweep_dir / 'y.db'}"]) == 2
    assert "holds an Optuna storage, not the MLflow tracking store" in capsys.readouterr().err
    from sweeper.report import main as report_main

    assert report_main(["dropout", "--tracking-uri", f"sqlite:///{optuna_db}", "--out", str(sweep_dir / "r")]) == 2  # alembic's
    assert "holds an Optuna storage, not the MLflow tracking store" in capsys.readouterr().err  # traceback, tables written
    assert (tables(mlflow_db), tables(optuna_db)) == before
