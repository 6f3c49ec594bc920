"""Parameter counts (encoders excluded) of every preset against the MGSV paper's Table 4 (`mgsv models --params`)."""

from __future__ import annotations

from typing import Any

import torch

from mgsv.models.registry import count_preset_parameters, get_preset

# Parameters (encoders excluded) in the MGSV paper's Table 4, in millions, in the table's order.
PAPER_PARAMETERS: dict[str, float] = {
    "moment-detr": 4.3, "qd-detr": 6.9, "qd-detr+": 5.4, "tr-detr": 7.8, "tr-detr+": 6.2, "eatr": 8.5,
    "uvcom": 14.5, "uvcom+": 12.9, "mvpt": 3.6, "mvpt+": 3.6, "conquer": 39.4, "made": 10.5,
}
COMPOSITE = ("mvpt+", "uvcom+")  # the paper's MVPt+/UVCOM+: the two models together


def omitted_parameters(name: str) -> dict[str, int]:
    """Official modules a preset leaves out (only untrained losses use them), with their parameter counts."""
    with torch.device("meta"):
        model = get_preset(name).build_model()
    omitted = getattr(model, "omitted_parameters", None)
    return omitted() if omitted else {}


def parameter_rows() -> list[dict[str, Any]]:
    """One row per Table 4 system: ours, ours plus the omitted loss-only modules, the paper's, relative gaps."""
    rows = []
    for name, paper in PAPER_PARAMETERS.items():
        ours = count_preset_parameters(get_preset(name))["total"]
        omitted = omitted_parameters(name)
        rows.append(_row(name, ours, sum(omitted.values()), paper, omitted))
    ours = sum(count_preset_parameters(get_preset(n))["total"] for n in COMPOSITE)
    omitted = {f"{n}: {k}": v for n in COMPOSITE for k, v in omitted_parameters(n).items()}
    paper = sum(PAPER_PARAMETERS[n] for n in COMPOSITE)
    rows.append(_row("/".join(COMPOSITE), ours, sum(omitted.values()), paper, omitted))
    return rows


def _row(name: str, ours: int, omitted: int, paper_m: float, modules: dict[str, int]) -> dict[str, Any]:
    return {
        "name": name, "ours": ours, "paper_m": paper_m, "gap": ours / (paper_m * 1e6) - 1,
        "ours_with_omitted": ours + omitted, "gap_with_omitted": (ours + omitted) / (paper_m * 1e6) - 1,
        "omitted_modules": modules,
    }
