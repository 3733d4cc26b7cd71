"""Verdicts pooled over training runs of one recipe (seeds, data orders): ``grokscope pool``.

Per level/group, the headline ``adjusted`` effect (log odds ratio of having seen the critical
phrase, with its cluster-robust SE) of each run is combined -- or, when any run's verdict rests on
the margin model (its correctness fit separated: ``basis`` "margin"), every run's margin effect, so
that no run drops out and the runs are pooled on one scale (``basis`` of the pooled row) -- by a
random-effects meta-analysis (statsmodels ``combine_effects``, Paule-Mandel tau^2, t reference with
k - 1 df for k runs): the pooled effect says what the recipe does, tau^2 and I^2 how much the runs
disagree beyond their own sampling error. The pooled status follows the single-run rule (``delayed`` when the pooled
effect is > 0 with q < alpha, Benjamini-Hochberg over groups; ``val leads`` when < 0; else
``no delay``; ``not learned`` when no run learned the group, whatever their effects say), and the
spread is kept beside it: every run's status, how many runs call it delayed, the smallest and
largest effect and the proxy delay per run. With few runs the t reference and tau^2 can leave the
pool at ``no delay`` where every run says ``delayed``; the text says so where it happens.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from grokscope.analyse.adjusted import basis_columns

POOLED_COLUMNS = ("level", "group", "k", "basis", "effect", "effect_se", "effect_ci_low", "effect_ci_high", "p", "q",
                  "tau2", "i2", "status", "n_delayed", "statuses", "effect_min", "effect_max",
                  "delay_steps_median", "delay_steps_min", "delay_steps_max")


def _combine(effect: np.ndarray, se: np.ndarray, alpha: float) -> tuple[float, float, float, float, float, float,
                                                                         float]:
    """(estimate, se, ci_low, ci_high, p, tau2, i2) of the random-effects pool (one run: its own)."""
    from scipy import stats

    if effect.size == 1:
        z = effect[0] / se[0]
        q = stats.norm.ppf(1 - alpha / 2)
        return (float(effect[0]), float(se[0]), float(effect[0] - q * se[0]), float(effect[0] + q * se[0]),
                float(2 * stats.norm.sf(abs(z))), 0.0, 0.0)
    from statsmodels.stats.meta_analysis import combine_effects

    with np.errstate(divide="ignore", invalid="ignore"):  # I^2 of identical runs divides by 0
        res = combine_effects(effect, se ** 2, method_re="iterated", use_t=True, alpha=alpha)
    est, sd = float(res.mean_effect_re), float(res.sd_eff_w_re)
    t = stats.t.ppf(1 - alpha / 2, effect.size - 1)
    p = float(2 * stats.t.sf(abs(est / sd), effect.size - 1)) if sd > 0 else float("nan")
    return est, sd, est - t * sd, est + t * sd, p, max(float(res.tau2), 0.0), max(float(res.i2), 0.0)


def pool_timing(timings: list[pd.DataFrame], alpha: float = 0.05) -> pd.DataFrame:
    """One row per level/group present in the runs' ``adjusted`` rows (see the module docstring)."""
    from statsmodels.stats.multitest import multipletests

    per_run = []
    for r, t in enumerate(timings):
        adj = t[t["comparison"] == "adjusted"].copy()
        proxy = t[t["comparison"] == "proxy"][["level", "group", "delay_steps"]]
        adj = adj.drop(columns=[c for c in ("delay_steps",) if c in adj]).merge(proxy, on=["level", "group"],
                                                                                how="left")
        adj["run"] = r
        per_run.append(adj)
    rows = pd.concat(per_run, ignore_index=True)
    rows["group"] = rows["group"].astype(str)
    out = []
    for (level, group), g in rows.groupby(["level", "group"], sort=False):
        basis = "margin" if "basis" in g and (g["basis"] == "margin").any() else "correctness"
        eff_col, se_col = basis_columns(basis)[:2]
        eff = pd.to_numeric(g[eff_col], errors="coerce").to_numpy(np.float64)
        se = pd.to_numeric(g[se_col], errors="coerce").to_numpy(np.float64)
        ok = np.isfinite(eff) & np.isfinite(se) & (se > 0)
        delays = pd.to_numeric(g["delay_steps"], errors="coerce").to_numpy(np.float64)
        finite_delays = delays[np.isfinite(delays)]
        row = {"level": level, "group": group, "k": int(ok.sum()), "basis": basis,
               "n_delayed": int((g["status"] == "delayed").sum()),
               "none_learned": bool((g["status"] == "not learned").all()),
               "statuses": "/".join(str(s) for s in g["status"]),
               "effect_min": float(eff[ok].min()) if ok.any() else float("nan"),
               "effect_max": float(eff[ok].max()) if ok.any() else float("nan"),
               "delay_steps_median": float(np.median(finite_delays)) if finite_delays.size else float("nan"),
               "delay_steps_min": float(finite_delays.min()) if finite_delays.size else float("nan"),
               "delay_steps_max": float(finite_delays.max()) if finite_delays.size else float("nan")}
        if ok.any():
            est, sd, lo, hi, p, tau2, i2 = _combine(eff[ok], se[ok], alpha)
        else:
            est = sd = lo = hi = p = tau2 = i2 = float("nan")
        row.update(effect=est, effect_se=sd, effect_ci_low=lo, effect_ci_high=hi, p=p, tau2=tau2, i2=i2)
        out.append(row)
    df = pd.DataFrame(out)
    df["q"] = np.nan
    tested = df["p"].notna()
    if tested.any():
        df.loc[tested, "q"] = multipletests(df.loc[tested, "p"].to_numpy(), method="fdr_bh")[1]
    significant = df["q"] < alpha
    df["status"] = np.select([df["k"] == 0, significant & (df["effect"] > 0), significant & (df["effect"] < 0)],
                             ["no estimate", "delayed", "val leads"], "no delay")
    df.loc[df["none_learned"], "status"] = "not learned"
    return df[list(POOLED_COLUMNS)]


def pooled_text(df: pd.DataFrame, names: list[str]) -> str:
    lines = [f"pooled over {len(names)} runs: " + ", ".join(names),
             f"{'level':<11} {'group':<34} {'k':>2} {'effect':>7} {'95% CI':>17} {'q':>7} {'tau2':>6} "
             f"{'status':<11} runs"]
    for r in df.itertuples():
        ci = f"[{r.effect_ci_low:+.2f}, {r.effect_ci_high:+.2f}]" if np.isfinite(r.effect_ci_low) else "–"
        q = f"{r.q:.3g}" if np.isfinite(r.q) else "–"
        eff = (("m" if r.basis == "margin" else "") + f"{r.effect:+.2f}") if np.isfinite(r.effect) else "–"
        lines.append(f"{r.level:<11} {str(r.group)[:34]:<34} {r.k:>2} {eff:>7} {ci:>17} {q:>7} {r.tau2:>6.3f} "
                     f"{r.status:<11} {r.n_delayed}/{len(names)} delayed ({r.statuses})")
    lines.append("effect: log odds ratio on correctness; m: log-prob margin effect, pooled where a run's correctness "
                 "fit separated")
    split = df[(df["n_delayed"] == len(names)) & (df["status"] != "delayed") & (df["k"] > 1)]
    if len(names) > 1 and not split.empty:
        groups = ", ".join(map(str, split["group"]))
        lines.append(f"every run says delayed but the pool does not for {groups}: the pooled interval rests on a t "
                     f"with {len(names) - 1} df and on how much the runs differ beyond their own SEs (tau2), so it "
                     "reaches 0; more runs narrow it")
    return "\n".join(lines)


def write_pooled(timings: list[pd.DataFrame], names: list[str], out: Path, alpha: float = 0.05) -> str:
    """Pool ``timings`` and write ``out/pooled.parquet`` and ``out/pooled.txt``; returns the text."""
    from grokscope.core import store

    pooled = pool_timing(timings, alpha)
    out.mkdir(parents=True, exist_ok=True)
    store.write_parquet(out / "pooled.parquet", pooled, metadata={"studies": names, "alpha": alpha})
    text = pooled_text(pooled, names)
    store.write_text(out / "pooled.txt", text + "\n")
    return text
