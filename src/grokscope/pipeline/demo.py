"""``grokscope demo``: the controlled-exposure testbed, end to end, offline.

1. generate grokscope's own grammar corpus + minimal pairs, with a planted exposure schedule
   (:mod:`grokscope.data.testbed`),
2. write a study TOML for it (``OUT/demo.toml``) and run the whole pipeline on it
   (:func:`grokscope.pipeline.run.run_study`: byte-level BPE trained on the corpus, a tiny GPT,
   phrases, exposure, scores, analysis, report),
3. print the ground truth (which phrases were planted, from when) next to what the analysis
   found (fit / generalisation step per paradigm).

Re-running with the same options resumes / does nothing; different options that change results
need a different ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from grokscope.core.errors import ConfigError
from grokscope.core.store import Study
from grokscope.data.testbed import FREQUENCY_WITHOUT_PLANTING, PARADIGMS, TestbedSettings

MODEL_SIZES: dict[str, dict[str, int]] = {
    # name -> GPT shape
    "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 2},
    "small": {"n_layer": 2, "n_embd": 128, "n_head": 4},
    "medium": {"n_layer": 4, "n_embd": 256, "n_head": 4},
}

# demo defaults (chosen so the whole demo takes a few minutes on 2 cores; see docs/demo.md)
DEFAULT_STEPS = 400
DEFAULT_BATCH = 192
DEFAULT_SEQ_LEN = 32
DEFAULT_LR = 5e-3

# the demo's testbed where it differs from the [testbed] defaults: a planted onset (the rule is
# learnable only from 40% of the corpus on, planted phrases from the start), so the true verdict is
# known ("delayed"); planted phrases 800x each, so that they are memorised before the onset;
# number-marking determiners before pair nouns, and every attractor of the background's agreement
# across a prepositional phrase of the other number (one that agrees tells nothing about the rule),
# so that after the onset the rule is learned within a checkpoint or two (docs/demo.md, "Why these
# defaults")
DEMO_TESTBED: dict[str, Any] = {"onset_fraction": 0.4, "frequency": 800, "number_cues": True,
                                "attractor_mismatch": 1.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from grokscope.core.flags import add_set_flag, add_setting_flag, flag_name

    parser.add_argument("--out", default="grokscope-demo", help="output directory (default: ./%(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the testbed and of training (default 0)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train N models (training seeds SEED..SEED+N-1, one testbed) in OUT/seed_K/ and report "
                             "how often each verdict matched the planted truth (default 1: one study in OUT)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="rows per step (default %(default)s)")
    parser.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN, help="context length (default %(default)s)")
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="small",
                        help="GPT shape: " + ", ".join(f"{k}={v['n_layer']}x{v['n_embd']}"
                                                       for k, v in MODEL_SIZES.items()))
    parser.add_argument("--lr", type=float, default=DEFAULT_LR,
                        help="learning rate, constant after the warm-up (default %(default)s)")
    parser.add_argument("--checkpoint-every", type=int, default=25,
                        help="checkpoints every N steps after the log-spaced ones (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch/BLAS in every stage (default 1: the demo's model is tiny, and one "
                             "thread per process is fastest on a busy machine; 0 = all cores)")
    group = parser.add_argument_group("testbed (what the corpus contains; the [testbed] settings)")
    for info in _testbed_flags():  # each control changes only the setting it names
        default: Any = DEMO_TESTBED.get(info.name, info.default)
        if info.name == "n_documents":
            default = 0  # enough documents for --steps x --batch-size rows
        help_text = {"frequency": f"occurrences of each planted phrase (default {default}; with --planting off, "
                                  f"--frequency {FREQUENCY_WITHOUT_PLANTING} keeps pairs unseen while the model "
                                  "learns)",
                     "n_documents": "documents in the corpus (default: enough for the training steps)",
                     }.get(info.name, "")
        add_setting_flag(group, info, help=help_text, dest=flag_name(info)[2:].replace("-", "_"), default=default)
    add_set_flag(parser)


def _testbed_flags() -> list[Any]:
    """The [testbed] settings the demo offers as flags (its own --seed sets the testbed's seed)."""
    from grokscope.core.settings import section_settings

    return [info for info in section_settings(TestbedSettings, "testbed") if info.name != "seed"]


def settings_from_args(args: argparse.Namespace) -> TestbedSettings:
    """The testbed the demo's flags describe."""
    from grokscope.core.flags import flag_name, flag_value

    values = {info.name: flag_value(info, getattr(args, flag_name(info)[2:].replace("-", "_")))
              for info in _testbed_flags()}
    s = TestbedSettings(seed=args.seed, **values)
    s.validate("testbed option")
    return s


def demo_config(args: argparse.Namespace, settings: TestbedSettings, train_seed: int | None = None) -> dict[str, Any]:
    """The study config (as a TOML-ready dict) the demo runs (``train_seed``: default ``--seed``)."""
    size = MODEL_SIZES[args.model_size]
    train_seed = args.seed if train_seed is None else train_seed
    tb = dict(dataclasses.asdict(settings))
    tb.update(enabled=True, out="testbed")
    return {
        "study": {"name": f"grokscope demo (planting {'on' if settings.planting else 'off'})", "out": "study",
                  "seed": args.seed},
        "testbed": tb,
        "data": {"tokenizer": "train-bpe", "vocab_size": 1024, "seq_len": args.seq_len, "seed": args.seed,
                 "shuffle": "none"},  # the testbed's document order is the planted schedule
        "train": {"enabled": True, **size, "batch_size": args.batch_size, "max_steps": args.steps,
                  "lr": args.lr, "warmup_steps": max(1, args.steps // 20), "min_lr_ratio": 1.0,
                  "log_spaced_until": min(16, args.steps), "checkpoint_every": args.checkpoint_every,
                  "seed": train_seed, "device": "cpu", "threads": args.threads},
        "benchmark": {"path": "testbed"},
        "score": {"batch_size": 128, "hidden_pairs": 400, "device": "cpu"},
        "analyse": {"n_boot": 200, "probe_pairs": 400, "probe_folds": 3, "seed": args.seed,
                    "keep_uninformative": True},  # planted by design: a small testbed still informs
        "report": {"title": f"grokscope demo — controlled exposure, planting {'on' if settings.planting else 'off'}"},
    }


def documents_for(steps: int, batch: int, seq_len: int, sentences_per_document: int) -> int:
    """Documents enough for ``steps x batch`` rows of ``seq_len + 1`` tokens (with 25% slack).
    A testbed sentence is about 7.5 tokens with the demo's BPE."""
    tokens_needed = steps * batch * (seq_len + 1) * 1.25
    tokens_per_doc = sentences_per_document * 7.5 + 1
    return max(200, int(tokens_needed / tokens_per_doc) + 1)


SETTLES_HEAP = True  # run_study settles (grokscope.core.heap)


def run(args: argparse.Namespace) -> int:
    if args.steps <= 0 or args.batch_size <= 0 or args.seq_len <= 0:
        raise ConfigError("demo: --steps, --batch-size and --seq-len must be positive")
    if args.seeds <= 0:
        raise ConfigError("demo: --seeds must be positive")
    if not args.documents:
        args.documents = documents_for(args.steps, args.batch_size, args.seq_len, args.sentences_per_document)
    settings = settings_from_args(args)
    if args.threads > 0:  # before torch / numpy start their thread pools
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    if args.seeds == 1:
        _run_one(args, settings, Path(args.out), args.seed)
        return 0
    from grokscope.core.store import write_text
    from grokscope.pipeline import truth

    rows, studies = [], []
    for k in range(args.seeds):
        seed = args.seed + k
        study = _run_one(args, settings, Path(args.out) / f"seed_{seed}", seed)
        studies.append(study)
        rows += truth.seed_rows(study, study.testbed_dir, args.batch_size, seed)
    table, text = truth.across_seeds(rows)
    if not table.empty:
        table.to_csv(Path(args.out) / "ground_truth_across_seeds.csv", index=False)
    write_text(Path(args.out) / "ground_truth_across_seeds.txt", text + "\n")
    print("\nground truth vs findings across training seeds\n" + text)
    print(f"\n(also in {Path(args.out) / 'ground_truth_across_seeds.txt'})")
    timing_paths = [s.analysis_dir / "timing.parquet" for s in studies]
    if all(p.exists() for p in timing_paths):  # the headline pooled over the seeds (grokscope pool)
        import pandas as pd

        from grokscope.analyse.pooling import write_pooled

        names = [f"{s.root.parent.name}/{s.root.name}" for s in studies]  # seed_K/study
        pooled_txt = write_pooled([pd.read_parquet(p) for p in timing_paths], names, Path(args.out))
        print("\nheadline verdicts pooled over the seeds (random effects)\n" + pooled_txt)
    return 0


def _run_one(args: argparse.Namespace, settings: TestbedSettings, out: Path, train_seed: int) -> Study:
    """One demo study in ``out`` (training seed ``train_seed``); prints its ground truth table."""
    import tomli_w

    from grokscope.core.config import load_config
    from grokscope.core.flags import given_settings
    from grokscope.core.store import write_text
    from grokscope.pipeline.run import format_summary, run_study

    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "demo.toml"
    config = demo_config(args, settings, train_seed)
    for key, value in given_settings(args).items():  # --set section.key=value
        section, name = key.split(".")
        config.setdefault(section, {})[name] = value
    text = "# written by `grokscope demo`; re-run it with `grokscope run demo.toml`\n" + tomli_w.dumps(config)
    if not config_path.exists() or config_path.read_text(encoding="utf-8") != text:
        _refuse_if_study_differs(text, config_path)
        write_text(config_path, text)
    cfg = load_config(config_path)
    print(f"grokscope demo: {out.resolve()} (planting {'on' if settings.planting else 'off'}, "
          f"{settings.n_documents} documents, {args.steps} steps, model {args.model_size}, training seed "
          f"{train_seed})")
    results = run_study(cfg)
    print()
    print(format_summary(results))
    if all(r.status in ("done", "skipped") for r in results):
        print("\nnothing to do: this demo is already complete (use another --out for new settings).")
    study = Study.for_config(cfg.resolved())
    table = ground_truth_table(study.testbed_dir, study)
    write_text(out / "ground_truth_vs_findings.txt", table + "\n")
    print()
    print(table)
    print(f"\n(also in {out / 'ground_truth_vs_findings.txt'})")
    report, root = study.report_path, out.resolve()  # shown under --out as given, like the line above
    print(f"report: {out / report.relative_to(root) if report.is_relative_to(root) else report}")
    return study


def _refuse_if_study_differs(text: str, config_path: Path) -> None:
    """Before overwriting OUT/demo.toml: refuse options that would change an existing study's results."""
    import tomllib

    from grokscope.core.config import config_from_dict
    from grokscope.pipeline.saved import changed_keys

    new = config_from_dict(tomllib.loads(text), where=str(config_path))
    new.source = str(config_path.resolve())
    saved = Study(new.study_dir).config_path
    if not saved.exists():
        return
    old = config_from_dict(tomllib.loads(saved.read_text(encoding="utf-8")), where=str(saved))
    diff = changed_keys(old.to_dict(), new.to_dict())
    if diff:
        raise ConfigError(
            f"{config_path.parent} holds a demo run with other settings ({', '.join(diff)}); "
            "use another --out, or remove that directory"
        )


# --------------------------------------------------------------------------------------
# ground truth next to findings
# --------------------------------------------------------------------------------------
def findings(study_root: Path) -> dict[str, dict[str, Any]]:
    """paradigm -> {fit_step, gen_step, delay_steps, status, n_train, n_val} of the descriptive
    comparison "proxy", plus the headline ``verdict`` (status of the comparison "adjusted") with its
    ``log_or`` and interval ``log_or_ci`` when the analysis wrote it."""
    import pandas as pd

    from grokscope.analyse.adjusted import basis_columns

    path = Study(study_root).analysis_dir / "timing.parquet"
    if not path.exists():
        return {}
    t = pd.read_parquet(path)
    t = t[t["level"] == "paradigm"]
    out: dict[str, dict[str, Any]] = {}
    for row in t[t["comparison"] == "proxy"].itertuples(index=False):
        out[str(row.group)] = {
            "fit_step": None if pd.isna(row.fit_step) else int(row.fit_step),
            "gen_step": None if pd.isna(row.gen_step) else int(row.gen_step),
            "delay_steps": None if pd.isna(row.delay_steps) else float(row.delay_steps),
            "status": str(row.status), "n_train": int(row.n_train), "n_val": int(row.n_val),
        }
    if "effect" in t.columns:
        for row in t[t["comparison"] == "adjusted"].itertuples(index=False):
            f = out.setdefault(str(row.group), {})
            f["verdict"] = str(row.status)
            f["log_or"] = None if pd.isna(row.effect) else float(row.effect)
            f["log_or_ci"] = (None if pd.isna(row.effect_ci_low) else
                              (float(row.effect_ci_low), float(row.effect_ci_high)))
            eff_col, _, lo_col, hi_col, _ = basis_columns(getattr(row, "basis", None))
            if eff_col != "effect":  # correctness separated: the margin model decided
                f["margin"] = float(getattr(row, eff_col))
                f["margin_ci"] = (float(getattr(row, lo_col)), float(getattr(row, hi_col)))
    return out


def observed_exposure(study_root: Path, truth: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """paradigm -> {seen: pairs whose phrase the exposure scan found by the last checkpoint,
    seen_planted: how many of those were planted, withheld_seen: withheld pairs found (must be 0)}."""
    import pandas as pd

    path = Study(study_root).exposure_path
    if not path.exists():
        return {}
    e = pd.read_parquet(path, columns=["uid", "pair_id", "good_first_step"])
    planted = {(t["uid"], int(t["pair_id"])) for t in truth if t["planted"]}
    out: dict[str, dict[str, Any]] = {}
    for row in e.itertuples(index=False):
        o = out.setdefault(str(row.uid), {"seen": 0, "seen_planted": 0, "withheld_seen": 0})
        if pd.notna(row.good_first_step):
            o["seen"] += 1
            if (row.uid, int(row.pair_id)) in planted:
                o["seen_planted"] += 1
            else:
                o["withheld_seen"] += 1
    return out


def _log_or(f: dict[str, Any]) -> str:
    if f.get("log_or") is None and f.get("margin") is not None:  # "m": the margin effect (log-prob)
        lo, hi = f["margin_ci"]
        return f"m{f['margin']:+.2f} [{lo:+.2f}, {hi:+.2f}]"
    if f.get("log_or") is None:
        return "-"
    ci = f.get("log_or_ci")
    return f"{f['log_or']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def ground_truth_table(testbed_dir: Path, study: Any) -> str:
    from grokscope.core.store import read_json

    gt = read_json(Path(testbed_dir) / "ground_truth.json")
    found = findings(study.root)
    seen = observed_exposure(study.root, gt["pairs"])
    s = gt["settings"]
    lines = [
        "ground truth (testbed)                                   | found by the analysis: proxy-train vs proxy-val "
        "(descriptive) | headline verdict (adjusted)",
        f"{'paradigm':<24}{'pairs':>6}{'planted':>8}{'withheld':>9}{'seen*':>7} | "
        f"{'n_train':>7}{'n_val':>6}{'fit step':>9}{'gen step':>9}{'delay':>7}  {'status':<12}| "
        f"{'log OR [95% CI]':<22}verdict",
    ]

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)

    for uid, row in gt["summary"].items():
        f = found.get(uid, {})
        o = seen.get(uid)
        seen_txt = "-" if o is None else str(o["seen"]) + ("!" if o["withheld_seen"] else "")
        lines.append(
            f"{uid:<24}{row['pairs']:>6}{row['planted_pairs']:>8}{row['withheld_pairs']:>9}{seen_txt:>7} | "
            f"{fmt(f.get('n_train')):>7}{fmt(f.get('n_val')):>6}"
            f"{fmt(f.get('fit_step')):>9}{fmt(f.get('gen_step')):>9}{fmt(f.get('delay_steps')):>7}  "
            f"{f.get('status', 'no analysis'):<12}| {_log_or(f):<22}{f.get('verdict', '-')}"
        )
    lines.append("  log OR: effect of having seen the critical phrase on correctness over the paradigm's rise window, "
                 "adjusted for word frequencies, length and distance, clustered by phrase (docs/analysis.md); "
                 "m: the margin effect (log-prob) where every seen pair was right and the correctness fit separated.")
    sched = f"planted phrases occur {s['frequency']}x each, from {s['plant_start']:.0%} of the corpus on"
    if s["late_fraction"]:
        sched += f"; {s['late_fraction']:.0%} of them only from {s['late_start']:.0%}"
    lines.append("* pairs whose critical phrase the exposure scan found by the last checkpoint "
                 "('!' = a withheld phrase was found: the planting leaked). n_train/n_val at the last checkpoint.")
    lines.append(f"  Planting {'on' if s['planting'] else 'off'}: {sched}.")
    if s.get("onset_fraction"):
        lines.append(f"  Planted onset: the background carries the agreement cue only from {s['onset_fraction']:.0%} "
                     f"of the corpus (document {gt.get('onset_document')}) on; planted phrases occur from the start.")
    if s.get("confounded"):
        lines.append("  Confounded: good and bad phrases planted alike (exposure has no effect), frequent units seen "
                     "earlier and more frequent in the background. Expected verdict: 'no delay'.")
    elif s["planting"]:
        lines.append("  Expected: where the rule has to be inferred, proxy-train (planted phrases) reaches the "
                     "criterion before proxy-val (withheld phrases): status 'delayed', a positive adjusted log OR.")
    else:
        lines.append("  Expected: no systematic gap: every unit is planted, so proxy-val holds only pairs not seen yet "
                     "(by chance of position), and it should track proxy-train.")
    return "\n".join(lines)


__all__ = ["add_arguments", "run", "demo_config", "ground_truth_table", "findings", "PARADIGMS"]
