"""Feature specs: canonical form, fingerprints, compatibility errors and the paper's default specs."""

from __future__ import annotations

import json

import pytest

from mgsv.errors import InputError, SpecMismatchError
from mgsv.features.spec import (
    DEFAULT_SPECS,
    MUSIC_SPEC,
    VIDEO_SPEC,
    FeatureSpec,
    decode_options,
    music_spec,
    video_spec,
)


def test_default_specs_describe_the_papers_pipeline() -> None:
    assert (VIDEO_SPEC.encoder, VIDEO_SPEC.dim, VIDEO_SPEC.max_tokens) == ("openai/clip-vit-base-patch32", 512, 50)
    assert VIDEO_SPEC.params["fps"] == 1 and VIDEO_SPEC.params["token"] == "image_embeds"
    assert VIDEO_SPEC.params["mean"] == [0.48145466, 0.4578275, 0.40821073]
    assert (MUSIC_SPEC.encoder, MUSIC_SPEC.dim, MUSIC_SPEC.max_tokens) == (
        "MIT/ast-finetuned-audioset-10-10-0.4593",
        768,
        96,
    )
    assert MUSIC_SPEC.params["stride_s"] == 2.5 and MUSIC_SPEC.params["norm_mean"] == -4.2677393
    assert MUSIC_SPEC.params["norm_std"] == 4.5689974 and MUSIC_SPEC.params["target_frames"] == 1024
    assert DEFAULT_SPECS == {"video": VIDEO_SPEC, "music": MUSIC_SPEC}


def test_fingerprints_are_pinned() -> None:
    # A changed fingerprint makes every stored feature incompatible: change these only on purpose (and bump version).
    # Version 2 (issue 15) records the audio channel, the resampler, frame times, frame decoding and JPEG; the
    # version-1 specs were d9f7a2bb9b7f (video) and 4b957feb73ea (music).
    assert VIDEO_SPEC.version == MUSIC_SPEC.version == 2
    assert VIDEO_SPEC.fingerprint() == "7e5b56895fec"
    assert MUSIC_SPEC.fingerprint() == "6df165caaf4b"


def test_music_spec_strides() -> None:
    assert [music_spec(s).max_tokens for s in (2.5, 5.0, 7.5, 10.0)] == [96, 48, 32, 24]
    assert music_spec(5).fingerprint() == music_spec(5.0).fingerprint()
    assert music_spec(5.0).fingerprint() != MUSIC_SPEC.fingerprint()
    with pytest.raises(ValueError, match="whole windows"):
        music_spec(7.0)
    with pytest.raises(ValueError, match="whole windows"):
        music_spec(0)


def test_round_trip_and_canonical_params() -> None:
    spec = FeatureSpec("video", "my/encoder", 8, 4, params={"b": 1, "a": [1.5, 2]}, version=3)
    data = spec.to_dict()
    assert list(data) == ["modality", "encoder", "dim", "max_tokens", "params", "version"]
    assert list(data["params"]) == ["a", "b"]
    again = FeatureSpec.from_dict(json.loads(json.dumps(data)))
    assert again == spec and again.fingerprint() == spec.fingerprint() and hash(again) == hash(spec)
    # A tuple and a list are the same JSON value, hence the same spec.
    assert FeatureSpec("video", "my/encoder", 8, 4, params={"a": (1.5, 2), "b": 1}, version=3) == spec


def test_fingerprint_covers_every_field() -> None:
    base = FeatureSpec("music", "enc", 8, 4, params={"x": 1})
    variants = [
        FeatureSpec("video", "enc", 8, 4, params={"x": 1}),
        FeatureSpec("music", "enc2", 8, 4, params={"x": 1}),
        FeatureSpec("music", "enc", 9, 4, params={"x": 1}),
        FeatureSpec("music", "enc", 8, 5, params={"x": 1}),
        FeatureSpec("music", "enc", 8, 4, params={"x": 2}),
        FeatureSpec("music", "enc", 8, 4, params={"x": 1}, version=2),
    ]
    prints = {base.fingerprint()} | {v.fingerprint() for v in variants}
    assert len(prints) == 7 and all(len(p) == 12 for p in prints)


def test_check_compatible_names_the_differences() -> None:
    other = FeatureSpec("music", MUSIC_SPEC.encoder, 768, 48, params={**MUSIC_SPEC.params, "stride_s": 5.0, "extra": 1})
    MUSIC_SPEC.check_compatible(MUSIC_SPEC, what="x")
    with pytest.raises(SpecMismatchError) as info:
        MUSIC_SPEC.check_compatible(other, what="checkpoint run1")
    message = str(info.value)
    assert message.startswith("checkpoint run1: feature spec mismatch for music")
    assert "max_tokens: 96 != 48" in message
    assert "params.stride_s: 2.5 != 5.0" in message
    assert "params.extra: (absent) != 1" in message
    assert "encoder" not in message and "dim" not in message


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([1, 2], "must be an object"),
        ({"modality": "video"}, "missing field(s) encoder, dim, max_tokens, params, version"),
        ({**VIDEO_SPEC.to_dict(), "colour": "red"}, "unknown field(s) colour"),
        ({**VIDEO_SPEC.to_dict(), "dim": -1}, "dim must be a positive integer"),
        ({**VIDEO_SPEC.to_dict(), "modality": "text"}, "modality must be one of"),
        ({**VIDEO_SPEC.to_dict(), "params": "fps=1"}, "params must be an object"),
    ],
)
def test_from_dict_rejects_malformed(data: object, problem: str) -> None:
    with pytest.raises(InputError) as info:
        FeatureSpec.from_dict(data, where="store/manifest.json")
    assert str(info.value).startswith("store/manifest.json: ")
    assert problem in str(info.value)


def test_constructor_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="no NaN"):
        FeatureSpec("video", "enc", 8, 4, params={"x": float("nan")})
    with pytest.raises(ValueError, match="encoder"):
        FeatureSpec("video", "", 8, 4)
    with pytest.raises(ValueError, match="max_tokens"):
        FeatureSpec("video", "enc", 8, True)


# ----------------------------------------------------------------------------- recorded preprocessing choices


def test_the_official_choices_are_the_defaults_and_others_are_recorded() -> None:
    assert (MUSIC_SPEC.params["channel"], MUSIC_SPEC.params["resampler"]) == (0, "sinc")
    assert (VIDEO_SPEC.params["frame_times"], VIDEO_SPEC.params["jpeg_quality"]) == ("cv2", None)
    variants = [music_spec(channel="mean"), music_spec(resampler="soxr"), music_spec(channel=1)]
    assert len({MUSIC_SPEC.fingerprint(), *(v.fingerprint() for v in variants)}) == 4
    assert video_spec(frame_times="shown") != VIDEO_SPEC and video_spec(jpeg_quality=95) != VIDEO_SPEC
    assert decode_options(MUSIC_SPEC) == {"channel": 0, "resampler": "sinc"}
    assert decode_options(video_spec(jpeg_quality=90)) == {"frame_times": "cv2", "jpeg_quality": 90,
                                                           "max_short_side": 224}
    assert decode_options(video_spec(image_size=336))["max_short_side"] == 336


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: music_spec(channel=-1), "channel must be 0"),
        (lambda: music_spec(channel=True), "channel must be 0"),
        (lambda: music_spec(resampler="linear"), "resampler must be one of 'sinc', 'soxr'"),
        (lambda: video_spec(frame_times="nearest"), "frame_times must be one of 'cv2', 'shown'"),
        (lambda: video_spec(jpeg_quality=0), "jpeg_quality must be None"),
    ],
)
def test_bad_choices_are_refused(make, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        make()


def test_a_different_choice_is_named_with_how_to_re_make_the_features() -> None:
    with pytest.raises(SpecMismatchError) as info:
        MUSIC_SPEC.check_compatible(music_spec(channel="mean", resampler="soxr"), what="checkpoint c vs store s")
    message = str(info.value)
    assert "params.channel: 0 != 'mean'" in message and "params.resampler: 'sinc' != 'soxr'" in message
    assert "made with channel='mean' where channel=0 is expected" in message
    assert "made with resampler='soxr' where resampler='sinc' is expected" in message
    assert "mgsv library reindex" in message and "mgsv data import" in message  # the generic ways out
    # A side that knows how its features are re-made says so instead.
    stored = music_spec(channel="mean").with_remedy("To re-make them: run X.")
    with pytest.raises(SpecMismatchError, match=r"(?s)expected.*run X\.$"):
        MUSIC_SPEC.check_compatible(stored)


def old_spec(spec: FeatureSpec, drop: tuple[str, ...]) -> FeatureSpec:
    """The same spec as mgsv recorded it before version 2."""
    return FeatureSpec.from_dict({**spec.to_dict(), "version": 1,
                                  "params": {k: v for k, v in spec.params.items() if k not in drop}})


def test_specs_of_version_1_are_refused_with_the_way_out() -> None:
    old_music = old_spec(MUSIC_SPEC, ("channel", "resampler"))
    assert old_music.fingerprint() == "4b957feb73ea"  # exactly what version-1 stores and checkpoints hold
    old_video = old_spec(VIDEO_SPEC, ("frame_times", "frame_decode", "jpeg_quality"))
    assert old_video.fingerprint() == "d9f7a2bb9b7f"
    with pytest.raises(SpecMismatchError) as info:
        MUSIC_SPEC.check_compatible(old_music.with_remedy("Re-index LIB."), what="checkpoint vs library LIB")
    message = str(info.value)
    assert "version: 2 != 1" in message and "params.channel: 0 != (absent)" in message
    assert "mean of all channels" in message and message.endswith("Re-index LIB.")
    # The other way round (an old checkpoint, a new store), the old side is named: the checkpoint.
    new_store = MUSIC_SPEC.with_remedy("Re-extract the store.")
    with pytest.raises(SpecMismatchError) as info:
        old_music.check_compatible(new_store, what="store vs old checkpoint")
    assert "mgsv convert" in str(info.value) and "Re-extract the store." not in str(info.value)
    with pytest.raises(SpecMismatchError, match="pre-scaled to 720 px"):
        VIDEO_SPEC.check_compatible(old_video)
    with pytest.raises(SpecMismatchError, match="does not record how the music was decoded"):
        decode_options(old_music)


def test_the_remedy_is_neither_stored_nor_compared() -> None:
    hinted = MUSIC_SPEC.with_remedy("somewhere")
    assert hinted == MUSIC_SPEC and hinted.fingerprint() == MUSIC_SPEC.fingerprint()
    assert "remedy" not in hinted.to_dict() and FeatureSpec.from_dict(hinted.to_dict()).remedy == ""
