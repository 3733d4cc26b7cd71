"""Attention heads: which heads carry the critical -> context dependency, how concentrated
that is, and a causal check by ablation.

* **attention** of head (l, h) at a checkpoint = mean over pairs of the score stage's attention
  weight from the query token (the later of critical/context word) to the earlier word, in the
  good sentence (``attention.npy[:, 0]``), NaNs (no context word) ignored.
* **concentration** over the L*H head values a: share of the top-k heads sum(top k a)/sum(a);
  Gini coefficient sum_i sum_j |a_i - a_j| / (2 m^2 mean(a)) (0 = all equal, -> 1 = one head);
  Shannon entropy in bits of p = a / sum(a) (log2(L*H) = uniform, 0 = one head).
  The top-k share has a floor of k/(L*H) (every head equal): :func:`topk_floor`.
* **distance-matched ratio** (:func:`distance_ratio`): attention / the same head's weight at the
  same query->key distances from the sentence's other positions, so a previous-token head is not
  mistaken for one that tracks the dependency.
* **adjacency**: where the critical and context words are adjacent, critical->context attention
  is previous-token attention; :func:`adjacent_pairs` flags those pairs so the attention can also
  be averaged over the non-adjacent pairs only (``attention_nonadjacent``).
* **ablation**: replace the output of chosen heads by its mean over the benchmark (mean-ablation,
  the default; zeroing as an option) -- a forward pre-hook on the attention output projection
  overwrites those heads' slices of its input -- and re-score; compare the top-k heads with
  random head sets matched by layer (as many heads from each layer as the top set has), drawn
  without repeats: every distinct set when there are at most ``repeats`` of them
  (:func:`n_layer_matched_sets`), else ``repeats`` distinct sets sampled without replacement.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

Head = tuple[int, int]  # (layer, head)


def head_attention(attention: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``[n, 2, L, H]`` attention -> ``[L, H]`` mean over pairs of the good sentence (NaN-aware)."""
    a = np.asarray(attention[:, 0] if rows is None else attention[rows, 0], dtype=np.float64)  # [n, L, H]
    with np.errstate(invalid="ignore"):
        counts = (~np.isnan(a)).sum(0)
        sums = np.nansum(a, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def distance_ratio(attention: np.ndarray, baseline: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``[L, H]`` mean over pairs of attention / its distance-matched baseline (the same head's
    weight at the same distances from the sentence's other positions; score stage), good
    sentence; pairs where either is missing or the baseline is 0 are ignored. 1 = the head gives
    the context word what it gives any token at that distance."""
    a = attention[:, 0] if rows is None else attention[rows, 0]
    b = baseline[:, 0] if rows is None else baseline[rows, 0]
    r = pair_ratio(a, b)
    with np.errstate(invalid="ignore"):
        counts = (~np.isnan(r)).sum(0)
        return np.where(counts > 0, np.nansum(r, axis=0) / np.maximum(counts, 1), np.nan)


def pair_ratio(attention: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Per pair and head, attention / distance-matched baseline; NaN where the baseline is 0 or missing."""
    a = np.asarray(attention, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / b, np.nan)


def topk_share(values: np.ndarray, k: int) -> float:
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())[::-1]
    total = v.sum()
    return float(v[:k].sum() / total) if total > 0 else float("nan")


def topk_floor(n_heads: int, k: int) -> float:
    """The top-k share when every head attends equally: k / (L*H)."""
    return min(k, n_heads) / n_heads if n_heads > 0 else float("nan")


def adjacent_pairs(phrases: pd.DataFrame) -> np.ndarray:
    """``[n]`` bool: the good sentence's critical and context words are adjacent (only whitespace or
    nothing between their character spans). False where a span is missing."""
    text = phrases["good"].fillna("").astype(str).to_numpy() if "good" in phrases.columns else None
    out = np.zeros(len(phrases), dtype=bool)
    if text is None or not {"critical_start", "critical_end", "context_start", "context_end"} <= set(phrases):
        return out
    cols = [pd.to_numeric(phrases[c], errors="coerce").to_numpy(dtype=np.float64)
            for c in ("critical_start", "critical_end", "context_start", "context_end")]
    cs, ce, xs, xe = cols
    for i in range(len(out)):
        if np.isnan([cs[i], ce[i], xs[i], xe[i]]).any() or cs[i] < 0 or xs[i] < 0:
            continue
        lo, hi = (int(xe[i]), int(cs[i])) if xe[i] <= cs[i] else (int(ce[i]), int(xs[i]))
        out[i] = lo <= hi and text[i][lo:hi].strip() == ""
    return out


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (sorted-rank formula)."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    m, total = v.size, v.sum()
    if m == 0 or total <= 0:
        return float("nan")
    ranks = np.arange(1, m + 1)
    return float(((2 * ranks - m - 1) * v).sum() / (m * total))


def entropy_bits(values: np.ndarray) -> float:
    v = np.asarray(values, dtype=np.float64).ravel()
    total = v.sum()
    if total <= 0:
        return float("nan")
    p = v[v > 0] / total
    return float(-(p * np.log2(p)).sum())


def top_heads(head_values: np.ndarray, k: int) -> list[Head]:
    """The k heads with the largest values, largest first. ``head_values`` ``[L, H]``."""
    flat = np.nan_to_num(np.asarray(head_values, dtype=np.float64), nan=-np.inf).ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    H = head_values.shape[1]
    return [(int(i // H), int(i % H)) for i in order]


def format_heads(heads: Sequence[Head]) -> str:
    return ",".join(f"L{layer}H{h}" for layer, h in heads)


def parse_heads(text: str) -> list[Head]:
    return [(int(a), int(b)) for a, b in re.findall(r"L(\d+)H(\d+)", text)]


@dataclass(frozen=True)
class Concentration:
    topk_share: float
    gini: float
    entropy: float
    top_heads: str


def concentration(head_values: np.ndarray, k: int) -> Concentration:
    v = np.nan_to_num(np.asarray(head_values, dtype=np.float64), nan=0.0)
    return Concentration(topk_share(v, k), gini(v), entropy_bits(v), format_heads(top_heads(head_values, k)))


def heads_frame(step: int, head_values: np.ndarray) -> pd.DataFrame:
    L, H = head_values.shape
    return pd.DataFrame({"step": np.int64(step), "layer": np.repeat(np.arange(L), H).astype(np.int64),
                         "head": np.tile(np.arange(H), L).astype(np.int64), "attention": head_values.ravel()})


# ---------------------------------------------------------------------------------------
# ablation
# ---------------------------------------------------------------------------------------
_OUT_PROJ = (
    re.compile(r"^transformer\.h\.(\d+)\.attn\.c_proj$"),  # GPT-2
    re.compile(r"^gpt_neox\.layers\.(\d+)\.attention\.dense$"),  # GPT-NeoX / Pythia
    re.compile(r"^model\.layers\.(\d+)\.self_attn\.o_proj$"),  # Llama, OLMo, Mistral, Qwen
)


def attention_output_projections(model: Any) -> tuple[list[Any], int, int]:
    """``(modules per layer, n_head, head_dim)``: the module whose input is the concatenation of
    the heads' outputs ``[batch, seq, n_head * head_dim]``, for GPT-2, GPT-NeoX and Llama-style
    models."""
    from grokscope.core.errors import GrokscopeError

    found: dict[int, Any] = {}
    for name, module in model.named_modules():
        for pattern in _OUT_PROJ:
            m = pattern.match(name)
            if m:
                found[int(m.group(1))] = module
    if not found:
        raise GrokscopeError(
            f"head ablation: no attention output projection found in {type(model).__name__} "
            "(supported: GPT-2 attn.c_proj, GPT-NeoX attention.dense, Llama self_attn.o_proj)"
        )
    cfg = model.config
    n_head = getattr(cfg, "n_head", None) or cfg.num_attention_heads
    d_model = getattr(cfg, "n_embd", None) or cfg.hidden_size
    head_dim = getattr(cfg, "head_dim", None) or d_model // n_head
    return [found[i] for i in sorted(found)], int(n_head), int(head_dim)


@contextlib.contextmanager
def record_head_means(model: Any) -> Iterator[list[Any]]:
    """Within the block, accumulate each layer's head outputs (the output projection's input);
    the yielded list holds, after the block, ``[n_head, head_dim]`` means per layer over every
    position of every sequence the model saw."""
    import torch

    modules, n_head, head_dim = attention_output_projections(model)
    sums: list[Any] = [None] * len(modules)
    counts = [0] * len(modules)
    means: list[Any] = []

    def make_hook(layer: int) -> Callable[..., None]:
        def hook(_module: Any, args: tuple[Any, ...]) -> None:
            x = args[0].detach().reshape(-1, n_head, head_dim).double()
            sums[layer] = x.sum(0) if sums[layer] is None else sums[layer] + x.sum(0)
            counts[layer] += x.shape[0]

        return hook

    handles = [m.register_forward_pre_hook(make_hook(i)) for i, m in enumerate(modules)]
    try:
        yield means
    finally:
        for h in handles:
            h.remove()
        means.extend(torch.zeros(n_head, head_dim, dtype=torch.float64) if c == 0 else s_ / c
                     for s_, c in zip(sums, counts))


@contextlib.contextmanager
def ablate_heads(model: Any, heads: Sequence[Head], means: Sequence[Any] | None = None) -> Iterator[None]:
    """Within the block, the outputs of ``heads`` (before the output projection) are replaced by
    ``means[layer][head]`` (mean-ablation; :func:`record_head_means`) or, without ``means``, zeroed."""
    modules, n_head, head_dim = attention_output_projections(model)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    handles = []

    def make_hook(layer: int, head_ids: list[int]) -> Callable[..., Any]:
        def hook(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
            x = args[0]  # [batch, seq, n_head * head_dim]
            x = x.clone()
            view = x.view(*x.shape[:-1], n_head, head_dim)  # [batch, seq, n_head, head_dim]
            if means is None:
                view[..., head_ids, :] = 0
            else:
                view[..., head_ids, :] = means[layer][head_ids].to(dtype=x.dtype, device=x.device)
            return (x, *args[1:])

        return hook

    try:
        for layer, head_ids in by_layer.items():
            handles.append(modules[layer].register_forward_pre_hook(make_hook(layer, sorted(head_ids))))
        yield
    finally:
        for h in handles:
            h.remove()


def _layer_pools(n_layer: int, n_head: int, top: Sequence[Head], disjoint: bool) -> tuple[list[list[Head]], list[int]]:
    excluded = set(top) if disjoint else set()
    pools = [[(layer, h) for h in range(n_head) if (layer, h) not in excluded] for layer in range(n_layer)]
    need = [sum(1 for lay, _ in set(top) if lay == layer) for layer in range(n_layer)]
    return pools, need


def _disjoint_possible(n_layer: int, n_head: int, top: Sequence[Head]) -> bool:
    pools, need = _layer_pools(n_layer, n_head, top, True)
    return all(len(p) >= k for p, k in zip(pools, need))


def n_layer_matched_sets(n_layer: int, n_head: int, top: Sequence[Head]) -> int:
    """Distinct reference sets with as many heads per layer as ``top``: disjoint from ``top``
    (prod C(H - k_l, k_l)) where that is possible, else any such set but ``top`` itself
    (prod C(H, k_l) - 1)."""
    disjoint = _disjoint_possible(n_layer, n_head, top)
    pools, need = _layer_pools(n_layer, n_head, top, disjoint)
    return int(np.prod([math.comb(len(p), k) for p, k in zip(pools, need)])) - (0 if disjoint else 1)


def random_head_sets(n_layer: int, n_head: int, top: Sequence[Head], repeats: int,
                     rng: np.random.Generator) -> list[list[Head]]:
    """Distinct layer-matched reference sets (:func:`n_layer_matched_sets`): all of them when
    there are at most ``repeats``, else ``repeats`` sampled without replacement (no set twice)."""
    disjoint = _disjoint_possible(n_layer, n_head, top)
    pools, need = _layer_pools(n_layer, n_head, top, disjoint)
    total = n_layer_matched_sets(n_layer, n_head, top)
    own = tuple(sorted(set(top)))
    if total <= repeats:
        per_layer = [list(itertools.combinations(p, k)) for p, k in zip(pools, need)]
        every = [sorted(h for part in combo for h in part) for combo in itertools.product(*per_layer)]
        return [x for x in every if tuple(x) != own]
    seen: set[tuple[Head, ...]] = {own}
    out: list[list[Head]] = []
    while len(out) < repeats:
        hs = tuple(sorted(p[i] for p, k in zip(pools, need) for i in rng.choice(len(p), k, replace=False)))
        if hs not in seen:
            seen.add(hs)
            out.append(list(hs))
    return out


def ablation_table(model: Any, accuracy_fn: Callable[[Any], float], step: int, top: Sequence[Head],
                   repeats: int, rng: np.random.Generator, mode: str = "mean") -> pd.DataFrame:
    """Accuracy with the top heads ablated and with layer-matched random sets (:func:`random_head_sets`).

    ``accuracy_fn(model) -> float`` scores the model (e.g. via :func:`score_accuracy_fn`);
    ``mode`` = ``mean`` (the heads' mean outputs over the unablated scoring pass) or ``zero``.
    ``delta_accuracy`` = accuracy - accuracy without ablation; ``n_sets`` = distinct random sets."""
    modules, n_head, _ = attention_output_projections(model)
    n_layer = len(modules)
    with record_head_means(model) as means:
        base = accuracy_fn(model)
    sets = random_head_sets(n_layer, n_head, top, repeats, rng)
    n_sets = n_layer_matched_sets(n_layer, n_head, top)
    rows = []
    conditions = [("top", 0, list(top))] + [("random", r, hs) for r, hs in enumerate(sets)]
    for condition, repeat, hs in conditions:
        with ablate_heads(model, hs, means if mode == "mean" else None):
            acc = accuracy_fn(model)
        rows.append({"step": int(step), "condition": condition, "repeat": repeat, "heads": format_heads(hs),
                     "accuracy": acc, "delta_accuracy": acc - base, "mode": mode, "n_sets": n_sets})
    return pd.DataFrame(rows)


def each_head_ablated(model: Any, fn: Callable[[Any], Any], mode: str = "mean",
                      progress: bool = False) -> tuple[Any, list[tuple[int, int, Any]]]:
    """``fn(model)`` unablated (the pass that records the heads' means) and with every head ablated
    on its own: ``(base, [(layer, head, value), ...])`` in layer-major order (L*H + 1 passes)."""
    from tqdm.auto import tqdm

    modules, n_head, _ = attention_output_projections(model)
    with record_head_means(model) as means:
        base = fn(model)
    out = []
    heads = [(layer, h) for layer in range(len(modules)) for h in range(n_head)]
    for layer, h in tqdm(heads, desc="head sweep", unit="head", disable=not progress):
        with ablate_heads(model, [(layer, h)], means if mode == "mean" else None):
            out.append((layer, h, fn(model)))
    return base, out


def single_head_table(model: Any, accuracy_fn: Callable[[Any], float], step: int,
                      mode: str = "mean") -> pd.DataFrame:
    """Every head ablated on its own (L*H re-scorings): ``step, layer, head, accuracy,
    delta_accuracy, mode``; the heads' means come from the unablated pass, as in :func:`ablation_table`."""
    base, ablated = each_head_ablated(model, accuracy_fn, mode)
    return pd.DataFrame([{"step": int(step), "layer": layer, "head": h, "accuracy": acc,
                          "delta_accuracy": acc - base, "mode": mode} for layer, h, acc in ablated])


def ablation_p_value(table: pd.DataFrame) -> float:
    """Share of random sets (with +1 smoothing) whose accuracy drop is at least the top heads'."""
    top = table.loc[table["condition"] == "top", "delta_accuracy"].iloc[0]
    rnd = table.loc[table["condition"] == "random", "delta_accuracy"].to_numpy()
    return float((1 + np.count_nonzero(rnd <= top)) / (1 + rnd.size))


def score_margin_fn(tokenizer: Any, pairs: pd.DataFrame, phrases: pd.DataFrame | None,
                    scoring: dict[str, Any] | None = None) -> Callable[[Any], tuple[np.ndarray, np.ndarray]]:
    """``fn(model) -> (margin, correct)`` per pair, re-scoring ``pairs`` with
    :func:`grokscope.score.pairs.score_pairs`.

    ``scoring`` holds the ``convention``/``reduction``/``region`` the study's scores used (their
    Parquet metadata), so ablated scores are comparable with them. The pairs are merged with
    their phrases and tokenized once; every call (one per ablated head set) reuses that encoding
    and runs only the forward passes."""
    from grokscope.score.encoding import encode_pairs, with_phrases
    from grokscope.score.pairs import ScoreOptions, score_pairs

    same = {k: v for k, v in (scoring or {}).items() if k in ("convention", "reduction", "region") and v}
    options = ScoreOptions(capture_hidden=False, capture_attention=False, progress=False, **same)
    merged = with_phrases(pairs, phrases)
    encoded = encode_pairs(tokenizer, merged, options.convention)

    def margins(model: Any) -> tuple[np.ndarray, np.ndarray]:
        t = score_pairs(model, tokenizer, merged, options=options, encoded=encoded).table
        margin = t["good_logprob"].to_numpy(np.float64) - t["bad_logprob"].to_numpy(np.float64)
        return margin, t["correct"].to_numpy(bool)

    return margins


def score_accuracy_fn(tokenizer: Any, pairs: pd.DataFrame, phrases: pd.DataFrame | None,
                      scoring: dict[str, Any] | None = None) -> Callable[[Any], float]:
    """An ``accuracy_fn`` for :func:`ablation_table`: the share of pairs :func:`score_margin_fn`
    scores correct."""
    margins = score_margin_fn(tokenizer, pairs, phrases, scoring)

    def accuracy(model: Any) -> float:
        return float(margins(model)[1].mean())

    return accuracy
