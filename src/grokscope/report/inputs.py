"""What the report reads: the analysis tables (each checked for its columns), exposure, the
phrases and score metadata, the training run's record and the study's config, and the
provenance rows they give (model, tokenizer, benchmark, token stream, checkpoints, scoring)."""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomllib

from grokscope import __version__
from grokscope.core.errors import DataError, MissingStageError
from grokscope.core.store import Study, read_json, read_parquet_metadata
from grokscope.report.format import fmt_tokens

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
    "concepts": ("concepts.parquet", ("step", "tokens", "phenomenon", "layer", "auroc", "eff_rank", "baseline_eff_rank",
                                      "eff_rank_ratio", "phase")),
    "concept_summary": ("concept_summary.parquet", ("phenomenon", "layer", "phase", "auroc", "auroc_low",
                                                    "auroc_high", "eff_rank", "eff_rank_low", "eff_rank_high",
                                                    "eff_rank_ratio")),
    "heads": ("heads.parquet", ("step", "layer", "head", "attention")),
    "concentration": ("head_concentration.parquet", ("step", "topk_share", "gini", "entropy", "top_heads")),
    "ablation": ("ablation.parquet", ("step", "condition", "repeat", "heads", "accuracy", "delta_accuracy")),
    "margin_curves": ("margin_curves.parquet", ("level", "group", "split", "step", "tokens", "n", "margin",
                                                "ci_low", "ci_high")),
    "head_effects": ("head_effects.parquet", ("phenomenon", "layer", "head", "delta_margin", "p", "q", "causal",
                                              "selected_by_ablation", "selected_by_attention")),
    "head_summary": ("head_summary.parquet", ("phenomenon", "heads_by_ablation", "heads_by_attention",
                                              "causal_heads")),
    "support_splits": ("support_splits.parquet", ("step", "split", "n", "accuracy", "ci_lo", "ci_hi")),
    "dose_response": ("dose_response.parquet", ("step", "axis", "bin", "n", "accuracy", "ci_lo", "ci_hi")),
    "paradigms": ("paradigms.parquet", ("uid", "distinct_phrases", "no_context", "seen_first", "seen_last",
                                        "informative", "reason")),
    "event_study": ("event_study.parquet", ("level", "group", "outcome", "event_time", "estimate", "ci_low",
                                            "ci_high", "p", "n_exposed")),
    "k_sensitivity": ("k_sensitivity.parquet", ("min_count", "level", "group", "comparison", "delay_steps", "status")),
}


EXPOSURE_COLUMNS = ("uid", "pair_id", "good_first_step", "good_total_count")
_STAGE_OF = {"exposure.parquet": "exposure", "phrases.parquet": "phrases"}  # else an analysis table


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


def _read_table(path: Path, columns: tuple[str, ...]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The table at ``path`` with its ``grokscope`` metadata, checked for ``columns``."""
    from grokscope.core.store import read_table

    df, meta = read_table(path, f"grokscope {_STAGE_OF.get(path.name, 'analyse')} ... --force")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; expected at least {list(columns)} "
            f"(docs/CONTRACTS.md); found {list(df.columns)}"
        )
    return df, meta


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
        tables[name], metadata[name] = _read_table(path, cols) if path.exists() else (None, {})
    if all(t is None for t in tables.values()):
        raise MissingStageError(
            "analysis tables (" + ", ".join(f for f, _ in ANALYSIS_TABLES.values()) + ")",
            str(study.analysis_dir), f"grokscope analyse {study.root}",
        )
    inputs = ReportInputs(study=study, tables=tables, metadata=metadata)
    if study.exposure_path.exists():
        inputs.exposure, inputs.exposure_meta = _read_table(study.exposure_path, EXPOSURE_COLUMNS)
    if study.phrases_path.exists():
        inputs.phrases, inputs.phrases_meta = _read_table(study.phrases_path, ())
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


def criterion_level(meta: dict[str, Any]) -> float | None:
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


def min_pairs_of(meta: dict[str, Any]) -> int:
    """Pairs a split needs at a checkpoint for its accuracy to count (timing metadata; else 1)."""
    crit = meta.get("criterion", meta)
    try:
        return max(1, int(crit.get("min_pairs", 1))) if isinstance(crit, dict) else 1
    except (TypeError, ValueError):
        return 1


def criterion_text(meta: dict[str, Any]) -> str:
    crit = meta.get("criterion", meta)
    if isinstance(crit, dict) and crit:
        keep = {k: v for k, v in crit.items() if not isinstance(v, (dict, list)) or k == "criterion"}
        return ", ".join(f"{k} = {v}" for k, v in sorted(keep.items()))
    if isinstance(crit, str):
        return crit
    return ""


def pooled_timing(timing: pd.DataFrame | None, comparison: str = "proxy") -> Any:
    if timing is None:
        return None
    sel = timing[(timing["level"] == "all") & (timing["comparison"] == comparison)]
    return None if sel.empty else sel.iloc[0]


def exposure_steps(inp: ReportInputs) -> list[int]:
    """Checkpoint steps of exposure.parquet (metadata ``steps``, else ``good_count_{t}`` columns)."""
    steps = inp.exposure_meta.get("steps")
    if steps:
        return sorted(int(s) for s in steps)
    out = []
    assert inp.exposure is not None
    for c in inp.exposure.columns:
        if c.startswith("good_count_"):
            try:
                out.append(int(c[len("good_count_"):]))
            except ValueError:
                continue
    return sorted(out)


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
    stream = (em.get("tokens_path") or cfg.get("data", {}).get("tokens", "")
              or (str(inp.study.tokens_dir) if man else ""))
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
    crit = criterion_text(inp.metadata.get("timing", {}))
    if crit:
        rows.append(("analysis criterion", crit))
    rows.append(("generated", f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC} by grokscope {__version__}"))
    return rows
