"""curves.png: training losses and the main validation metrics per epoch."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from mgsv.evaluation import metrics as M


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Training losses and the main val metrics per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    panels = [
        ("training loss", [k for k in ("train_L_total", "train_L_ret", "train_L_loc") if k in history[-1]]),
        ("val SmG", ["val_mIoU"]),
        ("val V2MR / MsG (%)", [f"val_{M.recall_name(1)}", f"val_{M.recall_name(10)}",
                                f"val_{M.mor_name(1, 0.7)}", f"val_{M.mor_name(10, 0.7)}"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            ax.plot(epochs, [row.get(key, math.nan) for row in history], marker="o", ms=3, label=key.split("_", 1)[1])
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
