"""Figures of the report about the model's insides: concept-vector probes per layer, attention
heads (maps, trajectories, concentration) and the head-ablation check. Pure functions, analysis
table(s) in, matplotlib ``Figure`` out; conventions as in :mod:`grokscope.report.figures`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from grokscope.report.style import (  # noqa: E402
    CHANCE,
    SEEN,
    UNSEEN,
    StepAxis,
    apply_style,
    floats,
    format_count,
    is_finite_number,
    setup_step_axis,
)


# ---- probes ------------------------------------------------------------------------------
def probes_figure(probes: pd.DataFrame, gen_step: float | None = None, fit_step: float | None = None,
                  axis: StepAxis | None = None) -> Figure:
    """Concept-vector probes per layer over checkpoints: logistic-regression and mean-difference
    accuracy, participation ratio and components for 90 % variance."""
    apply_style()
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
            ax.plot(x, y, color=colour[layer], lw=1.4, marker="o", ms=2,
                    label=f"layer {layer}" + (" (emb.)" if layer == 0 else ""))
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


def concepts_figure(concepts: pd.DataFrame, axis: StepAxis | None = None) -> Figure:
    """Per phenomenon (rows): mean-direction AUROC and centred effective rank (solid) against the
    drift baseline (dashed) per layer over checkpoints; the before/after windows shaded."""
    apply_style()
    axis = axis or StepAxis(None)
    phens = sorted(str(p) for p in concepts["phenomenon"].unique())
    layers = sorted(int(v) for v in concepts["layer"].unique())
    cmap = plt.get_cmap("viridis")
    colour = {layer: cmap(i / max(1, len(layers) - 1)) for i, layer in enumerate(layers)}
    fig, axes = plt.subplots(len(phens), 2, figsize=(12.5, 2.9 * len(phens) + 0.6), squeeze=False)
    for row, ph in zip(axes, phens):
        sub = concepts[concepts["phenomenon"].astype(str) == ph]
        steps = floats(sub["step"])
        for ax, col, title in ((row[0], "auroc", f"{ph}: AUROC of the mean concept direction (proxy-val)"),
                               (row[1], "eff_rank", f"{ph}: effective rank of centred concept vectors")):
            for layer in layers:
                s = sub[sub["layer"] == layer].sort_values("step")
                ax.plot(floats(s["step"]), floats(s[col]), color=colour[layer], lw=1.3, marker="o", ms=2,
                        label=f"layer {layer}" + (" (emb.)" if layer == 0 else ""))
                if col == "eff_rank" and "eff_rank_low" in s:
                    ax.fill_between(floats(s["step"]), floats(s["eff_rank_low"]), floats(s["eff_rank_high"]),
                                    color=colour[layer], alpha=0.12, lw=0)
                    ax.plot(floats(s["step"]), floats(s["baseline_eff_rank"]), color=colour[layer], lw=0.8, ls="--")
            for phase, shade in (("before", SEEN), ("after", UNSEEN)):
                st = floats(sub.loc[sub["phase"] == phase, "step"])
                if st.size:
                    ax.axvspan(st.min(), st.max(), color=shade, alpha=0.07, lw=0)
            if col == "auroc":
                ax.axhline(0.5, color=CHANCE, ls="--", lw=0.8)
                ax.set_ylim(0.3, 1.02)
            ax.set_title(title, fontsize=9)
            setup_step_axis(ax, steps, axis, label=ax in axes[-1])
    handles, labels = axes[0, 0].get_legend_handles_labels()
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
        if m is not None and is_finite_number(m):
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

    apply_style()
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
        tokens_line = f"\n{format_count(tokens)} tokens" if is_finite_number(tokens) else ""
        ax.set_title(f"step {format_count(step)}" + tokens_line, fontsize=9)
        for layer, head in _top_heads_at(concentration, step):
            ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, ec="#00E5FF", lw=1.6))
        ax.set_xlabel("head")
        ax.set_xticks(range(n_head))
        ax.set_yticks(range(n_layer))
        ax.tick_params(labelsize=7)
        ax.grid(False)
    axes[0, 0].set_ylabel("layer")
    assert im is not None  # at least one checkpoint
    fig.colorbar(im, ax=list(axes[0]), label="attention critical→context", fraction=0.025, pad=0.02)
    return fig


def head_trajectories_figure(heads: pd.DataFrame, max_heads: int = 32, gen_step: float | None = None) -> Figure:
    """Heads (rows, the ``max_heads`` with the highest peak attention) × checkpoints
    (columns): how each head's critical→context attention develops during training."""
    apply_style()
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
    if gen_step is not None and is_finite_number(gen_step):
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
    apply_style()
    axis = axis or StepAxis(None)
    s = concentration.sort_values("step")
    x = floats(s["step"])
    panels = [("topk_share", "share of the top-k heads", "share"), ("gini", "Gini coefficient over heads", "Gini"),
              ("entropy", "entropy over heads", "entropy (nats)")]
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.6))
    for ax, (col, title, ylabel) in zip(axes, panels):
        if col in s:
            ax.plot(x, floats(s[col]), color="#333333", lw=1.6, marker="o", ms=2.5)
        if col == "topk_share" and "topk_floor" in s:
            ax.plot(x, floats(s["topk_floor"]), color=CHANCE, ls="--", lw=0.9, label="floor k/(L·H)")
        if fit_step is not None:
            ax.axvline(fit_step, color=SEEN, ls=":", lw=1.3, label="proxy-train fit")
        if gen_step is not None:
            ax.axvline(gen_step, color=UNSEEN, ls=":", lw=1.3, label="proxy-val generalises")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        setup_step_axis(ax, x, axis)
    if fit_step is not None or gen_step is not None or "topk_floor" in s:
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
            "p_random_le_top": float(np.mean(rd <= top_delta)) if rd.size and is_finite_number(top_delta) else math.nan,
            # permutation-style p-value with +1 smoothing (as grokscope.analyse.heads.ablation_p_value)
            "p_value": (float((1 + np.sum(rd <= top_delta)) / (1 + rd.size)) if is_finite_number(top_delta)
                        else math.nan),
        })
    return pd.DataFrame(rows)


def ablation_figure(ablation: pd.DataFrame) -> Figure:
    """Accuracy change from ablating the top-k heads (black) vs k random heads (grey points,
    one per repeat; bar = mean ± sd), per checkpoint."""
    apply_style()
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
