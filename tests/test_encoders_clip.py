"""CLIP frame encoder: the original CLIP preprocessing, projected embeddings, specs, and loading from folders/cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from encoder_factory import TINY_CLIP_DIM, install_in_hf_cache, make_real_size_clip, make_tiny_ast, make_tiny_clip

from mgsv.encoders import DEFAULT_CLIP, ClipFrameEncoder
from mgsv.encoders.clip import crop_box, preprocess_frames, resized_size
from mgsv.encoders.loading import cpu_supports_bf16, looks_like_path, resolve_dtype, resolve_source
from mgsv.errors import InputError
from mgsv.features.spec import CLIP_MEAN, CLIP_STD, VIDEO_SPEC


def random_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random images (noise would make bicubic resampling differences look larger than they are)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(n, 9, 16, 3)).astype(np.float32)
    ys = np.linspace(0, 8, height)[:, None]
    xs = np.linspace(0, 15, width)[None, :]
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, 8), np.minimum(x0 + 1, 15)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    top = small[:, y0, x0] * (1 - fx) + small[:, y0, x1] * fx
    bottom = small[:, y1, x0] * (1 - fx) + small[:, y1, x1] * fx
    return np.clip(top * (1 - fy) + bottom * fy, 0, 255).astype(np.uint8)


def reference_clip_transform(frame: np.ndarray) -> np.ndarray:
    """CLIP's torchvision Compose written out with PIL: Resize(224, bicubic), CenterCrop(224), ToTensor, Normalize."""
    from PIL import Image

    image = Image.fromarray(frame)
    w, h = image.size
    short, long = min(w, h), max(w, h)
    new_short, new_long = 224, int(224 * long / short)  # torchvision's _compute_resized_output_size
    size = (new_short, new_long) if w <= h else (new_long, new_short)
    image = image.resize(size, Image.BICUBIC)
    top = round((image.size[1] - 224) / 2.0)  # torchvision's F.center_crop
    left = round((image.size[0] - 224) / 2.0)
    image = image.crop((left, top, left + 224, top + 224))
    tensor = np.array(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return (tensor - np.array(CLIP_MEAN, np.float32)[:, None, None]) / np.array(CLIP_STD, np.float32)[:, None, None]


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> ClipFrameEncoder:
    return ClipFrameEncoder.from_pretrained(tiny_clip_dir, dtype="float32", batch_size=3)


# --- preprocessing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "size"),
    [(640, 360, (398, 224)), (720, 1280, (224, 398)), (224, 224, (224, 224)), (300, 225, (298, 224))],
)
def test_resized_size_follows_torchvision(width: int, height: int, size: tuple[int, int]) -> None:
    assert resized_size(width, height, 224) == size


def test_crop_offsets_round_half_to_even_like_torchvision() -> None:
    assert crop_box(398, 224, 224) == (87, 0, 311, 224)
    assert crop_box(225, 224, 224)[0] == 0  # round(0.5) = 0
    assert crop_box(227, 224, 224)[0] == 2  # round(1.5) = 2, where floor division would give 1
    assert crop_box(224, 229, 224)[1] == 2  # round(2.5) = 2


@pytest.mark.parametrize(("height", "width"), [(360, 640), (1280, 720), (224, 224), (101, 453), (227, 301)])
def test_preprocessing_matches_the_clip_transform(height: int, width: int) -> None:
    frames = random_frames(2, height, width)
    ours = preprocess_frames(frames)
    assert ours.shape == (2, 3, 224, 224) and ours.dtype == np.float32
    for frame, out in zip(frames, ours):
        np.testing.assert_allclose(out, reference_clip_transform(frame), atol=1e-6, rtol=0)


def test_preprocessing_matches_transformers_processor_where_crop_offsets_agree() -> None:
    from transformers import CLIPImageProcessorPil

    frames = random_frames(3, 360, 640)  # resized to 398x224: offset 87 under both roundings
    expected = CLIPImageProcessorPil()(list(frames), return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(preprocess_frames(frames), expected, atol=1e-5, rtol=0)


def test_constant_frame_normalises_per_channel() -> None:
    frame = np.empty((1, 50, 80, 3), np.uint8)
    frame[..., :] = (255, 128, 0)
    out = preprocess_frames(frame)[0]
    for channel, value in enumerate((255, 128, 0)):
        expected = (value / 255 - CLIP_MEAN[channel]) / CLIP_STD[channel]
        np.testing.assert_allclose(out[channel], expected, atol=1e-5)


# --- encoder ---------------------------------------------------------------------------------------------------


def test_encode_gives_projected_unnormalised_image_embeddings(encoder: ClipFrameEncoder, tiny_clip_dir: Path) -> None:
    from transformers import CLIPModel

    frames = random_frames(5, 360, 640, seed=1)
    out = encoder.encode(frames)
    assert out.shape == (5, TINY_CLIP_DIM) and out.dtype == np.float32
    # The full CLIP model's image features (= original CLIP's encode_image) on the same pixels.
    full = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    with torch.no_grad():
        features = full.get_image_features(pixel_values=torch.from_numpy(preprocess_frames(frames)))
    features = features if isinstance(features, torch.Tensor) else features.pooler_output
    np.testing.assert_allclose(out, features.numpy(), atol=1e-5, rtol=1e-4)
    assert not np.allclose(np.linalg.norm(out, axis=1), 1.0)


def test_batch_size_does_not_change_embeddings(tiny_clip_dir: Path, encoder: ClipFrameEncoder) -> None:
    frames = random_frames(7, 240, 320, seed=2)
    one_batch = ClipFrameEncoder.from_pretrained(tiny_clip_dir, dtype="float32", batch_size=32).encode(frames)
    np.testing.assert_allclose(encoder.encode(frames), one_batch, atol=1e-5)


def test_vision_only_folder_gives_the_same_embeddings(tmp_path: Path, encoder: ClipFrameEncoder) -> None:
    vision = ClipFrameEncoder.from_pretrained(make_tiny_clip(tmp_path / "v", vision_only=True), dtype="float32")
    frames = random_frames(2, 224, 224, seed=3)
    # The factory's vision-only folder holds the vision tower of the same seeded full model.
    np.testing.assert_array_equal(vision.encode(frames), encoder.encode(frames))


def test_bf16_embeddings_close_to_fp32(tiny_clip_dir: Path, encoder: ClipFrameEncoder) -> None:
    bf16 = ClipFrameEncoder.from_pretrained(tiny_clip_dir, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    frames = random_frames(4, 200, 300, seed=4)
    a, b = encoder.encode(frames), bf16.encode(frames)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert b.dtype == np.float32 and cos.min() > 0.99


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's own imports of torch.jit
def test_compiled_model_gives_the_same_embeddings(tiny_clip_dir: Path, encoder: ClipFrameEncoder) -> None:
    compiled = ClipFrameEncoder.from_pretrained(tiny_clip_dir, dtype="float32", batch_size=4, compile=True)
    frames = random_frames(6, 120, 160, seed=6)  # a full batch of 4, then 2 frames padded to 4
    np.testing.assert_allclose(compiled.encode(frames), encoder.encode(frames), atol=1e-4, rtol=1e-4)


def test_model_is_frozen(encoder: ClipFrameEncoder) -> None:
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())


# --- spec ------------------------------------------------------------------------------------------------------


def test_spec_of_the_official_model_is_the_default_video_spec() -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device("meta"):  # real ViT-B/32 config, no memory: only the config matters for the spec
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(patch_size=32, projection_dim=512))
    assert ClipFrameEncoder(model, DEFAULT_CLIP, torch.device("cpu"), batch_size=8).spec == VIDEO_SPEC


def test_spec_of_other_models_differs(encoder: ClipFrameEncoder, tmp_path: Path) -> None:
    assert encoder.spec.encoder.startswith("local:sha256:") and encoder.spec.dim == TINY_CLIP_DIM
    assert encoder.spec != VIDEO_SPEC and encoder.spec.params == VIDEO_SPEC.params
    small = ClipFrameEncoder.from_pretrained(make_tiny_clip(tmp_path / "s", image_size=64), dtype="float32")
    assert small.spec.params["resize"] == "64 bicubic short side" and small.spec.params["crop"] == "64 centre"
    assert small.encode(random_frames(1, 100, 120)).shape == (1, TINY_CLIP_DIM)


# --- loading ---------------------------------------------------------------------------------------------------


def test_hub_id_loads_offline_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    snapshot = install_in_hf_cache(tmp_path, "tiny-org/tiny-clip", make_tiny_clip)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    by_id = ClipFrameEncoder.from_pretrained("tiny-org/tiny-clip", dtype="float32")
    assert by_id.encoder_id == "tiny-org/tiny-clip"
    # The snapshot folder itself maps back to the hub id.
    assert ClipFrameEncoder.from_pretrained(snapshot, dtype="float32").spec == by_id.spec


def test_default_model_from_the_cache_gives_the_default_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    # A random model with the official architecture stands in for the real checkpoint in a temporary hub cache.
    install_in_hf_cache(tmp_path, DEFAULT_CLIP, make_real_size_clip)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    encoder = ClipFrameEncoder.from_pretrained()
    assert encoder.encoder_id == DEFAULT_CLIP and encoder.spec == VIDEO_SPEC
    assert encoder.dtype == resolve_dtype("auto", torch.device("cpu"))
    features = encoder.encode(random_frames(2, 360, 640))
    assert features.shape == (2, 512) and features.dtype == np.float32 and np.isfinite(features).all()


def test_uncached_hub_id_explains_what_to_do() -> None:
    with pytest.raises(InputError) as info:
        ClipFrameEncoder.from_pretrained("mgsv-tests/no-such-clip-model")
    message = str(info.value)
    assert message.startswith("mgsv-tests/no-such-clip-model: model not found in the local Hugging Face cache")
    assert "downloads are off (HF_HUB_OFFLINE=1)" in message
    assert "run once with network access" in message and "pass a local directory" in message


def test_bad_model_folders_are_named(tmp_path: Path, tiny_clip_dir: Path) -> None:
    cases: list[tuple[Path, str]] = []
    cases.append((tmp_path / "missing", "no such model folder"))
    (tmp_path / "file.bin").write_bytes(b"x")
    cases.append((tmp_path / "file.bin", "is a file, not a model folder"))
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", "no config.json: not a save_pretrained model folder"))
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(tiny_clip_dir / "config.json", no_weights)
    cases.append((no_weights, "no weight file"))
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_clip_dir, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases.append((truncated, "could not load the weights"))
    bad_json = tmp_path / "bad-json"
    shutil.copytree(tiny_clip_dir, bad_json)
    (bad_json / "config.json").write_text("{not json")
    cases.append((bad_json, "config.json"))
    cases.append((make_tiny_ast(tmp_path / "ast"), "holds a 'audio-spectrogram-transformer' model, expected one of"))
    for folder, problem in cases:
        with pytest.raises(InputError) as info:
            ClipFrameEncoder.from_pretrained(folder)
        assert str(info.value).startswith(f"{folder}: "), str(info.value)
        assert problem in str(info.value), str(info.value)


def test_checkpoint_missing_weights_is_refused(tmp_path: Path, tiny_clip_dir: Path) -> None:
    from safetensors.torch import load_file, save_file

    partial = tmp_path / "partial"
    shutil.copytree(tiny_clip_dir, partial)
    weights = load_file(partial / "model.safetensors")
    del weights["visual_projection.weight"]
    save_file(weights, partial / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InputError, match="lacks 1 weight"):
        ClipFrameEncoder.from_pretrained(partial)


def test_claiming_the_official_id_needs_the_official_architecture(tiny_clip_dir: Path) -> None:
    with pytest.raises(InputError, match=f"claims to be {DEFAULT_CLIP} but its architecture differs"):
        ClipFrameEncoder.from_pretrained(tiny_clip_dir, encoder_id=DEFAULT_CLIP)


def test_a_folder_named_like_a_hub_id_is_still_identified_by_its_weights(tmp_path: Path, tiny_clip_dir: Path) -> None:
    copy = tmp_path / "openai" / "clip-vit-base-patch32"
    shutil.copytree(tiny_clip_dir, copy)
    source = resolve_source(copy)
    assert source.is_local and source.encoder_id == resolve_source(tiny_clip_dir).encoder_id
    assert source.encoder_id.startswith("local:sha256:")


@pytest.mark.parametrize(
    ("text", "is_path"),
    [
        ("openai/clip-vit-base-patch32", False),
        ("bert-base", False),
        ("./clip", True),
        ("/models/clip", True),
        ("a/b/c", True),
        ("clip/", True),
        ("~/clip", True),
    ],
)
def test_hub_ids_and_paths_are_told_apart(text: str, is_path: bool) -> None:
    assert looks_like_path(text) is is_path


def test_auto_dtype_uses_bf16_only_where_the_cpu_runs_it() -> None:
    expected = torch.bfloat16 if cpu_supports_bf16() else torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) is expected
    assert resolve_dtype("float32", torch.device("cpu")) is torch.float32
    assert resolve_dtype(torch.bfloat16, torch.device("cpu")) is torch.bfloat16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": torch.float16}, "dtype: unsupported encoder dtype torch.float16"),
        ({"dtype": "double"}, "dtype: unknown dtype 'double'"),
        ({"device": "tpu9"}, "`device`: not a torch device"),
        ({"batch_size": 0}, "batch_size: must be at least 1"),
        ({"encoder_id": " "}, "encoder_id must be a non-empty string"),
    ],
)
def test_bad_options(tiny_clip_dir: Path, kwargs, message) -> None:
    with pytest.raises(InputError) as info:
        ClipFrameEncoder.from_pretrained(tiny_clip_dir, **kwargs)
    assert message in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tiny_clip_dir: Path) -> None:
    with pytest.raises(InputError, match="`device` cuda: CUDA is not available on this machine"):
        ClipFrameEncoder.from_pretrained(tiny_clip_dir, device="cuda")


# --- bad frames ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([np.zeros((4, 4, 3), np.uint8)], "frames must be a numpy array, got list"),
        (np.zeros((4, 4, 3), np.uint8), "frames must have shape [N, H, W, 3] (RGB), got [4, 4, 3]"),
        (np.zeros((1, 4, 4, 4), np.uint8), "got [1, 4, 4, 4]"),
        (np.zeros((1, 4, 4, 3), np.float32), "frames must be uint8 RGB, got dtype float32"),
        (np.zeros((0, 4, 4, 3), np.uint8), "no frames to encode"),
        (np.zeros((1, 0, 4, 3), np.uint8), "frame size 4x0 is outside"),
    ],
)
def test_bad_frames_name_the_source(encoder: ClipFrameEncoder, frames, message) -> None:
    with pytest.raises(InputError) as info:
        encoder.encode(frames, source="clip.mp4")
    assert str(info.value).startswith("clip.mp4: ") and message in str(info.value)


def test_frame_choices_are_options_the_spec_records(tiny_clip_dir: Path) -> None:
    from mgsv.features.spec import video_spec

    other = ClipFrameEncoder.from_pretrained(tiny_clip_dir, dtype="float32", frame_times="shown", jpeg_quality=95)
    assert other.spec.params == video_spec(frame_times="shown", jpeg_quality=95).params
    assert other.decode_options == {"frame_times": "shown", "jpeg_quality": 95, "max_short_side": 224}
    with pytest.raises(InputError, match="frame_times: frame_times must be one of"):
        ClipFrameEncoder.from_pretrained(tiny_clip_dir, frame_times="nearest")
    with pytest.raises(InputError, match="jpeg_quality: jpeg_quality must be None"):
        ClipFrameEncoder.from_pretrained(tiny_clip_dir, jpeg_quality=101)
