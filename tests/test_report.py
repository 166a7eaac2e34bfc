"""The tradeoff report end to end on a real tiny compare sweep: outputs, rebuild from MLflow, browser render."""

import json
import os
import re
import shutil
import subprocess
import time

import pytest
from conftest import all_runs, load_study, sweep_args
from mlflow.tracking import MlflowClient

from sweeper import config
from sweeper.__main__ import main
from sweeper.replicate import replicate
from sweeper.report import main as report_main
from sweeper.study import open_study
from sweeper.worker import study_context

COMPARE = sweep_args(
    "compare",
    "sweep.techniques=[l1,dropout]",
    "sweep.trials_per_technique=2",
    "sweep.replicates=2",
    "trainer.max_epochs=3",
    "sweep.timing_repeats=3",
)


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory):
    """One tiny compare sweep (baseline + 2 techniques x 2 trials, 2 seeds), shared by the tests below."""
    folder = tmp_path_factory.mktemp("compare")
    old = os.getcwd()
    os.chdir(folder)
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        assert main(COMPARE) == 0
    finally:
        os.chdir(old)
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return folder


@pytest.mark.slow
def test_compare_sweep_writes_every_output_and_logs_them(compare_dir):
    out = compare_dir / "reports" / "compare"
    names = {p.name for p in out.iterdir()}
    assert {
        "report.md",
        "report.html",
        "report.csv",
        "learning_curves.png",
        "accuracy_vs_time.png",
        "val_acc_vs_strength.png",
        "accuracy_vs_sparsity.png",
    } <= names
    md = (out / "report.md").read_text()
    for technique in ("| none |", "| l1 |", "| dropout |"):
        assert technique in md
    assert "## Recommendations" in md and "best accuracy" in md and "least compute" in md
    assert "nan" not in md.lower()
    assert "Holm-adjusted" in md and "| paired t |" in md and "seeds the search never used (1000, 1001)" in md
    uri = f"sqlite:///{compare_dir / 'mlruns' / 'mlflow.db'}"
    runs = all_runs(uri)
    parent = next(r for r in runs if r.data.tags.get("role") == "study")
    plots = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(parent.info.run_id, "plots")}
    assert "plots/param_importances.png" in plots  # several searched parameters: the technique and its strengths
    trials = [r for r in runs if r.data.tags.get("role") == "trial"]
    reps = [r for r in runs if r.data.tags.get("role") == "replicate"]
    assert len(trials) == 5 and {r.data.tags["technique"] for r in trials} == {"none", "l1", "dropout"}
    assert {r.data.tags["device"] for r in trials + [r for r in runs if r.data.tags.get("role") == "replicate"]} == {"cpu"}
    assert sorted(r.data.tags["technique"] for r in trials).count("l1") == 2  # equal budget per technique
    assert len(reps) == 6 and all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in reps)
    costs = [r for r in runs if r.data.tags.get("role") == "cost"]
    assert sorted(r.data.tags["replicate_of"] for r in costs) == ["dropout", "l1"]  # interleaved timings, baseline = 1
    for r in costs:
        m = r.data.metrics
        assert m["epoch_time_ratio_lo"] <= m["epoch_time_ratio"] <= m["epoch_time_ratio_hi"] and r.data.tags["repeats"] == "3"
    assert all("test_acc" in r.data.metrics for r in reps) and not any("test_acc" in r.data.metrics for r in trials)
    client = MlflowClient(tracking_uri=uri)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/report.csv"} <= logged
    with_model = [r for r in reps if r.data.tags.get("model_uri")]
    assert {r.data.tags["replicate_of"] for r in with_model} == {"none", "l1", "dropout"}
    versions = client.search_model_versions("name = 'sweeper-compare'")
    assert len(versions) == 1
    champion = client.get_model_version_by_alias("sweeper-compare", "champion")  # aliases, not deprecated stages
    assert champion.version == versions[0].version and "replicate seeds never used by the search" in champion.description
    # lineage: readable run names, the dataset each run trained on, the experiment's description, metric names
    baseline_run = next(r for r in trials if r.data.tags.get("baseline") == "True")
    assert baseline_run.info.run_name == "t0 none (baseline)"
    assert any(re.fullmatch(r"t\d+ l1 l1=[0-9.e-]+", r.info.run_name) for r in trials)
    inputs = client.get_run(reps[0].info.run_id).inputs.dataset_inputs
    assert inputs[0].dataset.name == "digits" and json.loads(inputs[0].dataset.profile)["train"] > 0
    assert len({client.get_run(r.info.run_id).inputs.dataset_inputs[0].dataset.digest for r in reps}) == 1
    exp = client.get_experiment_by_name("compare")
    assert "report/report.html" in exp.tags["mlflow.note.content"]
    from conftest import load_study

    assert load_study(compare_dir / "mlruns" / "optuna.db", "compare").metric_names == ["val_acc"]
    import mlflow.pytorch
    import torch

    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model("models:/sweeper-compare/1")
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.slow
def test_report_rebuilds_the_same_table_from_mlflow(compare_dir, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(compare_dir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert report_main(["compare", "--out", str(tmp_path)]) == 0
    first = (compare_dir / "reports" / "compare" / "report.csv").read_text()
    again = (tmp_path / "compare" / "report.csv").read_text()
    drop_times = lambda text: [re.sub(r"\d+\.\d+$", "", line) for line in text.splitlines()]
    assert [line.split(",")[:8] for line in first.splitlines()] == [line.split(",")[:8] for line in again.splitlines()]
    assert drop_times(first)[0] == drop_times(again)[0]
    assert "report:" in capsys.readouterr().out


@pytest.mark.slow
def test_replicates_are_not_redone(compare_dir, monkeypatch):
    monkeypatch.chdir(compare_dir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = config.load(COMPARE)
    ctx = study_context(cfg)
    tracker = ctx.tracker
    study, parent = open_study(cfg, ctx.space, ctx.url, ctx.tracker, ctx.storage)
    before = len(all_runs(tracker.uri))
    assert replicate(study, cfg, COMPARE, tracker, parent, ctx.storage) == 0
    assert len(all_runs(tracker.uri)) == before


@pytest.mark.slow
def test_report_bad_inputs_write_nothing(compare_dir, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(compare_dir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert report_main(["nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "experiment: 'nope'" in err and "existing: Default, compare" in err
    assert report_main(["compare", "--tracking-uri", f"sqlite:///{tmp_path}/none.db", "--out", str(tmp_path / "r")]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(sweep_args("compare", "sweep.techniques=[l1,magic]")) == 2
    assert "sweep.techniques: 'magic'" in capsys.readouterr().err


def test_report_cli_refuses_unopenable_stores_in_one_line(tmp_path, monkeypatch, capsys):
    """An unsupported scheme or MLflow 3's refused file store: exit 2; a dead server: exit 3 within seconds (MLflow's
    own client retries it for minutes). Never a traceback, never a report folder."""
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    out = ["--out", str(tmp_path / "r")]
    assert report_main(["compare", "--tracking-uri", "ftp://bob:hunter2@example.org/x", *out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --tracking-uri: 'ftp://bob:***@example.org/x' is invalid; unsupported scheme 'ftp'"), err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path}/old-mlruns")
    assert report_main(["compare", *out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: MLFLOW_TRACKING_URI: ") and "refuses its file store" in err, err
    t0 = time.monotonic()
    assert report_main(["compare", "--tracking-uri", "http://bob:hunter2@127.0.0.1:9", *out]) == 3
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "127.0.0.1:9 is unreachable" in err and "hunter2" not in err, err
    t0 = time.monotonic()  # a dead database server: MLflow's store retried it for minutes
    assert report_main(["compare", "--tracking-uri", "postgresql://bob:hunter2@127.0.0.1:9/mlflow", *out]) == 2
    assert time.monotonic() - t0 < 15
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot connect to 127.0.0.1:9" in err and "hunter2" not in err, err
    assert not (tmp_path / "r").exists() and not (tmp_path / "old-mlruns").exists()


@pytest.mark.parametrize("names,expected", [(["p"], False), (["p", "lr"], True)])
def test_importance_plot_only_when_several_parameters_were_searched(tmp_path, names, expected):
    # importances are shares of 1: the only searched parameter (the dropout question) always gets all of it
    import optuna

    from sweeper.study_summary import optuna_plots

    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: sum(t.suggest_float(n, 0, 1) for n in names), n_trials=6)
    made = optuna_plots(study, tmp_path, ["val_acc"])
    assert ("param_importances" in made) is expected and "optimization_history" in made
    assert (tmp_path / "param_importances.png").exists() is expected


def test_study_without_finished_trials_has_no_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = sweep_args("dropout", "sweep.n_trials=1", "sweep.study_name=empty")
    cfg = config.load(args)
    ctx = study_context(cfg)
    open_study(cfg, ctx.space, ctx.url, ctx.tracker, ctx.storage)  # study + parent run, no trial run yet
    assert report_main(["empty", "--out", str(tmp_path / "r")]) == 2
    assert "no finished trials" in capsys.readouterr().err
    assert not (tmp_path / "r" / "empty").exists()


def test_a_study_where_nothing_learned_says_so_and_registers_no_model(sweep_dir, capsys):
    """optim.lr=1e6 blows every model up to a constant prediction: test acc 0.1000 for all, differences of exactly
    zero, so 'keep the baseline' would be read as evidence, and the baseline was registered as the champion."""
    from mlflow import MlflowClient

    argv = sweep_args("dropout", "optim.lr=1e6", "sweep.n_trials=2", "sweep.replicates=2", "sweep.timing_repeats=0")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "no model registered: every replicated configuration is at chance level" in out
    md = (sweep_dir / "reports" / "dropout" / "report.md").read_text()
    assert re.search(r"\*\*warning\*\*: Every replicated configuration is at chance level: the best, \S+, has test acc 0\.1\d*", md), md
    assert "(1/10 = 0.1000, 270 test rows)" in md
    assert MlflowClient(f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}").search_registered_models() == []


def test_a_regularized_baseline_is_still_the_baseline_row_and_no_baseline_says_so(sweep_dir, capsys):
    """``sweep.baseline=[regularizer=l2, ...]`` (our current config vs the search): the baseline trial was grouped with
    the searched l2 trials, one of them became "the" l2 row, and the report compared nothing, every row's verdict
    reading "baseline". Now the baseline is its own row (saying what it is) and the searched l2 row is compared with
    it; with ``sweep.baseline=null`` the rows say there is no baseline instead of "baseline"."""
    base = ["sweep.n_trials=3", "sweep.replicates=2", "sweep.timing_repeats=0", "trainer.max_epochs=1"]
    assert main(sweep_args("l2", *base, "sweep.baseline=['regularizer=l2','regularizer.l2=1e-4']")) == 0
    md = (sweep_dir / "reports" / "l2" / "report.md").read_text()
    table = md.split("## Techniques")[1].split("##")[0]
    assert "| none | baseline (l2: regularizer=l2 regularizer.l2=1e-4) |" in table, table
    (l2_row,) = [line for line in table.splitlines() if line.startswith("| l2 |")]
    assert re.search(r"\| [+-]\d+\.\d+ points \| \[", l2_row) and "paired t" in l2_row, l2_row
    capsys.readouterr()
    assert main(sweep_args("l2", *base, "sweep.study_name=l2_nobase", "sweep.baseline=null")) == 0
    out = capsys.readouterr().out
    assert "no baseline to compare" in out
    table = (sweep_dir / "reports" / "l2_nobase" / "report.md").read_text().split("## Techniques")[1].split("##")[0]
    assert "no baseline to compare" in table and "| baseline |" not in table


def test_two_studies_in_one_experiment_each_report_their_own_parent_run(sweep_dir, capsys, tmp_path):
    """Two Optuna storages (or one recreated) with one MLflow store put two ``dropout`` studies into one experiment;
    the report took the newest parent run, so study A's own report showed study B's trials. A sweep now reports its
    own parent run; ``python -m sweeper.report`` takes the newest with a note naming the others, or --parent-run."""
    base = sweep_args("dropout", "sweep.replicates=0", "sweep.timing_repeats=0", "trainer.max_epochs=1")
    assert main([*base, "sweep.n_trials=3"]) == 0
    parent_a = load_study(sweep_dir / "mlruns" / "optuna.db", "dropout").user_attrs["mlflow_parent_run_id"]
    assert main([*base, "sweep.n_trials=2", f"storage=sqlite:///{tmp_path / 'other.db'}"]) == 0
    capsys.readouterr()
    assert main([*base, "sweep.n_trials=3"]) == 0  # study A again: complete, so it reports
    assert "Study `dropout`: 3 finished trials" in (sweep_dir / "reports" / "dropout" / "report.md").read_text()
    uri = f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}"
    capsys.readouterr()
    assert report_main(["dropout", "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 0
    assert "holds 2 study runs; reporting the newest" in capsys.readouterr().err
    assert "Study `dropout`: 2 finished trials" in (tmp_path / "r" / "dropout" / "report.md").read_text()
    assert report_main(["dropout", "--tracking-uri", uri, "--out", str(tmp_path / "r"), "--parent-run", parent_a]) == 0
    assert "Study `dropout`: 3 finished trials" in (tmp_path / "r" / "dropout" / "report.md").read_text()
    assert report_main(["dropout", "--tracking-uri", uri, "--out", str(tmp_path / "r"), "--parent-run", "nope"]) == 2
    assert "error: --parent-run: 'nope' is invalid; is not a study run of experiment dropout; its study runs: " in (capsys.readouterr().err)


@pytest.mark.slow
def test_dropout_report_answers_the_claim_on_seeds_the_search_never_used(sweep_dir, capsys):
    """The winner's curse: were a replicate seed also the search's seed, replicate 0 of the tuned technique
    would be the search's luckiest trial itself, and its test mean biased up against the baseline's."""
    assert main(sweep_args("dropout", "sweep.n_trials=3", "sweep.replicates=2", "sweep.timing_repeats=0")) == 0
    md = (sweep_dir / "reports" / "dropout" / "report.md").read_text()
    section = md.split("## Reference configurations")[1].split("##")[0]
    assert "| none |" in section and "| ref:seed_dropout_0.2 |" in section
    assert "regularizer.p=0.2" in section and re.search(r"(not )?significant \(paired t, p=", section)
    claim = md.split("## The claim")[1].split("##")[0]
    assert "0.95 test accuracy without dropout and 0.96 with dropout 0.2" in claim
    assert re.search(r"Holm p=[0-9.]+\), MDE [0-9.]+ points\. Verdict: ", claim), claim
    runs = all_runs(f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}")
    search_seeds = {int(r.data.params["seed"]) for r in runs if r.data.tags.get("role") == "trial"}
    by_row: dict[str, set[int]] = {}
    for r in runs:
        if r.data.tags.get("role") == "replicate":
            by_row.setdefault(r.data.tags["replicate_of"], set()).add(int(r.data.tags["seed"]))
    assert set(by_row) == {"none", "dropout", "ref:seed_dropout_0.2"}
    for key, seeds in by_row.items():  # every row, the baseline included, on the same fresh seeds
        assert seeds == {1000, 1001} and not seeds & search_seeds, key


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and os.environ.get("CI"):
        pytest.fail("chromium is not installed (.ci/run installs Debian's chromium package)")
    if exe is None:
        pytest.skip("chromium not installed here")
    return exe


@pytest.mark.slow
def test_html_report_renders_table_and_every_image_in_chromium(compare_dir, tmp_path):
    exe = _chromium()
    page = tmp_path / "page.html"
    probe = (
        "<script>window.addEventListener('load',()=>{const imgs=[...document.images];"
        "document.title=JSON.stringify({rows:document.querySelectorAll('tbody tr').length,"
        "images:imgs.length,ok:imgs.filter(i=>i.complete&&i.naturalWidth>0).length,"
        "narrowest:Math.min(...imgs.map(i=>i.naturalWidth)),first:imgs[0].alt})});</script>"
    )
    page.write_text((compare_dir / "reports" / "compare" / "report.html").read_text().replace("</body>", probe + "</body>"))
    dom = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    result = json.loads(re.search(r"<title>(.*?)</title>", dom).group(1).replace("&quot;", '"'))
    assert result["rows"] >= 3 and result["images"] >= 5 and result["ok"] == result["images"], result
    assert result["narrowest"] >= 400 and result["first"] == "forest", result  # readable at 1400 px; the verdict first
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1400,1800",
            (compare_dir / "reports" / "compare" / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 10_000


# Debian's Chromium under Playwright (no browser download): flags that keep it off the closed network
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]
GRID_CELLS = """() => { const out = {};
  for (const c of document.querySelectorAll('[role=row][row-index] [role=gridcell][col-id]')) {
    const i = c.closest('[role=row]').getAttribute('row-index');
    (out[i] = out[i] || {})[c.getAttribute('col-id')] = c.innerText.trim(); }
  return Object.values(out); }"""


@pytest.mark.slow
def test_mlflow_ui_lists_the_study_run_its_children_and_their_datasets(compare_dir, tmp_path):
    """A real `mlflow server` on the study's store, its UI in headless Chromium: the parent run, its trial runs
    (readable names) nested under it once expanded, and the Dataset column filled on every trial row."""
    import socket
    import sys

    import requests
    from playwright.sync_api import sync_playwright

    exe = _chromium()
    db = compare_dir / "mlruns" / "mlflow.db"
    exp = MlflowClient(tracking_uri=f"sqlite:///{db}").get_experiment_by_name("compare")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "mlflow-ui.log", "w")
    mlflow_cli = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}", "--workers", "1"]
    server = subprocess.Popen([*mlflow_cli, "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(120):
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs")
            page.get_by_role("link", name="compare", exact=True).first.wait_for(timeout=60_000)
            page.locator("[role=gridcell][col-id='attributes.`Run Name`'] button").first.click()  # expand the parent
            page.get_by_text("t0 none (baseline)").wait_for(timeout=30_000)
            page.wait_for_timeout(500)
            rows = page.evaluate(GRID_CELLS)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    names = [r["attributes.`Run Name`"].splitlines()[-1] for r in rows]
    assert names[0] == "compare", names  # the parent run first, its children below it
    trials = [r for r in rows if re.match(r"t\d+ ", r["attributes.`Run Name`"].splitlines()[-1])]
    assert len(trials) == 5, names  # baseline + 2 techniques x 2 trials
    assert {"t0 none (baseline)"} < {r["attributes.`Run Name`"].splitlines()[-1] for r in trials}
    for r in trials:
        assert re.match(r"digits \([0-9a-f]{12}\)", r["attributes.`Dataset`"]), r


@pytest.mark.slow
def test_data_size_sweep_reports_gain_by_training_fraction(sweep_dir):
    args = sweep_args(
        "data_size",
        "sweep.n_trials=8",
        "sweep.params.regularizer=choice(none,dropout)",
        "sweep.params.data.train_fraction=choice(0.5,1.0)",
        "sweep.params.seed=choice(0,1)",
    )
    assert main(args) == 0
    out = sweep_dir / "reports" / "data_size"
    md = (out / "report.md").read_text()
    assert "## Gain over the baseline by data.train_fraction" in md
    assert "| dropout | 0.5 |" in md and "| dropout | 1.0 |" in md and "| none | 0.5 |" in md
    assert "small data" in md and (out / "gain_vs_axis.png").exists()
    assert "scored on the test split" in md and "paired by seed" in md and "| paired t |" in md
    runs = all_runs(f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}")
    epochs = {
        (r.data.params["data.train_fraction"], int(r.data.metrics["epochs_trained"])) for r in runs if r.data.tags.get("role") == "trial"
    }
    assert epochs == {("0.5", 4), ("1.0", 2)}  # the same optimizer steps at half the data: twice the epochs


@pytest.mark.slow
def test_two_look_replication_splits_alpha_and_extends_only_the_baseline_and_open_leaders(sweep_dir):
    args = sweep_args(
        "dropout", "sweep.n_trials=3", "sweep.replicates=2", "sweep.replicates_max=3", "sweep.timing_repeats=0", "sweep.references=null"
    )
    assert main(args) == 0
    runs = all_runs(f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}")
    parent = next(r for r in runs if r.data.tags.get("role") == "study")
    assert parent.data.tags["looks"] == "2"
    seeds: dict[str, set[int]] = {}
    look2: dict[str, set[int]] = {}
    for r in runs:
        if r.data.tags.get("role") == "replicate":
            seeds.setdefault(r.data.tags["replicate_of"], set()).add(int(r.data.tags["seed"]))
            if r.data.tags["look"] == "2":
                look2.setdefault(r.data.tags["replicate_of"], set()).add(int(r.data.tags["seed"]))
    assert all(s >= {1000, 1001} for s in seeds.values())
    assert all(s == {1002} for s in look2.values())  # look 2 adds only the new seed
    if look2:  # an inconclusive leader got the extra seed, and so did the baseline it is paired with
        assert "none" in look2 and len(look2) >= 2
    md = (sweep_dir / "reports" / "dropout" / "report.md").read_text()
    assert "two looks (2), each tested at alpha/2=0.025" in md
