"""The report's inputs (the analysis tables, exposure and the provenance the earlier stages
recorded) and its sections: summary and delays, accuracy curves, exposure, concept-vector
probes, attention heads, ablation, provenance. Each section degrades to a note naming the
command that produces its table."""
from __future__ import annotations

import datetime as _dt
import json
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grokscope import __version__
from grokscope.core.errors import DataError, MissingStageError
from grokscope.report.format import (
    Section,
    _esc,
    _num,
    _Writer,
    fmt_ci,
    fmt_int,
    fmt_p,
    fmt_step,
    fmt_tokens,
    html_table,
    missing_note,
)
from grokscope.core.store import Study, read_json, read_parquet_metadata

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


# name -> (file under analysis/, required columns)
ANALYSIS_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "curves": ("curves.parquet", ("level", "group", "split", "step", "tokens", "n", "accuracy", "ci_low", "ci_high")),
    "timing": ("timing.parquet", ("level", "group", "comparison", "fit_step", "gen_step", "fit_tokens", "gen_tokens",
                                  "delay_steps", "delay_tokens", "delay_ci_low", "delay_ci_high", "p_lead", "status",
                                  "n_train", "n_val")),
    "probes": ("probes.parquet", ("step", "layer", "n_pairs", "logreg_acc", "meandiff_acc", "participation_ratio",
                                  "n_components_90")),
    "heads": ("heads.parquet", ("step", "layer", "head", "attention")),
    "concentration": ("head_concentration.parquet", ("step", "topk_share", "gini", "entropy", "top_heads")),
    "ablation": ("ablation.parquet", ("step", "condition", "repeat", "heads", "accuracy", "delta_accuracy")),
}


EXPOSURE_COLUMNS = ("uid", "pair_id", "good_first_step", "good_total_count")


@dataclass
class ReportInputs:
    """Everything the report reads from a study (None = absent)."""

    study: Study
    tables: dict[str, pd.DataFrame | None]
    metadata: dict[str, dict[str, Any]]
    exposure: pd.DataFrame | None = None
    exposure_meta: dict[str, Any] = field(default_factory=dict)
    phrases: pd.DataFrame | None = None
    phrases_meta: dict[str, Any] = field(default_factory=dict)
    scores_meta: dict[str, Any] = field(default_factory=dict)
    scored_steps: list[int] = field(default_factory=list)
    config_text: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    try:
        df = pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - any reader failure is a data problem of this file
        raise DataError(f"{path}: cannot read Parquet table ({type(e).__name__}: {e})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; expected at least {list(columns)} "
            f"(docs/CONTRACTS.md); found {list(df.columns)}"
        )
    return df


def _meta(path: Path) -> dict[str, Any]:
    try:
        return read_parquet_metadata(path)
    except Exception:  # noqa: BLE001 - metadata is optional provenance
        return {}


def load_inputs(study: Study) -> ReportInputs:
    """Read every table the report can use; raise MissingStageError if no analysis exists."""
    tables: dict[str, pd.DataFrame | None] = {}
    metadata: dict[str, dict[str, Any]] = {}
    for name, (fname, cols) in ANALYSIS_TABLES.items():
        path = study.analysis_dir / fname
        tables[name] = _read_table(path, cols) if path.exists() else None
        metadata[name] = _meta(path) if path.exists() else {}
    if all(t is None for t in tables.values()):
        raise MissingStageError(
            "analysis tables (" + ", ".join(f for f, _ in ANALYSIS_TABLES.values()) + ")",
            str(study.analysis_dir), f"grokscope analyse {study.root}",
        )
    inputs = ReportInputs(study=study, tables=tables, metadata=metadata)
    if study.exposure_path.exists():
        inputs.exposure = _read_table(study.exposure_path, EXPOSURE_COLUMNS)
        inputs.exposure_meta = _meta(study.exposure_path)
    if study.phrases_path.exists():
        import pandas as pd

        inputs.phrases = pd.read_parquet(study.phrases_path, columns=None)
        inputs.phrases_meta = _meta(study.phrases_path)
    inputs.scored_steps = study.scored_steps()
    if inputs.scored_steps:
        inputs.scores_meta = _meta(study.score_path(inputs.scored_steps[-1]))
    if study.config_path.exists():
        inputs.config_text = study.config_path.read_text(encoding="utf-8")
    for attr, path in (("manifest", study.tokens_dir / "manifest.json"), ("run_info", study.run_dir / "run.json")):
        if path.exists():
            try:
                setattr(inputs, attr, read_json(path))
            except (OSError, json.JSONDecodeError):
                pass
    return inputs


def _criterion_level(meta: dict[str, Any]) -> float | None:
    """The absolute accuracy criterion recorded in timing.parquet's metadata, if any."""
    crit = meta.get("criterion", meta)
    if isinstance(crit, dict):
        kind = crit.get("mode", crit.get("criterion", crit.get("kind", "level")))
        level = crit.get("criterion_level", crit.get("level"))
        if level is not None and kind in ("level", "both"):
            try:
                return float(level)
            except (TypeError, ValueError):
                return None
    return None


def _min_pairs(meta: dict[str, Any]) -> int:
    """Pairs a split needs at a checkpoint for its accuracy to count (timing metadata; else 1)."""
    crit = meta.get("criterion", meta)
    try:
        return max(1, int(crit.get("min_pairs", 1))) if isinstance(crit, dict) else 1
    except (TypeError, ValueError):
        return 1


def _criterion_text(meta: dict[str, Any]) -> str:
    crit = meta.get("criterion", meta)
    if isinstance(crit, dict) and crit:
        keep = {k: v for k, v in crit.items() if not isinstance(v, (dict, list)) or k == "criterion"}
        return ", ".join(f"{k} = {v}" for k, v in sorted(keep.items()))
    if isinstance(crit, str):
        return crit
    return ""


def _pooled_timing(timing: pd.DataFrame | None, comparison: str = "proxy") -> Any:
    if timing is None:
        return None
    sel = timing[(timing["level"] == "all") & (timing["comparison"] == comparison)]
    return None if sel.empty else sel.iloc[0]


def delay_display(timing: pd.DataFrame, tokens_per_step: float | None) -> pd.DataFrame:
    """timing rows as the strings the HTML delay tables show."""
    import pandas as pd

    out = []
    for _, r in timing.iterrows():
        tlo = _num(r["delay_ci_low"]) * tokens_per_step if tokens_per_step else math.nan
        thi = _num(r["delay_ci_high"]) * tokens_per_step if tokens_per_step else math.nan
        out.append({
            "group": "all pairs" if r["level"] == "all" else str(r["group"]),
            "comparison": str(r["comparison"]),
            "n train / val": f"{fmt_int(r['n_train'])} / {fmt_int(r['n_val'])}",
            "fit step": fmt_step(r["fit_step"]),
            "gen. step": fmt_step(r["gen_step"]),
            "fit tokens": fmt_tokens(r["fit_tokens"]),
            "gen. tokens": fmt_tokens(r["gen_tokens"]),
            "delay (steps)": fmt_int(r["delay_steps"]),
            "95% CI (steps)": fmt_ci(r["delay_ci_low"], r["delay_ci_high"]),
            "delay (tokens)": fmt_tokens(r["delay_tokens"]),
            "CI (tokens)": fmt_ci(tlo, thi, fmt_tokens),
            "p (train leads)": fmt_p(r["p_lead"]),
            "status": str(r["status"]),
        })
    df = pd.DataFrame(out)
    if len(df) and df["comparison"].nunique() == 1:  # one comparison: say it in the text, not in every row
        df = df.drop(columns="comparison")
    return df


def _timing_sorted(timing: pd.DataFrame, level: str, comparisons: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    from grokscope.report.style import ordered_groups

    parts = []
    for comp in comparisons:
        t = timing[timing["comparison"] == comp]
        for lvl, g in ordered_groups(t, level):
            parts.append(t[(t["level"] == lvl) & (t["group"].astype(str) == g)])
    return pd.concat(parts, ignore_index=True) if parts else timing.iloc[0:0]


def section_summary(inp: ReportInputs, w: _Writer, axis: Any) -> Section:
    from grokscope.report import figures as F

    timing = inp.tables["timing"]
    cmd = f"grokscope analyse {inp.study.root}"
    if timing is None:
        return Section("delays", "Delayed generalisation", missing_note("analysis/timing.parquet (fit and generalisation steps)", cmd), "timing")
    parts = []
    pooled = _pooled_timing(timing)
    crit = _criterion_text(inp.metadata.get("timing", {}))
    if pooled is not None:
        status = str(pooled["status"])
        if status == "delayed":
            lead = (f"Pooled over all pairs, proxy-train reaches the criterion at step <b>{fmt_step(pooled['fit_step'])}</b> "
                    f"and proxy-val at step <b>{fmt_step(pooled['gen_step'])}</b>: generalisation lags fitting by "
                    f"<b>{fmt_int(pooled['delay_steps'])} steps</b> ({fmt_tokens(pooled['delay_tokens'])} tokens; "
                    f"95% CI {fmt_ci(pooled['delay_ci_low'], pooled['delay_ci_high'])} steps; "
                    f"p = {fmt_p(pooled['p_lead'])} that train leads).")
        else:
            lead = (f"Pooled over all pairs: status <b>{_esc(status)}</b> (fit step {fmt_step(pooled['fit_step'])}, "
                    f"generalisation step {fmt_step(pooled['gen_step'])}, delay {fmt_int(pooled['delay_steps'])} steps, "
                    f"p = {fmt_p(pooled['p_lead'])}).")
        parts.append(f'<p class="lead">{lead}</p>')
    if crit:
        parts.append(f'<p class="note">Criterion: {_esc(crit)}. A step is where a split first reaches the criterion '
                     "and stays there; \"not reached\" means it never did by the last checkpoint.</p>")
    rows = _timing_sorted(timing, "phenomenon", ("proxy",))
    parts.append('<p class="note">Proxy split (proxy-train vs proxy-val): all pairs pooled, then each phenomenon.</p>')
    parts.append(html_table(delay_display(rows, axis.tokens_per_step), "delays"))
    parts.append(w.table("delays", rows))
    if not timing.empty:
        fig = F.delay_figure(timing[timing["level"].isin(["all", "phenomenon"])], "phenomenon", axis)
        parts.append(w.figure(
            "delays", fig, "Delay per phenomenon (proxy, fixed and matched comparisons)",
            "Each marker is the delay from the fit step (proxy-train reaches the criterion) to the generalisation "
            "step (proxy-val reaches it), with its bootstrap interval over pairs. Markers right of zero with an "
            "interval that excludes zero are delayed generalisation; filled markers have status 'delayed'. "
            "If the matched (confound-controlled) delay agrees with the proxy delay, the lag is not explained by "
            "seen phrases being made of more frequent words.",
        ))
    par = timing[timing["level"] == "paradigm"]
    if not par.empty:
        prow = _timing_sorted(timing, "paradigm", ("proxy",))
        prow = prow[prow["level"] == "paradigm"]
        parts.append(f"<details><summary>Per paradigm ({len(prow)} paradigms, proxy comparison)</summary>"
                     + html_table(delay_display(prow, axis.tokens_per_step), "delays small")
                     + w.table("delays_paradigm", prow) + "</details>")
    return Section("delays", "Delayed generalisation: fit step, generalisation step, delay", "\n".join(parts))


def section_curves(inp: ReportInputs, w: _Writer, axis: Any, family: str) -> Section:
    from grokscope.report import style as FS
    from grokscope.report import figures as F

    curves = inp.tables["curves"]
    timing = inp.tables["timing"]
    crit = _criterion_level(inp.metadata.get("timing", {}))
    cmd = f"grokscope analyse {inp.study.root}"
    spec = {
        "proxy": ("split-curves", "Proxy-train vs proxy-val accuracy over checkpoints",
                  "At each checkpoint a pair is in <b>proxy-train</b> (blue) if its critical phrase occurred in the "
                  "tokens seen so far, else in <b>proxy-val</b> (vermillion); bands are bootstrap confidence intervals "
                  "over pairs, n = train/val pairs at the last checkpoint. Look for blue rising before vermillion: the "
                  "model first fits phrases it has seen, then generalises. Dotted lines mark the fit step (blue) and "
                  "the generalisation step (vermillion), the grey span the delay; dashed grey is chance."),
        "fixed": ("fixed-split", "Fixed split: phrases seen by the final checkpoint vs never seen",
                  "Membership fixed once for all checkpoints (seen anywhere in the window of the final checkpoint vs "
                  "never), so the same pairs are compared throughout; this removes the drift of pairs from proxy-val "
                  "into proxy-train that the proxy split has."),
        "bins": ("exposure-bins", "Accuracy by exposure count",
                 "Pairs binned by how often their critical phrase occurred in the window of each checkpoint "
                 "(vermillion: never, light to dark blue: 1, 2–9, 10–99, 100+). If more exposure means earlier "
                 "learning, darker curves rise first."),
        "matched": ("matched", "Matched comparison (confound-controlled)",
                    "Proxy-train and proxy-val subsets matched on the frequency of the critical word (or phrase "
                    "length), so seen phrases are not simply made of more frequent words. A delay that survives "
                    "matching is not a word-frequency effect."),
    }[family]
    sid, title, caption = spec
    if curves is None:
        return Section(sid, title, missing_note("analysis/curves.parquet (accuracy per split per checkpoint)", cmd), "curves")
    splits = FS.SPLIT_FAMILIES[family]
    have = curves[curves["split"].isin(splits)]
    if have.empty:
        return Section(sid, title, missing_note(f"curves.parquet has no rows for splits {', '.join(splits)}", cmd), "splits")
    parts = []
    n_groups = have.loc[have["level"] == "phenomenon", "group"].nunique()
    cap = caption
    if n_groups + 1 > FS.MAX_PANELS:
        cap += f" Only the first {FS.MAX_PANELS - 1} of {n_groups} phenomena are drawn; the CSV has all."
    min_n = _min_pairs(inp.metadata.get("timing", {}) or inp.metadata.get("curves", {}))
    if min_n > 1:
        cap += f" Points where a split has fewer than {min_n} pairs are not drawn."
    fig = F.split_curves_figure(curves, timing, family, "phenomenon", crit, min_n=min_n)
    parts.append(w.figure(f"curves_{family}", fig, "Accuracy over checkpoints: all pairs, then each phenomenon", cap))
    parts.append(w.table(f"curves_{family}", F.split_curves_table(curves, family)))
    if family == "matched" and timing is not None:
        parts.append(_matched_table(timing, w))
    if family == "fixed" and timing is not None:
        rows = _timing_sorted(timing, "phenomenon", ("fixed",))
        if not rows.empty:
            parts.append('<p class="note">Fit step, generalisation step and delay of the fixed split:</p>')
            parts.append(html_table(delay_display(rows, axis.tokens_per_step), "delays small"))
            parts.append(w.table("delays_fixed", rows))
    return Section(sid, title, "\n".join(parts))


def _matched_table(timing: pd.DataFrame, w: _Writer) -> str:
    import pandas as pd

    from grokscope.report.style import ordered_groups

    rows = []
    raw = []
    for lvl, g in ordered_groups(timing[timing["comparison"].isin(["proxy", "matched"])], "phenomenon"):
        sel = timing[(timing["level"] == lvl) & (timing["group"].astype(str) == g)]
        p = sel[sel["comparison"] == "proxy"]
        m = sel[sel["comparison"] == "matched"]
        raw.append(sel[sel["comparison"].isin(["proxy", "matched"])])
        def cell(t: pd.DataFrame, col: str, f: Callable[[Any], str]) -> str:
            return f(t.iloc[0][col]) if len(t) else "–"
        rows.append({
            "group": "all pairs" if lvl == "all" else g,
            "proxy delay": cell(p, "delay_steps", fmt_int),
            "proxy CI": fmt_ci(p.iloc[0]["delay_ci_low"], p.iloc[0]["delay_ci_high"]) if len(p) else "–",
            "proxy status": cell(p, "status", str),
            "matched n train / val": f"{cell(m, 'n_train', fmt_int)} / {cell(m, 'n_val', fmt_int)}",
            "matched delay": cell(m, "delay_steps", fmt_int),
            "matched CI": fmt_ci(m.iloc[0]["delay_ci_low"], m.iloc[0]["delay_ci_high"]) if len(m) else "–",
            "matched p": cell(m, "p_lead", fmt_p),
            "matched status": cell(m, "status", str),
        })
    if not rows:
        return ""
    return (html_table(pd.DataFrame(rows), "delays small")
            + w.table("delays_matched", pd.concat(raw, ignore_index=True)))


def _phenomenon_of(inp: ReportInputs) -> Any:
    """Phenomenon per exposure row (from phrases.parquet by (uid, pair_id); else the paradigm uid)."""
    import pandas as pd

    exp = inp.exposure
    if "phenomenon" in exp:
        return exp["phenomenon"].astype(str)
    if inp.phrases is not None and {"uid", "pair_id", "phenomenon"} <= set(inp.phrases.columns):
        key = inp.phrases[["uid", "pair_id", "phenomenon"]].drop_duplicates(["uid", "pair_id"])
        merged = exp[["uid", "pair_id"]].merge(key, on=["uid", "pair_id"], how="left")
        return merged["phenomenon"].fillna("(unknown)").astype(str).set_axis(exp.index)
    return pd.Series(exp["uid"].astype(str).to_numpy(), index=exp.index)


def exposure_steps(inp: ReportInputs) -> list[int]:
    """Checkpoint steps of exposure.parquet (metadata ``steps``, else ``good_count_{t}`` columns)."""
    steps = inp.exposure_meta.get("steps")
    if steps:
        return sorted(int(s) for s in steps)
    out = []
    for c in inp.exposure.columns:
        if c.startswith("good_count_"):
            try:
                out.append(int(c[len("good_count_"):]))
            except ValueError:
                continue
    return sorted(out)


def section_exposure(inp: ReportInputs, w: _Writer, axis: Any) -> Section:
    from grokscope.report import style as FS
    from grokscope.report import figures as F

    title = "Exposure: when and how often critical phrases occur in the token stream"
    if inp.exposure is None:
        return Section("exposure", title, missing_note("exposure.parquet", f"grokscope exposure {inp.study.root}"), "exposure")
    groups = _phenomenon_of(inp)
    steps = exposure_steps(inp)
    exp = inp.exposure
    n_unsup = int((~exp["supported"].astype(bool)).sum()) if "supported" in exp else 0
    if not steps:
        steps = sorted({int(s) for s in FS.floats(exp["good_first_step"]) if math.isfinite(s)})
    parts = []
    if axis.tokens_per_step is None and inp.exposure_meta.get("rows_per_step") and inp.exposure_meta.get("row_len"):
        axis = FS.StepAxis(float(inp.exposure_meta["rows_per_step"]) * float(inp.exposure_meta["row_len"]))
    first = F.exposure_first_step_table(exp, steps, groups)
    counts = F.exposure_count_table(exp, groups)
    note = f" {n_unsup} pairs without a critical phrase (unsupported) are left out." if n_unsup else ""
    parts.append(w.figure(
        "exposure_first_step", F.exposure_first_step_figure(first, axis),
        "Distribution of first exposure (first_step)",
        "Left: how many pairs' good critical phrase is first seen by each checkpoint (i.e. how many pairs move "
        "from proxy-val into proxy-train at that checkpoint), and how many are never seen. Right: the "
        "share of each phenomenon's pairs in proxy-train over checkpoints; phenomena whose curve stays low have "
        "a large proxy-val split throughout." + note,
    ))
    parts.append(w.table("exposure_first_step", first))
    parts.append(w.figure(
        "exposure_counts", F.exposure_count_figure(counts),
        "Distribution of total exposure counts per phenomenon",
        "Occurrences of each pair's good critical phrase in the whole token stream (all variants counted). "
        "Phenomena concentrated in the '0' column have few seen phrases, so their proxy-train split is small." + note,
    ))
    parts.append(w.table("exposure_counts", counts))
    return Section("exposure", title, "\n".join(parts))


def _proxy_steps(timing: pd.DataFrame | None) -> tuple[float | None, float | None]:
    row = _pooled_timing(timing)
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
        return Section("probes", title, missing_note(
            "analysis/probes.parquet", f"grokscope analyse {inp.study.root}",
            "It needs hidden states captured while scoring (<code>[score] capture_hidden = true</code>)."), "probes")
    fit, gen = _proxy_steps(inp.tables["timing"])
    parts = [w.figure(
        "probes", MF.probes_figure(probes, gen, fit, axis), "Probe accuracy and dimensionality of the concept vectors over checkpoints",
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
            r = {"layer": int(layer)}
            for col in ("logreg_acc", "participation_ratio", "n_components_90"):
                for phase in ("before", "after"):
                    v = agg.get((col, phase), pd.Series(dtype=float)).get(layer, math.nan)
                    r[f"{col} {phase}"] = f"{v:.3f}" if col != "n_components_90" and not math.isnan(v) else (
                        f"{v:.1f}" if not math.isnan(v) else "–")
            rows.append(r)
        table = pd.DataFrame(rows)
        parts.append("<p class=\"note\">Mean over checkpoints before vs after the pooled proxy generalisation step:</p>")
        parts.append(html_table(table, "small", status_col=None))
        parts.append(w.table("probes_phase", table))
    return Section("probes", title, "\n".join(parts))


def section_heads(inp: ReportInputs, w: _Writer, axis: Any) -> Section:
    from grokscope.report import model_figures as MF

    heads, conc = inp.tables["heads"], inp.tables["concentration"]
    title = "Attention heads: critical→context attention over checkpoints"
    cmd = f"grokscope analyse {inp.study.root}"
    extra = "It needs attention captured while scoring (<code>[score] capture_attention = true</code>)."
    if (heads is None or heads.empty) and (conc is None or conc.empty):
        return Section("heads", title, missing_note("analysis/heads.parquet and head_concentration.parquet", cmd, extra), "heads")
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
            f"<b>{_esc(last['top_heads'])}</b>.",
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
        return Section("ablation", title, missing_note(
            "analysis/ablation.parquet", f"grokscope analyse {inp.study.root}",
            "Ablation re-scores checkpoints, so the checkpoints must be on disk."), "ablation")
    summ = MF.ablation_summary(abl)
    parts = [w.figure(
        "ablation", MF.ablation_figure(abl), "Accuracy change when heads are ablated, per checkpoint",
        "Accuracy change when the top-k heads by critical→context attention are zeroed (black diamonds) vs "
        "as many randomly chosen heads (grey, one point per repeat). If the top heads carry the dependency, "
        "black sits clearly below the grey cloud.",
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
                      "n_random": "repeats", "p_random_le_top": "random repeats ≤ top", "p_value": "p", "top_heads": "top heads"})
    parts.append(html_table(disp, "small", status_col=None))
    parts.append(w.table("ablation_summary", summ))
    parts.append(w.table("ablation", abl))
    return Section("ablation", title, "\n".join(parts))


def _compact_steps(steps: list[int]) -> str:
    if len(steps) <= 12:
        return ", ".join(str(s) for s in steps)
    return ", ".join(str(s) for s in steps[:7]) + ", …, " + ", ".join(str(s) for s in steps[-3:])


def provenance_rows(inp: ReportInputs, axis: Any) -> list[tuple[str, str]]:
    """(field, value) pairs describing where the study's numbers come from."""
    cfg: dict[str, Any] = {}
    if inp.config_text:
        try:
            cfg = tomllib.loads(inp.config_text)
        except tomllib.TOMLDecodeError:
            cfg = {}
    sm, em, pm, man = inp.scores_meta, inp.exposure_meta, inp.phrases_meta, inp.manifest
    rows: list[tuple[str, str]] = [("study", str(inp.study.root))]
    model = sm.get("checkpoint") or ""
    arch = ", ".join(f"{k} {sm[k]}" for k in ("model_type", "n_layer", "n_head", "d_model") if sm.get(k) is not None)
    if sm.get("revision"):
        model += f" (revision {sm['revision']})"
    if model or arch:
        rows.append(("model", f"{model} — {arch}" if model and arch else model or arch))
    elif inp.run_info:
        rows.append(("model", "trained by grokscope: " + json.dumps(inp.run_info.get("train", inp.run_info))[:300]))
    tok = man.get("tokenizer") or cfg.get("data", {}).get("tokenizer", "")
    fp = sm.get("tokenizer_fingerprint") or em.get("tokenizer_fingerprint") or man.get("tokenizer_fingerprint") or ""
    if tok or fp:
        rows.append(("tokenizer", " ".join(x for x in (str(tok), f"(fingerprint {str(fp)[:16]})" if fp else "") if x)))
    bench = pm.get("benchmark") or cfg.get("benchmark", {}).get("path", "")
    if inp.phrases is not None:
        ph = inp.phrases
        n_sup = int(ph["supported"].astype(bool).sum()) if "supported" in ph else len(ph)
        n_phen = ph["phenomenon"].nunique() if "phenomenon" in ph else 0
        n_par = ph["uid"].nunique() if "uid" in ph else 0
        bench = (f"{bench} — " if bench else "") + (f"{len(ph)} pairs ({n_sup} with a critical phrase), "
                                                     f"{n_par} paradigms, {n_phen} phenomena")
    bfp = pm.get("benchmark_fingerprint") or sm.get("benchmark_fingerprint") or em.get("benchmark_fingerprint")
    if bench or bfp:
        rows.append(("benchmark", f"{bench}" + (f" (fingerprint {str(bfp)[:16]})" if bfp else "")))
    stream = em.get("tokens_path") or cfg.get("data", {}).get("tokens", "") or (str(inp.study.tokens_dir) if man else "")
    detail = []
    if man.get("n_tokens"):
        detail.append(f"{fmt_tokens(man['n_tokens'])} tokens")
    if man.get("n_documents"):
        detail.append(f"{fmt_tokens(man['n_documents'])} documents")
    if em.get("rows_per_step") and em.get("row_len"):
        detail.append(f"{em['rows_per_step']} rows × {em['row_len']} tokens per step")
    if axis.tokens_per_step:
        detail.append(f"{axis.tokens_per_step:.0f} tokens per step")
    if em.get("variants"):
        detail.append("phrase variants: " + ", ".join(map(str, em["variants"])))
    if stream or detail:
        rows.append(("token stream", f"{stream}" + (" — " if stream and detail else "") + "; ".join(detail)))
    curves = inp.tables.get("curves")
    if curves is not None:
        steps, what = sorted(int(s) for s in curves["step"].unique()), "analysed"
    elif inp.scored_steps:
        steps, what = inp.scored_steps, "scored"
    else:
        steps, what = (exposure_steps(inp) if inp.exposure is not None else []), "in exposure.parquet"
    if steps:
        last_tok = f" (last: {fmt_tokens(axis.tokens(steps[-1]))} tokens)" if axis.tokens_per_step else ""
        scored = (f"; {len(inp.scored_steps)} score file(s) in scores/"
                  if inp.scored_steps and what != "scored" and len(inp.scored_steps) != len(steps) else "")
        rows.append(("checkpoints", f"{len(steps)} {what}: {_compact_steps(steps)}{last_tok}{scored}"))
    scoring = ", ".join(f"{k} {sm[k]}" for k in ("convention", "reduction", "region", "dtype") if sm.get(k))
    if scoring:
        rows.append(("scoring", scoring))
    crit = _criterion_text(inp.metadata.get("timing", {}))
    if crit:
        rows.append(("analysis criterion", crit))
    rows.append(("generated", f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC} by grokscope {__version__}"))
    return rows
