"""AST music encoder: Kaldi fbank, the official window layout and input normalisation, tokens, masks, loading."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from encoder_factory import TINY_AST_DIM, install_in_hf_cache, make_real_size_ast, make_tiny_ast, make_tiny_clip

from mgsv.encoders import DEFAULT_AST, AstMusicEncoder, MusicTokens
from mgsv.encoders.ast import (
    NORM_MEAN,
    NORM_STD,
    kaldi_fbank,
    mel_banks,
    window_inputs,
    window_layout,
)
from mgsv.errors import InputError
from mgsv.features.spec import MUSIC_SPEC, music_spec

SR = 16000
LOG_FLOOR = float(np.log(np.finfo(np.float32).eps))


def tone_and_noise(seconds: float, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A tone plus noise with a silent gap: exercises loud, quiet and floored fbank values."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
    wave[len(t) // 4 : len(t) // 3] = 0.0
    return wave.astype(np.float32)


@pytest.fixture(scope="module")
def tiny_ast_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_ast(tmp_path_factory.mktemp("tiny-ast"))


@pytest.fixture(scope="module")
def encoder(tiny_ast_dir: Path) -> AstMusicEncoder:
    return AstMusicEncoder.from_pretrained(tiny_ast_dir, dtype="float32", batch_size=4)


# --- fbank -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_bins", [40, 64, 80])
def test_fbank_matches_kaldi_native_fbank(num_bins: int) -> None:
    # kaldi-native-fbank is Kaldi's C++ feature code; it refuses 128 bins on a 512-point FFT (empty filters), so
    # the comparison runs at bin counts Kaldi accepts; the filter construction is the same function of num_bins.
    knf = pytest.importorskip("kaldi_native_fbank")
    wave = tone_and_noise(3.0)
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hanning"
    opts.frame_opts.samp_freq = SR
    opts.mel_opts.num_bins = num_bins
    opts.use_energy = False
    opts.htk_compat = True
    online = knf.OnlineFbank(opts)
    online.accept_waveform(SR, wave.tolist())
    online.input_finished()
    expected = np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])
    ours = kaldi_fbank(torch.from_numpy(wave), num_mel_bins=num_bins).numpy()
    assert ours.shape == expected.shape == (298, num_bins)
    # float32 rounding: ~1e-6 typically, up to a few 1e-4 in bins near the log floor (0.03% of their energy).
    np.testing.assert_allclose(ours, expected, atol=1e-3, rtol=0)
    assert np.abs(ours - expected).mean() < 1e-5


@pytest.mark.parametrize(("seconds", "frames"), [(10.0, 998), (7.5, 748), (5.0, 498), (0.025, 1), (0.02, 0)])
def test_fbank_frame_counts_follow_snip_edges(seconds: float, frames: int) -> None:
    out = kaldi_fbank(torch.zeros(int(seconds * SR)))
    assert out.shape == (frames, 128)


def test_fbank_properties() -> None:
    # Silence hits the log floor everywhere.
    silent = kaldi_fbank(torch.zeros(SR))
    assert torch.all(silent == LOG_FLOOR)
    # A pure 1 kHz tone peaks in the filter whose centre is nearest 1 kHz.
    t = torch.arange(SR) / SR
    peaks = kaldi_fbank(0.5 * torch.sin(2 * torch.pi * 1000.0 * t)).argmax(dim=1)
    banks = mel_banks()
    centres = (banks * np.arange(banks.shape[1])).sum(1) / np.maximum(banks.sum(1), 1e-12) * SR / 512
    assert torch.all(peaks == int(np.argmin(np.abs(centres - 1000.0))))
    # Twice the amplitude is 4x the power: +log(4) in every bin that has a filter (the empty ones stay floored).
    wave = torch.from_numpy(tone_and_noise(1.0))[: SR // 4]
    diff = kaldi_fbank(2 * wave) - kaldi_fbank(wave)
    filled = torch.from_numpy(banks.sum(1) > 0)
    assert torch.allclose(diff[:, filled], torch.full_like(diff[:, filled], float(np.log(4.0))), atol=1e-4)
    assert torch.all(diff[:, ~filled] == 0)


def test_mel_banks_are_kaldi_triangles() -> None:
    banks = mel_banks()
    assert banks.shape == (128, 257)
    assert banks[:, -1].sum() == 0  # Nyquist bin unused
    assert banks.max() <= 1.0 and banks.min() == 0.0
    # At 128 bins some of the lowest filters fall between FFT bins and stay empty (Kaldi refuses this; torchaudio,
    # which the official code used, keeps them: their log energy is the floor).
    empty = np.flatnonzero(banks.sum(1) == 0)
    assert len(empty) >= 1 and empty.max() < 10


# --- windows and AST inputs ------------------------------------------------------------------------------------


def test_window_layout_is_the_official_one() -> None:
    layout = window_layout(duration_s=100.0)
    assert len(layout.centres) == 96
    assert layout.centres[:3].tolist() == [0.0, 2.5, 5.0] and layout.centres[-1] == 237.5
    spans = list(zip(layout.starts / SR, layout.ends / SR))
    assert spans[0] == (0.0, 5.0) and spans[1] == (0.0, 7.5) and spans[2] == (0.0, 10.0)
    assert spans[3] == (2.5, 12.5) and spans[-1] == (232.5, 240.0)
    # Valid <=> centre <= duration (centre 100.0 is valid, 102.5 is not).
    assert layout.mask.sum() == 41 and layout.mask[40] and not layout.mask[41]


@pytest.mark.parametrize(
    ("duration", "valid"), [(0.5, 1), (3.0, 2), (10.0, 5), (237.4, 95), (237.5, 96), (240.0, 96), (330.0, 96)]
)
def test_window_mask_counts(duration: float, valid: int) -> None:
    assert int(window_layout(duration).mask.sum()) == valid


def test_other_strides() -> None:
    assert len(window_layout(10.0, stride_s=5.0).centres) == 48
    assert len(window_layout(10.0, stride_s=7.5).centres) == 32


def test_window_inputs_match_transformers_feature_extractor() -> None:
    # ASTFeatureExtractor (without torchaudio it uses transformers' own numpy fbank) pads to 1024 frames and
    # normalises exactly as the official pipeline: an independent implementation of the same input.
    from transformers import ASTFeatureExtractor

    wave = tone_and_noise(10.0)
    for seconds in (10.0, 5.0, 7.5):
        part = wave[: int(seconds * SR)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "mel filter has all zero values": expected at 128 bins
            extractor = ASTFeatureExtractor()
            expected = extractor(part, sampling_rate=SR, return_tensors="np")["input_values"][0]
        ours = window_inputs(torch.from_numpy(part), np.array([0]), np.array([len(part)]))[0].numpy()
        assert ours.shape == (1024, 128)
        np.testing.assert_allclose(ours, expected, atol=2e-4, rtol=0)


def test_window_inputs_pad_before_normalising() -> None:
    wave = torch.from_numpy(tone_and_noise(5.0))
    inputs = window_inputs(wave, np.array([0]), np.array([len(wave)]))[0]
    padding = torch.tensor((0.0 - NORM_MEAN) / (NORM_STD * 2), dtype=torch.float32)
    assert torch.all(inputs[498:] == padding)  # 498 frames for 5 s; the zero padding is normalised too
    assert not torch.any(inputs[:498] == padding)


# --- encoder ---------------------------------------------------------------------------------------------------


def test_encode_shapes_mask_and_zero_padding(encoder: AstMusicEncoder) -> None:
    result = encoder.encode(tone_and_noise(30.0))
    assert isinstance(result, MusicTokens)
    tokens, mask = result
    assert tokens.shape == (96, TINY_AST_DIM) and tokens.dtype == np.float32
    assert mask.dtype == np.bool_ and mask.sum() == 13  # centres 0, 2.5, ..., 30
    assert np.all(tokens[~mask] == 0.0)
    assert np.all(np.abs(tokens[mask]).sum(axis=1) > 0)


def test_tokens_are_mean_of_cls_and_distillation_tokens(encoder: AstMusicEncoder, tiny_ast_dir: Path) -> None:
    from transformers import ASTFeatureExtractor, ASTModel

    wave = tone_and_noise(30.0, seed=3)
    tokens, _ = encoder.encode(wave)
    # Independent path: transformers' extractor on the window's samples, a separately loaded ASTModel.
    model = ASTModel.from_pretrained(tiny_ast_dir).eval()
    with warnings.catch_warnings():  # the extractor warns about the empty low filters at 128 bins
        warnings.simplefilter("ignore", UserWarning)
        inputs = ASTFeatureExtractor()(
            [wave[0 : 5 * SR], wave[15 * SR : 25 * SR]], sampling_rate=SR, return_tensors="pt"
        )["input_values"]
    with torch.no_grad():
        hidden = model(input_values=inputs).last_hidden_state
    expected = ((hidden[:, 0] + hidden[:, 1]) / 2).numpy()
    np.testing.assert_allclose(tokens[[0, 8]], expected, atol=2e-4, rtol=1e-3)  # windows centred at 0 s and 20 s


def test_batch_size_does_not_change_tokens(tiny_ast_dir: Path, encoder: AstMusicEncoder) -> None:
    wave = tone_and_noise(20.0, seed=1)
    one = AstMusicEncoder.from_pretrained(tiny_ast_dir, dtype="float32", batch_size=1).encode(wave)
    np.testing.assert_allclose(one.tokens, encoder.encode(wave).tokens, atol=1e-5)


def test_long_tracks_are_truncated_to_240_s(encoder: AstMusicEncoder) -> None:
    wave = np.tile(tone_and_noise(10.0, seed=2), 30)  # 300 s
    tokens, mask = encoder.encode(wave)
    assert mask.all()
    # The last window is [232.5, 240] s: cut at the horizon, not [232.5, 242.5].
    inputs = window_inputs(torch.from_numpy(wave[: 240 * SR]), np.array([232.5 * SR]), np.array([240 * SR]))
    with torch.inference_mode():
        hidden = encoder.model(input_values=inputs).last_hidden_state
    np.testing.assert_allclose(tokens[-1], ((hidden[0, 0] + hidden[0, 1]) / 2).numpy(), atol=1e-6)


def test_offset_starts_the_horizon_later(encoder: AstMusicEncoder) -> None:
    wave = tone_and_noise(40.0, seed=4)
    shifted = encoder.encode(wave, offset_s=10.0)
    direct = encoder.encode(wave[10 * SR :])
    assert shifted.mask.sum() == 13
    np.testing.assert_array_equal(shifted.tokens, direct.tokens)


def test_short_and_silent_tracks(encoder: AstMusicEncoder) -> None:
    short = encoder.encode(tone_and_noise(3.0))
    assert short.mask.tolist()[:3] == [True, True, False] and short.mask.sum() == 2
    silent = encoder.encode(np.zeros(20 * SR, dtype=np.float32))
    assert silent.mask.sum() == 9 and np.isfinite(silent.tokens).all()
    # Every window of silence sees the same input except for its length: the full 10 s ones are identical.
    np.testing.assert_array_equal(silent.tokens[2], silent.tokens[3])


def test_bf16_tokens_close_to_fp32(tiny_ast_dir: Path, encoder: AstMusicEncoder) -> None:
    wave = tone_and_noise(15.0, seed=5)
    bf16 = AstMusicEncoder.from_pretrained(tiny_ast_dir, dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    a, b = encoder.encode(wave).tokens[:7], bf16.encode(wave).tokens[:7]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99


# --- spec ------------------------------------------------------------------------------------------------------


def test_spec_of_the_official_model_is_the_default_music_spec() -> None:
    from transformers import ASTConfig, ASTModel

    with torch.device("meta"):  # real size, no memory: only the config matters for the spec
        model = ASTModel(ASTConfig())
    encoder = AstMusicEncoder(model, DEFAULT_AST, torch.device("cpu"), batch_size=4, stride_s=2.5)
    assert encoder.spec == MUSIC_SPEC
    other = AstMusicEncoder(model, DEFAULT_AST, torch.device("cpu"), batch_size=4, stride_s=5.0)
    assert other.spec == music_spec(5.0) and other.spec != MUSIC_SPEC


def test_default_model_from_the_cache_gives_the_default_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    # A random model with the official architecture stands in for the real checkpoint in a temporary hub cache.
    install_in_hf_cache(tmp_path, DEFAULT_AST, make_real_size_ast)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    encoder = AstMusicEncoder.from_pretrained()
    assert encoder.encoder_id == DEFAULT_AST and encoder.spec == MUSIC_SPEC
    tokens, mask = encoder.encode(tone_and_noise(2.0))  # one window at real size
    assert tokens.shape == (96, 768) and mask.sum() == 1 and np.isfinite(tokens).all()
    assert np.abs(tokens[0]).sum() > 0 and np.all(tokens[1:] == 0)


def test_spec_of_a_local_folder_names_its_weights(encoder: AstMusicEncoder, tiny_ast_dir: Path) -> None:
    spec = encoder.spec
    assert spec.encoder.startswith("local:sha256:") and spec.dim == TINY_AST_DIM
    assert spec != MUSIC_SPEC and spec.params == MUSIC_SPEC.params
    # Same folder, same id; an explicit id is recorded as given.
    again = AstMusicEncoder.from_pretrained(tiny_ast_dir, dtype="float32")
    assert again.spec == spec
    named = AstMusicEncoder.from_pretrained(tiny_ast_dir, dtype="float32", encoder_id="me/tiny-ast")
    assert named.spec.encoder == "me/tiny-ast"


def test_bare_ast_model_folder_loads_like_the_classifier_one(tmp_path: Path, encoder: AstMusicEncoder) -> None:
    bare = AstMusicEncoder.from_pretrained(make_tiny_ast(tmp_path / "bare", with_classifier=False), dtype="float32")
    wave = tone_and_noise(12.0)
    # Same seed, same backbone weights: the classifier head is ignored.
    np.testing.assert_array_equal(bare.encode(wave).tokens, encoder.encode(wave).tokens)


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("waveform", "kwargs", "message"),
    [
        (np.zeros(0, np.float32), {}, "empty waveform"),
        (np.zeros((2, SR), np.float32), {}, "must be mono with shape [samples], got shape [2, 16000]"),
        (np.zeros(SR, np.int16), {}, "must hold float samples in [-1, 1], got dtype int16"),
        (np.full(SR, np.nan, np.float32), {}, "NaN or infinite"),
        (np.full(SR, 20000.0, np.float32), {}, "peaks at 20000: expected float samples in [-1, 1]"),
        ([0.0] * SR, {}, "must be a numpy array, got list"),
        (np.zeros(SR, np.float32), {"sample_rate": 44100}, "AST needs 16000 Hz audio, got 44100 Hz"),
        (np.zeros(SR, np.float32), {"offset_s": 1.0}, "offset_s must be in [0, 1) s"),
        (np.zeros(SR, np.float32), {"offset_s": -2.0}, "offset_s must be in [0, 1) s"),
    ],
)
def test_bad_waveforms_name_the_source(encoder: AstMusicEncoder, waveform, kwargs, message) -> None:
    with pytest.raises(InputError) as info:
        encoder.encode(waveform, source="song.ogg", **kwargs)
    assert str(info.value).startswith("song.ogg: ")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stride_s": 3.3}, "stride_s must divide 240 s into whole windows"),
        ({"stride_s": 0.25}, "must be a multiple of 0.5 s"),
        ({"batch_size": 0}, "batch_size: must be at least 1"),
        ({"dtype": "float16"}, "unknown dtype 'float16'"),
    ],
)
def test_bad_options(tiny_ast_dir: Path, kwargs, message) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        AstMusicEncoder.from_pretrained(tiny_ast_dir, **kwargs)


def test_loading_a_clip_folder_as_ast_is_refused(tmp_path: Path) -> None:
    folder = make_tiny_clip(tmp_path / "clip")
    with pytest.raises(InputError, match="holds a 'clip' model, expected one of 'audio-spectrogram-transformer'"):
        AstMusicEncoder.from_pretrained(folder)


def test_claiming_the_official_id_needs_the_official_architecture(tiny_ast_dir: Path) -> None:
    with pytest.raises(InputError) as info:
        AstMusicEncoder.from_pretrained(tiny_ast_dir, encoder_id=DEFAULT_AST)
    assert f"claims to be {DEFAULT_AST} but its architecture differs: hidden_size=32 (expected 768)" in str(info.value)


def test_uncached_hub_id_explains_what_to_do() -> None:
    with pytest.raises(InputError) as info:
        AstMusicEncoder.from_pretrained("mgsv-tests/no-such-ast-model")
    message = str(info.value)
    assert message.startswith("mgsv-tests/no-such-ast-model: model not found in the local Hugging Face cache")
    assert "run once with network access" in message and "pass a local directory" in message


def test_decoding_choices_are_options_the_spec_records(tiny_ast_dir: Path) -> None:
    other = AstMusicEncoder.from_pretrained(tiny_ast_dir, dtype="float32", channel="mean", resampler="soxr")
    assert other.spec.params == music_spec(channel="mean", resampler="soxr").params
    assert other.decode_options == {"channel": "mean", "resampler": "soxr"}
    default = AstMusicEncoder.from_pretrained(tiny_ast_dir, dtype="float32")
    assert default.decode_options == {"channel": 0, "resampler": "sinc"}
    with pytest.raises(InputError, match="channel: channel must be 0"):
        AstMusicEncoder.from_pretrained(tiny_ast_dir, channel="left")
    with pytest.raises(InputError, match="resampler: resampler must be one of"):
        AstMusicEncoder.from_pretrained(tiny_ast_dir, resampler="linear")
