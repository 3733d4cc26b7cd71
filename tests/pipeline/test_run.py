"""``grokscope run``: stage order, resume after a kill, a finished study does nothing, config
changes that alter results are refused, bad input exits 2. Stage functions are replaced by
fakes that write each stage's output (the real stages have their own tests; the slow
end-to-end checks are in the slow tests at the bottom of this file)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grokscope import cli
from grokscope.core.config import load_config
from grokscope.core.errors import ConfigError, MissingStageError
from grokscope.core.store import Study
from grokscope.pipeline import run as pipeline

REPO = Path(__file__).resolve().parents[2]


def _write_study(tmp: Path, extra: str = "", train: bool = True) -> Path:
    (tmp / "corpus.jsonl").write_text('{"text": "the farmer sleeps."}\n')
    (tmp / "pairs.jsonl").write_text('{"sentence_good": "A b.", "sentence_bad": "A c.", "UID": "u", "pairID": 0}\n')
    text = f"""
[study]
name = "t"
out = "study"
[data]
corpus = ["corpus.jsonl"]
tokenizer = "train-bpe"
[train]
enabled = {str(train).lower()}
max_steps = 4
[benchmark]
path = "pairs.jsonl"
{extra}
"""
    path = tmp / "s.toml"
    path.write_text(text)
    return path


class Fakes:
    """Stage functions that record their calls and write the stage's output."""

    def __init__(self, fail_in: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail_in = fail_in

    def make(self, stage: str):
        def fn(cfg, study: Study) -> None:
            self.calls.append(stage)
            if stage == self.fail_in:
                raise KeyboardInterrupt  # a kill in the middle of this stage
            outputs = {
                "prepare": [study.tokens_dir / "manifest.json", study.tokens_dir / "tokens.npy"],
                "train": [study.run_dir / "checkpoints" / "step_00000004" / "grokscope_checkpoint.json"],
                "phrases": [study.phrases_path], "exposure": [study.exposure_path],
                "score": [study.score_path(4)], "analyse": [study.analysis_dir / "timing.parquet"],
                "report": [study.report_path],
                "testbed": [study.testbed_file(f) for f in ("corpus.jsonl", "pairs.jsonl", "ground_truth.json")],
            }[stage]
            for p in outputs:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text("x")
            # every stage sees absolute paths
            assert Path(cfg.benchmark.path).is_absolute() and all(Path(c).is_absolute() for c in cfg.data.corpus)
        return fn

    def table(self) -> dict:
        return {s: self.make(s) for s in pipeline.STAGES}


def test_runs_stages_in_order_then_nothing_to_do(tmp_path: Path) -> None:
    cfg = load_config(_write_study(tmp_path))
    fakes = Fakes()
    results = pipeline.run_study(cfg, stages=fakes.table(), echo=lambda s: None)
    assert fakes.calls == ["prepare", "train", "phrases", "exposure", "score", "analyse", "report"]
    assert [r.status for r in results] == ["skipped"] + ["ran"] * 7
    assert (cfg.study_dir / "study.toml").exists()
    fakes2 = Fakes()
    results = pipeline.run_study(cfg, stages=fakes2.table(), echo=lambda s: None)
    assert fakes2.calls == []
    assert [r.status for r in results] == ["skipped"] + ["done"] * 7


def test_a_stream_that_withholds_phrases_runs_phrases_before_prepare(tmp_path: Path) -> None:
    """prepare --withhold cuts the stream from the phrases table: phrases runs first, and a change of
    the benchmark (phrases' section) then also redoes prepare."""
    path = _write_study(tmp_path)
    path.write_text(path.read_text().replace('tokenizer = "train-bpe"', 'tokenizer = "train-bpe"\nwithhold = 0.5'))
    fakes = Fakes()
    pipeline.run_study(load_config(path), stages=fakes.table(), echo=lambda s: None)
    assert fakes.calls == ["phrases", "prepare", "train", "exposure", "score", "analyse", "report"]
    path.write_text(path.read_text().replace('[benchmark]', '[benchmark]\nskip_invalid = true'))
    with pytest.raises(ConfigError, match="--reset phrases"):
        pipeline.run_study(load_config(path), stages=Fakes().table(), echo=lambda s: None)
    fakes = Fakes()
    pipeline.run_study(load_config(path), stages=fakes.table(), echo=lambda s: None, reset="phrases")
    assert fakes.calls == ["phrases", "prepare", "train", "exposure", "score", "analyse", "report"]


def test_paused_collection_resumes_before_the_first_stage_with_its_libraries_in(tmp_path: Path, monkeypatch) -> None:
    """Under the console script (collection paused, grokscope.core.heap) run_study imports the
    libraries of the stages about to run, freezes them and turns collection back on before the
    first stage runs; every stage has an entry."""
    import gc
    import sys

    from grokscope.core import heap
    from grokscope.pipeline.registry import load_stage

    for stage in pipeline.STAGES:  # light stand-ins for torch & co.
        monkeypatch.setattr(load_stage(stage), "libraries", ("json",))
    monkeypatch.setattr(load_stage("score"), "libraries", ("json", "_grokscope_marker_module"))
    marker = tmp_path / "_grokscope_marker_module.py"
    marker.write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(_write_study(tmp_path))
    fakes = Fakes()
    seen: list[tuple[str, bool, bool]] = []

    def watched(stage: str, fn):
        def run(c, st) -> None:
            seen.append((stage, gc.isenabled(), "_grokscope_marker_module" in sys.modules))
            fn(c, st)
        return run

    table = {stage: watched(stage, fn) for stage, fn in fakes.table().items()}
    frozen = gc.get_freeze_count()
    heap.pause()
    try:
        pipeline.run_study(cfg, stages=table, echo=lambda s: None)
        assert seen and all(enabled and imported for _, enabled, imported in seen)
        assert gc.get_freeze_count() > frozen and not heap.is_paused()
    finally:
        heap.resume()
        gc.unfreeze()
        sys.modules.pop("_grokscope_marker_module", None)


def test_resume_after_kill_reruns_the_killed_stage_and_the_rest(tmp_path: Path) -> None:
    cfg = load_config(_write_study(tmp_path))
    fakes = Fakes(fail_in="score")
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_study(cfg, stages=fakes.table(), echo=lambda s: None)
    assert fakes.calls[-1] == "score"
    fakes2 = Fakes()
    pipeline.run_study(cfg, stages=fakes2.table(), echo=lambda s: None)
    assert fakes2.calls == ["score", "analyse", "report"]


def test_a_stage_killed_after_writing_output_but_before_being_recorded_runs_again(tmp_path: Path) -> None:
    cfg = load_config(_write_study(tmp_path))
    pipeline.run_study(cfg, stages=Fakes().table(), echo=lambda s: None)
    state = json.loads((cfg.study_dir / "pipeline.json").read_text())
    del state["completed"]["exposure"]
    (cfg.study_dir / "pipeline.json").write_text(json.dumps(state))
    fakes = Fakes()
    pipeline.run_study(cfg, stages=fakes.table(), echo=lambda s: None)
    assert fakes.calls == ["exposure", "score", "analyse", "report"]  # everything after it, too


def test_missing_output_reruns_that_stage(tmp_path: Path) -> None:
    cfg = load_config(_write_study(tmp_path))
    pipeline.run_study(cfg, stages=Fakes().table(), echo=lambda s: None)
    (cfg.study_dir / "phrases.parquet").unlink()
    fakes = Fakes()
    pipeline.run_study(cfg, stages=fakes.table(), echo=lambda s: None)
    assert fakes.calls == ["phrases", "exposure", "score", "analyse", "report"]


def test_changed_config_is_refused_naming_the_key_harmless_change_is_fine(tmp_path: Path) -> None:
    path = _write_study(tmp_path)
    pipeline.run_study(load_config(path), stages=Fakes().table(), echo=lambda s: None)
    path.write_text(path.read_text().replace("max_steps = 4", "max_steps = 8"))
    with pytest.raises(ConfigError, match=r"train\.max_steps \(4 -> 8\)"):
        pipeline.run_study(load_config(path), stages=Fakes().table(), echo=lambda s: None)
    path.write_text(path.read_text().replace("max_steps = 8", "max_steps = 4") + '[report]\ntitle = "new"\n')
    pipeline.run_study(load_config(path), stages=Fakes().table(), echo=lambda s: None)


def test_without_train_or_corpus(tmp_path: Path) -> None:
    (tmp_path / "tok.npy").write_text("x")
    path = _write_study(tmp_path, train=False)
    text = path.read_text().replace('corpus = ["corpus.jsonl"]', 'tokens = "tok.npy"')
    path.write_text(text + '[score]\ncheckpoints = ["ck"]\n')
    fakes = Fakes()
    results = pipeline.run_study(load_config(path), stages=fakes.table(), echo=lambda s: None)
    assert fakes.calls == ["phrases", "exposure", "score", "analyse", "report"]
    assert [r.stage for r in results if r.status == "skipped"] == ["testbed", "prepare", "train"]


def _cli(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["run", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("max_steps", "max_stepz"), "did you mean 'max_steps'"),
    (lambda t: t.replace('corpus = ["corpus.jsonl"]', 'corpus = ["nope.jsonl"]'), "corpus path does not exist"),
    (lambda t: t.replace('path = "pairs.jsonl"', 'path = "../missing/blimp"'), "[benchmark] path does not exist"),
    (lambda t: t.replace("enabled = true", "enabled = false"), "score stage needs checkpoints"),
    (lambda t: t.replace('corpus = ["corpus.jsonl"]', ""), "no token stream"),
    (lambda t: t.replace('path = "pairs.jsonl"', ""), "needs [benchmark] path"),
    (lambda t: t.replace('tokenizer = "train-bpe"', 'tokenizer = "./no/tokenizer.json"'), "tokenizer path does not exist"),
])
def test_bad_input_exits_2_with_a_clear_message(tmp_path: Path, capsys, monkeypatch, edit, message) -> None:
    path = _write_study(tmp_path)
    path.write_text(edit(path.read_text()))
    called: list[str] = []
    monkeypatch.setattr(pipeline, "_stage_function", lambda s: (lambda c, st: called.append(s)))
    code, out = _cli(path, capsys)
    assert code == 2 and message in out, out
    assert called == []  # nothing ran
    assert str(path) in out or "did you mean" in out


def test_missing_config_file_and_missing_stage_input(tmp_path: Path, capsys, monkeypatch) -> None:
    code, out = _cli(tmp_path / "none.toml", capsys)
    assert code == 2 and "config file not found" in out
    path = _write_study(tmp_path)

    def stage_fn(stage: str):
        def fn(cfg, study):
            if stage == "exposure":
                raise MissingStageError("token stream", str(study.tokens_dir), "grokscope prepare")
        return fn

    monkeypatch.setattr(pipeline, "_stage_function", stage_fn)
    monkeypatch.setattr(pipeline, "output_exists", lambda *a: True)
    code, out = _cli(path, capsys)
    assert code == 2 and "token stream not found" in out and "grokscope prepare" in out
    state = json.loads((tmp_path / "study" / "pipeline.json").read_text())
    assert sorted(state["completed"]) == ["phrases", "prepare", "train"]  # finished work is recorded


def test_cli_prints_report_path_and_nothing_to_do(tmp_path: Path, capsys, monkeypatch) -> None:
    path = _write_study(tmp_path)
    fakes = Fakes()
    monkeypatch.setattr(pipeline, "_stage_function", fakes.make)
    code, out = _cli(path, capsys)
    assert code == 0 and "report: " + str(tmp_path / "study" / "report" / "index.html") in out
    assert "nothing to do" not in out
    code, out = _cli(path, capsys)
    assert code == 0 and "nothing to do" in out


def test_testbed_stage_generates_once_and_refuses_other_settings(tmp_path: Path) -> None:
    extra = "[testbed]\nenabled = true\nn_documents = 40\nn_nouns = 4\npairs_per_paradigm = 4\nfrequency = 2\n"
    path = _write_study(tmp_path, extra=extra)
    text = path.read_text().replace('corpus = ["corpus.jsonl"]', "").replace('path = "pairs.jsonl"', 'path = "testbed"')
    path.write_text(text)
    cfg = load_config(path)
    eff = cfg.resolved()
    assert eff.data.corpus == [str(tmp_path / "study" / "testbed" / "corpus.jsonl")]
    assert eff.benchmark.path == str(tmp_path / "study" / "testbed" / "pairs.jsonl")
    from grokscope.pipeline.testbed import run as run_testbed_stage

    study = Study(cfg.study_dir)
    run_testbed_stage(cfg, study)
    corpus = tmp_path / "study" / "testbed" / "corpus.jsonl"
    mtime = corpus.stat().st_mtime_ns
    run_testbed_stage(cfg, study)
    assert corpus.stat().st_mtime_ns == mtime
    cfg2 = load_config(path)
    cfg2.testbed.frequency = 3
    with pytest.raises(ConfigError, match="frequency"):
        run_testbed_stage(cfg2, study)


def test_studies_configs_load() -> None:
    for name in ("demo.toml", "corpus_cpu.toml", "pythia.toml", "withhold_cpu.toml", "paper_35m.toml",
                 "paper_130m.toml"):
        cfg = load_config(REPO / "studies" / name)
        assert cfg.benchmark.path or cfg.testbed.enabled
    cpu = load_config(REPO / "studies" / "corpus_cpu.toml")
    assert cpu.train.enabled and cpu.data.corpus
    held = load_config(REPO / "studies" / "withhold_cpu.toml")
    assert held.data.withhold == 0.5 and len(held.benchmark.paradigms) == 15
    assert held.train == cpu.train and held.score == cpu.score
    blimp = REPO.parent / "shared" / "data" / "blimp"
    if blimp.is_dir():
        assert all((blimp / f"{u}.jsonl").exists() for u in held.benchmark.paradigms)
    py = load_config(REPO / "studies" / "pythia.toml")
    assert not py.train.enabled and len(py.score.checkpoints) >= 10
    assert py.score.checkpoints[-1].endswith("step143000")
    small, large = (load_config(REPO / "studies" / f"paper_{n}.toml") for n in ("35m", "130m"))
    for paper in (small, large):  # the paper's setting: from scratch, checkpoints every 100 steps, all of BLiMP
        assert paper.train.enabled and paper.train.checkpoint_every == 100 and not paper.benchmark.paradigms
        assert paper.data.corpus == cpu.data.corpus and paper.data.withhold == 0.0
        # both arms (with --set data.withhold=0.5: 75.8M tokens measured) fit the stream: rows of seq_len + 1
        assert paper.train.max_steps * paper.train.batch_size * (paper.data.seq_len + 1) < 75.8e6
    assert (small.data, small.train.max_steps, small.train.batch_size) == (large.data, large.train.max_steps,
                                                                             large.train.batch_size)


# ------------------------------------------------------------------------------------------
# slow: the real pipeline end to end (demo with planting on/off; kills at random moments)
# ------------------------------------------------------------------------------------------
def _demo(out: Path, planting: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "grokscope.cli", "demo", "--out", str(out), "--planting", planting, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
def test_demo_shows_the_planted_gap_and_none_without_planting(tmp_path: Path) -> None:
    import pandas as pd

    on = _demo(tmp_path / "on", "on")
    assert on.returncode == 0, on.stderr[-3000:]
    off = _demo(tmp_path / "off", "off", "--frequency", "3")
    assert off.returncode == 0, off.stderr[-3000:]
    t_on = pd.read_parquet(tmp_path / "on" / "study" / "analysis" / "timing.parquet")
    t_off = pd.read_parquet(tmp_path / "off" / "study" / "analysis" / "timing.parquet")

    def delayed(t: pd.DataFrame) -> dict[str, bool]:
        """paradigm -> proxy-train reached the criterion first and the analysis calls it 'delayed'."""
        t = t[(t["level"] == "paradigm") & (t["comparison"] == "proxy")]
        return {row.group: bool(row.status == "delayed" and pd.notna(row.fit_step) and pd.notna(row.gen_step)
                                and row.gen_step > row.fit_step) for row in t.itertuples()}

    assert any(delayed(t_on).values()), t_on.to_string()
    assert not any(delayed(t_off).values()), t_off.to_string()
    assert (tmp_path / "on" / "study" / "report" / "index.html").exists()
    assert "ground truth" in on.stdout


# (stage, fraction of the stage's time in the uninterrupted run) at which `grokscope run` is
# killed with SIGKILL, counted from the stage's "running" line
KILL_PLAN = [("testbed", 0.5), ("prepare", 0.5), ("train", 0.2), ("train", 0.6), ("exposure", 0.5),
             ("score", 0.5), ("analyse", 0.5), ("report", 0.5)]


@pytest.mark.slow
def test_killed_runs_end_with_the_same_tables(tmp_path: Path) -> None:
    """Kill ``grokscope run`` (SIGKILL) inside every stage, re-run until it finishes, and compare
    every final table with an uninterrupted run of the same config."""
    import random
    import threading

    import pandas as pd

    args = ["--steps", "120", "--checkpoint-every", "40", "--model-size", "tiny", "--documents", "900"]
    ref = _demo(tmp_path / "ref", "on", *args)
    assert ref.returncode == 0, ref.stderr[-3000:]
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "demo.toml").write_text((tmp_path / "ref" / "demo.toml").read_text())
    cmd = [sys.executable, "-m", "grokscope.cli", "run", str(tmp_path / "killed" / "demo.toml")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # as the demo
    ref_seconds = {stage: done["seconds"] for stage, done in
                   json.loads((tmp_path / "ref" / "study" / "pipeline.json").read_text())["completed"].items()}
    rng = random.Random(0)
    killed_in: list[str] = []
    for stage, fraction in KILL_PLAN:
        delay = ref_seconds[stage] * fraction
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        timer: threading.Timer | None = None
        for line in proc.stdout:  # type: ignore[union-attr]
            if timer is None and line.startswith(f"  {stage:<9} running"):
                timer = threading.Timer(delay * rng.uniform(0.6, 1.4), proc.kill)
                timer.start()
        proc.wait()
        if timer is not None:
            timer.cancel()
        if proc.returncode == -9:
            killed_in.append(stage)
        else:
            assert proc.returncode == 0, f"run failed after kills in {killed_in}"
    final = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    print(f"killed {len(killed_in)} times, in: {killed_in}")
    assert len(killed_in) >= 5 and len(set(killed_in)) >= 4
    ref_study, killed_study = Study(tmp_path / "ref" / "study"), Study(tmp_path / "killed" / "study")
    assert ref_study.scored_steps() == killed_study.scored_steps()
    names = ["phrases.parquet", "exposure.parquet", "analysis/curves.parquet", "analysis/timing.parquet",
             "analysis/probes.parquet", "analysis/heads.parquet"]
    names += [f"scores/{p.name}" for p in sorted(ref_study.scores_dir.glob("step_*.parquet"))]
    for name in names:
        a = pd.read_parquet(ref_study.root / name)
        b = pd.read_parquet(killed_study.root / name)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)
    assert (tmp_path / "ref" / "testbed" / "corpus.jsonl").read_bytes() == \
        (tmp_path / "killed" / "testbed" / "corpus.jsonl").read_bytes()
    print(f"{len(names)} tables equal to the uninterrupted run")


def test_demo_refuses_new_settings_for_an_existing_demo_directory(tmp_path: Path) -> None:
    import argparse

    import tomli_w

    from grokscope.core.config import config_from_dict, dump_config
    from grokscope.pipeline import demo
    from grokscope.pipeline.demo import settings_from_args

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)

    def text_for(*argv: str) -> str:
        args = parser.parse_args(["--out", str(tmp_path), *argv])
        args.documents = demo.documents_for(args.steps, args.batch_size, args.seq_len, args.sentences_per_document)
        return tomli_w.dumps(demo.demo_config(args, settings_from_args(args)))

    first = text_for()
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "study.toml").write_text(dump_config(config_from_dict(__import__("tomllib").loads(first))))
    demo._refuse_if_study_differs(first, tmp_path / "demo.toml")  # same settings: fine
    demo._refuse_if_study_differs(text_for("--threads", "2"), tmp_path / "demo.toml")  # harmless
    with pytest.raises(ConfigError, match=r"train\.max_steps \(400 -> 300\).*another --out"):
        demo._refuse_if_study_differs(text_for("--steps", "300"), tmp_path / "demo.toml")
    with pytest.raises(ConfigError, match=r"testbed\.planting"):
        demo._refuse_if_study_differs(text_for("--planting", "off"), tmp_path / "demo.toml")


def test_demo_document_count_gives_enough_rows() -> None:
    from grokscope.data.testbed import TestbedSettings, generate
    from grokscope.pipeline import demo

    steps, batch, seq_len = 40, 8, 32
    n = demo.documents_for(steps, batch, seq_len, 8)
    tb = generate(TestbedSettings(n_documents=n, planting=False, frequency=1, n_nouns=8, pairs_per_paradigm=8))
    n_words = sum(len(d.split()) + d.count(".") for d in tb.documents)  # words + full stops ~ BPE tokens
    assert n_words >= steps * batch * (seq_len + 1)


def test_reset_moves_a_stage_and_later_ones_aside_and_accepts_their_new_settings(tmp_path: Path) -> None:
    path = _write_study(tmp_path)
    pipeline.run_study(load_config(path), stages=Fakes().table(), echo=lambda s: None)
    study = Study(load_config(path).study_dir)
    old_score = study.score_path(4).read_text()
    path.write_text(path.read_text() + "[score]\nhidden_pairs = 5\n[analyse]\ncriterion_level = 0.7\n")
    with pytest.raises(ConfigError, match=r"--reset score"):  # the refusal names the stage to reset
        pipeline.run_study(load_config(path), stages=Fakes().table(), echo=lambda s: None)
    with pytest.raises(ConfigError, match=r"score\.hidden_pairs.*--reset analyse does not redo"):
        pipeline.run_study(load_config(path), stages=Fakes().table(), echo=lambda s: None, reset="analyse")
    fakes = Fakes()
    pipeline.run_study(load_config(path), stages=fakes.table(), echo=lambda s: None, reset="score")
    assert fakes.calls == ["score", "analyse", "report"]
    aside = list((study.root / "reset").iterdir())
    assert len(aside) == 1
    assert (aside[0] / "scores" / "step_00000004.parquet").read_text() == old_score  # kept, not deleted
    assert (aside[0] / "analysis" / "timing.parquet").exists() and (aside[0] / "report" / "index.html").exists()
    assert study.phrases_path.exists() and (study.run_dir / "checkpoints").exists()  # earlier stages untouched
    assert "hidden_pairs = 5" in study.config_path.read_text()  # the new config is the study's now
    fakes = Fakes()
    pipeline.run_study(load_config(path), stages=fakes.table(), echo=lambda s: None)
    assert fakes.calls == []  # and a plain re-run has nothing to do


def test_reset_of_an_unknown_stage_is_a_clear_error(tmp_path: Path, capsys, monkeypatch) -> None:
    path = _write_study(tmp_path)
    with pytest.raises(ConfigError, match="unknown stage 'scores'"):
        pipeline.run_study(load_config(path), stages=Fakes().table(), echo=lambda s: None, reset="scores")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(["run", str(path), "--reset", "scores"])
    assert e.value.code == 2 and "invalid choice: 'scores'" in capsys.readouterr().err


def test_reset_on_a_new_study_saves_its_config(tmp_path: Path) -> None:
    path = _write_study(tmp_path)
    fakes = Fakes()
    pipeline.run_study(load_config(path), stages=fakes.table(), echo=lambda s: None, reset="phrases")
    assert fakes.calls == ["prepare", "train", "phrases", "exposure", "score", "analyse", "report"]
    assert (load_config(path).study_dir / "study.toml").exists()
    assert not (load_config(path).study_dir / "reset").exists()  # nothing to move aside


def test_running_the_saved_copy_of_a_config_names_the_original(tmp_path: Path, capsys, monkeypatch) -> None:
    path = _write_study(tmp_path)
    pipeline.run_study(load_config(path), stages=Fakes().table(), echo=lambda s: None)
    saved = load_config(path).study_dir / "study.toml"
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", str(saved)]) == 2
    err = capsys.readouterr().err
    assert "copy a study keeps of its config" in err and str(path) in err
    assert not (saved.parent / "study").exists()  # no study started inside the study
