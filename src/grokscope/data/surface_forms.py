"""Surface forms of a phrase: the texts it takes in running text, by position.

A critical phrase is cut from a benchmark sentence, so its first word carries the case of its
place in that sentence. In a corpus the same words occur at three kinds of place:

=================  =========================  ==============================================
form               example                    case of the first word
=================  =========================  ==============================================
``mid``            ``" there was bound"``     as mid-sentence: lower-cased when the phrase
                                              begins its sentence with a common word; a
                                              proper noun ("Raymond", "I") keeps its capital
``sentence_start`` ``" There was bound"``     capitalised, after a full stop and a space
``line_start``     ``"There was bound"``      capitalised, at a line or document start (no
                                              leading space: the token differs)
=================  =========================  ==============================================

:func:`surface_forms` returns the three in this order (the ``good_forms`` / ``bad_forms``
columns of ``phrases.parquet``); :func:`forms_for_variants` picks the ones an exposure search
enables (``mid``; ``sentence_start`` = the last two). Which words keep their capital comes from
:func:`capitalised_words`: the capitalised spellings of the benchmark's lexicon (BLiMP's
``properNoun`` names, "I", "CEO", "French") and every word a benchmark's own sentences write
capitalised where it is not the first word (a user benchmark without a lexicon).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

FORMS = ("mid", "sentence_start", "line_start")
#: exposure variant -> the forms (indices into :data:`FORMS`) it searches
VARIANT_FORMS: dict[str, tuple[int, ...]] = {"mid": (0,), "sentence_start": (1, 2)}
ALWAYS_CAPITAL = frozenset({"I", "I'm", "I've", "I'd", "I'll"})


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def first_word(text: str) -> str:
    """The phrase's first whitespace-separated word without trailing punctuation ("Raymond's" stays)."""
    parts = text.split()
    return parts[0].rstrip(".,;:!?") if parts else ""


def keeps_capital(word: str, capitalised: frozenset[str]) -> bool:
    """A word written capitalised mid-sentence: a proper noun, "I" (and its contractions).
    "Raymond's" keeps the capital of "Raymond"."""
    if not word or not word[:1].isupper():
        return False
    base = word.replace("’", "'")
    stem = base[:-2] if base.endswith("'s") else base
    return base in ALWAYS_CAPITAL or word in capitalised or stem in capitalised


def surface_forms(phrase: str, at_sentence_start: bool, capitalised: frozenset[str] = frozenset()) -> list[str]:
    """``[mid, sentence_start, line_start]`` texts of ``phrase`` (see the module docstring);
    ``at_sentence_start``: the phrase begins its sentence, so its first word's capital is the
    sentence's, not the word's. Empty phrase -> []."""
    phrase = phrase.strip()
    if not phrase:
        return []
    mid = phrase
    if at_sentence_start and not keeps_capital(first_word(phrase), capitalised):
        mid = _lower_first(phrase)
    cap = _capitalise(phrase)
    return [" " + mid, " " + cap, cap]


def forms_for_variants(forms: Sequence[str], variants: Sequence[str]) -> list[str]:
    """The texts of ``forms`` (``[mid, sentence_start, line_start]``) that ``variants`` enable,
    without repeats, in order."""
    if len(forms) == 0:
        return []
    if len(forms) != len(FORMS):
        raise ValueError(f"expected {len(FORMS)} surface forms {FORMS}, got {list(forms)}")
    out: list[str] = []
    for v in variants:
        if v not in VARIANT_FORMS:
            raise ValueError(f"unknown variant {v!r}; expected one of {list(VARIANT_FORMS)}")
        out += [str(forms[i]) for i in VARIANT_FORMS[v]]
    return list(dict.fromkeys(out))


def capitalised_words(sentences: Iterable[Sequence[str]], lexicon_capitalised: Iterable[str] = ()) -> frozenset[str]:
    """Words that keep their capital: the lexicon's capitalised spellings, plus every word that a
    sentence (given as its words, punctuation included) writes capitalised after its first word.
    A word right after sentence-internal ``.``/``!``/``?``/``:``/quotes is not evidence."""
    out = set(lexicon_capitalised)
    for words in sentences:
        seen_word = False
        prev = ""
        for w in words:
            if not (w[:1].isalnum()):
                prev = w
                continue
            if seen_word and w[:1].isupper() and prev not in (".", "!", "?", ":", '"', "“"):
                out.add(w)
            seen_word = True
            prev = w
    return frozenset(out)
