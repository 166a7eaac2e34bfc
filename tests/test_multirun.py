"""Hydra's multirun habit (`-m key=a,b,c`): the command line becomes an ordinary sweep."""

import pytest
from conftest import all_runs, load_study, tiny

from sweeper.__main__ import _usage, main
from sweeper.errors import ConfigError
from sweeper.multirun import to_sweep_argv


def _value(argv, key):
    return next(a.split("=", 1)[1] for a in argv if a.split("=", 1)[0] == key)


def test_lists_and_ranges_become_a_grid_with_one_trial_per_point_plus_the_baseline():
    argv = to_sweep_argv(["-m", "regularizer=dropout", "regularizer.p=0.1,0.2,0.3", "trainer.max_epochs=range(1,3)"])
    assert "+sweep=multirun" in argv and "regularizer=dropout" in argv
    assert _value(argv, "sweep.sampler.name") == "grid"
    assert _value(argv, "sweep.n_trials") == "7"  # 3 x 2 grid points + the baseline
    assert _value(argv, "sweep.params.regularizer.p") == "'choice(0.1,0.2,0.3)'"
    assert _value(argv, "sweep.params.trainer.max_epochs") == "'range(1,3)'"
    # named from the overrides; other values give another study
    assert _value(argv, "sweep.name").startswith("multirun_p_max_epochs_")
    assert _value(argv, "sweep.name") != _value(to_sweep_argv(["-m", "regularizer.p=0.1,0.2"]), "sweep.name")


def test_an_interval_uses_the_configured_sampler_and_budget_and_given_keys_win():
    argv = to_sweep_argv(
        ["--multirun", "regularizer=l2", "regularizer.l2=tag(log,interval(1e-5,1e-2))", "sweep.n_trials=9", "sweep.name=mine"]
    )
    assert not any(a.startswith("sweep.sampler.name=") for a in argv)
    assert [a for a in argv if a.startswith(("sweep.n_trials=", "sweep.name="))] == ["sweep.n_trials=9", "sweep.name=mine"]
    assert _value(argv, "sweep.params.regularizer.l2") == "'tag(log,interval(1e-5,1e-2))'"


def test_seeds_alone_are_replicates_without_baseline_search_or_pruning():
    argv = to_sweep_argv(["-m", "seed=1,2,3"])
    assert {"sweep.baseline=null", "sweep.replicates=0", "sweep.pruner.name=none", "sweep.n_trials=3", "sweep.sampler.name=grid"} <= set(
        argv
    )


@pytest.mark.parametrize(
    "argv,field,allowed",
    [
        (["-m", "+sweep=dropout", "regularizer.p=0.1,0.2"], "-m", "not both"),
        (["-m", "data=digits"], "-m", "at least one swept value"),
        (
            ["regularizer=dropout", "regularizer.p=0.1,0.2"],
            "regularizer.p: '0.1,0.2'",
            "needs -m (multirun): python -m sweeper -m regularizer.p=0.1,0.2",
        ),
        (["seed=range(1,4)"], "seed: 'range(1,4)'", "needs -m"),
        (["-m", "regularizer=dropout", "regularizer.p=interval(0.1"], "regularizer.p: 'interval(0.1'", "no viable alternative"),
        (["-m", "regularizer=dropout", "regularizer.p=range(0,1,0)"], "regularizer.p: 'range(0,1,0)'", "needs step > 0"),  # a traceback
        # a seed listed twice was two identical replicates: a zero-width "95% CI" ([0.5519, 0.5519] on digits)
        (["-m", "seed=1,1"], "seed: '1,1'", "lists 1 more than once (the same seed twice is one replicate counted twice)"),
        (["-m", "regularizer=dropout", "regularizer.p=0.1,0.2,0.1"], "regularizer.p: '0.1,0.2,0.1'", "lists 0.1 more than once"),
        (["-m", "regularizer=l1,l1"], "regularizer: 'l1,l1'", "lists l1 more than once (a grid point twice trains the same model"),
    ],
)
def test_bad_multirun_input_is_one_line_and_writes_nothing(sweep_dir, capsys, argv, field, allowed):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and field in err and allowed in err, err
    assert not (sweep_dir / "mlruns" / "optuna.db").exists()


def test_lists_in_brackets_are_not_sweeps():
    with pytest.raises(ConfigError):  # no swept value at all: -m has nothing to do
        to_sweep_argv(["-m", "regularizer=[dropout,l2]"])


def test_help_shows_multirun():
    text = _usage([])
    assert "-m, --multirun" in text and "-m seed=1,2,3" in text


@pytest.mark.slow
def test_multirun_grid_trains_every_point_once_and_reports(sweep_dir, capsys):
    argv = ["-m", *tiny("regularizer=dropout", "regularizer.p=0.1,0.3", "sweep.replicates=2", "sweep.timing_repeats=0", "sweep.name=mr")]
    assert main(argv) == 0
    study = load_study(sweep_dir / "mlruns" / "optuna.db", "mr")
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(t.params.get("regularizer.p") for t in trials if not t.user_attrs.get("baseline")) == [0.1, 0.3]
    assert [t.number for t in trials if t.user_attrs.get("baseline")] == [0]
    runs = all_runs(f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}")
    assert sum(r.data.tags.get("role") == "trial" for r in runs) == 3
    assert sum(r.data.tags.get("role") == "replicate" for r in runs) == 4  # baseline + the chosen dropout, 2 seeds each
    assert "## Techniques" in (sweep_dir / "reports" / "mr" / "report.md").read_text()


@pytest.mark.slow
def test_multirun_seeds_report_mean_and_ci_across_seeds(sweep_dir, capsys):
    assert main(["-m", *tiny("seed=1,2,3", "sweep.name=seeds")]) == 0
    out = capsys.readouterr().out
    assert "val acc mean" in out and "test 95% CI" in out
    trials = load_study(sweep_dir / "mlruns" / "optuna.db", "seeds").get_trials()
    assert sorted(t.params["seed"] for t in trials) == [1, 2, 3]
    md = (sweep_dir / "reports" / "seeds" / "report.md").read_text()
    section = md.split("## Across seeds", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| none"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "3" and cells[5].startswith("[") and cells[4] != "-"  # n = 3 seeds, a test CI
    runs = [r for r in all_runs(f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}") if r.data.tags.get("role") == "trial"]
    tests = sorted(r.data.metrics["test_acc"] for r in runs)
    assert abs(float(cells[4]) - sum(tests) / 3) < 1e-4
