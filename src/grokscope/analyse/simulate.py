"""A synthetic study with planted learning dynamics, written exactly per docs/CONTRACTS.md.

It writes ``phrases.parquet``, ``exposure.parquet``, ``scores/step_*.parquet`` (+ ``.hidden.npy``
and ``.attention.npy``) and, optionally, a ``tokens/`` directory whose unigram counts give every
critical word a planted frequency -- everything ``grokscope analyse`` and ``grokscope report``
read -- so the analyses can be checked against a known truth and benchmarked at scale.

The planted model, per phenomenon with fit step F and delay D (steps): pair i is *learned* at
checkpoint t if (t >= F and its critical phrase is in window(t)) or t >= F + D; a learned pair is
correct with probability ``p_high``, otherwise ``p_low``. So proxy-train accuracy jumps at F and
proxy-val accuracy at F + D; with D = 0 correctness does not depend on exposure at all (the null).
With ``confound=True`` exposure has no effect; instead pairs whose critical word is frequent are
both seen earlier and learned earlier (onset by frequency class), which a naive proxy comparison
mistakes for a delay and the frequency-matched comparison does not.

Hidden states: good - bad at the critical token = g_l learned_i(t) (u_l + B_l c_i(t)) + isotropic
noise (``hidden_noise``), with u_l a fixed unit direction per layer, B_l ``[d, r_max]`` orthonormal
and c_i(t) ~ N(0, 1) in the first r(t) coordinates, zero in the others: r(t) = the phenomenon's
``rank_before`` before its generalisation step (fit + delay) and ``rank_after`` from then on. So the
centred concept-vector matrix of a phenomenon has the planted rank (plus at most one dimension,
u_l, while only some pairs are learned), rising or falling at a chosen step. Attention: head ``planted_head`` of
every layer >= 1 attends critical -> context with weight 0.1 + 0.7 learned, others ~0.05.

Usage::

    from grokscope.analyse.simulate import simulate_study, SimPhenomenon
    sim = simulate_study("runs/sim", n_pairs_per_paradigm=1000, paradigms_per_phenomenon=2,
                         phenomena=[SimPhenomenon("agreement", fit_step=2000, delay=8000)])
    sim.truth  # phenomenon, fit_step, gen_step, delay (planted)
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from grokscope.core import store
from grokscope.core.store import Study


@dataclass(frozen=True)
class SimPhenomenon:
    name: str
    fit_step: int = 2000
    delay: int = 8000  # steps; 0 = no delay (the null)
    rank_before: int = 1  # dimensions of the concept vectors before fit_step + delay ...
    rank_after: int = 1  # ... and from then on


@dataclass
class SimulatedStudy:
    study: Study
    steps: np.ndarray
    truth: pd.DataFrame  # phenomenon, fit_step, gen_step, delay, fit_index, gen_index


def default_steps(n_linear: int = 39, every: int = 1000) -> np.ndarray:
    """Pythia-like checkpoints: 0, 1, 2, 4, ..., 512, then every ``every`` steps (50 in all)."""
    log = [0] + [2**i for i in range(10)]
    return np.array(log + [every * (i + 1) for i in range(n_linear)], dtype=np.int64)


def simulate_study(
    root: str | Path,
    phenomena: list[SimPhenomenon] | None = None,
    paradigms_per_phenomenon: int | list[int] = 2,
    n_pairs_per_paradigm: int = 200,
    steps: np.ndarray | None = None,
    p_low: float = 0.5,
    p_high: float = 0.95,
    seen_fraction: float = 0.7,
    confound: bool = False,
    n_layer: int = 4,
    n_head: int = 4,
    d_model: int = 32,
    hidden_pairs: int = 500,
    planted_head: int = 2,
    hidden_noise: float = 0.3,
    rows_per_step: int = 8,
    row_len: int = 129,
    write_tokens: bool = True,
    tokenizer_fingerprint: str = "sim-tokenizer",
    seed: int = 0,
) -> SimulatedStudy:
    """Write a synthetic study under ``root`` (see module docstring) and return its truth."""
    rng = np.random.default_rng(seed)
    study = Study(root)
    steps = default_steps() if steps is None else np.asarray(steps, dtype=np.int64)
    phenomena = phenomena or [SimPhenomenon("agreement", 2000, 8000), SimPhenomenon("island", 2000, 0)]
    n_ph = len(phenomena)
    per_ph = ([paradigms_per_phenomenon] * n_ph if isinstance(paradigms_per_phenomenon, int)
              else list(paradigms_per_phenomenon))
    ph_of_paradigm = np.repeat(np.arange(n_ph), per_ph)
    n_par = ph_of_paradigm.size
    n = n_par * n_pairs_per_paradigm
    T = steps.size
    ph_of_pair = np.repeat(ph_of_paradigm, n_pairs_per_paradigm)
    uid = np.repeat([f"{phenomena[ph].name}_p{p}" for p, ph in enumerate(ph_of_paradigm)], n_pairs_per_paradigm)
    pair_id = np.tile(np.arange(n_pairs_per_paradigm), n_par)

    # critical words in 5 frequency classes (counts 1, 5, 25, 125, 625 in the token stream)
    n_words = max(50, min(500, n // 20))
    word_class = np.arange(n_words) % 5
    word_count = 5 ** word_class
    word_of_pair = rng.integers(0, n_words, size=n)
    cls = word_class[word_of_pair]
    words = np.array([f"w{j:04d}" for j in range(n_words)], dtype=object)

    # one exposure history per critical phrase ("this <word>"): pairs sharing a word share it
    first_w, counts_w = _simulate_exposure(rng, n_words, steps, seen_fraction, word_class if confound else None)
    first_step, counts = first_w[word_of_pair], counts_w[word_of_pair]
    seen = counts >= 1  # [n, T]
    fit = np.array([phenomena[p].fit_step for p in ph_of_pair])
    delay = np.array([phenomena[p].delay for p in ph_of_pair])
    if confound:  # onset by frequency class, exposure irrelevant
        onset = (fit + (4 - cls) * np.maximum(delay, 1) // 4)[:, None]
        learned = steps[None, :] >= onset
    else:
        learned = ((steps[None, :] >= fit[:, None]) & seen) | (steps[None, :] >= (fit + delay)[:, None])
    correct = rng.random((n, T)) < np.where(learned, p_high, p_low)  # [n, T]

    pairs = _pairs_frame(uid, pair_id, [phenomena[p].name for p in ph_of_pair], words[word_of_pair])
    bench_fp = hashlib.sha256(pd.util.hash_pandas_object(pairs[["uid", "pair_id", "good", "bad"]],
                                                         index=False).values.tobytes()).hexdigest()[:16]
    store.write_parquet(study.phrases_path, pairs,
                        metadata={"benchmark": "simulated", "benchmark_fingerprint": bench_fp})
    _write_exposure(study, pairs, first_step, counts, steps, rows_per_step, row_len, tokenizer_fingerprint, bench_fp)
    if write_tokens:  # a word occurs as often as the phrase that holds it, plus its planted count outside it
        _write_tokens(study, words, word_count + counts_w[:, -1].astype(np.int64), row_len, rng)
    ranks = np.array([[ph.rank_before, ph.rank_after, ph.fit_step + ph.delay] for ph in phenomena])[ph_of_pair]
    _write_scores(study, rng, correct, learned, steps, rows_per_step, row_len, pairs, n_layer, n_head, d_model,
                  hidden_pairs, planted_head, tokenizer_fingerprint, bench_fp, ranks, hidden_noise)

    truth = []
    for ph in phenomena:
        gen = ph.fit_step + ph.delay
        truth.append({"phenomenon": ph.name, "fit_step": ph.fit_step, "gen_step": gen, "delay": ph.delay,
                      "fit_index": int(np.searchsorted(steps, ph.fit_step)),
                      "gen_index": int(np.searchsorted(steps, gen))})
    return SimulatedStudy(study, steps, pd.DataFrame(truth))


def _simulate_exposure(rng, n, steps, seen_fraction, freq_class):
    """First step (log-uniform over the run) and cumulative counts at every checkpoint."""
    max_step = int(steps[-1])
    if freq_class is None:
        ever = rng.random(n) < seen_fraction
        u = rng.random(n)
    else:  # frequent words are seen more often and earlier
        ever = rng.random(n) < np.clip(seen_fraction * (0.4 + 0.3 * freq_class), 0, 1)
        u = rng.random(n) ** (1.0 + freq_class)
    first = np.floor(np.exp(u * np.log(max_step))).astype(np.int64).clip(1, max_step)
    first = np.where(ever, first, -1)
    rate = np.exp(rng.normal(np.log(20.0 / max_step), 1.5, size=n))  # occurrences per step after first
    since = np.clip(steps[None, :] - first[:, None], 0, None)  # [n, T]
    counts = np.where(ever[:, None] & (steps[None, :] >= first[:, None]),
                      1 + rng.poisson(rate[:, None] * since), 0)
    counts = np.maximum.accumulate(counts, axis=1)  # cumulative counts never decrease
    return first, counts


def _pairs_frame(uid, pair_id, phenomenon, crit_words) -> pd.DataFrame:
    prefix = "Someone saw this "
    good = [f"{prefix}{w} today." for w in crit_words]
    bad = [f"{prefix}{w}s today." for w in crit_words]
    lw = np.array([len(w) for w in crit_words])
    p0 = len("Someone saw ")
    c0 = len(prefix)
    phrase = [f"this {w}" for w in crit_words]
    bad_phrase = [f"this {w}s" for w in crit_words]
    n = len(good)
    return pd.DataFrame({
        "uid": uid, "pair_id": pair_id.astype(np.int64), "phenomenon": phenomenon, "good": good, "bad": bad,
        "supported": np.ones(n, bool), "reason": "", "rule": "simulated",
        "critical_phrase": phrase, "phrase_start": p0, "phrase_end": c0 + lw,
        "bad_phrase": bad_phrase, "bad_phrase_start": p0, "bad_phrase_end": c0 + lw + 1,
        "critical_word": list(crit_words), "critical_start": c0, "critical_end": c0 + lw,
        "bad_critical_word": [f"{w}s" for w in crit_words], "bad_critical_start": c0, "bad_critical_end": c0 + lw + 1,
        "context_word": "this", "context_start": p0, "context_end": p0 + 4,
        "bad_context_start": p0, "bad_context_end": p0 + 4,
    })


def _write_exposure(study, pairs, first, counts, steps, rows_per_step, row_len, tok_fp, bench_fp) -> None:
    n = len(pairs)
    df = {
        "uid": pairs["uid"], "pair_id": pairs["pair_id"], "supported": pairs["supported"],
        "good_phrase": pairs["critical_phrase"], "bad_phrase": pairs["bad_phrase"],
        "good_first_step": pd.Series(np.where(first > 0, first, np.nan)).astype("Int64"),
        "bad_first_step": pd.array([None] * n, dtype="Int64"),
        "good_total_count": counts[:, -1].astype(np.int64), "bad_total_count": np.zeros(n, np.int64),
    }
    for j, t in enumerate(steps):
        df[f"good_count_{int(t)}"] = counts[:, j].astype(np.int64)
        df[f"bad_count_{int(t)}"] = np.zeros(n, np.int64)
    meta = {"steps": [int(s) for s in steps], "rows_per_step": rows_per_step, "row_len": row_len,
            "tokens_path": str(study.tokens_dir), "tokenizer_fingerprint": tok_fp,
            "variants": ["mid", "sentence_start"], "benchmark_fingerprint": bench_fp}
    store.write_parquet(study.exposure_path, pd.DataFrame(df), metadata=meta)


def _write_tokens(study, words, word_count, row_len, rng) -> None:
    """A word-level tokenizer and a token stream in which word j occurs ``word_count[j]`` times."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, "<unk>": 1, "filler": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", unk_token="<unk>")
    fast.save_pretrained(str(study.tokens_dir / "tokenizer"))
    ids = np.repeat(np.arange(len(words)) + 3, word_count)
    n_tok = ids.size * 2
    stream = np.full(n_tok, 2, dtype=np.uint16)
    stream[rng.choice(n_tok, ids.size, replace=False)] = ids
    n_rows = -(-n_tok // row_len)
    rows = np.zeros(n_rows * row_len, dtype=np.uint16)  # padded with <eos>
    rows[:n_tok] = stream
    store.write_npy(study.tokens_dir / "tokens.npy", rows.reshape(n_rows, row_len))
    store.write_npy(study.tokens_dir / "row_docs.npy", np.arange(n_rows, dtype=np.int64))
    store.write_json(study.tokens_dir / "manifest.json", {
        "format": "grokscope", "tokenizer": "simulated word-level", "tokenizer_fingerprint": "sim-tokenizer",
        "vocab_size": len(vocab), "eos_id": 0, "seq_len": row_len - 1, "row_len": row_len, "dtype": "uint16",
        "seed": 0, "n_rows": n_rows, "n_tokens": int(n_rows * row_len), "n_documents": n_rows, "sources": [],
    })


def _write_scores(study, rng, correct, learned, steps, rows_per_step, row_len, pairs, n_layer, n_head, d_model,
                  hidden_pairs, planted_head, tok_fp, bench_fp, ranks, hidden_noise) -> None:
    n, T = correct.shape
    n_cap = n if hidden_pairs <= 0 else min(hidden_pairs, n)
    captured = np.sort(rng.choice(n, n_cap, replace=False))
    hidden_row = np.full(n, -1, dtype=np.int32)
    hidden_row[captured] = np.arange(n_cap, dtype=np.int32)
    direction = rng.normal(size=(n_layer + 1, d_model))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)  # u_l, unit per layer
    layer_gain = np.linspace(0.0, 3.0, n_layer + 1)  # embeddings carry no concept, top layers most
    r_max = int(ranks[:, :2].max())
    basis = np.linalg.qr(rng.normal(size=(n_layer + 1, d_model, r_max)))[0]  # B_l, orthonormal columns
    coef = rng.normal(size=(n_cap, r_max))  # c_i
    for j, t in enumerate(steps):
        margin = np.abs(rng.normal(1.0, 0.5, n))
        good_lp = -30.0 + rng.normal(0, 2, n)
        bad_lp = np.where(correct[:, j], good_lp - margin, good_lp + margin)
        crit_good = -8.0 + rng.normal(0, 1, n)
        crit_bad = np.where(correct[:, j], crit_good - margin, crit_good + margin)
        tok_good = np.stack([crit_good * 0.4, crit_good * 0.6], axis=1).astype(np.float32)
        tok_bad = np.stack([crit_bad * 0.4, crit_bad * 0.6], axis=1).astype(np.float32)
        table = pd.DataFrame({
            "uid": pairs["uid"], "pair_id": pairs["pair_id"],
            "good_logprob": good_lp, "bad_logprob": bad_lp,
            "good_ntokens": np.full(n, 6, np.int32), "bad_ntokens": np.full(n, 6, np.int32),
            "correct": good_lp > bad_lp,
            "good_critical_logprob": crit_good, "bad_critical_logprob": crit_bad,
            "good_phrase_token_logprobs": list(tok_good), "bad_phrase_token_logprobs": list(tok_bad),
            "hidden_row": hidden_row,
        })
        # hidden states [n_cap, 2, n_layer+1, d_model]: shared part z, +/- half the concept vector
        lc = learned[captured, j].astype(np.float64)
        z = rng.normal(size=(n_cap, n_layer + 1, d_model))
        rank = np.where(t >= ranks[captured, 2], ranks[captured, 1], ranks[captured, 0])  # r(t) per pair
        c = np.where(np.arange(r_max)[None, :] < rank[:, None], coef, 0.0)  # [n_cap, r_max]
        concept = direction[None] + np.einsum("ldr,nr->nld", basis, c)  # [n_cap, n_layer+1, d_model]
        half = 0.5 * lc[:, None, None] * layer_gain[None, :, None] * concept
        noise = hidden_noise * rng.normal(size=(n_cap, 2, n_layer + 1, d_model))
        hidden = np.stack([z + half, z - half], axis=1) + noise
        # attention [n, 2, n_layer, n_head]
        att = 0.05 * rng.random((n, 2, n_layer, n_head))
        att[:, :, 1:, planted_head] += 0.1 + 0.7 * learned[:, j, None, None]
        meta = {"step": int(t), "tokens_seen": int(t) * rows_per_step * row_len, "checkpoint": "",
                "revision": "", "model_type": "simulated", "n_layer": n_layer, "n_head": n_head,
                "d_model": d_model, "tokenizer_fingerprint": tok_fp, "benchmark_fingerprint": bench_fp,
                "convention": "lm_eval", "reduction": "sum", "region": "sentence", "dtype": "float32"}
        store.write_npy(study.hidden_path(int(t)), hidden.astype(np.float16))
        store.write_npy(study.attention_path(int(t)), att.astype(np.float16))
        store.write_parquet(study.score_path(int(t)), table, metadata=meta)


def write_study_config(study: Study, **analyse: object) -> Path:
    """Write a minimal ``study.toml`` (an ``[analyse]`` section) into the study directory."""
    import tomli_w

    text = tomli_w.dumps({"analyse": dict(analyse)}) if analyse else ""
    store.write_text(study.config_path, text)
    return study.config_path


__all__ = ["SimPhenomenon", "SimulatedStudy", "default_steps", "simulate_study", "write_study_config"]


# ---------------------------------------------------------------------------------------
# one simulated group in memory (calibration of the verdicts: bench/calibrate_dynamics.py)
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupScenario:
    """A group of pairs with a planted truth. Phrases (clusters) each hold ``pairs_per_phrase``
    pairs that share their exposure, their words and (``cluster_ease_sd``) a random ease.

    Per phrase: standard-normal log frequencies of the critical (z_c) and context word (z_x), a
    length. Exposure: first-exposure checkpoint ``seen_at - exposure_slope * z_driver + N(0, 2.5)``
    (never when past the run). Ease: a pair's learning checkpoint F = ``fit_index -
    confound * z_driver + paradigm offset + cluster ease + N(0, 1)``, ``z_driver`` = z_c
    (``driver="critical"``) or z_x (``"context"``). Learned at t: (t >= F and seen) or t >= F +
    ``delay``; with ``delay = 0`` exposure has no effect. Correct with ``p_high`` if learned else
    ``p_low``; margin = learned + ``margin_effect`` * seen + N(0, 1). The covariate handed to the
    analysis is z_c + N(0, ``proxy_noise``) (a noisy measure of the confounder when > 0)."""

    n_phrases: int = 60
    pairs_per_phrase: int = 3
    n_checkpoints: int = 16
    fit_index: float = 6.0
    delay: int = 0
    confound: float = 0.0
    driver: str = "critical"
    exposure_slope: float = 2.0
    seen_at: float = 7.0
    cluster_ease_sd: float = 0.0
    proxy_noise: float = 0.0
    margin_effect: float = 0.0
    p_low: float = 0.5
    p_high: float = 0.95
    paradigms: int = 2


@dataclass
class SimGroup:
    correct: np.ndarray  # [n, T] bool
    margin: np.ndarray  # [n, T]
    counts: np.ndarray  # [n, T] cumulative phrase count
    covariates: pd.DataFrame
    paradigm: np.ndarray
    cluster: np.ndarray
    steps: np.ndarray
    tokens: np.ndarray


def simulate_group(sc: GroupScenario, rng: np.random.Generator) -> SimGroup:
    """One group drawn from ``sc`` (see :class:`GroupScenario`)."""
    P, m, T = sc.n_phrases, sc.pairs_per_phrase, sc.n_checkpoints
    z_c, z_x = rng.normal(size=P), rng.normal(size=P)
    length = rng.integers(2, 5, size=P).astype(np.float64)
    par = rng.integers(0, sc.paradigms, size=P)
    par_offset = np.linspace(-1, 1, sc.paradigms)[par] if sc.paradigms > 1 else np.zeros(P)
    drive = z_c if sc.driver == "critical" else z_x
    first = np.round(sc.seen_at - sc.exposure_slope * drive + 0.5 * par_offset + rng.normal(0, 2.5, P))
    first = np.where(first >= T, T, np.clip(first, 0, None)).astype(np.int64)
    ease = sc.confound * drive - par_offset + rng.normal(0, sc.cluster_ease_sd, P) if sc.cluster_ease_sd \
        else sc.confound * drive - par_offset
    ph = np.repeat(np.arange(P), m)
    t = np.arange(T)[None, :]
    counts = np.where(t >= first[ph][:, None], 1 + (t - first[ph][:, None]), 0)
    seen = counts >= 1
    F = (sc.fit_index - ease[ph] + rng.normal(0, 1, P * m))[:, None]
    learned = ((t >= F) & seen) | (t >= F + sc.delay)
    correct = rng.random((P * m, T)) < np.where(learned, sc.p_high, sc.p_low)
    margin = learned + sc.margin_effect * seen + rng.normal(0, 1, (P * m, T))
    cov = pd.DataFrame({
        "log_critical_freq": (z_c + rng.normal(0, sc.proxy_noise, P) if sc.proxy_noise else z_c)[ph],
        "log_context_freq": z_x[ph], "phrase_tokens": length[ph],
        "distance": rng.integers(0, 3, size=P)[ph].astype(np.float64),
        "log_bad_count": rng.normal(size=P)[ph],
    })
    steps = np.array([0] + [2 ** i for i in range(T - 1)], dtype=np.int64)
    return SimGroup(correct, margin.astype(np.float64), counts.astype(np.int64), cov,
                    np.array([f"p{k}" for k in par[ph]], dtype=object), np.array([f"c{k}" for k in ph], dtype=object),
                    steps, steps * 1000)


__all__ += ["GroupScenario", "SimGroup", "simulate_group"]
