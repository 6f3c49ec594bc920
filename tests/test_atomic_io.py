"""mgsv.atomic_io: a file is its old content or its complete new content, never half; no temporary file is left."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mgsv import atomic_io
from mgsv.atomic_io import (
    TEMP_PREFIX,
    atomic_path,
    atomic_writer,
    fsync_directory,
    fsync_file,
    temp_path_for,
    write_json_atomic,
)


class Boom(Exception):
    pass


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record what each os.fsync call flushed: "dir" or "file" (and still fsync for real)."""
    calls: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(atomic_io.os, "fsync", recording)
    return calls


def test_temp_name_is_hidden_unique_beside_the_target_and_keeps_its_suffix(tmp_path: Path) -> None:
    a, b = temp_path_for(tmp_path / "out.mp4"), temp_path_for(tmp_path / "out.mp4")
    assert a != b and a.parent == tmp_path
    assert a.name.startswith(TEMP_PREFIX) and a.name.endswith(".out.mp4") and a.suffix == ".mp4"
    assert not a.exists()


def test_writer_replaces_the_file_and_fsyncs_file_then_folder(tmp_path: Path, fsyncs: list[str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("old\n")
    with atomic_writer(path) as handle:
        handle.write("new\n")
        assert path.read_text() == "old\n"  # nothing visible before the block ends
        (temporary,) = [p for p in tmp_path.iterdir() if p != path]
        assert temporary.name.startswith(TEMP_PREFIX) and temporary.name.endswith(".notes.txt")
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert fsyncs == ["file", "dir"]  # the data before the rename, the folder (the rename itself) after


def test_exception_mid_write_keeps_the_old_content_and_leaves_no_temp_file(tmp_path: Path, fsyncs: list[str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("old\n")
    with pytest.raises(Boom), atomic_writer(path) as handle:
        handle.write("half of the new con")
        raise Boom
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert fsyncs == []


def test_exception_when_the_file_did_not_exist_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(Boom), atomic_writer(tmp_path / "new.json") as handle:
        handle.write("{")
        raise Boom
    assert list(tmp_path.iterdir()) == []


def test_binary_mode_and_newline(tmp_path: Path) -> None:
    with atomic_writer(tmp_path / "data.bin", "wb") as handle:
        handle.write(b"\x00\x01\n")
    assert (tmp_path / "data.bin").read_bytes() == b"\x00\x01\n"
    with atomic_writer(tmp_path / "rows.csv", newline="") as handle:
        handle.write("a,b\r\n")
    assert (tmp_path / "rows.csv").read_bytes() == b"a,b\r\n"  # not translated, as csv needs
    with atomic_writer(tmp_path / "text.txt") as handle:
        handle.write("é\n")
    assert (tmp_path / "text.txt").read_bytes() == "é\n".encode()  # UTF-8 whatever the locale
    with pytest.raises(ValueError, match="mode must be"):
        atomic_writer(tmp_path / "x", "a")  # type: ignore[call-overload]


def test_new_file_gets_the_usual_umask_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        with atomic_writer(tmp_path / "shared.txt") as handle:
            handle.write("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o644  # not mkstemp's 0600


def test_json_round_trip(tmp_path: Path, fsyncs: list[str]) -> None:
    data = {"b": [1, 2.5, None, True], "a": {"name": "café", "nested": []}}
    path = tmp_path / "sub" / "manifest.json"
    path.parent.mkdir()
    write_json_atomic(path, data)
    assert json.loads(path.read_text(encoding="utf-8")) == data
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n") and text.startswith('{\n "b"')  # indent 1, keys in the given order
    write_json_atomic(path, data, sort_keys=True)
    assert path.read_text(encoding="utf-8").startswith('{\n "a"')
    assert json.loads(path.read_text(encoding="utf-8")) == data
    assert fsyncs == ["file", "dir"] * 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.json"]


def test_json_that_cannot_be_encoded_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    write_json_atomic(path, {"ok": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"ok": 2, "bad": object()})  # fails after part of the object is written
    assert json.loads(path.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_atomic_path_for_writers_that_take_a_file_name(tmp_path: Path, fsyncs: list[str]) -> None:
    path = tmp_path / "index.bin"
    path.write_bytes(b"old")
    with atomic_path(path) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(TEMP_PREFIX)
        temporary.write_bytes(b"new")
    assert path.read_bytes() == b"new" and fsyncs == ["file", "dir"]
    with pytest.raises(Boom), atomic_path(path) as temporary:
        temporary.write_bytes(b"half")
        raise Boom
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.bin"]
    with pytest.raises(FileNotFoundError), atomic_path(path):
        pass  # nothing written: an error, and the old file stays
    assert path.read_bytes() == b"new"


def test_fsync_helpers(tmp_path: Path, fsyncs: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_bytes(b"x")
    fsync_file(tmp_path / "f")
    fsync_directory(tmp_path)
    assert fsyncs == ["file", "dir"]

    def refuse(*args: object) -> int:
        raise PermissionError("directories cannot be opened here")

    monkeypatch.setattr(atomic_io.os, "open", refuse)
    fsync_directory(tmp_path)  # where a folder cannot be opened (Windows) it is a no-op
    assert fsyncs == ["file", "dir"]


CHILD = textwrap.dedent(
    """
    import sys
    from mgsv.atomic_io import write_json_atomic

    path, k = sys.argv[1], 0
    while True:
        write_json_atomic(path, {"k": k, "payload": "x" * (1000 + k % 50_000)})
        print(k, flush=True)
        k += 1
    """
)


def test_sigkill_mid_write_leaves_a_complete_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    written = -1
    while written < 200:
        line = child.stdout.readline()
        assert line, "the writer process stopped early"
        written = int(line)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    data = json.loads(path.read_text())  # complete: never a half-written file
    assert data["k"] >= written and data["payload"] == "x" * (1000 + data["k"] % 50_000)
    # What a kill can leave is a temporary file, recognisable by its prefix (the stores sweep them).
    assert all(p.name.startswith(TEMP_PREFIX) for p in tmp_path.iterdir() if p != path)
