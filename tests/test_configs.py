"""Every shipped config file composes and validates (cheap: no data is loaded, nothing is trained)."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from sweeper import config
from sweeper.errors import ConfigError

OPTIONS = [(group, option) for group in config.GROUPS if group != "sweep" for option in config.available(group)]


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n0,1,x\n1,0,y\n")
    return path


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes_and_validates(group, option, csv_file, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("SWEEPER_OPTUNA_STORAGE", "sqlite:///x.db")
    extra = [f"data.path={csv_file}"] if (group, option) == ("data", "csv") else []
    if (group, option) == ("launcher", "slurm"):  # a sweep with stores other hosts can share
        extra = ["+sweep=dropout", "tracking=server", "storage=postgresql://u@127.0.0.1:9/optuna"]
    cfg = config.load([f"{group}={option}", *extra])
    assert cfg[group] is not None
    if group == "regularizer":
        assert cfg.regularizer == config.load([f"regularizer={option}"]).regularizer


@pytest.mark.parametrize("name", config.available("sweep"))
def test_every_shipped_sweep_composes_and_validates(name):
    # multirun's params come from the command line (-m key=a,b): here one such parameter
    cfg = config.load([f"+sweep={name}", *(["sweep.params.seed=choice(1,2)"] if name == "multirun" else [])])
    assert cfg.sweep.name == name
    space = config.validate_sweep(cfg)
    assert space, name
    assert config.n_trials(cfg.sweep) > 0


@pytest.mark.parametrize("fraction,epochs", [(1.0, 20), (0.5, 40), (0.25, 80), (0.1, 200), (0.05, 200)])
def test_data_size_keeps_the_optimizer_step_budget(fraction, epochs):
    cfg = config.load(["+sweep=data_size", f"data.train_fraction={fraction}"])
    assert config.max_epochs(cfg) == epochs  # 20 epochs at 100%, capped at trainer.max_epochs_cap=200
    assert config.max_epochs(config.load([f"data.train_fraction={fraction}"])) == 10  # plain runs: max_epochs as given


def test_replicate_seeds_default_to_seed_plus_1000_and_cover_replicates_max():
    cfg = config.load(["+sweep=dropout", "seed=3", "sweep.replicates_max=8"])
    assert config.replicate_seeds(cfg) == list(range(1003, 1011)) and config.replicate_seeds(cfg, 5) == list(range(1003, 1008))
    assert config.looks(cfg.sweep) == 2 and config.looks(config.load(["+sweep=dropout"]).sweep) == 1
    assert config.load(["+sweep=dropout", "sweep.references=null"]).sweep.references is None


@pytest.mark.parametrize(
    "overrides",
    [
        ["regularizer.p=0.06142"],
        ["seed=5", "optim.lr=0.003"],
        ["regularizer=l1", "regularizer.l1=1e-4"],  # a group choice: composed once, then the value merged
        ["regularizer=l1", "regularizer.l1=3e-3"],  # the same choice again: from the cache
        ["regularizer=elastic_net", "regularizer.l1=1e-5", "regularizer.l2=1e-3"],
        ["regularizer=l1", "regularizer.l1=-1.0"],  # invalid after a group choice: the same one-line error as load()
        ["+regularizer.extra=1"],  # an added key: composed by Hydra
        ["data.train_fraction=0.25", "trainer.max_epochs=3"],
        ["regularizer.p=2.0"],  # invalid: the same one-line error as load()
        ["regularizer.nope=1"],  # unknown key: the same error as load()
    ],
)
def test_load_with_equals_a_full_load(overrides):
    base = ["+sweep=dropout", "data=digits", "trainer.max_epochs=2"]
    try:
        expected = OmegaConf.to_container(config.load(base + overrides))
    except ConfigError as exc:
        with pytest.raises(ConfigError, match=re.escape(str(exc))):
            config.load_with(base, overrides)
        return
    assert OmegaConf.to_container(config.load_with(base, overrides)) == expected
    assert OmegaConf.is_readonly(config.load_with(base, overrides))


def test_load_with_composes_each_group_choice_once(monkeypatch):
    """Trials of +sweep=compare choose a technique each: Hydra composes once per distinct choice, not per trial."""
    composed = []
    real = config.load
    monkeypatch.setattr(config, "load", lambda argv: composed.append(list(argv)) or real(argv))
    monkeypatch.setattr(config, "_COMPOSED", {})
    base = ["+sweep=compare", "data=digits"]
    for value in ("1e-4", "2e-4", "3e-4"):
        assert config.load_with(base, ["regularizer=l1", f"regularizer.l1={value}"]).regularizer.l1 == float(value)
    config.load_with(base, ["regularizer=l2", "regularizer.l2=1e-3"])
    assert composed == [[*base, "regularizer=l1"], [*base, "regularizer=l2"]]
