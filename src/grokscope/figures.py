"""Figures of the report: pure functions, analysis table(s) in, matplotlib ``Figure`` out.

Every function takes the tables exactly as ``grokscope analyse`` writes them (docs/CONTRACTS.md,
"Analysis") and returns a :class:`matplotlib.figure.Figure` drawn with the Agg backend; nothing is
read from or written to disk here (``grokscope.report`` saves and embeds the figures). The
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, SymmetricalLogLocator  # noqa: E402

# ---- colours and labels ------------------------------------------------------------------
SEEN = "#0072B2"  # blue: proxy-train, fixed seen, matched train
UNSEEN = "#D55E00"  # vermillion: proxy-val, never seen, matched val
CHANCE = "#888888"

SPLIT_STYLE: dict[str, tuple[str, str, str]] = {
    # split: (label, colour, line style)
    "proxy_train": ("proxy-train (phrase seen)", SEEN, "-"),
    "proxy_val": ("proxy-val (phrase unseen)", UNSEEN, "-"),
    "fixed_seen": ("seen by the final checkpoint", SEEN, "--"),
    "fixed_unseen": ("never seen", UNSEEN, "--"),
    "matched_train": ("matched proxy-train", SEEN, "-."),
    "matched_val": ("matched proxy-val", UNSEEN, "-."),
    "bin_0": ("0 occurrences", UNSEEN, "-"),
    "bin_1": ("1 occurrence", "#9ECAE1", "-"),
    "bin_2-9": ("2–9 occurrences", "#56B4E9", "-"),
    "bin_10-99": ("10–99 occurrences", "#0072B2", "-"),
    "bin_100+": ("100+ occurrences", "#08306B", "-"),
}
SPLIT_FAMILIES: dict[str, tuple[str, ...]] = {
    "proxy": ("proxy_train", "proxy_val"),
    "fixed": ("fixed_seen", "fixed_unseen"),
    "matched": ("matched_train", "matched_val"),
    "bins": ("bin_0", "bin_1", "bin_2-9", "bin_10-99", "bin_100+"),
}
COMPARISON_STYLE: dict[str, tuple[str, str]] = {
    "proxy": ("proxy split", "o"),
    "fixed": ("fixed split", "s"),
    "matched": ("matched (confound-controlled)", "D"),
}
COUNT_BINS: tuple[tuple[str, int, float], ...] = (
    ("0", 0, 0),
    ("1", 1, 1),
    ("2–9", 2, 9),
    ("10–99", 10, 99),
    ("100–999", 100, 999),
    ("1000+", 1000, math.inf),
)

MAX_PANELS = 24
PANEL_W, PANEL_H = 3.2, 2.6


def _style() -> None:
    plt.rcParams.update(
        {
            "font.size": 9,
            "axes.titlesize": 10,
            "axes.titleweight": "bold",
            "axes.labelsize": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.25,
            "legend.fontsize": 8.5,
            "legend.frameon": False,
            "figure.dpi": 100,
            "savefig.bbox": "tight",
            "svg.fonttype": "none",
        }
    )


# ---- small helpers -----------------------------------------------------------------------
def floats(series: pd.Series) -> np.ndarray:
    """A column as float64 with NaN for missing values (works for nullable Int64 / Float64)."""
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def format_count(x: float, unit: str = "") -> str:
    """12_600_000 -> '12.6M'; NaN -> '–'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    x = float(x)
    sign = "-" if x < 0 else ""
    a = abs(x)
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            v = a / div
            text = f"{v:.1f}".rstrip("0").rstrip(".") if v < 100 else f"{v:.0f}"
            return f"{sign}{text}{suffix}{unit}"
    return f"{sign}{a:.0f}{unit}" if a == int(a) else f"{sign}{a:.3g}{unit}"


@dataclass(frozen=True)
class StepAxis:
    """How steps map to tokens (tokens = step · tokens_per_step), read off curves.parquet."""

    tokens_per_step: float | None

    @classmethod
    def from_table(cls, df: pd.DataFrame | None) -> StepAxis:
        if df is None or "tokens" not in df or "step" not in df:
            return cls(None)
        steps, tokens = floats(df["step"]), floats(df["tokens"])
        ok = (steps > 0) & np.isfinite(tokens)
        if not ok.any():
            return cls(None)
        return cls(float(np.median(tokens[ok] / steps[ok])))

    @property
    def label(self) -> str:
        return "checkpoint step\n(below: tokens seen)" if self.tokens_per_step else "checkpoint step"

    def tokens(self, step: float) -> float:
        return math.nan if self.tokens_per_step is None else step * self.tokens_per_step

    def tick_label(self, step: float) -> str:
        label = format_count(step)
        if self.tokens_per_step is not None:
            label += f"\n{format_count(self.tokens(step))}"
        return label


def setup_step_axis(ax: plt.Axes, steps: np.ndarray, axis: StepAxis, label: bool = True) -> None:
    """Symlog x axis over the checkpoint steps, ticks labelled with step and tokens."""
    steps = steps[np.isfinite(steps)]
    hi = float(steps.max()) if steps.size else 1.0
    lo = float(steps.min()) if steps.size else 0.0
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.4)
    ax.set_xlim(max(lo, 0.0), max(hi, 1.0) * 1.08)
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(step_ticks(lo, hi)))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: axis.tick_label(x)))
    if label:
        ax.set_xlabel(axis.label)


def step_ticks(lo: float, hi: float) -> list[float]:
    """Tick positions for a symlog step axis: 0 (if in range) and the powers of ten up to
    ``hi``; 1 is dropped when there are more than three decades (it would crowd 0)."""
    powers = [10.0**k for k in range(0, int(math.floor(math.log10(max(hi, 1.0)))) + 1)]
    if len(powers) > 3:
        powers = powers[1:]
    if len(powers) > 4:  # keep labels apart in a small panel: every other decade, ending at the top one
        powers = powers[::-1][::2][::-1]
    ticks = ([0.0] if lo <= 0 else []) + [p for p in powers if p >= lo]
    return ticks or [lo, hi]


def _grid(n: int, ncols: int = 4) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def _hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def ordered_groups(df: pd.DataFrame, level: str) -> list[tuple[str, str]]:
    """(level, group) panels: the pooled 'all' first, then the groups of ``level`` sorted."""
    out: list[tuple[str, str]] = []
    if ((df["level"] == "all")).any():
        out.append(("all", "all"))
    if level != "all":
        groups = sorted(str(g) for g in df.loc[df["level"] == level, "group"].unique())
        out += [(level, g) for g in groups]
    return out


def _timing_row(timing: pd.DataFrame | None, level: str, group: str, comparison: str) -> pd.Series | None:
    if timing is None or timing.empty:
        return None
    sel = timing[(timing["level"] == level) & (timing["group"].astype(str) == group) & (timing["comparison"] == comparison)]
    return None if sel.empty else sel.iloc[0]


def _isnum(x: object) -> bool:
    try:
        return x is not None and not pd.isna(x) and math.isfinite(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _is_posinf(x: object) -> bool:
    try:
        return x is not None and not pd.isna(x) and float(x) == math.inf  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def group_title(level: str, group: str) -> str:
    return "all pairs" if level == "all" else str(group).replace("_", " ")


# ---- split curves ------------------------------------------------------------------------
def split_curves_figure(
    curves: pd.DataFrame,
    timing: pd.DataFrame | None,
    family: str = "proxy",
    level: str = "phenomenon",
    criterion_level: float | None = None,
    max_panels: int = MAX_PANELS,
    min_n: int = 1,
) -> Figure:
    """Small multiples of accuracy over checkpoints, one panel per group (pooled first).

    ``family`` picks the splits: "proxy" (proxy-train vs proxy-val), "fixed", "matched" or
    "bins" (exposure-count bins). For proxy/fixed/matched the fit and generalisation steps of
    ``timing.parquet`` (same comparison) are marked and the delay between them shaded. Points
    where a split has fewer than ``min_n`` pairs are not drawn (their accuracy is noise).
    """
    _style()
    splits = SPLIT_FAMILIES[family]
    data = curves[curves["split"].isin(splits)]
    panels = ordered_groups(data, level)[:max_panels]
    if not panels:
        raise ValueError(f"curves.parquet has no rows for splits {splits}")
    axis = StepAxis.from_table(curves)
    nrows, ncols = _grid(len(panels))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(PANEL_W * ncols, PANEL_H * nrows + 0.9), sharex=True, sharey=True, squeeze=False
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
            y, lo, hi = (np.where(ok, floats(s[c]), np.nan) for c in ("accuracy", "ci_low", "ci_high"))
            ax.fill_between(x, lo, hi, color=colour, alpha=0.18, lw=0)
            ax.plot(x, y, color=colour, ls=ls, lw=1.6, marker="o", ms=2.2, label=label)
            if family != "bins":
                n_text.append(f"{int(floats(s['n'])[-1])}")
        ax.axhline(0.5, color=CHANCE, ls="--", lw=0.8)
        if criterion_level is not None:
            ax.axhline(criterion_level, color=CHANCE, ls=":", lw=0.8)
        comparison = family if family in COMPARISON_STYLE else None
        row = _timing_row(timing, lvl, group, comparison) if comparison else None
        if row is not None:
            _mark_timing(ax, row)
        title = group_title(lvl, group)
        if n_text:
            title += f"  (n={'/'.join(n_text)})"
        ax.set_title(title, fontsize=9.5)
        setup_step_axis(ax, all_steps, axis, label=False)
    _hide_unused(axes, len(panels))
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    for c in range(ncols):
        col = [axes[r, c] for r in range(nrows) if axes[r, c].get_visible()]
        if col:
            col[-1].set_xlabel(axis.label)
            col[-1].xaxis.set_tick_params(labelbottom=True)
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
    if _isnum(fit):
        ax.axvline(float(fit), color=SEEN, ls=":", lw=1.3)
    if _isnum(gen):
        ax.axvline(float(gen), color=UNSEEN, ls=":", lw=1.3)
    if _isnum(fit) and _isnum(gen) and float(gen) > float(fit):
        ax.axvspan(float(fit), float(gen), color="#999999", alpha=0.18, lw=0)
    status = str(row.get("status", ""))
    if status == "delayed" and _isnum(row.get("delay_steps")):
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
    _style()
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
            row = _timing_row(timing, lvl, group, comp)
            if row is None:
                continue
            d = row.get("delay_steps")
            if _isnum(d):
                lo, hi = row.get("delay_ci_low"), row.get("delay_ci_high")
                lo = float(lo) if _isnum(lo) else float(d)
                open_ended = _is_posinf(hi)
                hi = float(hi) if _isnum(hi) else float(d)
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
    for y, d, colour in open_right:  # CI upper bound infinite: val not reached in some resamples
        ax.annotate("", xy=(1.0, y), xycoords=("axes fraction", "data"), xytext=(d, y), textcoords="data",
                    arrowprops=dict(arrowstyle="->", color=colour, lw=1.1), annotation_clip=False)
    for y, text in not_reached:
        ax.text(0, y, "  " + text, ha="left", va="center", fontsize=7.5, color="#777777", style="italic")
    ax.axvline(0, color=CHANCE, lw=0.9)
    ax.set_yticks(range(len(panels)))
    ax.set_yticklabels([group_title(lvl, g) for lvl, g in reversed(panels)])
    ax.set_ylim(-0.6, len(panels) - 0.4)
    ax.set_xlabel("delay = generalisation step − fit step (checkpoint steps, bootstrap CI)")
    if axis is not None and axis.tokens_per_step:
        sec = ax.secondary_xaxis("top", functions=(lambda s: s * axis.tokens_per_step, lambda t: t / axis.tokens_per_step))
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
    _style()
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
        kw = dict(color="black", lw=2.4, label="all pairs") if g == "all" else dict(color=cmap(i % cmap.N), lw=1.3, label=str(g).replace("_", " "))
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
    _style()
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


# ---- probes ------------------------------------------------------------------------------
def probes_figure(probes: pd.DataFrame, gen_step: float | None = None, fit_step: float | None = None,
                  axis: StepAxis | None = None) -> Figure:
    """Concept-vector probes per layer over checkpoints: logistic-regression and mean-difference
    accuracy, participation ratio and components for 90 % variance."""
    _style()
    axis = axis or StepAxis(None)
    layers = sorted(int(v) for v in probes["layer"].unique())
    cmap = plt.get_cmap("viridis")
    colour = {layer: cmap(i / max(1, len(layers) - 1)) for i, layer in enumerate(layers)}
    panels = [
        ("logreg_acc", "logistic-regression probe accuracy (CV)", "accuracy"),
        ("meandiff_acc", "mean-difference direction accuracy", "accuracy"),
        ("participation_ratio", "participation ratio of concept vectors", "dimensions"),
        ("n_components_90", "components for 90% of variance", "components"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(12.5, 7.4), sharex=True)
    steps = floats(probes["step"])
    for ax, (col, title, ylabel) in zip(axes.flat, panels):
        if col not in probes:
            ax.text(0.5, 0.5, f"column '{col}' absent", ha="center", transform=ax.transAxes)
            continue
        for layer in layers:
            s = probes[probes["layer"] == layer].sort_values("step")
            x, y = floats(s["step"]), floats(s[col])
            ax.plot(x, y, color=colour[layer], lw=1.4, marker="o", ms=2, label=f"layer {layer}" + (" (emb.)" if layer == 0 else ""))
            if col == "logreg_acc" and "logreg_acc_std" in s:
                sd = floats(s["logreg_acc_std"])
                ax.fill_between(x, y - sd, y + sd, color=colour[layer], alpha=0.12, lw=0)
        if col.endswith("_acc"):
            ax.axhline(0.5, color=CHANCE, ls="--", lw=0.8)
            ax.set_ylim(0.3, 1.02)
        if fit_step is not None:
            ax.axvline(fit_step, color=SEEN, ls=":", lw=1.3)
        if gen_step is not None:
            ax.axvline(gen_step, color=UNSEEN, ls=":", lw=1.3)
            ax.axvspan(gen_step, steps.max() * 1.08, color=UNSEEN, alpha=0.05, lw=0)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        setup_step_axis(ax, steps, axis, label=ax in axes[1])
        ax.xaxis.set_tick_params(labelbottom=True)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if gen_step is not None or fit_step is not None:
        from matplotlib.lines import Line2D

        if fit_step is not None:
            handles.append(Line2D([], [], color=SEEN, ls=":"))
            labels.append(f"proxy-train fit (step {format_count(fit_step)})")
        if gen_step is not None:
            handles.append(Line2D([], [], color=UNSEEN, ls=":"))
            labels.append(f"proxy-val generalises (step {format_count(gen_step)})")
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


# ---- heads -------------------------------------------------------------------------------
def select_steps(steps: Sequence[int], must: Sequence[float | None] = (), k: int = 6) -> list[int]:
    """Up to ``k`` checkpoints spread evenly on a log scale: first, last, and the checkpoints
    nearest to each step in ``must`` (e.g. fit and generalisation steps)."""
    steps = sorted({int(s) for s in steps})
    if len(steps) <= k:
        return steps
    chosen = {steps[0], steps[-1]}
    arr = np.asarray(steps, dtype=float)
    for m in must:
        if m is not None and _isnum(m):
            chosen.add(int(arr[np.argmin(np.abs(arr - float(m)))]))
    pos = np.log1p(arr)
    for q in np.linspace(pos[0], pos[-1], k):
        if len(chosen) >= k:
            break
        candidates = [s for s in steps if s not in chosen]
        chosen.add(min(candidates, key=lambda s: abs(math.log1p(s) - q)))
    return sorted(chosen)[:k] if len(chosen) > k else sorted(chosen)


def head_matrix(heads: pd.DataFrame, step: int, n_layer: int, n_head: int) -> np.ndarray:
    """[n_layer, n_head] mean attention at one checkpoint (NaN where absent)."""
    m = np.full((n_layer, n_head), np.nan)
    s = heads[heads["step"] == step]
    m[s["layer"].astype(int).to_numpy(), s["head"].astype(int).to_numpy()] = floats(s["attention"])
    return m


def _top_heads_at(concentration: pd.DataFrame | None, step: int) -> list[tuple[int, int]]:
    if concentration is None or "top_heads" not in concentration:
        return []
    s = concentration[concentration["step"] == step]
    if s.empty:
        return []
    out = []
    for tok in str(s.iloc[0]["top_heads"]).split(","):
        tok = tok.strip()
        if tok.startswith("L") and "H" in tok:
            try:
                layer, head = tok[1:].split("H")
                out.append((int(layer), int(head)))
            except ValueError:
                continue
    return out


def head_maps_figure(heads: pd.DataFrame, steps: Sequence[int], concentration: pd.DataFrame | None = None,
                     axis: StepAxis | None = None) -> Figure:
    """Layer × head heat maps of critical→context attention at the given checkpoints (shared
    colour scale); the top-k heads of each checkpoint are outlined."""
    from matplotlib.patches import Rectangle

    _style()
    axis = axis or StepAxis(None)
    n_layer = int(heads["layer"].max()) + 1
    n_head = int(heads["head"].max()) + 1
    mats = [head_matrix(heads, s, n_layer, n_head) for s in steps]
    vmax = float(np.nanmax([np.nanmax(m) if np.isfinite(m).any() else 0 for m in mats])) or 1.0
    ncols = len(steps)
    cell = min(0.42, 9.0 / max(n_head, 1) / max(1, ncols) * 2.2)
    w = max(2.2, n_head * cell + 0.8)
    h = max(2.2, n_layer * cell + 1.0)
    fig, axes = plt.subplots(1, ncols, figsize=(w * ncols + 1.2, h), squeeze=False)
    im = None
    for ax, step, m in zip(axes[0], steps, mats):
        im = ax.imshow(m, cmap="magma", vmin=0, vmax=vmax, aspect="equal", origin="upper")
        tokens = axis.tokens(step)
        ax.set_title(f"step {format_count(step)}" + (f"\n{format_count(tokens)} tokens" if _isnum(tokens) else ""), fontsize=9)
        for layer, head in _top_heads_at(concentration, step):
            ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, ec="#00E5FF", lw=1.6))
        ax.set_xlabel("head")
        ax.set_xticks(range(n_head))
        ax.set_yticks(range(n_layer))
        ax.tick_params(labelsize=7)
        ax.grid(False)
    axes[0, 0].set_ylabel("layer")
    fig.colorbar(im, ax=list(axes[0]), label="attention critical→context", fraction=0.025, pad=0.02)
    return fig


def head_trajectories_figure(heads: pd.DataFrame, max_heads: int = 32, gen_step: float | None = None) -> Figure:
    """Heads (rows, the ``max_heads`` with the highest peak attention) × checkpoints
    (columns): how each head's critical→context attention develops during training."""
    _style()
    peak = heads.groupby(["layer", "head"])["attention"].max().sort_values(ascending=False)
    keep = sorted(peak.index[:max_heads])
    steps = sorted(int(s) for s in heads["step"].unique())
    col = {s: j for j, s in enumerate(steps)}
    m = np.full((len(keep), len(steps)), np.nan)
    idx = {k: i for i, k in enumerate(keep)}
    for (layer, head, step), a in zip(zip(heads["layer"], heads["head"], heads["step"]), floats(heads["attention"])):
        i = idx.get((int(layer), int(head)))
        if i is not None:
            m[i, col[int(step)]] = a
    fig, ax = plt.subplots(figsize=(min(13, 3 + 0.28 * len(steps)), 1.4 + 0.22 * len(keep)))
    im = ax.imshow(m, cmap="magma", aspect="auto", vmin=0)
    ax.set_yticks(range(len(keep)))
    ax.set_yticklabels([f"L{layer}H{head}" for layer, head in keep], fontsize=7)
    stride = max(1, math.ceil(len(steps) / 20))
    ax.set_xticks(range(0, len(steps), stride))
    ax.set_xticklabels([format_count(s) for s in steps[::stride]], fontsize=7, rotation=45)
    ax.set_xlabel("checkpoint step (one column per checkpoint)")
    ax.set_ylabel("layer, head")
    title = f"Attention critical→context per head over training ({len(keep)} heads with the highest peak)"
    if gen_step is not None and _isnum(gen_step):
        j = int(np.argmin(np.abs(np.asarray(steps, float) - float(gen_step))))
        ax.axvline(j - 0.5, color="#00E5FF", ls="--", lw=1.4)
        title += f"\ncyan dashed line: proxy-val generalises (step {format_count(gen_step)})"
    ax.grid(False)
    ax.set_title(title, fontsize=9.5)
    fig.colorbar(im, ax=ax, label="attention", fraction=0.03, pad=0.02)
    fig.tight_layout()
    return fig


def head_concentration_figure(concentration: pd.DataFrame, gen_step: float | None = None,
                              fit_step: float | None = None, axis: StepAxis | None = None) -> Figure:
    """Top-k share, Gini and entropy of the per-head attention over checkpoints."""
    _style()
    axis = axis or StepAxis(None)
    s = concentration.sort_values("step")
    x = floats(s["step"])
    panels = [("topk_share", "share of the top-k heads", "share"), ("gini", "Gini coefficient over heads", "Gini"),
              ("entropy", "entropy over heads", "entropy (nats)")]
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.6))
    for ax, (col, title, ylabel) in zip(axes, panels):
        if col in s:
            ax.plot(x, floats(s[col]), color="#333333", lw=1.6, marker="o", ms=2.5)
        if fit_step is not None:
            ax.axvline(fit_step, color=SEEN, ls=":", lw=1.3, label="proxy-train fit")
        if gen_step is not None:
            ax.axvline(gen_step, color=UNSEEN, ls=":", lw=1.3, label="proxy-val generalises")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        setup_step_axis(ax, x, axis)
    if fit_step is not None or gen_step is not None:
        axes[0].legend(loc="best")
    fig.tight_layout()
    return fig


# ---- ablation ----------------------------------------------------------------------------
def ablation_summary(ablation: pd.DataFrame) -> pd.DataFrame:
    """Per step: accuracy change when ablating the top heads vs k random heads (mean, sd over
    repeats), the share of random repeats that hurt at least as much, and the p-value
    (1 + #{random ≤ top}) / (1 + #random)."""
    rows = []
    for step, s in ablation.groupby("step", sort=True):
        top = s[s["condition"] == "top"]
        rnd = s[s["condition"] == "random"]
        top_delta = float(floats(top["delta_accuracy"]).mean()) if len(top) else math.nan
        rd = floats(rnd["delta_accuracy"])
        rows.append({
            "step": int(step),
            "top_heads": str(top["heads"].iloc[0]) if len(top) else "",
            "top_delta": top_delta,
            "top_accuracy": float(floats(top["accuracy"]).mean()) if len(top) else math.nan,
            "random_delta_mean": float(rd.mean()) if rd.size else math.nan,
            "random_delta_sd": float(rd.std(ddof=1)) if rd.size > 1 else math.nan,
            "n_random": int(rd.size),
            "p_random_le_top": float(np.mean(rd <= top_delta)) if rd.size and _isnum(top_delta) else math.nan,
            # permutation-style p-value with +1 smoothing (as grokscope.heads.ablation_p_value)
            "p_value": float((1 + np.sum(rd <= top_delta)) / (1 + rd.size)) if _isnum(top_delta) else math.nan,
        })
    return pd.DataFrame(rows)


def ablation_figure(ablation: pd.DataFrame) -> Figure:
    """Accuracy change from ablating the top-k heads (black) vs k random heads (grey points,
    one per repeat; bar = mean ± sd), per checkpoint."""
    _style()
    steps = sorted(int(s) for s in ablation["step"].unique())
    fig, ax = plt.subplots(figsize=(max(5.5, 1.3 * len(steps) + 2.5), 3.8))
    rng = np.random.default_rng(0)
    for i, step in enumerate(steps):
        s = ablation[ablation["step"] == step]
        rd = floats(s.loc[s["condition"] == "random", "delta_accuracy"])
        td = floats(s.loc[s["condition"] == "top", "delta_accuracy"])
        if rd.size:
            ax.scatter(i + 0.12 + rng.uniform(-0.06, 0.06, rd.size), rd, s=10, color="#999999", alpha=0.7,
                       label="k random heads (each repeat)" if i == 0 else None, zorder=2)
            sd = rd.std(ddof=1) if rd.size > 1 else 0.0
            ax.errorbar(i + 0.12, rd.mean(), yerr=sd, fmt="_", color="#555555", ms=14, capsize=3, zorder=3,
                        label="random: mean ± sd" if i == 0 else None)
        if td.size:
            ax.scatter(np.full(td.size, i - 0.12), td, s=46, marker="D", color="black", zorder=4,
                       label="top-k heads" if i == 0 else None)
    ax.axhline(0, color=CHANCE, lw=0.9)
    ax.set_xticks(range(len(steps)))
    ax.set_xticklabels([f"step {format_count(s)}" for s in steps])
    ax.set_xlim(-0.6, len(steps) - 0.4)
    ax.set_ylabel("Δ accuracy vs. no ablation")
    ax.set_title("Ablating the most attentive heads vs. as many random heads")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


FigureFn = Callable[..., Figure]
