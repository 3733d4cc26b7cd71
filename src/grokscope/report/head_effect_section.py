"""The report's per-phenomenon head section: every head ablated on its own, heads selected on half
A of each phenomenon's pairs and confirmed on half B (``analysis/head_effects.parquet``,
``head_summary.parquet``; :mod:`grokscope.analyse.head_effects`)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from grokscope.report.format import Section, _esc, _Writer, html_table, missing_note
from grokscope.report.inputs import ReportInputs


def head_effects_figure(effects: pd.DataFrame) -> Any:
    """Phenomena x heads: margin change on half B when the head is ablated alone (blue = the margin
    falls), outlined where the head is causal (selected on A, significant on B), a dot where it is
    among the top-k by critical->context attention on A."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from grokscope.report.style import apply_style

    apply_style()
    phen = list(pd.unique(effects["phenomenon"]))
    n_head = int(effects["head"].max()) + 1
    cols = [(int(a), int(b)) for a, b in effects[["layer", "head"]].drop_duplicates().sort_values(["layer", "head"])
            .itertuples(index=False)]
    col_of = {c: j for j, c in enumerate(cols)}
    mat = np.full((len(phen), len(cols)), np.nan)
    for r in effects.itertuples():
        mat[phen.index(r.phenomenon), col_of[(int(r.layer), int(r.head))]] = r.delta_margin
    lim = float(np.nanmax(np.abs(mat))) if np.isfinite(mat).any() else 1.0
    fig, ax = plt.subplots(figsize=(max(4.0, 0.32 * len(cols) + 2.5), max(2.0, 0.32 * len(phen) + 1.3)))
    im = ax.imshow(mat, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for r in effects.itertuples():
        i, j = phen.index(r.phenomenon), col_of[(int(r.layer), int(r.head))]
        if r.causal:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="black", lw=1.8))
        if r.selected_by_attention:
            ax.plot(j, i, "o", ms=3, color="#FFB000", mec="black", mew=0.4)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([f"L{a}H{b}" for a, b in cols], rotation=90, fontsize=7)
    ax.set_yticks(range(len(phen)))
    ax.set_yticklabels(phen, fontsize=8)
    for x in range(n_head, len(cols), n_head):
        ax.axvline(x - 0.5, color="white", lw=1.0)
    ax.grid(False)
    fig.colorbar(im, ax=ax, label="Δ margin on half B (log-prob)", fraction=0.03, pad=0.02)
    return fig


def section_head_effects(inp: ReportInputs, w: _Writer) -> Section:
    effects, summary = inp.tables.get("head_effects"), inp.tables.get("head_summary")
    title = "Heads per phenomenon: selected on half the pairs, tested on the other half"
    if effects is None or effects.empty or summary is None:
        note = missing_note("analysis/head_effects.parquet", f"grokscope analyse {inp.study.root}",
                            "Every head is ablated on its own at the ablation step, so the checkpoint must be on "
                            "disk (<code>[analyse] head_effects = true</code>).")
        return Section("head-effects", title, note, "head_effects")
    meta = inp.metadata.get("head_effects", {})
    normalised = bool(effects["attention_normalised"].iloc[0]) if "attention_normalised" in effects else False
    caption = (
        f"Step {meta.get('step', '?')}, {meta.get('n_pairs', '?')} pairs, "
        f"{_esc(str(effects['mode'].iloc[0]))}-ablation of one head at a time. Each phenomenon's pairs are split by "
        "phrase cluster into half A (to choose heads) and half B (to measure them), so a head is never chosen and "
        f"tested on the same pairs. Black outline: causal (top-{meta.get('top_k', '?')} by margin drop on A, drop "
        f"on B significant at q ≤ {meta.get('alpha', 0.05):.2f}, Benjamini–Hochberg over the selected heads). "
        "Orange dot: top heads by critical→context attention on A"
        + (" divided by the head's attention at the same distance (a previous-token head scores 1)."
           if normalised else " (raw weights: the scores predate the distance-matched baseline).")
        + " An orange dot without an outline is a head that attends but does not matter."
    )
    parts = [w.figure("head_effects", head_effects_figure(effects), "Margin change per head and phenomenon", caption)]
    shown = summary.copy()
    for c in ("base_margin", "delta_margin_by_ablation", "delta_margin_by_attention", "best_delta_margin",
              "best_specificity"):
        shown[c] = shown[c].map(lambda v: "–" if pd.isna(v) else f"{v:+.3f}")
    shown["base_accuracy"] = shown["base_accuracy"].map(lambda v: "–" if pd.isna(v) else f"{v:.3f}")
    shown["best_delta_accuracy"] = shown["best_delta_accuracy"].map(lambda v: "–" if pd.isna(v) else f"{v:+.3f}")
    shown = shown.rename(columns={
        "heads_by_ablation": "selected on A (ablation)", "delta_margin_by_ablation": "their Δ margin on B",
        "heads_by_attention": "selected on A (attention)", "delta_margin_by_attention": "their Δ margin on B ",
        "attention_selected_causal": "of those causal", "causal_heads": "causal heads",
        "best_delta_margin": "strongest Δ margin", "best_delta_accuracy": "its Δ acc",
        "best_specificity": "its specificity"})
    parts.append("<p class=\"note\">Specificity = the head's margin change on its phenomenon minus its mean change "
                 "on the other phenomena's pairs (negative: it matters for this phenomenon more than for the "
                 "rest).</p>")
    parts.append(html_table(shown, "small", status_col=None))
    parts.append(w.table("head_summary", summary))
    parts.append(w.table("head_effects", effects))
    return Section("head-effects", title, "\n".join(parts))
