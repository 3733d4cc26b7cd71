"""The exposure engine behind one face: :class:`PhraseSearch`.

Build it once from phrases and the tokenizer of the model under study (every surface form of
every phrase becomes token sequences; see :func:`variant_texts`), then
``search(stream, steps)`` finds every whole-word occurrence in a token stream, in training order,
and returns a :class:`PhraseMatches`: for each phrase its first row and its count in every
checkpoint window. In this process, on a local Dask cluster or on a ``client`` you hold (see
:mod:`grokscope.exposure.shards`); the compiled search is :mod:`grokscope.exposure.engine`.

Windowed matches (``windows``, ``window_tokens`` > 0): for a long-distance dependency, each
window (texts of its first word, texts of its second) counts occurrences of the second within
``window_tokens`` tokens after the first, in the same row and document, in the same pass
(:class:`grokscope.exposure.engine.WindowRules`); ``PhraseMatches.window_*`` holds them.

Variants (counts sum over them, identical token sequences counted once):
``mid`` — " this sketch" (mid-text, leading space; " there was bound" for a phrase that begins
its sentence with a common word); ``sentence_start`` — " This sketch" (after a full stop) and
"This sketch" (at a document or line start). A phrase given with its surface forms
(:mod:`grokscope.data.surface_forms`, the ``good_forms`` column of ``phrases.parquet``) is
searched in those; a bare phrase is taken as its mid-text form.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grokscope.core.config import VARIANTS
from grokscope.core.errors import ConfigError
from grokscope.data.surface_forms import forms_for_variants, surface_forms
from grokscope.exposure.shards import DEFAULT_SHARD_ROWS, StreamSpec, search_stream, window_edges

#: a searched phrase: its text and the surface-form texts searched for it
PhraseKey = tuple[str, tuple[str, ...]]
#: a window: the texts of its first word, the texts of its second
WindowKey = tuple[tuple[str, ...], tuple[str, ...]]


def _window_key(w: Any) -> WindowKey:
    return tuple(w[0]), tuple(w[1])


def variant_texts(phrase: str, variants: Sequence[str], forms: Sequence[str] | None = None) -> list[str]:
    """The surface forms searched for ``phrase``: its ``forms`` (``[mid, sentence_start,
    line_start]``) when given, else those of the phrase as a mid-text phrase (" this sketch";
    " This sketch" and "This sketch"), restricted to ``variants``. Empty phrase -> []."""
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ConfigError(f"exposure: unknown variant {bad[0]!r}; expected one of {list(VARIANTS)}")
    if forms is None or len(forms) == 0:
        forms = surface_forms(phrase, at_sentence_start=False)
    return forms_for_variants(forms, variants) if phrase.strip() else []


def phrase_keys(phrases: Sequence[str], variants: Sequence[str],
                forms: Sequence[Sequence[str] | None] | None = None) -> list[PhraseKey]:
    """One key per phrase: (text, texts searched)."""
    out = []
    for i, p in enumerate(phrases):
        f = None if forms is None else forms[i]
        out.append((p.strip(), tuple(variant_texts(p, variants, f))))
    return out


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens (the Rust batch encoder when there is one)."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        fast = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
        return [e.ids for e in fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


@dataclass(frozen=True)
class PhraseSequences:
    """Unique token sequences over all phrases, and which belong to which phrase.
    Phrase ``i`` (of ``phrases``) owns sequences ``seq_ids[offsets[i]:offsets[i+1]]``."""

    phrases: tuple[str, ...]
    sequences: tuple[tuple[int, ...], ...]
    offsets: np.ndarray  # int64 [n_phrases + 1]
    seq_ids: np.ndarray  # int32 [n_memberships]
    keys: tuple[PhraseKey, ...] = ()  # (text, surface forms searched) of each phrase


def tokenize_phrases(tokenizer: Any, phrases: Sequence[str], variants: Sequence[str],
                     eos_id: int | None = None, forms: Sequence[Sequence[str] | None] | None = None) -> PhraseSequences:
    """Tokenize each distinct phrase (text and ``forms``, see :func:`variant_texts`) in each
    variant; dedupe identical sequences (per phrase and globally). Sequences containing
    ``eos_id`` are dropped (they can never match)."""
    uniq = list(dict.fromkeys(phrase_keys(phrases, variants, forms)))
    texts: list[str] = []
    owner: list[int] = []
    for i, (_, searched) in enumerate(uniq):
        for t in searched:
            texts.append(t)
            owner.append(i)
    encoded = _encode(tokenizer, texts)
    seq_index: dict[tuple[int, ...], int] = {}
    members: list[list[int]] = [[] for _ in uniq]
    for i, ids in zip(owner, encoded):
        s = tuple(int(x) for x in ids)
        if not s or (eos_id is not None and eos_id in s):
            continue
        k = seq_index.setdefault(s, len(seq_index))
        if k not in members[i]:
            members[i].append(k)
    offsets = np.zeros(len(uniq) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(m) for m in members])
    flat = np.array([k for m in members for k in m], dtype=np.int32)
    return PhraseSequences(tuple(k[0] for k in uniq), tuple(seq_index), offsets, flat, tuple(uniq))


def phrase_exposure(seqs: PhraseSequences, result: Any, n_intervals: int) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct phrase: first row (int64, -1 never) and counts per interval, int64
    ``[n_phrases, n_intervals]`` (summed over the phrase's sequences)."""
    n_ph = len(seqs.phrases)
    owner = np.repeat(np.arange(n_ph, dtype=np.int64), np.diff(seqs.offsets))
    counts = np.zeros((n_ph, n_intervals), dtype=np.int64)
    first = np.full(n_ph, -1, dtype=np.int64)
    if owner.size == 0:
        return first, counts
    # sequence -> phrases that own it (a sequence can be shared: "This sketch" is a variant of both)
    order = np.argsort(seqs.seq_ids, kind="stable")
    s_sorted = seqs.seq_ids[order]
    o_sorted = owner[order]
    lo = np.searchsorted(s_sorted, result.seq, side="left")
    hi = np.searchsorted(s_sorted, result.seq, side="right")
    reps = hi - lo
    trip = np.repeat(np.arange(result.seq.size), reps)
    pos = np.repeat(lo, reps) + (np.arange(trip.size) - np.repeat(np.cumsum(reps) - reps, reps))
    np.add.at(counts, (o_sorted[pos], result.interval[trip]), result.count[trip])
    big = np.iinfo(np.int64).max
    fr = result.first_row[seqs.seq_ids]
    fr = np.where(fr < 0, big, fr)
    first_b = np.full(n_ph, big, dtype=np.int64)
    np.minimum.at(first_b, owner, fr)
    first = np.where(first_b == big, -1, first_b)
    return first, counts


@dataclass(frozen=True)
class PhraseMatches:
    """What a search found. Phrase ``i`` (of ``phrases``): ``first_row[i]`` (int64, -1 = never) and
    ``counts[i, j]``, its occurrences in rows ``[edges[j], edges[j+1])`` (``[n_phrases, n_steps + 1]``;
    the last interval is what lies after the last checkpoint)."""

    phrases: tuple[str, ...]
    steps: tuple[int, ...]
    rows_per_step: int
    first_row: np.ndarray
    counts: np.ndarray
    n_sequences: int
    keys: tuple[PhraseKey, ...] = ()
    variants: tuple[str, ...] = VARIANTS
    window_keys: tuple[WindowKey, ...] = ()
    window_first_row: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    window_counts: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))

    def windows_of(self, windows: Sequence[WindowKey]) -> np.ndarray:
        """Row indices into ``window_first_row`` / ``window_counts`` of each of ``windows``."""
        pos = {k: i for i, k in enumerate(self.window_keys)}
        return np.array([pos[_window_key(w)] for w in windows], dtype=np.int64)

    def rows_of(self, phrases: Sequence[str], forms: Sequence[Sequence[str] | None] | None = None) -> np.ndarray:
        """Row indices into ``first_row`` / ``counts`` of each of ``phrases`` (with their
        ``forms``, as searched)."""
        pos = {k: i for i, k in enumerate(self.keys)}
        return np.array([pos[k] for k in phrase_keys(phrases, self.variants, forms)], dtype=np.int64)


class PhraseSearch:
    """Every surface form of ``phrases`` as token sequences of ``tokenizer``, indexed with the
    tokenizer's word-boundary tables (padded to ``vocab_size`` ids when the model's vocabulary
    lists ids with no text). Sequences holding ``eos_id`` are dropped (they can never match)."""

    def __init__(self, phrases: Sequence[str], tokenizer: Any, variants: Sequence[str] = VARIANTS,
                 eos_id: int | None = None, vocab_size: int | None = None,
                 forms: Sequence[Sequence[str] | None] | None = None,
                 windows: Sequence[WindowKey] | None = None, window_tokens: int = 0) -> None:
        from grokscope.exposure.engine import build_index, window_rules
        from grokscope.exposure.words import pad_tables, word_tables

        self.variants = tuple(variants)
        self.sequences = tokenize_phrases(tokenizer, phrases, variants, eos_id=eos_id, forms=forms)
        tables = word_tables(tokenizer)
        if vocab_size is not None and tables.vocab_size < vocab_size:
            tables = pad_tables(tables, vocab_size)
        self.window_keys: tuple[WindowKey, ...] = ()
        sequences, rules = list(self.sequences.sequences), None
        if windows and window_tokens > 0:
            self.window_keys = tuple(dict.fromkeys(_window_key(w) for w in windows))
            ids = _WindowSequences(tokenizer, sequences, self.window_keys, eos_id)
            members = [(ids.of(f), ids.of(s)) for f, s in self.window_keys]  # adds the words' sequences
            rules = window_rules(len(sequences), members, window_tokens, eos_id)
        self.index = build_index(sequences, tables, rules)

    @property
    def phrases(self) -> tuple[str, ...]:
        return self.sequences.phrases

    @property
    def n_sequences(self) -> int:
        return len(self.sequences.sequences)

    def search(self, stream: StreamSpec, steps: Sequence[int], client: Any = None, *, workers: int = 1,
               scheduler: str = "", shard_rows: int = DEFAULT_SHARD_ROWS, parts_dir: Path | None = None,
               parts_key: str = "", progress: bool = True) -> PhraseMatches:
        """Occurrences in ``stream`` of every phrase, per window of ``steps`` (sorted unique steps;
        window(t) = rows ``[0, t·B)``, B = the stream's rows per step). ``parts_dir``/``parts_key``:
        keep finished shards there so a killed search resumes."""
        opened = stream.open()
        rows_per_step = stream.rows_per_step_of(opened)
        steps = sorted({int(s) for s in steps})
        edges = window_edges(steps, rows_per_step, opened.n_rows, stream.path)
        result = search_stream(stream, self.index, opened.n_rows, edges, workers=workers, scheduler=scheduler,
                               shard_rows=shard_rows, parts_dir=parts_dir, parts_key=parts_key, progress=progress,
                               client=client)
        first, counts = phrase_exposure(self.sequences, result, len(edges) - 1)
        w_first, w_counts = window_exposure(result, self.index.n_phrase_sequences, len(self.window_keys),
                                            len(edges) - 1)
        return PhraseMatches(self.phrases, tuple(steps), int(rows_per_step), first, counts, self.n_sequences,
                             self.sequences.keys, self.variants, self.window_keys, w_first, w_counts)


class _WindowSequences:
    """Token sequence ids of window texts, added to ``sequences`` (in place) where new."""

    def __init__(self, tokenizer: Any, sequences: list[tuple[int, ...]], keys: Sequence[WindowKey],
                 eos_id: int | None) -> None:
        texts = list(dict.fromkeys(t for f, s in keys for t in (*f, *s)))
        self.encoded = {t: tuple(int(x) for x in ids) for t, ids in zip(texts, _encode(tokenizer, texts))}
        self.sequences, self.eos_id = sequences, eos_id
        self.index = {s: k for k, s in enumerate(sequences)}

    def of(self, texts: Sequence[str]) -> list[int]:
        out: list[int] = []
        for t in texts:
            s = self.encoded[t]
            if not s or (self.eos_id is not None and self.eos_id in s):
                continue
            k = self.index.setdefault(s, len(self.sequences))
            if k == len(self.sequences):
                self.sequences.append(s)
            if k not in out:
                out.append(k)
        return out


def window_exposure(result: Any, n_phrase_sequences: int, n_windows: int,
                    n_intervals: int) -> tuple[np.ndarray, np.ndarray]:
    """First row (int64, -1 never) and counts per interval ``[n_windows, n_intervals]`` of the
    windows, which a scan counts at ids ``n_phrase_sequences + q``."""
    counts = np.zeros((n_windows, n_intervals), dtype=np.int64)
    if n_windows == 0:
        return np.zeros(0, dtype=np.int64), counts
    w = result.seq >= n_phrase_sequences
    np.add.at(counts, (result.seq[w] - n_phrase_sequences, result.interval[w]), result.count[w])
    return result.first_row[n_phrase_sequences:n_phrase_sequences + n_windows].copy(), counts
