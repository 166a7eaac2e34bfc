"""report.md, a self-contained report.html (images embedded), report.csv, and the terminal table."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path

from .collect import StudyData
from .recommend import pts as _pts
from .rows import BASELINE, Row

HEAD = [
    "technique",
    "best params",
    "val acc",
    "test acc mean",
    "95% CI",
    "vs baseline",
    "p-value",
    "verdict",
    "gen gap",
    "exact zeros",
    "|w|<1e-3",
    "weight L2",
    "epoch time (x base)",
    "inference (x base)",
    "extra params",
    "epochs to best/stop",
    "seeds",
]


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
                f"{r.test.mean:.4f}",
                ci,
                "-" if c is None else _pts(c.diff),
                "-" if c is None or c.p_value is None else f"{c.p_value:.3g}",
                "baseline" if c is None else c.reason,
                f"{r.gen_gap:.4f}",
                f"{r.sparsity_zero * 100:.1f}%",
                f"{r.sparsity_1e3 * 100:.1f}%",
                f"{r.weight_l2:.2f}",
                f"{r.epoch_time_rel:.2f}",
                f"{r.inference_rel:.2f}",
                f"{r.extra_params:+.0f}",
                f"{r.epochs_to_best:.1f}",
                str(r.test.n),
            ]
        )
    return out


def axis_rows_text(axis_rows: list[dict]) -> list[list[str]]:
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
                "-" if c is None else _pts(c.diff),
                "-" if c is None or c.p_value is None else f"{c.p_value:.3g}",
                "baseline" if c is None else c.reason,
                str(r["n"]),
            ]
        )
    return out


AXIS_HEAD = ["technique", "axis value", "val acc mean", "95% CI", "vs baseline", "p-value", "verdict", "seeds"]


def _md_table(head, body) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    return "\n".join(
        ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head), *["| " + " | ".join(map(esc, row)) + " |" for row in body]]
    )


def _html_table(head, body) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def render(data: StudyData, rows: list[Row], axis_rows: list[dict], recs, plots: dict[str, str], folder: Path) -> None:
    title = f"Regularization report: {data.experiment}"
    objective = ", ".join(f"{m} ({d})" for m, d in data.objectives)
    n_done = sum(1 for r in data.trials if r.data.tags.get("state") in ("completed", "pruned"))
    intro = (
        f"Study `{data.experiment}`: {n_done} finished trials, objective {objective}. Test accuracy is the mean "
        f"over the replicated seeds with a t-based 95% confidence interval; 'vs baseline' is a Welch t-test "
        f"(alpha={data.alpha}). Times and latencies are relative to the baseline."
    )
    refs = [r for r in rows if r.key.startswith("ref:")]
    main_rows = [r for r in rows if not r.key.startswith("ref:")]
    base = [r for r in rows if r.key == BASELINE]
    md = [f"# {title}", "", intro, ""]
    htm = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>"]
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
        md += [f"![{name}]({name}.png)", "", caption, ""]
        b64 = base64.b64encode((folder / f"{name}.png").read_bytes()).decode()
        htm.append(f'<figure><img alt="{name}" src="data:image/png;base64,{b64}"><figcaption>{html.escape(caption)}</figcaption></figure>')
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
