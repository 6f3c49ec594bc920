"""The reproduction's tables, built from whatever evaluations have finished: results.json, results.md, report.html.

Each row shows our test metrics (mean +- std when it has several seeds or splits, with how many finished) beside
the paper's published values and the difference. A paper cell not transcribed in `mgsv.evaluation.paper` reads
"n/a"; a metric the system does not compute (a grounding-only model has no R@k) reads "-". Table 5 also says, for
each cell, whether our mean lies inside the paper's spread (its mean +- std).
"""

from __future__ import annotations

import html
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgsv import __version__
from mgsv.atomic_io import atomic_writer, write_json_atomic
from mgsv.evaluation.paper import HARMONET, HEADLINE, TABLE4, TABLE5, PaperResult
from mgsv.reproduce.plan import Plan

TITLES = {
    "4": "Table 4: the official split (test)",
    "5": "Table 5: random splits drawn as the paper's protocol (test, mean ± std over splits)",
    "6": "Table 6: MaDe's module ablations (official split, test)",
    "7": "Table 7: number of decoder layers (official split, test)",
    "fig5": "Fig. 5: training-data size (official split, test)",
}
COLUMNS = list(HEADLINE)
NOT_COMPUTED = "-"
NOT_TRANSCRIBED = "n/a"


@dataclass
class Cell:
    """Our value of one metric in one row: the finished evaluations' mean, std and count."""

    mean: float | None = None
    std: float | None = None
    count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.count}


@dataclass
class Row:
    """One built row: ours per column, the paper's row (if any) and which evaluations finished."""

    label: str
    system: str
    ours: dict[str, Cell]
    finished: int
    planned: int
    paper: PaperResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def read_metrics(folder: Path) -> dict[str, float] | None:
    """The metrics of a finished evaluation folder (None when it has not finished)."""
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())["metrics"]


def build_rows(plan: Plan, evals_dir: Path) -> dict[str, list[Row]]:
    """Every table's rows from the evaluations finished so far."""
    results = {name: read_metrics(evals_dir / name) for name in plan.evals}
    tables: dict[str, list[Row]] = {}
    for table, rows in plan.tables.items():
        built = []
        for row in rows:
            finished = [results[e] for e in row.evals if results[e] is not None]
            ours = {}
            for column, key in HEADLINE.items():
                values = [m[key] for m in finished if key in m and m[key] is not None and math.isfinite(m[key])]
                ours[column] = Cell(statistics.fmean(values) if values else None,
                                    statistics.stdev(values) if len(values) > 1 else None, len(values))
            paper = {"4": TABLE4, "5": TABLE5}.get(table, {}).get(row.system)
            built.append(Row(row.label, row.system, ours, len(finished), len(row.evals), paper,
                             {"fraction": row.fraction} if table == "fig5" else {}))
        tables[table] = built
    return tables


def inside_spread(ours: Cell, paper: PaperResult, column: str) -> bool | None:
    """Table 5: is our mean inside the paper's mean +- std? (None when either is missing)."""
    if ours.mean is None or column not in paper.values or column not in paper.std:
        return None
    return abs(ours.mean - paper.values[column]) <= paper.std[column]


def _number(column: str, value: float) -> str:
    return f"{value:.3f}" if column == "mIoU" else f"{value:.1f}"


def _ours(column: str, cell: Cell) -> str:
    if cell.mean is None:
        return NOT_COMPUTED
    text = _number(column, cell.mean)
    return text + (f" ± {_number(column, cell.std)}" if cell.std is not None else "")


def _paper(column: str, paper: PaperResult | None) -> str:
    if paper is None or column not in paper.values:
        return NOT_TRANSCRIBED
    text = _number(column, paper.values[column])
    return text + (f" ± {_number(column, paper.std[column])}" if column in paper.std else "")


def _difference(column: str, cell: Cell, paper: PaperResult | None) -> str:
    if cell.mean is None or paper is None or column not in paper.values:
        return NOT_TRANSCRIBED if cell.mean is not None else NOT_COMPUTED
    return f"{cell.mean - paper.values[column]:+.3f}" if column == "mIoU" else \
        f"{cell.mean - paper.values[column]:+.1f}"


def table_lines(table: str, rows: list[Row]) -> list[list[str]]:
    """The table as text cells: a header, then for each system its rows (ours, paper, difference[, inside])."""
    lines = [["system", "", *COLUMNS, "finished"]]
    for row in rows:
        done = f"{row.finished}/{row.planned}"
        lines.append([row.label, "ours", *(_ours(c, row.ours[c]) for c in COLUMNS), done])
        if table in ("4", "5"):
            lines.append([row.label, "paper", *(_paper(c, row.paper) for c in COLUMNS), ""])
            lines.append([row.label, "difference", *(_difference(c, row.ours[c], row.paper) for c in COLUMNS), ""])
        if table == "5" and row.paper is not None:
            marks = [inside_spread(row.ours[c], row.paper, c) for c in COLUMNS]
            lines.append([row.label, "inside the paper's spread",
                          *("-" if m is None else ("yes" if m else "no") for m in marks), ""])
    if table == "4":
        lines.append([HARMONET.system, HARMONET.table, *(_paper(c, HARMONET) for c in COLUMNS), ""])
    return lines


def notes(plan: Plan) -> list[str]:
    """What the reader must know to read the tables."""
    made = ("`made`: MaDe as the official code runs it (decoder self-attention, fixed positional query, the official "
            "dropouts and lr 3e-4), the model behind the published numbers; the paper's text differs "
            "(docs/models.md), run `--made made-paper` for it" if plan.made == "made" else
            "`made-paper`: MaDe as the paper's text describes it (docs/models.md); the published numbers come from "
            "the official code (`made`)")
    return [
        made + ".",
        "Paper cells: only values transcribed in mgsv/evaluation/paper.py are shown; n/a = not transcribed, "
        "- = not computed by that system (e.g. R@k of a grounding-only model).",
        "mIoU is a fraction; R@k and MoR@k are percentages (MoR@k: the right track in the top k with IoU > 0.7); "
        "MsG detects on each query's top-100 tracks.",
        "Table 5: 'inside the paper's spread' = our mean within the paper's mean ± std.",
        "HarmoNet: reported in its paper (ICASSP 2026), no public code; a reference row, not reproduced.",
    ]


def write_results(plan: Plan, out: Path, status: dict[str, Any]) -> dict[str, Path]:
    """Write results.json, results.md and report.html into `out` (atomically) from the evaluations finished so far."""
    rows = build_rows(plan, out / "evals")
    payload = {
        "mgsv_version": __version__,
        "made_preset": plan.made,
        "notes": notes(plan),
        "status": status,
        "tables": {t: [{"label": r.label, "system": r.system, "finished": r.finished, "planned": r.planned,
                        "ours": {c: r.ours[c].to_dict() for c in COLUMNS},
                        "paper": None if r.paper is None else {"table": r.paper.table, "values": r.paper.values,
                                                               "std": r.paper.std},
                        **r.extra} for r in table_rows] for t, table_rows in rows.items()},
        "reference": {"system": HARMONET.system, "values": HARMONET.values, "note": HARMONET.table},
        "plan": plan.to_dict(),
    }
    paths = {"json": out / "results.json", "md": out / "results.md", "html": out / "report.html"}
    write_json_atomic(paths["json"], payload)
    with atomic_writer(paths["md"]) as handle:
        handle.write(markdown(rows, plan, status))
    with atomic_writer(paths["html"]) as handle:
        handle.write(report_html(rows, plan, status))
    return paths


def markdown(rows: dict[str, list[Row]], plan: Plan, status: dict[str, Any]) -> str:
    """results.md."""
    parts = ["# mgsv reproduce: results\n", f"{status.get('summary', '')}\n"]
    for table, table_rows in rows.items():
        lines = table_lines(table, table_rows)
        parts.append(f"\n## {TITLES[table]}\n")
        parts.append("| " + " | ".join(lines[0]) + " |")
        parts.append("|" + "---|" * len(lines[0]))
        parts += ["| " + " | ".join(line) + " |" for line in lines[1:]]
    parts.append("\n## Notes\n")
    parts += [f"- {note}" for note in notes(plan)]
    return "\n".join(parts) + "\n"


def report_html(rows: dict[str, list[Row]], plan: Plan, status: dict[str, Any]) -> str:
    """report.html: the same tables, one self-contained page."""
    body = [f"<h1>mgsv reproduce</h1><p>{html.escape(str(status.get('summary', '')))}</p>"]
    for table, table_rows in rows.items():
        lines = table_lines(table, table_rows)
        body.append(f"<h2>{html.escape(TITLES[table])}</h2><table><thead><tr>")
        body.append("".join(f"<th>{html.escape(c)}</th>" for c in lines[0]) + "</tr></thead><tbody>")
        for line in lines[1:]:
            kind = line[1].split()[0] if line[1] else ""
            body.append(f'<tr class="{html.escape(kind)}">' + "".join(f"<td>{html.escape(c)}</td>" for c in line)
                        + "</tr>")
        body.append("</tbody></table>")
    body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes(plan)) + "</ul>")
    style = ("body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,td:nth-child(2)"
             "{text-align:left}tr.paper{color:#555}tr.difference{color:#246}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>mgsv reproduce</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")
