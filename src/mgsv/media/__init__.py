"""Media in and out: decode query videos and music (`decode`), describe files (`probe`), render results (`render`).
The limits every door applies to an input video are in `mgsv.limits`."""

from mgsv.media.decode import MAX_FRAMES, VideoFrames, is_silent, read_audio, read_audio_channels, read_video_frames
from mgsv.media.probe import MediaInfo, probe

__all__ = [
    "MAX_FRAMES",
    "MediaInfo",
    "VideoFrames",
    "is_silent",
    "probe",
    "read_audio",
    "read_audio_channels",
    "read_video_frames",
]
