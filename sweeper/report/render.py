"""report.md, a self-contained report.html (images embedded), report.csv, and the terminal table."""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from pathlib import Path
from typing import Any

from ..stats import Comparison
from .collect import StudyData
from .recommend import _acc, ci_pts, power_text, pts, ratio_text
from .rows import BASELINE, Row

HEAD = [
    "technique",
    "best params",
    "search val acc",
    "replicate val acc",
    "test acc mean",
    "95% CI",
    "vs baseline",
    "diff 95% CI",
    "test",
    "p",
    "Holm p",
    "verdict",
    "MDE (80% power)",
    "gen gap",
    "exact zeros",
    "|w|<1e-3",
    "weight L2",
    "training cost (x base)",
    "epoch time (x base)",
    "inference (x base)",
    "extra params",
    "epochs trained",
    "best epoch",
    "seeds",
]
TERMINAL = [
    "technique",
    "test acc mean",
    "vs baseline",
    "diff 95% CI",
    "Holm p",
    "verdict",
    "exact zeros",
    "training cost (x base)",
    "seeds",
]


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.3g}"


def _comparison_cells(c: Comparison | None, key: str) -> list[str]:
    """vs baseline, its CI, the test, raw p, Holm p, verdict: the same six cells in every table. A row without a
    comparison is the baseline, or a row of a study without one (``sweep.baseline=null``): it said "baseline" too."""
    if c is None:
        return ["-", "-", "-", "-", "-", "baseline" if key == BASELINE else "no baseline to compare"]
    return [pts(c.diff), ci_pts(c.ci_low, c.ci_high).strip() or "n/a", c.test, _p(c.p_value), _p(c.p_adjusted), c.reason]


def table_rows(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        c = r.comparison
        ci = f"[{r.test.ci_low:.4f}, {r.test.ci_high:.4f}]" if r.test.ci_low is not None else "n/a (1 seed)"
        out.append(
            [
                r.key,
                r.params,
                "" if r.val_acc is None else f"{r.val_acc:.4f}",
                "" if r.val_rep is None else f"{r.val_rep.mean:.4f}",
                f"{r.test.mean:.4f}",
                ci,
                *_comparison_cells(c, r.key),
                "-" if c is None or c.mde is None else f"{c.mde * 100:.2f} points",
                f"{r.gen_gap:.4f}",
                f"{r.sparsity_zero * 100:.1f}%",
                f"{r.sparsity_1e3 * 100:.1f}%",
                f"{r.weight_l2:.2f}",
                ratio_text(r.training_cost),
                ratio_text(r.epoch_cost),
                ratio_text(r.inference_cost),
                f"{r.extra_params:+.0f}",
                f"{r.epochs_trained:.1f}",
                f"{r.best_epoch:.1f}",
                str(r.test.n),
            ]
        )
    return out


AXIS_HEAD = ["technique", "axis value", "acc mean", "95% CI", "vs baseline", "diff 95% CI", "test", "p", "Holm p", "verdict", "seeds"]


def axis_rows_text(axis_rows: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in axis_rows:
        s, c = r["summary"], r["comparison"]
        ci = f"[{s.ci_low:.4f}, {s.ci_high:.4f}]" if s.ci_low is not None else "n/a"
        out.append(
            [
                r["key"],
                str(r["axis"]),
                f"{s.mean:.4f}",
                ci,
                *_comparison_cells(c, r["key"]),
                str(r["n"]),
            ]
        )
    return out


SEARCH_HEAD = ["trial", "state", "technique", "params", "val acc", "epochs trained"]


def search_rows(data: StudyData) -> list[list[str]]:
    """The search's own results, for studies without replication: validation only, no test claims."""
    from .rows import _trial_params

    done = [r for r in data.trials if r.data.tags.get("state") in ("completed", "pruned")]
    done.sort(key=lambda r: -r.data.metrics.get("final_val_acc", r.data.metrics.get("val_acc", 0.0)))
    return [
        [
            r.data.tags.get("trial_number", ""),
            r.data.tags["state"],
            r.data.tags.get("technique", ""),
            "baseline" if r.data.tags.get("baseline") == "True" else _trial_params(r, data.searched),
            f"{r.data.metrics.get('final_val_acc', r.data.metrics.get('val_acc', float('nan'))):.4f}",
            f"{r.data.metrics.get('epochs_trained', 0):.0f}",
        ]
        for r in done
    ]


SEED_HEAD = ["configuration", "seeds", "val acc mean", "val 95% CI", "test acc mean", "test 95% CI", "test acc sd"]


def seed_rows(data: StudyData) -> list[list[str]]:
    """When seeds were searched (``-m seed=1,2,3``): each configuration's mean and 95% t-interval over its seeds,
    from the completed trials (the seeds are the replicates; nothing was selected among them)."""
    from ..stats import ACCURACY, summarize

    if "seed" not in data.searched:
        return []
    groups: dict[str, dict[str, list[float]]] = {}
    for r in data.trials:
        if r.data.tags.get("state") != "completed":
            continue
        chosen = {k: v for k, v in json.loads(r.data.tags.get("searched", "{}")).items() if k != "seed"}
        label = "baseline" if r.data.tags.get("baseline") == "True" else ", ".join(f"{k}={v}" for k, v in chosen.items())
        g = groups.setdefault(label or r.data.tags.get("technique", "config"), {"val": [], "test": []})
        m = r.data.metrics
        g["val"].append(m.get("final_val_acc", m.get("val_acc", math.nan)))
        if "test_acc" in m:
            g["test"].append(m["test_acc"])
    out = []
    for label, g in groups.items():
        v = summarize(g["val"], bounds=ACCURACY)
        t = summarize(g["test"], bounds=ACCURACY) if g["test"] else None
        out.append(
            [
                label,
                str(v.n),
                f"{v.mean:.4f}",
                "n/a (1 seed)" if v.ci_low is None else f"[{v.ci_low:.4f}, {v.ci_high:.4f}]",
                "-" if t is None else f"{t.mean:.4f}",
                "-" if t is None or t.ci_low is None else f"[{t.ci_low:.4f}, {t.ci_high:.4f}]",
                "-" if t is None or t.std is None else f"{t.std:.4f}",
            ]
        )
    return out


def method_text(data: StudyData, rows: list[Row], axis_rows: list[dict[str, Any]]) -> str:
    """The rules this report followed, stated where the numbers are."""
    n_done = sum(1 for r in data.trials if r.data.tags.get("state") in ("completed", "pruned"))
    objective = ", ".join(f"{m} ({d})" for m, d in data.objectives)
    if axis_rows:
        metric = "test" if axis_rows[0].get("metric") == "test_acc" else "validation"
        family = sum(r["comparison"] is not None for r in axis_rows)
        return (
            f"Study `{data.experiment}`: {n_done} finished trials of a grid that selects nothing, so each cell is scored on "
            f"the {metric} split. Each cell is compared with the baseline at the same axis value, paired by seed; the "
            f"{family} comparisons form one family, Holm-adjusted at alpha={data.alpha:g}."
        )
    family = sum(r.comparison is not None for r in rows)
    seeds = sorted({s for r in rows for s in r.seeds})
    looks = (
        f" Replication had two looks ({data.looks}), each tested at alpha/{data.looks}={data.alpha_per_look:g}, so the "
        f"family-wise error rate stays at {data.alpha:g}."
        if data.looks > 1
        else ""
    )
    return (
        f"Study `{data.experiment}`: {n_done} finished trials, objective {objective}. The search selected each technique's "
        f"configuration on validation; replicates confirm on test with seeds the search never used "
        f"({', '.join(map(str, seeds[:12]))}{', ...' if len(seeds) > 12 else ''}), the same seeds for every row. "
        f"'vs baseline' is the mean per-seed difference (paired t-test; Welch where rows cannot pair) with its 95% CI. "
        f"The {family} comparisons with the baseline (every technique and reference) form one family: p-values are "
        f"Holm-adjusted at alpha={data.alpha_per_look:g} and verdicts use the adjusted value.{looks} 'As accurate as the "
        f"baseline' needs the difference's 95% CI above -{data.margin:g} points. MDE is the smallest true difference these "
        f"seeds detect with 80% power at the strictest Holm level. Costs are interleaved single-model timings against the "
        f"baseline (median ratio, 95% CI); training cost = epoch-time ratio x epochs trained."
    )


def claim_section(data: StudyData, rows: list[Row]) -> list[str]:
    """The published claim a sweep checks (e.g. the seed network's dropout claim), answered properly."""
    if not data.claim or not data.claim_reference:
        return []
    row = next((r for r in rows if r.key == f"ref:{data.claim_reference}"), None)
    if row is None or row.comparison is None:
        return [f"Claim: {data.claim}", "", "Not replicated in this study: no answer."]
    c = row.comparison
    verdict = "confirmed" if c.significant and c.diff > 0 else ("contradicted" if c.significant else "not confirmed beyond noise")
    power = power_text(row)
    return [
        f"Claim: {data.claim}",
        "",
        f"Here ({row.params}; {c.n} paired seeds the search never used): {_acc(row)}, {pts(c.diff)}"
        f"{ci_pts(c.ci_low, c.ci_high)} vs the baseline ({c.test}, p={_p(c.p_value)}, Holm p={_p(c.p_adjusted)}), "
        f"MDE {'-' if c.mde is None else f'{c.mde * 100:.2f} points'}. Verdict: {verdict}" + (f"; {power}." if power else "."),
    ]


def _md_table(head, body) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    return "\n".join(
        ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head), *["| " + " | ".join(map(esc, row)) + " |" for row in body]]
    )


def _html_table(head, body) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _figure(folder: Path, name: str, caption: str) -> str:
    b64 = base64.b64encode((folder / f"{name}.png").read_bytes()).decode()
    return f'<figure><img alt="{name}" src="data:image/png;base64,{b64}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def render(
    data: StudyData, rows: list[Row], axis_rows: list[dict[str, Any]], recs: list[tuple[str, str]], plots: dict[str, str], folder: Path
) -> None:
    title = f"Regularization report: {data.experiment}"
    intro = method_text(data, rows, axis_rows)
    refs = [r for r in rows if r.key.startswith("ref:")]
    main_rows = [r for r in rows if not r.key.startswith("ref:")]
    base = [r for r in rows if r.key == BASELINE]
    md = [f"# {title}", "", intro, ""]
    htm = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>"]
    if "forest" in plots:  # the verdict at a glance, before the tables
        md += ["![forest](forest.png)", "", plots["forest"], ""]
        htm.append(_figure(folder, "forest", plots["forest"]))
    claim = claim_section(data, rows)
    if claim:
        md += ["## The claim", "", *claim, ""]
        htm += ["<h2>The claim</h2>", *[f"<p>{html.escape(line)}</p>" for line in claim if line]]
    if not rows and not axis_rows:
        note = (
            "Replication is off (sweep.replicates=0): these are the search's validation results only; nothing was "
            "evaluated on the test split and no verdict is made."
        )
        md += ["## Search results (no replication)", "", note, "", _md_table(SEARCH_HEAD, search_rows(data)), ""]
        htm += ["<h2>Search results (no replication)</h2>", f"<p>{html.escape(note)}</p>", _html_table(SEARCH_HEAD, search_rows(data))]
    across = seed_rows(data)
    if across:
        note = "Each configuration's completed trials over the searched seeds: mean and 95% t-interval (n = seeds)."
        md += ["## Across seeds", "", note, "", _md_table(SEED_HEAD, across), ""]
        htm += ["<h2>Across seeds</h2>", f"<p>{html.escape(note)}</p>", _html_table(SEED_HEAD, across)]
    if main_rows:
        md += ["## Techniques", "", _md_table(HEAD, table_rows(main_rows)), ""]
        htm += ["<h2>Techniques</h2>", _html_table(HEAD, table_rows(main_rows))]
    if refs:
        md += ["## Reference configurations (e.g. the seed network with dropout 0.2)", "", _md_table(HEAD, table_rows(base + refs)), ""]
        htm += ["<h2>Reference configurations</h2>", _html_table(HEAD, table_rows(base + refs))]
    if axis_rows:
        md += [f"## Gain over the baseline by {data.axis}", "", _md_table(AXIS_HEAD, axis_rows_text(axis_rows)), ""]
        htm += [f"<h2>Gain over the baseline by {html.escape(str(data.axis))}</h2>", _html_table(AXIS_HEAD, axis_rows_text(axis_rows))]
    if recs:
        md += ["## Recommendations", "", *[f"- **{p}**: {t}" for p, t in recs], ""]
        htm += ["<h2>Recommendations</h2><ul>", *[f"<li><b>{html.escape(p)}</b>: {html.escape(t)}</li>" for p, t in recs], "</ul>"]
    md += ["## Plots", ""]
    htm.append("<h2>Plots</h2>")
    for name, caption in plots.items():
        if name == "forest":
            continue
        md += [f"![{name}]({name}.png)", "", caption, ""]
        htm.append(_figure(folder, name, caption))
    (folder / "report.md").write_text("\n".join(md))
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}th{background:#eee}img{max-width:100%}"
    )
    (folder / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{style}</style></head><body>{''.join(htm)}</body></html>"
    )
    with open(folder / "report.csv", "w", newline="") as f:
        w = csv.writer(f)
        if main_rows or refs:
            w.writerow(HEAD)
            w.writerows(table_rows(rows))
        if axis_rows:
            w.writerow(AXIS_HEAD)
            w.writerows(axis_rows_text(axis_rows))
        if across:
            w.writerow(SEED_HEAD)
            w.writerows(across)


def print_table(
    rows: list[Row], axis_rows: list[dict], recs, search: list[list[str]] | None = None, across: list[list[str]] | None = None
) -> None:
    if across:
        _print_rows(SEED_HEAD, across)
        print()
    cols = [HEAD.index(name) for name in TERMINAL]
    body = [[row[i] for i in cols] for row in table_rows(rows)] if rows else []
    head = [HEAD[i] for i in cols]
    if axis_rows:
        head, body = AXIS_HEAD, axis_rows_text(axis_rows)
    elif not rows and search is not None:
        head, body = SEARCH_HEAD, search
    _print_rows(head, body)
    for p, t in recs:
        print(f"* {p}: {t}")


def _print_rows(head: list[str], body: list[list[str]]) -> None:
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    for line in [head, ["-" * w for w in widths], *body]:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
