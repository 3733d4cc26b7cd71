"""Windowed exposure of long-distance dependencies (``[exposure] window_tokens`` > 0).

Filler-gap, island and ellipsis paradigms have critical phrases of 6–10 words that almost never
occur contiguously, so their contiguous exposure is near zero whatever the model saw. The
windowed measure asks instead how often the pair's two words occurred *together*: the later of
its critical and context words (as in the sentence) within ``window_tokens`` tokens after the
earlier one, in the same row and document, counted in the exposure scan's own pass
(:class:`grokscope.exposure.engine.WindowRules`). Good and bad sides are searched separately
(the bad sentence's critical word with its context word).

Forms: the earlier word takes the surface forms of its place (a sentence-initial common word also
lower-cased mid-text, a proper noun keeping its capital — read off the pair's ``good_forms`` when
the phrase begins with it — :mod:`grokscope.data.surface_forms`), restricted to the search's
variants; the later word, mid-sentence by construction, is searched as written (" word").
Pairs without a context word get no window: their columns are null.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from grokscope.data.surface_forms import first_word, forms_for_variants, keeps_capital, surface_forms

WindowKey = tuple[tuple[str, ...], tuple[str, ...]]


def _int(v: Any) -> int | None:
    try:
        return None if v is None or v != v else int(v)
    except (TypeError, ValueError):
        return None


def _earlier_forms(word: str, start: int, phrase_start: int | None, phrase_forms: Any,
                   variants: Sequence[str]) -> tuple[str, ...]:
    capitalised: frozenset[str] = frozenset()
    if start == 0 and phrase_start == 0 and phrase_forms is not None and len(phrase_forms):
        mid = first_word(str(phrase_forms[0]))  # the phrases stage decided this word's mid-text case
        capitalised = frozenset({word}) if mid[:1].isupper() else frozenset()
    elif start == 0 and keeps_capital(word, frozenset()):
        capitalised = frozenset({word})
    return tuple(forms_for_variants(surface_forms(word, start == 0, capitalised), variants))


def pair_window(critical: str, crit_start: Any, context: str, ctx_start: Any, phrase_start: Any,
                phrase_forms: Any, variants: Sequence[str]) -> WindowKey | None:
    """The window of one side of a pair: (forms of the earlier word, forms of the later), or
    None without a context word or positions, or when the words overlap."""
    critical, context = (critical or "").strip(), (context or "").strip()
    cs, xs = _int(crit_start), _int(ctx_start)
    if not critical or not context or cs is None or xs is None or cs == xs:
        return None
    (w1, s1), (w2, s2) = sorted([(critical, cs), (context, xs)], key=lambda t: t[1])
    if s1 + len(w1) > s2:
        return None
    return _earlier_forms(w1, s1, _int(phrase_start), phrase_forms, variants), (" " + w2,)


def pair_windows(pairs: Any, variants: Sequence[str]) -> tuple[list[WindowKey | None], list[WindowKey | None]]:
    """Good-side and bad-side windows of every pair of a phrases table (None: no window)."""
    def col(name: str) -> list[Any]:
        return pairs[name].tolist() if name in pairs.columns else [None] * len(pairs)

    good_forms, bad_forms = col("good_forms"), col("bad_forms")
    good = [pair_window(c, cs, x, xs, ps, f, variants) for c, cs, x, xs, ps, f in
            zip(col("critical_word"), col("critical_start"), col("context_word"), col("context_start"),
                col("phrase_start"), good_forms)]
    bad = [pair_window(c, cs, x, xs, ps, f, variants) for c, cs, x, xs, ps, f in
           zip(col("bad_critical_word"), col("bad_critical_start"), col("context_word"), col("bad_context_start"),
               col("bad_phrase_start"), bad_forms)]
    return good, bad


def window_columns(table: Any, found: Any, keys: list[WindowKey | None], side: str, steps: Sequence[int],
                   rows_per_step: int) -> None:
    """Add ``{side}_window_first_step``, ``{side}_window_total_count``, ``{side}_window_count_{t}``
    (cumulative, rows ``[0, t·B)``) and ``{side}_window_forms`` to the exposure ``table``; null
    where a pair has no window."""
    import pandas as pd

    has = np.array([k is not None for k in keys], dtype=bool)
    n, n_int = len(keys), len(steps) + 1
    first = np.full(n, -1, dtype=np.int64)
    counts = np.zeros((n, n_int), dtype=np.int64)
    if has.any():
        rows = found.windows_of([k for k in keys if k is not None])
        first[has] = found.window_first_row[rows]
        counts[has] = found.window_counts[rows]
    step = pd.array(first // rows_per_step + 1, dtype="Int64")
    step[(first < 0) | ~has] = pd.NA
    table[f"{side}_window_first_step"] = step
    cum = np.cumsum(counts, axis=1)

    def nullable(v: np.ndarray) -> Any:
        out = pd.array(v, dtype="Int64")
        out[~has] = pd.NA
        return out

    table[f"{side}_window_total_count"] = nullable(counts.sum(axis=1))
    for j, t in enumerate(steps):
        table[f"{side}_window_count_{t}"] = nullable(cum[:, j])
    table[f"{side}_window_forms"] = [None if k is None else [list(k[0]), list(k[1])] for k in keys]
