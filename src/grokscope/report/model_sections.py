"""The report's sections on the model's inside: concept-vector probes and dimensionality,
attention heads, and the head-ablation check. Each degrades to a note naming the command that
produces its table."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from grokscope.report.format import Section, _esc, _num, _Writer, fmt_p, html_table, missing_note
from grokscope.report.inputs import ReportInputs, pooled_timing

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def _missing(inp: ReportInputs, table: str, title: str, why: str) -> Section:
    """The section of an analysis table that is not there: a note naming the command that makes it."""
    return Section(table, title, missing_note(f"analysis/{table}.parquet", f"grokscope analyse {inp.study.root}", why),
                   table)


def _proxy_steps(timing: pd.DataFrame | None) -> tuple[float | None, float | None]:
    row = pooled_timing(timing)
    if row is None:
        return None, None
    fit, gen = _num(row["fit_step"]), _num(row["gen_step"])
    return (None if math.isnan(fit) else fit), (None if math.isnan(gen) else gen)


def section_probes(inp: ReportInputs, w: _Writer, axis: Any) -> Section:
    import pandas as pd

    from grokscope.report import model_figures as MF

    probes = inp.tables["probes"]
    title = "Concept vectors: probe accuracy and dimensionality per layer"
    if probes is None or probes.empty:
        return _missing(inp, "probes", title, "It needs hidden states captured while scoring "
                        "(<code>[score] capture_hidden = true</code>).")
    fit, gen = _proxy_steps(inp.tables["timing"])
    parts = [w.figure(
        "probes", MF.probes_figure(probes, gen, fit, axis),
        "Probe accuracy and dimensionality of the concept vectors over checkpoints",
        "Concept vector = hidden state of the good minus the bad sentence at the critical token. Top: how well a "
        "cross-validated logistic-regression probe (band: ± sd over folds) and the mean-difference direction "
        "separate good from bad, per layer (dark = embeddings, yellow = last layer). Bottom: how many dimensions "
        "the concept vectors span (participation ratio; components for 90% of variance). Look at what changes "
        "around the generalisation step (vermillion dotted line; shaded after): rising probe accuracy with "
        "falling dimensionality means the contrast becomes a compact, linearly readable feature.",
    )]
    parts.append(w.table("probes", probes))
    if "phase" in probes and (probes["phase"].astype(str) != "").any():
        ph = probes[probes["phase"].astype(str).isin(["before", "after"])]
        agg = (ph.groupby(["layer", "phase"])[["logreg_acc", "meandiff_acc", "participation_ratio", "n_components_90"]]
               .mean().unstack("phase"))
        rows = []
        for layer in agg.index:
            r: dict[str, Any] = {"layer": int(layer)}
            for col in ("logreg_acc", "participation_ratio", "n_components_90"):
                for phase in ("before", "after"):
                    v = agg.get((col, phase), pd.Series(dtype=float)).get(layer, math.nan)
                    r[f"{col} {phase}"] = f"{v:.3f}" if col != "n_components_90" and not math.isnan(v) else (
                        f"{v:.1f}" if not math.isnan(v) else "–")
            rows.append(r)
        table = pd.DataFrame(rows)
        parts.append("<p class=\"note\">Mean over checkpoints before vs after the pooled proxy generalisation "
                     "step:</p>")
        parts.append(html_table(table, "small", status_col=None))
        parts.append(w.table("probes_phase", table))
    parts.extend(_concept_parts(inp, w, axis))
    return Section("probes", title, "\n".join(parts))


def _concept_parts(inp: ReportInputs, w: _Writer, axis: Any) -> list[str]:
    """The paper's measures (analysis/concepts.parquet, concept_summary.parquet), when present."""
    from grokscope.report import model_figures as MF

    concepts, summary = inp.tables.get("concepts"), inp.tables.get("concept_summary")
    if concepts is None or concepts.empty:
        return []
    parts = [w.figure(
        "concepts", MF.concepts_figure(concepts, axis),
        "The paper's measures per phenomenon: mean-direction AUROC and effective rank",
        "Concept vectors oriented by the pair's form (good critical word sorting first = +1), so singular- and "
        "plural-good pairs do not cancel. Left: AUROC of the inner product with the mean concept vector of the "
        "proxy-train pairs, separating good from bad states of the proxy-val pairs (0.5 = chance; the embedding "
        "layer is the lexical baseline: the orientation lets a word-form direction separate too; "
        "<code>auroc_raw</code> in the table is the unoriented AUROC). Right: effective rank "
        "(exp entropy of normalised singular values) of "
        "the centred concept-vector matrix on equal-size subsamples (band: interval over subsamples); dashed: "
        "the same for random good_i − good_j differences (general drift). Shaded: windows of equal log-token "
        "length before (blue) and after (vermillion) the phenomenon's own generalisation, untrained checkpoints "
        "excluded.")]
    parts.append(w.table("concepts", concepts))
    if summary is not None and not summary.empty:
        cols = [c for c in ("phenomenon", "layer", "phase", "n_checkpoints", "auroc", "auroc_low", "auroc_high",
                            "auroc_raw",
                            "eff_rank", "eff_rank_low", "eff_rank_high", "baseline_eff_rank", "eff_rank_ratio",
                            "logreg_grouped") if c in summary]
        shown = summary[cols].round(3)
        parts.append("<p class=\"note\">Before vs after each phenomenon's generalisation (mean over the "
                     "window's checkpoints, bootstrap interval over checkpoints):</p>")
        parts.append(html_table(shown, "small", status_col=None))
        parts.append(w.table("concept_summary", summary))
    return parts


def section_heads(inp: ReportInputs, w: _Writer, axis: Any) -> Section:
    from grokscope.report import model_figures as MF

    heads, conc = inp.tables["heads"], inp.tables["concentration"]
    title = "Attention heads: critical→context attention over checkpoints"
    cmd = f"grokscope analyse {inp.study.root}"
    extra = "It needs attention captured while scoring (<code>[score] capture_attention = true</code>)."
    if (heads is None or heads.empty) and (conc is None or conc.empty):
        note = missing_note("analysis/heads.parquet and head_concentration.parquet", cmd, extra)
        return Section("heads", title, note, "heads")
    fit, gen = _proxy_steps(inp.tables["timing"])
    parts = []
    missing = []
    if heads is not None and not heads.empty:
        steps = MF.select_steps(heads["step"].unique(), (fit, gen), k=6)
        parts.append(w.figure(
            "head_maps", MF.head_maps_figure(heads, steps, conc, axis),
            "Layer × head attention from the critical token to the context token",
            "Mean attention weight (good sentences) at selected checkpoints: the first, those nearest the fit and "
            "generalisation steps, and the last, on one colour scale. Cyan boxes: the top-k heads of that "
            "checkpoint (from head_concentration.parquet). A bright cell appearing around the generalisation step "
            "is a head that starts to carry the dependency.",
        ))
        sel = heads[heads["step"].isin(steps)].sort_values(["step", "layer", "head"])
        parts.append(w.table("head_maps", sel.reset_index(drop=True)))
        parts.append(w.figure(
            "head_trajectories", MF.head_trajectories_figure(heads, 32, gen),
            "Per-head attention over all checkpoints",
            "One row per head (the heads with the highest peak attention), one column per checkpoint: when each "
            "head starts to attend from the critical to the context token.",
        ))
        parts.append(w.table("heads", heads))
    else:
        missing.append("heads")
        parts.append(missing_note("analysis/heads.parquet", cmd, extra))
    if conc is not None and not conc.empty:
        last = conc.sort_values("step").iloc[-1]
        parts.append(w.figure(
            "head_concentration", MF.head_concentration_figure(conc, gen, fit, axis),
            "How concentrated the attention is across heads",
            "Share of the total critical→context attention carried by the top-k heads, Gini coefficient (1 = one "
            "head carries all) and entropy (low = concentrated). Concentration that rises around the "
            f"generalisation step points to a dedicated circuit. Top heads at the last checkpoint: "
            f"<b>{_esc(last['top_heads'])}</b>."
            + (f" The top-k share's floor (every head equal) is k/(L·H) = {float(last['topk_floor']):.2f}."
               if "topk_floor" in conc else ""),
        ))
        parts.append(w.table("head_concentration", conc))
    else:
        missing.append("concentration")
        parts.append(missing_note("analysis/head_concentration.parquet", cmd, extra))
    return Section("heads", title, "\n".join(parts), ",".join(missing))


def section_ablation(inp: ReportInputs, w: _Writer) -> Section:
    from grokscope.report import model_figures as MF

    abl = inp.tables["ablation"]
    title = "Causal check: head ablation"
    if abl is None or abl.empty:
        return _missing(inp, "ablation", title, "Ablation re-scores checkpoints, so the checkpoints must be on disk.")
    summ = MF.ablation_summary(abl)
    parts = [w.figure(
        "ablation", MF.ablation_figure(abl), "Accuracy change when heads are ablated, per checkpoint",
        "Accuracy change when the top-k heads by critical→context attention are ablated (black diamonds) vs "
        "reference sets of as many heads from the same layers (grey, one point per distinct set). If the top "
        "heads carry the dependency, black sits clearly below the grey cloud."
        + (f" Ablation: {_esc(str(abl['mode'].iloc[0]))} (mean = replaced by the head's mean output over the "
           f"benchmark); {int(abl['n_sets'].iloc[0])} distinct layer-matched reference sets exist."
           if {"mode", "n_sets"} <= set(abl.columns) else ""),
    )]
    disp = summ.assign(
        top_delta=summ["top_delta"].map(lambda v: f"{v:+.3f}"),
        top_accuracy=summ["top_accuracy"].map(lambda v: f"{v:.3f}"),
        random_delta_mean=summ["random_delta_mean"].map(lambda v: f"{v:+.3f}"),
        random_delta_sd=summ["random_delta_sd"].map(lambda v: "–" if math.isnan(v) else f"{v:.3f}"),
        p_random_le_top=[("–" if math.isnan(p) else f"{round(p * n)}/{n}")
                         for p, n in zip(summ["p_random_le_top"], summ["n_random"])],
        p_value=summ["p_value"].map(fmt_p),
    ).rename(columns={"top_delta": "Δ acc top-k", "top_accuracy": "acc top-k ablated",
                      "random_delta_mean": "Δ acc random (mean)", "random_delta_sd": "sd",
                      "n_random": "repeats", "p_random_le_top": "random repeats ≤ top", "p_value": "p",
                      "top_heads": "top heads"})
    parts.append(html_table(disp, "small", status_col=None))
    parts.append(w.table("ablation_summary", summ))
    parts.append(w.table("ablation", abl))
    return Section("ablation", title, "\n".join(parts))
