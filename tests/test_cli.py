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


_ENTRY_SCRIPT = """
import atexit, sys, threading, time
from grokscope import cli
marker = sys.argv[1]
atexit.register(lambda: open(marker, "w").write("atexit ran"))
def fake_main(pause_gc=False):
    if sys.argv[2] in ("thread", "daemon"):  # a thread still working when main returns
        threading.Thread(target=lambda: (time.sleep(0.3), open(marker + ".thread", "w").write("done")),
                         daemon=sys.argv[2] == "daemon").start()
    sys.stdout.write("x" * 200_000)  # more than a pipe buffer: must be flushed before the exit
    sys.stderr.write("to stderr")
    return 3
cli.main = fake_main
cli.entry()
"""


@pytest.mark.parametrize("threads", ["alone", "thread", "daemon"])
def test_entry_exit_flushes_output_runs_atexit_and_keeps_the_code(tmp_path, threads: str) -> None:
    marker = tmp_path / "marker"
    out = subprocess.run([sys.executable, "-c", _ENTRY_SCRIPT, str(marker), threads], capture_output=True, text=True)
    assert out.returncode == 3
    assert out.stdout == "x" * 200_000
    assert out.stderr == "to stderr"
    assert marker.read_text() == "atexit ran"
    if threads == "thread":  # the normal exit waited for the thread
        assert (tmp_path / "marker.thread").read_text() == "done"
    if threads == "daemon":  # stopped at exit, as a normal exit would
        assert not (tmp_path / "marker.thread").exists()


def test_console_script_pauses_collection_only_for_stages_that_settle(monkeypatch) -> None:
    """``main(pause_gc=True)`` (the console script) pauses cyclic GC while a stage with
    ``settles_heap`` runs (it calls ``heap.settle()`` itself), never for the others, and
    collection is on again when main returns, even after an error."""
    import gc

    import grokscope.report.stage as report_stage
    import grokscope.score.stage as score_stage
    from grokscope.core.errors import DataError

    seen: dict[str, bool] = {}

    def fake_score(cfg, study):
        seen["score"] = gc.isenabled()
        raise DataError("no checkpoints")

    monkeypatch.setattr(score_stage.STAGE, "run", fake_score)
    monkeypatch.setattr(report_stage.STAGE, "run", lambda cfg, study: seen.setdefault("report", gc.isenabled()) and 0)
    assert score_stage.STAGE.settles_heap and not report_stage.STAGE.settles_heap
    assert cli.main(["score", "--checkpoints", "x", "--benchmark", "y", "--out", "z"], pause_gc=True) == 2
    assert seen["score"] is False and gc.isenabled()
    assert cli.main(["report", "z"], pause_gc=True) == 0
    assert seen["report"] is True and gc.isenabled()
    assert cli.main(["score", "--checkpoints", "x", "--benchmark", "y", "--out", "z"]) == 2  # tests, library
    assert seen["score"] is True
