"""Selectors: the functions a paradigm's rule (:mod:`grokscope.phrases.rules`) names to find the
critical and the context word of one sentence, read from BLiMP's lexicon classes and the pair's
``one_prefix_*`` / ``two_prefix_*`` metadata. Each returns a word span or raises
:class:`NotFound` with the reason."""
from __future__ import annotations

from collections.abc import Callable

from grokscope.data import lexicon as lx
from grokscope.phrases.words import Side, Span


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
