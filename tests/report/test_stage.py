"""Tests of ``grokscope report``: the page, figures and CSVs from analysis tables built here per
docs/CONTRACTS.md, numbers checked against the source tables and brute-force counts, graceful
degradation, errors, and a real headless-Chromium load of the page."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grokscope import cli
from grokscope.analyse import head_effects as HE
from grokscope.core.errors import DataError, MissingStageError
from grokscope.core.store import Study, write_parquet
from grokscope.report import format as RF
from grokscope.report import inputs as RS
from grokscope.report import model_figures as MF
from grokscope.report import stage as R
from grokscope.report import style as FS

STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000]
ROWS_PER_STEP, ROW_LEN = 8, 129
TOK_PER_STEP = ROWS_PER_STEP * ROW_LEN
PHENOMENA = {
    "anaphor_agreement": ["anaphor_gender_agreement", "anaphor_number_agreement"],
    "determiner_noun_agreement": ["determiner_noun_agreement_1", "determiner_noun_agreement_2"],
    "npi_licensing": ["npi_present_1", "only_npi_scope"],
}
N_LAYER, N_HEAD = 3, 4


def support_tables(exp: pd.DataFrame, phrases: pd.DataFrame, timing: pd.DataFrame, rng) -> dict[str, pd.DataFrame]:
    """The support, dose-response, paradigm and k-sensitivity tables of the synthetic study, made
    by the analysis' own functions (bad counts planted here: the exposure table has none)."""
    from grokscope.analyse import support as sp

    good = exp[[f"good_count_{t}" for t in STEPS]].to_numpy()
    bad = (good * rng.uniform(0, 1.5, (len(exp), 1))).astype(np.int64)
    correct = rng.random(good.shape) < 0.5 + 0.4 * (good > bad)
    info = sp.paradigm_information(phrases.assign(critical_phrase=phrases["good"], context_word="this"), good, 1, 50)
    ks = pd.concat([timing.assign(min_count=k) for k in (1, 5, 20)], ignore_index=True)
    from grokscope.analyse.event_study import event_tables
    from grokscope.analyse.splits import entry_index

    entry = entry_index(good, 1)
    phen = phrases["phenomenon"].to_numpy(dtype=object)
    groups = [("all", "all", np.arange(len(exp)))] + [("phenomenon", g, np.flatnonzero(phen == g))
                                                     for g in sorted(set(phen))]
    events = event_tables(correct, (good - bad) / 10.0, entry, phrases["uid"].to_numpy(dtype=object), groups, 3, 0.95)
    return {"support_splits": sp.support_splits(correct, good, bad, np.asarray(STEPS)), "event_study": events,
            "dose_response": sp.dose_response(correct, good, bad, np.asarray(STEPS)), "paradigms": info,
            "k_sensitivity": ks[ks["level"].isin(["all", "phenomenon"])]}


def _head_effects(phrases: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The per-phenomenon head table of a sweep in which head L2H0 carries the first phenomenon."""
    phen = phrases["phenomenon"].to_numpy()
    n = len(phen)
    base = rng.normal(1.0, 0.5, n)
    margin = base + rng.normal(0, 0.2, (N_LAYER, N_HEAD, n))
    margin[2, 0, phen == phen[0]] -= 1.5
    sweep = HE.Sweep(base, base > 0, margin, margin > 0, "mean")
    groups = phrases["pair_id"].to_numpy() % 7  # phrase clusters
    in_a = HE.selection_halves(phen, groups, rng)
    attention = rng.uniform(0, 0.3, (n, N_LAYER, N_HEAD))
    return HE.effects_table(sweep, phen, groups, in_a, attention, k=2)


# ---- a synthetic study, written per docs/CONTRACTS.md --------------------------------------
def _sigmoid(steps: np.ndarray, mid: float, lo: float = 0.5, hi: float = 0.95) -> np.ndarray:
    x = np.log1p(steps) - np.log1p(mid)
    return lo + (hi - lo) / (1 + np.exp(-2.5 * x))


def make_study(root: Path, seed: int = 0, tables: tuple[str, ...] = ("curves", "timing", "probes", "heads",
               "concentration", "ablation", "support_splits", "dose_response", "paradigms", "k_sensitivity",
               "event_study", "head_effects", "head_summary", "margin_curves"),
               exposure: bool = True) -> Study:
    """A small study: phrases, exposure, one score file (metadata) and the analysis tables."""
    rng = np.random.default_rng(seed)
    study = Study(root)
    steps = np.asarray(STEPS)
    tokens = steps * TOK_PER_STEP
    # pairs, phrases, exposure
    rows, exp_rows = [], []
    for phen, uids in PHENOMENA.items():
        for uid in uids:
            for pid in range(20):
                supported = bool(rng.random() > 0.1)
                first = None
                total = 0
                if supported and rng.random() < 0.7:
                    first = int(rng.choice([1, 2, 3, 5, 9, 30, 100, 400, 900, 2500, 5000]))
                    total = int(rng.choice([1, 3, 15, 150, 2000]))
                rows.append({"uid": uid, "pair_id": pid, "phenomenon": phen, "good": f"good {uid} {pid}",
                             "bad": f"bad {uid} {pid}", "supported": supported, "reason": "" if supported else "no diff"})
                er = {"uid": uid, "pair_id": pid, "supported": supported, "good_phrase": "this sketch",
                      "bad_phrase": "this sketches", "good_first_step": first, "bad_first_step": None,
                      "good_total_count": total, "bad_total_count": 0}
                for t in STEPS:
                    er[f"good_count_{t}"] = int(total if first is not None and first <= t else 0)
                    er[f"bad_count_{t}"] = 0
                exp_rows.append(er)
    phrases = pd.DataFrame(rows)
    write_parquet(study.phrases_path, phrases, {"benchmark": "synthetic-blimp", "benchmark_fingerprint": "ab" * 16})
    if exposure:
        exp = pd.DataFrame(exp_rows)
        for c in ("good_first_step", "bad_first_step"):
            exp[c] = exp[c].astype("Int64")
        write_parquet(study.exposure_path, exp, {"steps": STEPS, "rows_per_step": ROWS_PER_STEP, "row_len": ROW_LEN,
                                                 "tokens_path": "/data/tokens", "tokenizer_fingerprint": "cd" * 16,
                                                 "variants": ["mid", "sentence_start"], "benchmark_fingerprint": "ab" * 16})
    score = pd.DataFrame({"uid": phrases["uid"], "pair_id": phrases["pair_id"], "good_logprob": -10.0,
                          "bad_logprob": -11.0, "correct": True})
    write_parquet(study.score_path(STEPS[-1]), score, {
        "step": STEPS[-1], "tokens_seen": int(tokens[-1]), "checkpoint": "/runs/ckpt/step_00003000",
        "model_type": "gpt2", "n_layer": N_LAYER, "n_head": N_HEAD, "d_model": 64, "revision": None,
        "tokenizer_fingerprint": "cd" * 16, "benchmark_fingerprint": "ab" * 16, "convention": "lm_eval",
        "reduction": "sum", "region": "sentence", "dtype": "float32"})
    (root / "study.toml").write_text('[study]\nname = "synthetic"\n\n[report]\ntitle = "Synthetic study"\n')
    # curves: proxy-train learns at step ~16, proxy-val at ~500 (a planted delay)
    groups = [("all", "all")] + [("phenomenon", p) for p in PHENOMENA] + [
        ("paradigm", u) for us in PHENOMENA.values() for u in us]
    mids = {"proxy_train": 16, "proxy_val": 500, "fixed_seen": 20, "fixed_unseen": 600, "matched_train": 30,
            "matched_val": 400, "bin_0": 600, "bin_1": 200, "bin_2-9": 60, "bin_10-99": 20, "bin_100+": 6}
    curve_rows = []
    for gi, (level, group) in enumerate(groups):
        for split, mid in mids.items():
            acc = np.clip(_sigmoid(steps, mid * (1 + 0.3 * gi)) + rng.normal(0, 0.01, steps.size), 0, 1)
            n = np.full(steps.size, 40 if level != "all" else 240)
            half = 1.96 * np.sqrt(acc * (1 - acc) / n)
            for t, tok, a, nn, h in zip(steps, tokens, acc, n, half):
                curve_rows.append((level, group, split, int(t), int(tok), int(nn), float(a), float(a - h), float(a + h)))
    curves = pd.DataFrame(curve_rows, columns=["level", "group", "split", "step", "tokens", "n", "accuracy", "ci_low", "ci_high"])
    timing_rows = []
    for gi, (level, group) in enumerate(groups):
        for comp in ("proxy", "fixed", "matched"):
            fit = int(STEPS[5 + gi % 2])
            gen = None if (gi == 2 and comp == "proxy") else int(STEPS[9 + gi % 3])
            delay = None if gen is None else gen - fit
            status = "not reached" if gen is None else ("delayed" if gi % 4 != 3 else "no delay")
            if level == "paradigm" and gi % 5 == 0:
                status = "too few pairs"
            timing_rows.append({
                "level": level, "group": group, "comparison": comp, "fit_step": fit, "gen_step": gen,
                "fit_tokens": fit * TOK_PER_STEP, "gen_tokens": None if gen is None else gen * TOK_PER_STEP,
                "delay_steps": delay, "delay_tokens": None if delay is None else delay * TOK_PER_STEP,
                "delay_ci_low": math.nan if delay is None else float(delay - 40 * (gi + 1)),
                "delay_ci_high": math.inf if (gi == 1 and comp == "matched") else (math.nan if delay is None else float(delay + 60)),
                "p_lead": float(rng.uniform(0, 0.2)) if gi != 4 else 0.0004, "status": status,
                "n_train": int(rng.integers(10, 200)), "n_val": int(rng.integers(10, 200))})
    timing = pd.DataFrame(timing_rows)
    for c in ("fit_step", "gen_step", "fit_tokens", "gen_tokens", "delay_steps", "delay_tokens"):
        timing[c] = timing[c].astype("Int64")
    probe_rows = []
    gen_all = 256
    for t in STEPS:
        for layer in range(N_LAYER + 1):
            acc = float(_sigmoid(np.array([t]), 100 / (layer + 1))[0])
            probe_rows.append({"step": t, "layer": layer, "n_pairs": 200, "logreg_acc": acc, "logreg_acc_std": 0.02,
                               "meandiff_acc": acc - 0.05, "participation_ratio": 20 - 10 * acc + layer,
                               "n_components_90": int(30 - 15 * acc), "phase": "before" if t < gen_all else "after"})
    probes = pd.DataFrame(probe_rows)
    head_rows, conc_rows = [], []
    for t in STEPS:
        w = rng.uniform(0, 0.1, (N_LAYER, N_HEAD))
        w[1, 2] += 0.8 * float(_sigmoid(np.array([t]), 200, 0, 1)[0])
        w[2, 0] += 0.4 * float(_sigmoid(np.array([t]), 50, 0, 1)[0])
        for layer in range(N_LAYER):
            for head in range(N_HEAD):
                head_rows.append({"step": t, "layer": layer, "head": head, "attention": float(w[layer, head])})
        flat = np.sort(w.ravel())[::-1]
        top = np.argsort(w.ravel())[::-1][:3]
        p = flat / flat.sum()
        conc_rows.append({"step": t, "topk_share": float(flat[:3].sum() / flat.sum()), "gini": float(0.3 + 0.4 * p[0]),
                          "entropy": float(-(p * np.log(p)).sum()),
                          "top_heads": ",".join(f"L{i // N_HEAD}H{i % N_HEAD}" for i in top)})
    heads, conc = pd.DataFrame(head_rows), pd.DataFrame(conc_rows)
    abl_rows = []
    for t in (256, 3000):
        abl_rows.append({"step": t, "condition": "top", "repeat": 0, "heads": "L1H2,L2H0,L0H1", "accuracy": 0.7,
                         "delta_accuracy": -0.15})
        for r in range(12):
            d = float(rng.normal(-0.02, 0.02))
            abl_rows.append({"step": t, "condition": "random", "repeat": r, "heads": "L0H0,L2H3,L1H1",
                             "accuracy": 0.85 + d, "delta_accuracy": d})
    ablation = pd.DataFrame(abl_rows)
    effects = _head_effects(phrases, rng)
    margins = curves[curves["split"].isin(["proxy_train", "proxy_val"])].rename(columns={"accuracy": "margin"})
    margins = margins.assign(margin=2 * margins["margin"] - 1, ci_low=2 * margins["ci_low"] - 1,
                             ci_high=2 * margins["ci_high"] - 1)
    crit = {"criterion": {"mode": "level", "level": 0.8, "fraction": 0.9, "min_pairs": 10}}
    all_tables = {"curves": curves, "timing": timing, "probes": probes, "heads": heads, "concentration": conc,
                  "ablation": ablation, "head_effects": effects, "head_summary": HE.head_summary(effects),
                  "margin_curves": margins,
                  **support_tables(pd.DataFrame(exp_rows), phrases, timing, rng)}
    for name in tables:
        write_parquet(study.analysis_dir / RS.ANALYSIS_TABLES[name][0], all_tables[name], crit)
    return study


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Study, R.ReportResult, str]:
    study = make_study(tmp_path_factory.mktemp("study") / "s")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(["report", str(study.root)])
    assert rc == 0
    return study, None, out.getvalue()


# ---- the page --------------------------------------------------------------------------
EXPECTED_SECTIONS = ["delays", "split-curves", "fixed-split", "exposure-bins", "matched", "exposure", "support",
                     "informative", "k-sensitivity", "event-study", "probes", "heads", "ablation",
                     "head-effects"]


def test_page_is_self_contained_with_every_section(full_report):
    study, res, _ = full_report
    page = study.report_path.read_text(encoding="utf-8")
    ids = re.findall(r'<section id="([^"]+)" data-missing="([^"]*)"', page)
    assert [i for i, _ in ids] == EXPECTED_SECTIONS
    assert all(m == "" for _, m in ids), ids  # nothing missing in the full study
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]+)"', page)
    assert len(srcs) == 16
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:  # every embedded image is a decodable PNG
        import base64

        raw = base64.b64decode(s.split(",", 1)[1])
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 2000
    assert not re.search(r'(src|href)="(https?:|//)', page)
    assert "<link" not in page and "<script" not in page and "@import" not in page
    # provenance header
    for text in ("/runs/ckpt/step_00003000", "gpt2", "synthetic-blimp", "/data/tokens", "14 analysed",
                 "120 pairs", "6 paradigms, 3 phenomena", "1032 tokens per step", "mode = level"):
        assert text in page, text
    assert "Synthetic study" in page


def test_figure_and_table_files(full_report):
    study, res, _ = full_report
    names = {p.name for p in (study.report_dir / "figures").iterdir()}
    stems = {"delays", "curves_proxy", "curves_fixed", "curves_bins", "curves_matched", "exposure_first_step",
             "exposure_counts", "probes", "head_maps", "head_trajectories", "head_concentration", "ablation", "support",
             "event_study", "head_effects", "margins_proxy"}
    assert names == {f"{s}.{e}" for s in stems for e in ("png", "svg")}
    svg = (study.report_dir / "figures" / "curves_proxy.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "proxy-train" in svg
    tables = {p.stem for p in (study.report_dir / "tables").iterdir()}
    assert {"delays", "delays_paradigm", "delays_fixed", "delays_matched", "curves_proxy", "exposure_counts",
            "exposure_first_step", "probes", "probes_phase", "heads", "head_concentration", "ablation",
            "ablation_summary", "head_summary", "head_effects", "margins_proxy"} <= tables


# ---- numbers ---------------------------------------------------------------------------
def _read(study: Study, name: str) -> pd.DataFrame:
    return pd.read_csv(study.report_dir / "tables" / f"{name}.csv", keep_default_na=True)


def _assert_same(csv: pd.DataFrame, src: pd.DataFrame, key: list[str]) -> None:
    src = src.copy()
    assert len(csv) == len(src)
    a = csv.sort_values(key).reset_index(drop=True)
    b = src.sort_values(key).reset_index(drop=True)
    for col in b.columns:
        if pd.api.types.is_numeric_dtype(b[col]):
            np.testing.assert_allclose(a[col].to_numpy(float), FS.floats(b[col]), rtol=1e-12, equal_nan=True, err_msg=col)
        else:
            assert a[col].fillna("").astype(str).tolist() == b[col].fillna("").astype(str).tolist(), col


def test_curve_csvs_equal_curves_table(full_report):
    study, _, _ = full_report
    curves = pd.read_parquet(study.analysis_dir / "curves.parquet")
    for family, splits in FS.SPLIT_FAMILIES.items():
        _assert_same(_read(study, f"curves_{family}"), curves[curves["split"].isin(splits)],
                     ["level", "group", "split", "step"])


def test_delay_csvs_equal_timing_table(full_report):
    study, _, _ = full_report
    timing = pd.read_parquet(study.analysis_dir / "timing.parquet")
    key = ["level", "group", "comparison"]
    proxy = timing[(timing["comparison"] == "proxy") & timing["level"].isin(["all", "phenomenon"])]
    _assert_same(_read(study, "delays"), proxy, key)
    _assert_same(_read(study, "delays_paradigm"), timing[(timing["comparison"] == "proxy") & (timing["level"] == "paradigm")], key)
    _assert_same(_read(study, "delays_matched"),
                 timing[timing["comparison"].isin(["proxy", "matched"]) & timing["level"].isin(["all", "phenomenon"])], key)
    for name in ("probes", "heads", "ablation"):
        src = pd.read_parquet(study.analysis_dir / RS.ANALYSIS_TABLES[name][0])
        _assert_same(_read(study, name), src, list(src.columns[:3]))


def test_html_delay_table_equals_timing(full_report):
    study, _, _ = full_report
    page = study.report_path.read_text(encoding="utf-8")
    table = re.search(r'<table class="delays">(.*?)</table>', page, re.S).group(1)
    head = re.findall(r"<th>(.*?)</th>", table)
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", table)[1:]]
    timing = pd.read_parquet(study.analysis_dir / "timing.parquet")
    proxy = timing[(timing["comparison"] == "proxy") & timing["level"].isin(["all", "phenomenon"])]
    assert len(rows) == len(proxy)
    for cells in rows:
        got = dict(zip(head, cells))
        level, group = ("all", "all") if got["group"] == "all pairs" else ("phenomenon", got["group"])
        r = proxy[(proxy["level"] == level) & (proxy["group"] == group)].iloc[0]
        assert got["fit step"] == str(r["fit_step"]) and got["status"] == r["status"]
        assert got["gen. step"] == ("not reached" if pd.isna(r["gen_step"]) else str(r["gen_step"]))
        assert got["delay (steps)"] == ("–" if pd.isna(r["delay_steps"]) else str(r["delay_steps"]))
        assert got["n train / val"] == f"{r['n_train']} / {r['n_val']}"
        if np.isfinite(r["delay_ci_high"]) and np.isfinite(r["delay_ci_low"]):
            assert got["95% CI (steps)"] == f"[{round(r['delay_ci_low'])}, {round(r['delay_ci_high'])}]"


def _parse_summary(text: str) -> dict[str, dict[str, str]]:
    lines = text.strip().splitlines()
    header = lines[0].split()
    out = {}
    for line in lines[2:]:
        if not line.strip():
            break
        # "not reached" and "[lo, hi]" contain spaces: split on runs of >= 2 spaces
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(header), line
        out[cells[0]] = dict(zip(header, cells))
    return out


def test_terminal_summary_equals_timing(full_report):
    study, _, stdout = full_report
    timing = pd.read_parquet(study.analysis_dir / "timing.parquet")
    table = _parse_summary(stdout)
    proxy = timing[(timing["comparison"] == "proxy") & timing["level"].isin(["all", "phenomenon"])]
    assert set(table) == {"ALL"} | set(PHENOMENA)
    for _, row in proxy.iterrows():
        got = table["ALL" if row["level"] == "all" else row["group"]]
        for col in ("fit_step", "gen_step"):
            assert got[col] == ("not reached" if pd.isna(row[col]) else str(int(row[col])))
        assert got["delay_steps"] == ("–" if pd.isna(row["delay_steps"]) else str(int(row["delay_steps"])))
        assert got["status"] == row["status"]
        assert got["n_train"] == str(row["n_train"]) and got["n_val"] == str(row["n_val"])
        if not pd.isna(row["delay_tokens"]):  # compact "12.6k": within the printed precision
            m = re.fullmatch(r"(-?[\d.]+)([kMBT]?)", got["delay_tokens"])
            val = float(m.group(1)) * {"": 1, "k": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[m.group(2)]
            assert val == pytest.approx(float(row["delay_tokens"]), rel=0.01)
        if np.isfinite(row["delay_ci_low"]) and np.isfinite(row["delay_ci_high"]):
            assert got["delay_ci"] == f"[{round(row['delay_ci_low'])}, {round(row['delay_ci_high'])}]"
        p = row["p_lead"]
        assert got["p_lead"] == ("<0.001" if p < 0.001 else f"{p:.3f}")
        m = timing[(timing["comparison"] == "matched") & (timing["level"] == row["level"]) & (timing["group"] == row["group"])].iloc[0]
        assert got["matched_delay"] == ("–" if pd.isna(m["delay_steps"]) else str(int(m["delay_steps"])))
        a = timing[(timing["comparison"] == "adjusted") & (timing["level"] == row["level"])
                   & (timing["group"] == row["group"])]
        if len(a):  # the headline verdict beside the descriptive row
            assert got["verdict"] == a["status"].iloc[0]
            assert got["log_or"] == ("–" if pd.isna(a["effect"].iloc[0]) else f"{a['effect'].iloc[0]:+.2f}")
        else:
            assert got["verdict"] == "–"


def test_exposure_tables_equal_brute_force(full_report):
    study, _, _ = full_report
    exp = pd.read_parquet(study.exposure_path)
    phr = pd.read_parquet(study.phrases_path)
    phen = {(u, p): ph for u, p, ph in zip(phr["uid"], phr["pair_id"], phr["phenomenon"])}
    counts = _read(study, "exposure_counts")
    first = _read(study, "exposure_first_step")
    bins = {"0": (0, 0), "1": (1, 1), "2–9": (2, 9), "10–99": (10, 99), "100–999": (100, 999), "1000+": (1000, 10**18)}
    for group in ["all"] + list(PHENOMENA):
        pairs = [r for r in exp.itertuples() if r.supported and (group == "all" or phen[(r.uid, r.pair_id)] == group)]
        for b, (lo, hi) in bins.items():
            want = sum(1 for r in pairs if lo <= r.good_total_count <= hi)
            got = counts[(counts["group"] == group) & (counts["bin"] == b)]["n"].item()
            assert got == want, (group, b)
        prev = -1
        for t in STEPS:
            want = sum(1 for r in pairs if not pd.isna(r.good_first_step) and prev < r.good_first_step <= t)
            assert first[(first["group"] == group) & (first["step"] == t)]["n_new"].item() == want, (group, t)
            seen = sum(1 for r in pairs if not pd.isna(r.good_first_step) and r.good_first_step <= t)
            frac = first[(first["group"] == group) & (first["step"] == t)]["fraction_seen"].item()
            assert frac == pytest.approx(seen / len(pairs))
            prev = t
        never = sum(1 for r in pairs if pd.isna(r.good_first_step) or r.good_first_step > STEPS[-1])
        assert first[(first["group"] == group) & (first["step"] == -1)]["n_new"].item() == never


def test_ablation_summary_by_hand():
    abl = pd.DataFrame({
        "step": [5] * 5, "condition": ["top", "random", "random", "random", "random"], "repeat": [0, 0, 1, 2, 3],
        "heads": ["L0H1"] + ["x"] * 4, "accuracy": [0.6, 0.8, 0.75, 0.9, 0.55],
        "delta_accuracy": [-0.2, 0.0, -0.05, 0.1, -0.25]})
    s = MF.ablation_summary(abl).iloc[0]
    assert s["top_delta"] == -0.2 and s["top_heads"] == "L0H1" and s["n_random"] == 4
    assert s["random_delta_mean"] == pytest.approx(-0.05)
    assert s["random_delta_sd"] == pytest.approx(np.std([0.0, -0.05, 0.1, -0.25], ddof=1))
    assert s["p_random_le_top"] == 0.25  # only -0.25 hurts at least as much as -0.2
    assert s["p_value"] == pytest.approx(2 / 5)  # (1 + 1) / (1 + 4)
    try:  # the analysis stage's own p-value, where that module exists, agrees
        from grokscope.analyse.heads import ablation_p_value
    except ImportError:
        return
    assert s["p_value"] == pytest.approx(ablation_p_value(abl))


# ---- helpers ---------------------------------------------------------------------------
def test_format_count_and_step_axis():
    assert FS.format_count(12_600_000) == "12.6M"
    assert FS.format_count(1000) == "1k" and FS.format_count(999) == "999" and FS.format_count(0) == "0"
    assert FS.format_count(-2500) == "-2.5k" and FS.format_count(3.2e9) == "3.2B"
    ax = FS.StepAxis.from_table(pd.DataFrame({"step": [0, 1, 4], "tokens": [0, 2049 * 1024, 4 * 2049 * 1024]}))
    assert ax.tokens_per_step == 2049 * 1024
    assert ax.tick_label(1000) == "1k\n2.1B"
    assert FS.StepAxis.from_table(pd.DataFrame({"step": [0], "tokens": [0]})).tokens_per_step is None


def test_select_steps_keeps_ends_and_marked_steps():
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000]
    sel = MF.select_steps(steps, (16, 700), k=6)
    assert len(sel) == 6 and sel[0] == 0 and sel[-1] == 3000 and 16 in sel and 512 in sel
    assert sel == sorted(sel) and set(sel) <= set(steps)
    assert MF.select_steps([3, 1, 2], (), k=6) == [1, 2, 3]


def test_head_matrix_places_values():
    heads = pd.DataFrame({"step": [7, 7, 8], "layer": [1, 0, 1], "head": [2, 0, 2], "attention": [0.5, 0.25, 0.9]})
    m = MF.head_matrix(heads, 7, 2, 3)
    assert m[1, 2] == 0.5 and m[0, 0] == 0.25 and np.isnan(m[0, 1]) and np.isnan(m).sum() == 4


# ---- degradation and errors ------------------------------------------------------------
def test_missing_tables_degrade_with_commands(tmp_path, capsys):
    study = make_study(tmp_path / "s", tables=("timing",), exposure=False)
    rc = cli.main(["report", str(study.root), "--formats", "png"])
    assert rc == 0
    page = study.report_path.read_text()
    missing = dict(re.findall(r'<section id="([^"]+)" data-missing="([^"]*)"', page))
    assert missing["delays"] == ""
    assert missing["split-curves"] == "curves" and missing["exposure"] == "exposure"
    assert missing["probes"] == "probes" and missing["heads"] == "heads" and missing["ablation"] == "ablation"
    assert f"grokscope exposure {study.root}" in page and f"grokscope analyse {study.root}" in page
    assert "capture_hidden" in page and "capture_attention" in page
    figs = {p.name for p in (study.report_dir / "figures").iterdir()}
    assert figs == {"delays.png"}
    out = capsys.readouterr().out
    assert "ALL" in out and "section 'probes' incomplete" in out


def test_partly_missing_section_is_flagged(tmp_path):
    study = make_study(tmp_path / "s", tables=("timing", "heads"), exposure=False)
    res = R.build_report(study, formats=["png"])
    assert {s.id: s.missing for s in res.sections}["heads"] == "concentration"
    page = study.report_path.read_text()
    assert 'id="fig-head_maps"' in page and "analysis/head_concentration.parquet" in page


def test_stale_figures_removed_on_rerun(tmp_path):
    study = make_study(tmp_path / "s", tables=("timing", "ablation"), exposure=False)
    R.build_report(study, formats=["png", "svg"])
    assert (study.report_dir / "figures" / "ablation.svg").exists()
    (study.analysis_dir / "ablation.parquet").unlink()
    R.build_report(study, formats=["png"])
    assert {p.name for p in (study.report_dir / "figures").iterdir()} == {"delays.png"}
    assert not (study.report_dir / "tables" / "ablation.csv").exists()


def test_no_analysis_is_missing_stage_error(tmp_path, capsys):
    study = make_study(tmp_path / "s", tables=())
    with pytest.raises(MissingStageError, match="grokscope analyse"):
        R.build_report(study)
    assert cli.main(["report", str(study.root)]) == 2
    err = capsys.readouterr().err
    assert "grokscope analyse" in err and "timing.parquet" in err
    assert not study.report_path.exists()


def test_bad_table_is_data_error_and_keeps_old_report(tmp_path, capsys):
    study = make_study(tmp_path / "s", tables=("timing",), exposure=False)
    R.build_report(study, formats=["png"])
    before = study.report_path.read_text()
    t = pd.read_parquet(study.analysis_dir / "timing.parquet").drop(columns=["delay_ci_low"])
    write_parquet(study.analysis_dir / "timing.parquet", t)
    with pytest.raises(DataError, match=r"timing\.parquet: missing column\(s\) \['delay_ci_low'\]"):
        R.build_report(study)
    assert cli.main(["report", str(study.root)]) == 2
    assert "delay_ci_low" in capsys.readouterr().err
    assert study.report_path.read_text() == before


def test_run_stage_uses_config_section(tmp_path, capsys):
    from grokscope.core.config import config_from_dict

    study = make_study(tmp_path / "s", tables=("timing",), exposure=False)
    cfg = config_from_dict({"report": {"title": "From the config", "formats": ["svg"]}})
    R.run_stage(cfg, study)
    assert "<title>From the config</title>" in study.report_path.read_text()
    assert {p.suffix for p in (study.report_dir / "figures").iterdir()} == {".svg"}
    with pytest.raises(Exception, match="unknown format"):
        R.build_report(study, formats=["gif"])


def test_module_imports_no_heavy_library():
    code = ("import sys, grokscope.report.stage; heavy = {'matplotlib', 'torch', 'transformers', 'sklearn', 'dask', 'numba'};"
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- the page in a real browser ---------------------------------------------------------
CHECK_JS = r"""<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(e.target && e.target.tagName ? 'load failed: ' + e.target.tagName : String(e.message));
}, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var res = {
    n_img: imgs.length,
    bad_img: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.alt; }),
    widths: imgs.map(function (i) { return i.naturalWidth; }),
    sections: Array.prototype.slice.call(document.querySelectorAll('section')).map(function (s) {
      return [s.id, s.querySelector('h2') ? s.querySelector('h2').textContent : '', s.getBoundingClientRect().height]; }),
    resources: performance.getEntriesByType('resource').map(function (r) { return r.name; }),
    external: Array.prototype.slice.call(document.querySelectorAll('[src],[href]')).map(function (el) {
      return el.getAttribute('src') || el.getAttribute('href'); }).filter(function (u) {
      return u.indexOf('data:') !== 0 && u.charAt(0) !== '#'; }).concat(
      Array.prototype.slice.call(document.styleSheets).map(function (sh) {
        return Array.prototype.slice.call(sh.cssRules).map(function (r) { return r.cssText; }).join(' '); })
      .join(' ').match(/url\((?!["']?data:)[^)]*\)/g) || []),
    errors: window.__errors
  };
  var pre = document.createElement('pre'); pre.id = 'grokscope-check';
  pre.textContent = JSON.stringify(res); document.body.appendChild(pre);
});
</script>"""


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(args: list[str], tmp: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    exe = chromium_binary()
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={tmp / 'chrome-profile'}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def browser_check(page: Path, tmp: Path) -> tuple[dict, list[str]]:
    """Load ``page`` in headless Chromium with CHECK_JS injected; return the check result
    (images, sections, fetched resources, errors) and the console-error lines of the log."""
    html = page.read_text(encoding="utf-8")
    checked = page.parent / "_browser_check.html"  # next to the page: same relative paths
    checked.write_text(html.replace("<head>", "<head>" + CHECK_JS, 1), encoding="utf-8")
    try:
        proc = run_chromium(["--virtual-time-budget=15000", "--dump-dom", checked.resolve().as_uri()], tmp)
    finally:
        checked.unlink()
    m = re.search(r'<pre id="grokscope-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"no check result in the DOM; chromium rc={proc.returncode} stderr tail:\n{proc.stderr[-2000:]}"
    res = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln and ("rror" in ln or "Uncaught" in ln)]
    return res, console


needs_chromium = pytest.mark.skipif(
    chromium_binary() is None,
    reason="headless browser check needs Chromium (Debian: apt-get install -y chromium chromium-driver)")


@needs_chromium
def test_page_loads_in_headless_chromium(full_report, tmp_path):
    study, _, _ = full_report
    res, console = browser_check(study.report_path, tmp_path)
    assert res["errors"] == [] and console == []
    assert res["n_img"] == 16 and res["bad_img"] == [] and min(res["widths"]) > 300
    assert [s[0] for s in res["sections"]] == EXPECTED_SECTIONS
    assert all(s[2] > 50 for s in res["sections"])  # every section is rendered with content
    assert res["resources"] == [] and res["external"] == []  # nothing fetched: the page is self-contained


@needs_chromium
def test_browser_check_catches_broken_page(tmp_path):
    """Negative control: the same check flags a broken image, a script error and a fetch."""
    import matplotlib.image

    matplotlib.image.imsave(tmp_path / "external.png", np.zeros((4, 4, 3)))
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><title>x</title></head><body>'
                    '<section id="a"><h2>A</h2><img alt="broken" src="data:image/png;base64,AAAA">'
                    '<img alt="absent" src="missing.png"><img alt="ok" src="external.png"></section>'
                    '<script>undefinedFunction();</script></body></html>', encoding="utf-8")
    res, console = browser_check(page, tmp_path)
    assert sorted(res["bad_img"]) == ["absent", "broken"]
    assert any("undefinedFunction" in e for e in res["errors"]) and any("undefinedFunction" in c for c in console)
    assert res["external"] == ["missing.png", "external.png"]  # non-data URLs are reported


@pytest.mark.slow
@needs_chromium
def test_screenshot_of_report(full_report, tmp_path):
    """Writes runs/report-screenshots/part*.png (the page in 1300-px slices) for a person to look at."""
    from PIL import Image

    study, _, _ = full_report
    out = Path(__file__).resolve().parents[2] / "runs" / "report-screenshots"
    out.mkdir(parents=True, exist_ok=True)
    full = tmp_path / "full.png"
    run_chromium([f"--screenshot={full}", "--window-size=1300,16000", "--hide-scrollbars",
                  study.report_path.resolve().as_uri()], tmp_path, timeout=300)
    im = Image.open(full)
    grey = np.asarray(im.convert("L"))
    end = int(np.flatnonzero((grey < 245).any(axis=1)).max()) + 20  # last row with content
    assert end > 3000  # the whole report rendered, not an empty page
    for i, top in enumerate(range(0, end, 1300)):
        im.crop((0, top, im.width, min(top + 1300, end))).save(out / f"part{i:02d}.png")


# ---- against the real analysis stage -----------------------------------------------------
@pytest.mark.slow
def test_report_on_real_analyse_output(tmp_path):
    """simulate -> grokscope analyse -> report: the tables the analysis stage really writes
    line up with the report (every section but ablation drawn; CSVs equal the tables)."""
    simulate = pytest.importorskip("grokscope.analyse.simulate")
    analyse = pytest.importorskip("grokscope.analyse.stage")
    from grokscope.core.config import AnalyseSection

    sim = simulate.simulate_study(
        tmp_path / "s", phenomena=[simulate.SimPhenomenon("agreement", 1000, 4000), simulate.SimPhenomenon("island", 1000, 0)],
        n_pairs_per_paradigm=40, steps=[0, 1, 4, 16, 64, 256, 1000, 2000, 4000, 6000, 8000], hidden_pairs=100,
        d_model=16, n_layer=2, n_head=3, write_tokens=False)
    analyse.analyse_study(sim.study, AnalyseSection(n_boot=100, n_perm=100, probe_pairs=100, probe_folds=3, ablation=False,
                                                   min_distinct_phrases=10))
    res = R.build_report(sim.study, formats=["png"])
    assert {s.id: s.missing for s in res.sections} == {i: {"ablation": "ablation", "head-effects": "head_effects"}.get(i, "")
                                                             for i in EXPECTED_SECTIONS}
    timing = pd.read_parquet(sim.study.analysis_dir / "timing.parquet")
    summary = _parse_summary(res.summary_text)
    pooled = timing[(timing["level"] == "all") & (timing["comparison"] == "proxy")].iloc[0]
    assert summary["ALL"]["delay_steps"] == str(int(pooled["delay_steps"]))
    assert summary["agreement"]["status"] == timing.query("group == 'agreement' and comparison == 'proxy'")["status"].item()
    curves = pd.read_parquet(sim.study.analysis_dir / "curves.parquet")
    _assert_same(_read(sim.study, "curves_proxy"), curves[curves["split"].isin(FS.SPLIT_FAMILIES["proxy"])],
                 ["level", "group", "split", "step"])


def test_confidence_intervals_of_censored_delays_read_as_words():
    inf = math.inf
    assert RF.fmt_ci(inf, inf) == "not reached in any resample"
    assert RF.fmt_ci(100, inf) == "[100, ∞]"
    assert RF.fmt_ci(-25.0, 175.4) == "[-25, 175]"
    assert RF.fmt_ci(math.nan, 3) == "–"


def test_support_sections_show_their_tables(full_report):
    study, _, _ = full_report
    page = study.report_path.read_text(encoding="utf-8")
    splits = pd.read_csv(study.report_dir / "tables" / "support_splits.csv")
    assert set(splits["split"]) == {"good_only", "bad_only", "both", "neither"}
    assert splits.groupby("step")["n"].sum().nunique() == 1  # every pair in one split per checkpoint
    dose = pd.read_csv(study.report_dir / "tables" / "dose_response.csv")
    assert set(dose["axis"]) == {"good_count", "support_share"}
    info = pd.read_csv(study.report_dir / "tables" / "paradigms.csv")
    assert len(info) == 6 and (info["distinct_phrases"] == 20).all() and not info["informative"].any()
    assert "6 of 6 paradigms cannot carry information" in page
    assert "anaphor_gender_agreement</b> (20 distinct phrases (&lt; 50))" in page
    assert "delay k=1" in page and "delay k=20" in page
    ks = pd.read_csv(study.report_dir / "tables" / "k_sensitivity.csv")
    assert sorted(set(ks["min_count"])) == [1, 5, 20]


def test_support_figure_with_perfect_accuracy():
    """Wilson bounds at accuracy 1 can fall a rounding error below it: the error bars are clipped."""
    from grokscope.analyse import support as sp
    from grokscope.report.support_sections import support_figure

    good = np.array([[0, 3], [1, 7], [2, 2], [0, 0]] * 20)  # 20 pairs per bin: Wilson upper bound 1 - 1e-16
    bad = np.zeros_like(good)
    correct = np.ones(good.shape, dtype=bool)
    steps = np.array([1, 2])
    fig = support_figure(sp.support_splits(correct, good, bad, steps), sp.dose_response(correct, good, bad, steps),
                         FS.StepAxis(None))
    assert len(fig.axes) == 3
