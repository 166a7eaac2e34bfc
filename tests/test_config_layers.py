"""A team's own configs layered over the shipped ones: ./conf, $SWEEPER_CONFIG_DIR, --config-dir."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from sweeper import config
from sweeper.__main__ import main

MY_STUDY = """# @package _global_
defaults:
  - override /regularizer: dropout
  - override /model: my_mlp
sweep:
  name: my_study
  n_trials: 2
  replicates: 0
  params:
    regularizer.p: interval(0.1, 0.3)
"""


def sweep_file(folder: Path, name: str, n_trials: int) -> None:
    (folder / "sweep").mkdir(parents=True, exist_ok=True)
    (folder / "sweep" / f"{name}.yaml").write_text(
        f"# @package _global_\nsweep:\n  name: {name}\n  n_trials: {n_trials}\n  params:\n    regularizer.p: interval(0.1, 0.2)\n"
    )


@pytest.fixture
def team(tmp_path, monkeypatch):
    """A team repo with conf/sweep/my_study.yaml and conf/model/my_mlp.yaml, as the working directory."""
    (tmp_path / "conf" / "sweep").mkdir(parents=True)
    (tmp_path / "conf" / "model").mkdir()
    (tmp_path / "conf" / "sweep" / "my_study.yaml").write_text(MY_STUDY)
    (tmp_path / "conf" / "model" / "my_mlp.yaml").write_text("name: mlp\nhidden: [16]\nactivation: relu\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWEEPER_CONFIG_DIR", raising=False)
    return tmp_path


def test_team_options_are_listed_composed_and_validated(team, capsys):
    assert "my_study" in config.available("sweep") and "my_mlp" in config.available("model")
    cfg = config.load(["+sweep=my_study", "data=digits"])
    assert list(cfg.model.hidden) == [16] and cfg.regularizer.p == 0.2 and cfg.config_dirs == [str(team / "conf")]
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "my_study" in out and "my_mlp" in out and str(team / "conf") in out
    assert main(["+sweep=nope"]) == 2
    assert "available: batchnorm" in capsys.readouterr().err and "my_study" in config.available("sweep")


def test_precedence_config_dir_over_env_over_local_conf_over_shipped(team, tmp_path, monkeypatch):
    env_dir, cli_dir = tmp_path / "env", tmp_path / "cli"
    sweep_file(team / "conf", "dropout", 3)  # ./conf replaces the shipped dropout sweep (n_trials 20)
    assert config.load(["+sweep=dropout"]).sweep.n_trials == 3
    sweep_file(env_dir, "dropout", 4)
    monkeypatch.setenv("SWEEPER_CONFIG_DIR", str(env_dir))
    assert config.load(["+sweep=dropout"]).sweep.n_trials == 4
    sweep_file(cli_dir, "dropout", 5)
    assert config.load(["--config-dir", str(cli_dir), "+sweep=dropout"]).sweep.n_trials == 5
    assert config.load([f"--config-dir={cli_dir}", "+sweep=dropout"]).sweep.n_trials == 5
    monkeypatch.delenv("SWEEPER_CONFIG_DIR")
    (team / "conf" / "sweep" / "dropout.yaml").unlink()
    assert config.load(["+sweep=dropout"]).sweep.n_trials == 20  # back to the shipped file


def test_missing_overlay_folder_is_one_line_error(team, capsys, monkeypatch):
    assert main(["--config-dir", "/nope", "data=digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "error: --config-dir: '/nope' is invalid; is not an existing folder of configs (group folders such as sweep/, data/, model/)"
    )
    monkeypatch.setenv("SWEEPER_CONFIG_DIR", "/nope2")
    assert main(["--cfg"]) == 2
    assert "SWEEPER_CONFIG_DIR: '/nope2'" in capsys.readouterr().err


def test_team_config_that_fails_validation_names_its_file(team, capsys):
    (team / "conf" / "model" / "bad_mlp.yaml").write_text("name: mlp\nhidden: [16, 0]\n")
    assert main(["model=bad_mlp", "data=digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.hidden: [16, 0]" in err and str(team / "conf" / "model" / "bad_mlp.yaml") in err


def test_broken_or_misspelt_team_yaml_names_its_own_file(team, capsys):
    """Layers are merged into a temporary folder for Hydra: its errors must name the team's file, not that copy."""
    (team / "conf" / "model" / "broken.yaml").write_text("name: mlp\nhidden: [16\n")
    assert main(["model=broken", "data=digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: model: 'broken' is invalid; {team / 'conf' / 'model' / 'broken.yaml'} is not valid YAML"), err
    (team / "conf" / "model" / "typo.yaml").write_text("name: mlp\nhiden: [16]\n")
    assert main(["model=typo", "data=digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: model.hiden: None is invalid; unknown key 'hiden' in model (set in {team / 'conf' / 'model' / 'typo.yaml'})"


def test_team_file_without_a_required_key_or_of_the_wrong_shape_is_one_line(team, capsys):
    """Was a MissingMandatoryValue traceback (a sweep file without ``name:``, or an empty one), and for a file of the
    wrong shape the first line of Hydra's message only, without the reason."""
    for text in ("# @package _global_\nsweep:\n  n_trials: 2\n", ""):
        (team / "conf" / "sweep" / "nameless.yaml").write_text(text)
        assert main(["+sweep=nameless", "data=digits", "--cfg"]) == 2
        err = capsys.readouterr().err.strip()
        path = team / "conf" / "sweep" / "nameless.yaml"
        assert err == f"error: sweep.name: '???' is invalid; is required and was not set: add `name:` to {path}", err
    (team / "conf" / "model" / "listy.yaml").write_text("- a\n- b\n")
    assert main(["model=listy", "data=digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Invalid type assigned: list is not a subclass of ModelConfig" in err, err


def test_optuna_storage_is_a_fallback_after_sweepers_own_variable(team, monkeypatch):
    from sweeper import stores

    cfg = config.load(["+sweep=my_study"])
    monkeypatch.setenv("OPTUNA_STORAGE", "sqlite:////tmp/from-optuna.db")
    assert stores.storage_url(cfg) == "sqlite:////tmp/from-optuna.db"
    monkeypatch.setenv("SWEEPER_OPTUNA_STORAGE", "sqlite:////tmp/from-sweeper.db")
    assert stores.storage_url(cfg) == "sqlite:////tmp/from-sweeper.db"


@pytest.mark.slow
def test_a_team_sweep_runs_from_its_own_repo(team):
    assert main(["+sweep=my_study", "data=digits", "trainer.max_epochs=2", "trainer.accelerator=cpu"]) == 0
    assert (team / "reports" / "my_study" / "report.md").exists()


@pytest.mark.slow
def test_a_built_wheel_carries_the_configs_and_runs_from_another_folder(tmp_path):
    """conf/ is the source of truth in the repo and is packaged into the wheel (sweeper/conf links to it)."""
    dist, site, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("sweeper-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)], check=True, capture_output=True
    )
    assert (site / "sweeper" / "conf" / "sweep" / "dropout.yaml").is_file()
    assert not (site / "sweeper" / "conf").is_symlink()
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "SWEEPER_CACHE": str(tmp_path / "cache")}
    help_out = subprocess.run([sys.executable, "-m", "sweeper", "--help"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert help_out.returncode == 0 and "compare" in help_out.stdout and str(site / "sweeper") in help_out.stdout
    run = subprocess.run(
        [sys.executable, "-m", "sweeper", "data=digits", "trainer.max_epochs=1", "trainer.accelerator=cpu"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (elsewhere / "mlruns" / "mlflow.db").exists()
