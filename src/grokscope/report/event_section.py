"""Report section on the event study (memorisation profile, ``analysis/event_study.parquet`` of
:mod:`grokscope.analyse.event_study`): each pair's correctness and margin aligned at its own
first-exposure checkpoint, against not-yet-exposed pairs at the same checkpoints."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from grokscope.report.format import Section, _esc, _Writer, missing_note

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

OUTCOMES = {"correct": ("correct (share of pairs)", "#0072B2"), "margin": ("margin (log-prob good − bad)", "#D55E00")}
MAX_PANELS = 12


def event_order(labels: pd.Series) -> np.ndarray:
    """A numeric position for each event-time label: ``<-K`` first, -K..K, ``>K`` last."""
    def pos(s: str) -> float:
        if s.startswith("<"):
            return float(s[1:]) - 1.0
        if s.startswith(">"):
            return float(s[1:]) + 1.0
        return float(s)

    return np.array([pos(str(s)) for s in labels], dtype=np.float64)


def _panel(ax: Any, rows: pd.DataFrame, colour: str) -> None:
    from grokscope.report.style import floats

    rows = rows.assign(_x=event_order(rows["event_time"])).sort_values("_x")
    x = rows["_x"].to_numpy()
    est, lo, hi = floats(rows["estimate"]), floats(rows["ci_low"]), floats(rows["ci_high"])
    ax.axhline(0.0, color="#888888", lw=0.8)
    ax.axvline(-0.5, color="#888888", lw=0.8, ls=":")  # first exposure lies between -1 and 0
    ax.fill_between(x, lo, hi, color=colour, alpha=0.18, lw=0)
    ax.plot(x, est, "o-", color=colour, ms=3.5, lw=1.4)
    ax.plot([-1], [0.0], "o", mfc="white", mec=colour, ms=4.5)  # the reference, 0 by construction
    ticks = list(x) + [-1.0]
    labels = list(rows["event_time"]) + ["-1"]
    order = np.argsort(ticks)
    ax.set_xticks(np.asarray(ticks)[order])
    ax.set_xticklabels(np.asarray(labels, dtype=object)[order], fontsize=7)


def event_figure(events: pd.DataFrame) -> Figure:
    """Top row: level ``all``, one panel per outcome. Below: one panel per phenomenon (correct)."""
    import matplotlib.pyplot as plt

    from grokscope.report.style import apply_style

    apply_style()
    top = events[events["level"] == "all"]
    per = events[(events["level"] == "phenomenon") & (events["outcome"] == "correct") & events["estimate"].notna()]
    groups = sorted(per["group"].unique())[:MAX_PANELS]  # phenomena with an estimate (some pairs exposed in training)
    ncol = 4
    nrow = 1 + -(-len(groups) // ncol)
    fig = plt.figure(figsize=(15, 3.3 * nrow))
    grid = fig.add_gridspec(nrow, ncol)
    for j, (outcome, (label, colour)) in enumerate(OUTCOMES.items()):
        ax = fig.add_subplot(grid[0, 2 * j:2 * j + 2])
        rows = top[top["outcome"] == outcome]
        if rows.empty:
            ax.set_axis_off()
            continue
        _panel(ax, rows, colour)
        ax.set_title(f"all pairs — {label}")
        ax.set_xlabel("checkpoints since first exposure (event time)")
        ax.set_ylabel("effect vs not yet exposed")
    for k, g in enumerate(groups):
        ax = fig.add_subplot(grid[1 + k // ncol, k % ncol])
        _panel(ax, events[(events["level"] == "phenomenon") & (events["group"] == g)
                          & (events["outcome"] == "correct")], OUTCOMES["correct"][1])
        ax.set_title(str(g), fontsize=9)
    fig.tight_layout()
    return fig


def section_event_study(inp: Any, w: _Writer) -> Section:
    title = "Event study: before and after each pair's first exposure"
    events = inp.tables.get("event_study")
    if events is None or events.empty:
        return Section("event-study", title, missing_note(
            "event-study table (event_study)", f"grokscope analyse {inp.study.root}",
            "It needs [analyse] event_study = true (the default) and pairs first exposed during training."),
            "event_study")
    binned = [str(x) for x in events["event_time"].unique() if str(x).startswith(">")]
    K = binned[0][1:] if binned else None
    pre = events[(events["level"] == "all") & (events["outcome"] == "correct")]
    pre = pre[event_order(pre["event_time"]) < -1]
    pre_sig = int((pre["p"] < 0.05).sum()) if "p" in pre else 0
    body = [f"<p>Each pair is aligned at the checkpoint where its critical phrase first entered the training "
            "window (event time 0); its correctness and margin are compared with pairs not (yet) exposed at the "
            "same checkpoints, with pair and checkpoint fixed effects (a staggered difference-in-differences, as "
            "Lesci et al., ACL 2024, for Pythia's data order). Event time −1 is the reference; points at negative "
            "event times are pre-trends and should be near 0 (here "
            f"{pre_sig} of {len(pre)} differ at p &lt; 0.05). Bands: 95% intervals, standard errors clustered by "
            f"critical phrase{'' if K is None else f'; event times beyond ±{_esc(K)} are binned'}.</p>",
            w.figure("event_study", event_figure(events), title,
                     "Effect of having seen the phrase k checkpoints ago. Top: all pairs, correctness and margin. "
                     "Below: correctness per phenomenon."),
            w.table("event_study", events)]
    return Section("event-study", title, "\n".join(body))
