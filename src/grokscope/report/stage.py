"""``grokscope report STUDY``: one self-contained HTML page, PNG/SVG figures, the CSV tables
behind them, and a summary table in the terminal.

Inputs are the analysis tables of docs/CONTRACTS.md ("Analysis": ``analysis/curves.parquet``,
``timing.parquet``, ``probes.parquet``, ``heads.parquet``, ``head_concentration.parquet``,
``ablation.parquet``) plus ``exposure.parquet`` and the provenance the earlier stages recorded
(study.toml, phrases/exposure/score metadata, the token manifest). Every section degrades to a
note naming the command that produces its table; a study with no analysis table at all is a
:class:`~grokscope.core.errors.MissingStageError` naming ``grokscope analyse``.

Outputs (``STUDY/report/``)::

    index.html             figures embedded as PNG data URIs; no external resource
    figures/NAME.png|svg   every figure (formats from [report] formats)
    tables/NAME.csv        the numbers each figure / table shows

Module top level imports no heavy library (matplotlib loads in :func:`build_report`). The
inputs and the sections are in :mod:`grokscope.report.sections`, the number formats, HTML
pieces and the page in :mod:`grokscope.report.format`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grokscope.core.errors import GrokscopeError
from grokscope.core.stage import CommandLine, Flag, Stage
from grokscope.core.store import Study, write_text
from grokscope.report.event_section import section_event_study
from grokscope.report.format import (
    SUMMARY_COLUMNS,
    Section,
    _Writer,
    format_text_table,
    render_page,
    summary_rows,
)
from grokscope.report.head_effect_section import section_head_effects
from grokscope.report.inputs import load_inputs, provenance_rows
from grokscope.report.model_sections import section_ablation, section_heads, section_probes
from grokscope.report.sections import section_curves, section_exposure, section_summary
from grokscope.report.support_sections import section_informative, section_k_sensitivity, section_support

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from grokscope.core.config import StudyConfig



FORMATS = ("png", "svg")


@dataclass
class ReportResult:
    path: Path
    figures: list[Path]
    tables: list[Path]
    sections: list[Section]
    summary: pd.DataFrame
    summary_text: str


def build_report(study: Study, title: str = "", formats: tuple[str, ...] | list[str] = FORMATS) -> ReportResult:
    """Write ``study/report/`` (index.html, figures/, tables/) and return what was written."""
    import pandas as pd

    from grokscope.report import style as FS

    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad:
        raise GrokscopeError(f"[report] formats: unknown format(s) {bad}; expected png, svg or pdf")
    inp = load_inputs(study)
    axis = FS.StepAxis.from_table(inp.tables["curves"])
    if axis.tokens_per_step is None and inp.tables["timing"] is not None:
        t = inp.tables["timing"]
        axis = FS.StepAxis.from_table(pd.DataFrame({"step": t["fit_step"], "tokens": t["fit_tokens"]}))
    w = _Writer(study.report_dir, tuple(dict.fromkeys(formats)))
    sections = [
        section_summary(inp, w, axis),
        section_curves(inp, w, axis, "proxy"),
        section_curves(inp, w, axis, "fixed"),
        section_curves(inp, w, axis, "bins"),
        section_curves(inp, w, axis, "matched"),
        section_exposure(inp, w, axis),
        section_support(inp, w, axis),
        section_informative(inp, w),
        section_k_sensitivity(inp, w),
        section_event_study(inp, w),
        section_probes(inp, w, axis),
        section_heads(inp, w, axis),
        section_ablation(inp, w),
        section_head_effects(inp, w),
    ]
    title = title or f"grokscope report — {study.root.resolve().name}"
    page = render_page(title, provenance_rows(inp, axis), sections, inp.config_text)
    _remove_stale(study.report_dir, set(w.figures) | set(w.tables))
    write_text(study.report_path, page)
    timing = inp.tables["timing"]
    summary = summary_rows(timing) if timing is not None else pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    text = format_text_table(summary) if len(summary) else "(no timing table: run grokscope analyse)"
    return ReportResult(study.report_path, w.figures, w.tables, sections, summary, text)


def _remove_stale(root: Path, keep: set[Path]) -> None:
    """Delete figures/tables of an earlier report run that this run did not write."""
    for sub, exts in (("figures", (".png", ".svg", ".pdf")), ("tables", (".csv",))):
        d = root / sub
        if d.exists():
            for p in d.iterdir():
                if p.suffix in exts and p not in keep:
                    p.unlink()


def _print_result(res: ReportResult) -> None:
    print(res.summary_text)
    missing = [s for s in res.sections if s.missing]
    print(f"\nreport: {res.path}  ({len(res.figures)} figure files, {len(res.tables)} tables)")
    for s in missing:
        print(f"  section '{s.id}' incomplete: {s.missing} table missing")


def run(cfg: StudyConfig, study: Study) -> None:
    """Write the report of ``study`` from the config's ``[report]`` section."""
    if not study.root.is_dir():
        raise GrokscopeError(f"{study.root}: not a study directory")
    _print_result(build_report(study, cfg.report.title, cfg.report.formats))


STAGE = Stage(
    name="report", sections=("report",), run=run, inputs=("analysis_dir",), outputs=lambda s: [s.report_dir],
    done=Study.has_report, libraries=("pandas", "grokscope.report.figures"),  # matplotlib with the Agg backend
    cli=CommandLine(flags=(Flag("study.out", "study", "study directory (holds analysis/ from `grokscope analyse`)",
                                positional=True),), config="study"),
)
run_stage = STAGE.run_config
