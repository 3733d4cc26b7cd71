"""Critical phrases: for every minimal pair, the smallest contiguous span of the good sentence
that covers every word differing from the bad sentence, the **critical word** (where
acceptability is decided) and the **context word** (what it depends on).

How a pair is annotated:

1. Both sentences are split into words with exact character spans (punctuation split off;
   contractions such as "hasn't" and possessives such as "Lucille's" stay one word).
2. The word sequences are aligned by a longest common subsequence (case-folded, so a
   capitalised sentence-initial word matches its lower-case self; among equally long ones,
   the one whose words move least). Words outside it are the *differing words*; for a
   reordered (lexically identical) pair they are the words out of place.
3. The paradigm's rule (:mod:`grokscope.phrase_rules`) names a selector for the critical and
   the context word, read from BLiMP's lexicon classes (:mod:`grokscope.data.lexicon`) and the
   pair's ``one_prefix_*`` / ``two_prefix_*`` metadata. Explicit ``critical`` / ``context``
   spans of a user benchmark override the rule.
4. Phrase (good) = span from the first to the last of {differing words, critical, context}.
   The bad phrase covers the bad sentence's differing words, its critical and context words
   and the bad-sentence positions of every shared word of the good phrase.

Writes ``study/phrases.parquet`` (columns in docs/CONTRACTS.md) and prints a coverage table.
"""
from __future__ import annotations

import argparse
import bisect
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grokscope.data import lexicon as lx
from grokscope.errors import DataError, GrokscopeError, MissingStageError
from grokscope.phrase_rules import GENERIC_RULE, RULES, Rule

RULES_VERSION = "2"  # bump when a rule or selector changes: stale phrases.parquet is redone
WORD_RE = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")

COLUMNS = [
    "uid", "pair_id", "phenomenon", "good", "bad", "supported", "reason", "rule",
    "critical_phrase", "phrase_start", "phrase_end",
    "bad_phrase", "bad_phrase_start", "bad_phrase_end",
    "critical_word", "critical_start", "critical_end",
    "bad_critical_word", "bad_critical_start", "bad_critical_end",
    "context_word", "context_start", "context_end",
    "bad_context_start", "bad_context_end",
]

Span = tuple[int, int]  # inclusive word-index range [first, last]


# ---- words and alignment ------------------------------------------------------------------
@dataclass
class Side:
    """One sentence of a pair, split into words, tagged, with its differing words."""

    name: str  # "good" | "bad"
    text: str
    words: list[str]
    lower: list[str]
    starts: list[int]
    ends: list[int]
    is_word: list[bool]
    tags: list[frozenset[str]]
    meta: dict[str, Any]
    diffs: list[int] = field(default_factory=list)  # indices of differing words (no punctuation)
    insertions: list[int] = field(default_factory=list)  # where the other sentence has extra words
    critical: Span | None = None

    @property
    def n(self) -> int:
        return len(self.words)

    def word_at_char(self, pos: int) -> int:
        """Index of the word containing character ``pos`` (or the next word)."""
        i = bisect.bisect_right(self.starts, pos) - 1
        if i >= 0 and pos < self.ends[i]:
            return i
        return i + 1

    def char_span(self, span: Span) -> tuple[int, int]:
        return self.starts[span[0]], self.ends[span[1]]

    def text_of(self, span: Span) -> str:
        s, e = self.char_span(span)
        return self.text[s:e]


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Words and punctuation marks with their ``[start, end)`` character spans."""
    return [(m.group(), *m.span()) for m in WORD_RE.finditer(text)]


def make_side(name: str, text: str, lexicon: lx.Lexicon, meta: dict[str, Any]) -> Side:
    toks = split_words(text)
    words = [t[0] for t in toks]
    lower = [w.lower().replace("’", "'") for w in words]
    return Side(
        name=name, text=text, words=words, lower=lower,
        starts=[t[1] for t in toks], ends=[t[2] for t in toks],
        is_word=[w[0].isalnum() or w[0] == "_" for w in words],
        tags=lexicon.tag(lower), meta=meta,
    )


@dataclass
class Alignment:
    good_to_bad: list[int]  # -1 where the good word has no equal partner
    good_block: list[tuple[int, int]]  # for each good token: the [j1, j2) bad range of its opcode


def lcs_pairs(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int]]:
    """Matched index pairs of a longest common subsequence of ``a`` and ``b``. Among the
    longest it takes the one in the fewest contiguous blocks, then the one whose words move
    least (smallest total ``|i - j|``): "the college campus that the Borgias do admire" /
    "what the Borgias do admire the college campus" keeps "the Borgias do admire" whole, and
    "Julia says Kenneth …" / "Kenneth says Julia …" matches "says", not a moved name.
    Remaining ties go to matches nearest the end."""
    n, m = len(a), len(b)
    worst = (-1, 0, 0)
    # best[i][j]: best score (matches, -blocks, -displacement) of a[:i] vs b[:j];
    # ending[i][j]: best score of those that match a[i-1] with b[j-1].
    best = [[(0, 0, 0)] * (m + 1) for _ in range(n + 1)]
    ending = [[worst] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if a[i - 1] == b[j - 1]:
                d = abs(i - j)
                c, g = ending[i - 1][j - 1], best[i - 1][j - 1]
                cont = (c[0] + 1, c[1], c[2] - d) if c[0] >= 0 else worst
                new = (g[0] + 1, g[1] - 1, g[2] - d)
                ending[i][j] = max(cont, new)
            best[i][j] = max(ending[i][j], best[i - 1][j], best[i][j - 1])
    pairs: list[tuple[int, int]] = []
    i, j, in_match = n, m, False
    while i > 0 and j > 0:
        if in_match or best[i][j] == ending[i][j]:
            pairs.append((i - 1, j - 1))
            c, g = ending[i - 1][j - 1], best[i - 1][j - 1]
            d = abs(i - j)
            cur = ending[i][j]
            in_match = c[0] >= 0 and cur == (c[0] + 1, c[1], c[2] - d)
            i, j = i - 1, j - 1
        elif best[i][j] == best[i - 1][j]:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def _opcodes(a: list[str], b: list[str]) -> list[tuple[str, int, int, int, int]]:
    """Edit blocks (like :meth:`difflib.SequenceMatcher.get_opcodes`) from :func:`lcs_pairs`,
    computed after trimming the common prefix and suffix (as diff tools do)."""
    p = 0
    while p < len(a) and p < len(b) and a[p] == b[p]:
        p += 1
    q = 0
    while q < len(a) - p and q < len(b) - p and a[-1 - q] == b[-1 - q]:
        q += 1
    pairs = [(i + p, j + p) for i, j in lcs_pairs(a[p:len(a) - q], b[p:len(b) - q])]
    pairs = [(k, k) for k in range(p)] + pairs + [(len(a) - q + k, len(b) - q + k) for k in range(q)]
    ops: list[tuple[str, int, int, int, int]] = []
    i = j = 0
    for pi, pj in pairs + [(len(a), len(b))]:
        if pi > i or pj > j:
            tag = "replace" if pi > i and pj > j else ("delete" if pi > i else "insert")
            ops.append((tag, i, pi, j, pj))
        if pi < len(a):
            ops.append(("equal", pi, pi + 1, pj, pj + 1))
        i, j = pi + 1, pj + 1
    return ops


def align(good: Side, bad: Side) -> Alignment:
    """Word alignment; fills ``good.diffs`` and ``bad.diffs``."""
    g2b = [-1] * good.n
    gblock: list[tuple[int, int]] = [(0, 0)] * good.n
    for tag, i1, i2, j1, j2 in _opcodes(good.lower, bad.lower):
        if tag == "equal":
            for k in range(i2 - i1):
                g2b[i1 + k] = j1 + k
                gblock[i1 + k] = (j1 + k, j1 + k + 1)
        else:
            good.diffs.extend(i for i in range(i1, i2) if good.is_word[i])
            bad.diffs.extend(j for j in range(j1, j2) if bad.is_word[j])
            if i1 == i2 and any(bad.is_word[j] for j in range(j1, j2)):
                good.insertions.append(i1)
            if j1 == j2 and any(good.is_word[i] for i in range(i1, i2)):
                bad.insertions.append(j1)
            for i in range(i1, i2):
                gblock[i] = (j1, j2)
    return Alignment(g2b, gblock)


# ---- selectors ----------------------------------------------------------------------------
class NotFound(Exception):
    """A selector found no word; the message says what was looked for."""


def _one(i: int | None, what: str) -> Span:
    if i is None:
        raise NotFound(what)
    return (i, i)


def _words(side: Side) -> list[int]:
    return [i for i in range(side.n) if side.is_word[i]]


def _np_head_from(side: Side, i: int, skip_particles: bool = False) -> int | None:
    """Head noun of the noun phrase starting at word ``i``: skips determiners, numerals,
    adjectives and possessors ("Lucille's sisters", "the patients' tutors"); the head of a
    compound is its last noun ("grocery store")."""
    j = i
    while j < side.n:
        t = side.tags[j]
        if not side.is_word[j]:
            if side.lower[j] in ("'", "-"):
                j += 1
                continue
            return None
        if lx.NMOD in t and lx.N not in t:
            j += 1
            continue
        if lx.N in t and not (t & {lx.ADJ, lx.D} and j + 1 < side.n and lx.N in side.tags[j + 1]
                              and lx.V not in side.tags[j + 1]):
            if lx.POSS in t or (j + 1 < side.n and side.lower[j + 1] in ("'", "'s")):
                j += 1
                continue
            return j
        if t & {lx.POSS, lx.D, lx.NUM, lx.ADJ} or (skip_particles and t & {lx.P, lx.ADV}):
            j += 1
            continue
        if _unknown_word(side, j):  # a name or form BLiMP's lexicon lacks ("couchs")
            return j
        return None
    return None


def _crit(side: Side) -> Span:
    if side.critical is None:
        raise NotFound("critical word (needed first)")
    return side.critical


def _diff_verb(side: Side) -> Span:
    """The differing verb; an unknown differing word (a verb the lexicon lacks); else the verb
    whose particle differs or before which the other sentence has extra words
    ("talk to Tiffany" / "talk Tiffany", "will disagree." / "will disagree with.")."""
    d = side.diffs
    verbs = [i for i in d if lx.V in side.tags[i] and lx.AUX not in side.tags[i]]
    if verbs:
        return (verbs[0], verbs[0])
    verbs = [i for i in d if lx.V in side.tags[i]]  # "have", "had": auxiliary or main verb
    if verbs:
        return (verbs[-1], verbs[-1])
    unknown = [i for i in d if _unknown_word(side, i)]
    if unknown:
        return (unknown[0], unknown[0])
    anchors = d[:1] + side.insertions
    if anchors:
        for j in range(min(anchors), -1, -1):
            if lx.V in side.tags[j] and lx.AUX not in side.tags[j]:
                return (j, j)
    raise NotFound("a differing verb")


def sel_diff(side: Side, how: str) -> Span:
    d = side.diffs
    if how == "verb":
        return _diff_verb(side)
    if not d and side.insertions:
        raise NotFound(f"a differing word in the {side.name} sentence (the other one only adds words)")
    if not d:
        raise NotFound("a differing word")
    if how == "first":
        return (d[0], d[0])
    if how == "last":
        return (d[-1], d[-1])
    if how == "span":
        return (d[0], d[-1])
    if how == "noun":
        nouns = [i for i in d if lx.N in side.tags[i]]
        return _one(nouns[-1] if nouns else d[-1], "a differing noun")
    if how == "verb":
        return _diff_verb(side)
    if how == "wh":
        wh = [i for i in d if lx.WH in side.tags[i]]
        return _one(wh[0] if wh else None, "a differing wh-word")
    if how == "content":
        rest = [i for i in d if side.lower[i] not in ("at", "than", "as")]
        return _one(rest[-1] if rest else None, "a differing content word")
    raise ValueError(f"unknown diff selector {how!r}")


def _metadata_word(side: Side, prefix_key: str, word_key: str, head: str) -> Span | None:
    prefix, word = side.meta.get(prefix_key), side.meta.get(word_key)
    if not isinstance(prefix, str) or not isinstance(word, str) or not side.text.startswith(prefix):
        return None
    word = word.strip()
    pos = len(prefix)
    while pos < len(side.text) and side.text[pos].isspace():
        pos += 1
    if not word or side.text[pos:pos + len(word)] != word:
        return None
    first = side.word_at_char(pos)
    last = side.word_at_char(pos + len(word) - 1)
    if first >= side.n or last >= side.n:
        return None
    if head == "verb":
        verbs = [k for k in range(first, last + 1) if lx.V in side.tags[k] and lx.AUX not in side.tags[k]]
        i = verbs[0] if verbs else last
    else:
        i = first if head == "first" else last
    return (i, i)


def sel_prefix_word(side: Side, head: str) -> Span:
    """BLiMP's one-prefix word of this sentence; without metadata the differing words."""
    span = _metadata_word(side, "one_prefix_prefix", f"one_prefix_word_{side.name}", head)
    return span if span is not None else sel_diff(side, head)


def sel_two_prefix_word(side: Side, head: str) -> Span:
    """The word scored after BLiMP's differing two-prefix; without metadata the word after
    the last differing word."""
    span = _metadata_word(side, f"two_prefix_prefix_{side.name}", "two_prefix_word", head)
    return span if span is not None else sel_word_after_diff(side, "")


def sel_determiner_before(side: Side, _: str) -> Span:
    j = _crit(side)[0] - 1
    while j >= 0:
        t = side.tags[j]
        if lx.D in t and lx.N not in t:
            return (j, j)
        if t & {lx.ADJ, lx.NMOD, lx.ADV} or (lx.N in t and lx.D not in t and j == _crit(side)[0] - 1
                                              and lx.NMOD in side.tags[_crit(side)[0]]):
            j -= 1
            continue
        break
    raise NotFound("a determiner before the noun")


def sel_subject_head(side: Side, _: str) -> Span:
    """Head noun of the first noun phrase; a sentence-initial wh-word or pronoun subject
    ("What wrinkles.") is its own head."""
    head = _np_head_from(side, 0)
    if head is None and side.n and side.tags[0] & {lx.WH, lx.PRON}:
        head = 0
    return _one(head, "the head noun of the subject")


def sel_local_subject(side: Side, _: str) -> Span:
    """Subject of the clause holding the critical word: walk back over its verb group
    (verbs, auxiliaries, negation, adverbs, prepositions) to the head noun before it."""
    j = _crit(side)[0] - 1
    while j >= 0 and (not side.is_word[j] or side.tags[j] & {lx.P, lx.V, lx.AUX, lx.NEG, lx.ADV}) \
            and lx.N not in side.tags[j]:
        j -= 1
    if j >= 0 and (lx.N in side.tags[j] or _unknown_word(side, j)):
        return (j, j)
    raise NotFound("the subject of the anaphor's clause")


def _unknown_word(side: Side, j: int) -> bool:
    """A word BLiMP's lexicon lacks ("couchs", a name): in a noun position it is the noun."""
    return not side.tags[j] and side.words[j].isalpha()


def sel_object_after(side: Side, _: str) -> Span:
    return _one(_np_head_from(side, _crit(side)[1] + 1, skip_particles=True), "an object noun after the verb")


def sel_main_verb(side: Side, _: str) -> Span:
    """The last lexical verb of the sentence (the verb whose object is questioned)."""
    for j in range(side.n - 1, -1, -1):
        if lx.V in side.tags[j] and lx.AUX not in side.tags[j]:
            return (j, j)
    for j in range(side.n - 1, -1, -1):
        if lx.V in side.tags[j] or _unknown_word(side, j):
            return (j, j)
    raise NotFound("a main verb")


def sel_infinitive(side: Side, _: str) -> Span:
    """The verb of the infinitive after the critical word ("apt to *leave*")."""
    for j in range(_crit(side)[1] + 1, side.n - 1):
        if side.lower[j] == "to" and side.is_word[j + 1]:
            return (j + 1, j + 1)
    raise NotFound("an infinitive after the critical word")


def sel_clause_verb(side: Side, _: str) -> Span:
    """The main verb of the clause introduced by the first relativiser ("that"/"who"):
    the first lexical verb after it ("that Sharon *talked* about")."""
    rel = next((j for j in range(side.n) if lx.REL in side.tags[j]), None)
    if rel is None:
        raise NotFound("a relativiser")
    aux_verb = None
    for j in range(rel + 1, side.n):
        t = side.tags[j]
        if lx.V in t and lx.AUX not in t:
            return (j, j)
        if lx.V in t and aux_verb is None:
            aux_verb = j
    return _one(aux_verb, "a verb after the relativiser")


def sel_be_before(side: Side, _: str) -> Span:
    for j in range(_crit(side)[0] - 1, -1, -1):
        if side.lower[j] in lx.BE_FORMS:
            return (j, j)
    raise NotFound("a form of 'be' before the participle")


def sel_verb_before(side: Side, _: str) -> Span:
    for j in range(_crit(side)[0] - 1, -1, -1):
        t = side.tags[j]
        if lx.V in t and lx.AUX not in t:
            return (j, j)
    raise NotFound("a verb before the critical word")


def sel_next_word(side: Side, _: str) -> Span:
    j = _crit(side)[1] + 1
    return _one(j if j < side.n and side.is_word[j] else None, "a word after the critical word")


def _first(side: Side, pred: Callable[[int], bool], what: str) -> Span:
    for j in range(side.n):
        if side.is_word[j] and pred(j):
            return (j, j)
    raise NotFound(what)


def sel_reflexive(side: Side, _: str) -> Span:
    return _first(side, lambda j: lx.REFL in side.tags[j], "a reflexive")


def sel_expletive(side: Side, _: str) -> Span:
    return _first(side, lambda j: side.lower[j] == "there", "expletive 'there'")


def sel_expletive_it(side: Side, _: str) -> Span:
    return _first(side, lambda j: side.lower[j] == "it", "expletive 'it'")


def sel_aux_first(side: Side, _: str) -> Span:
    return _first(side, lambda j: lx.AUX in side.tags[j], "an auxiliary")


def sel_quantifier(side: Side, _: str) -> Span:
    return _first(side, lambda j: lx.D in side.tags[j], "a determiner/quantifier")


def sel_wh_word(side: Side, _: str) -> Span:
    return _first(side, lambda j: side.lower[j] in ("who", "what", "which", "whose"), "a wh-word")


def sel_last_word(side: Side, _: str) -> Span:
    w = _words(side)
    return _one(w[-1] if w else None, "a word")


def sel_word_after_diff(side: Side, _: str) -> Span:
    if not side.diffs:
        raise NotFound("a differing word")
    j = side.diffs[-1] + 1
    return _one(j if j < side.n and side.is_word[j] else None, "a word after the differing words")


def sel_filler(side: Side, _: str) -> Span:
    for i in side.diffs:
        if side.lower[i] in ("who", "what", "which", "whose"):
            return (i, i)
    thats = [i for i in side.diffs if side.lower[i] == "that"]
    for i in thats:  # a relativiser right after its head noun: the noun is the filler
        if i > 0 and lx.N in side.tags[i - 1]:
            return (i - 1, i - 1)
    if thats:  # a complementiser "that"
        return (thats[0], thats[0])
    raise NotFound("a differing wh-word or relativiser (the filler)")


def _last_and(side: Side) -> int:
    ands = [j for j in range(side.n) if side.lower[j] == "and"]
    if not ands:
        raise NotFound("a coordination with 'and'")
    return ands[-1]


def sel_conjunct_antecedent(side: Side, _: str) -> Span:
    a = _last_and(side)
    for j in range(a - 1, -1, -1):
        if lx.N in side.tags[j]:
            return (j, j)
    raise NotFound("a noun before 'and' (the antecedent)")


def sel_remnant(side: Side, _: str) -> Span:
    a = _last_and(side)
    for j in range(side.n - 1, a, -1):
        if side.is_word[j] and not side.tags[j] & {lx.N, lx.NMOD, lx.P}:
            return (j, j)
    raise NotFound("an ellipsis remnant after 'and'")


SELECTORS: dict[str, Callable[[Side, str], Span]] = {
    "diff": sel_diff,
    "prefix_word": sel_prefix_word,
    "two_prefix_word": sel_two_prefix_word,
    "determiner_before": sel_determiner_before,
    "subject_head": sel_subject_head,
    "local_subject": sel_local_subject,
    "object_after": sel_object_after,
    "infinitive": sel_infinitive,
    "main_verb": sel_main_verb,
    "clause_verb": sel_clause_verb,
    "be_before": sel_be_before,
    "verb_before": sel_verb_before,
    "next_word": sel_next_word,
    "reflexive": sel_reflexive,
    "expletive": sel_expletive,
    "expletive_it": sel_expletive_it,
    "aux_first": sel_aux_first,
    "quantifier": sel_quantifier,
    "wh_word": sel_wh_word,
    "last_word": sel_last_word,
    "word_after_diff": sel_word_after_diff,
    "filler": sel_filler,
    "conjunct_antecedent": sel_conjunct_antecedent,
    "remnant": sel_remnant,
}


def run_selector(spec: str, side: Side) -> Span:
    name, _, arg = spec.partition(":")
    return SELECTORS[name](side, arg)


# ---- one pair -----------------------------------------------------------------------------
@dataclass
class PhraseRecord:
    """The annotation of one pair (character spans ``[start, end)``; -1 where absent)."""

    supported: bool = False
    reason: str = ""
    rule: str = ""
    critical_phrase: str = ""
    phrase_start: int = -1
    phrase_end: int = -1
    bad_phrase: str = ""
    bad_phrase_start: int = -1
    bad_phrase_end: int = -1
    critical_word: str = ""
    critical_start: int = -1
    critical_end: int = -1
    bad_critical_word: str = ""
    bad_critical_start: int = -1
    bad_critical_end: int = -1
    context_word: str = ""
    context_start: int = -1
    context_end: int = -1
    bad_context_start: int = -1
    bad_context_end: int = -1


def _explicit_span(side: Side, start: int, end: int) -> Span | None:
    if start < 0:
        return None
    first = side.word_at_char(start)
    last = side.word_at_char(end - 1)
    if first >= side.n or last < first:
        raise NotFound(f"explicit span [{start}, {end}) covers no word")
    return (first, last)


def _to_bad(span: Span, al: Alignment, good: Side, bad: Side, spec: str | None,
            moved: bool = False) -> Span:
    """The bad-sentence word for a good-sentence selection: its aligned partner when shared;
    for a word the rule says only moves (``moved``), the same word among the bad sentence's
    differing words; else the same selector run on the bad sentence (explicit spans: the
    differing block)."""
    a, b = al.good_to_bad[span[0]], al.good_to_bad[span[1]]
    if a >= 0 and b >= 0:
        return (a, b)
    if moved and span[0] == span[1]:
        word = good.lower[span[0]]
        rank = sum(1 for i in good.diffs if i < span[0] and good.lower[i] == word)
        same = [j for j in bad.diffs if bad.lower[j] == word]
        if same:
            j = same[min(rank, len(same) - 1)]
            return (j, j)
    if spec is not None:
        return run_selector(spec, bad)
    j1 = min(al.good_block[i][0] for i in range(span[0], span[1] + 1))
    j2 = max(al.good_block[i][1] for i in range(span[0], span[1] + 1))
    words = [j for j in range(j1, j2) if bad.is_word[j]]
    if not words:
        raise NotFound("a bad-sentence counterpart of the explicit span")
    return (words[0], words[-1])


@dataclass(frozen=True)
class Selection:
    """Word-index ranges of the critical and context word in both sentences."""

    good_critical: Span
    bad_critical: Span
    good_context: Span | None
    bad_context: Span | None


def select_words(rule: Rule, good: Side, bad: Side, al: Alignment,
                 x_crit: Span | None = None, x_ctx: Span | None = None) -> Selection:
    """Critical and context word by ``rule`` (or the explicit spans), in good and bad.
    Raises :class:`NotFound`."""
    crit_spec = None if x_crit else rule.critical
    g_crit = x_crit or run_selector(rule.critical, good)
    good.critical = g_crit
    b_crit = _to_bad(g_crit, al, good, bad, crit_spec, rule.critical_moves)
    bad.critical = b_crit
    ctx_spec = None if x_ctx else rule.context
    g_ctx = x_ctx or (run_selector(rule.context, good) if rule.context else None)
    if g_ctx is None:
        b_ctx = None
    elif rule.context_each_side and ctx_spec is not None:
        b_ctx = run_selector(ctx_spec, bad)
    else:
        b_ctx = _to_bad(g_ctx, al, good, bad, ctx_spec)
    return Selection(g_crit, b_crit, g_ctx, b_ctx)


def phrase_spans(good: Side, bad: Side, al: Alignment, sel: Selection) -> tuple[Span, Span]:
    """Word ranges of the phrase: good = first to last of {differing words, critical,
    context}; bad = its differing words, critical and context words and the bad positions of
    the good phrase's shared words."""
    need = [*good.diffs, *sel.good_critical, *(sel.good_context or ())]
    lo, hi = min(need), max(need)
    bneed = [*bad.diffs, *sel.bad_critical, *(sel.bad_context or ())]
    bneed += [al.good_to_bad[i] for i in range(lo, hi + 1) if al.good_to_bad[i] >= 0 and good.is_word[i]]
    return (lo, hi), (min(bneed), max(bneed))


def annotate_pair(
    good_text: str, bad_text: str, rule: Rule, lexicon: lx.Lexicon, meta: dict[str, Any] | None = None,
    explicit_critical: tuple[int, int] = (-1, -1), explicit_context: tuple[int, int] = (-1, -1),
) -> PhraseRecord:
    """Critical phrase of one pair under ``rule`` (explicit ``[start, end)`` character spans
    of the good sentence override its selectors; (-1, -1) = not given)."""
    rec = PhraseRecord(rule=rule.name)
    if not rule.supported:
        rec.reason = rule.reason
        return rec
    good = make_side("good", good_text, lexicon, meta or {})
    bad = make_side("bad", bad_text, lexicon, meta or {})
    al = align(good, bad)
    if not good.diffs and not bad.diffs:
        rec.reason = "the sentences differ only in capitalisation or punctuation: no differing word"
        return rec
    try:
        x_crit = _explicit_span(good, *explicit_critical)
        x_ctx = _explicit_span(good, *explicit_context)
        sel = select_words(rule, good, bad, al, x_crit, x_ctx)
    except NotFound as e:
        rec.reason = f"rule {rule.name}: could not find {e}"
        return rec
    if x_crit or x_ctx:
        rec.rule = "explicit" if (x_crit and x_ctx) else f"{rule.name}+explicit"
    g_crit, g_ctx = sel.good_critical, sel.good_context
    if g_ctx is not None and not (g_ctx[1] < g_crit[0] or g_crit[1] < g_ctx[0]):
        rec.reason = f"rule {rule.name}: critical and context word coincide ({good.text_of(g_crit)!r})"
        return rec
    g_phrase, b_phrase = phrase_spans(good, bad, al, sel)
    rec.supported = True
    rec.phrase_start, rec.phrase_end = good.char_span(g_phrase)
    rec.critical_phrase = good.text_of(g_phrase)
    rec.bad_phrase_start, rec.bad_phrase_end = bad.char_span(b_phrase)
    rec.bad_phrase = bad.text_of(b_phrase)
    rec.critical_start, rec.critical_end = good.char_span(g_crit)
    rec.critical_word = good.text_of(g_crit)
    rec.bad_critical_start, rec.bad_critical_end = bad.char_span(sel.bad_critical)
    rec.bad_critical_word = bad.text_of(sel.bad_critical)
    if g_ctx is not None and sel.bad_context is not None:
        rec.context_start, rec.context_end = good.char_span(g_ctx)
        rec.context_word = good.text_of(g_ctx)
        rec.bad_context_start, rec.bad_context_end = bad.char_span(sel.bad_context)
    return rec


def rule_for(uid: str) -> Rule:
    return RULES.get(uid, GENERIC_RULE)


# ---- a whole benchmark --------------------------------------------------------------------
_META_KEYS = (
    "one_prefix_prefix", "one_prefix_word_good", "one_prefix_word_bad",
    "two_prefix_prefix_good", "two_prefix_prefix_bad", "two_prefix_word",
)


def extract_phrases(pairs: Any, lexicon: lx.Lexicon, progress: bool = False) -> Any:
    """``phrases.parquet`` rows (a DataFrame, benchmark order) for a :func:`load_pairs` frame."""
    import pandas as pd

    n = len(pairs)
    cols = {k: pairs[k].tolist() if k in pairs else [None] * n for k in _META_KEYS}
    spans = {
        k: pairs[k].tolist() if k in pairs else [-1] * n
        for k in ("explicit_critical_start", "explicit_critical_end",
                  "explicit_context_start", "explicit_context_end")
    }
    uids, goods, bads = pairs["uid"].tolist(), pairs["good"].tolist(), pairs["bad"].tolist()
    it: Sequence[int] | Any = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="phrases", unit="pair", mininterval=0.5, file=sys.stderr)
    out: list[PhraseRecord] = []
    for i in it:
        meta = {k: cols[k][i] for k in _META_KEYS}
        out.append(annotate_pair(
            goods[i], bads[i], rule_for(uids[i]), lexicon, meta,
            (int(spans["explicit_critical_start"][i]), int(spans["explicit_critical_end"][i])),
            (int(spans["explicit_context_start"][i]), int(spans["explicit_context_end"][i])),
        ))
    df = pd.DataFrame.from_records([r.__dict__ for r in out])
    for key in ("uid", "pair_id", "phenomenon", "good", "bad"):
        df[key] = pairs[key].to_numpy()
    df = df[COLUMNS]
    for c in COLUMNS:
        if c.endswith(("_start", "_end")):
            df[c] = df[c].astype("int64")
    df["supported"] = df["supported"].astype(bool)
    return df


def coverage_table(df: Any) -> Any:
    """Pairs with a phrase / pairs and mean phrase length in words, per phenomenon and paradigm."""
    import pandas as pd

    d = df.assign(
        n_words=[len([t for t in WORD_RE.findall(p) if t[0].isalnum()]) if s else 0
                 for p, s in zip(df["critical_phrase"], df["supported"])]
    )
    rows = []
    for level, keys in (("phenomenon", ["phenomenon"]), ("paradigm", ["phenomenon", "uid"])):
        for name, g in d.groupby(keys, sort=True):
            name = name if isinstance(name, tuple) else (name,)
            sup = g[g["supported"]]
            rows.append({
                "level": level, "phenomenon": name[0], "paradigm": name[1] if len(name) > 1 else "",
                "pairs": len(g), "supported": int(g["supported"].sum()),
                "coverage": float(g["supported"].mean()),
                "mean_words": float(sup["n_words"].mean()) if len(sup) else float("nan"),
                "reason": "" if len(sup) == len(g) else g.loc[~g["supported"], "reason"].mode().iat[0],
            })
    rows.append({"level": "all", "phenomenon": "all", "paradigm": "", "pairs": len(d),
                 "supported": int(d["supported"].sum()), "coverage": float(d["supported"].mean()),
                 "mean_words": float(d.loc[d["supported"], "n_words"].mean()), "reason": ""})
    return pd.DataFrame(rows)


def format_coverage(table: Any) -> str:
    lines = [f"{'phenomenon / paradigm':<58} {'phrase/pairs':>13} {'cover':>7} {'words':>6}"]
    for phen in table.loc[table["level"] == "phenomenon", "phenomenon"]:
        r = table[(table["level"] == "phenomenon") & (table["phenomenon"] == phen)].iloc[0]
        lines.append(f"{phen:<58} {r.supported:>6}/{r.pairs:<6} {r.coverage:>7.1%} {r.mean_words:>6.2f}")
        sub = table[(table["level"] == "paradigm") & (table["phenomenon"] == phen)]
        for r in sub.itertuples():
            note = f"  [{r.reason}]" if r.reason else ""
            lines.append(f"  {r.paradigm:<56} {r.supported:>6}/{r.pairs:<6} {r.coverage:>7.1%} "
                         f"{r.mean_words:>6.2f}{note}")
    r = table[table["level"] == "all"].iloc[0]
    lines.append(f"{'all':<58} {r.supported:>6}/{r.pairs:<6} {r.coverage:>7.1%} {r.mean_words:>6.2f}")
    return "\n".join(lines)


# ---- stage --------------------------------------------------------------------------------
def load_lexicon(lexicon: str | Path | None, benchmark: str | Path) -> tuple[lx.Lexicon, str]:
    """The lexicon given, else ``vocabulary.csv`` beside the benchmark, else closed classes only."""
    path = Path(lexicon) if lexicon else lx.default_lexicon_path(benchmark)
    if path is None:
        return lx.Lexicon(), ""
    return lx.Lexicon.load(path), str(path)


def write_phrases(
    benchmark: str | Path, out: str | Path, paradigms: list[str] | None = None,
    pairs_per_paradigm: int = 0, seed: int = 0, skip_invalid: bool = False,
    lexicon: str | Path | None = None, force: bool = False, quiet: bool = False,
) -> Any:
    """Load a benchmark, annotate every pair, write ``out/phrases.parquet``; returns the frame."""
    from grokscope import store
    from grokscope.data.benchmark import benchmark_fingerprint, load_pairs

    study = store.Study(out)
    t0 = time.perf_counter()
    pairs = load_pairs(benchmark, paradigms=paradigms, pairs_per_paradigm=pairs_per_paradigm,
                       seed=seed, skip_invalid=skip_invalid)
    for msg in pairs.attrs.get("skipped", []):
        print(f"grokscope phrases: skipped invalid pair: {msg}", file=sys.stderr)
    fp = benchmark_fingerprint(pairs)
    lex, lex_path = load_lexicon(lexicon, benchmark)
    meta = {"benchmark": str(benchmark), "benchmark_fingerprint": fp, "lexicon": lex_path,
            "rules_version": RULES_VERSION, "skipped": len(pairs.attrs.get("skipped", []))}
    if not force and study.has_phrases():
        old = store.read_parquet_metadata(study.phrases_path)
        if old.get("benchmark_fingerprint") == fp and old.get("rules_version") == RULES_VERSION \
                and old.get("lexicon") == lex_path:
            import pandas as pd

            if not quiet:
                print(f"grokscope phrases: {study.phrases_path} is up to date (use --force to redo)")
            return pd.read_parquet(study.phrases_path)
    df = extract_phrases(pairs, lex, progress=not quiet)
    store.write_parquet(study.phrases_path, df, metadata=meta)
    if not quiet:
        print(format_coverage(coverage_table(df)))
        print(f"wrote {study.phrases_path}: {len(df)} pairs, {int(df['supported'].sum())} with a phrase, "
              f"in {time.perf_counter() - t0:.1f}s" + ("" if lex_path else " (no lexicon: closed classes only)"))
    return df


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmark", required=True,
                        help="BLiMP directory of jsonl files, a jsonl file of pairs, or 'nyu-mll/blimp' (hub)")
    parser.add_argument("--out", required=True, help="study directory (writes STUDY/phrases.parquet)")
    parser.add_argument("--paradigms", nargs="+", default=None, metavar="UID",
                        help="only these paradigms (uid values); default all")
    parser.add_argument("--pairs-per-paradigm", type=int, default=0,
                        help="seeded subsample of N pairs per paradigm (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-invalid", action="store_true",
                        help="report and skip invalid pairs instead of stopping")
    parser.add_argument("--lexicon", default=None,
                        help="BLiMP vocabulary.csv (default: the one beside --benchmark, if any)")
    parser.add_argument("--force", action="store_true", help="recompute even if phrases.parquet is up to date")


def run(args: argparse.Namespace) -> int:
    if args.pairs_per_paradigm < 0:
        raise GrokscopeError(f"--pairs-per-paradigm must be >= 0, got {args.pairs_per_paradigm}")
    write_phrases(args.benchmark, args.out, paradigms=args.paradigms,
                  pairs_per_paradigm=args.pairs_per_paradigm, seed=args.seed,
                  skip_invalid=args.skip_invalid, lexicon=args.lexicon, force=args.force)
    return 0


def run_stage(cfg: Any, study: Any) -> None:
    """``grokscope run``: annotate ``[benchmark] path`` into ``study/phrases.parquet`` (resumes:
    skipped when it exists for the same benchmark, rules and lexicon)."""
    b = cfg.benchmark
    if not b.path:
        raise DataError(f"{cfg.source or 'config'}: [benchmark] path is empty; give a BLiMP directory, "
                        "a jsonl file of pairs or 'nyu-mll/blimp'")
    if b.path == "testbed":
        path = Path(study.root) / "testbed" / "pairs.jsonl"
        if not path.exists():
            raise MissingStageError("testbed pairs", str(path), "grokscope demo")
    elif b.path.removeprefix("hf:") == "nyu-mll/blimp" and not cfg.resolve_path(b.path).exists():
        path = b.path
    else:
        path = cfg.resolve_path(b.path)
    write_phrases(path, study.root, paradigms=b.paradigms or None,
                  pairs_per_paradigm=b.pairs_per_paradigm, seed=cfg.study.seed,
                  skip_invalid=b.skip_invalid,
                  lexicon=cfg.resolve_path(b.lexicon) if b.lexicon else None)
