"""Published MGSV-EC test results of the MGSV paper (Xin et al., ICCV 2025), to set our numbers beside them.

Only values transcribed from a source named below are here; a cell that is not is absent, never guessed. The
paper reports mIoU as a fraction and R@k / MoR@k in percent (MoR@k: the ground-truth track within the top k and
its moment at IoU > 0.7), as `mgsv eval` does. Imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mgsv.evaluation.metrics import mor_name, recall_name

# The headline columns of Tables 4 and 5, as the paper names them, with the metrics.json key of each.
HEADLINE = {
    "mIoU": "mIoU",
    "R@1": recall_name(1),
    "R@5": recall_name(5),
    "R@10": recall_name(10),
    "MoR@1": mor_name(1, 0.7),
    "MoR@10": mor_name(10, 0.7),
    "MoR@100": mor_name(100, 0.7),
}


@dataclass(frozen=True)
class PaperResult:
    """One system's row of one of the paper's tables (values by HEADLINE column; std where the table has it)."""

    system: str
    table: str
    values: dict[str, float]
    std: dict[str, float] = field(default_factory=dict)


# Table 4, the official split: only the MaDe cells the project's design notes transcribed (mIoU 0.722, R@1 8.8,
# MoR@1 8.3); the row's other cells are not transcribed anywhere in this repository.
MADE_TABLE4 = PaperResult("MaDe", "Table 4, official split", {"mIoU": 0.722, "R@1": 8.8, "MoR@1": 8.3})
# Table 5, three random splits drawn as the paper's protocol, mean and std (transcribed in issue 13 of this project).
MADE_TABLE5 = PaperResult(
    "MaDe", "Table 5, 3 random splits (mean ± std)",
    {"mIoU": 0.743, "R@1": 9.0, "R@5": 17.3, "R@10": 21.1, "MoR@1": 8.4, "MoR@10": 18.0, "MoR@100": 32.7},
    {"mIoU": 0.017, "R@1": 0.5, "R@5": 0.7, "R@10": 1.0, "MoR@1": 0.3, "MoR@10": 0.5, "MoR@100": 1.4},
)
# Table 5's row of the composite MVPt+/UVCOM+ (MVPt+ ranks, UVCOM+ grounds), transcribed in issue 13 as well.
MVPT_UVCOM_TABLE5 = PaperResult(
    "MVPt+/UVCOM+", "Table 5, 3 random splits (mean ± std)",
    {"mIoU": 0.676, "R@1": 7.0, "R@5": 12.5, "R@10": 15.5, "MoR@1": 5.6, "MoR@10": 12.0, "MoR@100": 24.3},
    {"mIoU": 0.013, "R@1": 0.4, "R@5": 0.7, "R@10": 0.5, "MoR@1": 0.1, "MoR@10": 0.3, "MoR@100": 1.0},
)
# The best published MGSV-EC result known to this project: HarmoNet (ICASSP 2026), official test split, as its
# paper reports it (values transcribed in issue 13). It has no public code, so it is a reference row only.
HARMONET = PaperResult(
    "HarmoNet (ICASSP 2026)", "reported, no public code",
    {"mIoU": 0.735, "R@1": 10.7, "R@5": 19.5, "R@10": 22.8, "MoR@1": 9.6, "MoR@10": 19.7, "MoR@100": 32.8},
)
# Table 4 cells by system, for `mgsv reproduce` (every other system's cells are not transcribed here: "n/a").
TABLE4: dict[str, PaperResult] = {"made": MADE_TABLE4, "made-paper": MADE_TABLE4}
# Table 5 rows by system ("mvpt+/uvcom+" is the composite).
TABLE5: dict[str, PaperResult] = {"made": MADE_TABLE5, "made-paper": MADE_TABLE5, "mvpt+/uvcom+": MVPT_UVCOM_TABLE5}
# Rows by preset: `made` is MaDe as the official code runs it (the model behind the published numbers) and
# `made-paper` as its text describes it (docs/models.md); both are compared with MaDe's rows.
BY_PRESET: dict[str, tuple[PaperResult, ...]] = {
    "made": (MADE_TABLE4, MADE_TABLE5),
    "made-paper": (MADE_TABLE4, MADE_TABLE5),
}


def paper_results(preset: str) -> tuple[PaperResult, ...]:
    """The paper's rows for a preset (empty when the paper has none transcribed here)."""
    return BY_PRESET.get(preset, ())
