"""`mgsv encoders verify`: the official weight files against the Hugging Face encoders, token by token, offline.

The official files are stood in for by the small ones of tests/fixtures/encoder-parity, written in the real
layouts (see its README and `mgsv.encoders.official_weights`): OpenAI's `ViT-B-32.pt` is a TorchScript archive
whose state dict has fp16 weights and the 0-d `input_resolution` / `context_length` / `vocab_size` tensors
(openai/CLIP `clip/clip.py::load` + `clip/model.py::build_model`); AST's `audioset_0.4593.pth` is the state dict of
a `DataParallel` model, keys `module.v.*` / `module.mlp_head.*` (xxayt/MGSV `model/model_Base.py` loads it into the
DDP-wrapped `ASTModel`; transformers' AST conversion script reads the same keys). The "hub models" are folders
converted from the same weights, as the hub's `openai/clip-vit-base-patch32` and `MIT/ast-...-0.4593` were.
The download is served by a local HTTP server that mirrors OpenAI's address layout, whose path segment is the
file's SHA-256 (`clip/clip.py::_download` checks it the same way).
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES

from mgsv.cli import main
from mgsv.encoders.official_weights import (
    ast_from_official,
    fetch_weights,
    file_sha256,
    openai_clip_vision,
    read_state_dict,
)
from mgsv.encoders.tiny import save_pretrained_quietly
from mgsv.encoders.verify import EncoderPair, compare_tokens, probe_frames, probe_music, verify_encoders
from mgsv.errors import InputError

PARITY = FIXTURES / "encoder-parity"
CLIP_PT = PARITY / "clip-small-ViT-B-32-format.pt"
AST_PTH = PARITY / "ast-small-audioset-format.pth"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(scope="module")
def hub_like(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """save_pretrained folders of the same weights (what the hub holds), and one with a changed AST layer."""
    root = tmp_path_factory.mktemp("hub-like")
    clip = save_pretrained_quietly(openai_clip_vision(read_state_dict(CLIP_PT)), root / "clip")
    ast_model = ast_from_official(read_state_dict(AST_PTH), num_heads=2, layer_norm_eps=1e-12)  # the hub's epsilon
    ast = save_pretrained_quietly(ast_model, root / "ast")
    with torch.no_grad():
        weight = dict(ast_model.named_parameters())["layernorm.weight"]
        weight.mul_(torch.linspace(0.5, 1.5, weight.numel()))  # a wrong final LayerNorm: every token changes
    wrong = save_pretrained_quietly(ast_model, root / "ast-wrong")
    return {"clip": clip, "ast": ast, "ast-wrong": wrong}


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_the_official_file_layouts_are_read() -> None:
    clip = read_state_dict(CLIP_PT)
    assert {"input_resolution", "context_length", "vocab_size"} <= set(clip)
    assert clip["visual.conv1.weight"].dtype == torch.float16 and clip["visual.proj"].dtype == torch.float16
    ast = read_state_dict(AST_PTH)
    assert all(k.startswith(("module.v.", "module.mlp_head.")) for k in ast)
    assert ast["module.v.pos_embed"].shape == (1, 1214, 16)  # CLS + distillation + 12 x 101 patches


def test_verify_agrees_when_the_weights_are_the_same(hub_like: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    song = PARITY / "ntsc-640x360-29.97fps.mp4"  # a video with a sound track: a video item
    code, out, _ = run_cli(["encoders", "verify", "--clip-weights", str(CLIP_PT), "--ast-weights", str(AST_PTH),
                            "--clip", str(hub_like["clip"]), "--ast", str(hub_like["ast"]), "--media", str(song),
                            "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["ok"] and report["min_cosine"] == 0.9999
    assert [(r["modality"], Path(r["item"]).name) for r in report["items"]] == [
        ("video", "probe frames"), ("video", song.name), ("music", "probe music")]
    assert [r["tokens"] for r in report["items"]] == [8, 9, 11]  # 8 probe frames, 9 s of video, 25 s of music
    video, music = report["summary"]["video"], report["summary"]["music"]
    assert video["cosine_min"] > 0.9999999 and video["max_abs_diff"] < 1e-5
    # The reference runs DeiT's LayerNorm epsilon (1e-6), the checked model the hub's (1e-12): a tiny difference.
    assert 0.99999 < music["cosine_min"] < 1.0 + 1e-9
    assert report["sources"]["music"]["official"] == str(AST_PTH)


def test_verify_reports_weights_that_differ(hub_like: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["encoders", "verify", "--only", "ast", "--ast-weights", str(AST_PTH), "--ast",
                            str(hub_like["ast-wrong"])], capsys)
    assert code == 1
    assert "DIFFER" in out and "probe music" in out
    report = verify_encoders(ast=EncoderPair(AST_PTH, str(hub_like["ast-wrong"])))
    assert not report.ok and report.summary("music").cosine_min < 0.999  # type: ignore[union-attr]


def test_weights_dir_names_the_official_files(hub_like: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(CLIP_PT, tmp_path / "ViT-B-32.pt")
    shutil.copy(AST_PTH, tmp_path / "audioset_0.4593.pth")
    code, out, _ = run_cli(["encoders", "verify", "--weights-dir", str(tmp_path), "--clip", str(hub_like["clip"]),
                            "--ast", str(hub_like["ast"]), "--json"], capsys)
    assert code == 0
    sources = json.loads(out)["sources"]
    assert sources["video"]["official"] == str(tmp_path / "ViT-B-32.pt")
    assert sources["music"]["official"] == str(tmp_path / "audioset_0.4593.pth")


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static file server on 127.0.0.1 laid out like openaipublic.azureedge.net/clip/models/<sha256>/<file>."""
    root = tmp_path / "www"
    sha = file_sha256(CLIP_PT)
    (root / "clip" / "models" / sha).mkdir(parents=True)
    shutil.copy(CLIP_PT, root / "clip" / "models" / sha / "ViT-B-32.pt")

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/clip/models/{sha}/ViT-B-32.pt", root
    finally:
        server.shutdown()
        server.server_close()


def test_download_checks_the_sha256_and_is_reused(file_server: tuple[str, Path], tmp_path: Path) -> None:
    url, root = file_server
    sha = url.split("/")[-2]
    cache = tmp_path / "cache"
    path = fetch_weights(url, cache, sha256=sha)
    assert path == cache / "ViT-B-32.pt" and file_sha256(path) == sha
    (root / "clip" / "models" / sha / "ViT-B-32.pt").unlink()  # gone from the server: the copy is reused
    assert fetch_weights(url, cache, sha256=sha) == path
    with pytest.raises(InputError, match="cannot download"):
        fetch_weights(url, tmp_path / "other", sha256=sha)
    assert list((tmp_path / "other").iterdir()) == []  # no partial file left behind


def test_download_with_a_wrong_checksum_keeps_nothing(file_server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = file_server
    with pytest.raises(InputError, match="expected 0000"):
        fetch_weights(url, tmp_path / "cache", sha256="0" * 64)
    assert list((tmp_path / "cache").iterdir()) == []


def test_cli_downloads_an_address(file_server: tuple[str, Path], hub_like: dict[str, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = file_server
    code, out, _ = run_cli(["encoders", "verify", "--only", "clip", "--clip-weights", url, "--clip",
                            str(hub_like["clip"]), "--download-dir", str(tmp_path / "dl"), "--json"], capsys)
    assert code == 0 and json.loads(out)["ok"]
    assert (tmp_path / "dl" / "ViT-B-32.pt").is_file()


def test_bad_weight_files_are_named(tmp_path: Path, hub_like: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "ViT-B-32.pt"
    junk.write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(InputError, match="neither a TorchScript archive nor a saved state dict"):
        read_state_dict(junk)
    with pytest.raises(InputError, match="no such weight file"):
        read_state_dict(tmp_path / "missing.pth")
    partial = {k: v for k, v in read_state_dict(AST_PTH).items() if "blocks.1." not in k or "qkv" not in k}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(InputError, match="not an AST checkpoint"):
        ast_from_official(read_state_dict(tmp_path / "partial.pth"), num_heads=2)
    with pytest.raises(InputError, match="not an OpenAI CLIP ViT"):
        openai_clip_vision(read_state_dict(AST_PTH))
    # A CLIP file given as the AST (and the other way round) is refused with the file named, through the CLI.
    code, _, err = run_cli(["encoders", "verify", "--only", "ast", "--ast-weights", str(CLIP_PT), "--ast",
                            str(hub_like["ast"])], capsys)
    assert code == 1 and str(CLIP_PT) in err and "not an AST checkpoint" in err


def test_compare_tokens_and_probe_media() -> None:
    reference = np.random.default_rng(0).normal(size=(6, 8))
    same = compare_tokens("music", "x", reference, reference, np.array([1, 1, 1, 0, 0, 1], bool))
    assert same.tokens == 4 and same.cosine_min == pytest.approx(1.0) and same.max_abs_diff == 0
    flipped = compare_tokens("music", "x", -reference, reference)
    assert flipped.cosine_min == pytest.approx(-1.0)
    with pytest.raises(InputError, match="token shapes differ"):
        compare_tokens("video", "y", reference[:2], reference)
    music = probe_music()
    assert music.shape == (2, 25 * 44100) and np.abs(music).max() < 1 and not np.allclose(music[0], music[1])
    np.testing.assert_array_equal(music, probe_music())  # deterministic
    frames = probe_frames()
    assert frames.shape == (8, 360, 640, 3) and frames.dtype == np.uint8
