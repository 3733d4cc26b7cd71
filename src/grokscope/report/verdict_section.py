"""The headline verdicts in the report: the ``adjusted`` rows of ``timing.parquet`` (effect of having
seen the critical phrase, adjusted for covariates, clustered by phrase) with q and E-values, shown
above the descriptive delay tables."""
from __future__ import annotations

from typing import TYPE_CHECKING

from grokscope.report.format import _Writer, html_table

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def _f(v: object, spec: str) -> str:
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"
    return "—" if x != x else format(x, spec)


def interval(r: pd.Series, est: str, lo: str, hi: str) -> str:
    """"estimate [low, high]" of three columns of a row, signed, two decimals."""
    return f"{_f(r.get(est), '+.2f')} [{_f(r.get(lo), '+.2f')}, {_f(r.get(hi), '+.2f')}]"


def lost_step(r: pd.Series) -> object:
    """The step where a side that had learned fell back (train side first), or None."""
    for col in ("lost_train_step", "lost_val_step"):
        v = r.get(col)
        if v is not None and v == v:
            return v
    return None


def headline_display(timing: pd.DataFrame) -> pd.DataFrame:
    """Adjusted rows (levels all and phenomenon) as the strings the HTML table shows."""
    import pandas as pd

    from grokscope.analyse.adjusted import basis_columns

    adj = timing[(timing["comparison"] == "adjusted") & timing["level"].isin(["all", "phenomenon"])]
    rows = []
    for _, r in adj.iterrows():
        rows.append({
            "group": "all pairs" if r["level"] == "all" else str(r["group"]), "verdict": str(r["status"]),
            "effect on correctness (log OR)": interval(r, "effect", "effect_ci_low", "effect_ci_high"),
            "effect on margin (log-prob)": interval(r, "margin_effect", "margin_ci_low", "margin_ci_high"),
            "verdict on": "margin (correctness separated)" if r.get("basis") == "margin" else "correctness",
            "p": _f(r.get(basis_columns(r.get("basis"))[4]), ".3g"),
            "q (BH)": _f(r.get("q"), ".3g"),
            "E-value (CI)": f"{_f(r.get('e_value'), '.2f')} ({_f(r.get('e_value_ci'), '.2f')})",
            "phrase clusters seen / unseen": f"{r.get('clusters_seen', '—')} / {r.get('clusters_unseen', '—')}",
        })
    return pd.DataFrame(rows)


def headline_html(timing: pd.DataFrame, w: _Writer) -> str:
    """The headline table with its explanation ("" when the study has no adjusted rows)."""
    if "comparison" not in timing or not (timing["comparison"] == "adjusted").any():
        return ""
    df = headline_display(timing)
    note = ("Headline verdict (<b>adjusted</b>): the effect of having seen the critical phrase on a pair's "
            "correctness and margin over the rise window, adjusted for word and phrase frequencies, length, "
            "distance and paradigm, with standard errors clustered by critical phrase (bias-reduced sandwich, "
            "t with G - 1 df); q = Benjamini-Hochberg over "
            "all groups and comparisons. Where every seen pair is right across the window the correctness fit "
            "separates (infinite log OR) and the verdict rests on the margin model ('verdict on'). "
            "The E-value is how strongly (risk ratio) an unmeasured confounder would "
            "have to be tied to both exposure and correctness to explain the effect away. The proxy, fixed and "
            "matched delays below are descriptive.")
    return f'<p class="note">{note}</p>' + html_table(df, "delays") + w.table("verdicts", df)
