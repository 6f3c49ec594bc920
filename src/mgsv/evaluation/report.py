"""A small evaluation report: a PNG of the IoU and rank distributions and a self-contained HTML page.

The HTML holds the paper's Table 4 columns, the per-category breakdown (MGSV-EC annotates each video's category)
and the PNG inlined, so the report is one file that can be mailed or attached to an issue.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mgsv.evaluation import metrics as M
from mgsv.evaluation.protocol import EvalResult

TABLE4 = (
    ("SmG", ["mIoU", M.iou_name(0.3), M.iou_name(0.5), M.iou_name(0.7)]),
    ("V2MR", [M.recall_name(k) for k in (1, 5, 10, 25, 50, 100)] + ["MedianR", "MeanR", "MRR"]),
    ("MsG (IoU>0.7)", [M.mor_name(k, 0.7) for k in M.MOR_KS]),
    ("MsG (IoU>0.5)", [M.mor_name(k, 0.5) for k in M.MOR_KS]),
)


def per_category(annotations: pd.DataFrame, result: EvalResult) -> pd.DataFrame:
    """mIoU, R@1, R@10 and MoR@1 (IoU>0.7) per video category (those the model produces), largest first."""
    frame = pd.DataFrame({"category": annotations["video_category"].astype(str).to_numpy()})
    columns = {"videos": ("category", "size")}
    if result.smg_iou is not None:
        frame["iou"] = result.smg_iou.astype(np.float64)
        columns["mIoU"] = ("iou", "mean")
    if result.gt_rank0 is not None:
        frame["r1"] = result.gt_rank0 < 1
        frame["r10"] = result.gt_rank0 < 10
        columns.update(R1=("r1", "mean"), R10=("r10", "mean"))
        if result.smg_iou is not None:
            frame["mor1"] = frame["r1"] & (frame["iou"] > 0.7)
            columns["MoR1"] = ("mor1", "mean")
    table = frame.groupby("category").agg(**columns)
    for column in ("R1", "R10", "MoR1"):
        if column in table:
            table[column] *= 100
    return table.sort_values("videos", ascending=False)


def plot_distributions(result: EvalResult, path: Path) -> Path:
    """IoU histogram (SmG) and GT-rank histogram (V2MR) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    if result.smg_iou is not None:
        mean = float(np.mean(result.smg_iou))
        left.hist(result.smg_iou, bins=np.linspace(0, 1, 21), color="#4c72b0")
        left.axvline(mean, color="k", ls="--", lw=1, label=f"mIoU {mean:.3f}")
        left.legend()
    else:
        left.text(0.5, 0.5, "SmG not computed\n(the model does not detect moments)", ha="center", va="center")
    left.set_xlabel("IoU of the moment on the ground-truth track")
    left.set_ylabel("queries")
    if result.gt_rank0 is not None:
        ranks = result.gt_rank0 + 1
        bins = np.unique(np.round(np.logspace(0, np.log10(max(ranks.max(), 2)) + 0.01, 25)))
        right.hist(ranks, bins=bins, color="#dd8452")
        right.set_xscale("log")
    else:
        right.text(0.5, 0.5, "V2MR not computed\n(the model does not rank tracks)", ha="center", va="center")
    right.set_xlabel(f"rank of the ground-truth track (of {len(result.music_ids)})")
    right.set_ylabel("queries")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _format(name: str, value: float) -> str:
    if name in ("mIoU", "MRR"):
        return f"{value:.4f}"
    if name in ("MedianR", "MeanR"):
        return f"{value:.1f}"
    return f"{value:.2f}"


def write_report(annotations: pd.DataFrame, result: EvalResult, folder: Path, title: str,
                 details: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write `report.png` and `report.html` into `folder`; returns their paths."""
    png = plot_distributions(result, folder / "report.png")
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if details:
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in details.items())
        parts.append(f"<table>{rows}</table>")
    for section, names in TABLE4:
        present = [n for n in names if n in result.metrics]
        if not present:
            continue
        header = "".join(f"<th>{html.escape(n)}</th>" for n in present)
        values = "".join(f"<td>{_format(n, result.metrics[n])}</td>" for n in present)
        parts.append(f"<h2>{html.escape(section)}</h2><table><tr>{header}</tr><tr>{values}</tr></table>")
    for key, note in result.notes.items():
        parts.append(f"<p><b>{html.escape(key)}:</b> {html.escape(note)}</p>")
    reasons: dict[str, list[str]] = {}
    for name, reason in result.not_computed.items():
        reasons.setdefault(reason, []).append(name)
    for reason, names in reasons.items():
        parts.append(f"<p><b>not computed</b> ({html.escape(reason)}): {html.escape(', '.join(names))}</p>")
    encoded = base64.b64encode(png.read_bytes()).decode("ascii")
    parts.append(f'<h2>Distributions</h2><img alt="IoU and rank histograms" src="data:image/png;base64,{encoded}">')
    if "video_category" in annotations:
        table = per_category(annotations, result)
        parts.append("<h2>Per video category</h2>" + table.to_html(float_format=lambda v: f"{v:.3f}", border=0))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}")
    page = f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>"
    page += "\n".join(parts)
    out = folder / "report.html"
    tmp = out.with_name(".report.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out, png
