"""The grokscope command: help for every stage, errors as exit code 2."""
from __future__ import annotations

import subprocess
import sys

import pytest

from grokscope import cli


def test_top_level_help_lists_every_stage() -> None:
    out = subprocess.run([sys.executable, "-m", "grokscope.cli", "--help"], capture_output=True, text=True, check=True)
    for name in cli.COMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_each_stage_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"grokscope {command}" in out


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, grokscope.cli as c; c.build_parser(None);"
        "heavy=[m for m in ('torch','transformers','dask','matplotlib','sklearn','numba') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
