"""The analyse stage's verdicts: the headline ``adjusted`` rows added to ``timing.parquet``,
Benjamini-Hochberg q over every row, and the event study (``event_study.parquet``). The stage calls
:func:`headline`; the statistics live in :mod:`grokscope.analyse.adjusted` and
:mod:`grokscope.analyse.event_study`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from grokscope.analyse import adjusted as ad
from grokscope.analyse.event_study import event_tables
from grokscope.analyse.splits import entry_index

if TYPE_CHECKING:
    from grokscope.analyse.dynamics import PairTable
    from grokscope.core.config import AnalyseSection
    from grokscope.core.store import Study


def groups_of(table: PairTable, levels: tuple[str, ...]) -> list[tuple[str, str, np.ndarray]]:
    """(level, group, pair indices) for the levels ``all`` / ``phenomenon`` / ``paradigm``."""
    out: list[tuple[str, str, np.ndarray]] = []
    n = table.correct.shape[0]
    if "all" in levels:
        out.append(("all", "all", np.arange(n)))
    for level, labels in (("phenomenon", table.phenomenon), ("paradigm", table.uid)):
        if level in levels:
            lab = np.asarray(labels, dtype=object)
            for name in pd.unique(lab):
                out.append((level, str(name), np.flatnonzero(lab == name)))
    return out


def study_covariates(study: Study, phrases: pd.DataFrame, exposure: pd.DataFrame) -> pd.DataFrame:
    """:func:`grokscope.analyse.covariates.pair_covariates` with the study's tokenizer and unigram
    counts when it has a prepared ``tokens/`` directory."""
    from grokscope.analyse.covariates import pair_covariates

    tok: Any = None
    unigram = None
    if study.has_tokens() and (study.tokens_dir / "tokenizer").exists():
        from grokscope.analyse.stage import unigram_counts
        from grokscope.core.tokenizer import load_tokenizer

        tok = load_tokenizer(study.tokens_dir / "tokenizer")
        unigram = unigram_counts(study.tokens_dir / "tokens.npy")
    return pair_covariates(phrases, exposure, tok, unigram)


def headline(study: Study, inputs: Any, keep: np.ndarray, table: PairTable, timing: pd.DataFrame,
             a: AnalyseSection, progress: bool) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The stage's entry: covariates of the analysed pairs ``keep`` of ``inputs``
    (:class:`grokscope.analyse.stage.StudyInputs`), then :func:`verdict_tables`."""
    covariates = None
    if a.adjusted:
        cov = study_covariates(study, inputs.phrases, inputs.exposure)
        covariates = cov.iloc[keep].reset_index(drop=True)
    margin = None if inputs.margin is None else inputs.margin[keep]
    return verdict_tables(timing, table, covariates, margin, a, progress)


def verdict_tables(timing: pd.DataFrame, table: PairTable, covariates: pd.DataFrame | None,
                   margin: np.ndarray | None, a: AnalyseSection, progress: bool = False,
                   ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """``timing`` plus the adjusted rows (when ``a.adjusted``), with ``q`` and final statuses, and the
    event-study table (levels all and phenomenon; None when ``a.event_study`` is off)."""
    cluster = table.cluster if table.cluster is not None else np.arange(table.correct.shape[0]).astype(str)
    seen = table.counts >= a.min_count
    parts = [timing]
    if a.adjusted:
        data = ad.AdjustedData(table.correct, margin, seen,
                               covariates if covariates is not None else pd.DataFrame(index=range(len(seen))),
                               np.asarray(table.uid, dtype=object), np.asarray(cluster, dtype=object),
                               np.asarray(table.tokens))
        opts = ad.AdjustedOptions(ci=a.ci, min_pairs=a.min_pairs, min_clusters=a.min_clusters,
                                  floor_checkpoints=a.floor_checkpoints, ceiling_share=a.ceiling_share,
                                  n_boot=min(a.n_boot, a.onset_boot), seed=a.seed)
        parts.append(ad.adjusted_rows(data, groups_of(table, ("all", "phenomenon", "paradigm")), opts, progress))
    out = pd.concat(parts, ignore_index=True)
    for col in ("fit_step", "gen_step", "fit_tokens", "gen_tokens", "delay_steps", "delay_tokens",
                "lost_train_step", "lost_val_step"):
        if col in out:
            out[col] = out[col].astype("Int64")
    out["role"] = out["role"].fillna("descriptive")
    out = ad.finalise_verdicts(out, 1.0 - a.ci)
    events = None
    if a.event_study:
        entry = entry_index(table.counts, a.min_count)
        events = event_tables(table.correct, margin, entry, np.asarray(cluster, dtype=object),
                              groups_of(table, ("all", "phenomenon")), a.event_window, a.ci)
    return out, events
