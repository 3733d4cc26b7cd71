"""What ``analyse`` adds from :mod:`grokscope.analyse.support` and :mod:`grokscope.analyse.sensitivity`:
the paradigms whose split can inform a verdict (the others are left out unless
``keep_uninformative``), and the tables ``support.parquet`` (per pair and window: good count, bad
count, support share), ``support_splits.parquet``, ``dose_response.parquet``,
``paradigms.parquet`` and ``k_sensitivity.parquet`` in ``STUDY/analysis/``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from grokscope.analyse import support as sp
from grokscope.core import store
from grokscope.core.config import AnalyseSection
from grokscope.core.errors import DataError

SUPPORT_OUTPUTS = ("support", "support_splits", "dose_response", "paradigms", "k_sensitivity")


def informative_pairs(inputs: Any, keep: np.ndarray, a: AnalyseSection, exposure_path: Path,
                      out: Path) -> tuple[np.ndarray, str]:
    """The supported pairs ``keep`` less those of uninformative paradigms (unless
    ``keep_uninformative``); writes ``paradigms.parquet``; returns (pairs kept, summary line)."""
    good = sp.side_counts(inputs.exposure, inputs.steps, "good", exposure_path)[keep]
    info = sp.paradigm_information(inputs.phrases.iloc[keep], good, a.min_count, a.min_distinct_phrases)
    store.write_parquet(out / "paradigms.parquet", info, metadata={"min_distinct_phrases": a.min_distinct_phrases,
                                                                    "keep_uninformative": a.keep_uninformative})
    note = sp.left_out_summary(info, a.keep_uninformative)
    if a.keep_uninformative or info["informative"].all():
        return keep, note
    drop = set(info.loc[~info["informative"], "uid"])
    kept = keep[~np.isin(inputs.phrases["uid"].to_numpy(dtype=object)[keep], list(drop))]
    if kept.size == 0:
        raise DataError(f"{exposure_path}: every paradigm's split is uninformative ({note}); set "
                        "[analyse] keep_uninformative = true or a smaller min_distinct_phrases")
    return kept, note


def support_outputs(inputs: Any, keep: np.ndarray, a: AnalyseSection, table: Any, opts: Any, result: Any,
                    exposure_path: Path, out: Path) -> list[str]:
    """Write the support, dose-response and k-sensitivity tables; returns summary lines."""
    from grokscope.analyse.sensitivity import k_sensitivity

    steps = inputs.steps
    good = sp.side_counts(inputs.exposure, steps, "good", exposure_path)[keep]
    bad = sp.side_counts(inputs.exposure, steps, "bad", exposure_path)[keep]
    correct = inputs.correct[keep]
    uid = inputs.phrases["uid"].to_numpy(dtype=object)[keep]
    pair_id = inputs.phrases["pair_id"].to_numpy(dtype=np.int64)[keep]
    meta = {"min_count": a.min_count, "ci": a.ci, "steps": [int(s) for s in steps]}
    store.write_parquet(out / "support.parquet", sp.support_table(uid, pair_id, steps, good, bad), metadata=meta)
    splits = sp.support_splits(correct, good, bad, steps, a.min_count, a.ci)
    store.write_parquet(out / "support_splits.parquet", splits, metadata=meta)
    store.write_parquet(out / "dose_response.parquet", sp.dose_response(correct, good, bad, steps, a.ci), metadata=meta)
    last = splits[splits["step"] == steps[-1]]
    lines = ["support at step " + str(int(steps[-1])) + ": " + ", ".join(
        f"{r.split} {r.n} pairs" + (f" acc {r.accuracy:.2f}" if r.n else "") for r in last.itertuples())]
    if a.sensitivity_min_counts:
        ks = k_sensitivity(table, opts, a.sensitivity_min_counts, done=result)
        store.write_parquet(out / "k_sensitivity.parquet", ks, metadata={"min_counts": list(a.sensitivity_min_counts)})
        allp = ks[(ks["level"] == "all") & (ks["comparison"] == "proxy")]
        lines.append("k sensitivity (all, proxy): " + "; ".join(
            f"k={r.min_count}: delay {'—' if pd.isna(r.delay_steps) else int(r.delay_steps)} ({r.status})"
            for r in allp.itertuples()))
    return lines
