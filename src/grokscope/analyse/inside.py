"""Looking inside the model, for ``grokscope analyse``: the probes (``probes.parquet``), the
paper's concept-vector measures (``concepts.parquet``, ``concept_summary.parquet``), the attention
heads (``heads.parquet``, ``head_concentration.parquet``) and their ablation, each from the score
files' captured hidden states and attention, with one summary line each for the terminal."""
from __future__ import annotations

import dataclasses
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from grokscope.core import store
from grokscope.core.config import AnalyseSection
from grokscope.core.errors import DataError
from grokscope.core.store import Study

if TYPE_CHECKING:  # pragma: no cover
    from grokscope.analyse.stage import StudyInputs


@dataclass
class InsideWork:
    """The checkpoint-wise tables of the inside-the-model analysis, computed beside the verdicts
    (:func:`start_inside`): probe rows, concept rows and head tables, by name. None of them depends
    on the verdicts, only their before/after phases do, which :func:`inside_the_model` adds."""

    future: Future[dict[str, Any]] | None = None

    def result(self, name: str) -> Any:
        return None if self.future is None else self.future.result().get(name)


def start_inside(study: Study, inputs: StudyInputs, keep: np.ndarray, a: AnalyseSection,
                 background: bool = True) -> InsideWork:
    """Start the probes, concept measures and head tables ``a`` asks for in one worker process.

    The verdicts run meanwhile in this process, mostly on one core (serial model fits); the worker
    uses the other cores (all but one). A process, not a thread: on the CPU study (2 cores) a
    background thread slowed the verdicts' Python-heavy fits by 5-6 s through the GIL. It is the
    same computation as in the foreground (``background=False``: computed here and now, on every
    core): every checkpoint draws from its own seeded generator, so the tables do not depend on what
    runs beside them. An error in it (a damaged hidden-state file) is raised by
    :func:`inside_the_model`, after the verdict tables are written."""
    from grokscope.analyse.parallel import usable_cores

    parts = [name for name, wanted in (("probes", a.probes), ("concepts", a.concepts), ("heads", a.heads)) if wanted]
    if not parts:
        return InsideWork()
    if not background:
        done: Future[dict[str, Any]] = Future()
        done.set_result(_inside_parts(parts, study, inputs, keep, a, None))
        return InsideWork(done)
    from joblib.externals.loky import get_reusable_executor

    # to the worker only what these parts read (not the [pairs x checkpoints] scores), pickled once
    slim = dataclasses.replace(inputs, correct=np.zeros((0, 0), dtype=bool), margin=None, score_meta=[])
    jobs = max(1, usable_cores() - 1)  # leave the verdicts their core
    return InsideWork(get_reusable_executor(max_workers=1).submit(_inside_parts, parts, study, slim, keep, a, jobs))


def _inside_parts(parts: list[str], study: Study, inputs: StudyInputs, keep: np.ndarray, a: AnalyseSection,
                  jobs: int | None) -> dict[str, Any]:
    """:func:`start_inside`'s work, with BLAS single-threaded as in the analysis."""
    from threadpoolctl import threadpool_limits

    from grokscope.analyse import concepts as cc

    if "probes" in parts:
        import sklearn.linear_model  # noqa: F401  (its BLAS loaded before the limit)
    out: dict[str, Any] = {}
    with threadpool_limits(limits=1, user_api="blas"):
        if "probes" in parts:
            out["probes"] = probe_rows(study, inputs, keep, a, jobs)
        if "concepts" in parts:
            out["concepts"] = cc.study_concept_rows(study, inputs, keep, a, jobs)
        if "heads" in parts:
            out["heads"] = head_tables(study, inputs, keep, a.top_k_heads)
    return out


def inside_the_model(study: Study, inputs: StudyInputs, keep: np.ndarray, a: AnalyseSection,
                     timing: pd.DataFrame, gen_step: int | None, meta: dict[str, Any],
                     work: InsideWork | None = None) -> list[str]:
    """Write the probe, concept and head tables ``a`` asks for; returns their summary lines.
    ``work`` holds their checkpoint-wise part if :func:`start_inside` began it (else it runs here)."""
    from grokscope.analyse import probes as pr

    work = work if work is not None else start_inside(study, inputs, keep, a, background=False)
    notes: list[str] = []
    if a.probes:
        probes = work.result("probes")
        if probes is not None:
            probes["phase"] = pr.phase_of(probes["step"].to_numpy(), gen_step)
            store.write_parquet(study.analysis_dir / "probes.parquet", probes, metadata={"gen_step": gen_step, **meta})
            notes.append(probe_summary(probes))
        else:
            notes.append("probes: no hidden states captured (score with capture_hidden = true)")
    if a.concepts:
        notes.append(write_concepts(study, a, work.result("concepts"), timing, meta))
    if a.heads:
        heads_df, conc = work.result("heads")
        if heads_df is not None and conc is not None:
            out = study.analysis_dir
            store.write_parquet(out / "heads.parquet", heads_df, metadata={"top_k": a.top_k_heads})
            store.write_parquet(out / "head_concentration.parquet", conc, metadata={"top_k": a.top_k_heads})
            first, last = conc.iloc[0], conc.iloc[-1]
            notes.append(f"heads: top-{a.top_k_heads} share {first['topk_share']:.2f} -> {last['topk_share']:.2f}, "
                         f"Gini {first['gini']:.2f} -> {last['gini']:.2f} (step {first['step']} -> {last['step']}); "
                         f"top heads at the last step: {last['top_heads']}")
            if a.ablation:
                notes.append(run_ablation(study, inputs, keep, conc, a))
        else:
            notes.append("heads: no attention captured (score with capture_attention = true)")
    return notes


def probe_rows(study: Study, inputs: StudyInputs, keep: np.ndarray, a: AnalyseSection,
               n_jobs: int | None = None) -> pd.DataFrame | None:
    """Probes at every checkpoint with hidden states, on at most ``probe_pairs`` pairs (no phase yet),
    on ``n_jobs`` threads (default: every core)."""
    from grokscope.analyse import probes as pr
    from grokscope.analyse.parallel import map_checkpoints

    order = np.random.default_rng(a.seed).permutation(keep)  # same pair preference at every step
    words = _lemma_groups(inputs.phrases)

    def rows_of(j: int) -> list[dict[str, Any]]:
        step = int(inputs.steps[j])
        path = study.hidden_path(step)
        if not path.exists():
            return []
        hidden = np.load(path, mmap_mode="r")  # [n_captured, 2, n_layer+1, d_model]
        hrow = inputs.hidden_rows[j][order]
        chosen = hrow[hrow >= 0]
        if a.probe_pairs > 0:
            chosen = chosen[: a.probe_pairs]
        if chosen.size and chosen.max() >= hidden.shape[0]:
            raise DataError(f"{path}: has {hidden.shape[0]} rows but {study.score_path(step).name} "
                            f"refers to hidden_row {int(chosen.max())}")
        if chosen.size < 2:
            return []
        srt = np.argsort(chosen)
        states = np.asarray(hidden[chosen[srt]], dtype=np.float32)
        pair_of = order[hrow >= 0][: chosen.size][srt]  # the pair of each state row
        return [{"step": step, **dataclasses.asdict(lp)}
                for lp in pr.probe_checkpoint(states, a.probe_folds, a.seed + j, words[pair_of])]

    rows = [r for part in map_checkpoints(rows_of, range(len(inputs.steps)), n_jobs) for r in part]
    if not rows:
        return None
    cols = ["step", "layer", "n_pairs", "logreg_acc", "logreg_acc_std", "meandiff_acc", "participation_ratio",
            "n_components_90"]
    return pd.DataFrame(rows)[cols].astype({"step": np.int64, "layer": np.int64, "n_pairs": np.int64,
                                            "n_components_90": np.int64})


def write_concepts(study: Study, a: AnalyseSection, rows: pd.DataFrame | None, timing: pd.DataFrame,
                   meta: dict[str, Any]) -> str:
    """concepts.parquet + concept_summary.parquet (:mod:`grokscope.analyse.concepts`) from the
    checkpoint rows of :func:`grokscope.analyse.concepts.study_concept_rows`."""
    from grokscope.analyse import concepts as cc

    if rows is None:
        return "concepts: no hidden states captured (score with capture_hidden = true)"
    onsets = cc.phenomenon_onsets(timing)  # {phenomenon: generalisation tokens}
    table, summary = cc.tables_from_rows(rows, onsets, a)
    extra = {"onset_tokens": dict(onsets), **meta}
    store.write_parquet(study.analysis_dir / "concepts.parquet", table, metadata=extra)
    store.write_parquet(study.analysis_dir / "concept_summary.parquet", summary, metadata=extra)
    return cc.summary_line(summary)


def _lemma_groups(phrases: pd.DataFrame) -> np.ndarray:
    from grokscope.analyse.concept import lemma_groups

    good = phrases["critical_word"].fillna("").astype(str).to_numpy()
    bad = phrases["bad_critical_word"].fillna("").astype(str).to_numpy() if "bad_critical_word" in phrases else good
    return lemma_groups(good, bad)


def head_tables(study: Study, inputs: StudyInputs, keep: np.ndarray, k: int,
                ) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    from grokscope.analyse import heads as hd

    frames, conc = [], []
    far = keep[~hd.adjacent_pairs(inputs.phrases.iloc[keep])]  # critical and context words not adjacent
    for step in inputs.steps:
        path = study.attention_path(int(step))
        if not path.exists():
            continue
        att = np.load(path, mmap_mode="r")  # [n_pairs, 2, n_layer, n_head]
        if att.shape[0] != len(inputs.phrases):
            raise DataError(f"{path}: has {att.shape[0]} rows, expected one per pair ({len(inputs.phrases)})")
        values = hd.head_attention(att, keep)
        frame = hd.heads_frame(int(step), values)
        frame["attention_nonadjacent"] = hd.head_attention(att, far).ravel() if far.size else np.nan
        base_path = study.attention_baseline_path(int(step))
        frame["attention_ratio"] = (hd.distance_ratio(att, np.load(base_path, mmap_mode="r"), keep).ravel()
                                    if base_path.exists() else np.nan)
        frames.append(frame)
        c = hd.concentration(values, k)
        conc.append({"step": int(step), **dataclasses.asdict(c), "topk_floor": hd.topk_floor(values.size, k),
                     "n_nonadjacent": int(far.size)})
    if not frames:
        return None, None
    return pd.concat(frames, ignore_index=True), pd.DataFrame(conc)


def run_ablation(study: Study, inputs: StudyInputs, keep: np.ndarray, conc: pd.DataFrame, a: AnalyseSection) -> str:
    """Ablate the top heads of one checkpoint (if its model directory is available)."""
    from grokscope.analyse import heads as hd

    step = int(inputs.steps[-1]) if a.ablation_step < 0 else a.ablation_step
    if step not in set(inputs.steps.tolist()):
        raise DataError(f"[analyse] ablation_step = {step} is not a scored step "
                        f"(scored: {inputs.steps.tolist()[:8]} …)")
    j = int(np.searchsorted(inputs.steps, step))
    ckpt = inputs.score_meta[j].get("checkpoint") or ""
    if not ckpt or not Path(ckpt).is_dir():
        return f"ablation: skipped (checkpoint directory {ckpt!r} of step {step} not available here)"
    try:
        import torch

        from grokscope.core.checkpoints import Checkpoint, load_model
        from grokscope.core.tokenizer import load_tokenizer
    except ImportError as e:  # pragma: no cover - environment problem
        return f"ablation: skipped ({e})"
    rng = np.random.default_rng(a.seed)
    subset = np.sort(rng.permutation(keep)[: a.ablation_pairs]) if a.ablation_pairs > 0 else keep
    pairs = inputs.phrases.iloc[subset].reset_index(drop=True)
    meta = inputs.score_meta[j]
    model = load_model(Checkpoint(ckpt, None, step, int(meta.get("tokens_seen") or 0), "hf_dir"))  # as the score stage
    tokenizer = load_tokenizer(ckpt)
    top = hd.parse_heads(conc.loc[conc["step"] == step, "top_heads"].iloc[0])
    with torch.no_grad():
        table = hd.ablation_table(model, hd.score_accuracy_fn(tokenizer, pairs, pairs, meta), step, top,
                                  a.ablation_repeats, rng, mode=a.ablation_mode)
    store.write_parquet(study.analysis_dir / "ablation.parquet", table,
                        metadata={"step": step, "n_pairs": int(subset.size), "checkpoint": ckpt})
    if a.ablation_single:
        with torch.no_grad():
            single = hd.single_head_table(model, hd.score_accuracy_fn(tokenizer, pairs, pairs, meta), step,
                                          a.ablation_mode)
        store.write_parquet(study.analysis_dir / "ablation_heads.parquet", single,
                            metadata={"step": step, "n_pairs": int(subset.size), "checkpoint": ckpt})
    lines = []
    if a.head_effects:
        with torch.no_grad():
            lines.append(write_head_effects(study, inputs, keep, a, model, tokenizer, step, meta, ckpt))
    top_row = table[table["condition"] == "top"].iloc[0]
    rnd = table.loc[table["condition"] == "random", "delta_accuracy"]
    return (f"ablation at step {step}: top heads {top_row['heads']} change accuracy by "
            f"{top_row['delta_accuracy']:+.3f}; "
            f"random heads {rnd.mean():+.3f} on average (p = {hd.ablation_p_value(table):.3f})"
            + "".join("\n" + line for line in lines))


def write_head_effects(study: Study, inputs: StudyInputs, keep: np.ndarray, a: AnalyseSection, model: Any,
                       tokenizer: Any, step: int, meta: dict[str, Any], ckpt: str) -> str:
    """head_effects.parquet + head_summary.parquet (:mod:`grokscope.analyse.head_effects`) at ``step``."""
    from grokscope.analyse import head_effects as he
    from grokscope.analyse import heads as hd

    rng = np.random.default_rng(a.seed + 1)
    phen_all = inputs.phrases["phenomenon"].astype(str).to_numpy()
    subset = keep[he.stratified_subsample(phen_all[keep], a.head_pairs, rng)]
    pairs = inputs.phrases.iloc[subset].reset_index(drop=True)
    phen = phen_all[subset]
    groups = pairs["critical_phrase"].fillna("").astype(str).to_numpy()
    attention = baseline = None
    att_path = study.attention_path(step)
    if att_path.exists():
        attention = np.asarray(np.load(att_path, mmap_mode="r")[subset, 0], dtype=np.float64)
        base_path = study.attention_baseline_path(step)
        if base_path.exists():
            baseline = np.asarray(np.load(base_path, mmap_mode="r")[subset, 0], dtype=np.float64)
    sweep = he.single_head_sweep(model, hd.score_margin_fn(tokenizer, pairs, pairs, meta), a.ablation_mode,
                                 progress=False)
    in_a = he.selection_halves(phen, groups, rng)
    table = he.effects_table(sweep, phen, groups, in_a, attention, a.top_k_heads, 1.0 - a.ci, baseline)
    summary = he.head_summary(table)
    extra = {"step": step, "n_pairs": int(subset.size), "checkpoint": ckpt, "top_k": a.top_k_heads,
             "alpha": 1.0 - a.ci}
    store.write_parquet(study.analysis_dir / "head_effects.parquet", table, metadata=extra)
    store.write_parquet(study.analysis_dir / "head_summary.parquet", summary, metadata=extra)
    return he.summary_line(summary)


def probe_summary(probes: pd.DataFrame) -> str:
    """One line: best layer's probe accuracy and dimensionality before vs after generalisation."""
    parts = []
    for phase in ("before", "after"):
        sub = probes[probes["phase"] == phase]
        if sub.empty:
            continue
        by_layer = sub.groupby("layer")[["logreg_acc", "meandiff_acc", "participation_ratio"]].mean()
        best = by_layer["logreg_acc"].idxmax()
        r = by_layer.loc[best]
        parts.append(f"{phase} generalisation: best layer {best} logreg {r['logreg_acc']:.2f}, "
                     f"mean-diff {r['meandiff_acc']:.2f}, participation ratio {r['participation_ratio']:.1f}")
    if not parts:
        last = probes[probes["step"] == probes["step"].max()]
        r = last.loc[last["logreg_acc"].idxmax()]
        parts.append(f"no generalisation step; last step best layer {int(r['layer'])} logreg {r['logreg_acc']:.2f}")
    return "probes: " + "; ".join(parts)
