"""The layer order of docs/architecture.md, checked on every import of the package (lazy ones included), and the
seams it promises: search reaches a model only through the contract of `mgsv.models.contract`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mgsv"

# Lowest first. A package may import its own modules and any package of a lower layer, never a package of its own
# layer or above (docs/architecture.md, "Layers"). "mgsv" is the package root (its version).
LAYERS: list[tuple[str, ...]] = [
    ("mgsv", "errors", "defaults"),
    ("atomic_io", "manifests", "limits", "file_access", "devices"),
    ("files", "media", "hub"),
    ("features",),
    ("encoders", "data"),
    ("models",),
    ("inference",),
    ("evaluation", "extract", "search"),
    ("training", "publish"),
    ("demo", "serve", "reproduce"),
    ("cli",),
    ("__main__",),
]
LAYER_OF = {name: number for number, names in enumerate(LAYERS) for name in names}

# What search may ask of a model (mgsv.models.contract) besides torch's own nn.Module methods.
CONTRACT = {"encode_video", "encode_music", "relevance", "detect", "index_layout", "index_entries", "index_scorer",
            "index_encodings"}
MODULE_METHODS = {"to", "eval", "train", "training", "state_dict", "parameters"}


def package_of(module: str) -> str:
    """"mgsv.search.library" -> "search"; "mgsv" -> "mgsv"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mgsv"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import in a file, nested and lazy ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("mgsv"):
                found.append((node.lineno, target))
                # `from mgsv import errors` imports a package, not only the root.
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names
                          if target == "mgsv" and alias.name in LAYER_OF]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("mgsv")]
    return found


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert packages | modules <= set(LAYER_OF), sorted((packages | modules) - set(LAYER_OF))


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_down_the_layers(path: Path) -> None:
    source = package_of(module_name(path))
    wrong = []
    for line, target in imports(path):
        package = package_of(target)
        if package == source or (target == "mgsv" and source != "mgsv"):
            continue  # its own package; the root package's version is the lowest layer
        if LAYER_OF[package] >= LAYER_OF[source]:
            wrong.append(f"line {line}: {source} (layer {LAYER_OF[source]}) imports {target} "
                         f"(layer {LAYER_OF[package]})")
    assert not wrong, "\n".join(wrong)


def test_search_uses_only_the_model_contract() -> None:
    """No attribute of a model is read in mgsv/search besides the contract's methods (no `model.xpool`, ...)."""
    wrong = []
    for path in sorted((SRC / "search").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            is_model = (isinstance(owner, ast.Name) and owner.id == "model") or (
                isinstance(owner, ast.Attribute) and owner.attr == "model")
            if is_model and node.attr not in CONTRACT | MODULE_METHODS:
                wrong.append(f"{path.name}:{node.lineno}: model.{node.attr}")
    assert not wrong, wrong


def test_presets_are_one_table_with_unique_names_and_recipes() -> None:
    from mgsv.models.registry import PRESETS
    from mgsv.training.recipe import RECIPES

    names = [p.name for p in PRESETS]
    assert len(names) == len(set(names))
    assert set(names) == set(RECIPES), "every preset has exactly one training recipe"
