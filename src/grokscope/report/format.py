"""The report's page and its pieces: number formats (steps, tokens, p-values, confidence
intervals), the summary table (terminal and HTML), figures saved and embedded as PNG data
URIs, the page itself. No heavy library at import time."""
from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grokscope.core.store import write_bytes, write_text

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


@dataclass
class Section:
    id: str
    title: str
    body: str  # HTML
    missing: str = ""  # non-empty: why the section could not be drawn in full


PNG_DPI = 130


DISPLAY_PX_PER_INCH = 92  # every figure shown at the same scale, so fonts match across figures


NAV_LABELS = {"delays": "Delays", "split-curves": "Proxy split", "fixed-split": "Fixed split",
              "exposure-bins": "By exposure", "matched": "Matched", "exposure": "Exposure",
              "support": "Good vs bad", "informative": "Informative", "k-sensitivity": "k sensitivity",
              "event-study": "Event study",
              "probes": "Concept vectors", "heads": "Heads", "ablation": "Ablation"}


def _num(x: Any) -> float:
    try:
        return math.nan if x is None else float(x)
    except (TypeError, ValueError):  # pd.NA, strings
        return math.nan


def fmt_int(x: Any) -> str:
    v = _num(x)
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return "–" if math.isnan(v) else str(int(round(v)))


def fmt_step(x: Any) -> str:
    v = _num(x)
    return "not reached" if math.isnan(v) else f"{int(round(v))}"


def fmt_tokens(x: Any) -> str:
    from grokscope.report.figures import format_count

    v = _num(x)
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return "–" if math.isnan(v) else format_count(v)


def fmt_p(x: Any) -> str:
    v = _num(x)
    if math.isnan(v):
        return "–"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def fmt_ci(lo: Any, hi: Any, fmt: Callable[[Any], str] = fmt_int) -> str:
    a, b = _num(lo), _num(hi)
    if math.isnan(a) or math.isnan(b):
        return "–"
    if math.isinf(a) and a > 0:  # censored in every resample: an interval of infinities says nothing
        return "not reached in any resample"
    return f"[{fmt(a)}, {fmt(b)}]"


def _esc(x: Any) -> str:
    return html.escape(str(x))


SUMMARY_COLUMNS = ("group", "n_train", "n_val", "fit_step", "gen_step", "delay_steps", "delay_ci", "delay_tokens",
                   "p_lead", "status", "matched_delay", "matched_status", "log_or", "verdict")


def summary_rows(timing: pd.DataFrame) -> pd.DataFrame:
    """The terminal summary: pooled + per-phenomenon proxy comparison, with the matched delay and
    the headline verdict (comparison ``adjusted``: log odds ratio of having seen the phrase and its
    status; "–" for an analysis without it).

    Values are the timing.parquet values (not recomputed); delay tokens come from the table's
    ``delay_tokens`` column.
    """
    import pandas as pd

    from grokscope.report.figures import ordered_groups

    rows = []
    proxy = timing[timing["comparison"] == "proxy"]
    matched = timing[timing["comparison"] == "matched"]
    adjusted = timing[timing["comparison"] == "adjusted"]
    for level, group in ordered_groups(proxy, "phenomenon"):
        p = proxy[(proxy["level"] == level) & (proxy["group"].astype(str) == group)].iloc[0]
        m = matched[(matched["level"] == level) & (matched["group"].astype(str) == group)]
        m = m.iloc[0] if len(m) else None
        a = adjusted[(adjusted["level"] == level) & (adjusted["group"].astype(str) == group)]
        a = a.iloc[0] if len(a) else None
        rows.append({"group": "ALL" if level == "all" else group, **timing_cells(p),
                     "matched_delay": fmt_int(m["delay_steps"]) if m is not None else "–",
                     "matched_status": str(m["status"]) if m is not None else "–",
                     "log_or": "–" if a is None or pd.isna(a.get("effect")) else f"{a['effect']:+.2f}",
                     "verdict": str(a["status"]) if a is not None else "–"})
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def timing_cells(r: Any) -> dict[str, str]:
    """The formatted cells of one timing.parquet row that every delay table shows."""
    return {"n_train": fmt_int(r["n_train"]), "n_val": fmt_int(r["n_val"]), "fit_step": fmt_step(r["fit_step"]),
            "gen_step": fmt_step(r["gen_step"]), "delay_steps": fmt_int(r["delay_steps"]),
            "delay_ci": fmt_ci(r["delay_ci_low"], r["delay_ci_high"]), "delay_tokens": fmt_tokens(r["delay_tokens"]),
            "p_lead": fmt_p(r["p_lead"]), "status": str(r["status"])}


def format_text_table(df: pd.DataFrame) -> str:
    """Fixed-width text table (header, rule, rows), columns separated by two spaces."""
    cols = list(df.columns)
    cells = [[str(v) for v in row] for row in df.itertuples(index=False)]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths)))  # noqa: E731
    out = [line(cols), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


@dataclass
class _Writer:
    """Saves figures/tables under report/ and returns the HTML that embeds them."""

    root: Path
    formats: tuple[str, ...]
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)

    def figure(self, name: str, fig: Any, title: str, caption: str) -> str:
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=PNG_DPI)
        png = buf.getvalue()
        for fmt in self.formats:
            path = self.root / "figures" / f"{name}.{fmt}"
            if fmt == "png":
                write_bytes(path, png)
            else:
                b = io.BytesIO()
                fig.savefig(b, format=fmt)
                write_bytes(path, b.getvalue())
            self.figures.append(path)
        plt.close(fig)
        data = base64.b64encode(png).decode("ascii")
        width_px = int.from_bytes(png[16:20], "big")  # PNG IHDR width
        css_w = round(width_px / PNG_DPI * DISPLAY_PX_PER_INCH)
        files = ", ".join(f"figures/{name}.{f}" for f in self.formats)
        return (
            f'<figure id="fig-{_esc(name)}"><figcaption class="ftitle">{_esc(title)}</figcaption>'
            f'<img src="data:image/png;base64,{data}" alt="{_esc(title)}" style="width:{css_w}px">'
            f'<figcaption>{caption} <span class="files">{_esc(files)}</span></figcaption></figure>'
        )

    def table(self, name: str, df: pd.DataFrame) -> str:
        path = self.root / "tables" / f"{name}.csv"
        # float32 columns (e.g. accuracy) as float64, so the CSV holds the stored value exactly
        f32 = [c for c in df.columns if str(df[c].dtype) == "float32"]
        write_text(path, (df.astype(dict.fromkeys(f32, "float64")) if f32 else df).to_csv(index=False))
        self.tables.append(path)
        return f'<span class="files">table: tables/{_esc(name)}.csv</span>'


def html_table(df: pd.DataFrame, classes: str = "", status_col: str | None = "status") -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        tds = []
        for col, v in zip(df.columns, row):
            cls = ""
            if col == status_col or col.endswith("status"):
                cls = f' class="st st-{_esc(str(v).replace(" ", "-"))}"'
            tds.append(f"<td{cls}>{_esc(v)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def missing_note(what: str, command: str, extra: str = "") -> str:
    return (f'<div class="missing"><b>Not available:</b> {_esc(what)}. '
            f'Produce it with <code>{_esc(command)}</code>.{(" " + extra) if extra else ""}</div>')


CSS = """
:root { --seen: #0072B2; --unseen: #D55E00; --ink: #1d2733; --muted: #5b6573; --line: #dde3ea; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--ink);
       margin: 0; background: #f6f8fa; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 40px 0 8px; padding-top: 12px; border-top: 2px solid var(--line); }
.subtitle { color: var(--muted); margin: 0 0 16px; }
.key { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -1px; }
nav { background: #f0f3f6; padding: 8px 12px; border-radius: 6px; font-size: 14px; display: flex; flex-wrap: wrap; }
nav a { margin-right: 14px; color: #0b5394; text-decoration: none; white-space: nowrap; }
table { border-collapse: collapse; margin: 10px 0; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 9px; border-bottom: 1px solid var(--line); text-align: right; }
th { background: #f0f3f6; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
table.small { font-size: 12px; }
table.prov td { text-align: left; vertical-align: top; }
table.prov td:first-child { font-weight: 600; white-space: nowrap; color: var(--muted); }
td.st { font-weight: 600; text-align: left; white-space: nowrap; }
td { white-space: nowrap; }
td.st-delayed { color: #a33b00; } td.st-no-delay { color: #2d6a2d; } td.st-not-reached { color: #777; }
td.st-val-leads { color: #0b5394; } td.st-too-few-pairs { color: #999; font-weight: 400; }
figure { margin: 18px 0 26px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13.5px; max-width: 1050px; }
figcaption.ftitle { color: var(--ink); font-weight: 600; font-size: 15px; margin-bottom: 6px; }
.files { color: #98a1ad; font-size: 12px; font-family: ui-monospace, Menlo, Consolas, monospace; }
.missing { background: #fff7e6; border-left: 4px solid #e6a23c; padding: 8px 12px; margin: 10px 0; }
.lead { font-size: 16px; }
.note { color: var(--muted); font-size: 13.5px; }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; border-radius: 4px; }
details { margin: 8px 0; } summary { cursor: pointer; color: #0b5394; }
"""


def render_page(title: str, provenance: list[tuple[str, str]], sections: list[Section], config_text: str) -> str:
    nav = "".join(f'<a href="#{_esc(s.id)}">{_esc(NAV_LABELS.get(s.id, s.title.split(":")[0]))}</a>' for s in sections)
    prov = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in provenance)
    cfg = (f"<details><summary>Study configuration (study.toml)</summary><pre>{_esc(config_text)}</pre></details>"
           if config_text else "")
    body = "\n".join(
        f'<section id="{_esc(s.id)}" data-missing="{_esc(s.missing)}"><h2>{_esc(s.title)}</h2>\n{s.body}\n</section>'
        for s in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>{CSS}</style></head>
<body><main>
<header id="provenance"><h1>{_esc(title)}</h1>
<p class="subtitle">Memorisation of seen critical phrases vs generalisation to unseen ones, over pre-training
checkpoints.
<span class="key" style="background:var(--seen)"></span> proxy-train / seen &nbsp;
<span class="key" style="background:var(--unseen)"></span> proxy-val / unseen</p>
<table class="prov">{prov}</table>{cfg}
<nav>{nav}</nav></header>
{body}
</main></body></html>
"""
