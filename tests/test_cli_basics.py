"""The console script starts, prints its version and turns user errors into one clear message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mgsv import __version__
from mgsv.cli import main
from mgsv.errors import InputError, ProblemsError


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_console_script_help() -> None:
    result = subprocess.run([sys.executable, "-m", "mgsv", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "Music grounding" in result.stdout


def test_problem_messages_name_the_file_and_line() -> None:
    assert str(InputError("a.csv", "missing column 'video_id'", line=3)) == "a.csv:3: missing column 'video_id'"
    message = str(ProblemsError("b.jsonl", [f"line {i}: bad" for i in range(60)], limit=2))
    assert message.splitlines()[0] == "b.jsonl: 60 problem(s):"
    assert message.splitlines()[-1] == "  ... and 58 more"
