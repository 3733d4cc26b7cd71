"""Report sections on the good vs the bad form's support, the informative splits and the k
sensitivity (tables ``analysis/support_splits.parquet``, ``dose_response.parquet``,
``paradigms.parquet``, ``k_sensitivity.parquet`` of :mod:`grokscope.analyse.support_stage`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from grokscope.report.format import Section, _esc, _Writer, html_table, missing_note

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

    from grokscope.report.style import StepAxis

SPLIT_COLOURS = {"good_only": "#0072B2", "bad_only": "#D55E00", "both": "#009E73", "neither": "#888888"}
SPLIT_LABELS = {"good_only": "good form only", "bad_only": "bad form only", "both": "both forms",
                "neither": "neither form"}


def support_figure(splits: pd.DataFrame, dose: pd.DataFrame, axis: StepAxis) -> Figure:
    """Left: accuracy over checkpoints of pairs exposed to the good form only / bad only / both /
    neither, with Wilson intervals. Middle and right: accuracy at the last checkpoint against
    log2 bins of the good count and against bins of the support share."""
    import matplotlib.pyplot as plt

    from grokscope.report.style import apply_style, floats, setup_step_axis

    apply_style()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    for name, colour in SPLIT_COLOURS.items():
        s = splits[(splits["split"] == name) & (splits["n"] > 0)]
        if s.empty:
            continue
        x = floats(s["step"])
        axes[0].plot(x, floats(s["accuracy"]), color=colour, lw=1.6, label=f"{SPLIT_LABELS[name]}")
        axes[0].fill_between(x, floats(s["ci_lo"]), floats(s["ci_hi"]), color=colour, alpha=0.15, lw=0)
    setup_step_axis(axes[0], floats(splits["step"]), axis)
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("accuracy")
    axes[0].set_title("Accuracy by which form the window holds")
    axes[0].legend(loc="lower right", fontsize=8)
    last = dose[dose["step"] == dose["step"].max()]
    for ax, kind, xlabel in ((axes[1], "good_count", "good-form count in the window (log2 bins)"),
                             (axes[2], "support_share", "support share good / (good + bad)")):
        d = last[(last["axis"] == kind) & (last["n"] > 0)]
        x = np.arange(len(d))
        acc, lo, hi = floats(d["accuracy"]), floats(d["ci_lo"]), floats(d["ci_hi"])
        yerr = np.clip([acc - lo, hi - acc], 0, None)  # Wilson bounds can miss 0 / 1 by a rounding error
        ax.errorbar(x, acc, yerr=yerr, fmt="o-", color="#0072B2", capsize=3)
        ax.set_xticks(x)
        ax.set_xticklabels([f"{b}\n(n={n})" for b, n in zip(d["bin"], d["n"])], fontsize=7)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(xlabel)
        ax.set_title(f"Dose–response at step {int(last['step'].max()) if len(last) else '—'}")
    fig.tight_layout()
    return fig


def section_support(inp: Any, w: _Writer, axis: StepAxis) -> Section:
    title = "Support of the good vs the bad form"
    splits, dose = inp.tables.get("support_splits"), inp.tables.get("dose_response")
    if splits is None or dose is None:
        return Section("support", title, missing_note("support tables (support_splits, dose_response)",
                                                      f"grokscope analyse {inp.study.root}"), "support_splits")
    k = inp.metadata.get("support_splits", {}).get("min_count", 1)
    body = [f"<p>Pairs split by which form of their critical phrase occurred at least k = {_esc(k)} times in "
            "window(t): the good phrase only, the bad phrase only, both, or neither; and accuracy against the good "
            "count and the support share good / (good + bad) (the quantity that decides which rules survive "
            "pre-training in “Natural Ungrokking”). Wilson 95% intervals over pairs (pairs sharing a phrase are "
            "not independent: descriptive).</p>",
            w.figure("support", support_figure(splits, dose, axis), "Support of the good vs the bad form",
                     "Left: accuracy over checkpoints per support split. Middle/right: accuracy at the last "
                     "checkpoint against the good-form count and the support share (pairs with neither form seen "
                     "are left out of the share)."),
            w.table("support_splits", splits), w.table("dose_response", dose)]
    return Section("support", title, "\n".join(body))


def section_informative(inp: Any, w: _Writer) -> Section:
    title = "Informative splits"
    info = inp.tables.get("paradigms")
    if info is None:
        return Section("informative", title, missing_note("paradigms table", f"grokscope analyse {inp.study.root}"),
                       "paradigms")
    meta = inp.metadata.get("paradigms", {})
    kept = bool(meta.get("keep_uninformative", False))
    bad = info[~info["informative"].astype(bool)]
    verb = "are kept in the verdicts (keep_uninformative = true)" if kept else "are left out of the verdicts"
    lead = (f"<p>{len(bad)} of {len(info)} paradigms cannot carry information in their split (fewer than "
            f"{_esc(meta.get('min_distinct_phrases', '?'))} distinct critical phrases, or no context word) and {verb}: "
            + ", ".join(f"<b>{_esc(r.uid)}</b> ({_esc(r.reason)})" for r in bad.itertuples()) + ".</p>"
            if len(bad) else "<p>Every paradigm has enough distinct phrases and a context word.</p>")
    shown = info.sort_values(["informative", "distinct_phrases"]).copy()
    for c in ("seen_first", "seen_last"):
        shown[c] = shown[c].map(lambda v: f"{v:.1%}")
    return Section("informative", title, lead + html_table(shown, "small", None) + w.table("paradigms", info))


def section_k_sensitivity(inp: Any, w: _Writer) -> Section:
    title = "k sensitivity"
    ks = inp.tables.get("k_sensitivity")
    if ks is None:
        return Section("k-sensitivity", title, missing_note("k_sensitivity table",
                                                            f"grokscope analyse {inp.study.root}",
                                                            "(set [analyse] sensitivity_min_counts)"), "k_sensitivity")
    import pandas as pd

    def cell(r: Any) -> str:
        d = "—" if pd.isna(r.delay_steps) else str(int(r.delay_steps))
        return f"{d} ({r.status})"

    rows = ks.assign(cell=[cell(r) for r in ks.itertuples()])
    wide = rows.pivot_table(index=["level", "group", "comparison"], columns="min_count", values="cell",
                            aggfunc="first").reset_index()
    wide.columns = [c if isinstance(c, str) else f"delay k={c}" for c in wide.columns]
    body = ("<p>The verdicts (delay in steps and status) when proxy-train needs at least k occurrences in the "
            "window, for each k, on the same pairs and seeds.</p>" + html_table(wide, "small", None)
            + w.table("k_sensitivity", ks))
    return Section("k-sensitivity", title, body)
