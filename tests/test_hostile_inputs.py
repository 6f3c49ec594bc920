"""Hostile and careless inputs (issue 11), each run through the console script and, where it applies, the service.

The corpus: symbolic link loops, outputs that are an input under another name, truncated WAVs, still images and
single frames given as videos, frames beyond 8192 x 8192, nan / inf / negative option values, BOMs, empty folders,
unreadable weights, control characters in file names, a run folder given as a checkpoint, an empty multipart body
and an upload while another process writes the library. Every case asserts the message (naming the file or the
option), the exit code or HTTP status, that no traceback leaks, and that no input was changed (hashes before and
after).

Root reads chmod-000 files, so the permission cases run unprivileged: as the user running the tests when that is
not root, otherwise as root without the capabilities that bypass file permissions (CAP_DAC_OVERRIDE,
CAP_DAC_READ_SEARCH, dropped by util-linux's `setpriv`), otherwise as the user `nobody`; they are skipped, saying
why, only when none of these can be set up.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import typer.main
from grounding_factory import TinySetup, make_tiny_setup
from media_factory import write_test_video, write_tone, write_truncated_copy
from PIL import Image
from serve_factory import ADMIN_TOKEN, API_TOKEN, ServeLibrary, bearer, ready_client
from typer.testing import CliRunner

from mgsv.atomic_io import make_temp_dir
from mgsv.cli import app
from mgsv.cli.numbers import Number
from mgsv.data.annotations import COLUMNS
from mgsv.models.checkpoint import load_checkpoint, save_checkpoint
from mgsv.search.library import MusicLibrary

DOCS = Path(__file__).resolve().parents[1] / "docs"
AUTH = bearer(API_TOKEN)
ADMIN = bearer(ADMIN_TOKEN)


# ------------------------------------------------------------------------------------------------ helpers


@dataclass
class Run:
    """A finished `python -m mgsv ...`: exit code, stdout, stderr."""

    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        """stdout + stderr with rich's box drawing removed and whitespace collapsed (messages may wrap)."""
        return " ".join(re.sub("[│╭╮╰╯─┃┏┓┗┛━]", " ", self.out + "\n" + self.err).split())

    def json(self) -> dict:
        return json.loads(self.out)


def mgsv(*args: object, prefix: tuple[str, ...] = (), umask: int | None = None, env: dict | None = None) -> Run:
    """Run the console script (`sys.executable -m mgsv`, as installed); no run may print a traceback."""
    environment = {**os.environ, "COLUMNS": "200", **(env or {})}
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "mgsv", *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        preexec_fn=None if umask is None else (lambda: os.umask(umask)),
        check=False,
        timeout=600,
    )
    run = Run(result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in run.err, run.err
    return run


def hashes(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under `roots` (links not followed): compared before and after a hostile run."""
    digests = {}
    for root in roots:
        paths = [root] if not root.is_dir() else sorted(p for p in root.rglob("*"))
        for path in paths:
            if path.is_symlink():
                digests[str(path)] = "link -> " + os.readlink(path)
            elif path.is_file():
                digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def loop_pair(folder: Path, first: str, second: str) -> None:
    """Two symbolic links that point at each other (following them never ends)."""
    (folder / first).symlink_to(second)
    (folder / second).symlink_to(first)


def write_huge_video(path: Path) -> Path:
    """One 8200x8200 frame (beyond 8192x8192), MJPEG in Matroska: cheap to write, refused before decoding."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=1)
        stream.width = stream.height = 8200
        stream.pix_fmt = "yuvj420p"
        frame = av.VideoFrame(8200, 8200, "yuvj420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@dataclass
class Corpus:
    """Tiny models, media and a one-track library shared by the tests of this module (copy before changing)."""

    setup: TinySetup
    root: Path
    video: Path  # 3 s, with a soundtrack
    tone: Path  # 20 s Ogg Vorbis
    library: Path  # holds `tone`

    def ground(self, *args: object, library: Path | None = None, **options) -> Run:
        return mgsv("ground", *args, "-l", library or self.library, "-c", self.setup.checkpoint, "--clip",
                    self.setup.clip_dir, "--dtype", "fp32", **options)  # fmt: skip

    def add(self, *args: object, library: Path, **options) -> Run:
        return mgsv("library", "add", *args, "-l", library, "--ast", self.setup.ast_dir, "--dtype", "fp32", **options)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("hostile")
    setup = make_tiny_setup(root / "models")
    (root / "media").mkdir()
    video = write_test_video(root / "media" / "video.mp4", seconds=3, fps=5)
    tone = write_tone(root / "media" / "tone.ogg", seconds=20, freq=330)
    library = MusicLibrary.create(root / "library", setup.music_spec)
    report = library.add_files([tone], setup.ast())
    assert report.ok and len(report.added) == 1
    return Corpus(setup, root, video, tone, library.root)


@pytest.fixture()
def library_copy(corpus: Corpus, tmp_path: Path) -> Path:
    return Path(shutil.copytree(corpus.library, tmp_path / "library"))


# ------------------------------------------------------------------------------------- 1. symbolic link loops


def test_symlink_loops_are_one_failure_each_and_the_batch_goes_on(corpus: Corpus, tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    shutil.copyfile(corpus.tone, music / "good.ogg")
    loop_pair(music, "a.ogg", "b.ogg")
    (music / "self.ogg").symlink_to("self.ogg")
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copyfile(corpus.video, videos / "good.mp4")
    loop_pair(videos, "x.mp4", "y.mp4")
    before = hashes(music, videos)

    # library add: a loop inside a folder and one named on the command line
    library = tmp_path / "lib"
    run = corpus.add(music, music / "a.ogg", library=library)
    assert run.code == 1
    for name in ("a.ogg", "b.ogg", "self.ogg"):
        assert f"{music / name}: symbolic link loop" in run.text
    assert "added 1 track(s)" in run.text and "3 failed" in run.text  # a.ogg once, though named twice
    assert [t["id"] for t in mgsv("library", "list", "-l", library, "--json").json()] == ["good"]

    # ground: the good video is grounded, each loop is a failure
    run = corpus.ground(videos, videos / "x.mp4", "--json")
    assert run.code == 1
    report = run.json()
    assert [Path(r["video"]).name for r in report["results"]] == ["good.mp4"] and report["results"][0]["moments"]
    assert {Path(f["path"]).name: f["reason"].split(" (")[0] for f in report["failures"]} == {
        "x.mp4": "symbolic link loop",
        "y.mp4": "symbolic link loop",
    }

    # extract: both modalities
    run = mgsv("extract", "--store", tmp_path / "store", "--videos", videos, "--music", music, "--clip",
               corpus.setup.clip_dir, "--ast", corpus.setup.ast_dir, "--dtype", "fp32", "--json")  # fmt: skip
    assert run.code == 1
    report = run.json()
    assert report["modalities"]["video"]["encoded"] == 1 and report["modalities"]["music"]["encoded"] == 1
    problems = {Path(p["path"]).name: p["reason"] for p in report["input_problems"]}
    assert set(problems) == {"x.mp4", "y.mp4", "a.ogg", "b.ogg", "self.ogg"}
    assert all(reason.startswith("symbolic link loop") for reason in problems.values())
    assert hashes(music, videos) == before


# ------------------------------------------------------------------------- 2. an output that is an input


def test_render_refuses_an_output_that_is_any_input_under_any_name(corpus: Corpus, tmp_path: Path) -> None:
    song = tmp_path / "song.mp4"  # music in an MP4 container, as in the issue
    shutil.copyfile(write_tone(tmp_path / "song.m4a", seconds=10), song)
    video = Path(shutil.copyfile(corpus.video, tmp_path / "video.mp4"))
    (tmp_path / "song-link.mp4").symlink_to(song.name)
    os.link(song, tmp_path / "song-hard.mp4")
    os.link(video, tmp_path / "video-hard.mkv")
    (tmp_path / "video-link.mp4").symlink_to(video)
    before = hashes(tmp_path)
    cases = {
        "song.mp4": "music track",
        "song-link.mp4": "music track",
        "song-hard.mp4": "music track",
        "video.mp4": "video",
        "video-link.mp4": "video",
        "video-hard.mkv": "video",
    }
    for name, role in cases.items():
        run = mgsv("render", video, "-t", song, "-s", "0", "-o", tmp_path / name, "--force")
        assert run.code == 1, (name, run.text)
        assert f"{tmp_path / name}: the output would overwrite the input {role}" in run.text
    assert hashes(tmp_path) == before
    # A fresh name still renders (the refusal is about the same file, not about the folder).
    assert mgsv("render", video, "-t", song, "-s", "0", "-o", tmp_path / "out.mp4").code == 0


def test_ground_render_refuses_to_overwrite_the_track_it_found(corpus: Corpus, tmp_path: Path) -> None:
    track = tmp_path / "track.mp4"
    shutil.copyfile(write_tone(tmp_path / "track.m4a", seconds=12, freq=220), track)
    library = tmp_path / "lib"
    assert corpus.add(track, library=library).code == 0  # named explicitly: taken whatever its suffix
    os.link(track, tmp_path / "render.mp4")
    before = hashes(track)
    run = corpus.ground(corpus.video, "--render", tmp_path / "render.mp4", "--force", "--json", library=library)
    assert run.code == 1
    (failure,) = run.json()["failures"]
    assert failure["path"] == str(corpus.video)
    assert "the output would overwrite the input music track" in failure["reason"]
    assert hashes(track) == before


# --------------------------------------------------------------------------------------- 3. permissions


def tree_modes(root: Path) -> set[tuple[str, int]]:
    """("dir" or "file", permission bits) of everything under `root`, and of `root`."""
    kinds = set()
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        kinds.add(("dir" if stat.S_ISDIR(mode) else "file", stat.S_IMODE(mode)))
    return kinds


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_new_libraries_and_track_indexes_follow_the_umask(corpus: Corpus, tmp_path: Path, umask: int) -> None:
    library = tmp_path / "lib"
    assert corpus.add(corpus.tone, library=library, umask=umask).code == 0
    if umask == 0o022:  # the track index too (built by the first grounding)
        assert corpus.ground(corpus.video, "--json", library=library, umask=umask).code == 0
        assert (library / "index").is_dir()
    assert tree_modes(library) == {("dir", 0o777 & ~umask), ("file", 0o666 & ~umask)}


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask-022", "umask-077"])
def test_checkpoints_and_staged_folders_follow_the_umask(corpus: Corpus, tmp_path: Path, umask: int) -> None:
    model, _ = load_checkpoint(corpus.setup.checkpoint)
    previous = os.umask(umask)
    try:
        saved = save_checkpoint(model, tmp_path / "ck", feature_specs={})
        replaced = save_checkpoint(model, tmp_path / "ck", feature_specs={}, overwrite=True)  # the retire path
        staged = make_temp_dir(tmp_path / "eval-out")
    finally:
        os.umask(previous)
    assert saved == replaced
    assert tree_modes(saved) == {("dir", 0o777 & ~umask), ("file", 0o666 & ~umask)}
    assert stat.S_IMODE(staged.stat().st_mode) == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ck", staged.name])  # nothing else left behind


def _probe_unprivileged(prefix: list[str], base: Path) -> str | None:
    """None if `prefix` runs this interpreter and mgsv but cannot read a chmod-000 file; else why not."""
    secret = base / "probe-secret"
    secret.write_text("x")
    secret.chmod(0)
    code = "import sys, mgsv\ntry:\n    open(sys.argv[1]).read()\nexcept PermissionError:\n    sys.exit(0)\nsys.exit(3)"
    try:
        result = subprocess.run([*prefix, sys.executable, "-c", code, str(secret)], capture_output=True, text=True,
                                check=False, timeout=120)  # fmt: skip
    except OSError as exc:
        return f"{' '.join(prefix[:1])}: {exc}"
    finally:
        secret.unlink()
    if result.returncode == 3:
        return "it can still read a chmod-000 file"
    if result.returncode != 0:
        return (result.stderr.strip().splitlines() or ["failed"])[-1]
    return None


@pytest.fixture(scope="module")
def unprivileged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[tuple[str, ...], Path]]:
    """(command prefix, a folder it may use) to run a command without the power to read chmod-000 files."""
    base = Path(tempfile.mkdtemp(prefix="mgsv-hostile-"))
    base.chmod(0o755)  # reachable by `nobody` too
    try:
        if os.geteuid() != 0:
            yield (), base
            return
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root, and util-linux's setpriv (to drop root's file-permission override) is missing")
        reasons = []
        caps = "-dac_override,-dac_read_search"
        for prefix in (
            [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"],
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"],
        ):
            reason = _probe_unprivileged(prefix, base)
            if reason is None:
                yield tuple(prefix), base
                return
            reasons.append(f"{' '.join(prefix[1:])}: {reason}")
        pytest.skip("no way to run unprivileged here (" + "; ".join(reasons) + ")")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_unreadable_weights_say_permission_denied_naming_the_file(
    corpus: Corpus, unprivileged: tuple[tuple[str, ...], Path]
) -> None:
    prefix, base = unprivileged
    models = Path(shutil.copytree(corpus.setup.clip_dir.parent, base / "models"))
    library = Path(shutil.copytree(corpus.library, base / "library"))
    video = Path(shutil.copyfile(corpus.video, base / "video.mp4"))
    tone = Path(shutil.copyfile(corpus.tone, base / "tone.ogg"))
    for path in [base, *base.rglob("*")]:  # everything usable by whoever runs the command (also `nobody`)...
        path.chmod(0o777 if path.is_dir() else 0o666)
    ast, clip, checkpoint = models / "ast", models / "clip", models / "checkpoint"
    before = hashes(base)

    def run_as_user(*args: object, umask: int | None = None) -> Run:
        return mgsv(*args, prefix=prefix, umask=umask, env={"HOME": str(base)})

    def unreadable(path: Path, *args: object) -> Run:  # ...but one file at a time
        path.chmod(0)
        try:
            return run_as_user(*args)
        finally:
            path.chmod(0o666)

    ground = ("ground", video, "-l", library, "--dtype", "fp32")
    for path, args in [
        (ast / "model.safetensors", ("library", "add", tone, "-l", base / "new-library", "--ast", ast)),
        (ast / "config.json", ("library", "add", tone, "-l", base / "new-library", "--ast", ast)),
        (clip / "model.safetensors", (*ground, "-c", checkpoint, "--clip", clip)),
        (checkpoint / "model.safetensors", (*ground, "-c", checkpoint, "--clip", clip)),
        (checkpoint / "config.json", (*ground, "-c", checkpoint, "--clip", clip)),
    ]:
        run = unreadable(path, *args)
        assert run.code == 1 and f"{path}: permission denied" in run.text, run.text
        assert "No such file" not in run.text
    assert not (base / "new-library").exists()
    assert hashes(base) == before
    # With every file readable, the same user builds a library, readable by others under umask 022.
    run = run_as_user("library", "add", tone, "-l", base / "new-library", "--ast", ast, "--dtype", "fp32", umask=0o022)
    assert run.code == 0, run.text
    assert tree_modes(base / "new-library") == {("dir", 0o755), ("file", 0o644)}


# --------------------------------------------------------------------------------------- 4. empty folders


def test_an_empty_folder_is_named_not_ignored(corpus: Corpus, tmp_path: Path, library_copy: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no media here")  # a folder with nothing of the kind counts as empty
    run = corpus.ground(empty, library=library_copy)
    assert run.code == 1 and f"{empty}: no video files in this folder" in run.text
    run = corpus.ground(empty, corpus.video, "--json", library=library_copy)
    assert run.code == 1
    report = run.json()
    assert len(report["results"]) == 1
    assert [(f["path"], f["reason"].split(" (")[0]) for f in report["failures"]] == [
        (str(empty), "no video files in this folder")
    ]
    run = corpus.add(write_tone(tmp_path / "other.ogg", seconds=8, freq=550), empty, library=library_copy)
    assert run.code == 1 and "added 1 track(s)" in run.text and f"{empty}: no music files in this folder" in run.text
    run = mgsv("extract", "--store", tmp_path / "store", "--music", corpus.tone, "--music", empty, "--ast",
               corpus.setup.ast_dir, "--dtype", "fp32", "--json")  # fmt: skip
    assert run.code == 1 and run.json()["modalities"]["music"]["encoded"] == 1
    assert [p["path"] for p in run.json()["input_problems"]] == [str(empty)]


# ---------------------------------------------------------------------------------- 5. a truncated WAV


def truncated_pair(folder: Path) -> tuple[Path, Path, Path]:
    """In `folder`: a WAV whose header says 40 s with 4 s of data, the same cut FLAC, and the complete WAV."""
    sources = folder.parent / f"{folder.name}-sources"
    sources.mkdir(parents=True)
    folder.mkdir(parents=True, exist_ok=True)
    wav = write_tone(sources / "full.wav", seconds=40, sample_rate=16000, channels=1)
    flac = write_tone(sources / "full.flac", seconds=40, sample_rate=16000, channels=1)
    return (
        write_truncated_copy(wav, folder / "cut.wav", 0.1),
        write_truncated_copy(flac, folder / "cut.flac", 0.1),
        Path(shutil.copyfile(wav, folder / "full.wav")),
    )


def test_a_truncated_wav_is_refused_like_a_truncated_flac(corpus: Corpus, tmp_path: Path) -> None:
    _, _, full_wav = truncated_pair(tmp_path / "music")
    before = hashes(tmp_path / "music")
    run = corpus.add(tmp_path / "music", "--json", library=tmp_path / "lib")
    assert run.code == 1
    report = run.json()
    assert [t["path"] for t in report["added"]] == [str(full_wav)]
    reasons = {Path(f["path"]).name: f["reason"] for f in report["failures"]}
    assert set(reasons) == {"cut.wav", "cut.flac"}
    for reason in reasons.values():
        assert reason.startswith("truncated or damaged: the header says 40.0 s but only")
    assert hashes(tmp_path / "music") == before


# ------------------------------------------------------------------- 6 + 7. not a video; one size limit


def not_videos(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files no door may take as a video, with the words of the refusal."""
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / "still.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(png)
    return {
        "still.png": (png, "is a still image (png), not a video"),
        "one-frame.mp4": (
            write_test_video(folder / "one-frame.mp4", seconds=0.04, fps=25),
            "the video is 0.04 s long; a video must last at least 0.5 s",
        ),
        "huge.mkv": (write_huge_video(folder / "huge.mkv"), "frames of 8200x8200 are too large to decode"),
    }


def test_still_images_single_frames_and_huge_frames_are_refused_by_ground_and_render(
    corpus: Corpus, tmp_path: Path, library_copy: Path
) -> None:
    cases = not_videos(tmp_path / "in")
    before = hashes(tmp_path / "in")
    run = corpus.ground(*(path for path, _ in cases.values()), corpus.video, "--json", library=library_copy)
    assert run.code == 1
    report = run.json()
    assert [r["video"] for r in report["results"]] == [str(corpus.video)]
    reasons = {Path(f["path"]).name: f["reason"] for f in report["failures"]}
    assert set(reasons) == set(cases)
    for name, (_, words) in cases.items():
        assert reasons[name].startswith(words), reasons[name]
        out = tmp_path / f"{name}.out.mp4"
        run = mgsv("render", cases[name][0], "-t", corpus.tone, "-s", "0", "-o", out)
        assert run.code == 1 and f"{cases[name][0]}: {words}" in run.text and not out.exists()
    assert hashes(tmp_path / "in") == before


# ----------------------------------------------------------------------------- 8. numeric option values


def numeric_options() -> list[tuple[list[str], str, type, Number]]:
    """(command path, option name, int or float, its parser) for every numeric option of every command."""
    found = []

    def walk(command, path: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        for param in command.params:
            descriptor = getattr(param, "type_descriptor", None)
            if descriptor is not None and descriptor.annotation in (int, float):
                found.append((path, param.opts[0], descriptor.annotation, descriptor.parameter_info.parser))

    walk(typer.main.get_command(app), [])
    return found


def test_every_numeric_option_is_declared_with_a_range() -> None:
    options = numeric_options()
    assert len(options) >= 30  # the walk found them (34 when this test was written)
    for path, name, kind, parser in options:
        where = f"mgsv {' '.join(path)} {name}"
        assert isinstance(parser, Number), f"{where} is not declared with mgsv.cli.numbers.number_option"
        assert parser.kind is kind, where
        if parser.accepts(-1):  # a negative value must be meaningful, and then declared so explicitly
            assert parser.min is not None and parser.min < 0, where


HOSTILE_VALUES = ["nan", "inf", "-inf", "1e999", "NaN", "abc", "-1", "1.5", "99999999999999999999999"]


@pytest.mark.parametrize(("path", "name", "kind", "parser"), numeric_options(),
                         ids=lambda v: v if isinstance(v, str) else None)  # fmt: skip
def test_every_numeric_option_refuses_bad_values_as_typed(path: list[str], name: str, kind: type, parser: Number):
    # In process (the same parser the console script runs; tests below run the cases through the script).
    runner = CliRunner()
    for value in HOSTILE_VALUES:
        try:
            number = float(value)
            acceptable = np.isfinite(number) and parser.accepts(number) and (kind is float or number.is_integer())
        except ValueError:
            acceptable = False
        if acceptable:
            continue
        result = runner.invoke(app, [*path, name, value], env={"COLUMNS": "300"})
        text = " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())
        assert result.exit_code == 2, (path, name, value, text, result.exception)
        assert isinstance(result.exception, SystemExit), result.exception  # no ValueError / OverflowError
        assert f"Invalid value for '{name}'" in text and f": {parser.with_unit(value)}: " in text, text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--max-upload-mb", "nan"], "'--max-upload-mb': nan MB: not a finite number"),
        (["serve", "--max-upload-mb", "inf"], "'--max-upload-mb': inf MB: not a finite number"),
        (["serve", "--max-upload-mb", "-1"], "'--max-upload-mb': -1 MB: must be more than 0"),
        (["serve", "--keep-uploads-minutes", "-5"], "'--keep-uploads-minutes': -5 min: must be more than 0"),
        (["serve", "--max-video-seconds", "1e999"], "'--max-video-seconds': 1e999 s: not a finite number"),
        (["ground", "--window", "nan"], "'--window': nan s: not a finite number"),
        (["render", "--fade", "-0.5"], "'--fade': -0.5 s: must be between 0 and 10 s"),
        (["library", "add", "--batch-size", "0"], "'--batch-size': 0: must be at least 1"),
        (["data", "split", "--seed", "-1"], "'--seed': -1: must be between 0 and"),
    ],
)
def test_flag_values_through_the_console_script(args: list[str], message: str) -> None:
    run = mgsv(*args)
    assert run.code == 2 and message in run.text, run.text
    assert "-1048576" not in run.text and "-300.0" not in run.text  # the user's unit, not the internal one


# -------------------------------------------------------------------------------------------- 9. score


def tiny_annotations(path: Path, bom: bool = False) -> Path:
    """Two annotated videos (A on track a at 10-30 s, B on track b at 0-20 s), MGSV-EC columns."""
    rows = [",".join(COLUMNS)]
    for video, track, start, end in (("A", "a", 10.0, 30.0), ("B", "b", 0.0, 20.0)):
        fields = dict.fromkeys(COLUMNS, "1")
        fields.update(video_id=video, music_id=track, video_start="0.0", video_end=str(end - start),
                      music_start=str(start), music_end=str(end), music_total_duration="100.0",
                      music_path=f"/m/{track}.mp3", video_category="Food")  # fmt: skip
        rows.append(",".join(fields[name] for name in COLUMNS))
    path.write_bytes(("\ufeff" if bom else "").encode() + ("\n".join(rows) + "\n").encode())
    return path


def test_score_refuses_negative_and_huge_moments_and_accepts_a_bom(tmp_path: Path) -> None:
    csv = tiny_annotations(tmp_path / "tiny.csv")
    good_b = '{"video_id": "B", "smg": [0, 20], "ranking": [["b", 0.9, 0, 20], ["a", 0.1, 0, 5]]}'
    cases = {
        '{"video_id": "A", "smg": [-50, -10]}': "line 1: smg start must be >= 0 s",
        '{"video_id": "A", "smg": [10, 30], "ranking": [["a", 1, -3, 20]]}': "line 1: ranking entry 1 moment start "
                                                                          "must be >= 0 s",
        '{"video_id": "A", "smg": [0, 1e308]}': "line 1: smg end is too large",
        '{"video_id": "A", "smg": [-1e308, 1e308]}': "line 1: smg start is too large",
        '{"video_id": "A", "smg": [10, 30], "ranking": [["a", 1e308, 10, 30]]}': "line 1: ranking entry 1 score is "
                                                                               "too large",
    }
    for number, (line, message) in enumerate(cases.items()):
        predictions = tmp_path / f"bad-{number}.jsonl"
        predictions.write_text(f"{line}\n{good_b}\n")
        run = mgsv("score", "-a", csv, "-p", predictions)
        assert run.code == 1 and f"{predictions}: 1 problem(s): {message}" in run.text, run.text
        assert "Warning" not in run.err and "overflow" not in run.err

    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"video_id": "A", "smg": [12, 30], "ranking": [["a", 0.8, 12, 30], ["b", 0.2, 0, 5]]}\n'
                     f"{good_b}\n")  # fmt: skip
    with_bom = tmp_path / "bom.jsonl"
    with_bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    expected = mgsv("score", "-a", csv, "-p", plain, "--json")
    assert expected.code == 0
    for table, predictions in ((csv, with_bom), (tiny_annotations(tmp_path / "bom.csv", bom=True), with_bom)):
        run = mgsv("score", "-a", table, "-p", predictions, "--json")
        assert run.code == 0, run.text
        assert run.json()["metrics"] == expected.json()["metrics"]


# --------------------------------------------------------------------- 10. tables, run folders, the service


def test_control_characters_in_track_ids_stay_on_one_row(corpus: Corpus, tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    names = ["evil\nid.ogg", "esc\x1b[31mred.ogg", "rtl\u202egpj.ogg"]
    for number, name in enumerate(names):
        write_tone(tmp_path / f"t{number}.ogg", seconds=6, freq=300 + 100 * number)
        shutil.copyfile(tmp_path / f"t{number}.ogg", music / name)
    library = tmp_path / "lib"
    assert corpus.add(music, library=library).code == 0
    ids = sorted(t["id"] for t in mgsv("library", "list", "-l", library, "--json").json())
    assert ids == sorted(Path(name).stem for name in names)  # the JSON keeps them as they are
    table = mgsv("library", "list", "-l", library).out
    rows = [line for line in table.splitlines() if line.startswith("│")]
    assert len(rows) == 3  # one row per track
    for shown in ("evil\\nid", "esc\\x1b[31mred", "rtl\\u202egpj"):
        assert sum(shown in row for row in rows) == 1, table
    assert "\x1b" not in table and "\u202e" not in table


def test_a_run_folder_given_as_a_checkpoint_lists_its_checkpoints(corpus: Corpus, tmp_path: Path) -> None:
    run_folder = tmp_path / "run"
    for name in ("best_mor1_iou07", "last"):
        shutil.copytree(corpus.setup.checkpoint, run_folder / "checkpoints" / name)
    (run_folder / "log.csv").write_text("epoch\n")
    for given in (run_folder, run_folder / "checkpoints"):
        run = mgsv("ground", corpus.video, "-l", corpus.library, "-c", given, "--clip", corpus.setup.clip_dir)
        assert run.code == 1
        assert f"pass one of them, {run_folder / 'checkpoints' / '<name>'} (found: best_mor1_iou07, last)" in run.text


@pytest.fixture()
def served(corpus: Corpus, tmp_path: Path) -> ServeLibrary:
    return ServeLibrary(corpus.setup, Path(shutil.copytree(corpus.library, tmp_path / "served")), [corpus.tone])


def assert_error(response, status: int, code: str, *words: str) -> dict:
    body = response.json()
    assert response.status_code == status and body["error"] == code, (response.status_code, body)
    for word in words:
        assert word in body["message"], body
    return body


def test_the_service_refuses_the_same_inputs(served: ServeLibrary, tmp_path: Path) -> None:
    cases = not_videos(tmp_path / "in")
    cut_wav, cut_flac, _ = truncated_pair(tmp_path / "music")
    library = served.library
    tracks = MusicLibrary(library).tracks()
    kept = library / "uploaded-music"
    with ready_client(served.settings(work_dir=tmp_path / "work")) as client:
        # An empty multipart body: a documented code.
        empty = client.post("/v1/ground", headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"},
                            content=b"")  # fmt: skip
        assert_error(empty, 422, "missing_file", "'video'")
        assert "`missing_file`" in (DOCS / "serve.md").read_text()
        # Not videos, with the limits of the command line.
        expected = {"still.png": (415, "not_a_video"), "one-frame.mp4": (422, "video_too_short"),
                    "huge.mkv": (415, "not_a_video")}  # fmt: skip
        for name, (path, words) in cases.items():
            response = client.post("/v1/ground", headers=AUTH, files={"video": (name, path.read_bytes())})
            assert_error(response, *expected[name], words)
            assert f"`{expected[name][1]}`" in (DOCS / "serve.md").read_text()
        # Truncated music uploads, refused like the CLI refuses them.
        for path in (cut_wav, cut_flac):
            response = client.post("/v1/admin/tracks", headers=ADMIN, files={"file": (path.name, path.read_bytes())})
            assert_error(response, 422, "cannot_add_track", "truncated or damaged: the header says 40.0 s")
        assert not kept.exists() or not any(p.is_file() for p in kept.rglob("*"))

        # An upload while another process holds the library's writer lock: retryable, nothing kept.
        song = write_tone(tmp_path / "song.ogg", seconds=8, freq=660)
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys\nfrom mgsv.search.library import MusicLibrary\n"
             "with MusicLibrary(sys.argv[1]).writer():\n    print('locked', flush=True)\n    sys.stdin.read()",
             str(library)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert holder.stdout.readline().strip() == "locked"
            response = client.post("/v1/admin/tracks", headers=ADMIN, files={"file": ("song.ogg", song.read_bytes())})
            assert_error(response, 503, "busy", "another process")
            assert int(response.headers["Retry-After"]) > 0
        finally:
            holder.stdin.close()
            holder.wait(timeout=60)
        assert holder.returncode == 0
        assert not kept.exists() or not any(p.is_file() for p in kept.rglob("*"))
        assert MusicLibrary(library).tracks() == tracks
        # Once the other writer is done, the same upload succeeds.
        response = client.post("/v1/admin/tracks", headers=ADMIN, files={"file": ("song.ogg", song.read_bytes())})
        assert response.status_code == 201, response.text
