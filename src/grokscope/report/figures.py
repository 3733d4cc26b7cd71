"""Figures of the report about learning dynamics (split curves, delays, exposure): pure
functions, analysis table(s) in, matplotlib ``Figure`` out; the figures of the model's insides
(probes, heads, ablation) are in :mod:`grokscope.report.model_figures`, the shared style in
:mod:`grokscope.report.style`.

Every function takes the tables exactly as ``grokscope analyse`` writes them (docs/CONTRACTS.md,
"Analysis") and returns a :class:`matplotlib.figure.Figure` drawn with the Agg backend; nothing is
read from or written to disk here (``grokscope.report.stage`` saves and embeds the figures). The
companion ``*_table`` functions return the numbers a figure shows, so the report can write them
next to it as CSV.

Conventions shared by all figures:

* proxy-train / seen splits are blue, proxy-val / unseen splits are vermillion (Okabe-Ito
  colours, distinguishable with colour-blindness); more exposure = darker blue;
* the x axis is the checkpoint step on a symlog scale (checkpoints are log-spaced early and
  linear later, and step 0 exists), with the tokens seen printed under each step tick;
* accuracy bands are the bootstrap confidence intervals of ``curves.parquet``; the dashed grey
  line is chance (0.5), the dotted one the criterion level when the analysis used one.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from grokscope.report.style import (  # noqa: E402
    CHANCE,
    COMPARISON_STYLE,
    COUNT_BINS,
    MAX_PANELS,
    PANEL_H,
    PANEL_W,
    SEEN,
    SPLIT_FAMILIES,
    SPLIT_STYLE,
    UNSEEN,
    StepAxis,
    apply_style,
    floats,
    format_count,
    group_title,
    hide_unused_axes,
    is_finite_number,
    is_positive_infinity,
    ordered_groups,
    panel_grid,
    setup_step_axis,
    timing_row,
)


# ---- split curves ------------------------------------------------------------------------
def split_curves_figure(
    curves: pd.DataFrame,
    timing: pd.DataFrame | None,
    family: str = "proxy",
    level: str = "phenomenon",
    criterion_level: float | None = None,
    max_panels: int = MAX_PANELS,
    min_n: int = 1,
    value: str = "accuracy",
) -> Figure:
    """Small multiples of accuracy over checkpoints, one panel per group (pooled first).

    ``value = "margin"`` draws ``margin_curves.parquet`` instead (mean log-prob margin good - bad,
    0 = the decision boundary; each panel on its own scale).

    ``family`` picks the splits: "proxy" (proxy-train vs proxy-val), "fixed", "matched" or
    "bins" (exposure-count bins). For proxy/fixed/matched the fit and generalisation steps of
    ``timing.parquet`` (same comparison) are marked and the delay between them shaded. Points
    where a split has fewer than ``min_n`` pairs are not drawn (their accuracy is noise).
    """
    apply_style()
    splits = SPLIT_FAMILIES[family]
    data = curves[curves["split"].isin(splits)]
    panels = ordered_groups(data, level)[:max_panels]
    if not panels:
        raise ValueError(f"curves.parquet has no rows for splits {splits}")
    axis = StepAxis.from_table(curves)
    nrows, ncols = panel_grid(len(panels))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(PANEL_W * ncols, PANEL_H * nrows + 0.9), sharex=True, sharey=value == "accuracy",
        squeeze=False
    )
    all_steps = floats(data["step"])
    for ax, (lvl, group) in zip(axes.flat, panels):
        sub = data[(data["level"] == lvl) & (data["group"].astype(str) == group)]
        n_text = []
        for split in splits:
            s = sub[sub["split"] == split].sort_values("step")
            if s.empty:
                continue
            label, colour, ls = SPLIT_STYLE[split]
            ok = floats(s["n"]) >= min_n
            x = floats(s["step"])
            y, lo, hi = (np.where(ok, floats(s[c]), np.nan) for c in (value, "ci_low", "ci_high"))
            ax.fill_between(x, lo, hi, color=colour, alpha=0.18, lw=0)
            ax.plot(x, y, color=colour, ls=ls, lw=1.6, marker="o", ms=2.2, label=label)
            if family != "bins":
                n_text.append(f"{int(floats(s['n'])[-1])}")
        ax.axhline(0.5 if value == "accuracy" else 0.0, color=CHANCE, ls="--", lw=0.8)
        if criterion_level is not None and value == "accuracy":
            ax.axhline(criterion_level, color=CHANCE, ls=":", lw=0.8)
        comparison = family if family in COMPARISON_STYLE else None
        row = timing_row(timing, lvl, group, comparison) if comparison else None
        if row is not None:
            _mark_timing(ax, row)
        title = group_title(lvl, group)
        if n_text:
            title += f"  (n={'/'.join(n_text)})"
        ax.set_title(title, fontsize=9.5)
        setup_step_axis(ax, all_steps, axis, label=False)
    hide_unused_axes(axes, len(panels))
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy" if value == "accuracy" else "margin (log-prob)")
    for c in range(ncols):
        col = [axes[r, c] for r in range(nrows) if axes[r, c].get_visible()]
        if col:
            col[-1].set_xlabel(axis.label)
            col[-1].xaxis.set_tick_params(labelbottom=True)
    if value == "accuracy":
        axes[0, 0].set_ylim(-0.02, 1.02)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    extra = _timing_legend_handles() if family in COMPARISON_STYLE else []
    fig.legend(
        handles + [h for h, _ in extra], labels + [lab for _, lab in extra],
        loc="upper center", ncol=min(6, len(handles) + len(extra)), bbox_to_anchor=(0.5, 1.0),
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.55 / (PANEL_H * nrows + 0.9)))
    return fig


def _timing_legend_handles() -> list[tuple[object, str]]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    return [
        (Line2D([], [], color=SEEN, ls=":", lw=1.4), "fit step"),
        (Line2D([], [], color=UNSEEN, ls=":", lw=1.4), "generalisation step"),
        (Patch(color="#999999", alpha=0.25), "delay"),
    ]


def _mark_timing(ax: plt.Axes, row: pd.Series) -> None:
    fit, gen = row.get("fit_step"), row.get("gen_step")
    if is_finite_number(fit):
        ax.axvline(float(fit), color=SEEN, ls=":", lw=1.3)
    if is_finite_number(gen):
        ax.axvline(float(gen), color=UNSEEN, ls=":", lw=1.3)
    if is_finite_number(fit) and is_finite_number(gen) and float(gen) > float(fit):
        ax.axvspan(float(fit), float(gen), color="#999999", alpha=0.18, lw=0)
    status = str(row.get("status", ""))
    if status == "delayed" and is_finite_number(row.get("delay_steps")):
        text = f"delay {format_count(float(row['delay_steps']))} steps"
    else:
        text = status
    if text:
        ax.text(0.98, 0.04, text, transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
                bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="#cccccc", alpha=0.9))


def split_curves_table(curves: pd.DataFrame, family: str) -> pd.DataFrame:
    """The rows of curves.parquet a split-curve figure draws (all levels, for the CSV)."""
    splits = SPLIT_FAMILIES[family]
    return curves[curves["split"].isin(splits)].reset_index(drop=True)


# ---- delays ------------------------------------------------------------------------------
def delay_figure(timing: pd.DataFrame, level: str = "phenomenon", axis: StepAxis | None = None) -> Figure:
    """Forest plot: delay (steps, bootstrap CI) per group for the proxy, fixed and matched
    comparisons; groups whose val split never reaches the criterion are marked 'not reached'."""
    apply_style()
    panels = ordered_groups(timing, level)
    comparisons = [c for c in COMPARISON_STYLE if (timing["comparison"] == c).any()]
    fig, ax = plt.subplots(figsize=(10, 1.3 + len(panels) * (0.2 + 0.14 * max(1, len(comparisons)))))
    offsets = np.linspace(-0.22, 0.22, len(comparisons)) if len(comparisons) > 1 else np.zeros(1)
    colours = {"proxy": "#333333", "fixed": "#7A7A7A", "matched": "#CC79A7"}
    not_reached: list[tuple[float, str]] = []
    open_right: list[tuple[float, float, str]] = []  # upper CI bound infinite (val not reached in resamples)
    xs_all: list[float] = []
    for i, (lvl, group) in enumerate(panels):
        y = len(panels) - 1 - i
        for off, comp in zip(offsets, comparisons):
            row = timing_row(timing, lvl, group, comp)
            if row is None:
                continue
            d = row.get("delay_steps")
            if is_finite_number(d):
                lo, hi = row.get("delay_ci_low"), row.get("delay_ci_high")
                lo = float(lo) if is_finite_number(lo) else float(d)
                open_ended = is_positive_infinity(hi)
                hi = float(hi) if is_finite_number(hi) else float(d)
                label, marker = COMPARISON_STYLE[comp]
                filled = str(row.get("status")) == "delayed"
                ax.errorbar(float(d), y + off, xerr=[[float(d) - lo], [hi - float(d)]], fmt=marker,
                            color=colours[comp], mfc=colours[comp] if filled else "white", ms=5.5, capsize=2.5,
                            lw=1.2, label=label)
                xs_all += [lo, hi, float(d)]
                if open_ended:
                    open_right.append((y + off, float(d), colours[comp]))
            else:
                not_reached.append((y + off, f"{comp}: {row.get('status', 'not reached')}"))
    if not xs_all:
        ax.text(0.5, 0.5, "no group reached the criterion in both splits:\nthere is no delay to show",
                transform=ax.transAxes, ha="center", va="center", fontsize=10, color="#555555")
    xs = np.asarray(xs_all) if xs_all else np.zeros(1)
    left = min(0.0, float(np.nanmin(xs)))
    right = max(1.0, float(np.nanmax(xs))) * 1.12
    ax.set_xlim(left - 0.04 * (right - left), right)
    for y_arrow, d, colour in open_right:  # CI upper bound infinite: val not reached in some resamples
        ax.annotate("", xy=(1.0, y_arrow), xycoords=("axes fraction", "data"), xytext=(d, y_arrow), textcoords="data",
                    arrowprops=dict(arrowstyle="->", color=colour, lw=1.1), annotation_clip=False)
    for y_text, text in not_reached:
        ax.text(0, y_text, "  " + text, ha="left", va="center", fontsize=7.5, color="#777777", style="italic")
    ax.axvline(0, color=CHANCE, lw=0.9)
    ax.set_yticks(range(len(panels)))
    ax.set_yticklabels([group_title(lvl, g) for lvl, g in reversed(panels)])
    ax.set_ylim(-0.6, len(panels) - 0.4)
    ax.set_xlabel("delay = generalisation step − fit step (checkpoint steps, bootstrap CI)")
    if axis is not None and axis.tokens_per_step:
        tps = float(axis.tokens_per_step)

        def to_tokens(s: Any) -> Any:
            return s * tps

        def to_steps(t: Any) -> Any:
            return t / tps

        sec = ax.secondary_xaxis("top", functions=(to_tokens, to_steps))
        sec.set_xlabel("delay in tokens")
        sec.xaxis.set_major_formatter(FuncFormatter(lambda x, _p: format_count(x)))
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0),
              title="filled = status 'delayed'\narrow = CI open-ended", title_fontsize=8)
    ax.grid(axis="y", alpha=0)
    fig.tight_layout()
    return fig


# ---- exposure ----------------------------------------------------------------------------
def exposure_first_step_table(exposure: pd.DataFrame, steps: Sequence[int], groups: pd.Series) -> pd.DataFrame:
    """Per group and checkpoint interval (t_prev, t]: how many supported pairs' good critical
    phrase first occurs in it (``n_new``) and the cumulative fraction seen by t; the last row
    of each group (``step`` = -1) counts the phrases not seen by the last checkpoint."""
    steps = sorted(int(s) for s in steps)
    sup = exposure["supported"].astype(bool).to_numpy() if "supported" in exposure else np.ones(len(exposure), bool)
    first = floats(exposure["good_first_step"])
    rows = []
    g_values = groups.astype(str).to_numpy()
    for group in ["all"] + sorted(set(g_values[sup])):
        mask = sup if group == "all" else sup & (g_values == group)
        f = first[mask]
        total = int(mask.sum())
        prev = -math.inf
        cum = 0
        for t in steps:
            n_new = int(np.sum((f > prev) & (f <= t)))
            cum += n_new
            rows.append((group, t, n_new, cum, cum / total if total else math.nan, total))
            prev = t
        rows.append((group, -1, total - cum, total, 1.0 if total else math.nan, total))
    return pd.DataFrame(rows, columns=["group", "step", "n_new", "n_seen", "fraction_seen", "n_pairs"])


def exposure_count_table(exposure: pd.DataFrame, groups: pd.Series) -> pd.DataFrame:
    """Per group: number of supported pairs whose good critical phrase occurs 0, 1, 2–9, …
    times in the whole token stream (``good_total_count``)."""
    sup = exposure["supported"].astype(bool).to_numpy() if "supported" in exposure else np.ones(len(exposure), bool)
    counts = floats(exposure["good_total_count"])
    g_values = groups.astype(str).to_numpy()
    rows = []
    for group in ["all"] + sorted(set(g_values[sup])):
        mask = sup if group == "all" else sup & (g_values == group)
        c = counts[mask]
        for label, lo, hi in COUNT_BINS:
            rows.append((group, label, int(np.sum((c >= lo) & (c <= hi))), int(mask.sum())))
    return pd.DataFrame(rows, columns=["group", "bin", "n", "n_pairs"])


def exposure_first_step_figure(first_table: pd.DataFrame, axis: StepAxis) -> Figure:
    """Left: when critical phrases are first seen (all pairs, per checkpoint interval, plus
    'not seen'). Right: fraction of each group's pairs in proxy-train at each checkpoint."""
    apply_style()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 4.3), gridspec_kw={"width_ratios": [1.1, 1]})
    allrows = first_table[first_table["group"] == "all"]
    seen = allrows[allrows["step"] >= 0]
    never = int(allrows.loc[allrows["step"] < 0, "n_new"].sum())
    x = np.arange(len(seen) + 1)
    ax0.bar(x[:-1], seen["n_new"], color=SEEN, width=0.8, label="first seen by this checkpoint")
    ax0.bar(x[-1:], [never], color=UNSEEN, width=0.8, label="not seen by the last checkpoint")
    labels = [format_count(s) for s in seen["step"]] + ["not\nseen"]
    stride = max(1, math.ceil(len(labels) / 16))
    ticks = [i for i in range(len(labels) - 1) if i % stride == 0 and i < len(labels) - 1 - stride / 2]
    ticks.append(len(labels) - 1)
    ax0.set_xticks(ticks)
    ax0.set_xticklabels([labels[i] for i in ticks], fontsize=8)
    ax0.set_xlabel("checkpoint step by which the critical phrase is first seen (one bar per checkpoint)")
    ax0.set_ylabel("pairs")
    ax0.set_title("First exposure of critical phrases (all supported pairs)")
    ax0.legend(loc="upper center")
    groups = [g for g in first_table["group"].unique() if g != "all"]
    cmap = plt.get_cmap("tab20" if len(groups) > 10 else "tab10")
    for i, g in enumerate(["all"] + groups):
        s = first_table[(first_table["group"] == g) & (first_table["step"] >= 0)]
        kw = ({"color": "black", "lw": 2.4, "label": "all pairs"} if g == "all"
              else {"color": cmap(i % cmap.N), "lw": 1.3, "label": str(g).replace("_", " ")})
        ax1.plot(floats(s["step"]), floats(s["fraction_seen"]), marker=".", ms=3, **kw)
    setup_step_axis(ax1, floats(first_table.loc[first_table["step"] >= 0, "step"]), axis)
    ax1.set_ylim(-0.02, 1.02)
    ax1.set_ylabel("fraction of pairs whose phrase was seen")
    ax1.set_title("Share of pairs already seen (proxy-train for k = 1), per phenomenon")
    ax1.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5)
    fig.tight_layout()
    return fig


def exposure_count_figure(count_table: pd.DataFrame) -> Figure:
    """Heat map group × total-count bin: fraction of the group's pairs (cell text: count)."""
    apply_style()
    groups = list(dict.fromkeys(count_table["group"]))
    bins = [b for b, _, _ in COUNT_BINS]
    n = np.zeros((len(groups), len(bins)))
    for i, g in enumerate(groups):
        s = count_table[count_table["group"] == g].set_index("bin")["n"]
        n[i] = [s.get(b, 0) for b in bins]
    frac = n / np.maximum(n.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8.5, 1.2 + 0.36 * len(groups)))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(len(groups)):
        for j in range(len(bins)):
            ax.text(j, i, f"{int(n[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(bins)))
    ax.set_xticklabels(bins)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([group_title("all" if g == "all" else "phenomenon", g) for g in groups])
    ax.set_xlabel("occurrences of the good critical phrase in the whole token stream")
    ax.set_title("Exposure counts per phenomenon (cell: pairs; colour: share of the row)")
    ax.grid(False)
    fig.colorbar(im, ax=ax, label="share of pairs", fraction=0.04, pad=0.02)
    fig.tight_layout()
    return fig


