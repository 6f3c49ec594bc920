"""`--set KEY=VALUE`: one parser for model config fields and training recipe settings, typed by their fields.

`model.dim=64`, `dim=64` (the model is the default section) and `train.epochs=5`; booleans accept
true/false/1/0/yes/no, numbers are parsed as their field's type, and mappings or tuples (learning rates, loss
weights, betas) are JSON. Unknown keys and malformed values are refused with the item as the user typed it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from typing import Any

from mgsv.errors import MgsvError
from mgsv.models.registry import ConfigError, Preset, config_from_dict
from mgsv.training.recipe import TrainingRecipe

SECTIONS = ("model", "train")


def split_items(items: list[str]) -> Iterator[tuple[str, str, str, str]]:
    """(section, key, value text, the item as typed) of each `[SECTION.]KEY=VALUE` item."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected KEY=VALUE (e.g. model.dim=64 or train.epochs=5)")
        section, dot, name = key.strip().partition(".")
        if not dot:
            section, name = "model", section
        if section not in SECTIONS:
            raise ConfigError(f"override {item!r}: section must be 'model' or 'train', got {section!r}")
        yield section, name, value.strip(), item


def parse_value(kind: str, text: str) -> Any:
    """`text` as a value of the field type `kind` (the dataclass annotation as a string); ValueError if it is not."""
    if kind == "bool":
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    if kind == "int":
        return int(text)
    if kind == "float":
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {text!r}")
        return value
    if kind == "str":
        return text
    value = json.loads(text)  # mappings and tuples
    return tuple(value) if kind.startswith("tuple") else value


def typed_overrides(fields_of: type, items: list[tuple[str, str, str]], what: str) -> dict[str, Any]:
    """{key: typed value} for (key, text, item) triples against the fields of dataclass `fields_of`."""
    types = {f.name: str(f.type) for f in dataclasses.fields(fields_of)}
    out: dict[str, Any] = {}
    for key, text, item in items:
        if key not in types:
            raise ConfigError(f"override {item!r}: unknown {what} {key!r}; known: {', '.join(types)}")
        try:
            out[key] = parse_value(types[key], text)
        except (ValueError, json.JSONDecodeError) as exc:
            raise ConfigError(f"override {item!r}: {exc}") from exc
    return out


def parse_model_overrides(config_class: type, items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` items (model section only) -> typed config overrides of `config_class`."""
    wanted = []
    for section, key, text, item in split_items(items):
        if section != "model":
            raise ConfigError(f"override {item!r}: only model settings can be set here")
        wanted.append((key, text, item))
    return typed_overrides(config_class, wanted, f"{config_class.__name__} key")


def parse_set_items(preset: Preset, items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """CLI `--set` items -> (model config overrides, training recipe overrides), validated against the preset."""
    model_items, recipe_items = [], []
    for section, key, text, item in split_items(items):
        (model_items if section == "model" else recipe_items).append((key, text, item))
    model = typed_overrides(preset.config_class, model_items, f"{preset.config_class.__name__} key")
    recipe = typed_overrides(TrainingRecipe, recipe_items, "training setting")
    config_from_dict(preset.config_class, {**preset.defaults, **model}, where="--set")  # validate now
    return model, recipe


def apply_recipe_overrides(recipe: TrainingRecipe, overrides: dict[str, Any]) -> TrainingRecipe:
    """The recipe with `overrides` applied (names were checked by `parse_set_items`)."""
    try:
        return dataclasses.replace(recipe, **overrides)
    except TypeError as exc:
        known = ", ".join(f.name for f in dataclasses.fields(TrainingRecipe))
        raise MgsvError(f"unknown training setting in {sorted(overrides)}; known: {known}") from exc
