"""The concept table of a study: :mod:`grokscope.analyse.concept`'s measures per checkpoint,
phenomenon and layer (``analysis/concepts.parquet``), and their before/after summary aligned on
each phenomenon's own generalisation (``analysis/concept_summary.parquet``).

Proxy-train(t) = captured pairs whose critical phrase occurred >= ``min_count`` times in
window(t); proxy-val(t) = the other captured pairs of the phenomenon. The onsets come in as a
``{phenomenon: generalisation tokens}`` mapping (:func:`phenomenon_onsets` reads them from the
timing table), so the way onsets are computed can change without touching this module.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from grokscope.analyse import concept as cv

if TYPE_CHECKING:
    from grokscope.analyse.stage import StudyInputs
    from grokscope.core.config import AnalyseSection
    from grokscope.core.store import Study


@dataclass(frozen=True)
class ConceptOptions:
    min_count: int = 1
    min_pairs: int = 10  # fewer train or val pairs -> AUROC undefined (NaN)
    n_folds: int = 5
    rank_pairs: int = 100  # pairs per effective-rank subsample (equal at every checkpoint)
    rank_repeats: int = 8
    window_log: float = 0.0  # before/after window width in log-tokens; 0 = widest that fits both sides
    logreg: bool = False
    ci: float = 0.95
    seed: int = 0


@dataclass
class PairInfo:
    """Per pair of the study (benchmark order)."""

    phenomenon: np.ndarray  # [n] object
    sign: np.ndarray  # [n] +1/-1 form convention
    word: np.ndarray  # [n] object, the grouping of the logistic folds
    counts: np.ndarray  # [n, T] window counts

    @classmethod
    def from_phrases(cls, phrases: pd.DataFrame, counts: np.ndarray) -> PairInfo:
        good = phrases["critical_word"].fillna("").astype(str).to_numpy(dtype=object)
        bad = (phrases["bad_critical_word"] if "bad_critical_word" in phrases.columns
               else phrases["critical_word"]).fillna("").astype(str).to_numpy(dtype=object)
        return cls(phrases["phenomenon"].astype(str).to_numpy(dtype=object), cv.orientation(good, bad),
                   cv.lemma_groups(good, bad), counts)


def phenomenon_onsets(timing: pd.DataFrame, comparison: str = "proxy") -> dict[str, float | None]:
    """``{phenomenon: generalisation tokens}`` from the timing table (None where not reached)."""
    sub = timing[(timing["level"] == "phenomenon") & (timing["comparison"] == comparison)]
    out: dict[str, float | None] = {}
    for _, r in sub.iterrows():
        v = r.get("gen_tokens")
        out[str(r["group"])] = None if v is None or pd.isna(v) else float(v)
    return out


def checkpoint_rows(step: int, states: np.ndarray, pairs: np.ndarray, info: PairInfo, j: int,
                    o: ConceptOptions, rng: np.random.Generator) -> list[dict]:
    """All measures at one checkpoint. ``states`` ``[m, 2, n_layer+1, d]`` are the states of
    ``pairs`` (``[m]`` indices into ``info``'s arrays)."""
    rows = []
    phen, sign, word = info.phenomenon[pairs], info.sign[pairs], info.word[pairs]
    seen_all = info.counts[pairs, j] >= o.min_count
    for ph in np.unique(phen):
        idx = np.flatnonzero(phen == ph)
        tr, va = idx[seen_all[idx]], idx[~seen_all[idx]]
        for layer in range(states.shape[2]):
            g, b = states[:, 0, layer], states[:, 1, layer]
            good, bad = np.asarray(g[idx], np.float64), np.asarray(b[idx], np.float64)
            row: dict = {"step": int(step), "phenomenon": str(ph), "layer": layer, "n_pairs": idx.size,
                         "n_train": tr.size, "n_val": va.size, "auroc": float("nan"), "auroc_raw": float("nan")}
            if tr.size >= o.min_pairs and va.size >= o.min_pairs:
                row["auroc"] = cv.mean_direction_auroc(g[tr], b[tr], sign[tr], g[va], b[va], sign[va])
                ones = np.ones(len(sign))  # unoriented: singular- and plural-good pairs may cancel
                row["auroc_raw"] = cv.mean_direction_auroc(g[tr], b[tr], ones[tr], g[va], b[va], ones[va])
            row.update(_logreg(good, bad, sign[idx], word[idx], o, rng))
            est = cv.subsampled_rank(cv.concept_vectors(good, bad, sign[idx]), good, o.rank_pairs,
                                     o.rank_repeats, rng)
            row.update(dataclasses.asdict(est))
            row["eff_rank_ratio"] = est.eff_rank / est.baseline_eff_rank if est.baseline_eff_rank > 0 else np.nan
            rows.append(row)
    return rows


def _logreg(good: np.ndarray, bad: np.ndarray, sign: np.ndarray, word: np.ndarray, o: ConceptOptions,
            rng: np.random.Generator) -> dict[str, float]:
    if not o.logreg or len(np.unique(word)) < 2 or len(good) < 2 * o.n_folds:
        return {"logreg_grouped": float("nan"), "logreg_random": float("nan")}
    acc = cv.grouped_logreg_accuracy(good, bad, sign, word, o.n_folds)
    rand = rng.permutation(np.r_[np.ones(len(good)), np.zeros(len(bad))])
    return {"logreg_grouped": acc,
            "logreg_random": cv.grouped_logreg_accuracy(good, bad, sign, word, o.n_folds, labels=rand)}


def concept_rows(steps: np.ndarray, tokens: np.ndarray,
                 load_states: Callable[[int], tuple[np.ndarray, np.ndarray] | None],
                 info: PairInfo, o: ConceptOptions, n_jobs: int | None = None) -> pd.DataFrame | None:
    """Rows per (step, phenomenon, layer), without their phase; ``load_states(j)`` gives checkpoint
    j's ``(states, pairs)`` (see :func:`checkpoint_rows`) or None. Checkpoints run on ``n_jobs``
    threads (default: every core)."""
    from grokscope.analyse.parallel import map_checkpoints

    def one(j: int) -> list[dict]:
        loaded = load_states(j)
        if loaded is None:
            return []
        rng = np.random.default_rng([o.seed, j])  # per checkpoint: the same rows on any number of threads
        out = checkpoint_rows(int(steps[j]), loaded[0], loaded[1], info, j, o, rng)
        for r in out:
            r["tokens"] = int(tokens[j])
        return out

    rows: list[dict] = [r for part in map_checkpoints(one, range(len(steps)), n_jobs) for r in part]
    return pd.DataFrame(rows) if rows else None


def with_phases(rows: pd.DataFrame, onsets: Mapping[str, float | None], o: ConceptOptions) -> pd.DataFrame:
    """``rows`` with ``phase`` = before/after the phenomenon's generalisation (:func:`concept.aligned_phase`)."""
    df = rows.copy()
    df["phase"] = ""
    width = o.window_log if o.window_log > 0 else None
    for ph, sub in df.groupby("phenomenon"):
        df.loc[sub.index, "phase"] = cv.aligned_phase(sub["tokens"].to_numpy(), onsets.get(str(ph)), width)
    return df


SUMMARY_COLUMNS = ("auroc", "auroc_raw", "eff_rank", "eff_rank_ratio", "pr_centred", "baseline_eff_rank",
                   "logreg_grouped")


def concept_summary(table: pd.DataFrame, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per phenomenon, layer and phase: mean of each measure over the window's checkpoints with a
    bootstrap interval over checkpoints (scipy ``bootstrap``, percentile; NaN with < 2 values)."""
    from scipy.stats import bootstrap

    rows = []
    sub = table[table["phase"] != ""]
    for (ph, layer, phase), g in sub.groupby(["phenomenon", "layer", "phase"]):
        row: dict = {"phenomenon": ph, "layer": int(layer), "phase": phase, "n_checkpoints": len(g)}
        for c in SUMMARY_COLUMNS:
            v = g[c].dropna().to_numpy(dtype=np.float64)
            row[c] = float(v.mean()) if v.size else float("nan")
            lo = hi = float("nan")
            if v.size >= 2 and np.ptp(v) > 0:
                res = bootstrap((v,), np.mean, confidence_level=ci, n_resamples=999, method="percentile",
                                random_state=seed)
                lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
            elif v.size >= 1:
                lo = hi = row[c]
            row[f"{c}_low"], row[f"{c}_high"] = lo, hi
        rows.append(row)
    columns = ["phenomenon", "layer", "phase", "n_checkpoints"] + [
        x for c in SUMMARY_COLUMNS for x in (c, f"{c}_low", f"{c}_high")]
    return pd.DataFrame(rows, columns=columns)  # the columns even when no window has a checkpoint


def summary_line(summary: pd.DataFrame) -> str:
    """One line per phenomenon: the top layer's AUROC and effective rank before -> after."""
    if summary.empty:
        return "concepts: no phenomenon has checkpoints on both sides of its generalisation"
    parts = []
    for ph, g in summary.groupby("phenomenon"):
        top = g[g["layer"] == g["layer"].max()].set_index("phase")
        if not {"before", "after"} <= set(top.index):
            continue
        b, a = top.loc["before"], top.loc["after"]
        parts.append(f"{ph} (layer {int(g['layer'].max())}): AUROC {b['auroc']:.2f} -> {a['auroc']:.2f}, "
                     f"eff. rank {b['eff_rank']:.1f} -> {a['eff_rank']:.1f} "
                     f"(/drift baseline {b['eff_rank_ratio']:.2f} -> {a['eff_rank_ratio']:.2f})")
    return "concepts: " + ("; ".join(parts) if parts else "no phenomenon has checkpoints on both sides")


def per_group_rank(groups: np.ndarray) -> np.ndarray:
    """``[n]`` the position of each element among the elements of its group, in order (0, 1, ...)."""
    return pd.Series(groups).groupby(groups, sort=False).cumcount().to_numpy(dtype=np.int64)


def options_from(a: AnalyseSection) -> ConceptOptions:
    return ConceptOptions(min_count=a.min_count, min_pairs=a.min_pairs, n_folds=a.probe_folds,
                          rank_pairs=a.rank_pairs, rank_repeats=a.rank_repeats, window_log=a.concept_window,
                          logreg=a.concept_logreg, ci=a.ci, seed=a.seed)


def study_concept_rows(study: Study, inputs: StudyInputs, keep: np.ndarray, a: AnalyseSection,
                       n_jobs: int | None = None) -> pd.DataFrame | None:
    """The concept rows of a study, without phases (None without hidden states).

    At most ``concept_pairs`` captured pairs per phenomenon and checkpoint (the same seeded
    preference as the probes), restricted to the supported pairs ``keep``. The cap is per
    phenomenon, not over all pairs, so that a phenomenon's AUROC has its proxy-train and proxy-val
    pairs whatever the benchmark's mix of phenomena."""
    from grokscope.analyse.stage import window_counts
    from grokscope.core.errors import DataError

    counts = window_counts(inputs.exposure, inputs.steps, study.exposure_path)
    info = PairInfo.from_phrases(inputs.phrases, counts)
    order = np.random.default_rng(a.seed).permutation(keep)
    phenomenon = inputs.phrases["phenomenon"].astype(str).to_numpy(dtype=object)

    def load(j: int) -> tuple[np.ndarray, np.ndarray] | None:
        path = study.hidden_path(int(inputs.steps[j]))
        if not path.exists():
            return None
        hidden = np.load(path, mmap_mode="r")  # [n_captured, 2, n_layer+1, d_model]
        hrow = inputs.hidden_rows[j][order]
        pairs = order[hrow >= 0]
        rows = hrow[hrow >= 0]
        if a.concept_pairs > 0:
            first = per_group_rank(phenomenon[pairs]) < a.concept_pairs
            pairs, rows = pairs[first], rows[first]
        if rows.size and rows.max() >= hidden.shape[0]:
            raise DataError(f"{path}: has {hidden.shape[0]} rows but a score file refers to row {int(rows.max())}")
        if rows.size < 3:
            return None
        srt = np.argsort(rows)
        return np.asarray(hidden[rows[srt]], dtype=np.float32), pairs[srt]

    return concept_rows(inputs.steps, inputs.tokens, load, info, options_from(a), n_jobs)


def tables_from_rows(rows: pd.DataFrame, onsets: Mapping[str, float | None], a: AnalyseSection,
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The concept table (``rows`` with their phases) and its before/after summary."""
    o = options_from(a)
    table = with_phases(rows, onsets, o)
    return table, concept_summary(table, o.ci, o.seed)
