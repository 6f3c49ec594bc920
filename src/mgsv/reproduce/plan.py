"""What `mgsv reproduce` runs for the tables asked for: training runs, evaluations, and the rows of each table.

Every run trains one preset (optionally with an ablation's config overrides, on a fraction of the train split) on
one dataset ("official": MGSV-EC's own split; "split-N": the random split drawn with seed N) with one training
seed, and is evaluated on that dataset's test split. A run needed by several tables is planned once (the full MaDe
of Table 4 is also Table 6's reference row and Table 7's six-decoder-layer row).

The tables (docs/reproduce.md):

    4     the official split: every requested system, test metrics beside the paper's
    5     `splits` random splits drawn as the paper's protocol; mean +- std beside the paper's
    6     MaDe's module ablations (mgsv.models.made.ABLATIONS without the decoder-depth ones)
    7     MaDe with 1..6 decoder layers
    fig5  the data-size sweep: each fusion-by-cross-attention system and its "+" variant at fractions of train
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mgsv.errors import OptionError
from mgsv.models.baselines import BASELINE_PRESETS
from mgsv.models.made import ABLATIONS
from mgsv.models.registry import get_preset
from mgsv.training.overrides import parse_set_items

TABLES = ("4", "5", "6", "7", "fig5")
MADE_PRESETS = ("made", "made-paper")
COMPOSITE = "mvpt+/uvcom+"  # MVPt+ ranks the tracks, UVCOM+ grounds on each top-k track (the paper's Table 4)
SYSTEMS = (*BASELINE_PRESETS, COMPOSITE)  # besides MaDe, which every plan has
OFFICIAL = "official"
FIRST_SEED = 42  # the official training script's seed; more seeds count up from it
FIG5_PAIRS = (("qd-detr", "qd-detr+"), ("tr-detr", "tr-detr+"), ("uvcom", "uvcom+"))
FIG5_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
TABLE7_DEPTHS = range(1, 7)


@dataclass(frozen=True)
class TrainRun:
    """One training run: its folder name under OUT/runs, what it trains and on what."""

    name: str
    preset: str
    data: str  # OFFICIAL or "split-N"
    seed: int
    ablation: str = ""  # a key of ABLATIONS ("" = the preset as it is)
    fraction: float = 1.0
    model_overrides: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    recipe_overrides: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def describe(self) -> str:
        """"made (official split, seed 42)"-style label for progress lines."""
        what = self.preset + (f" {self.ablation}" if self.ablation else "")
        what += f" on {self.fraction:g} of train" if self.fraction < 1 else ""
        where = "official split" if self.data == OFFICIAL else f"random split {self.data.split('-', 1)[1]}"
        return f"{what} ({where}, seed {self.seed})"


@dataclass(frozen=True)
class EvalRun:
    """One test evaluation: of one run, or of a composite (ranker run, grounder run)."""

    name: str
    runs: tuple[str, ...]  # one run, or (ranker, grounder)
    data: str


@dataclass
class TableRow:
    """One row of a table: its label, the system whose paper values it is compared with, and its evaluations
    (several seeds or splits: the row shows their mean +- std)."""

    label: str
    system: str
    evals: list[str]
    fraction: float = 1.0


@dataclass
class Plan:
    """Everything one `mgsv reproduce` will run, in order, and how the results make the tables."""

    made: str  # "made" (the official code's behaviour, default) or "made-paper" (the paper's text)
    runs: dict[str, TrainRun]
    evals: dict[str, EvalRun]
    tables: dict[str, list[TableRow]]
    splits: list[int]  # seeds of the random splits to draw (Table 5)

    def datasets(self) -> list[str]:
        """The datasets the runs use, official first."""
        names = {run.data for run in self.runs.values()}
        return sorted(names, key=lambda n: (n != OFFICIAL, n))

    def to_dict(self) -> dict[str, Any]:
        return {
            "made": self.made,
            "splits": self.splits,
            "runs": {n: {"preset": r.preset, "data": r.data, "seed": r.seed, "ablation": r.ablation,
                         "fraction": r.fraction, "model_overrides": r.model_overrides,
                         "recipe_overrides": r.recipe_overrides} for n, r in self.runs.items()},
            "evals": {n: {"runs": list(e.runs), "data": e.data} for n, e in self.evals.items()},
            "tables": {t: [{"label": r.label, "system": r.system, "evals": r.evals, "fraction": r.fraction}
                           for r in rows] for t, rows in self.tables.items()},
        }


@dataclass(frozen=True)
class PlanOptions:
    """What to reproduce (the front door's flags, by key)."""

    tables: tuple[str, ...] = ("4",)
    systems: tuple[str, ...] = ()  # Table 4 systems besides MaDe (names of SYSTEMS, or "all")
    made: str = "made"
    seeds: int = 1
    splits: int = 3
    fractions: tuple[float, ...] = FIG5_FRACTIONS
    overrides: tuple[str, ...] = ()  # `--set` items applied to every run (e.g. train.epochs=5)


def check_options(options: PlanOptions) -> None:
    """Refuse unknown tables / systems and out-of-range numbers, naming the option."""
    unknown = [t for t in options.tables if t not in TABLES]
    if unknown or not options.tables:
        raise OptionError("tables", f"{', '.join(unknown) or 'none given'}: choose from {', '.join(TABLES)}")
    if options.made not in MADE_PRESETS:
        raise OptionError("made", f"{options.made!r}: choose {' or '.join(MADE_PRESETS)}")
    wrong = [s for s in options.systems if s not in (*SYSTEMS, "all", *MADE_PRESETS)]
    if wrong:
        raise OptionError("systems", f"unknown system(s) {', '.join(wrong)}; choose from all, {', '.join(SYSTEMS)}")
    if options.seeds < 1:
        raise OptionError("seeds", f"{options.seeds}: must be at least 1")
    if "5" in options.tables and options.splits < 2:
        raise OptionError("splits", f"{options.splits}: Table 5 needs at least 2 random splits for a spread")
    bad = [f for f in options.fractions if not (0 < f <= 1) or math.isnan(f)]
    if bad or not options.fractions:
        raise OptionError("fractions", f"{bad or 'none given'}: each must be more than 0 and at most 1")


def build_plan(options: PlanOptions) -> Plan:
    """The runs, evaluations and table rows for `options` (runs shared between tables are planned once)."""
    check_options(options)
    seeds = [FIRST_SEED + i for i in range(options.seeds)]
    runs: dict[str, TrainRun] = {}
    evals: dict[str, EvalRun] = {}
    tables: dict[str, list[TableRow]] = {}
    made = options.made

    def run(preset: str, data: str, seed: int, ablation: str = "", fraction: float = 1.0) -> str:
        model, recipe = parse_set_items(get_preset(preset), list(options.overrides))
        model = {**model, **(ABLATIONS[ablation] if ablation else {})}
        name = "-".join(p for p in (preset, ablation, f"f{fraction:g}" if fraction < 1 else "", data,
                                     f"seed{seed}") if p)
        runs.setdefault(name, TrainRun(name, preset, data, seed, ablation, fraction, model, recipe))
        return name

    def single(preset: str, data: str, seed: int, ablation: str = "", fraction: float = 1.0) -> str:
        name = run(preset, data, seed, ablation, fraction)
        evals.setdefault(name, EvalRun(name, (name,), data))
        return name

    def system_eval(system: str, data: str, seed: int) -> str:
        if system != COMPOSITE:
            return single(system, data, seed)
        ranker, grounder = run("mvpt+", data, seed), run("uvcom+", data, seed)
        name = f"mvpt+-uvcom+-{data}-seed{seed}"
        evals.setdefault(name, EvalRun(name, (ranker, grounder), data))
        return name

    if "4" in options.tables:
        wanted = list(SYSTEMS) if "all" in options.systems else [s for s in options.systems if s in SYSTEMS]
        order = [made] + [s for s in SYSTEMS if s in wanted]
        tables["4"] = [TableRow(s, s, [system_eval(s, OFFICIAL, seed) for seed in seeds]) for s in order]
    split_seeds = list(range(1, options.splits + 1)) if "5" in options.tables else []
    if "5" in options.tables:
        systems = [made] + ([COMPOSITE] if "all" in options.systems or COMPOSITE in options.systems else [])
        tables["5"] = [TableRow(s, s, [system_eval(s, f"split-{n}", seed) for n in split_seeds for seed in seeds])
                       for s in systems]
    if "6" in options.tables:
        names = [n for n in ABLATIONS if not n.startswith("decoder-layers-")]
        tables["6"] = [TableRow(made, made, [single(made, OFFICIAL, s) for s in seeds])]
        tables["6"] += [TableRow(f"{made} {n}", "", [single(made, OFFICIAL, s, n) for s in seeds]) for n in names]
    if "7" in options.tables:
        tables["7"] = [TableRow(f"{made} {n} decoder layer{'s' * (n > 1)}", "",
                                [single(made, OFFICIAL, s, _depth_ablation(n, made, options.overrides)) for s in seeds])
                       for n in TABLE7_DEPTHS]
    if "fig5" in options.tables:
        rows = []
        # MaDe's own pair: fusion by cross-attention (its ablation) against MaDe as it is (docs/baselines.md).
        for plain, plus in [*FIG5_PAIRS, (made, made)]:
            for position, preset in enumerate((plain, plus)):
                ablation = "fusion-cross-attention" if preset == made and position == 0 else ""
                for fraction in sorted(set(options.fractions)):
                    label = preset + (" cross-attention fusion" if ablation else "") + f" @ {fraction:g}"
                    rows.append(TableRow(label, "", [single(preset, OFFICIAL, s, ablation, fraction) for s in seeds],
                                         fraction))
        tables["fig5"] = rows
    return Plan(made, runs, evals, tables, split_seeds)


def _depth_ablation(depth: int, made: str, overrides: tuple[str, ...]) -> str:
    """The ablation for `depth` decoder layers ("" when it is the depth of the preset with the `--set` overrides, so
    that run is shared)."""
    preset = get_preset(made)
    default = preset.config(**parse_set_items(preset, list(overrides))[0]).decoder_layers
    return "" if depth == default else f"decoder-layers-{depth}"
