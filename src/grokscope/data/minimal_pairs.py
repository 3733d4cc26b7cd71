"""The testbed's minimal pairs (:mod:`grokscope.data.testbed`): sentences of the grammar in
BLiMP form with the critical and context spans, generated so that no pair's phrase lies inside
another pair's (good or bad)."""
from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grokscope.core.errors import ConfigError
from grokscope.data.grammar import (
    INTRANSITIVE,
    OBJECT_NOUNS,
    PARADIGMS,
    PEOPLE,
    PLACES,
    PREPOSITIONS,
    REFLEXIVE,
    REFLEXIVE_PAST,
    TRANSITIVE_PAST,
)

if TYPE_CHECKING:  # pragma: no cover
    from grokscope.data.testbed import TestbedSettings

_WORD = re.compile(r"[A-Za-z]+")


@dataclass
class Pair:
    uid: str
    pair_id: int
    good: str
    bad: str
    critical: tuple[int, int]  # char span in good
    context: tuple[int, int]
    phrase: str  # critical phrase in good (context .. critical)
    bad_phrase: str
    unit: str  # planting unit

    def to_json(self) -> dict[str, Any]:
        return {
            "sentence_good": self.good, "sentence_bad": self.bad, "UID": self.uid,
            "linguistics_term": PARADIGMS[self.uid], "pairID": self.pair_id,
            "critical": list(self.critical), "context": list(self.context),
            "critical_phrase": self.phrase, "bad_critical_phrase": self.bad_phrase, "unit": self.unit,
        }


def sentence_text(words: Iterable[str]) -> str:
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def word_ngrams(sentence: str, n_max: int) -> Iterable[tuple[str, ...]]:
    words = [w.lower() for w in _WORD.findall(sentence)]
    for n in range(2, n_max + 1):
        for i in range(len(words) - n + 1):
            yield tuple(words[i:i + n])


def phrase_key(phrase: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _WORD.findall(phrase))


def _span(text: str, word: str, start: int = 0) -> tuple[int, int]:
    m = re.compile(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])").search(text, start)
    assert m is not None, (text, word)
    return m.start(), m.end()


def _make_pair(uid: str, good_words: list[str], bad_words: list[str], ctx_index: int, crit_index: int,
               ) -> tuple[str, str, tuple[int, int], tuple[int, int], str, str]:
    good, bad = sentence_text(good_words), sentence_text(bad_words)
    # character offsets of each word in good / bad
    def offsets(words: list[str]) -> list[tuple[int, int]]:
        out, pos = [], 0
        for w in words:
            out.append((pos, pos + len(w)))
            pos += len(w) + 1
        return out
    go, bo = offsets(good_words), offsets(bad_words)
    lo, hi = min(ctx_index, crit_index), max(ctx_index, crit_index)
    phrase = good[go[lo][0]:go[hi][1]]
    bad_phrase = bad[bo[lo][0]:bo[hi][1]]
    return good, bad, go[crit_index], go[ctx_index], phrase, bad_phrase


def _subject_np(rng: random.Random, person: tuple[str, str, str], plural: bool) -> list[str]:
    return ["the", person[1] if plural else person[0]]


class _PairBuilder:
    """The pairs made so far and their phrases: a new pair is kept only if no phrase of one pair
    lies inside another's (so exposure to one never counts as exposure to another)."""

    N_MAX = 8

    def __init__(self) -> None:
        self.pairs: list[Pair] = []
        self.keys: dict[tuple[str, ...], str] = {}  # phrase key (good or bad) -> the good phrase it belongs to

    def conflicts(self, phrase: str, bad_phrase: str) -> bool:
        pk, bk = phrase_key(phrase), phrase_key(bad_phrase)
        # the new good phrase must not contain a different known phrase ...
        for g in word_ngrams(phrase, self.N_MAX):
            if g in self.keys and self.keys[g] != phrase:
                return True
        # ... and no known good phrase may contain the new good or bad phrase
        for known in set(self.keys.values()):
            if known == phrase:
                continue
            grams = set(word_ngrams(known, self.N_MAX))
            if pk in grams or bk in grams:
                return True
        return False

    def add(self, uid: str, gw: list[str], bw: list[str], ci: int, ki: int, unit: str | None = None) -> bool:
        good, bad, crit, ctx, phrase, bad_phrase = _make_pair(uid, gw, bw, ci, ki)
        if self.conflicts(phrase, bad_phrase):
            return False
        self.keys[phrase_key(phrase)] = phrase
        self.keys[phrase_key(bad_phrase)] = phrase
        pid = self.count(uid)
        self.pairs.append(Pair(uid, pid, good, bad, crit, ctx, phrase, bad_phrase, unit or f"{uid}:{phrase.lower()}"))
        return True

    def count(self, uid: str) -> int:
        return sum(1 for p in self.pairs if p.uid == uid)


def _det_noun_pairs(b: _PairBuilder, det_nouns: list[tuple[str, str]], frames: int, rng: random.Random) -> None:
    for sg, pl in det_nouns:
        verbs = rng.sample(TRANSITIVE_PAST, frames * 2)
        for k in range(frames * 2):
            plural = k % 2 == 1
            person = rng.choice(PEOPLE)
            subj = _subject_np(rng, person, rng.random() < 0.5)
            det = "these" if plural else "this"
            gw = subj + [verbs[k], det, pl if plural else sg]
            bw = subj + [verbs[k], det, sg if plural else pl]
            b.add("det_noun_agreement", gw, bw, len(gw) - 2, len(gw) - 1, unit=f"det_noun_agreement:{sg}")


def _subject_verb_words(rng: random.Random) -> tuple[list[str], list[str], int, int]:
    person, verb, plural = rng.choice(PEOPLE), rng.choice(INTRANSITIVE), rng.random() < 0.5
    subj = _subject_np(rng, person, plural)
    place = rng.choice(PLACES).split()
    return subj + [verb[1 if plural else 0]] + place, subj + [verb[0 if plural else 1]] + place, 1, 2


def _distractor_words(rng: random.Random) -> tuple[list[str], list[str], int, int]:
    head, other = rng.sample(PEOPLE, 2)
    verb, plural = rng.choice(INTRANSITIVE), rng.random() < 0.5
    subj = _subject_np(rng, head, plural) + [rng.choice(PREPOSITIONS), "the", other[0] if plural else other[1]]
    gw = subj + [verb[1 if plural else 0]]
    return gw, subj + [verb[0 if plural else 1]], 1, len(gw) - 1


def _anaphor_words(rng: random.Random) -> tuple[list[str], list[str], int, int]:
    person = rng.choice([p for p in PEOPLE if p[2]])
    verb, plural = rng.choice(REFLEXIVE_PAST), rng.random() < 0.5
    subj = _subject_np(rng, person, plural)
    good_refl = REFLEXIVE["pl" if plural else person[2]]
    bad_refl = REFLEXIVE[person[2]] if plural else REFLEXIVE["pl"]
    return subj + [verb, good_refl], subj + [verb, bad_refl], 1, 3


_SAMPLED_PARADIGMS = {"subject_verb_agreement": _subject_verb_words, "distractor_agreement": _distractor_words,
                      "anaphor_agreement": _anaphor_words}


def generate_pairs(settings: TestbedSettings, rng: random.Random) -> tuple[list[Pair], list[tuple[str, str]]]:
    """The benchmark pairs (each paradigm's pairs, with no phrase of one pair inside another's)."""
    det_nouns = list(OBJECT_NOUNS[: settings.n_nouns])
    b = _PairBuilder()
    if "det_noun_agreement" in settings.paradigms:
        _det_noun_pairs(b, det_nouns, settings.frames_per_noun, rng)
    n = settings.pairs_per_paradigm
    for uid, words in _SAMPLED_PARADIGMS.items():
        attempts = 0
        while uid in settings.paradigms and b.count(uid) < n and attempts < 100 * n:
            attempts += 1
            b.add(uid, *words(rng))
    for uid in settings.paradigms:
        if uid != "det_noun_agreement" and b.count(uid) < n:
            raise ConfigError(
                f"[testbed]: could only make {b.count(uid)} distinct pairs for {uid} "
                f"(asked for pairs_per_paradigm = {n}); lower it"
            )
    return b.pairs, det_nouns
