"""Ground truth next to findings across training seeds (``grokscope demo --seeds N``).

For each seed's study and each paradigm: the **planted onset** (the first checkpoint whose window
holds a document from the testbed's ``onset_document`` on, i.e. the first at which the
agreement cue can have been seen; read from the prepared stream's ``row_docs.npy``), the
**found onset** (the analysis's generalisation step, proxy comparison), whether they lie within
one checkpoint of each other, and every comparison's verdict against the **true verdict**:

* ``confounded`` testbed: "no delay" (exposure has no effect by construction);
* ``planting off``: "no delay" (every unit planted, so seen and unseen pairs differ only by chance);
* planting on with a planted onset (``onset_fraction`` > 0): "delayed" (planted phrases can be
  memorised from the start, the rule only after the onset);
* planting on without one: no truth (the delay is emergent); such rows are shown, not scored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from grokscope.core.store import Study, read_json


def true_verdict(settings: dict[str, Any]) -> str | None:
    """The verdict the testbed's construction implies (None: not known by construction)."""
    if settings.get("confounded"):
        return "no delay"
    if not settings.get("planting", True):
        return "no delay"
    if settings.get("onset_fraction", 0.0) > 0:
        return "delayed"
    return None


def cue_step(study: Study, onset_document: int, rows_per_step: int) -> int | None:
    """The first training step whose batch holds a row of a document from ``onset_document`` on, i.e.
    the first step that sees the cue (None: no planted onset, or the stream never reaches it)."""
    if onset_document <= 0:
        return None
    row_docs = np.load(study.tokens_dir / "row_docs.npy", mmap_mode="r")
    late = np.flatnonzero(np.asarray(row_docs) >= onset_document)
    if late.size == 0:
        return None
    return int(late[0]) // rows_per_step + 1  # window(t) holds row r once t·B > r


def first_checkpoint_from(steps: list[int], step: int | None) -> int | None:
    """The first checkpoint at or after ``step`` (None: ``step`` is None or past the last checkpoint)."""
    return None if step is None else next((s for s in steps if s >= step), None)


def planted_onset_step(study: Study, onset_document: int, rows_per_step: int, steps: list[int]) -> int | None:
    """The first checkpoint step whose window (rows ``[0, t·B)``) holds a row of a document from
    ``onset_document`` on (None: no planted onset, or no such checkpoint)."""
    return first_checkpoint_from(steps, cue_step(study, onset_document, rows_per_step))


def seed_rows(study: Study, testbed_dir: Path, rows_per_step: int, seed: int) -> list[dict[str, Any]]:
    """One row per paradigm and comparison of one seed's study."""
    import pandas as pd

    gt = read_json(testbed_dir / "ground_truth.json")
    settings = gt["settings"]
    truth = true_verdict(settings)
    steps = study.scored_steps()
    cue = cue_step(study, int(gt.get("onset_document", 0)), rows_per_step)
    planted = first_checkpoint_from(steps, cue)
    path = study.analysis_dir / "timing.parquet"
    if not path.exists():
        return []
    t = pd.read_parquet(path)
    t = t[t["level"] == "paradigm"]
    rows = []
    for r in t.itertuples(index=False):
        found = None if pd.isna(r.gen_step) else int(r.gen_step)
        within = None
        if planted is not None and found is not None:
            within = abs(steps.index(found) - steps.index(planted)) <= 1
        rows.append({"seed": seed, "paradigm": str(r.group), "comparison": str(r.comparison),
                     "cue_step": cue, "planted_onset": planted, "found_onset": found,
                     "lag_steps": None if cue is None or found is None else found - cue, "onset_within_one": within,
                     "verdict": str(r.status), "true_verdict": truth,
                     "matched": None if truth is None else str(r.status) == truth})
    return rows


def across_seeds(rows: list[dict[str, Any]]) -> tuple[Any, str]:
    """The per-paradigm summary table over seeds and its text: onsets per seed, how many seeds
    found the onset within one checkpoint, and per comparison how often the verdict matched."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty:
        return df, "no analysis found in any seed"
    lines = [f"{'paradigm':<24}{'comparison':<11}{'true':<10}{'planted onset':>14}{'found onsets':>22}"
             f"{'onset ±1':>10}{'steps after cue':>17}{'verdicts':>30}{'matched':>9}"]
    out = []
    for (uid, comp), g in df.groupby(["paradigm", "comparison"], sort=True):
        g = g.sort_values("seed")
        planted = g["planted_onset"].dropna()
        cues = g["cue_step"].dropna()
        within = g["onset_within_one"].dropna()
        scored = g["matched"].dropna()
        row = {"paradigm": uid, "comparison": comp, "true_verdict": g["true_verdict"].iloc[0],
               "planted_onset": None if planted.empty else int(planted.iloc[0]),
               "cue_step": None if cues.empty else int(cues.iloc[0]),
               "found_onsets": ",".join("-" if pd.isna(v) else str(int(v)) for v in g["found_onset"]),
               "lag_steps": ",".join("-" if pd.isna(v) else str(int(v)) for v in g["lag_steps"]),
               "onset_within_one": f"{int(within.sum())}/{len(within)}" if len(within) else "-",
               "verdicts": ",".join(g["verdict"]),
               "matched": f"{int(scored.sum())}/{len(scored)}" if len(scored) else "-"}
        out.append(row)
        lines.append(f"{uid:<24}{comp:<11}{str(row['true_verdict'] or '-'):<10}"
                     f"{str(row['planted_onset'] or '-'):>14}{row['found_onsets']:>22}{row['onset_within_one']:>10}"
                     f"{row['lag_steps']:>17}{row['verdicts'][:29]:>30}{row['matched']:>9}")
    n_seeds = df["seed"].nunique()
    cues_seen = df["cue_step"].dropna()
    first_seen = f" (first seen at step {int(cues_seen.min())})" if len(cues_seen) else ""
    lines.append(f"{n_seeds} training seeds ({', '.join(str(s) for s in sorted(df['seed'].unique()))}). "
                 f"planted onset: the first checkpoint whose window holds the cue{first_seen}; found onsets: the "
                 "generalisation step of each seed; onset ±1: seeds whose found onset lies within one checkpoint of "
                 "the planted one; steps after cue: found onset minus the first step that saw the cue; matched: seeds "
                 "whose verdict equals the true one.")
    return pd.DataFrame(out), "\n".join(lines)
