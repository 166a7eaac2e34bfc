"""The tradeoff report, built from the MLflow store alone (so it can be rebuilt any time, local or server).

``python -m sweeper.report <experiment> [--tracking-uri URI] [--out DIR]``

Inputs: the study's parent run (tags: objectives, searched params, axis, alpha), its trial runs
(``role=trial``) and replicate runs (``role=replicate``). Outputs, written to a temporary folder
and moved into place only when complete (never a partial report): ``report.md``, a self-contained
``report.html`` (images embedded), the PNG plots and ``report.csv``; all logged to the parent run.
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .masking import mask
from .stats import Comparison, Summary, summarize, welch
from .tracking import Tracker

BASELINE = "none"
SPARSE_ENOUGH = 0.05  # below this share of |w| < 1e-3 no technique counts as "making the model sparse"


# --- data --------------------------------------------------------------------------------------------
@dataclass
class StudyData:
    experiment: str
    parent: Any
    trials: list
    replicates: list
    objectives: list[tuple[str, str]]
    searched: list[str]
    axis: str | None
    alpha: float
    histories: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # replicate key -> curves


def collect(tracker: Tracker, experiment: str) -> StudyData:
    runs = tracker.search_runs()
    parents = [r for r in runs if r.data.tags.get("role") == "study"]
    if not parents:
        raise ConfigError("experiment", experiment, "has no study (parent) run; run a sweep into it first")
    parent = parents[0]
    trials = [r for r in runs if r.data.tags.get("role") == "trial"
              and r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    finished = [r for r in trials if r.data.tags.get("state") in ("completed", "pruned")]
    if not finished:
        raise ConfigError("experiment", experiment, "the study has no finished trials yet: nothing to report")
    reps = [r for r in runs if r.data.tags.get("role") == "replicate" and r.info.status == "FINISHED"
            and r.data.tags.get("mlflow.parentRunId") == parent.info.run_id and "test_acc" in r.data.metrics]
    tags = parent.data.tags
    data = StudyData(experiment, parent, trials, reps, [tuple(o) for o in json.loads(tags["objectives"])],
                     json.loads(tags.get("searched_params", "[]")), tags.get("axis") or None,
                     float(tags.get("alpha", 0.05)))
    first_seed = {}
    for r in reps:
        key, seed = r.data.tags["replicate_of"], int(r.data.tags["seed"])
        if key not in first_seed or seed < int(first_seed[key].data.tags["seed"]):
            first_seed[key] = r
    for key, r in first_seed.items():
        data.histories[key] = {m: [x.value for x in sorted(tracker.metric_history(r.info.run_id, m), key=lambda x: x.step)]
                               for m in ("train_acc", "val_acc")}
    return data


# --- the table ---------------------------------------------------------------------------------------
@dataclass
class Row:
    key: str
    params: str
    val_acc: float | None
    test: Summary
    comparison: Comparison | None  # vs the baseline; None for the baseline itself
    gen_gap: float
    sparsity_zero: float
    sparsity_1e3: float
    weight_l2: float
    epoch_time_s: float
    train_time_s: float
    inference_ms: float
    n_params: float
    epochs_to_best: float
    epoch_time_rel: float = 1.0
    inference_rel: float = 1.0
    extra_params: float = 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _trial_params(run, searched: list[str]) -> str:
    """The values Optuna chose for this trial (conditional parameters that did not apply are absent)."""
    from .config import GROUPS

    chosen = json.loads(run.data.tags.get("searched", "{}"))
    shown = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen.items() if k not in GROUPS]
    return ", ".join(shown) or "defaults"


def build_rows(data: StudyData) -> list[Row]:
    """One row per replicated configuration, baseline first; comparisons against the baseline."""
    by_key: dict[str, list] = {}
    for r in data.replicates:
        by_key.setdefault(r.data.tags["replicate_of"], []).append(r)
    trial_by_number = {r.data.tags.get("trial_number"): r for r in data.trials}
    rows = []
    for key, reps in by_key.items():
        m = lambda name: [r.data.metrics[name] for r in reps if name in r.data.metrics]  # noqa: E731
        source = trial_by_number.get(reps[0].data.tags.get("source_trial"))
        if source is not None:
            params = "baseline" if source.data.tags.get("baseline") == "True" else _trial_params(source, data.searched)
            val = source.data.metrics.get("final_val_acc")
        else:
            params, val = "reference: " + (reps[0].data.tags.get("overrides") or "defaults"), None
        stops = [r.data.metrics.get("restored_epoch", r.data.metrics.get("best_epoch", 0)) for r in reps]
        rows.append(Row(key, params, val, summarize(m("test_acc")), None, _mean(m("final_gen_gap")),
                        _mean(m("sparsity_zero")), _mean(m("sparsity_1e-3")), _mean(m("weight_l2")),
                        _mean(m("epoch_time_s")), _mean(m("train_time_s")), _mean(m("inference_ms_per_1k")),
                        _mean(m("n_params")), _mean(stops)))
    rows.sort(key=lambda r: (r.key != BASELINE, r.key.startswith("ref:"), r.key))
    base = next((r for r in rows if r.key == BASELINE), None)
    if base is not None:
        base_acc = [r.data.metrics["test_acc"] for r in by_key[BASELINE]]
        for row in rows:
            row.epoch_time_rel = row.epoch_time_s / base.epoch_time_s
            row.inference_rel = row.inference_ms / base.inference_ms
            row.extra_params = row.n_params - base.n_params
            if row is not base:
                acc = [r.data.metrics["test_acc"] for r in by_key[row.key]]
                row.comparison = welch(acc, base_acc, data.alpha)
    return rows


# --- recommendations ---------------------------------------------------------------------------------------
def _pts(x: float) -> str:
    return f"{x * 100:+.2f} points"


def _acc(row: Row) -> str:
    s = row.test
    ci = f" [{s.ci_low:.4f}, {s.ci_high:.4f}]" if s.ci_low is not None else ""
    return f"test acc {s.mean:.4f}{ci} (n={s.n})"


def _versus(row: Row) -> str:
    c = row.comparison
    return f"{_pts(c.diff)} vs baseline, {c.reason}" if c else "the baseline"


def recommend(rows: list[Row], axis_rows: list[dict] | None = None, axis: str | None = None) -> list[tuple[str, str]]:
    """(priority, recommendation naming its numbers) for accuracy, compute, size/sparsity, small data."""
    techs = [r for r in rows if r.key != BASELINE and not r.key.startswith("ref:")]
    base = next((r for r in rows if r.key == BASELINE), None)
    out: list[tuple[str, str]] = []
    if base is None or not techs:
        return [("best accuracy", "No replicated baseline and technique to compare.")]
    better = [r for r in techs if r.comparison and r.comparison.significant and r.comparison.diff > 0]
    if better:
        best = max(better, key=lambda r: r.test.mean)
        out.append(("best accuracy", f"Use {best.key} ({best.params}): {_acc(best)}, {_versus(best)}."))
    else:
        top = max(techs, key=lambda r: r.test.mean)
        out.append(("best accuracy", f"No technique beats the baseline beyond noise: the best, {top.key}, is "
                                     f"{_versus(top)}. Keep the baseline ({_acc(base)}) unless another priority decides."))
    not_worse = [r for r in [base, *techs] if not (r.comparison and r.comparison.significant and r.comparison.diff < 0)]
    cheap = min(not_worse, key=lambda r: r.train_time_s)
    out.append(("least compute", f"{cheap.key}: {cheap.train_time_s:.2f} s to train ({cheap.train_time_s / base.train_time_s:.2f}x "
                                 f"the baseline; {cheap.epoch_time_rel:.2f}x per epoch, {cheap.epochs_to_best:.1f} epochs "
                                 f"to best/stop), inference {cheap.inference_rel:.2f}x, {_acc(cheap)}, {_versus(cheap)}."))
    sparse = max(not_worse, key=lambda r: (r.sparsity_1e3, r.sparsity_zero))
    if sparse.sparsity_1e3 < SPARSE_ENOUGH:
        small = min(not_worse, key=lambda r: r.n_params)
        out.append(("smallest/sparsest model", f"No technique made the weights sparse (most: {sparse.key} with "
                    f"{sparse.sparsity_1e3 * 100:.1f}% of |w| < 1e-3); the smallest model is {small.key} "
                    f"with {small.n_params:.0f} parameters ({small.extra_params:+.0f} vs baseline)."))
    else:
        out.append(("smallest/sparsest model", f"{sparse.key}: {sparse.sparsity_1e3 * 100:.1f}% of weights below 1e-3, "
                    f"{sparse.sparsity_zero * 100:.1f}% exactly zero (prunable), {_acc(sparse)}, {_versus(sparse)}."))
    out.append(("small data", _small_data(axis_rows, axis)))
    return out


def _small_data(axis_rows: list[dict] | None, axis: str | None) -> str:
    if not axis_rows or axis != "data.train_fraction":
        return "Not measured in this study: run `python -m sweeper +sweep=data_size` for gains by training-set size."
    smallest = min(r["axis"] for r in axis_rows)
    at = [r for r in axis_rows if r["axis"] == smallest and r["key"] != BASELINE]
    sig = [r for r in at if r["comparison"].significant and r["comparison"].diff > 0]
    if not sig:
        top = max(at, key=lambda r: r["comparison"].diff)
        return (f"At {float(smallest) * 100:.0f}% of the training data no technique beats the baseline beyond noise "
                f"(best: {top['key']}, {_pts(top['comparison'].diff)}, {top['comparison'].reason}).")
    best = max(sig, key=lambda r: r["comparison"].diff)
    return (f"At {float(smallest) * 100:.0f}% of the training data use {best['key']}: {_pts(best['comparison'].diff)} "
            f"validation accuracy over the baseline ({best['comparison'].reason}, n={best['n']} seeds).")


# --- axis sweeps (data size, depth) ---------------------------------------------------------------------
def axis_table(data: StudyData) -> list[dict]:
    """technique x axis value: mean validation accuracy over seeds and the gain over the baseline there."""
    if not data.axis:
        return []
    cells: dict[tuple[str, str], list[float]] = {}
    for r in data.trials:
        if r.data.tags.get("state") != "completed":
            continue
        key = (r.data.tags["technique"], _axis_value(r, data.axis))
        cells.setdefault(key, []).append(r.data.metrics["final_val_acc"])
    out = []
    for (tech, value), accs in sorted(cells.items(), key=lambda kv: (kv[0][0] != BASELINE, kv[0][0], _num(kv[0][1]))):
        base = cells.get((BASELINE, value))
        comp = welch(accs, base, data.alpha) if base and tech != BASELINE else None
        out.append({"key": tech, "axis": value, "n": len(accs), "summary": summarize(accs), "comparison": comp})
    return [r for r in out if r["comparison"] is not None or r["key"] == BASELINE]


def _axis_value(run, axis: str) -> str:
    if axis == "model":  # depth sweeps: the number of hidden layers of the chosen model
        return str(len(json.loads(run.data.params["model.hidden"])))
    return run.data.params.get(axis) or run.data.tags.get("axis_value", "?")


def _num(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return len(str(v))  # e.g. "[64, 32]": depth by list length


# --- plots ---------------------------------------------------------------------------------------------
def _strength_param(runs: list, searched: list[str]) -> str | None:
    from .config import GROUPS

    for name in searched:
        if name not in GROUPS and len({r.data.params.get(name) for r in runs}) > 1:
            return name
    return None


def make_plots(data: StudyData, rows: list[Row], axis_rows: list[dict], folder: Path) -> dict[str, str]:
    """name -> caption of every plot written to ``folder`` (plots without data are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, str] = {}
    by_tech: dict[str, list] = {}
    for r in data.trials:
        if r.data.tags.get("state") in ("completed", "pruned") and r.data.tags.get("technique") != BASELINE:
            by_tech.setdefault(r.data.tags["technique"], []).append(r)

    def save(fig, name, caption):
        fig.tight_layout()
        fig.savefig(folder / f"{name}.png", dpi=90)
        plt.close(fig)
        made[name] = caption

    strength = {t: p for t, runs in by_tech.items() if (p := _strength_param(runs, data.searched))}
    if strength and not data.axis:
        fig, axes = plt.subplots(1, len(strength), figsize=(4 * len(strength), 3.4), squeeze=False)
        base_val = next((r.data.metrics.get("final_val_acc") for r in data.trials if r.data.tags.get("baseline") == "True"), None)
        for ax, (tech, param) in zip(axes[0], sorted(strength.items())):
            for state, marker in (("completed", "o"), ("pruned", "x")):
                pts = [(float(r.data.params[param]), r.data.metrics.get("final_val_acc", r.data.metrics.get("val_acc")))
                       for r in by_tech[tech] if r.data.tags["state"] == state]
                if pts:
                    ax.scatter(*zip(*pts), marker=marker, label=state)
            if base_val is not None:
                ax.axhline(base_val, color="gray", ls="--", label="baseline")
            if param.endswith(("l1", "l2", "weight_decay", "bn_momentum")):
                ax.set_xscale("log")
            ax.set(title=tech, xlabel=param, ylabel="validation accuracy")
            ax.legend(fontsize=7)
        save(fig, "val_acc_vs_strength", "Validation accuracy against each technique's strength (x: pruned).")

    if data.histories:
        keys = sorted(data.histories, key=lambda k: (k != BASELINE, k))
        cols = min(4, len(keys))
        nrows = (len(keys) + cols - 1) // cols
        fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.8 * nrows), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            h = data.histories[key]
            ax.plot(range(1, len(h["train_acc"]) + 1), h["train_acc"], label="train")
            ax.plot(range(1, len(h["val_acc"]) + 1), h["val_acc"], label="validation")
            ax.set(title=key, xlabel="epoch", ylabel="accuracy")
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        save(fig, "learning_curves", "Train vs validation accuracy per epoch of each technique's best configuration "
                                     "(first seed): the gap between the curves is the overfitting gap.")

    if rows:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for r in rows:
            err = None if r.test.ci_low is None else [[r.test.mean - r.test.ci_low], [r.test.ci_high - r.test.mean]]
            ax.errorbar(r.train_time_s, r.test.mean, yerr=err, fmt="o", capsize=3)
            ax.annotate(r.key, (r.train_time_s, r.test.mean), fontsize=7, xytext=(4, 3), textcoords="offset points")
        front, best = [], -1.0
        for r in sorted(rows, key=lambda r: r.train_time_s):
            if r.test.mean > best:
                front.append(r)
                best = r.test.mean
        ax.step([r.train_time_s for r in front], [r.test.mean for r in front], where="post", color="red",
                alpha=0.6, label="Pareto front")
        ax.set(xlabel="training time (s, mean over seeds)", ylabel="test accuracy (mean, 95% CI)")
        ax.legend(fontsize=7)
        save(fig, "accuracy_vs_time", "Test accuracy against training time; the red line is the Pareto front.")

    sparse_runs = [r for t, runs in by_tech.items() if "l1" in t or "elastic_net" in t for r in runs
                   if "sparsity_1e-3" in r.data.metrics]
    if sparse_runs:
        fig, ax = plt.subplots(figsize=(6, 4))
        for tech in sorted({r.data.tags["technique"] for r in sparse_runs}):
            pts = [(r.data.metrics["sparsity_1e-3"], r.data.metrics["final_val_acc"]) for r in sparse_runs
                   if r.data.tags["technique"] == tech]
            ax.scatter(*zip(*pts), label=tech)
        ax.set(xlabel="share of weights with |w| < 1e-3", ylabel="validation accuracy")
        ax.legend(fontsize=7)
        save(fig, "accuracy_vs_sparsity", "Validation accuracy against sparsity for L1 and elastic net trials.")

    if axis_rows:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for tech in sorted({r["key"] for r in axis_rows if r["key"] != BASELINE}):
            pts = sorted(((_num(r["axis"]), r) for r in axis_rows if r["key"] == tech), key=lambda p: p[0])
            ax.plot([p[0] for p in pts], [p[1]["comparison"].diff * 100 for p in pts], marker="o", label=tech)
        ax.axhline(0, color="gray", ls="--")
        label = {"data.train_fraction": "training-set fraction", "model": "hidden layers"}.get(data.axis, data.axis)
        ax.set(xlabel=label, ylabel="gain over baseline (val acc points)")
        if data.axis == "data.train_fraction":
            ax.set_xscale("log")
        ax.legend(fontsize=7)
        save(fig, "gain_vs_axis", f"Each technique's validation-accuracy gain over the baseline against {label}.")
    return made


# --- rendering -------------------------------------------------------------------------------------------
HEAD = ["technique", "best params", "val acc", "test acc mean", "95% CI", "vs baseline", "p-value", "verdict",
        "gen gap", "exact zeros", "|w|<1e-3", "weight L2", "epoch time (x base)", "inference (x base)",
        "extra params", "epochs to best/stop", "seeds"]


def table_rows(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        c = r.comparison
        ci = f"[{r.test.ci_low:.4f}, {r.test.ci_high:.4f}]" if r.test.ci_low is not None else "n/a (1 seed)"
        out.append([r.key, r.params, "" if r.val_acc is None else f"{r.val_acc:.4f}", f"{r.test.mean:.4f}", ci,
                    "-" if c is None else _pts(c.diff), "-" if c is None or c.p_value is None else f"{c.p_value:.3g}",
                    "baseline" if c is None else c.reason, f"{r.gen_gap:.4f}", f"{r.sparsity_zero * 100:.1f}%",
                    f"{r.sparsity_1e3 * 100:.1f}%", f"{r.weight_l2:.2f}", f"{r.epoch_time_rel:.2f}",
                    f"{r.inference_rel:.2f}", f"{r.extra_params:+.0f}", f"{r.epochs_to_best:.1f}", str(r.test.n)])
    return out


def axis_rows_text(axis_rows: list[dict]) -> list[list[str]]:
    out = []
    for r in axis_rows:
        s, c = r["summary"], r["comparison"]
        ci = f"[{s.ci_low:.4f}, {s.ci_high:.4f}]" if s.ci_low is not None else "n/a"
        out.append([r["key"], str(r["axis"]), f"{s.mean:.4f}", ci, "-" if c is None else _pts(c.diff),
                    "-" if c is None or c.p_value is None else f"{c.p_value:.3g}",
                    "baseline" if c is None else c.reason, str(r["n"])])
    return out


AXIS_HEAD = ["technique", "axis value", "val acc mean", "95% CI", "vs baseline", "p-value", "verdict", "seeds"]


def _md_table(head, body) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    return "\n".join(["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head),
                      *["| " + " | ".join(map(esc, row)) + " |" for row in body]])


def _html_table(head, body) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def render(data: StudyData, rows: list[Row], axis_rows: list[dict], recs, plots: dict[str, str], folder: Path) -> None:
    title = f"Regularization report: {data.experiment}"
    objective = ", ".join(f"{m} ({d})" for m, d in data.objectives)
    n_done = sum(1 for r in data.trials if r.data.tags.get("state") in ("completed", "pruned"))
    intro = (f"Study `{data.experiment}`: {n_done} finished trials, objective {objective}. Test accuracy is the mean "
             f"over the replicated seeds with a t-based 95% confidence interval; 'vs baseline' is a Welch t-test "
             f"(alpha={data.alpha}). Times and latencies are relative to the baseline.")
    refs = [r for r in rows if r.key.startswith("ref:")]
    main_rows = [r for r in rows if not r.key.startswith("ref:")]
    base = [r for r in rows if r.key == BASELINE]
    md = [f"# {title}", "", intro, ""]
    htm = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>"]
    if main_rows:
        md += ["## Techniques", "", _md_table(HEAD, table_rows(main_rows)), ""]
        htm += ["<h2>Techniques</h2>", _html_table(HEAD, table_rows(main_rows))]
    if refs:
        md += ["## Reference configurations (e.g. the seed network with dropout 0.2)", "",
               _md_table(HEAD, table_rows(base + refs)), ""]
        htm += ["<h2>Reference configurations</h2>", _html_table(HEAD, table_rows(base + refs))]
    if axis_rows:
        md += [f"## Gain over the baseline by {data.axis}", "", _md_table(AXIS_HEAD, axis_rows_text(axis_rows)), ""]
        htm += [f"<h2>Gain over the baseline by {html.escape(data.axis)}</h2>", _html_table(AXIS_HEAD, axis_rows_text(axis_rows))]
    if recs:
        md += ["## Recommendations", "", *[f"- **{p}**: {t}" for p, t in recs], ""]
        htm += ["<h2>Recommendations</h2><ul>", *[f"<li><b>{html.escape(p)}</b>: {html.escape(t)}</li>" for p, t in recs], "</ul>"]
    md += ["## Plots", ""]
    htm.append("<h2>Plots</h2>")
    for name, caption in plots.items():
        md += [f"![{name}]({name}.png)", "", caption, ""]
        b64 = base64.b64encode((folder / f"{name}.png").read_bytes()).decode()
        htm.append(f'<figure><img alt="{name}" src="data:image/png;base64,{b64}"><figcaption>{html.escape(caption)}</figcaption></figure>')
    (folder / "report.md").write_text("\n".join(md))
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}th{background:#eee}img{max-width:100%}")
    (folder / "report.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
                                        f"</title><style>{style}</style></head><body>{''.join(htm)}</body></html>")
    with open(folder / "report.csv", "w", newline="") as f:
        w = csv.writer(f)
        if main_rows or refs:
            w.writerow(HEAD)
            w.writerows(table_rows(rows))
        if axis_rows:
            w.writerow(AXIS_HEAD)
            w.writerows(axis_rows_text(axis_rows))


def print_table(rows: list[Row], axis_rows: list[dict], recs) -> None:
    cols = [0, 3, 4, 5, 6, 7, 9, 10, 12, 16]
    body = [[row[i] for i in cols] for row in table_rows(rows)] if rows else []
    head = [HEAD[i] for i in cols]
    if axis_rows:
        head, body = AXIS_HEAD, axis_rows_text(axis_rows)
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    for line in [head, ["-" * w for w in widths], *body]:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
    for p, t in recs:
        print(f"* {p}: {t}")


# --- entry points ------------------------------------------------------------------------------------------
@dataclass
class Report:
    folder: Path
    rows: list[Row]
    axis_rows: list[dict]
    recommendations: list[tuple[str, str]]
    plots: dict[str, str]


def write_report(tracker: Tracker, experiment: str, out_root: str | Path, log_to_parent: bool = True) -> Report:
    """Build every output in a temporary folder, then move it to <out_root>/<experiment>/ (never partial)."""
    data = collect(tracker, experiment)
    rows = build_rows(data)
    axis_rows = axis_table(data)
    recs = recommend(rows, axis_rows, data.axis) if rows else (
        [("small data", _small_data(axis_rows, data.axis))] if axis_rows else [])
    final = Path(out_root) / experiment
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=final.parent))
    try:
        plots = make_plots(data, rows, axis_rows, tmp)
        render(data, rows, axis_rows, recs, plots, tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if log_to_parent:
        for f in sorted(final.iterdir()):
            tracker.log_artifact(data.parent.info.run_id, f, "report")
    return Report(final, rows, axis_rows, recs, plots)


def recommended_key(rows: list[Row]) -> str | None:
    """The accuracy recommendation: the best significantly-better technique, else the baseline."""
    better = [r for r in rows if r.key != BASELINE and not r.key.startswith("ref:") and r.comparison
              and r.comparison.significant and r.comparison.diff > 0]
    if better:
        return max(better, key=lambda r: r.test.mean).key
    return BASELINE if any(r.key == BASELINE for r in rows) else None


def register_recommended(tracker: Tracker, report: Report, study_name: str) -> str | None:
    """Register the recommended technique's replicated model as ``sweeper-<study>`` in the Model Registry."""
    import re

    key = recommended_key(report.rows)
    if key is None:
        return None
    runs = tracker.search_runs(f"tags.role = 'replicate' and tags.replicate_of = '{key}'")
    with_model = sorted((r for r in runs if r.data.tags.get("model_uri")), key=lambda r: int(r.data.tags["seed"]))
    if not with_model:
        return None
    name = "sweeper-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", study_name)
    version = tracker.register_model(with_model[0].data.tags["model_uri"], name,
                                     f"Recommended by study {study_name}: {key} (best accuracy priority)")
    return f"{name} version {version} ({key})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sweeper.report", description="Rebuild a study's tradeoff report from MLflow.")
    ap.add_argument("experiment", help="the study's MLflow experiment (= the study name)")
    ap.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db")
    ap.add_argument("--out", default="reports", help="folder for the report (a subfolder per experiment)")
    args = ap.parse_args(argv)
    from .config import absolute_sqlite

    uri = absolute_sqlite(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlruns/mlflow.db")
    try:
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
            raise ConfigError("--tracking-uri", uri, "no MLflow store there; run from the folder holding mlruns/ or pass --tracking-uri")
        from mlflow.tracking import MlflowClient

        names = [e.name for e in MlflowClient(tracking_uri=uri).search_experiments()]
        if args.experiment not in names:
            raise ConfigError("experiment", args.experiment, f"not found; existing: {', '.join(sorted(names)) or 'none'}")
        report = write_report(Tracker(uri, args.experiment), args.experiment, args.out)
    except ConfigError as exc:
        print(f"error: {mask(str(exc))}", file=sys.stderr)
        return 2
    print_table(report.rows, report.axis_rows, report.recommendations)
    print(f"report: {report.folder / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
