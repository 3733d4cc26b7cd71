"""What every report figure shares: colours and line styles of the splits, the matplotlib
style, the checkpoint-step axis (symlog, tokens seen under each tick), panel grids, and small
helpers for the analysis tables' nullable columns. See :mod:`grokscope.report.figures` for the
conventions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

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


def apply_style() -> None:
    """Set the report's matplotlib style (fonts, no top/right spines, light grid, SVG text as text)."""
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
    powers = [10.0**k for k in range(int(math.floor(math.log10(max(hi, 1.0)))) + 1)]
    if len(powers) > 3:
        powers = powers[1:]
    if len(powers) > 4:  # keep labels apart in a small panel: every other decade, ending at the top one
        powers = powers[::-1][::2][::-1]
    ticks = ([0.0] if lo <= 0 else []) + [p for p in powers if p >= lo]
    return ticks or [lo, hi]


def panel_grid(n: int, ncols: int = 4) -> tuple[int, int]:
    """(rows, columns) of a grid holding ``n`` panels, at most ``ncols`` per row."""
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def hide_unused_axes(axes: np.ndarray, used: int) -> None:
    """Hide the panels of a grid after the first ``used``."""
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def ordered_groups(df: pd.DataFrame, level: str) -> list[tuple[str, str]]:
    """(level, group) panels: the pooled 'all' first, then the groups of ``level`` sorted."""
    out: list[tuple[str, str]] = []
    if (df["level"] == "all").any():
        out.append(("all", "all"))
    if level != "all":
        groups = sorted(str(g) for g in df.loc[df["level"] == level, "group"].unique())
        out += [(level, g) for g in groups]
    return out


def timing_row(timing: pd.DataFrame | None, level: str, group: str, comparison: str) -> pd.Series | None:
    """The row of ``timing.parquet`` for one (level, group, comparison), or None."""
    if timing is None or timing.empty:
        return None
    sel = timing[(timing["level"] == level) & (timing["group"].astype(str) == group)
                 & (timing["comparison"] == comparison)]
    return None if sel.empty else sel.iloc[0]


def is_finite_number(x: object) -> bool:
    """True for a finite number (False for None, NA, NaN, ±inf and non-numbers)."""
    try:
        return x is not None and not pd.isna(x) and math.isfinite(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def is_positive_infinity(x: object) -> bool:
    """True for +inf (a step or bound that was never reached)."""
    try:
        return x is not None and not pd.isna(x) and float(x) == math.inf  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def group_title(level: str, group: str) -> str:
    """A panel title: 'all pairs' for the pooled level, else the group with spaces."""
    return "all pairs" if level == "all" else str(group).replace("_", " ")


