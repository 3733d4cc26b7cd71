"""The report's sections on learning dynamics: summary and delays, accuracy curves (proxy, fixed,
exposure bins, matched), and exposure. Each section degrades to a note naming the command that
produces its table. Inputs: :mod:`grokscope.report.inputs`; the model's inside:
:mod:`grokscope.report.model_sections`."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
    timing_cells,
)
from grokscope.report.inputs import (
    ReportInputs,
    criterion_level,
    criterion_text,
    exposure_steps,
    min_pairs_of,
    pooled_timing,
)
from grokscope.report.verdict_section import headline_html, lost_step

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def delay_display(timing: pd.DataFrame, tokens_per_step: float | None) -> pd.DataFrame:
    """timing rows as the strings the HTML delay tables show."""
    import pandas as pd

    out = []
    for _, r in timing.iterrows():
        tlo = _num(r["delay_ci_low"]) * tokens_per_step if tokens_per_step else math.nan
        thi = _num(r["delay_ci_high"]) * tokens_per_step if tokens_per_step else math.nan
        c = timing_cells(r)
        out.append({
            "group": "all pairs" if r["level"] == "all" else str(r["group"]), "comparison": str(r["comparison"]),
            "n train / val": f"{c['n_train']} / {c['n_val']}", "fit step": c["fit_step"], "gen. step": c["gen_step"],
            "fit tokens": fmt_tokens(r["fit_tokens"]), "gen. tokens": fmt_tokens(r["gen_tokens"]),
            "delay (steps)": c["delay_steps"], "95% CI (steps)": c["delay_ci"], "delay (tokens)": c["delay_tokens"],
            "CI (tokens)": fmt_ci(tlo, thi, fmt_tokens), "p (train leads)": c["p_lead"],
            "q": fmt_p(r["q"]) if "q" in r else "—",
            "status": c["status"] + (f" (at step {fmt_step(lost_step(r))})" if c["status"] == "lost" else ""),
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
        note = missing_note("analysis/timing.parquet (fit and generalisation steps)", cmd)
        return Section("delays", "Delayed generalisation", note, "timing")
    parts = []
    pooled = pooled_timing(timing)
    crit = criterion_text(inp.metadata.get("timing", {}))
    if pooled is not None:
        status = str(pooled["status"])
        if status == "delayed":
            lead = (f"Pooled over all pairs, proxy-train reaches the criterion at step "
                    f"<b>{fmt_step(pooled['fit_step'])}</b> "
                    f"and proxy-val at step <b>{fmt_step(pooled['gen_step'])}</b>: generalisation lags fitting by "
                    f"<b>{fmt_int(pooled['delay_steps'])} steps</b> ({fmt_tokens(pooled['delay_tokens'])} tokens; "
                    f"95% CI {fmt_ci(pooled['delay_ci_low'], pooled['delay_ci_high'])} steps; "
                    f"p = {fmt_p(pooled['p_lead'])} that train leads).")
        else:
            lead = (f"Pooled over all pairs: status <b>{_esc(status)}</b> (fit step {fmt_step(pooled['fit_step'])}, "
                    f"generalisation step {fmt_step(pooled['gen_step'])}, "
                    f"delay {fmt_int(pooled['delay_steps'])} steps, "
                    f"p = {fmt_p(pooled['p_lead'])}).")
        parts.append(f'<p class="lead">{lead}</p>')
    parts.append(headline_html(timing, w))
    if crit:
        parts.append(f'<p class="note">Criterion: {_esc(crit)}. A step is where a split first reaches the criterion '
                     "(halfrise: where its monotone fit crosses the group's half-rise threshold; \"not learned\": "
                     "the rise's interval includes 0; \"lost\": it fell significantly below it later).</p>")
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
    from grokscope.report import figures as F
    from grokscope.report import style as FS

    curves = inp.tables["curves"]
    timing = inp.tables["timing"]
    crit = criterion_level(inp.metadata.get("timing", {}))
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
        note = missing_note("analysis/curves.parquet (accuracy per split per checkpoint)", cmd)
        return Section(sid, title, note, "curves")
    splits = FS.SPLIT_FAMILIES[family]
    have = curves[curves["split"].isin(splits)]
    if have.empty:
        note = missing_note(f"curves.parquet has no rows for splits {', '.join(splits)}", cmd)
        return Section(sid, title, note, "splits")
    parts = []
    n_groups = have.loc[have["level"] == "phenomenon", "group"].nunique()
    cap = caption
    if n_groups + 1 > FS.MAX_PANELS:
        cap += f" Only the first {FS.MAX_PANELS - 1} of {n_groups} phenomena are drawn; the CSV has all."
    min_n = min_pairs_of(inp.metadata.get("timing", {}) or inp.metadata.get("curves", {}))
    if min_n > 1:
        cap += f" Points where a split has fewer than {min_n} pairs are not drawn."
    fig = F.split_curves_figure(curves, timing, family, "phenomenon", crit, min_n=min_n)
    parts.append(w.figure(f"curves_{family}", fig, "Accuracy over checkpoints: all pairs, then each phenomenon", cap))
    parts.append(w.table(f"curves_{family}", F.split_curves_table(curves, family)))
    margins = inp.tables.get("margin_curves")
    if family == "proxy" and margins is not None and not margins.empty:
        parts.append(w.figure(
            "margins_proxy", F.split_curves_figure(margins, timing, "proxy", "phenomenon", None, min_n=min_n,
                                                   value="margin"),
            "Margin over checkpoints: all pairs, then each phenomenon",
            "The same splits, by the mean log-prob margin good − bad instead of accuracy (dashed: 0, the decision "
            "boundary; bands: 95% intervals clustered by critical phrase). A side whose margin climbs while its "
            "accuracy is flat is on its way; each panel has its own scale."))
        parts.append(w.table("margins_proxy", margins))
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
    assert exp is not None  # the caller checked
    if "phenomenon" in exp:
        return exp["phenomenon"].astype(str)
    if inp.phrases is not None and {"uid", "pair_id", "phenomenon"} <= set(inp.phrases.columns):
        key = inp.phrases[["uid", "pair_id", "phenomenon"]].drop_duplicates(["uid", "pair_id"])
        merged = exp[["uid", "pair_id"]].merge(key, on=["uid", "pair_id"], how="left")
        return merged["phenomenon"].fillna("(unknown)").astype(str).set_axis(exp.index)
    return pd.Series(exp["uid"].astype(str).to_numpy(), index=exp.index)


def section_exposure(inp: ReportInputs, w: _Writer, axis: Any) -> Section:
    from grokscope.report import figures as F
    from grokscope.report import style as FS

    title = "Exposure: when and how often critical phrases occur in the token stream"
    if inp.exposure is None:
        note = missing_note(inp.study.exposure_path.name, f"grokscope exposure {inp.study.root}")
        return Section("exposure", title, note, "exposure")
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


