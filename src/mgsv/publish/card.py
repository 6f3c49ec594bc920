"""The model card (README.md) `mgsv push` uploads: the Hub's YAML metadata header and a page for people.

The metadata follows the Hub's model card specification (https://huggingface.co/docs/hub/model-cards and the
annotated template huggingface/hub-docs modelcard.md): `license` (`other` with `license_name` / `license_link`
when no standard id fits), `library_name`, `tags`, `datasets`, `metrics` and `model-index` (task, dataset with its
split and revision, one entry per metric), written by huggingface_hub's `ModelCardData` / `EvalResult`. The page
holds the test metrics beside the paper's, the feature specs and encoder ids, the training recipe, what the
MGSV-EC licence means for the weights, and the citation. It is built from plain dicts (config.json, run.json,
metrics.json), so this module needs no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mgsv.evaluation.paper import HEADLINE, PaperResult, paper_results

DATASET_ID = "xxayt/MGSV-EC"
DATASET_PAGE = f"https://huggingface.co/datasets/{DATASET_ID}"
RAW_PAGE = "https://huggingface.co/datasets/xxayt/MGSV-EC-Raw"
LICENSE_NAME = "mgsv-ec-noncommercial-research"
TASK_TYPE = "music-grounding"
TASK_NAME = "Music Grounding by Short Video (MGSV)"
# metric ids of the model-index (the paper's names made id-safe)
METRIC_IDS = {"mIoU": "mean_iou", "R@1": "recall_at_1", "R@5": "recall_at_5", "R@10": "recall_at_10",
              "MoR@1": "mor_at_1", "MoR@10": "mor_at_10", "MoR@100": "mor_at_100"}
CITATION = """@inproceedings{xin2025mgsv,
  title={Music Grounding by Short Video},
  author={Xin, Zijie and Wang, Minquan and Liu, Jingyu and Chen, Quan and Ma, Ye and Jiang, Peng and Li, Xirong},
  booktitle={Proceedings of the IEEE/CVF International Conference on Computer Vision},
  year={2025}
}"""
LICENCE_TEXT = f"""These weights were trained on MGSV-EC, whose authors release it for research, under terms that their
own pages state differently: the Hub dataset card ([{DATASET_ID}]({DATASET_PAGE})) says **CC BY-NC 4.0**; the
official repository's README ([xxayt/MGSV](https://github.com/xxayt/MGSV)) says **CC BY-NC-ND 4.0** and adds "for
commercial licensing or any use beyond research, please contact the authors", while the `DATA-LICENSE` file it
ships holds the text of **CC BY-ND 4.0** (the same file ships with mgsv as
`src/mgsv/resources/mgsv_ec/DATA-LICENSE`); the raw media ([xxayt/MGSV-EC-Raw]({RAW_PAGE})) are CC BY-NC-ND 4.0,
for non-commercial academic research only.

What this means for the weights: whether a model trained on a dataset is an adaptation of it under these licences
is not settled, so take the strictest reading as binding. Use these weights for **non-commercial research only**,
credit MGSV-EC (cite the paper below), and ask the authors before any commercial use, or before publishing further
weights if the NoDerivatives terms concern you. The metadata header says `license: other` for that reason. mgsv's
own code is Apache-2.0; that licence does not extend to these weights."""


@dataclass
class CardInputs:
    """What the card is made of; every field is plain JSON data read from the checkpoint and its run."""

    repo_id: str
    preset: str
    model_config: dict[str, Any]
    feature_specs: dict[str, dict[str, Any]]
    mgsv_version: str
    checkpoint_name: str
    checkpoint_metadata: dict[str, Any] = field(default_factory=dict)
    parameters: int | None = None
    run: dict[str, Any] | None = None  # run.json of the training run, when pushed from one
    metrics: dict[str, Any] | None = None  # metrics.json of `mgsv eval --split test`
    dataset_revision: str | None = None  # the MGSV-EC commit the training data came from (its source.json)


def build_model_card(inputs: CardInputs) -> str:
    """The README.md text: YAML metadata between `---` lines, then the page."""
    from huggingface_hub import ModelCardData

    test = _headline(inputs.metrics)
    card_data = ModelCardData(
        license="other",
        license_name=LICENSE_NAME,
        license_link=DATASET_PAGE,
        library_name="mgsv",
        tags=["music", "video", "music-grounding", "video-to-music-retrieval", "moment-retrieval", "mgsv",
              inputs.preset],
        datasets=[DATASET_ID],
        metrics=["mean_iou", "recall"],
        model_name=inputs.repo_id,
        eval_results=_eval_results(test, inputs.dataset_revision) or None,
    )
    sections = [
        _title(inputs),
        _results_section(inputs, test),
        _features_section(inputs),
        _training_section(inputs),
        "## Data licence and what it means for these weights\n\n" + LICENCE_TEXT,
        "## Citation\n\n```bibtex\n" + CITATION + "\n```",
    ]
    return f"---\n{card_data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"


def _headline(metrics: dict[str, Any] | None) -> dict[str, float]:
    """The paper's headline columns found in a metrics.json (by the paper's column names)."""
    values = (metrics or {}).get("metrics", {})
    return {column: float(values[key]) for column, key in HEADLINE.items() if key in values}


def _eval_results(test: dict[str, float], dataset_revision: str | None) -> list[Any]:
    from huggingface_hub import EvalResult

    return [
        EvalResult(task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type=DATASET_ID, dataset_name="MGSV-EC",
                   dataset_split="test", dataset_revision=dataset_revision, metric_type=METRIC_IDS[column],
                   metric_name=column, metric_value=round(value, 4))
        for column, value in test.items()
    ]


def _format(column: str, value: float, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{value:{sign}.3f}" if column == "mIoU" else f"{value:{sign}.1f}"


def _title(inputs: CardInputs) -> str:
    name = inputs.repo_id.split("/")[-1]
    return (f"# {name}\n\nA `{inputs.preset}` checkpoint for music grounding by short video (MGSV): given a short "
            "video and a collection of music tracks, it ranks the tracks and finds in each the moment that best "
            "serves as the video's background music (Xin et al., *Music Grounding by Short Video*, ICCV 2025). "
            f"Made with mgsv {inputs.mgsv_version} from the checkpoint "
            f"`{inputs.checkpoint_name}`.\n\n"
            "```bash\n"
            f"mgsv ground clip.mp4 --library lib --checkpoint hf:{inputs.repo_id} --top 5\n"
            "```\n\n"
            f"In Python, `mgsv.models.checkpoint.load_checkpoint(\"hf:{inputs.repo_id}\")`. Append `@<commit>` to "
            "the reference to pin these exact files (`mgsv push` prints the commit). The features must be made "
            "with the encoders and settings below (`mgsv extract` / `mgsv library add` record them; the model "
            "refuses others).")


def _results_section(inputs: CardInputs, test: dict[str, float]) -> str:
    rows = paper_results(inputs.preset)
    if not test:
        return ("## Results on MGSV-EC test\n\nThis checkpoint was pushed without test metrics. Evaluate it with "
                "`mgsv eval RUN --split test` and push again to show them here.")
    header = ["metric", "this checkpoint"] + [f"paper: {r.system}, {r.table}" for r in rows]
    header += [f"difference to {r.table.split(',')[0]}" for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for column in HEADLINE:
        ours = test.get(column)
        cells = [column, _format(column, ours) if ours is not None else "—"]
        cells += [_paper_cell(r, column) for r in rows]
        cells += [_format(column, ours - r.values[column], signed=True) if ours is not None and column in r.values
                  else "—"
                  for r in rows]
        lines.append("| " + " | ".join(cells) + " |")
    metrics = inputs.metrics or {}
    details = ", ".join(f"{key} {metrics[key]}" for key in ("queries", "tracks", "top_k", "precision")
                        if key in metrics)
    text = [f"## Results on MGSV-EC test\n\nmIoU as a fraction, R@k and MoR@k (IoU > 0.7) in percent, from `mgsv "
            f"eval --split test` ({details})."]
    if not rows:
        text.append(f"The paper has no row for `{inputs.preset}` transcribed in mgsv; only this checkpoint's "
                    "numbers are shown.")
    else:
        text.append("A dash: the cell is not measured, or not transcribed from the paper in mgsv "
                    "(`mgsv.evaluation.paper`).")
    return "\n\n".join(text) + "\n\n" + "\n".join(lines)


def _paper_cell(row: PaperResult, column: str) -> str:
    if column not in row.values:
        return "—"
    text = _format(column, row.values[column])
    return f"{text} ± {_format(column, row.std[column])}" if column in row.std else text


def _features_section(inputs: CardInputs) -> str:
    lines = ["| modality | encoder | token dim | max tokens | preprocessing | spec version |",
             "|---|---|---|---|---|---|"]
    for modality, spec in sorted(inputs.feature_specs.items()):
        params = ", ".join(f"{k}={v}" for k, v in sorted(spec.get("params", {}).items()))
        lines.append(f"| {modality} | `{spec.get('encoder')}` | {spec.get('dim')} | {spec.get('max_tokens')} | {params} | "
                     f"{spec.get('version')} |")
    if not inputs.feature_specs:
        lines.append("| — | the checkpoint records no feature specs | | | | |")
    return ("## Inputs: feature specs and encoders\n\nThe model reads frozen-encoder token features, not pixels or "
            "audio; these are the encoders (Hugging Face model ids where they have one) and the preprocessing it "
            "was trained with.\n\n" + "\n".join(lines))


def _training_section(inputs: CardInputs) -> str:
    meta = inputs.checkpoint_metadata
    facts = [f"- preset `{inputs.preset}`"]
    if inputs.parameters is not None:
        facts.append(f"- {inputs.parameters:,} parameters (frozen encoders excluded)")
    selected = meta.get("selected_by")
    if selected:
        facts.append(f"- checkpoint `{inputs.checkpoint_name}`: the best epoch by validation {selected} "
                     f"(epoch {meta.get('epoch')}, step {meta.get('step')})")
    elif meta.get("source"):
        facts.append(f"- converted: {meta['source']} ({meta.get('converted_from', '')})")
    run = inputs.run
    if run is not None:
        facts.append(f"- precision {run.get('precision')}, train fraction {run.get('train_fraction')}")
        if inputs.dataset_revision:
            facts.append(f"- data: [{DATASET_ID}]({DATASET_PAGE}) at commit `{inputs.dataset_revision}`")
        recipe = json.dumps(run.get("recipe", {}), indent=2, sort_keys=True)
        body = "\n".join(facts) + f"\n\nTraining recipe (`run.json`):\n\n```json\n{recipe}\n```"
    else:
        body = "\n".join(facts) + ("\n\nPushed from a checkpoint folder without its run: the training recipe is "
                                   "not known here.")
    config = json.dumps(inputs.model_config, indent=2, sort_keys=True)
    return f"## Training\n\n{body}\n\nModel configuration (`config.json`):\n\n```json\n{config}\n```"
