"""The MGSV paper's baselines (its Tables 1 and 4), each a model class that `mgsv.models.registry` lists as presets.

Grounding-only (SmG) `moment-detr`, `qd-detr`, `qd-detr+`, `tr-detr`, `tr-detr+`, `eatr`, `uvcom`, `uvcom+`;
retrieval-only (V2MR) `mvpt`, `mvpt+`; ranking and grounding `conquer`. The composite MVPt+/UVCOM+ combines two
trained checkpoints at evaluation time (`composite.py`). docs/baselines.md describes each adaptation; `table4.py`
compares parameter counts with the paper.
"""

BASELINE_PRESETS = ("moment-detr", "qd-detr", "qd-detr+", "tr-detr", "tr-detr+", "eatr", "uvcom", "uvcom+",
                    "mvpt", "mvpt+", "conquer")
