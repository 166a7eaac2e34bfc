"""The report's figures, written as PNGs (matplotlib, Agg); a plot without data is left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .collect import StudyData
from .rows import BASELINE, Row, _num


def _strength_param(runs: list, searched: list[str]) -> str | None:
    from ..config import GROUPS

    for name in searched:
        if name not in GROUPS and len({r.data.params.get(name) for r in runs}) > 1:
            return name
    return None


def forest(rows: list[Row], margin: float, plt: Any, save: Any) -> None:
    """The verdict at a glance: each row's paired difference from the baseline with its 95% CI, the equivalence
    margin as a band, and the verdict by colour (Holm-adjusted)."""
    compared = [r for r in rows if r.comparison is not None]
    fig, ax = plt.subplots(figsize=(9.5, 0.5 * len(compared) + 1.6))
    ax.axvspan(-margin, margin, color="tab:gray", alpha=0.15, label=f"equivalence margin (+-{margin:g} points)")
    ax.axvline(0, color="black", lw=1)
    for i, r in enumerate(reversed(compared)):
        c = r.comparison
        assert c is not None
        color = "tab:green" if c.significant and c.diff > 0 else "tab:red" if c.significant else "tab:gray"
        lo = (c.ci_low if c.ci_low is not None else c.diff) * 100
        hi = (c.ci_high if c.ci_high is not None else c.diff) * 100
        ax.errorbar(c.diff * 100, i, xerr=[[c.diff * 100 - lo], [hi - c.diff * 100]], fmt="o", color=color, capsize=4)
        p = "-" if c.p_adjusted is None else f"{c.p_adjusted:.3g}"
        ax.annotate(f" Holm p={p}{' *' if c.significant else ''}", (hi, i), fontsize=8, va="center")
    ax.set_yticks(range(len(compared)), [r.key for r in reversed(compared)])
    ax.set(xlabel="test accuracy difference from the baseline (points, paired, 95% CI)")
    ax.margins(x=0.25)
    ax.legend(fontsize=7, loc="lower right")
    save(
        fig,
        "forest",
        "Each technique's paired difference from the baseline with its 95% CI. Green: significantly better "
        "(Holm-adjusted), red: significantly worse, grey: not significant; the grey band is the equivalence margin.",
    )


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

    if rows and any(r.comparison is not None for r in rows):
        forest(rows, data.margin, plt, save)

    strength = {t: p for t, runs in by_tech.items() if (p := _strength_param(runs, data.searched))}
    if strength and not data.axis:
        cols = min(3, len(strength))  # at most 3 per row: each panel stays readable (>= 400 px) in a 1400 px page
        nrows = (len(strength) + cols - 1) // cols
        fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.9 * nrows), squeeze=False)
        base = next((r for r in rows if r.key == BASELINE), None)
        base_val = next((r.data.metrics.get("final_val_acc") for r in data.trials if r.data.tags.get("baseline") == "True"), None)
        for ax, (tech, param) in zip(axes.flat, sorted(strength.items())):
            # completed: final validation accuracy, filled; pruned: the last one, where they stopped, hollow and grey
            for state, metric, style in (
                ("completed", "final_val_acc", {"color": "tab:blue", "label": "completed (final val acc)"}),
                (
                    "pruned",
                    "val_acc",
                    {"facecolors": "none", "edgecolors": "tab:gray", "label": "pruned (val acc at the epoch it stopped)"},
                ),
            ):
                runs = [r for r in by_tech[tech] if r.data.tags["state"] == state]
                if runs:
                    ax.scatter([float(r.data.params[param]) for r in runs], [r.data.metrics.get(metric) for r in runs], marker="o", **style)
            if base is not None and base.val_rep is not None and base.val_rep.ci_low is not None:
                ax.axhspan(
                    base.val_rep.ci_low,
                    base.val_rep.ci_high,
                    color="tab:orange",
                    alpha=0.2,
                    label=f"baseline 95% CI ({base.val_rep.n} seeds)",
                )
                ax.axhline(base.val_rep.mean, color="tab:orange", lw=1)
            elif base_val is not None:
                ax.axhline(base_val, color="tab:orange", ls="--", label="baseline (search run)")
            if param in data.log_params or (not data.log_params and param.endswith(("l1", "l2", "weight_decay", "bn_momentum"))):
                ax.set_xscale("log")
            ax.set(title=tech, xlabel=param + (" (log scale)" if ax.get_xscale() == "log" else ""), ylabel="validation accuracy")
            ax.legend(fontsize=7, loc="lower left")
        for ax in list(axes.flat)[len(strength) :]:
            ax.axis("off")
        save(
            fig,
            "val_acc_vs_strength",
            "Validation accuracy against each technique's strength: completed trials filled, "
            "pruned trials hollow at the epoch they stopped; the band is the baseline's 95% CI over its replicate seeds.",
        )

    if data.histories:
        keys = sorted(data.histories, key=lambda k: (k != BASELINE, k))
        cols = min(3, len(keys))
        nrows = (len(keys) + cols - 1) // cols
        fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.4 * nrows), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            h = data.histories[key]
            ax.plot(range(1, len(h["train_acc"]) + 1), h["train_acc"], label="train")
            ax.plot(range(1, len(h["val_acc"]) + 1), h["val_acc"], label="validation")
            ax.set(title=key, xlabel="epoch", ylabel="accuracy")
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(keys) :]:
            ax.axis("off")
        save(
            fig,
            "learning_curves",
            "Train vs validation accuracy per epoch of each technique's best configuration "
            "(first seed): the gap between the curves is the overfitting gap.",
        )

    if rows:
        measured = all(r.training_cost is not None for r in rows)
        cost = (lambda r: r.training_cost.median) if measured else (lambda r: r.train_time_s)
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        for r in rows:
            lo, hi = r.test.ci_low, r.test.ci_high
            yerr = None if lo is None or hi is None else [[r.test.mean - lo], [hi - r.test.mean]]
            tc = r.training_cost
            xerr = None
            if measured and tc is not None and tc.ci_low is not None and tc.ci_high is not None:
                xerr = [[tc.median - tc.ci_low], [tc.ci_high - tc.median]]
            ax.errorbar(cost(r), r.test.mean, yerr=yerr, xerr=xerr, fmt="o", capsize=3, label=r.key)
        front, best = [], -1.0
        for r in sorted(rows, key=cost):
            if r.test.mean > best:
                front.append(r)
                best = r.test.mean
        ax.step([cost(r) for r in front], [r.test.mean for r in front], where="post", color="red", alpha=0.6, label="Pareto front")
        xlabel = "training cost (x baseline, interleaved timing, 95% CI)" if measured else "training time (s, mean over seeds)"
        ax.set(xlabel=xlabel, ylabel="test accuracy (mean, 95% CI)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        save(fig, "accuracy_vs_time", "Test accuracy against training cost; the red line is the Pareto front.")

    sparse_runs = [r for t, runs in by_tech.items() if "l1" in t or "elastic_net" in t for r in runs if "sparsity_1e-3" in r.data.metrics]
    if sparse_runs:
        fig, ax = plt.subplots(figsize=(6, 4))
        for tech in sorted({r.data.tags["technique"] for r in sparse_runs}):
            pts = [
                (r.data.metrics["sparsity_1e-3"], r.data.metrics["final_val_acc"]) for r in sparse_runs if r.data.tags["technique"] == tech
            ]
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
        axis = str(data.axis)
        label = {"data.train_fraction": "training-set fraction", "model": "hidden layers"}.get(axis, axis)
        ax.set(xlabel=label, ylabel="gain over baseline (val acc points)")
        if data.axis == "data.train_fraction":
            ax.set_xscale("log")
        ax.legend(fontsize=7)
        save(fig, "gain_vs_axis", f"Each technique's validation-accuracy gain over the baseline against {label}.")
    return made
