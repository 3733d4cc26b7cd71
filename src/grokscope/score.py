"""Score every checkpoint on every minimal pair, and capture what the analyses need.

For each pair the good and the bad sentence get a log-probability (sum, or mean, of token
log-probs over the sentence or over the critical phrase) under one of three conventions:

* ``lm_eval`` (default) — lm-evaluation-harness's BLiMP task: context ``""``, continuation
  ``" " + sentence`` (its target delimiter is a space). An empty context is replaced by the
  prefix token (BOS, or EOS when the tokenizer has no BOS), so the scored tokens are
  ``tokenize(" " + sentence)`` after that token.
* ``minicons`` — minicons ``sequence_score(..., bos_token=True)``: ``tokenize(sentence)`` after
  the BOS (or EOS) token.
* ``none`` — ``tokenize(sentence)`` with no prefix; the first token is not scored.

The same forward pass gives the hidden states of every layer at the critical token (the last
token of the critical word) and the attention weight from the later of critical/context word's
last token to the tokens of the earlier word, per layer and head.

Throughput: the sentences are laid out as rows of prefix trees — sorted lexicographically so
that sentences sharing a prefix (good and bad up to their first difference, the BOS token, a
sentence-initial name) are neighbours, each distinct prefix computed once, a tree-shaped mask
and per-node position ids keeping every sentence exactly as if it were alone. The last token
of a sentence (it predicts nothing) is not fed, the output projection runs only on nodes that
predict a scored token, rows are batched by length, padding is masked, so a pair's numbers do
not depend on what it is batched with. ``torch.inference_mode``; bf16 on GPU by default.

The numbers are written to ``STUDY/scores/step_XXXXXXXX.parquet`` (docs/CONTRACTS.md, "Scores").
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from grokscope.devices import resolve_device
from grokscope.errors import DataError, GrokscopeError, MissingStageError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from grokscope.checkpoints import Checkpoint
    from grokscope.config import StudyConfig
    from grokscope.store import Study

CONVENTIONS = ("lm_eval", "minicons", "none")
REDUCTIONS = ("sum", "mean")
REGIONS = ("sentence", "critical")
# Architectures whose CausalLM forward is exactly ``lm_head(base_model(...).last_hidden_state)``
# (no logit scaling / soft-capping), so logits can be computed only on the rows we need.
_SPLIT_HEAD_MODEL_TYPES = {
    "gpt2", "gpt_neox", "llama", "olmo", "olmo2", "mistral", "qwen2", "qwen3", "gptj", "gpt_neo",
    "opt", "phi", "phi3", "stablelm", "gpt_bigcode", "starcoder2", "pythia",
}
_SPAN_COLUMNS = (
    "phrase_start", "phrase_end", "bad_phrase_start", "bad_phrase_end",
    "critical_start", "critical_end", "bad_critical_start", "bad_critical_end",
    "context_start", "context_end", "bad_context_start", "bad_context_end",
)
_LOGIT_CHUNK_ROWS = 128  # rows of [rows, vocab] logits at once (128 x 50k floats stay in cache)


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------
@dataclass
class ScoreOptions:
    """How to score. ``batch_size`` is in pairs: each forward pass takes ``2 * batch_size``
    sentences, packed into prefix-tree rows of ``min(sentences_per_row, 2 * batch_size)``."""

    convention: str = "lm_eval"  # lm_eval | minicons | none
    reduction: str = "sum"  # sum | mean
    region: str = "sentence"  # sentence | critical
    batch_size: int = 64
    capture_hidden: bool = False
    capture_attention: bool = False
    hidden_pairs: int = 2000  # pairs whose hidden states are kept (seeded subsample); 0 = all
    seed: int = 0
    pack_prefix: bool = True  # compute a prefix shared by several sentences once
    sentences_per_row: int = 16  # sentences packed into one prefix-tree row
    progress: bool = True
    desc: str = "score"

    def validate(self) -> None:
        for name, value, allowed in (
            ("convention", self.convention, CONVENTIONS),
            ("reduction", self.reduction, REDUCTIONS),
            ("region", self.region, REGIONS),
        ):
            if value not in allowed:
                raise GrokscopeError(f"score: {name} must be one of {list(allowed)}, got {value!r}")
        if self.batch_size <= 0:
            raise GrokscopeError(f"score: batch_size must be positive, got {self.batch_size}")
        if self.hidden_pairs < 0:
            raise GrokscopeError(f"score: hidden_pairs must be >= 0, got {self.hidden_pairs}")


@dataclass
class ScoreStats:
    n_pairs: int = 0
    seconds: float = 0.0
    tokens_computed: int = 0  # positions run through the transformer body
    logit_rows: int = 0  # positions run through the output projection


@dataclass
class ScoreResult:
    """``table``: one row per pair (CONTRACTS "Scores" columns). ``hidden``: float16
    ``[n_captured, 2, n_layer+1, d_model]`` or None. ``attention``: float16
    ``[n_pairs, 2, n_layer, n_head]`` or None."""

    table: pd.DataFrame
    hidden: np.ndarray | None = None
    attention: np.ndarray | None = None
    stats: ScoreStats = field(default_factory=ScoreStats)


@dataclass
class EncodedSentence:
    """Token ids of one scored sentence (prefix token included) and the token positions that
    matter. Position ``j`` (>= 1) is scored given positions ``< j``."""

    ids: list[int]
    phrase_tokens: list[int]  # scored positions inside the critical phrase
    critical_token: int = -1  # last token of the critical word
    attn_query: int = -1  # last token of the later of critical/context word
    attn_keys: list[int] = field(default_factory=list)  # tokens of the earlier word

    @property
    def need(self) -> int:
        """Last position whose hidden state is needed (to predict, or to capture)."""
        return max(0, len(self.ids) - 2, self.critical_token, self.attn_query)


@dataclass
class PackedRow:
    """Several sentences in one row, as a prefix tree of their fed tokens: node ``r`` holds token
    ``ids[r]`` at position ``positions[r]`` and attends only to itself and its ancestors
    (``visible[r]``), so every sentence is computed exactly as if it were alone, while a prefix
    shared by several sentences (the BOS token, the words before good and bad differ, a name
    that starts many sentences) is computed once."""

    ids: np.ndarray  # [n] int64
    positions: np.ndarray  # [n] int64
    visible: np.ndarray  # [n, n] bool
    sentences: list[int]  # global sentence index: 2 * pair + side (0 good, 1 bad)
    paths: list[np.ndarray]  # per sentence: node of each fed position 0..need


# ---------------------------------------------------------------------------------------------
# Tokenisation
# ---------------------------------------------------------------------------------------------
def prefix_token_id(tokenizer: Any) -> int:
    """lm-evaluation-harness's ``prefix_token_id``: BOS, or EOS when there is no BOS."""
    if tokenizer.bos_token_id is not None:
        return int(tokenizer.bos_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise DataError("the tokenizer has neither a BOS nor an EOS token; use --convention none")


def encode_pairs(tokenizer: Any, pairs: pd.DataFrame, convention: str = "lm_eval") -> list[tuple[EncodedSentence, EncodedSentence]]:
    """Tokenise every pair under ``convention`` and map the critical phrase / word / context
    word character spans (columns of ``pairs`` when present, see CONTRACTS "Phrases") to token
    positions."""
    if convention not in CONVENTIONS:
        raise GrokscopeError(f"score: convention must be one of {list(CONVENTIONS)}, got {convention!r}")
    lead = " " if convention == "lm_eval" else ""
    prefix = prefix_token_id(tokenizer) if convention != "none" else None
    encoded: dict[str, list[Any]] = {}
    for side in ("good", "bad"):
        texts = [lead + s for s in pairs[side].astype(str).tolist()]
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        encoded[side] = list(zip(enc["input_ids"], enc["offset_mapping"], texts))
    spans = _span_arrays(pairs)
    shift = len(lead)
    out = []
    for i in range(len(pairs)):
        good = _encode_one(*encoded["good"][i], prefix, shift, spans, i, "good")
        bad = _encode_one(*encoded["bad"][i], prefix, shift, spans, i, "bad")
        out.append((good, bad))
    return out


def _span_arrays(pairs: pd.DataFrame) -> dict[str, np.ndarray]:
    n = len(pairs)
    spans = {}
    for col in _SPAN_COLUMNS:
        if col in pairs.columns:
            spans[col] = pairs[col].fillna(-1).to_numpy(dtype=np.int64)
        else:
            spans[col] = np.full(n, -1, dtype=np.int64)
    if "supported" in pairs.columns:
        unsupported = ~pairs["supported"].fillna(False).to_numpy(dtype=bool)
        for col in spans:
            spans[col] = np.where(unsupported, -1, spans[col])
    return spans


def _encode_one(ids: list[int], offsets: list[tuple[int, int]], text: str, prefix: int | None, shift: int,
                spans: dict[str, np.ndarray], i: int, side: str) -> EncodedSentence:
    ids = list(ids)
    offsets = list(offsets)
    if prefix is not None:
        if ids and ids[0] == prefix:
            pass  # lm-eval: the text already starts with the prefix token; it becomes the context
        else:
            ids = [prefix] + ids
            offsets = [(0, 0)] + offsets
    # character extent of each token without its leading whitespace
    starts = np.empty(len(offsets), dtype=np.int64)
    ends = np.empty(len(offsets), dtype=np.int64)
    for k, (s, e) in enumerate(offsets):
        while s < e and text[s].isspace():
            s += 1
        starts[k], ends[k] = s, e
    if prefix is not None and ids and offsets[0] == (0, 0):
        starts[0] = ends[0] = -1  # the prefix token covers no character

    pre = "" if side == "good" else "bad_"

    def tokens_in(name: str) -> np.ndarray:
        a, b = spans[f"{pre}{name}_start"][i], spans[f"{pre}{name}_end"][i]
        if a < 0 or b <= a:
            return np.empty(0, dtype=np.int64)
        a, b = a + shift, b + shift
        return np.nonzero((np.maximum(starts, a) < np.minimum(ends, b)) & (ends > starts))[0]

    phrase = tokens_in("phrase")
    critical = tokens_in("critical")
    context = tokens_in("context")
    enc = EncodedSentence(ids=ids, phrase_tokens=[int(t) for t in phrase if t >= 1])
    if len(critical):
        enc.critical_token = int(critical[-1])
        if len(context):
            if context[-1] < critical[0]:  # context word first: query = critical token
                enc.attn_query, enc.attn_keys = int(critical[-1]), [int(t) for t in context]
            elif critical[-1] < context[0]:  # critical word first: query = last context token
                enc.attn_query, enc.attn_keys = int(context[-1]), [int(t) for t in critical]
    return enc


def pack_rows(sentences: list[EncodedSentence], sentences_per_row: int = 16,
              share_prefix: bool = True) -> list[PackedRow]:
    """Lay sentences out as rows of prefix trees (see :class:`PackedRow`).

    Sentences are sorted lexicographically by their fed tokens (positions ``0..need``), so the
    ones sharing a prefix are neighbours, then cut into rows of ``sentences_per_row``; in a
    row, each sentence reuses the nodes of its longest common prefix with the previous one
    (with ``share_prefix=False`` no node is shared: a block-diagonal row)."""
    fed = [s.ids[: s.need + 1] for s in sentences]
    order = sorted(range(len(sentences)), key=lambda k: fed[k])
    rows = []
    for a in range(0, len(order), sentences_per_row):
        members = order[a : a + sentences_per_row]
        ids: list[int] = []
        positions: list[int] = []
        parent: list[int] = []
        paths: list[np.ndarray] = []
        prev: list[int] | None = None
        for k in members:
            f = fed[k]
            lcp = 0
            if share_prefix and prev is not None:
                limit = min(len(prev), len(f))
                while lcp < limit and prev[lcp] == f[lcp]:
                    lcp += 1
            path = list(paths[-1][:lcp]) if lcp else []
            for j in range(lcp, len(f)):
                parent.append(path[-1] if path else -1)
                path.append(len(ids))
                ids.append(f[j])
                positions.append(j)
            paths.append(np.asarray(path, dtype=np.int64))
            prev = f
        n = len(ids)
        visible = np.zeros((n, n), dtype=bool)
        for r in range(n):
            if parent[r] >= 0:
                visible[r] = visible[parent[r]]
            visible[r, r] = True
        rows.append(PackedRow(np.asarray(ids, dtype=np.int64), np.asarray(positions, dtype=np.int64), visible,
                              list(members), paths))
    return rows


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
def score_pairs(
    model: Any,
    tokenizer: Any,
    pairs: pd.DataFrame,
    phrases: pd.DataFrame | None = None,
    options: ScoreOptions | None = None,
    encoded: list[tuple[EncodedSentence, EncodedSentence]] | None = None,
    hidden_out: np.ndarray | None = None,
) -> ScoreResult:
    """Score ``pairs`` (columns ``uid, pair_id, good, bad``) with a loaded causal LM.

    ``phrases`` (CONTRACTS "Phrases"; aligned on ``uid, pair_id``) gives the critical phrase,
    word and context spans; without it, span columns already in ``pairs`` are used, and
    otherwise the critical columns are NaN and nothing is captured. Forward hooks registered
    on the model's modules (e.g. to ablate attention heads) stay in effect. ``encoded`` reuses
    a previous :func:`encode_pairs` (same tokenizer and convention); ``hidden_out`` is an
    array (e.g. a memmap) of the right shape to fill instead of allocating one.
    """
    import pandas as pd
    import torch

    options = options or ScoreOptions()
    options.validate()
    pairs = with_phrases(pairs, phrases)
    if encoded is None:
        encoded = encode_pairs(tokenizer, pairs, options.convention)
    if len(encoded) != len(pairs):
        raise GrokscopeError(f"score: {len(encoded)} encoded pairs for {len(pairs)} pairs")
    geometry = model_geometry(model)
    _check_ids_and_lengths(encoded, pairs, geometry)

    n = len(pairs)
    capture_hidden = options.capture_hidden
    capture_attention = options.capture_attention
    hidden_row = _hidden_rows(encoded, options) if capture_hidden else np.full(n, -1, dtype=np.int32)
    n_captured = int((hidden_row >= 0).sum())
    hidden = None
    if capture_hidden:
        shape = (n_captured, 2, geometry.n_layer + 1, geometry.d_model)
        if hidden_out is not None:
            if tuple(hidden_out.shape) != shape:
                raise GrokscopeError(f"score: hidden_out has shape {hidden_out.shape}, expected {shape}")
            hidden = hidden_out
        else:
            hidden = np.zeros(shape, dtype=np.float16)
    attention = None
    if capture_attention:
        attention = np.full((n, 2, geometry.n_layer, geometry.n_head), np.nan, dtype=np.float16)

    sentences = [enc for pair in encoded for enc in pair]  # sentence 2*i + side
    per_row = max(1, min(options.sentences_per_row, 2 * options.batch_size))
    rows = pack_rows(sentences, per_row, options.pack_prefix)
    rows.sort(key=lambda r: -len(r.ids))  # longest first (an out-of-memory shows at once), similar lengths together
    rows_per_batch = max(1, round(2 * options.batch_size / per_row))
    sums = np.zeros((n, 2), dtype=np.float64)
    counts = np.zeros((n, 2), dtype=np.int64)
    crit = np.full((n, 2), np.nan, dtype=np.float64)
    phrase_lps: list[list[np.ndarray]] = [[np.empty(0, np.float32), np.empty(0, np.float32)] for _ in range(n)]
    stats = ScoreStats(n_pairs=n)

    device = next(model.parameters()).device
    previous_attn = _set_attention_impl(model, "eager") if capture_attention else None
    bar = _progress(n, options)
    done_sentences = 0
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), rows_per_batch):
                batch = rows[start : start + rows_per_batch]
                flat_rows, targets, owner = _batch_targets(batch, sentences)
                want_hidden = capture_hidden and any(hidden_row[s // 2] >= 0 for r in batch for s in r.sentences)
                out = _forward_batch(model, batch, device, geometry, want_hidden=want_hidden,
                                     want_attention=capture_attention, flat_rows=flat_rows, targets=targets)
                stats.tokens_computed += out.n_tokens
                stats.logit_rows += out.logit_rows
                _collect_logprobs(out.logprobs, owner, sentences, sums, counts, crit, phrase_lps)
                if out.hidden is not None and hidden is not None:
                    _collect_hidden(out, batch, sentences, hidden_row, hidden)
                if out.attention is not None and attention is not None:
                    _collect_attention(out, batch, sentences, attention)
                done_sentences += sum(len(r.sentences) for r in batch)
                if bar is not None:
                    bar.update(done_sentences // 2 - bar.n)
    finally:
        if bar is not None:
            bar.close()
        if previous_attn is not None:
            _set_attention_impl(model, previous_attn)
    stats.seconds = time.perf_counter() - t0

    table = _result_table(pairs, encoded, sums, counts, crit, phrase_lps, hidden_row, options, pd)
    return ScoreResult(table=table, hidden=hidden, attention=attention, stats=stats)


def with_phrases(pairs: pd.DataFrame, phrases: pd.DataFrame | None) -> pd.DataFrame:
    for col in ("uid", "pair_id", "good", "bad"):
        if col not in pairs.columns:
            raise DataError(f"score: pairs table has no '{col}' column (expected uid, pair_id, good, bad)")
    pairs = pairs.reset_index(drop=True)
    if phrases is None:
        return pairs
    keep = [c for c in ("supported", "good", *_SPAN_COLUMNS) if c in phrases.columns]
    ph = phrases[["uid", "pair_id", *keep]].rename(columns={"good": "_phrase_good"})
    base = pairs.drop(columns=[c for c in keep if c in pairs.columns and c != "good"])
    merged = base.merge(ph, on=["uid", "pair_id"], how="left", validate="one_to_one", sort=False)
    if "_phrase_good" in merged.columns:
        present = merged["_phrase_good"].notna()
        mismatch = present & (merged["_phrase_good"] != merged["good"])
        if mismatch.any():
            r = merged[mismatch].iloc[0]
            raise DataError(
                f"phrases table does not match the benchmark: pair ({r['uid']}, {r['pair_id']}) has good "
                f"sentence {r['good']!r} in the benchmark but {r['_phrase_good']!r} in the phrases table; "
                "re-run `grokscope phrases` on this benchmark"
            )
        merged = merged.drop(columns=["_phrase_good"])
    if "supported" in merged.columns:
        merged["supported"] = merged["supported"].astype("boolean").fillna(False).astype(bool)
    return merged


@dataclass
class ModelGeometry:
    n_layer: int
    n_head: int
    d_model: int
    vocab_rows: int  # rows of the input embedding
    context: int | None  # max positions (None = unbounded)
    model_type: str
    split_head: bool  # logits only on needed rows
    dtype: Any


def model_geometry(model: Any) -> ModelGeometry:
    cfg = model.config
    ctx = None
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            ctx = value
            break
    emb = model.get_input_embeddings()
    model_type = getattr(cfg, "model_type", "")
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    split = (
        model_type in _SPLIT_HEAD_MODEL_TYPES
        and base is not None and base is not model and model.get_output_embeddings() is not None
    )
    return ModelGeometry(
        n_layer=int(cfg.num_hidden_layers), n_head=int(cfg.num_attention_heads),
        d_model=int(cfg.hidden_size), vocab_rows=int(emb.weight.shape[0]), context=ctx,
        model_type=model_type, split_head=split, dtype=next(model.parameters()).dtype,
    )


def _check_ids_and_lengths(encoded: list[tuple[EncodedSentence, EncodedSentence]], pairs: pd.DataFrame,
                           geometry: ModelGeometry) -> None:
    for i, (g, b) in enumerate(encoded):
        for side, enc in (("good", g), ("bad", b)):
            if not enc.ids:
                raise DataError(f"pair ({pairs['uid'].iat[i]}, {pairs['pair_id'].iat[i]}): the {side} sentence is empty")
            top = max(enc.ids)
            if top >= geometry.vocab_rows:
                raise DataError(
                    f"pair ({pairs['uid'].iat[i]}, {pairs['pair_id'].iat[i]}): token id {top} in the {side} "
                    f"sentence is outside the model's embedding ({geometry.vocab_rows} rows): the tokenizer "
                    "does not match the model; pass the model's own tokenizer with --tokenizer"
                )
            if geometry.context is not None and len(enc.ids) > geometry.context:
                raise DataError(
                    f"pair ({pairs['uid'].iat[i]}, {pairs['pair_id'].iat[i]}): the {side} sentence is "
                    f"{len(enc.ids)} tokens (prefix included), longer than the model's context of "
                    f"{geometry.context}; shorten or drop this pair"
                )


def _hidden_rows(encoded: list[tuple[EncodedSentence, EncodedSentence]], options: ScoreOptions) -> np.ndarray:
    n = len(encoded)
    eligible = np.array([i for i, (g, b) in enumerate(encoded) if g.critical_token >= 0 and b.critical_token >= 0],
                        dtype=np.int64)
    rows = np.full(n, -1, dtype=np.int32)
    k = len(eligible) if options.hidden_pairs == 0 else min(options.hidden_pairs, len(eligible))
    if k:
        chosen = np.sort(np.random.default_rng(options.seed).choice(eligible, size=k, replace=False))
        rows[chosen] = np.arange(k, dtype=np.int32)
    return rows


def _set_attention_impl(model: Any, impl: str) -> str | None:
    """Switch the attention implementation (eager returns weights); return the previous one."""
    previous = getattr(model.config, "_attn_implementation", None)
    if previous == impl:
        return None
    try:
        model.set_attn_implementation(impl)
    except Exception as e:  # noqa: BLE001
        raise GrokscopeError(f"score: cannot switch the model to {impl} attention (needed for attention weights): {e}") from None
    return previous


def _progress(n: int, options: ScoreOptions) -> Any:
    if not options.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=n, desc=options.desc, unit="pair", dynamic_ncols=True, leave=False, file=sys.stderr)


@dataclass
class _BatchOutput:
    logprobs: np.ndarray  # [n_targets] float64: log p(target | row)
    n_tokens: int  # positions run through the transformer body
    logit_rows: int  # positions run through the output projection
    hidden: Any = None  # tuple of [batch, T, d_model] tensors
    attention: Any = None  # tuple of [batch, n_head, T, T] tensors


def _batch_targets(batch: list[PackedRow], sentences: list[EncodedSentence]
                   ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """For every scored token of every sentence in the batch: the flat node (``k*T + node``)
    whose output predicts it, and its id; plus ``(sentence, n_tokens)`` in the same order."""
    width = max(len(r.ids) for r in batch)
    flat_rows, targets, owner = [], [], []
    for k, row in enumerate(batch):
        for s, path in zip(row.sentences, row.paths):
            enc = sentences[s]
            m = len(enc.ids) - 1
            if m <= 0:
                continue
            flat_rows.append(k * width + path[:m])  # position j-1 predicts token j
            targets.append(np.asarray(enc.ids[1:], dtype=np.int64))
            owner.append((s, m))
    if not flat_rows:
        return np.empty(0, np.int64), np.empty(0, np.int64), owner
    return np.concatenate(flat_rows), np.concatenate(targets), owner


def _forward_batch(model: Any, rows: list[PackedRow], device: Any, geometry: ModelGeometry,
                   want_hidden: bool, want_attention: bool, flat_rows: np.ndarray,
                   targets: np.ndarray) -> _BatchOutput:
    import torch

    batch = len(rows)
    width = max(len(r.ids) for r in rows)
    ids = np.zeros((batch, width), dtype=np.int64)
    pos = np.zeros((batch, width), dtype=np.int64)
    visible = np.zeros((batch, width, width), dtype=bool)
    visible[:, np.arange(width), np.arange(width)] = True  # padding sees itself: no empty softmax row
    for k, r in enumerate(rows):
        n = len(r.ids)
        ids[k, :n] = r.ids
        pos[k, :n] = r.positions
        visible[k, :n, :n] = r.visible
    mask = torch.zeros(batch, 1, width, width, dtype=geometry.dtype)  # [batch, 1, T, T] additive
    mask.masked_fill_(torch.from_numpy(~visible)[:, None], torch.finfo(geometry.dtype).min)
    kwargs = dict(input_ids=torch.from_numpy(ids).to(device), attention_mask=mask.to(device),
                  position_ids=torch.from_numpy(pos).to(device), use_cache=False,
                  output_hidden_states=want_hidden, output_attentions=want_attention)

    # nodes whose output predicts a scored token, and each target's index among them
    needed, target_row = np.unique(flat_rows, return_inverse=True)
    needed_t = torch.from_numpy(needed).to(device)
    if geometry.split_head:
        out = getattr(model, model.base_model_prefix)(**kwargs)
        h = out.last_hidden_state.reshape(batch * width, -1)[needed_t]  # [n_needed, d_model]
        head = model.get_output_embeddings()
        project = lambda a, b: head(h[a:b]).float()  # noqa: E731  [chunk, vocab]
    else:
        out = model(**kwargs)
        logits = out.logits.reshape(batch * width, -1)[needed_t]  # [n_needed, vocab]
        project = lambda a, b: logits[a:b].float()  # noqa: E731
    lp = np.empty(len(targets), dtype=np.float64)
    for a in range(0, len(needed), _LOGIT_CHUNK_ROWS):
        b = min(a + _LOGIT_CHUNK_ROWS, len(needed))
        chunk = project(a, b)  # [chunk, vocab] float32
        sel = np.nonzero((target_row >= a) & (target_row < b))[0]
        r = torch.from_numpy(target_row[sel] - a).to(device)
        t = torch.from_numpy(targets[sel]).to(device)
        target_logit = chunk[r, t]  # gathered before the in-place log-sum-exp below
        lse = _logsumexp_inplace(chunk)  # [chunk]
        lp[sel] = (target_logit - lse[r]).double().cpu().numpy()
    return _BatchOutput(
        logprobs=lp, n_tokens=int(sum(len(r.ids) for r in rows)), logit_rows=int(len(needed)),
        hidden=out.hidden_states if want_hidden else None,
        attention=out.attentions if want_attention else None,
    )


def _logsumexp_inplace(x: torch.Tensor) -> torch.Tensor:
    """``logsumexp(x, -1)`` for ``x`` [rows, vocab], overwriting ``x`` (no [rows, vocab]
    temporaries: about 2.5x faster than ``torch.logsumexp`` on CPU, identical result)."""
    m = x.amax(dim=-1, keepdim=True)  # [rows, 1]
    x.sub_(m).exp_()
    return x.sum(dim=-1).log_() + m[:, 0]


def _collect_logprobs(lp: np.ndarray, owner: list[tuple[int, int]], sentences: list[EncodedSentence],
                      sums: np.ndarray, counts: np.ndarray, crit: np.ndarray,
                      phrase_lps: list[list[np.ndarray]]) -> None:
    at = 0
    for s, m in owner:
        token_lp = lp[at : at + m]  # log p(token j | < j) for j = 1..m
        at += m
        i, side = divmod(s, 2)
        enc = sentences[s]
        sums[i, side] = token_lp.sum()
        counts[i, side] = m
        if enc.phrase_tokens:
            sel = token_lp[np.asarray(enc.phrase_tokens) - 1]
            crit[i, side] = sel.sum()
            phrase_lps[i][side] = sel.astype(np.float32)


def _collect_hidden(out: _BatchOutput, batch: list[PackedRow], sentences: list[EncodedSentence],
                    hidden_row: np.ndarray, hidden: np.ndarray) -> None:
    import torch

    picks = [(k, s, path) for k, row in enumerate(batch) for s, path in zip(row.sentences, row.paths)
             if hidden_row[s // 2] >= 0]
    if not picks:
        return
    stacked = torch.stack(out.hidden, dim=0)  # [n_layer+1, batch, T, d_model]
    b_idx = torch.tensor([k for k, _, _ in picks])
    t_idx = torch.tensor([int(path[sentences[s].critical_token]) for _, s, path in picks])
    vecs = stacked[:, b_idx, t_idx, :].float().cpu().numpy().transpose(1, 0, 2)  # [picks, n_layer+1, d_model]
    for (_, s, _), v in zip(picks, vecs):
        hidden[hidden_row[s // 2], s % 2] = v.astype(np.float16)


def _collect_attention(out: _BatchOutput, batch: list[PackedRow], sentences: list[EncodedSentence],
                       attention: np.ndarray) -> None:
    import torch

    picks = [(k, s, path) for k, row in enumerate(batch) for s, path in zip(row.sentences, row.paths)
             if sentences[s].attn_query >= 0]
    if not picks:
        return
    stacked = torch.stack(out.attention, dim=0)  # [n_layer, batch, n_head, T, T]
    width = stacked.shape[-1]
    b_idx = torch.tensor([k for k, _, _ in picks])
    q_idx = torch.tensor([int(path[sentences[s].attn_query]) for _, s, path in picks])
    key_mask = torch.zeros(len(picks), width, dtype=torch.float32)  # [picks, T]: nodes of the earlier word
    for p, (_, s, path) in enumerate(picks):
        key_mask[p, path[sentences[s].attn_keys]] = 1.0
    weights = stacked[:, b_idx, :, q_idx, :].float().cpu()  # [picks, n_layer, n_head, T]
    summed = (weights * key_mask[:, None, None, :]).sum(-1).numpy()  # [picks, n_layer, n_head]
    for (_, s, _), a in zip(picks, summed):
        attention[s // 2, s % 2] = a.astype(np.float16)


def _result_table(pairs: pd.DataFrame, encoded: list[tuple[EncodedSentence, EncodedSentence]], sums: np.ndarray,
                  counts: np.ndarray, crit: np.ndarray, phrase_lps: list[list[np.ndarray]],
                  hidden_row: np.ndarray, options: ScoreOptions, pd: Any) -> pd.DataFrame:
    if options.region == "sentence":
        value, ntok = sums.copy(), counts.copy()
    else:
        value = crit.copy()  # NaN where the pair has no critical phrase
        ntok = np.array([[len(g.phrase_tokens), len(b.phrase_tokens)] for g, b in encoded], dtype=np.int64).reshape(-1, 2)
    if options.reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(ntok > 0, value / np.maximum(ntok, 1), np.nan)
    correct = value[:, 0] > value[:, 1]  # NaN compares False
    return pd.DataFrame({
        "uid": pairs["uid"].to_numpy(),
        "pair_id": pairs["pair_id"].to_numpy(),
        "good_logprob": value[:, 0].astype(np.float64),
        "bad_logprob": value[:, 1].astype(np.float64),
        "good_ntokens": ntok[:, 0].astype(np.int64),
        "bad_ntokens": ntok[:, 1].astype(np.int64),
        "correct": correct,
        "good_critical_logprob": crit[:, 0],
        "bad_critical_logprob": crit[:, 1],
        "good_phrase_token_logprobs": [p[0] for p in phrase_lps],
        "bad_phrase_token_logprobs": [p[1] for p in phrase_lps],
        "hidden_row": hidden_row.astype(np.int32),
    })


# ---------------------------------------------------------------------------------------------
# Checkpoints → score files
# ---------------------------------------------------------------------------------------------
@dataclass
class ScoreJob:
    """Everything one ``score`` invocation needs (built from CLI flags or a study config)."""

    checkpoints: list[Checkpoint]
    pairs: pd.DataFrame
    benchmark: str
    benchmark_fingerprint: str
    options: ScoreOptions
    tokenizer: str = ""  # override; default: the checkpoint's own tokenizer
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0
    force: bool = False


@dataclass
class CheckpointSummary:
    step: int
    tokens_seen: int
    checkpoint: str
    status: str  # "scored" | "skipped (done)" | "failed"
    accuracy: float = float("nan")
    seconds: float = 0.0
    pairs_per_s: float = 0.0


def score_checkpoints(job: ScoreJob, study: Study, errors: list[str] | None = None) -> list[CheckpointSummary]:
    """Score every checkpoint of ``job`` into ``study.scores_dir``, skipping those already done.

    A checkpoint that fails on input (unloadable, mismatched tokenizer, too-long pair) is
    reported in ``errors`` and the others are still scored; finished files are never touched.
    """
    import torch

    if job.threads > 0:
        torch.set_num_threads(job.threads)
    errors = [] if errors is None else errors
    device = resolve_device(job.device, "score --device")
    summaries = []
    encode_cache: dict[tuple[str, str], list[tuple[EncodedSentence, EncodedSentence]]] = {}
    for ckpt in job.checkpoints:
        meta_expected = {"convention": job.options.convention, "reduction": job.options.reduction,
                         "region": job.options.region, "benchmark_fingerprint": job.benchmark_fingerprint}
        try:
            if not job.force and _already_scored(study, ckpt, meta_expected, job.options):
                summaries.append(_summary_from_disk(study, ckpt))
                continue
            summaries.append(_score_one(job, study, ckpt, device, encode_cache))
        except GrokscopeError as e:
            errors.append(f"{ckpt.label} (step {ckpt.step}): {e}")
            summaries.append(CheckpointSummary(ckpt.step, ckpt.tokens_seen, ckpt.label, "failed"))
    return summaries


def _torch_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _already_scored(study: Study, ckpt: Checkpoint, expected: dict[str, Any], options: ScoreOptions) -> bool:
    from grokscope.store import read_parquet_metadata

    path = study.score_path(ckpt.step)
    if not path.exists():
        return False
    meta = read_parquet_metadata(path)
    differing = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if differing:
        detail = ", ".join(f"{k}: {a!r} on disk vs {b!r} now" for k, (a, b) in differing.items())
        raise DataError(f"{path}: already scored with different settings ({detail}); "
                        "use another --out or --force to re-score")
    if options.capture_hidden and not study.hidden_path(ckpt.step).exists():
        return False
    if options.capture_attention and not study.attention_path(ckpt.step).exists():
        return False
    return True


def _summary_from_disk(study: Study, ckpt: Checkpoint) -> CheckpointSummary:
    import pyarrow.parquet as pq

    correct = pq.read_table(study.score_path(ckpt.step), columns=["correct"]).column(0).to_numpy()
    acc = float(np.mean(correct)) if len(correct) else float("nan")
    return CheckpointSummary(ckpt.step, ckpt.tokens_seen, ckpt.label, "skipped (done)", acc)


def load_model(ckpt: Checkpoint, device: str = "cpu", dtype: str = "auto", attention: bool = False) -> Any:
    """``AutoModelForCausalLM`` for a checkpoint, in eval mode; eager attention only when
    attention weights are wanted (sdpa otherwise)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype, device),
                              "attn_implementation": "eager" if attention else "sdpa"}
    if ckpt.revision:
        kwargs["revision"] = ckpt.revision
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(ckpt.path, **kwargs)
        except ValueError as e:  # an architecture without sdpa support: fall back to eager
            if kwargs["attn_implementation"] != "sdpa" or "sdpa" not in str(e).lower():
                raise
            kwargs["attn_implementation"] = "eager"
            model = AutoModelForCausalLM.from_pretrained(ckpt.path, **kwargs)
    except Exception as e:  # noqa: BLE001 - any loading failure is an input problem here
        raise DataError(f"{ckpt.label}: could not load the model: {type(e).__name__}: {e}") from None
    fuse_activations(model)
    return model.to(device).eval()


def fuse_activations(model: Any) -> int:
    """Swap transformers' Python tanh-GELU (``gelu_new``, GPT-2's activation: five elementwise
    kernels) for the same function as one fused kernel (``gelu_pytorch_tanh``); outputs differ
    by < 1e-6 and the MLP runs 2x faster on CPU. Returns how many modules were swapped."""
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is NewGELUActivation:
                setattr(parent, name, GELUTanh())
                swapped += 1
    return swapped


def load_checkpoint_tokenizer(ckpt: Checkpoint, override: str = "") -> Any:
    from grokscope.tokenizer import load_tokenizer

    if override:
        return load_tokenizer(override)
    try:
        return load_tokenizer(ckpt.path)
    except DataError as e:
        raise DataError(f"{e}; pass the model's tokenizer with --tokenizer") from None


def check_tokenizer_matches(tokenizer: Any, model: Any, where: str) -> None:
    """The tokenizer's ids must index the model's embedding (ids >= rows would crash or,
    worse, silently read another token's row on some devices)."""
    from grokscope.tokenizer import vocab_size

    rows = model.get_input_embeddings().weight.shape[0]
    n = vocab_size(tokenizer)
    if n > rows:
        raise DataError(
            f"{where}: the tokenizer has {n} ids but the model's embedding has {rows} rows; "
            "the tokenizer does not belong to this model (pass the right one with --tokenizer)"
        )


def _score_one(job: ScoreJob, study: Study, ckpt: Checkpoint, device: str,
               encode_cache: dict[tuple[str, str], list[tuple[EncodedSentence, EncodedSentence]]]) -> CheckpointSummary:
    from grokscope.store import commit_npy, open_npy_for_writing, write_npy, write_parquet
    from grokscope.tokenizer import tokenizer_fingerprint

    t0 = time.perf_counter()
    tokenizer = load_checkpoint_tokenizer(ckpt, job.tokenizer)
    model = load_model(ckpt, device, job.dtype, attention=job.options.capture_attention)
    check_tokenizer_matches(tokenizer, model, ckpt.label)
    fingerprint = tokenizer_fingerprint(tokenizer)
    key = (fingerprint, job.options.convention)
    if key not in encode_cache:
        encode_cache[key] = encode_pairs(tokenizer, job.pairs, job.options.convention)
    encoded = encode_cache[key]
    geometry = model_geometry(model)
    options = replace(job.options, desc=f"step {ckpt.step}")
    hidden_out = None
    if options.capture_hidden:
        n_captured = int((_hidden_rows(encoded, options) >= 0).sum())
        hidden_out = open_npy_for_writing(study.hidden_path(ckpt.step),
                                          (n_captured, 2, geometry.n_layer + 1, geometry.d_model), np.float16)
    result = score_pairs(model, tokenizer, job.pairs, options=options, encoded=encoded, hidden_out=hidden_out)
    # arrays first, the Parquet last: its presence marks the checkpoint as done
    if hidden_out is not None:
        hidden_out.flush()
        result.hidden = None
        del hidden_out
        commit_npy(study.hidden_path(ckpt.step))
    if result.attention is not None:
        write_npy(study.attention_path(ckpt.step), result.attention)
    metadata = {
        "step": ckpt.step, "tokens_seen": ckpt.tokens_seen, "checkpoint": ckpt.path, "revision": ckpt.revision,
        "model_type": geometry.model_type, "n_layer": geometry.n_layer, "n_head": geometry.n_head,
        "d_model": geometry.d_model, "tokenizer_fingerprint": fingerprint,
        "benchmark": job.benchmark, "benchmark_fingerprint": job.benchmark_fingerprint,
        "convention": options.convention, "reduction": options.reduction, "region": options.region,
        "dtype": str(geometry.dtype).replace("torch.", ""),
        "hidden": options.capture_hidden, "attention": options.capture_attention,
        "hidden_pairs": options.hidden_pairs, "seed": options.seed,
    }
    write_parquet(study.score_path(ckpt.step), result.table, metadata=metadata)
    seconds = time.perf_counter() - t0
    acc = float(result.table["correct"].mean()) if len(result.table) else float("nan")
    rate = result.stats.n_pairs / result.stats.seconds if result.stats.seconds > 0 else 0.0
    return CheckpointSummary(ckpt.step, ckpt.tokens_seen, ckpt.label, "scored", acc, seconds, rate)


# ---------------------------------------------------------------------------------------------
# Benchmark pairs
# ---------------------------------------------------------------------------------------------
def load_benchmark(path: str, paradigms: list[str] | None = None, pairs_per_paradigm: int = 0, seed: int = 0,
                   skip_invalid: bool = False) -> tuple[pd.DataFrame, str]:
    """Pairs (benchmark order) and their fingerprint, via :mod:`grokscope.data.benchmark`."""
    from grokscope.data.benchmark import benchmark_fingerprint, load_pairs

    df = load_pairs(path, paradigms=paradigms or None, pairs_per_paradigm=pairs_per_paradigm, seed=seed,
                    skip_invalid=skip_invalid)
    return df, benchmark_fingerprint(df)


# ---------------------------------------------------------------------------------------------
# CLI and stage API
# ---------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from grokscope.config import ScoreSection

    d = ScoreSection()
    parser.add_argument("--checkpoints", nargs="+", required=True, metavar="SPEC",
                        help="HF model dirs, globs, grokscope study/run dirs, or hub ids like "
                             "EleutherAI/pythia-160m@step1000")
    parser.add_argument("--benchmark", default="", help="BLiMP dir / pairs jsonl (default: the pairs of STUDY/phrases.parquet)")
    parser.add_argument("--phrases", default="", help="phrases.parquet with critical spans (default: STUDY/phrases.parquet if present)")
    parser.add_argument("--out", required=True, help="study directory; scores go to OUT/scores/")
    parser.add_argument("--tokenizer", default="", help="tokenizer to use instead of each checkpoint's own")
    parser.add_argument("--convention", choices=CONVENTIONS, default=d.convention,
                        help="lm_eval: ' '+sentence after BOS/EOS (default); minicons: sentence after BOS/EOS; none: no prefix")
    parser.add_argument("--reduction", choices=REDUCTIONS, default=d.reduction)
    parser.add_argument("--region", choices=REGIONS, default=d.region)
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="pairs per forward pass")
    parser.add_argument("--step", type=int, default=None, help="training step of a single plain HF dir")
    parser.add_argument("--tokens-seen", type=int, default=None, help="tokens seen by a single plain HF dir")
    parser.add_argument("--tokens-per-step", type=int, default=None,
                        help="tokens per step, for steps read from directory names / stepN revisions")
    parser.add_argument("--no-hidden", action="store_true", help="do not keep hidden states")
    parser.add_argument("--no-attention", action="store_true", help="do not keep attention weights")
    parser.add_argument("--hidden-pairs", type=int, default=d.hidden_pairs, help="pairs whose hidden states are kept (0 = all)")
    parser.add_argument("--paradigms", nargs="*", default=[], help="only these BLiMP paradigms (uids)")
    parser.add_argument("--pairs-per-paradigm", type=int, default=0, help="seeded subsample per paradigm (0 = all)")
    parser.add_argument("--skip-invalid", action="store_true", help="skip malformed pairs instead of stopping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device)
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default=d.dtype)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--force", action="store_true", help="re-score checkpoints already scored")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from grokscope.checkpoints import discover_checkpoints
    from grokscope.store import Study

    study = Study(args.out)
    options = ScoreOptions(
        convention=args.convention, reduction=args.reduction, region=args.region, batch_size=args.batch_size,
        capture_hidden=not args.no_hidden, capture_attention=not args.no_attention,
        hidden_pairs=args.hidden_pairs, seed=args.seed, progress=not args.quiet,
    )
    options.validate()
    pairs, benchmark, fingerprint = _pairs_for(study, args.benchmark, args.phrases, args.paradigms,
                                               args.pairs_per_paradigm, args.seed, args.skip_invalid)
    if not _has_spans(pairs):
        if options.capture_hidden or options.capture_attention:
            print("grokscope score: no critical phrases (run `grokscope phrases` or pass --phrases); "
                  "hidden states and attention are not captured", file=sys.stderr)
        options.capture_hidden = options.capture_attention = False
        if options.region == "critical":
            raise MissingStageError("critical phrases (needed for --region critical)", str(study.phrases_path),
                                    "grokscope phrases")
    errors: list[str] = []
    checkpoints = discover_checkpoints(args.checkpoints, step=args.step, tokens_seen=args.tokens_seen,
                                       tokens_per_step=args.tokens_per_step, errors=errors)
    job = ScoreJob(checkpoints=checkpoints, pairs=pairs, benchmark=benchmark, benchmark_fingerprint=fingerprint,
                   options=options, tokenizer=args.tokenizer, device=args.device, dtype=args.dtype,
                   threads=args.threads, force=args.force)
    return _finish(score_checkpoints(job, study, errors), errors, len(pairs))


def run_stage(cfg: StudyConfig, study: Study) -> None:
    """Score the checkpoints of ``[score] checkpoints`` (default: the study's run) on the
    pairs of ``phrases.parquet``; skip checkpoints already scored."""
    from grokscope.checkpoints import discover_checkpoints

    sc = cfg.score
    study.require(study.phrases_path, "critical phrases", "grokscope phrases")
    specs = [str(cfg.resolve_path(s)) if not _is_hub(s) else s for s in sc.checkpoints]
    if not specs:
        study.require(study.run_dir / "checkpoints", "training checkpoints", "grokscope train")
        specs = [str(study.run_dir)]
    benchmark = str(cfg.resolve_path(cfg.benchmark.path)) if cfg.benchmark.path else ""
    pairs, bench_name, fingerprint = _pairs_for(study, benchmark, "", cfg.benchmark.paradigms,
                                                cfg.benchmark.pairs_per_paradigm, cfg.study.seed,
                                                cfg.benchmark.skip_invalid)
    options = ScoreOptions(convention=sc.convention, reduction=sc.reduction, region=sc.region,
                           batch_size=sc.batch_size, capture_hidden=sc.capture_hidden,
                           capture_attention=sc.capture_attention, hidden_pairs=sc.hidden_pairs,
                           seed=cfg.study.seed)
    errors: list[str] = []
    checkpoints = discover_checkpoints(specs, errors=errors)
    job = ScoreJob(checkpoints=checkpoints, pairs=pairs, benchmark=bench_name, benchmark_fingerprint=fingerprint,
                   options=options, device=sc.device, dtype=sc.dtype)
    summaries = score_checkpoints(job, study, errors)
    _print_summary(summaries, len(pairs))
    if errors:
        raise GrokscopeError(_error_text(errors))


def _is_hub(spec: str) -> bool:
    from grokscope.checkpoints import _looks_like_hub_id

    return not Path(spec).exists() and _looks_like_hub_id(spec)


def _has_spans(pairs: pd.DataFrame) -> bool:
    return "critical_start" in pairs.columns


def _pairs_for(study: Study, benchmark: str, phrases: str, paradigms: list[str], pairs_per_paradigm: int,
               seed: int, skip_invalid: bool = False) -> tuple[pd.DataFrame, str, str]:
    """The pairs to score, with critical spans merged in when a phrases table is available."""
    import pandas as pd

    from grokscope.store import read_parquet_metadata

    phrases_path = Path(phrases) if phrases else study.phrases_path
    if phrases and not phrases_path.exists():
        raise DataError(f"{phrases_path}: phrases table not found")
    ph = pd.read_parquet(phrases_path) if phrases_path.exists() else None
    if benchmark:
        pairs, fingerprint = load_benchmark(benchmark, paradigms, pairs_per_paradigm, seed, skip_invalid)
        name = benchmark
        if ph is not None:
            pairs = with_phrases(pairs, ph)
    elif ph is not None:
        meta = read_parquet_metadata(phrases_path)
        pairs = ph
        if paradigms:
            pairs = pairs[pairs["uid"].isin(paradigms)].reset_index(drop=True)
        if pairs_per_paradigm:
            from grokscope.data.benchmark import _subsample

            pairs = _subsample(pairs, pairs_per_paradigm, seed).reset_index(drop=True)
        name = meta.get("benchmark", str(phrases_path))
        fingerprint = meta.get("benchmark_fingerprint", "")
        if paradigms or pairs_per_paradigm or not fingerprint:
            from grokscope.data.benchmark import benchmark_fingerprint

            fingerprint = benchmark_fingerprint(pairs)
    else:
        raise MissingStageError("a benchmark (--benchmark) or critical phrases", str(study.phrases_path),
                                "grokscope phrases")
    if len(pairs) == 0:
        raise DataError(f"benchmark '{name}': no pairs to score (check --paradigms)")
    return pairs, name, fingerprint


def _finish(summaries: list[CheckpointSummary], errors: list[str], n_pairs: int) -> int:
    _print_summary(summaries, n_pairs)
    if errors:
        print(_error_text(errors), file=sys.stderr)
        return 2
    return 0


def _error_text(errors: list[str]) -> str:
    lines = [f"{len(errors)} checkpoint(s) not scored (finished results are kept):"]
    lines += [f"  - {e}" for e in errors]
    return "\n".join(lines)


def _print_summary(summaries: list[CheckpointSummary], n_pairs: int) -> None:
    if not summaries:
        print("no checkpoints scored")
        return
    print(f"{'step':>10} {'tokens_seen':>14} {'accuracy':>9} {'pairs/s':>9} {'time_s':>8}  status  checkpoint")
    for s in summaries:
        acc = f"{s.accuracy:.4f}" if s.accuracy == s.accuracy else "-"
        rate = f"{s.pairs_per_s:.1f}" if s.pairs_per_s else "-"
        secs = f"{s.seconds:.1f}" if s.seconds else "-"
        print(f"{s.step:>10} {s.tokens_seen:>14} {acc:>9} {rate:>9} {secs:>8}  {s.status}  {s.checkpoint}")
    print(f"{n_pairs} pairs per checkpoint")
