"""Checkpoints on the Hub: `hf:` references resolved once into the cache, pinned, offline; `mgsv push` with its
model card; `mgsv convert hf:...`. All against the fake Hub on 127.0.0.1 (tests/hub_factory.py), which answers the
calls huggingface_hub 2.4 makes (repo info, tree, resolve, create repo, validate-yaml, preupload, git-LFS batch,
commit, branch) the way the Hub does; no test touches the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from grounding_factory import make_synthetic_library, make_tiny_setup
from hub_factory import FakeHub
from media_factory import write_test_video
from safetensors.torch import load_file
from torch.testing import assert_close

from mgsv.cli import main
from mgsv.data.synthetic import SyntheticConfig, write_synthetic_dataset
from mgsv.errors import InputError
from mgsv.evaluation.paper import MADE_TABLE5
from mgsv.features.spec import DEFAULT_SPECS
from mgsv.hub import HubError, parse_hub_ref, resolve_checkpoint, resolve_hub_checkpoint
from mgsv.models import build_model
from mgsv.models.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from mgsv.training.trainer import Trainer, TrainSettings

ALICE, BOB = "hf_alice_write_token", "hf_bob_write_token"
SMALL = {"dim": 32, "enhance_ffn_dim": 64, "detr_ffn_dim": 64, "contrastive_dim": 16, "decoder_layers": 2}


def tiny_checkpoint(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(build_model("made-paper", **SMALL), folder, feature_specs=DEFAULT_SPECS,
                           metadata={"note": f"seed {seed}"})


def same_weights(a: Path | str, b: Path | str) -> bool:
    left, right = load_checkpoint(a)[0].state_dict(), load_checkpoint(b)[0].state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """The fake Hub as HF_ENDPOINT, an empty Hugging Face cache, no token of this machine, uploads over git-LFS."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the fake speaks git-LFS, not Xet (hub_factory)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with FakeHub() as fake:
        fake.add_user(ALICE, "alice")
        fake.add_user(BOB, "bob")
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run folder: one epoch on a synthetic dataset, then `mgsv eval --split test` beside it."""
    root = tmp_path_factory.mktemp("hub-run")
    config = SyntheticConfig(num_tracks=16, num_train_videos=48, val_size=12, test_size=12, seed=3)
    data = write_synthetic_dataset(root / "data", config)
    (data / "source.json").write_text(json.dumps({"repo_id": "xxayt/MGSV-EC", "revision": "main",
                                                  "commit": "c" * 40, "files": {}}))  # as `mgsv data fetch` writes
    out = root / "run"
    Trainer(TrainSettings(preset="made", data_dir=data, out_dir=out, model_overrides=dict(SMALL),
                          recipe_overrides={"epochs": 1, "min_epochs": 1, "batch_size": 16, "eval_batch_size": 64},
                          progress=False, device="cpu")).fit()
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(out), "--split", "test", "--top-k", "5", "--json"])
    assert exit_info.value.code in (0, None)
    return out


def test_push_a_run_then_load_it_by_reference(
    hub: FakeHub, trained_run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import ModelCard, constants

    code, stdout, err = run(["push", str(trained_run), "--repo", "alice/made-syn", "--token", ALICE, "--json"],
                            capsys)
    assert code == 0, err
    result = json.loads(stdout)
    checkpoint = trained_run / "checkpoints" / "best_mor1_iou07"  # what `mgsv eval RUN` picks
    metrics_file = trained_run / "eval-test-best_mor1_iou07" / "metrics.json"
    assert result["checkpoint"] == str(checkpoint) and result["metrics"] == str(metrics_file)
    repo = hub.repos[("model", "alice/made-syn")]
    assert result["commit"] == repo.branches["main"] and result["ref"] == f"hf:alice/made-syn@{result['commit']}"
    files = hub.files("model", "alice/made-syn")
    assert files["model.safetensors"] == (checkpoint / "model.safetensors").read_bytes()
    assert files["config.json"] == (checkpoint / "config.json").read_bytes()
    assert hub.lfs_objects  # the weights went through the LFS upload, as the Hub's .gitattributes asks

    # The card: the Hub's metadata header (validated by the Hub's endpoint before the commit) and its page.
    assert any(path == "/api/validate-yaml" for _, path, _ in hub.requests)
    card = ModelCard(files["README.md"].decode())
    measured = json.loads(metrics_file.read_text())["metrics"]
    assert card.data.license == "other" and card.data.license_link.endswith("datasets/xxayt/MGSV-EC")
    assert card.data.datasets == ["xxayt/MGSV-EC"] and card.data.library_name == "mgsv"
    results = {r.metric_name: r for r in card.data.eval_results}
    assert set(results) == {"mIoU", "R@1", "R@5", "R@10", "MoR@1", "MoR@10", "MoR@100"}
    assert results["mIoU"].metric_value == round(measured["mIoU"], 4)
    assert results["MoR@10"].metric_value == round(measured["MoR@10 (IoU>0.7)"], 4)
    assert results["R@1"].dataset_split == "test" and results["R@1"].dataset_revision == "c" * 40
    text = card.text
    assert f"| mIoU | {measured['mIoU']:.3f} | 0.722 | 0.743 ± 0.017 |" in text  # ours beside Tables 4 and 5
    assert f"| R@5 | {measured['R@5']:.1f} | — | 17.3 ± 0.7 |" in text
    assert f"| {measured['R@5'] - MADE_TABLE5.values['R@5']:+.1f} |" in text  # the difference, signed
    assert "| video | `mgsv/synthetic-planted` | 512 | 50 | " in text and "frame_noise=0.5" in text  # its spec
    assert "best epoch by validation MoR@1 (IoU>0.7)" in text and '"batch_size": 16' in text
    assert "CC BY-NC 4.0" in text and "CC BY-ND 4.0" in text and "non-commercial research only" in text
    assert "@inproceedings{xin2025mgsv" in text

    # Every loader takes the reference; the files land once in the Hugging Face cache, under their commit.
    info = load_checkpoint("hf:alice/made-syn")[1]
    assert same_weights(checkpoint, "hf:alice/made-syn")
    assert info.path.parent.name == "snapshots" and info.path.name == result["commit"]
    assert info.path.is_relative_to(constants.HF_HUB_CACHE)
    before = len(hub.requests)
    assert resolve_checkpoint("hf:alice/made-syn") == info.path
    assert not [p for m, p, _ in hub.requests[before:] if m == "GET" and "/resolve/" in p]  # nothing downloaded again

    # Offline: the cached reference works without a single request; an uncached one says so, naming it.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(hub.requests)
    assert read_checkpoint_info("hf:alice/made-syn").path == info.path
    assert read_checkpoint_info(f"hf:alice/made-syn@{result['commit']}").path == info.path
    assert len(hub.requests) == before
    with pytest.raises(HubError, match="hf:alice/other: not in the local Hugging Face cache, and HF_HUB_OFFLINE=1"):
        load_checkpoint("hf:alice/other")


def test_ground_takes_a_hub_checkpoint(hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup = make_tiny_setup(tmp_path / "models")
    library = make_synthetic_library(tmp_path / "lib", setup.music_spec, [6.0, 8.0, 12.0])
    video = write_test_video(tmp_path / "clip.mp4", seconds=4, fps=2, audio=False)
    code, out, _ = run(["push", str(setup.checkpoint), "--repo", "alice/tiny-made", "--token", ALICE, "--json"],
                       capsys)
    assert code == 0
    args = ["ground", str(video), "--library", str(library.root), "--clip", str(setup.clip_dir), "--dtype", "fp32",
            "--json", "--checkpoint"]
    grounded = {}
    for checkpoint in (str(setup.checkpoint), "hf:alice/tiny-made", f"hf:alice/tiny-made@{json.loads(out)['commit']}"):
        code, out_, err = run([*args, checkpoint], capsys)
        assert code == 0, err
        grounded[checkpoint] = json.loads(out_)["results"][0]["moments"]
    assert len({json.dumps(moments) for moments in grounded.values()}) == 1  # the same model, whichever way named


def test_pinned_commits_branches_and_sub_folders(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tiny_checkpoint(tmp_path / "first", 0), tiny_checkpoint(tmp_path / "second", 1)
    code, out, _ = run(["push", str(first), "--repo", "alice/made-tiny", "--token", ALICE, "--json"], capsys)
    assert code == 0
    first_commit = json.loads(out)["commit"]
    code, out, _ = run(["push", str(second), "--repo", "alice/made-tiny", "--token", ALICE, "--json"], capsys)
    assert code == 0 and json.loads(out)["commit"] != first_commit
    code, out, _ = run(["push", str(first), "--repo", "alice/made-tiny", "--token", ALICE, "--branch", "exp",
                        "--json"], capsys)
    assert code == 0 and json.loads(out)["branch"] == "exp"
    card = hub.files("model", "alice/made-tiny", "exp")["README.md"].decode()
    assert "| video | `openai/clip-vit-base-patch32` | 512 | 50 | crop=224 centre, fps=1," in card
    assert "| music | `MIT/ast-finetuned-audioset-10-10-0.4593` | 768 | 96 |" in card and "stride_s=2.5" in card
    assert "without its run: the training recipe is not known here" in card

    assert same_weights("hf:alice/made-tiny", second)  # main moved on
    assert same_weights("hf:alice/made-tiny@exp", first)
    before = len(hub.requests)
    pinned = resolve_hub_checkpoint(f"hf:alice/made-tiny@{first_commit}")
    assert pinned.commit == first_commit and same_weights(pinned.path, first)
    assert not [p for _, p, _ in hub.requests[before:] if "/revision/" in p]  # a commit needs no resolving
    assert str(resolve_hub_checkpoint("hf:alice/made-tiny").pinned).startswith("hf:alice/made-tiny@")

    # A repository holding several checkpoints: hf:OWNER/NAME[@REV]/FOLDER picks one, downloading only its files.
    sub = {f"checkpoints/{name}/{f}": (folder / f).read_bytes()
           for name, folder in (("a", first), ("b", second)) for f in ("model.safetensors", "config.json")}
    hub.add_repo("model", "alice/runs", {**sub, "logs/huge.bin": b"\0" * 1024})
    assert same_weights("hf:alice/runs/checkpoints/b", second)
    assert same_weights("hf:alice/runs@main/checkpoints/a", first)
    commit = hub.repos[("model", "alice/runs")].branches["main"]
    fetched = {p.split(f"/resolve/{commit}/", 1)[1] for m, p, _ in hub.requests
               if m == "GET" and p.startswith("/alice/runs/resolve/")}
    assert fetched == set(sub)  # allow_patterns: not the logs


def test_reference_errors_are_one_clear_sentence(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tiny_checkpoint(tmp_path / "ckpt", 0)
    files = {name: (folder / name).read_bytes() for name in ("model.safetensors", "config.json")}
    with pytest.raises(HubError, match="hf:nobody/nothing: repository not found on the Hub"):
        load_checkpoint("hf:nobody/nothing")
    hub.add_repo("model", "alice/made", files)
    with pytest.raises(HubError, match="hf:alice/made@v2: the repository has no such revision"):
        load_checkpoint("hf:alice/made@v2")
    hub.add_repo("model", "alice/empty", {"README.md": b"# nothing here\n"})
    with pytest.raises(HubError, match=r"hf:alice/empty@[0-9a-f]{40}: no model.safetensors and no config.json at "
                                       r"\(its root\); an mgsv checkpoint repository holds"):
        load_checkpoint("hf:alice/empty")
    hub.add_repo("model", "lab/made-gated", files, gated=True, approved={BOB})
    with pytest.raises(HubError, match=f"hf:lab/made-gated: the repository is gated: request access on {hub.url}/"
                                       "lab/made-gated"):
        load_checkpoint("hf:lab/made-gated")
    monkeypatch.setenv("HF_TOKEN", ALICE)
    with pytest.raises(HubError, match="has not been granted to your account"):
        load_checkpoint("hf:lab/made-gated")
    monkeypatch.setenv("HF_TOKEN", BOB)
    assert same_weights("hf:lab/made-gated", folder)
    hub.add_repo("model", "bob/secret", files, private=True, owner_token=BOB)
    assert same_weights("hf:bob/secret", folder)  # HF_TOKEN is bob's
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match=r"hf:bob/secret: repository not found on the Hub \(or it is private"):
        resolve_hub_checkpoint("hf:bob/secret", cache_dir=tmp_path / "other-cache")
    for bad, message in (("hf:alice", "expected hf:OWNER/NAME"), ("hf:datasets/xxayt/MGSV-EC", "only model"),
                         ("hf:alice/made@", "empty revision")):
        with pytest.raises(InputError, match=message):
            load_checkpoint(bad)
    assert parse_hub_ref("hf:alice/made@refs/pr/3/sub").revision == "refs/pr/3"
    assert resolve_checkpoint(tmp_path / "ckpt") == tmp_path / "ckpt"  # local paths pass through untouched


def test_push_refuses_what_it_should(
    hub: FakeHub, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tiny_checkpoint(tmp_path / "ckpt", 0)
    code, _, err = run(["push", str(folder), "--repo", "alice/made"], capsys)
    assert code == 1 and "hf:alice/made: pushing needs a Hugging Face token with write access" in err
    code, _, err = run(["push", str(folder), "--repo", "alice/made", "--token", "hf_unknown"], capsys)
    assert code == 1 and "the Hub did not accept the token (Invalid credentials in Authorization header)" in err
    code, _, err = run(["push", str(folder), "--repo", "alice/made", "--token", BOB], capsys)
    assert code == 1 and "the Hub refused (You don't have the rights to create a model under the namespace" in err
    code, _, err = run(["push", str(folder), "--repo", "made", "--token", ALICE], capsys)
    assert code == 1 and "made: expected OWNER/NAME" in err
    assert ("model", "alice/made") not in hub.repos

    before = len(hub.requests)
    (folder / "model.safetensors").write_bytes(b"\0" * 40)  # damaged: refused before anything is sent
    code, _, err = run(["push", str(folder), "--repo", "alice/made", "--token", ALICE], capsys)
    assert code == 1 and "unreadable weights" in err and len(hub.requests) == before

    val_metrics = tmp_path / "val-metrics.json"
    measured = json.loads((trained_run / "eval-test-best_mor1_iou07" / "metrics.json").read_text())
    val_metrics.write_text(json.dumps({**measured, "split": "val"}))
    code, _, err = run(["push", str(trained_run), "--repo", "alice/made", "--token", ALICE, "--metrics",
                        str(val_metrics)], capsys)
    assert code == 1 and "metrics of the 'val' split; the model card shows test metrics" in err
    code, _, err = run(["push", str(trained_run), "--checkpoint", "best_r1", "--repo", "alice/made", "--token", ALICE,
                        "--metrics", str(trained_run / "eval-test-best_mor1_iou07" / "metrics.json")], capsys)
    assert code == 1 and "not of the checkpoint being pushed" in " ".join(err.split())

    # Without test metrics the card says how to get them, and pushing a private repository works.
    monkeypatch.setenv("HF_TOKEN", ALICE)
    code, out, _ = run(["push", str(trained_run / "checkpoints" / "best_r1"), "--repo", "alice/made-private",
                        "--private"], capsys)
    assert code == 0 and "no test metrics found" in out and "use it as hf:alice/made-private@" in out
    assert hub.repos[("model", "alice/made-private")].private
    readme = hub.files("model", "alice/made-private")["README.md"].decode()
    assert "pushed without test metrics" in readme and "model-index" not in readme
    assert "best epoch by validation R@1" in readme and '"batch_size": 16' in readme  # the run's recipe


def test_convert_an_official_checkpoint_from_the_hub(
    hub: FakeHub, parity_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The official code publishes no checkpoint; one its users trained and uploaded, in the official format
    # (utils/util_train.py::save_model: DDP prefix, epoch, optimiser state), is pulled and converted in one step.
    weights = load_file(parity_dir / "model_perturbed.safetensors")
    source = tmp_path / "official.pth"
    torch.save({"epoch": 37, "model_state_dict": {f"module.{k}": v for k, v in weights.items()},
                "optimizer_state_dict": {"state": {}}}, source)
    repo = hub.add_repo("model", "lab/made-official", {"logs/pytorch_model.bin.best_r1iou07": source.read_bytes()})
    commit = repo.branches["main"]
    code, _, err = run(["convert", "hf:lab/made-official/logs/pytorch_model.bin.best_r1iou07",
                        str(tmp_path / "made"), "--set", "query=video"], capsys)
    assert code == 0, err
    info = read_checkpoint_info(tmp_path / "made")
    assert info.metadata["converted_from"] == f"hf:lab/made-official@{commit}/logs/pytorch_model.bin.best_r1iou07"
    assert info.metadata["official_epoch"] == 37
    model = load_checkpoint(tmp_path / "made")[0]
    x = {k: v.float() for k, v in load_file(parity_dir / "inputs.safetensors").items()}
    with torch.no_grad():
        p_s = model.relevance(model.encode_video(x["frame_feats"], x["frame_mask"]),
                              model.encode_music(x["segment_feats"], x["segment_mask"]))
    assert_close(p_s, load_file(parity_dir / "outputs_perturbed.safetensors")["p_s"], rtol=1e-5, atol=1e-5)
    code, _, err = run(["convert", "hf:lab/made-official/logs/missing.pth", str(tmp_path / "x")], capsys)
    assert code == 1 and "hf:lab/made-official/logs/missing.pth: no such file in the repository" in err
