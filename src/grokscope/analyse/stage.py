"""``grokscope analyse STUDY``: proxy splits, curves, fit/generalisation steps and delay
(:mod:`grokscope.analyse.dynamics`), concept-vector probes (:mod:`grokscope.analyse.probes`) and attention heads
(:mod:`grokscope.analyse.heads`), written to ``STUDY/analysis/*.parquet`` per docs/CONTRACTS.md.

Inputs: ``phrases.parquet``, ``exposure.parquet``, ``scores/step_*.parquet`` (+ ``.hidden.npy``,
``.attention.npy``). All score files must share one ``benchmark_fingerprint`` and one
``tokenizer_fingerprint`` (and agree with phrases/exposure); otherwise nothing is mixed and a
:class:`~grokscope.core.errors.DataError` names the disagreeing files. Re-running with unchanged
inputs and settings is a no-op (``analysis/manifest.json`` records what the outputs came from).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from grokscope.analyse.adjusted import basis_columns
from grokscope.analyse.inside import inside_the_model, start_inside
from grokscope.analyse.support_stage import SUPPORT_OUTPUTS, informative_pairs, support_outputs
from grokscope.core import store
from grokscope.core.config import AnalyseSection, StudyConfig
from grokscope.core.errors import DataError, MissingStageError
from grokscope.core.stage import CommandLine, Flag, Stage
from grokscope.core.store import Study

OUTPUTS = ("curves", "timing", "event_study", "probes", "concepts", "concept_summary", "heads",
           "head_concentration", "ablation", "ablation_heads", "withheld", "withheld_curves", *SUPPORT_OUTPUTS)


# ---------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------
def run(cfg: StudyConfig, study: Study) -> None:
    """The analysis of ``study`` with the ``[analyse]`` settings (a no-op when its outputs are up to date)."""
    if not study.root.is_dir():
        raise DataError(f"{study.root}: study directory not found")
    print(analyse_study(study, cfg.analyse, force=cfg.options.force, progress=cfg.options.progress))


STAGE = Stage(
    name="analyse", sections=("analyse",), run=run,
    inputs=("phrases_path", "exposure_path", "scores_dir"), outputs=lambda s: [s.analysis_dir],
    done=Study.has_analysis, libraries=("pandas", "torch", "sklearn.linear_model", "numba", "statsmodels.api"),
    cli=CommandLine(flags=(Flag("study.out", "study", "study directory (holds phrases.parquet, exposure.parquet, "
                                                      "scores/)", positional=True),),
                    config="study", force=True),
)
run_stage = STAGE.run_config


# ---------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------
@dataclass
class StudyInputs:
    phrases: pd.DataFrame
    exposure: pd.DataFrame
    steps: np.ndarray  # [T]
    tokens: np.ndarray  # [T]
    correct: np.ndarray  # [n, T] bool (all pairs, benchmark order)
    hidden_rows: list[np.ndarray]  # per step [n] int32
    score_meta: list[dict[str, Any]]
    files: list[Path]
    margin: np.ndarray | None = None  # [n, T] good - bad log-prob


def load_inputs(study: Study) -> StudyInputs:
    """Read and cross-check phrases, exposure and every score file of a study."""
    root = study.root
    study.require(study.phrases_path, "phrases table (phrases.parquet)",
                  f"grokscope phrases --benchmark BENCHMARK --out {root}  (or: grokscope run STUDY.toml)")
    study.require(study.exposure_path, "exposure table (exposure.parquet)",
                  f"grokscope exposure --phrases {root} --tokens TOKENS --checkpoints CHECKPOINTS  "
                  "(or: grokscope run STUDY.toml)")
    steps = study.scored_steps()
    if not steps:
        raise MissingStageError("checkpoint scores (scores/step_*.parquet)", str(study.scores_dir),
                                f"grokscope score --checkpoints CHECKPOINTS --out {root}  "
                                "(or: grokscope run STUDY.toml)")
    phrases, p_meta = store.read_table(study.phrases_path, f"grokscope phrases --benchmark BENCHMARK --out {root} "
                                                           "--force")
    exposure, e_meta = store.read_table(study.exposure_path, f"grokscope exposure --phrases {root} --tokens TOKENS "
                                                             "--checkpoints CHECKPOINTS --force")
    _check_columns(phrases, ("uid", "pair_id", "phenomenon", "critical_phrase", "critical_word", "supported"),
                   study.phrases_path)
    _check_columns(exposure, ("uid", "pair_id", "supported", "good_first_step"), study.exposure_path)
    _check_alignment(phrases, exposure, study.exposure_path, study.phrases_path)

    rescore = f"grokscope score --out {root} ... (an unreadable score table is scored again)"
    metas = [store.read_metadata(study.score_path(s), rescore) for s in steps]
    _check_fingerprints(study, steps, metas, p_meta, e_meta)
    n = len(phrases)
    correct = np.zeros((n, len(steps)), dtype=bool)
    margin = np.zeros((n, len(steps)))
    hidden_rows, tokens = [], []
    for j, (s, meta) in enumerate(zip(steps, metas)):
        path = study.score_path(s)
        table, _ = store.read_table(path, rescore, ["uid", "pair_id", "correct", "hidden_row", "good_logprob",
                                                    "bad_logprob"])
        _check_alignment(phrases, table, path, study.phrases_path)
        correct[:, j] = table["correct"].to_numpy(dtype=bool)
        margin[:, j] = table["good_logprob"].to_numpy(np.float64) - table["bad_logprob"].to_numpy(np.float64)
        hidden_rows.append(table["hidden_row"].to_numpy(dtype=np.int64))
        tok = meta.get("tokens_seen")
        if tok is None:
            tok = s * int(e_meta.get("rows_per_step", 0)) * int(e_meta.get("row_len", 0))
        tokens.append(int(tok))
    return StudyInputs(phrases, exposure, np.array(steps, np.int64), np.array(tokens, np.int64), correct,
                       hidden_rows, metas,
                       [study.phrases_path, study.exposure_path] + [study.score_path(s) for s in steps], margin)


def _check_columns(df: pd.DataFrame, cols: tuple[str, ...], path: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; see docs/CONTRACTS.md for the expected columns")


def _check_alignment(ref: pd.DataFrame, other: pd.DataFrame, path: Path, ref_path: Path) -> None:
    if len(other) != len(ref):
        raise DataError(f"{path}: has {len(other)} rows but {ref_path.name} has {len(ref)}; "
                        "both must hold the same pairs in benchmark order (re-run the stage that wrote it)")
    same = (other["uid"].to_numpy(dtype=object) == ref["uid"].to_numpy(dtype=object)) & (
        other["pair_id"].to_numpy(dtype=np.int64) == ref["pair_id"].to_numpy(dtype=np.int64))
    if not same.all():
        i = int(np.argmin(same))
        raise DataError(f"{path}: row {i} is pair ({other['uid'].iloc[i]}, {other['pair_id'].iloc[i]}) but "
                        f"{ref_path.name} row {i} is ({ref['uid'].iloc[i]}, {ref['pair_id'].iloc[i]}); "
                        "expected the same pairs in the same order")


def _check_fingerprints(study: Study, steps: list[int], metas: list[dict[str, Any]],
                        p_meta: dict[str, Any], e_meta: dict[str, Any]) -> None:
    for key, what in (("benchmark_fingerprint", "benchmarks"), ("tokenizer_fingerprint", "tokenizers")):
        values: dict[Any, list[int]] = {}
        for s, m in zip(steps, metas):
            values.setdefault(m.get(key), []).append(s)
        if len(values) > 1:
            parts = "; ".join(f"{key}={v!r}: {', '.join(store.step_name(s) + '.parquet' for s in ss[:4])}"
                              f"{' …' if len(ss) > 4 else ''}" for v, ss in values.items())
            raise DataError(f"{study.scores_dir}: checkpoints were scored with different {what} ({parts}); "
                            f"refusing to mix them -- re-score every checkpoint with the same {what[:-1]}")
        (value,) = values
        refs = [(study.exposure_path.name, e_meta)]
        if key == "benchmark_fingerprint":
            refs.append((study.phrases_path.name, p_meta))
        for name, meta in refs:
            other = meta.get(key)
            if other and value and other != value:  # "" or None = not recorded
                raise DataError(f"{study.scores_dir}: scores have {key}={value!r} but {name} has {other!r}; "
                                f"the stages were run with different {what} -- re-run them with the same one")


def window_counts(exposure: pd.DataFrame, steps: np.ndarray, path: Path) -> np.ndarray:
    """``[n, T]`` cumulative good-phrase count in window(t) at every scored step."""
    missing = [int(s) for s in steps if f"good_count_{int(s)}" not in exposure.columns]
    if missing:
        raise DataError(f"{path}: no column good_count_{missing[0]} (and {len(missing) - 1} more steps); the "
                        f"exposure stage must count at every scored checkpoint -- re-run grokscope exposure "
                        f"with --checkpoints covering steps {missing[:5]}")
    cols = [f"good_count_{int(s)}" for s in steps]
    return exposure[cols].fillna(0).to_numpy(dtype=np.int64)


def match_values(study: Study, phrases: pd.DataFrame, match_on: str) -> tuple[np.ndarray, str]:
    """Per pair: frequency of the critical word in the token stream, or the critical phrase's
    length in words. ``auto`` uses the frequency when the study has a prepared ``tokens/``."""
    has_tokens = study.has_tokens() and (study.tokens_dir / "tokenizer").exists()
    if match_on == "word_frequency" and not has_tokens:
        raise MissingStageError("prepared token stream with its tokenizer (for critical-word frequencies; "
                                "or set [analyse] match_on = \"phrase_length\")",
                                str(study.tokens_dir), "grokscope prepare (or: grokscope run STUDY.toml)")
    if match_on == "phrase_length" or (match_on == "auto" and not has_tokens):
        lengths = phrases["critical_phrase"].fillna("").astype(str).str.split().str.len()
        return lengths.to_numpy(dtype=np.float64), "phrase_length"
    from grokscope.core.tokenizer import load_tokenizer

    tok = load_tokenizer(study.tokens_dir / "tokenizer")
    unigram = unigram_counts(study.tokens_dir / "tokens.npy")
    return word_frequencies(phrases["critical_word"].fillna("").astype(str).to_numpy(), tok, unigram), "word_frequency"


def unigram_counts(tokens_path: Path, chunk_rows: int = 1 << 16) -> np.ndarray:
    """Token-id counts over the whole prepared stream (memory-mapped, chunked)."""
    arr = np.load(tokens_path, mmap_mode="r")
    counts = np.zeros(1, dtype=np.int64)
    for lo in range(0, arr.shape[0], chunk_rows):
        c = np.bincount(np.asarray(arr[lo:lo + chunk_rows]).ravel())
        if c.size > counts.size:
            c[:counts.size] += counts
            counts = c
        else:
            counts[:c.size] += c
    return counts


def word_frequencies(words: np.ndarray, tokenizer: Any, unigram: np.ndarray) -> np.ndarray:
    """Stream frequency of each word as it appears mid-text (" word"): the count of its token
    if it is one token, else the count of its rarest token (an upper bound)."""
    out = np.zeros(len(words))
    cache: dict[str, float] = {}
    for i, w in enumerate(words):
        if w not in cache:
            ids = tokenizer(" " + w, add_special_tokens=False)["input_ids"] if w else []
            cache[w] = float(min((unigram[t] if t < unigram.size else 0) for t in ids)) if ids else 0.0
        out[i] = cache[w]
    return out


# ---------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------
def analyse_study(study: Study, a: AnalyseSection, force: bool = False, progress: bool = False) -> str:
    """Run every analysis of a study and write its tables; returns the summary text.

    BLAS runs single-threaded: the matrices are small or skinny, and on a shared machine extra
    BLAS threads only add contention (measured: 10x slower SVDs under load). Only BLAS: torch's
    OpenMP pool (the ablation's forward passes) keeps its threads even when an earlier stage of
    ``grokscope run`` loaded torch before this limit is set."""
    from threadpoolctl import threadpool_limits

    if a.probes:  # load scipy's/sklearn's own BLAS first: threadpool_limits only limits loaded ones
        import sklearn.linear_model  # noqa: F401
    with threadpool_limits(limits=1, user_api="blas"):
        return _analyse_study(study, a, force, progress)


def _analyse_study(study: Study, a: AnalyseSection, force: bool, progress: bool) -> str:
    from grokscope.analyse import dynamics as dy

    t0 = time.perf_counter()
    inputs = load_inputs(study)
    signature = _signature(inputs.files, a)
    manifest_path = study.analysis_dir / "manifest.json"
    if not force and manifest_path.exists() and store.read_json(manifest_path).get("signature") == signature \
            and (study.analysis_dir / "timing.parquet").exists():
        timing = pd.read_parquet(study.analysis_dir / "timing.parquet")
        return "analysis is up to date (use --force to recompute)\n" + summary_table(timing)

    supported = (inputs.phrases["supported"].fillna(False).to_numpy(dtype=bool)
                 & inputs.exposure["supported"].fillna(False).to_numpy(dtype=bool))
    keep = np.flatnonzero(supported)
    if keep.size == 0:
        raise DataError(f"{study.phrases_path}: no supported pairs (every critical phrase failed); nothing to analyse")
    keep, informative_note = informative_pairs(inputs, keep, a, study.exposure_path, study.analysis_dir)
    counts = window_counts(inputs.exposure, inputs.steps, study.exposure_path)[keep]
    match, match_on = match_values(study, inputs.phrases.iloc[keep], a.match_on)
    if match_on == "word_frequency":  # count the critical word outside the planted phrase itself
        match = np.maximum(match - inputs.exposure["good_total_count"].fillna(0).to_numpy(np.float64)[keep], 0.0)
    from grokscope.analyse.covariates import cluster_ids

    table = dy.PairTable(
        steps=inputs.steps, tokens=inputs.tokens, correct=inputs.correct[keep], counts=counts, match_value=match,
        uid=inputs.phrases["uid"].to_numpy(dtype=object)[keep],
        phenomenon=inputs.phrases["phenomenon"].to_numpy(dtype=object)[keep],
        cluster=cluster_ids(inputs.phrases.iloc[keep], a.cluster_by),
    )
    criterion = dy.Criterion(a.criterion, a.criterion_level, a.criterion_fraction, a.min_pairs,
                             a.floor_checkpoints, a.ceiling_share)
    opts = dy.DynamicsOptions(min_count=a.min_count, criterion=criterion, n_boot=a.n_boot, n_perm=a.n_perm,
                              ci=a.ci, match_bins=a.match_bins, seed=a.seed, onset_boot=a.onset_boot)
    work = start_inside(study, inputs, keep, a)  # in a worker process while the verdicts are estimated
    result = dy.analyse_dynamics(table, opts, progress=progress)
    from grokscope.analyse import verdicts

    result.timing, events = verdicts.headline(study, inputs, keep, table, result.timing, a, progress)
    meta = {"criterion": criterion.as_dict(), "min_count": a.min_count, "ci": a.ci, "n_boot": a.n_boot,
            "n_perm": a.n_perm, "match_on": match_on, "match_bins": a.match_bins, "n_pairs": int(keep.size),
            "n_unsupported": int(len(supported) - keep.size), "steps": [int(s) for s in inputs.steps]}
    out = study.analysis_dir
    store.write_parquet(out / "curves.parquet", result.curves, metadata=meta)
    if inputs.margin is not None:
        from grokscope.analyse.margins import margin_curves

        clusters = table.cluster if table.cluster is not None else np.arange(keep.size)
        store.write_parquet(out / "margin_curves.parquet",
                            margin_curves(inputs.margin[keep], counts, a.min_count, table.phenomenon, clusters,
                                          inputs.steps, inputs.tokens, a.ci), metadata=meta)
    store.write_parquet(out / "timing.parquet", result.timing, metadata=meta)
    if events is not None:
        store.write_parquet(out / "event_study.parquet", events, metadata=meta)

    notes = [informative_note, *support_outputs(inputs, keep, a, table, opts, result, study.exposure_path, out)]
    gen_all = result.timing.query("level == 'all' and comparison == 'proxy'")["gen_step"]
    gen_step = None if gen_all.empty or pd.isna(gen_all.iloc[0]) else int(gen_all.iloc[0])
    from grokscope.analyse import withheld as wh

    arms = wh.withheld_arms(study.tokens_dir, inputs.phrases.iloc[keep])
    if arms is not None:  # the stream withheld a random share of the phrases: the randomised comparison
        phrase = inputs.phrases["critical_phrase"].fillna("").astype(str).str.strip().to_numpy(dtype=object)[keep]
        w_sum, w_curves = wh.withheld_comparison(inputs.correct[keep], arms, phrase, table.uid, inputs.steps,
                                                 criterion, a.n_boot, a.ci, a.seed, inputs.tokens)
        store.write_parquet(out / "withheld.parquet", w_sum, metadata=meta)
        store.write_parquet(out / "withheld_curves.parquet", w_curves, metadata=meta)
        notes.append(wh.summary_line(w_sum))
    notes += inside_the_model(study, inputs, keep, a, result.timing, gen_step, meta, work)
    store.write_json(manifest_path, {"signature": signature, "settings": dataclasses.asdict(a),
                                     "seconds": round(time.perf_counter() - t0, 2), "match_on": match_on})
    text = summary_table(result.timing)
    notes = [x for x in notes if x]
    return text + ("\n" + "\n".join(notes) if notes else "") + f"\nanalysis written to {out} " \
        f"({time.perf_counter() - t0:.1f} s)"


def _signature(files: list[Path], a: AnalyseSection) -> str:
    h = hashlib.sha256(json.dumps(dataclasses.asdict(a), sort_keys=True).encode())
    files = files + [files[0].parent / "tokens" / "tokens.npy"]  # critical-word frequencies
    for f in files:
        for p in (f, f.with_suffix("").with_suffix(".hidden.npy"), f.with_suffix("").with_suffix(".attention.npy")):
            if p.exists():
                st = p.stat()
                h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()




def summary_table(timing: pd.DataFrame, max_rows: int = 40) -> str:
    """Terminal summary: per level all/phenomenon group, the headline ``adjusted`` verdict (its effect
    on correctness as a log odds ratio with interval, q, E-value), then the descriptive comparisons."""
    sub = timing[timing["level"].isin(["all", "phenomenon"])]
    header = (f"{'group':<28} {'comparison':<12} {'fit':>8} {'gen':>8} {'delay':>8} {'delay CI':>19} "
              f"{'p':>7} {'q':>7}  status")
    lines = [header, "-" * len(header)]

    def fmt(v: Any) -> str:
        return "—" if v is None or pd.isna(v) else str(int(v))

    def fci(lo: float, hi: float) -> str:
        if pd.isna(lo) and pd.isna(hi):
            return "—"
        if np.isposinf(lo):  # censored in every resample
            return "never reached"
        f = lambda x: "∞" if np.isinf(x) else ("—" if pd.isna(x) else f"{x:.0f}")  # noqa: E731
        return f"[{f(lo)}, {f(hi)}]"

    def fp(v: Any) -> str:
        return "—" if v is None or pd.isna(v) else f"{v:.3f}"

    order = {"adjusted": 0, "proxy": 1, "fixed": 2, "matched": 3}
    sub = sub.assign(_o=sub["comparison"].map(order).fillna(9)).sort_values(["_o"], kind="stable")
    sub = sub.assign(_g=sub["group"].map({g: i for i, g in enumerate(pd.unique(sub["group"]))}))
    sub = sub.sort_values(["_g", "_o"], kind="stable")
    for _, r in sub.head(max_rows).iterrows():
        comp = str(r["comparison"]) + ("" if r["comparison"] == "adjusted" else "*")
        if r["comparison"] == "adjusted":
            eff_col, _, lo_col, hi_col, p_col = basis_columns(r.get("basis"))  # margin where correctness separated
            eff, lo, hi, p = r.get(eff_col), r.get(lo_col), r.get(hi_col), r.get(p_col)
            mid = "—" if eff is None or pd.isna(eff) else f"{'margin' if eff_col != 'effect' else 'logOR'} {eff:+.2f}"
            ci = fci(np.nan, np.nan) if lo is None or pd.isna(lo) else f"[{lo:+.2f}, {hi:+.2f}]"
            ev = r.get("e_value")
            tail = "" if ev is None or pd.isna(ev) else f" (E-value {ev:.2f})"
            lines.append(f"{str(r['group'])[:28]:<28} {comp:<12} {'':>8} {'':>8} {mid:>8} {ci:>19} "
                         f"{fp(p):>7} {fp(r.get('q')):>7}  {r['status']}{tail}")
            continue
        lines.append(f"{str(r['group'])[:28]:<28} {comp:<12} {fmt(r['fit_step']):>8} {fmt(r['gen_step']):>8} "
                     f"{fmt(r['delay_steps']):>8} {fci(r['delay_ci_low'], r['delay_ci_high']):>19} "
                     f"{fp(r['p_lead']):>7} {fp(r.get('q')):>7}  {r['status']}")
    if len(sub) > max_rows:
        lines.append(f"… {len(sub) - max_rows} more rows in analysis/timing.parquet")
    lines.append("* descriptive comparison; the verdict is 'adjusted' (effect of having seen the phrase, adjusted "
                 "for its covariates, clustered by phrase; q = Benjamini-Hochberg over all rows)")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    from grokscope.cli import main

    sys.exit(main(["analyse", *sys.argv[1:]]))
