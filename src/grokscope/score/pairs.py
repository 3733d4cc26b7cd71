"""Score minimal pairs with a loaded causal LM (:func:`score_pairs`), capturing hidden states
and attention from the same forward pass.

Each batch is a few prefix-tree rows (:mod:`grokscope.score.encoding`). The last token of a
sentence (it predicts nothing) is not fed, the output projection runs only on nodes that predict
a scored token, followed by an in-place log-sum-exp; rows are batched by length and padding is
masked, so a pair's numbers do not depend on what it is batched with. ``torch.inference_mode``
throughout.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from grokscope.core.config import ScoringSettings
from grokscope.core.errors import DataError, GrokscopeError
from grokscope.core.settings import check_value, section_settings
from grokscope.score.collect import BatchOutput, PairAccumulator, batch_targets
from grokscope.score.encoding import EncodedSentence, PackedRow, encode_pairs, pack_rows, with_phrases

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch



# Architectures whose CausalLM forward is exactly ``lm_head(base_model(...).last_hidden_state)``
# (no logit scaling / soft-capping), so logits can be computed only on the rows we need.
_SPLIT_HEAD_MODEL_TYPES = {
    "gpt2", "gpt_neox", "llama", "olmo", "olmo2", "mistral", "qwen2", "qwen3", "gptj", "gpt_neo",
    "opt", "phi", "phi3", "stablelm", "gpt_bigcode", "starcoder2", "pythia",
}

_LOGIT_CHUNK_ROWS = 128  # rows of [rows, vocab] logits at once (GPU, hooked or non-Linear heads)
_BLOCK_ROWS, _VOCAB_BLOCK = 1024, 2048  # CPU tiles of the output layer (bench: fastest for d 256-768, vocab 8k-50k)
# On CPU, rows up to this width use eager attention (matmul, softmax, matmul): on prefix-tree rows
# (~135 positions for BLiMP) it runs 1.6x faster than sdpa's flash kernel with a dense mask,
# 3% of a 4x256 model's scoring. Wider rows keep sdpa, which never holds [rows, heads, T, T].
_EAGER_CPU_MAX_WIDTH = 512


@dataclass
class ScoreOptions(ScoringSettings):
    """How to score (the settings of :class:`~grokscope.core.config.ScoringSettings`, which the
    ``[score]`` section shares, plus what only the library call sets). ``batch_size`` is in pairs:
    each forward pass takes ``2 * batch_size`` sentences, packed into prefix-tree rows of
    ``min(sentences_per_row, 2 * batch_size)``. A library call captures nothing unless asked."""

    capture_hidden: bool = False
    capture_attention: bool = False
    seed: int = 0  # seed of the hidden-state subsample
    pack_prefix: bool = True  # compute a prefix shared by several sentences once
    sentences_per_row: int = 16  # sentences packed into one prefix-tree row
    progress: bool = True
    desc: str = "score"

    def validate(self) -> None:
        """Every shared setting within what its declaration allows (a :class:`ConfigError`)."""
        for info in section_settings(ScoringSettings, "score"):
            check_value(info, getattr(self, info.name), "score options")


def options_from_section(section: ScoringSettings, seed: int = 0, progress: bool = True) -> ScoreOptions:
    """The options a ``[score]`` section asks for."""
    shared = {f.name: getattr(section, f.name) for f in dataclasses.fields(ScoringSettings)}
    return ScoreOptions(**shared, seed=seed, progress=progress)


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
    attention_baseline: np.ndarray | None = None  # like attention: the same heads at the same distances


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
    hidden_row = _hidden_rows(encoded, options) if options.capture_hidden else np.full(n, -1, dtype=np.int32)
    acc = PairAccumulator.allocate(n, hidden_row, geometry, options, hidden_out)
    sentences = [enc for pair in encoded for enc in pair]  # sentence 2*i + side
    per_row = max(1, min(options.sentences_per_row, 2 * options.batch_size))
    rows = pack_rows(sentences, per_row, options.pack_prefix)
    rows.sort(key=lambda r: -len(r.ids))  # longest first (an out-of-memory shows at once), similar lengths together
    stats = ScoreStats(n_pairs=n)
    device = next(model.parameters()).device
    previous_attn = _attention_for_run(model, rows, device, options.capture_attention)
    bar = _progress(n, options)
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            _run_batches(model, rows, sentences, max(1, round(2 * options.batch_size / per_row)), device, geometry,
                         options, acc, stats, bar)
    finally:
        if bar is not None:
            bar.close()
        if previous_attn is not None:
            _set_attention_impl(model, previous_attn)
    stats.seconds = time.perf_counter() - t0
    return ScoreResult(table=acc.table(pairs, encoded, options), hidden=acc.hidden, attention=acc.attention,
                       stats=stats, attention_baseline=acc.attention_baseline)


def _run_batches(model: Any, rows: list[PackedRow], sentences: list[EncodedSentence], rows_per_batch: int,
                 device: Any, geometry: ModelGeometry, options: ScoreOptions, acc: PairAccumulator,
                 stats: ScoreStats, bar: Any) -> None:
    """Forward every batch of rows and collect what it gives into ``acc``."""
    done_sentences = 0
    for start in range(0, len(rows), rows_per_batch):
        batch = rows[start : start + rows_per_batch]
        flat_rows, targets, owner = batch_targets(batch, sentences)
        out = _forward_batch(model, batch, device, geometry, want_hidden=acc.wants_hidden(batch),
                             want_attention=options.capture_attention, flat_rows=flat_rows, targets=targets)
        stats.tokens_computed += out.n_tokens
        stats.logit_rows += out.logit_rows
        acc.add(out, owner, batch, sentences)
        done_sentences += sum(len(r.sentences) for r in batch)
        if bar is not None:
            bar.update(done_sentences // 2 - bar.n)


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
                raise DataError(f"pair ({pairs['uid'].iat[i]}, {pairs['pair_id'].iat[i]}): "
                                f"the {side} sentence is empty")
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
        raise GrokscopeError(f"score: cannot switch the model to {impl} attention (needed for attention "
                             f"weights): {e}") from None
    return previous


def _attention_for_run(model: Any, rows: list[PackedRow], device: Any, capture_attention: bool) -> str | None:
    """Switch the model to eager attention when this run wants it; return the implementation to
    restore afterwards (None: unchanged). Attention weights need eager; on CPU, rows up to
    ``_EAGER_CPU_MAX_WIDTH`` wide also run eager because it is faster there, and a model that
    cannot switch keeps its own for that speed choice."""
    if capture_attention:
        return _set_attention_impl(model, "eager")
    if device.type == "cpu" and max((len(r.ids) for r in rows), default=0) <= _EAGER_CPU_MAX_WIDTH:
        try:
            return _set_attention_impl(model, "eager")
        except GrokscopeError:
            return None
    return None


def _progress(n: int, options: ScoreOptions) -> Any:
    if not options.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=n, desc=options.desc, unit="pair", dynamic_ncols=True, leave=False, file=sys.stderr)


def _forward_batch(model: Any, rows: list[PackedRow], device: Any, geometry: ModelGeometry,
                   want_hidden: bool, want_attention: bool, flat_rows: np.ndarray,
                   targets: np.ndarray) -> BatchOutput:
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
        if _vocab_blocks_apply(head, h):
            lp = _vocab_blocked_logprobs(h, head.weight, head.bias, target_row, targets)
        else:
            lp = _chunked_logprobs(lambda a, b: head(h[a:b]).float(), len(needed), target_row, targets, device)
    else:
        out = model(**kwargs)
        logits = out.logits.reshape(batch * width, -1)[needed_t]  # [n_needed, vocab]
        lp = _chunked_logprobs(lambda a, b: logits[a:b].float(), len(needed), target_row, targets, device)
    return BatchOutput(
        logprobs=lp, n_tokens=int(sum(len(r.ids) for r in rows)), logit_rows=int(len(needed)),
        hidden=out.hidden_states if want_hidden else None,
        attention=out.attentions if want_attention else None,
    )


def _chunked_logprobs(project: Any, n_rows: int, target_row: np.ndarray, targets: np.ndarray,
                      device: Any) -> np.ndarray:
    """``log p(targets[k] | row target_row[k])`` from full-vocabulary logits, ``project(a, b)``
    giving rows ``a:b`` as float32 [chunk, vocab] (the module path: hooks on the output
    projection run; any device). The indices go to the device once and the results come back
    once per batch, so a GPU is not synchronised chunk by chunk."""
    import torch

    order = np.argsort(target_row, kind="stable")  # targets grouped by row: each chunk's are a slice
    cuts = np.searchsorted(target_row[order], np.arange(0, n_rows + _LOGIT_CHUNK_ROWS, _LOGIT_CHUNK_ROWS))
    rows_t = torch.from_numpy(target_row[order]).to(device)
    targets_t = torch.from_numpy(targets[order]).to(device)
    target_logit = torch.empty(len(targets), dtype=torch.float32, device=device)
    lse = torch.empty(n_rows, dtype=torch.float32, device=device)
    for k, a in enumerate(range(0, n_rows, _LOGIT_CHUNK_ROWS)):
        b = min(a + _LOGIT_CHUNK_ROWS, n_rows)
        chunk = project(a, b)  # [chunk, vocab] float32
        lo, hi = cuts[k], cuts[k + 1]
        target_logit[lo:hi] = chunk[rows_t[lo:hi] - a, targets_t[lo:hi]]  # before the in-place log-sum-exp
        lse[a:b] = _logsumexp_inplace(chunk)
    lp = np.empty(len(targets), dtype=np.float64)
    lp[order] = (target_logit - lse[rows_t]).double().cpu().numpy()
    return lp


def _vocab_blocks_apply(head: Any, h: torch.Tensor) -> bool:
    """The vocabulary-blocked path computes ``h @ W.T + b`` itself, so only for a plain float32
    ``nn.Linear`` on CPU with no hooks (a hook on the output projection must still run)."""
    import torch
    from torch.nn.modules import module as nn_module

    return (
        h.device.type == "cpu" and type(head) is torch.nn.Linear and head.weight.dtype == torch.float32
        and h.dtype == torch.float32 and not head._forward_hooks and not head._forward_pre_hooks
        and not nn_module._global_forward_hooks and not nn_module._global_forward_pre_hooks
    )


def _vocab_blocked_logprobs(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                            target_row: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``log p(targets[k] | row target_row[k])`` for the output projection ``h @ weight.T + bias``,
    one block of ``_VOCAB_BLOCK`` vocabulary entries at a time with an online log-sum-exp
    (running max and rescaled sum): the [rows, vocab] logits never exist, each [rows, block]
    tile is reduced while it is still in cache. On CPU this runs the output layer 1.3x (one
    thread) to 1.7x (two) faster than full-vocabulary chunks; the target's logit is read from
    the same tile, so it is exactly the value the normaliser used."""
    import torch

    vocab = weight.shape[0]
    lp = np.empty(len(targets), dtype=np.float64)
    tile = torch.empty(min(_BLOCK_ROWS, h.shape[0]), min(_VOCAB_BLOCK, vocab), dtype=torch.float32)
    for a in range(0, h.shape[0], _BLOCK_ROWS):
        b = min(a + _BLOCK_ROWS, h.shape[0])
        hb = h[a:b]
        sel = np.nonzero((target_row >= a) & (target_row < b))[0]
        r = torch.from_numpy(target_row[sel] - a)
        t = torch.from_numpy(targets[sel])
        run_max = torch.full((b - a,), float("-inf"))
        run_sum = torch.zeros(b - a)
        target_logit = torch.empty(len(sel))
        for v0 in range(0, vocab, _VOCAB_BLOCK):
            v1 = min(v0 + _VOCAB_BLOCK, vocab)
            x = tile[: b - a, : v1 - v0]
            torch.matmul(hb, weight[v0:v1].T, out=x)
            if bias is not None:
                x.add_(bias[v0:v1])
            here = (t >= v0) & (t < v1)
            if bool(here.any()):
                target_logit[here] = x[r[here], t[here] - v0]
            new_max = torch.maximum(run_max, x.amax(dim=1))
            run_sum.mul_((run_max - new_max).exp_())
            run_sum.add_(x.sub_(new_max[:, None]).exp_().sum(dim=1))
            run_max = new_max
        lse = run_sum.log_().add_(run_max)
        lp[sel] = (target_logit - lse[r]).double().numpy()
    return lp


def _logsumexp_inplace(x: torch.Tensor) -> torch.Tensor:
    """``logsumexp(x, -1)`` for ``x`` [rows, vocab], overwriting ``x`` (no [rows, vocab]
    temporaries: about 2.5x faster than ``torch.logsumexp`` on CPU, identical result)."""
    m = x.amax(dim=-1, keepdim=True)  # [rows, 1]
    x.sub_(m).exp_()
    return x.sum(dim=-1).log_() + m[:, 0]


