"""The MGSV paper's baselines (its Tables 1 and 4) as presets of the model registry.

Importing this package registers them: grounding-only (SmG) `moment-detr`, `qd-detr`, `qd-detr+`, `tr-detr`,
`tr-detr+`, `eatr`, `uvcom`, `uvcom+`; retrieval-only (V2MR) `mvpt`, `mvpt+`; ranking and grounding `conquer`.
The composite MVPt+/UVCOM+ combines two trained checkpoints at evaluation time (`composite.py`).
docs/baselines.md describes each adaptation; `table4.py` compares parameter counts with the paper.
"""

# Imported for their presets, in the paper's order (registration order is the order `mgsv models` lists).
from mgsv.models.baselines import moment_detr  # noqa: F401, I001
from mgsv.models.baselines import qd_detr  # noqa: F401
from mgsv.models.baselines import tr_detr  # noqa: F401
from mgsv.models.baselines import eatr  # noqa: F401
from mgsv.models.baselines import uvcom  # noqa: F401
from mgsv.models.baselines import mvpt  # noqa: F401
from mgsv.models.baselines import conquer  # noqa: F401
from mgsv.models.baselines.composite import CompositeModel, load_composite
from mgsv.models.baselines.table4 import PAPER_PARAMETERS

BASELINE_PRESETS = ("moment-detr", "qd-detr", "qd-detr+", "tr-detr", "tr-detr+", "eatr", "uvcom", "uvcom+",
                    "mvpt", "mvpt+", "conquer")

__all__ = ["BASELINE_PRESETS", "PAPER_PARAMETERS", "CompositeModel", "load_composite"]
