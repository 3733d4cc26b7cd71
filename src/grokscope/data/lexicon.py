"""Word classes for the phrase rules, from BLiMP's own lexicon.

BLiMP's sentences were generated from ``vocabulary.csv``: one row per expression (a word or a
fixed multi-word unit such as "grocery store", "sister of", "a lot of", "the Borgias") with its
CCG ``category``, a finer ``category_2`` and feature columns (``noun``, ``verb``, ``NPI``,
``quantifier``, …). :class:`Lexicon` turns it into coarse word classes and tags a tokenised
sentence by greedy longest match, so the rules can ask "which word is the determiner / the
head noun / the auxiliary" instead of matching strings.

A small closed-class list (English function words that BLiMP's lexicon leaves out, such as
"not", "only", "and", numerals) completes it. Without a lexicon file the closed classes
alone are used and any other word counts as open-class (noun, verb or adjective).
"""
from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grokscope.core.errors import DataError

# Coarse classes used by the rules.
N = "N"  # noun (common or proper); the head of a noun expression
NMOD = "NMOD"  # non-head word inside a multi-word noun ("grocery" in "grocery store")
D = "D"  # determiner / quantifier ("this", "every", "a lot of")
V = "V"  # lexical verb
AUX = "AUX"  # auxiliary, modal or copula
ADJ = "ADJ"
REFL = "REFL"  # reflexive ("herself")
PRON = "PRON"  # personal pronoun ("she", "him")
WH = "WH"  # wh-word ("who", "what", "which", "whose")
REL = "REL"  # relativiser / complementiser ("that", "who")
P = "P"  # preposition or particle
EXPL = "EXPL"  # expletive ("there", "it")
ADV = "ADV"
NEG = "NEG"  # "not"
CONJ = "CONJ"
NUM = "NUM"
POSS = "POSS"  # possessor ("Lucille's") — not the head of its noun phrase
EMB = "EMB"  # verb taking a finite clause ("imagine", "explain", "say")

# English function words BLiMP's lexicon does not list (grammar, not data).
CLOSED_CLASS: dict[str, frozenset[str]] = {
    **{w: frozenset({NUM, D}) for w in
       "one two three four five six seven eight nine ten".split()},
    **{w: frozenset({D}) for w in
       "the a an this these those some every each all most many few no several more fewer least".split()},
    **{w: frozenset({AUX}) for w in
       "be been being is are was were am has have had do does did can could will would shall should "
       "may might must".split()},
    **{w: frozenset({REFL}) for w in "himself herself itself themselves myself yourself ourselves".split()},
    **{w: frozenset({PRON}) for w in "he she they him her them we us you i me".split()},
    **{w: frozenset({ADV}) for w in
       "only even really clearly certainly fortunately probably almost also often "
       "usually ever never here".split()},
    "not": frozenset({NEG}),
    "and": frozenset({CONJ}),
    "or": frozenset({CONJ}),
    "than": frozenset({P}),
    "as": frozenset({P}),
    "at": frozenset({P}),
    "before": frozenset({P}),
    "after": frozenset({P}),
    "while": frozenset({P}),
    "without": frozenset({P}),
    "to": frozenset({P}),
    "of": frozenset({P}),
    "about": frozenset({P}),
    "by": frozenset({P}),
    "from": frozenset({P}),
    "with": frozenset({P}),
    "there": frozenset({EXPL}),
    "it": frozenset({EXPL, PRON}),
    "who": frozenset({WH, REL}),
    "what": frozenset({WH}),
    "which": frozenset({WH, REL}),
    "whose": frozenset({WH}),
    "that": frozenset({D, REL}),
}

BE_FORMS = frozenset(
    "be been being is are was were am isn't aren't wasn't weren't".split()
)

_PREPOSITIONS = frozenset(
    "of about to from with by for at in on around through like up down out into over".split()
)


@dataclass(frozen=True)
class LexEntry:
    """Classes of each word of one expression (a word or a fixed multi-word unit)."""

    words: tuple[str, ...]
    classes: tuple[frozenset[str], ...]


def _entry_classes(row: dict[str, str]) -> frozenset[str]:
    cat, cat2 = row.get("category", ""), row.get("category_2", "")
    classes: set[str] = set()
    if row.get("noun") == "1" or cat in ("N", "N/NP", "N\\NP[poss]", "N/S") or cat2 in ("N", "RelN"):
        classes.add(N)
    if row.get("verb") == "1":
        classes.add(V)
    if cat == "(S\\NP)/S" or cat2 == "V_embedding":
        classes.add(EMB)
    if cat2 in ("aux", "modal", "copula"):
        classes.add(AUX)
    if cat == "N/N" or cat2.startswith("Adj") or cat2 in ("adjective", "adj"):
        classes.add(ADJ)
    if cat == "(S/(S\\NP))/N" or cat2 in ("D", "DP", "poss_det") or cat == "D[poss]":
        classes.add(D)
    if cat2 == "refl":
        classes.add(REFL)
    if cat2 in ("proNOM", "proACC", "nom_pronoun", "acc_pronoun", "poss_pronoun"):
        classes.add(PRON)
    if cat2 in ("NP_wh", "D_wh"):
        classes.add(WH)
    if cat2 == "rel":
        classes.add(REL)
    if cat2 == "expletive":
        classes.add(EXPL)
    if cat2 in ("Adv",):
        classes.add(ADV)
    if cat2 in ("preposition", "P", "P_neg", "PP") or cat in ("PP", "PP/NP"):
        classes.add(P)
    if row.get("NPI") == "1":
        classes.add(ADV)
    return frozenset(classes)


def _expression_entry(expression: str, classes: frozenset[str]) -> LexEntry:
    """Spread an expression's classes over its words. A multi-word noun's head is its last
    word before a preposition ("newspaper article about" → "article"), earlier words are
    modifiers (NMOD), "the" a determiner ("the Borgias"); a multi-word verb's first word is the
    verb and the rest particles ("talked about", "fell asleep"); any other unit ("out in the
    open", "a lot of") gives its classes to every word."""
    words = tuple(expression.lower().split())
    if len(words) == 1:
        return LexEntry(words, (classes,))
    out: list[set[str]] = [set() for _ in words]
    if N in classes:
        content = [i for i, w in enumerate(words) if w not in _PREPOSITIONS and w != "the"]
        for i, w in enumerate(words):
            if w in _PREPOSITIONS:
                out[i].add(P)
            elif w == "the":
                out[i].add(D)
        if content:
            out[content[-1]] |= {N}
            for i in content[:-1]:
                out[i].add(NMOD)
    elif V in classes:
        out[0] |= classes
        for s in out[1:]:
            s.add(P)
    else:
        for s in out:
            s |= classes
    return LexEntry(words, tuple(frozenset(s) for s in out))


class Lexicon:
    """Expression → word classes; :meth:`tag` classes every word of a tokenised sentence."""

    def __init__(self, entries: Iterable[LexEntry] = (), capitalised: Iterable[str] = ()) -> None:
        #: words the lexicon spells with a capital (its proper nouns, "I", "CEO"): they keep it mid-sentence
        self.capitalised = frozenset(capitalised)
        self._single: dict[str, set[str]] = {w: set(c) for w, c in CLOSED_CLASS.items()}
        self._multi: dict[tuple[str, ...], list[set[str]]] = {}
        for e in entries:
            if len(e.words) == 1:
                self._single.setdefault(e.words[0], set()).update(e.classes[0])
            else:
                slot = self._multi.setdefault(e.words, [set() for _ in e.words])
                for s, c in zip(slot, e.classes):
                    s.update(c)
        self.max_len = max((len(k) for k in self._multi), default=1)
        self._multi_first: dict[str, int] = {}  # first word -> longest expression starting with it
        for k in self._multi:
            self._multi_first[k[0]] = max(self._multi_first.get(k[0], 0), len(k))
        self._frozen_single = {w: frozenset(c) for w, c in self._single.items()}
        self._frozen_multi = {k: tuple(frozenset(c) for c in v) for k, v in self._multi.items()}
        self.n_expressions = len(self._single) + len(self._multi)

    @classmethod
    def load(cls, path: str | Path) -> Lexicon:
        """Read BLiMP's ``vocabulary.csv`` (columns ``expression``, ``category``, …)."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: lexicon file not found (expected BLiMP's vocabulary.csv)")
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "expression" not in reader.fieldnames:
                raise DataError(f"{path}: not a BLiMP lexicon: it has no 'expression' column")
            entries = []
            capitalised: set[str] = set()
            for row in reader:
                expr = (row.get("expression") or "").strip()
                if expr:
                    entries.append(_expression_entry(expr, _entry_classes(row)))
                    capitalised.update(w for w in expr.split() if w[:1].isupper())
        return cls(entries, capitalised)

    def classes(self, word: str) -> frozenset[str]:
        return self._frozen_single.get(word.lower(), frozenset())

    def tag(self, words: Sequence[str]) -> list[frozenset[str]]:
        """Classes of each word (lower-cased input), multi-word expressions matched greedily
        longest-first; possessors ("Lucille's", or a noun followed by a lone "'") get POSS."""
        n = len(words)
        tags: list[frozenset[str]] = [frozenset()] * n
        i = 0
        while i < n:
            matched = False
            for k in range(min(self._multi_first.get(words[i], 0), n - i), 1, -1):
                entry = self._frozen_multi.get(tuple(words[i:i + k]))
                if entry is not None:
                    tags[i:i + k] = list(entry)
                    i += k
                    matched = True
                    break
            if not matched:
                w = words[i]
                t = self._frozen_single.get(w)
                if t is None and w.endswith("'s") and len(w) > 2:
                    t = frozenset({POSS})
                elif t is None and w.endswith("n't"):
                    t = frozenset({AUX})
                tags[i] = t if t is not None else frozenset()
                i += 1
        for i in range(n - 1):
            if words[i + 1] in ("'", "'s") and N in tags[i]:
                tags[i] = tags[i] | {POSS}
        return tags


def default_lexicon_path(benchmark: str | Path | None) -> Path | None:
    """``vocabulary.csv`` next to a BLiMP directory / file, if there is one."""
    if benchmark is None:
        return None
    p = Path(benchmark)
    for cand in (p / "vocabulary.csv", p.parent / "vocabulary.csv"):
        if cand.is_file():
            return cand
    return None
