"""The controlled-exposure testbed: grokscope's own small English grammar.

It generates two things from one seed:

* a **pre-training corpus** (``corpus.jsonl``: one JSON document per line, ``{"id", "text"}``),
* **minimal pairs** in BLiMP format (``pairs.jsonl``: ``sentence_good``, ``sentence_bad``,
  ``UID``, ``linguistics_term``, ``pairID`` + explicit ``critical``/``context`` character
  spans in the good sentence),

for four paradigms: determiner-noun agreement ("this lantern" / "this lanterns"),
subject-verb agreement ("the baker sleeps" / "the baker sleep"), subject-verb agreement across
a distractor ("the kings near the sailor sleep") and anaphor agreement ("the nuns praised
themselves" / "... herself").

The experimenter decides which **critical phrases** occur in training, how often and from
where on. The background text of the corpus never contains any benchmark phrase (good or
bad, any capitalisation: every sentence is checked against the phrase set); the phrases of
*planted* units are then inserted ``frequency`` times each, into documents drawn from the
part of the corpus where the unit's schedule allows them. A unit is one noun for
determiner-noun agreement (both "this N" and "these Ns": a withheld noun never follows
"this"/"these", but occurs after "the", "a", "my", as a subject, in "there are many Ns" ...)
and one good phrase for the other paradigms. With ``planting=False`` every unit is planted
(every noun occurs in every frame), so no systematic seen/unseen gap is expected.

``ground_truth.json`` records, per unit and per pair, whether it was planted, how often, and
from which fraction of the corpus (= of training, since ``prepare`` keeps document order when
``[data] shuffle = "none"``, as the demo's study sets it) and the exact count of each phrase in the corpus.
"""
from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grokscope.core.errors import ConfigError
from grokscope.core.settings import check_value, section_settings, setting
from grokscope.data.grammar import (  # noqa: F401 - re-exported: the testbed's vocabulary
    ADJECTIVES,
    DET_NEUTRAL,
    DET_PL,
    DET_PL_ONLY,
    DET_SG,
    FILLER_NOUNS,
    INTRANSITIVE,
    OBJECT_NOUNS,
    PARADIGMS,
    PEOPLE,
    PEOPLE_ADJECTIVES,
    PLACES,
    PREPOSITIONS,
    REFLEXIVE,
    REFLEXIVE_PAST,
    TRANSITIVE_PAST,
)
from grokscope.data.minimal_pairs import Pair, generate_pairs, phrase_key, sentence_text, word_ngrams

# default frequency with planting off: every phrase is planted, thinly, so that its first occurrence
# falls anywhere in training and proxy-val (not seen yet) stays populated while the model learns
FREQUENCY_WITHOUT_PLANTING = 3


@dataclass
class TestbedSettings:
    """Everything that decides what the testbed generates (also the ``[testbed]`` config section)."""

    __test__ = False  # not a pytest test class

    seed: int = setting(0, "seed of the testbed (corpus, pairs and planting)")
    n_documents: int = setting(6000, "documents in the corpus", gt=0, flag="--documents")
    sentences_per_document: int = setting(8, "mean sentences per document (each has 4..2n-4)", ge=3)
    paradigms: list[str] = setting(list(PARADIGMS), "paradigms to generate", choices=PARADIGMS, sep=",")
    planting: bool = setting(True, "on: withhold a share of the critical phrases from training; off: every noun "
                                   "in every frame", onoff=True)
    planted_fraction: float = setting(0.25, "share of units whose phrases occur in training", ge=0.0, le=1.0)
    frequency: int = setting(100, "occurrences of each planted phrase in the corpus", gt=0)
    plant_start: float = setting(0.0, "planted phrases occur only from this fraction of the corpus on",
                                 ge=0.0, lt=1.0)
    late_fraction: float = setting(0.0, "share of planted units introduced late ...", ge=0.0, le=1.0)
    late_start: float = setting(0.5, "... only from this fraction of the corpus on", ge=0.0, lt=1.0)
    n_nouns: int = setting(32, f"nouns in determiner-noun pairs (2..{len(OBJECT_NOUNS)})", ge=2,
                           le=len(OBJECT_NOUNS), flag="--nouns")
    frames_per_noun: int = setting(2, "pairs per noun and number (this / these)", gt=0, le=len(TRANSITIVE_PAST))
    pairs_per_paradigm: int = setting(96, "pairs of each of the other paradigms", gt=0)
    filler_demonstratives: bool = setting(False, "this/these + filler nouns (never in a pair) in the background",
                                          onoff=True)
    number_cues: bool = setting(False, "on: pair nouns also follow number-marking determiners (a, every, two, "
                                       "many ...) in the background; off: only the/my/his ..., so their number "
                                       "shows only in the verb", onoff=True)
    attractor_sentences: float = setting(0.10, "share of background sentences whose verb agrees across a "
                                               "prepositional phrase ('the kings near the sailor sleep'); the "
                                               "other kinds keep their proportions", ge=0.0, le=0.9)
    attractor_mismatch: float = setting(0.5, "share of those sentences whose attractor differs in number from the "
                                             "head (only these tell agreement with the head from agreement with "
                                             "the nearest noun)", ge=0.0, le=1.0)
    onset_fraction: float = setting(0.0, "the rule is learnable only from this fraction of the corpus on: before "
                                         "it, every agreeing form of the background text (verb, auxiliary, "
                                         "reflexive, number-marking determiner) is drawn independently of what it "
                                         "agrees with; planted phrases still occur from plant_start", ge=0.0, lt=1.0)
    confounded: bool = setting(False, "on: exposure has no effect by construction but is confounded with ease: "
                                      "every unit gets a Zipf weight; its good and its bad phrases are planted "
                                      "equally often (frequency x weight, so the frequent are seen earlier) and "
                                      "its noun/person occurs in the background in proportion (so it is easier)",
                                onoff=True)

    def validate(self, where: str = "<config>") -> None:
        """Check every value against its declaration (:func:`grokscope.core.settings.check_value`)."""
        if not self.paradigms:
            raise ConfigError(f"{where}: [testbed] key 'paradigms': expected some of {list(PARADIGMS)}")
        for info in section_settings(TestbedSettings, "testbed"):
            check_value(info, getattr(self, info.name), where)


@dataclass
class Unit:
    name: str
    uid: str
    phrases: list[str]
    planted: bool
    start: float  # fraction of the corpus from which its phrases occur (planted only)
    weight: float = 1.0  # confounded testbed: Zipf weight (planted frequency and background frequency)
    frequency: int = 0  # occurrences of each of its phrases (and, confounded, of each bad phrase)


@dataclass
class Testbed:
    __test__ = False
    settings: TestbedSettings
    documents: list[str]
    pairs: list[Pair]
    units: list[Unit]
    phrase_counts: dict[str, int]  # planted phrase -> occurrences in the corpus
    phrase_first_doc: dict[str, int]  # planted phrase -> first document index

    def ground_truth(self) -> dict[str, Any]:
        unit_of = {u.name: u for u in self.units}
        n_docs = len(self.documents)
        pairs = []
        for p in self.pairs:
            u = unit_of[p.unit]
            pairs.append({
                "uid": p.uid, "pair_id": p.pair_id, "unit": p.unit, "phrase": p.phrase,
                "planted": u.planted, "count": self.phrase_counts.get(p.phrase, 0),
                "start_fraction": u.start if u.planted else None,
                "first_document": self.phrase_first_doc.get(p.phrase),
                "first_fraction": (self.phrase_first_doc[p.phrase] / n_docs)
                if p.phrase in self.phrase_first_doc else None,
            })
        return {
            "settings": dataclasses.asdict(self.settings),
            "n_documents": n_docs,
            "onset_document": onset_document(self.settings),  # the background carries the cue from here on
            "units": [dataclasses.asdict(u) for u in self.units],
            "pairs": pairs,
            "summary": self.summary(),
        }

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per paradigm: pairs, planted pairs, withheld pairs, planted units, earliest start."""
        unit_of = {u.name: u for u in self.units}
        out: dict[str, dict[str, Any]] = {}
        for p in self.pairs:
            u = unit_of[p.unit]
            s = out.setdefault(p.uid, {"pairs": 0, "planted_pairs": 0, "withheld_pairs": 0,
                                       "late_pairs": 0, "phenomenon": PARADIGMS[p.uid]})
            s["pairs"] += 1
            if u.planted:
                s["planted_pairs"] += 1
                if u.start > self.settings.plant_start:
                    s["late_pairs"] += 1
            else:
                s["withheld_pairs"] += 1
        return out


# --------------------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------------------
class _Grammar:
    """Random sentences of the background grammar."""

    def __init__(self, rng: random.Random, det_nouns: list[tuple[str, str]], filler: bool, cues: bool,
                 weights: dict[str, float] | None = None, attractor_share: float = 0.10,
                 attractor_mismatch: float = 0.5) -> None:
        self.rng = rng
        self.objects = list(det_nouns) + list(FILLER_NOUNS)
        self.filler = filler
        self.kinds = sentence_kinds(attractor_share, filler)
        self.mismatch = attractor_mismatch
        self.neutral = set() if cues else {sg for sg, _ in det_nouns}
        self.scramble = False  # before the planted onset: agreeing forms drawn independently
        self.weights = weights or {}  # singular noun/person -> background weight (confounded testbed)

    def _num(self, plural: bool) -> bool:
        """The number an agreeing form takes: ``plural``, or a coin when the cue is scrambled."""
        return self.rng.random() < 0.5 if self.scramble else plural

    def _pick(self, pool: Any) -> Any:
        if not self.weights:
            return self.rng.choice(pool)
        return self.rng.choices(pool, weights=[self.weights.get(x[0], 1.0) for x in pool])[0]

    def _np(self, pool: list[tuple[str, str]] | tuple, plural: bool,
            adj_pool: tuple[str, ...] = ADJECTIVES) -> list[str]:
        r = self.rng
        sg, pl = self._pick(pool)[:2]
        det = r.choice(DET_NEUTRAL if sg in self.neutral else DET_PL if self._num(plural) else DET_SG)
        words = [det]
        if r.random() < 0.25:
            words.append(r.choice(adj_pool))
        words.append(pl if plural else sg)
        if det == "a" and words[1][0] in "aeiou":
            words[0] = "an"
        return words

    def _person(self, plural: bool) -> tuple[list[str], tuple[str, str, str]]:
        r = self.rng
        person = self._pick(PEOPLE)
        det = r.choice(DET_PL if self._num(plural) else DET_SG)
        words = [det]
        if r.random() < 0.2:
            words.append(r.choice(PEOPLE_ADJECTIVES))
        words.append(person[1] if plural else person[0])
        if det == "a" and words[1][0] in "aeiou":
            words[0] = "an"
        return words, person

    def _place(self, p: float = 0.4) -> list[str]:
        return self.rng.choice(PLACES).split() if self.rng.random() < p else []

    def sentence(self) -> str:
        r = self.rng
        u = r.random()
        kind = next((k for k, upper in self.kinds if u < upper), self.kinds[-1][0])
        plural = r.random() < 0.5
        if kind == "copula":  # "the lanterns are dusty"
            pool = self.objects if r.random() < 0.7 else PEOPLE
            adjs = ADJECTIVES if pool is self.objects else PEOPLE_ADJECTIVES
            np_ = self._np(pool, plural, adjs)
            aux = r.choice(("are", "were") if self._num(plural) else ("is", "was"))
            return sentence_text(np_ + [aux, r.choice(adjs)] + self._place(0.3))
        if kind == "transitive":  # "the farmer carried my basket"
            subj, _ = self._person(r.random() < 0.5)
            obj = self._np(self.objects, plural)
            return sentence_text(subj + [r.choice(TRANSITIVE_PAST)] + obj + self._place())
        if kind == "intransitive":  # agreeing: "the bakers sleep at night"
            subj, _ = self._person(plural)
            verb = r.choice(INTRANSITIVE)[1 if self._num(plural) else 0]
            return sentence_text(subj + [verb] + self._place(0.5))
        if kind == "attractor":  # agreement across a prepositional phrase
            subj, _ = self._person(plural)
            differs = r.random() < self.mismatch  # the attractor's number differs from the head's
            other_plural = plural != differs
            attractor = self._np(self.objects, other_plural) if r.random() < 0.5 else self._person(other_plural)[0]
            verb = r.choice(INTRANSITIVE)[1 if self._num(plural) else 0]
            return sentence_text(subj + [r.choice(PREPOSITIONS)] + attractor + [verb] + self._place(0.3))
        if kind == "reflexive":  # "the queens blamed themselves"
            subj, person = self._person(plural)
            if not plural and not person[2]:
                subj, person = self._person(True)
                plural = True
            refl = REFLEXIVE["pl" if plural else person[2]] if not self.scramble else r.choice(list(REFLEXIVE.values()))
            return sentence_text(subj + [r.choice(REFLEXIVE_PAST), refl] + self._place(0.3))
        if kind == "possession":  # possession with an agreeing auxiliary: "the monks have two kettles"
            subj, _ = self._person(plural)
            aux = "have" if self._num(plural) else "has"
            return sentence_text(subj + [aux] + self._np(self.objects, r.random() < 0.5))
        if kind == "existential":  # "there are many lanterns in the kitchen"
            np_ = self._np(list(FILLER_NOUNS) if self.neutral else self.objects, plural)
            shown = self._num(plural)  # the number the determiner marks: a coin before the planted onset
            if shown and np_[0] not in DET_PL_ONLY:
                np_[0] = r.choice(("many", "two", "some", "several"))
            if not shown and np_[0] not in ("a", "an", "one"):
                np_[0] = "a"
                if np_[1][0] in "aeiou":
                    np_[0] = "an"
            return sentence_text(["there", "are" if self._num(plural) else "is"] + np_ + self._place(0.6))
        if kind == "demonstrative":  # demonstratives with filler nouns: "the clerk sold these bottles"
            subj, _ = self._person(r.random() < 0.5)
            sg, pl = r.choice(FILLER_NOUNS)
            return sentence_text(subj + [r.choice(TRANSITIVE_PAST), "these" if self._num(plural) else "this",
                                         pl if plural else sg]
                             + self._place())
        # "passive": object as subject of a passive-like frame: "my kettle was lifted near the river"
        np_ = self._np(self.objects, plural)
        aux = "were" if self._num(plural) else "was"
        verb = r.choice(("moved", "cleaned", "opened", "sold", "found", "fixed"))
        return sentence_text(np_ + [aux, verb] + self._place(0.5))


# the background's sentence kinds in the order they are drawn, and their shares with the default
# attractor share (demonstratives with filler nouns only with ``filler_demonstratives``: without it
# their share goes to the passive frame)
SENTENCE_KINDS: tuple[tuple[str, float], ...] = (
    ("copula", 0.16), ("transitive", 0.18), ("intransitive", 0.16), ("attractor", 0.10), ("reflexive", 0.10),
    ("possession", 0.08), ("existential", 0.08), ("demonstrative", 0.07), ("passive", 0.07))


def sentence_kinds(attractor_share: float, filler: bool) -> list[tuple[str, float]]:
    """Each kind with the upper end of its interval of a uniform draw: the attractor kind gets
    ``attractor_share``, the others share the rest in their default proportions."""
    default = dict(SENTENCE_KINDS)
    scale = (1.0 - attractor_share) / (1.0 - default["attractor"])
    out, upper = [], 0.0
    for kind, share in SENTENCE_KINDS:
        if kind == "demonstrative" and not filler:
            continue
        if kind == "passive" and not filler:
            share += default["demonstrative"]
        upper += attractor_share if kind == "attractor" else share * scale
        out.append((kind, upper))
    out[-1] = (out[-1][0], 1.0)
    return out


def _units(pairs: list[Pair], settings: TestbedSettings, rng: random.Random) -> list[Unit]:
    phrases: dict[str, list[str]] = {}
    uid_of: dict[str, str] = {}
    for p in pairs:
        lst = phrases.setdefault(p.unit, [])
        if p.phrase not in lst:
            lst.append(p.phrase)
        uid_of[p.unit] = p.uid
    units: list[Unit] = []
    for uid in settings.paradigms:
        names = [u for u in phrases if uid_of[u] == uid]
        order = names[:]
        rng.shuffle(order)
        every = not settings.planting or settings.confounded
        n_planted = len(names) if every else round(settings.planted_fraction * len(names))
        planted = set(order[:n_planted])
        planted_list = [u for u in order if u in planted]
        n_late = round(settings.late_fraction * len(planted_list))
        late = set(planted_list[:n_late])
        for name in names:
            start = settings.late_start if name in late else settings.plant_start
            units.append(Unit(name, uid, phrases[name], name in planted, max(start, settings.plant_start),
                              frequency=settings.frequency))
        if settings.confounded:  # Zipf weights in a random order of the paradigm's units
            for rank, name in enumerate(order, start=1):
                u = next(x for x in units if x.name == name)
                u.weight = 1.0 / rank
                u.frequency = max(1, round(settings.frequency * u.weight))
    return units


def _unit_word(unit: Unit) -> str | None:
    """The singular noun (det-noun units) or person (the others) a unit's phrases are about."""
    if unit.uid == "det_noun_agreement":
        return unit.name.split(":", 1)[1]
    forms = {w: sg for sg, pl, _ in PEOPLE for w in (sg, pl)}
    return next((forms[w] for w in unit.phrases[0].split() if w in forms), None)


def background_weights(units: list[Unit]) -> dict[str, float]:
    """Confounded testbed: singular noun/person -> its weight in the background (the largest
    weight of a unit about it; words of no unit get the median unit weight)."""
    out: dict[str, float] = {}
    for u in units:
        w = _unit_word(u)
        if w is not None:
            out[w] = max(out.get(w, 0.0), u.weight)
    median = sorted(out.values())[len(out) // 2] if out else 1.0
    for sg, *_ in list(FILLER_NOUNS) + list(PEOPLE):
        out.setdefault(sg, median)
    return out


# --------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------
def _planting_frame(rng: random.Random, phrase: str, uid: str) -> str:
    """A sentence that contains ``phrase`` (a good critical phrase) in a fresh frame."""
    if uid == "det_noun_agreement":
        person = rng.choice(PEOPLE)
        subj = ["the", person[1] if rng.random() < 0.5 else person[0]]
        return sentence_text(subj + [rng.choice(TRANSITIVE_PAST)] + phrase.split() + list(_maybe_place(rng)))
    det = rng.choice(["the", "my", "our", "their"])
    tail = _maybe_place(rng) if uid != "distractor_agreement" or rng.random() < 0.5 else []
    return sentence_text([det] + phrase.split() + tail)


def _maybe_place(rng: random.Random) -> list[str]:
    return rng.choice(PLACES).split() if rng.random() < 0.5 else []


def generate(settings: TestbedSettings) -> Testbed:
    """Generate the corpus and the pairs (deterministic in ``settings``)."""
    settings.validate()
    rng = random.Random(settings.seed)
    pairs, det_nouns = generate_pairs(settings, random.Random(settings.seed * 7919 + 1))
    units = _units(pairs, settings, random.Random(settings.seed * 104729 + 2))

    # every benchmark phrase, good and bad: background text never contains any of them
    forbidden: set[tuple[str, ...]] = set()
    for p in pairs:
        forbidden.add(phrase_key(p.phrase))
        forbidden.add(phrase_key(p.bad_phrase))
    n_max = max(len(k) for k in forbidden) if forbidden else 2

    weights = background_weights(units) if settings.confounded else None
    grammar = _Grammar(rng, det_nouns, settings.filler_demonstratives, settings.number_cues, weights,
                       settings.attractor_sentences, settings.attractor_mismatch)
    n_docs = settings.n_documents
    mean = settings.sentences_per_document
    documents: list[list[str]] = []
    onset_doc = onset_document(settings)
    for d in range(n_docs):
        grammar.scramble = d < onset_doc
        n_sent = rng.randint(max(2, mean - 4), mean + 4)
        sentences: list[str] = []
        while len(sentences) < n_sent:
            s = grammar.sentence()
            if any(g in forbidden for g in word_ngrams(s, n_max)):
                continue
            sentences.append(s)
        documents.append(sentences)

    # plant: each planted phrase `frequency` times, in documents from its start fraction on
    counts: Counter[str] = Counter()
    first_doc: dict[str, int] = {}
    uid_of_unit = {u.name: u.uid for u in units}
    bad_of = {p.phrase: p.bad_phrase for p in pairs}
    for unit in units:
        if not unit.planted:
            continue
        lo = int(unit.start * n_docs)
        planted = unit.phrases + ([bad_of[p] for p in unit.phrases] if settings.confounded else [])
        for phrase in planted:
            own = phrase_key(phrase)
            placed = 0
            while placed < unit.frequency:
                s = _planting_frame(rng, phrase, uid_of_unit[unit.name])
                grams = list(word_ngrams(s, n_max))
                if sum(g == own for g in grams) != 1 or any(g in forbidden and g != own for g in grams):
                    continue
                doc = rng.randrange(lo, n_docs)
                sentences = documents[doc]
                sentences.insert(rng.randint(0, len(sentences)), s)
                counts[phrase] += 1
                first_doc[phrase] = min(first_doc.get(phrase, doc), doc)
                placed += 1
    texts = [" ".join(s) for s in documents]
    return Testbed(settings, texts, pairs, units, dict(counts), first_doc)


def onset_document(settings: TestbedSettings) -> int:
    """The first document whose background text carries the agreement cue (the planted onset)."""
    return int(round(settings.onset_fraction * settings.n_documents))


def write_testbed(tb: Testbed, out: str | Path) -> dict[str, Path]:
    """Write ``corpus.jsonl``, ``pairs.jsonl``, ``ground_truth.json`` and ``settings.json`` atomically."""
    from grokscope.core.store import atomic_path, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"corpus": out / "corpus.jsonl", "pairs": out / "pairs.jsonl",
             "ground_truth": out / "ground_truth.json", "settings": out / "settings.json"}
    with atomic_path(paths["corpus"]) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for i, text in enumerate(tb.documents):
            f.write(json.dumps({"id": i, "text": text}) + "\n")
    with atomic_path(paths["pairs"]) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for p in tb.pairs:
            f.write(json.dumps(p.to_json()) + "\n")
    write_json(paths["ground_truth"], tb.ground_truth())
    write_json(paths["settings"], dataclasses.asdict(tb.settings))
    return paths


def settings_from_dict(values: dict[str, Any]) -> TestbedSettings:
    names = {f.name for f in dataclasses.fields(TestbedSettings)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"[testbed]: unknown key(s) {sorted(unknown)}; expected some of {sorted(names)}")
    s = TestbedSettings(**values)
    s.validate()
    return s
