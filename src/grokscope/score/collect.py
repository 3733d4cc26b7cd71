"""What a forward pass leaves, gathered per pair: the scored tokens of a batch of prefix-tree rows
(:func:`batch_targets`), and :class:`PairAccumulator`, which collects log-probs, hidden states at
the critical token and attention from it into per-pair arrays and the score table
(docs/CONTRACTS.md "Scores")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from grokscope.core.errors import GrokscopeError
from grokscope.score.encoding import EncodedSentence, PackedRow

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from grokscope.score.pairs import ModelGeometry, ScoreOptions


@dataclass
class BatchOutput:
    logprobs: np.ndarray  # [n_targets] float64: log p(target | row)
    n_tokens: int  # positions run through the transformer body
    logit_rows: int  # positions run through the output projection
    hidden: Any = None  # tuple of [batch, T, d_model] tensors
    attention: Any = None  # tuple of [batch, n_head, T, T] tensors


def batch_targets(batch: list[PackedRow], sentences: list[EncodedSentence]
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


@dataclass
class PairAccumulator:
    """Per-pair results of a scoring run, filled batch by batch. ``[n, 2]`` arrays are (good, bad)."""

    sums: np.ndarray  # [n, 2] float64: summed token log-probs
    counts: np.ndarray  # [n, 2] int64: scored tokens
    crit: np.ndarray  # [n, 2] float64: log-prob of the critical phrase's tokens (NaN: none)
    phrase_lps: list[list[np.ndarray]]  # [n][2]: the critical phrase's token log-probs
    hidden_row: np.ndarray  # [n] int32: row of ``hidden`` (-1: not captured)
    hidden: np.ndarray | None  # [n_captured, 2, n_layer + 1, d_model] float16
    attention: np.ndarray | None  # [n, 2, n_layer, n_head] float16
    hidden_at: str = "later"  # which token's states are kept (EncodedSentence.state_token)
    attention_baseline: np.ndarray | None = None  # [n, 2, n_layer, n_head] float16 (:func:`_distance_baseline`)

    @classmethod
    def allocate(cls, n: int, hidden_row: np.ndarray, geometry: ModelGeometry, options: ScoreOptions,
                 hidden_out: np.ndarray | None = None) -> PairAccumulator:
        hidden = None
        if options.capture_hidden:
            shape = (int((hidden_row >= 0).sum()), 2, geometry.n_layer + 1, geometry.d_model)
            if hidden_out is not None and tuple(hidden_out.shape) != shape:
                raise GrokscopeError(f"score: hidden_out has shape {hidden_out.shape}, expected {shape}")
            hidden = hidden_out if hidden_out is not None else np.zeros(shape, dtype=np.float16)
        attention = baseline = None
        if options.capture_attention:
            attention = np.full((n, 2, geometry.n_layer, geometry.n_head), np.nan, dtype=np.float16)
            baseline = attention.copy()
        return cls(np.zeros((n, 2), dtype=np.float64), np.zeros((n, 2), dtype=np.int64),
                   np.full((n, 2), np.nan, dtype=np.float64),
                   [[np.empty(0, np.float32), np.empty(0, np.float32)] for _ in range(n)],
                   hidden_row, hidden, attention, options.hidden_at, baseline)

    def wants_hidden(self, batch: list[PackedRow]) -> bool:
        return self.hidden is not None and any(self.hidden_row[s // 2] >= 0 for r in batch for s in r.sentences)

    def add(self, out: BatchOutput, owner: list[tuple[int, int]], batch: list[PackedRow],
            sentences: list[EncodedSentence]) -> None:
        _collect_logprobs(out.logprobs, owner, sentences, self.sums, self.counts, self.crit, self.phrase_lps)
        if out.hidden is not None and self.hidden is not None:
            _collect_hidden(out, batch, sentences, self.hidden_row, self.hidden, self.hidden_at)
        if out.attention is not None and self.attention is not None:
            _collect_attention(out, batch, sentences, self.attention)
            if self.attention_baseline is not None:
                _distance_baseline(out, batch, sentences, self.attention_baseline)

    def table(self, pairs: pd.DataFrame, encoded: list[tuple[EncodedSentence, EncodedSentence]],
              options: ScoreOptions) -> pd.DataFrame:
        import pandas as pd

        return _result_table(pairs, encoded, self.sums, self.counts, self.crit, self.phrase_lps, self.hidden_row,
                             options, pd)


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


def _collect_hidden(out: BatchOutput, batch: list[PackedRow], sentences: list[EncodedSentence],
                    hidden_row: np.ndarray, hidden: np.ndarray, at: str = "later") -> None:
    import torch

    picks = [(k, s, path) for k, row in enumerate(batch) for s, path in zip(row.sentences, row.paths)
             if hidden_row[s // 2] >= 0]
    if not picks:
        return
    stacked = torch.stack(out.hidden, dim=0)  # [n_layer+1, batch, T, d_model]
    b_idx = torch.tensor([k for k, _, _ in picks])
    t_idx = torch.tensor([int(path[sentences[s].state_token(at)]) for _, s, path in picks])
    vecs = stacked[:, b_idx, t_idx, :].float().cpu().numpy().transpose(1, 0, 2)  # [picks, n_layer+1, d_model]
    for (_, s, _), v in zip(picks, vecs):
        hidden[hidden_row[s // 2], s % 2] = v.astype(np.float16)


def _collect_attention(out: BatchOutput, batch: list[PackedRow], sentences: list[EncodedSentence],
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


def _distance_baseline(out: BatchOutput, batch: list[PackedRow], sentences: list[EncodedSentence],
                       baseline: np.ndarray) -> None:
    """Each head's attention at the critical->context *distances* from the sentence's other positions.

    For the query position q and the earlier word's positions k_j (distances d_j = q - k_j), the
    baseline is the mean over the sentence's other query positions q' (q' != q, q' - d_j >= 0 for
    every j, and >= 1 unless a k_j is 0: the first token is an attention sink) of
    sum_j w(q' -> q' - d_j): what the head gives a token at the same distance anywhere in the
    sentence. attention / baseline > 1 = more than its positional habit. NaN where no q' exists."""
    import torch

    b_idx: list[int] = []
    q_nodes: list[int] = []
    k_nodes: list[int] = []
    slot_of: list[int] = []
    pick_of_slot: list[int] = []
    owners: list[int] = []
    for k, row in enumerate(batch):
        for s, path in zip(row.sentences, row.paths):
            enc = sentences[s]
            if enc.attn_query < 0 or not enc.attn_keys:
                continue
            d = enc.attn_query - np.asarray(enc.attn_keys)
            lowest = 0 if min(enc.attn_keys) == 0 else 1
            others = [q for q in range(int(d.max()) + lowest, len(path)) if q != enc.attn_query]
            if not others:
                continue
            pick = len(owners)
            owners.append(s)
            for q in others:
                slot = len(pick_of_slot)
                pick_of_slot.append(pick)
                for dist in d:
                    b_idx.append(k)
                    q_nodes.append(int(path[q]))
                    k_nodes.append(int(path[q - dist]))
                    slot_of.append(slot)
    if not owners:
        return
    stacked = torch.stack(out.attention, dim=0)  # [n_layer, batch, n_head, T, T]
    w = stacked[:, torch.tensor(b_idx), :, torch.tensor(q_nodes), torch.tensor(k_nodes)].float().cpu()  # [m, L, H]
    n_slots = len(pick_of_slot)
    per_slot = torch.zeros(n_slots, *w.shape[1:]).index_add_(0, torch.tensor(slot_of), w)
    slots = torch.tensor(pick_of_slot)
    per_pick = torch.zeros(len(owners), *w.shape[1:]).index_add_(0, slots, per_slot)
    n_per_pick = torch.bincount(slots, minlength=len(owners)).float()
    means = (per_pick / n_per_pick[:, None, None]).numpy()
    for s, m in zip(owners, means):
        baseline[s // 2, s % 2] = m.astype(np.float16)


def _result_table(pairs: pd.DataFrame, encoded: list[tuple[EncodedSentence, EncodedSentence]], sums: np.ndarray,
                  counts: np.ndarray, crit: np.ndarray, phrase_lps: list[list[np.ndarray]],
                  hidden_row: np.ndarray, options: ScoreOptions, pd: Any) -> pd.DataFrame:
    if options.region == "sentence":
        value, ntok = sums.copy(), counts.copy()
    else:
        value = crit.copy()  # NaN where the pair has no critical phrase
        ntok = np.array([[len(g.phrase_tokens), len(b.phrase_tokens)] for g, b in encoded],
                        dtype=np.int64).reshape(-1, 2)
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
