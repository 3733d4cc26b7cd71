"""Ground truth next to findings: the true verdict of each testbed, the planted onset step read
from the stream (hand-worked), the per-seed rows and their summary, each demo control changing
only the setting it names, and (slow) ``grokscope demo --seeds 2`` end to end at the smallest size."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grokscope.core import store
from grokscope.core.store import Study
from grokscope.pipeline import demo, truth


def test_true_verdicts():
    assert truth.true_verdict({"confounded": True, "planting": True, "onset_fraction": 0.5}) == "no delay"
    assert truth.true_verdict({"planting": False, "onset_fraction": 0.0}) == "no delay"
    assert truth.true_verdict({"planting": True, "onset_fraction": 0.3}) == "delayed"
    assert truth.true_verdict({"planting": True, "onset_fraction": 0.0}) is None


def test_planted_onset_step_by_hand(tmp_path):
    study = Study(tmp_path)
    # rows 0..9 hold documents 0,0,1,2,2,3,4,4,5,6 (document order kept); onset at document 4 -> row 6
    store.write_npy(study.tokens_dir / "row_docs.npy", np.array([0, 0, 1, 2, 2, 3, 4, 4, 5, 6], dtype=np.int64))
    # B = 2: row 6 is trained at step index 3, so window(t) holds it from t = 4 on
    assert truth.planted_onset_step(study, 4, 2, [0, 1, 2, 4, 8]) == 4
    assert truth.planted_onset_step(study, 4, 2, [0, 1, 2, 3, 5]) == 5  # the first checkpoint at/after it
    assert truth.planted_onset_step(study, 4, 4, [0, 1, 2, 3]) == 2  # B = 4: row 6 in step index 1
    assert truth.planted_onset_step(study, 0, 2, [0, 1]) is None
    assert truth.planted_onset_step(study, 99, 2, [0, 1]) is None
    assert truth.cue_step(study, 4, 2) == 4 and truth.cue_step(study, 4, 4) == 2  # the step, not the checkpoint
    assert truth.cue_step(study, 0, 2) is None


def _fake_seed(root: Path, seed: int, gen_a: float, status_a: str) -> Study:
    study = Study(root / f"seed_{seed}")
    store.write_npy(study.tokens_dir / "row_docs.npy", np.arange(100, dtype=np.int64))
    for s in (0, 10, 20, 30, 40):
        store.write_parquet(study.score_path(s), pd.DataFrame({"x": [1]}))
    store.write_json(study.testbed_file("ground_truth.json"),
                     {"settings": {"planting": True, "onset_fraction": 0.5}, "onset_document": 50})
    timing = pd.DataFrame({"level": ["paradigm"] * 2 + ["all"], "group": ["a", "b", "all"],
                           "comparison": ["proxy"] * 3, "gen_step": [gen_a, np.nan, 30.0],
                           "status": [status_a, "not reached", "delayed"]})
    store.write_parquet(study.analysis_dir / "timing.parquet", timing)
    return study


def test_seed_rows_and_summary(tmp_path):
    rows = []
    for seed, gen, status in ((0, 30.0, "delayed"), (1, 40.0, "no delay"), (2, 10.0, "delayed")):
        study = _fake_seed(tmp_path, seed, gen, status)
        rows += truth.seed_rows(study, study.testbed_dir, 2, seed)
    # onset document 50 = row 50, B = 2 -> step index 25, window holds it from t = 26: checkpoint 30
    assert {r["planted_onset"] for r in rows} == {30} and {r["cue_step"] for r in rows} == {26}
    assert [r["lag_steps"] for r in rows if r["paradigm"] == "a"] == [4, 14, -16]
    a = [r for r in rows if r["paradigm"] == "a"]
    assert [r["onset_within_one"] for r in a] == [True, True, False]
    assert [r["matched"] for r in a] == [True, False, True]
    table, text = truth.across_seeds(rows)
    got = table.set_index("paradigm")
    assert got.loc["a", "onset_within_one"] == "2/3" and got.loc["a", "matched"] == "2/3"
    assert got.loc["b", "onset_within_one"] == "-" and got.loc["b", "matched"] == "0/3"
    assert got.loc["a", "found_onsets"] == "30,40,10" and "3 training seeds" in text
    assert got.loc["a", "lag_steps"] == "4,14,-16" and got.loc["a", "cue_step"] == 26
    assert "first seen at step 26" in text


def _config(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(list(argv))
    args.documents = args.documents or 500
    return demo.demo_config(args, demo.settings_from_args(args))


def _changed(a: dict, b: dict) -> list[str]:
    return sorted(f"{s}.{k}" for s in a for k in set(a[s]) | set(b[s]) if a[s].get(k) != b[s].get(k))


@pytest.mark.parametrize("argv, names", [
    (("--planting", "off"), ["testbed.planting"]),
    (("--confounded", "on"), ["testbed.confounded"]),
    (("--onset-fraction", "0.0"), ["testbed.onset_fraction"]),
    (("--number-cues", "off"), ["testbed.number_cues"]),
    (("--frequency", "3"), ["testbed.frequency"]),
    (("--attractor-mismatch", "0.5"), ["testbed.attractor_mismatch"]),
    (("--attractor-sentences", "0.2"), ["testbed.attractor_sentences"]),
])
def test_each_demo_control_changes_only_what_it_names(argv, names):
    base, other = _config(), _config(*argv)
    changed = [k for k in _changed(base, other) if k not in ("study.name", "report.title")]
    assert changed == names


def test_the_training_seed_changes_only_the_training(tmp_path):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args([])
    args.documents = 500
    s = demo.settings_from_args(args)
    assert _changed(demo.demo_config(args, s, 0), demo.demo_config(args, s, 3)) == ["train.seed"]


@pytest.mark.slow
def test_demo_seeds_end_to_end_at_the_smallest_size(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "grokscope.cli", "demo", "--out", str(out), "--seeds", "2", "--steps", "24",
           "--batch-size", "8", "--seq-len", "16", "--model-size", "tiny", "--checkpoint-every", "8",
           "--nouns", "4", "--pairs-per-paradigm", "12", "--frequency", "20", "--onset-fraction", "0.15",
           "--paradigms", "det_noun_agreement,subject_verb_agreement",
           "--set", "analyse.n_boot=20", "--set", "analyse.n_perm=20", "--set", "analyse.probes=false",
           "--set", "analyse.heads=false", "--set", "score.capture_hidden=false",
           "--set", "score.capture_attention=false"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(out / "ground_truth_across_seeds.csv")
    assert set(table["paradigm"]) == {"det_noun_agreement", "subject_verb_agreement"}
    assert (table["true_verdict"] == "delayed").all() and table["planted_onset"].notna().all()
    assert all(len(str(f).split(",")) == 2 for f in table["found_onsets"])
    for seed in (0, 1):
        cfg = (out / f"seed_{seed}" / "demo.toml").read_text()
        assert f"seed = {seed}" in cfg
    assert "ground truth vs findings across training seeds" in done.stdout
    pooled = pd.read_parquet(out / "pooled.parquet")
    assert "all" in set(pooled["group"]) and (pooled["k"] <= 2).all()
    assert "pooled over the seeds" in done.stdout


def test_findings_carry_the_descriptive_row_and_the_headline_verdict(tmp_path):
    study = Study(tmp_path)
    nan = float("nan")
    rows = [  # level, group, comparison, fit, gen, delay, status, effect, ci
        ("all", "all", "proxy", 10, 20, 10.0, "delayed", nan, nan, nan),
        ("paradigm", "p1", "proxy", 10, 30, 20.0, "delayed", nan, nan, nan),
        ("paradigm", "p1", "adjusted", nan, nan, nan, "delayed", 1.25, 0.5, 2.0),
        ("paradigm", "p2", "proxy", nan, nan, nan, "not learned", nan, nan, nan),
        ("paradigm", "p2", "adjusted", nan, nan, nan, "no estimate", nan, nan, nan),
    ]
    t = pd.DataFrame(rows, columns=["level", "group", "comparison", "fit_step", "gen_step", "delay_steps", "status",
                                    "effect", "effect_ci_low", "effect_ci_high"]).assign(n_train=5, n_val=7)
    store.write_parquet(study.analysis_dir / "timing.parquet", t)
    got = demo.findings(study.root)
    assert got["p1"] == {"fit_step": 10, "gen_step": 30, "delay_steps": 20.0, "status": "delayed", "n_train": 5,
                         "n_val": 7, "verdict": "delayed", "log_or": 1.25, "log_or_ci": (0.5, 2.0)}
    assert got["p2"]["verdict"] == "no estimate" and got["p2"]["log_or"] is None and got["p2"]["fit_step"] is None
    assert demo._log_or(got["p1"]) == "+1.25 [+0.50, +2.00]" and demo._log_or(got["p2"]) == "-"
