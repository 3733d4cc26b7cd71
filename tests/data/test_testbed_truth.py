"""The testbed's planted truths, read back from the generated text (no training): the agreement
cue is absent from the background before ``onset_fraction`` and present after it; the confounded
testbed plants good and bad phrases alike (exposure carries no evidence) while frequent units
are both seen earlier and more frequent in the background."""
from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.stats import spearmanr

from grokscope.data import grammar as gr
from grokscope.data.grammar import INTRANSITIVE, PEOPLE, REFLEXIVE
from grokscope.data.testbed import TestbedSettings, generate, onset_document

SG = {sg for sg, _, _ in PEOPLE}
PL = {pl for _, pl, _ in PEOPLE}
V_SG = {s for s, _ in INTRANSITIVE}
V_PL = {p for _, p in INTRANSITIVE}
GENDER = {sg: g for sg, _, g in PEOPLE}
# "The (adj) baker sleeps ..." / "The bakers sleep ..." (an intransitive sentence of the background)
SUBJ_VERB = re.compile(r"^\w+ (?:\w+ )?(" + "|".join(SG | PL) + r") (" + "|".join(V_SG | V_PL) + r")\b")
NOUN_SG = {n[0] for n in gr.OBJECT_NOUNS + gr.FILLER_NOUNS + PEOPLE}
NOUN_PL = {n[1] for n in gr.OBJECT_NOUNS + gr.FILLER_NOUNS + PEOPLE}
# a determiner that marks number ("a", "every" / "many", "two" ...), an optional adjective, the noun
DET_NOUN = re.compile(r"\b(" + "|".join((set(gr.DET_SG) ^ set(gr.DET_PL)) | {"an"}) + r") (?:(?:"
                      + "|".join(set(gr.ADJECTIVES) | set(gr.PEOPLE_ADJECTIVES)) + r") )?("
                      + "|".join(NOUN_SG | NOUN_PL) + r")\b", re.IGNORECASE)
REFL = re.compile(r"^\w+ (?:\w+ )?(" + "|".join(SG | PL) + r") \w+ (" + "|".join(REFLEXIVE.values()) + r")\b")


def background_sentences(tb, docs: range) -> list[str]:
    """Sentences of documents ``docs`` that hold no benchmark phrase (i.e. not planted ones)."""
    phrases = {p.phrase.lower() for p in tb.pairs} | {p.bad_phrase.lower() for p in tb.pairs}
    out = []
    for d in docs:
        for s in re.split(r"(?<=\.) ", tb.documents[d]):
            if not any(re.search(r"\b" + re.escape(p) + r"\b", s.lower()) for p in phrases):
                out.append(s)
    return out


def agreement_rates(sentences: list[str]) -> tuple[float, int, float, int]:
    """Share of subject-verb sentences whose verb agrees, and of reflexive ones whose reflexive does."""
    sv = [(m.group(1) in PL) == (m.group(2) in V_PL) for s in sentences if (m := SUBJ_VERB.match(s))]
    rf = []
    for s in sentences:
        if (m := REFL.match(s)) is not None:
            subj, refl = m.group(1), m.group(2)
            want = "themselves" if subj in PL else REFLEXIVE.get(GENDER.get(subj, ""), "")
            rf.append(refl == want)
    return float(np.mean(sv)), len(sv), float(np.mean(rf)), len(rf)


def determiner_agreement(sentences: list[str]) -> tuple[float, int]:
    """Share of number-marking determiners ("a", "every" / "many", "two" ...; existentials among
    them) whose noun has the number they mark, and how many there are."""
    pl_only = set(gr.DET_PL) - set(gr.DET_NEUTRAL)
    hits = [(m.group(1).lower() in pl_only) == (m.group(2).lower() in NOUN_PL)
            for s in sentences for m in DET_NOUN.finditer(s)]
    return float(np.mean(hits)), len(hits)


@pytest.mark.parametrize("cues", [False, True])
def test_the_cue_is_absent_before_the_onset_and_present_after(cues):
    s = TestbedSettings(n_documents=600, onset_fraction=0.5, n_nouns=8, frames_per_noun=1, pairs_per_paradigm=16,
                        frequency=5, seed=3, number_cues=cues)
    tb = generate(s)
    onset = onset_document(s)
    assert onset == 300 and tb.ground_truth()["onset_document"] == 300
    sv_before, n1, rf_before, n2 = agreement_rates(background_sentences(tb, range(onset)))
    sv_after, n3, rf_after, n4 = agreement_rates(background_sentences(tb, range(onset, s.n_documents)))
    assert min(n1, n2, n3, n4) > 150
    assert abs(sv_before - 0.5) < 0.1 and abs(rf_before - 1 / 3) < 0.12  # no rule: chance
    assert sv_after == 1.0 and rf_after == 1.0  # the rule, without exception
    # number-marking determiners (existentials included) agree only from the onset on
    det_before, n5 = determiner_agreement(background_sentences(tb, range(onset)))
    det_after, n6 = determiner_agreement(background_sentences(tb, range(onset, s.n_documents)))
    assert min(n5, n6) > 150
    assert abs(det_before - 0.5) < 0.06 and det_after == 1.0
    # planted phrases (good forms only) occur from the start: memorisable before the onset
    first = [tb.phrase_first_doc[p] for p in tb.phrase_first_doc]
    assert min(first) < onset / 4


def test_without_an_onset_the_testbed_is_unchanged():
    base = TestbedSettings(n_documents=120, n_nouns=8, frames_per_noun=1, pairs_per_paradigm=8, frequency=3)
    a, b = generate(base), generate(TestbedSettings(**{**base.__dict__, "onset_fraction": 0.0}))
    assert a.documents == b.documents
    assert agreement_rates(background_sentences(a, range(120)))[0] == 1.0


@pytest.mark.parametrize("seed", [1, 2])
def test_confounded_testbed_frequent_units_are_seen_earlier_and_easier_and_exposure_is_balanced(seed):
    s = TestbedSettings(n_documents=800, confounded=True, n_nouns=40, frames_per_noun=1, pairs_per_paradigm=16,
                        frequency=40, paradigms=["det_noun_agreement"], number_cues=True, seed=seed)
    tb = generate(s)
    units = [u for u in tb.units if u.uid == "det_noun_agreement"]
    assert all(u.planted for u in units)
    bad_of = {p.phrase: p.bad_phrase for p in tb.pairs}
    weight, first, background = [], [], []
    text = " ".join(tb.documents).lower()
    for u in units:
        noun = u.name.split(":", 1)[1]
        for phrase in u.phrases:
            good = len(re.findall(r"\b" + re.escape(phrase.lower()) + r"\b", text))
            bad = len(re.findall(r"\b" + re.escape(bad_of[phrase].lower()) + r"\b", text))
            assert good == bad == u.frequency == max(1, round(40 * u.weight))  # exposure carries no evidence
        pats = [re.compile(r"\b" + re.escape(p.lower()) + r"\b") for p in u.phrases]
        weight.append(u.weight)
        first.append(next(i for i, d in enumerate(tb.documents) if any(p.search(d.lower()) for p in pats)))
        # the noun in the background: every occurrence minus the planted ones (good and bad, both numbers)
        n_noun = len(re.findall(r"\b" + noun + r"s?\b", text))
        background.append(n_noun - 2 * sum(u.frequency for _ in u.phrases))
    assert sorted(weight, reverse=True)[:3] == [1.0, 0.5, 1 / 3]
    assert spearmanr(weight, first).statistic < -0.4  # frequent units are seen earlier
    order = np.argsort(weight)[::-1]
    assert np.mean(np.array(first)[order[:10]]) < 0.5 * np.mean(np.array(first)[order[-20:]])
    assert spearmanr(weight, background).statistic > 0.8  # ... and are more frequent (easier) in the background


# "The (adj) kings near the (adj) sailor sleep ...": agreement across a prepositional phrase
ATTRACTOR = re.compile(r"^\w+ (?:(?:" + "|".join(gr.PEOPLE_ADJECTIVES) + r") )?(" + "|".join(SG | PL) + r") ("
                       + "|".join(gr.PREPOSITIONS) + r") \w+ (?:\w+ )?\w+ (" + "|".join(V_SG | V_PL) + r")\b")


@pytest.mark.parametrize(("share", "mismatch"), [(0.10, 0.5), (0.30, 1.0)])
def test_attractor_sentences_make_their_share_of_the_background_and_agree_with_the_head_after_the_onset(share,
                                                                                                       mismatch):
    """The share of background sentences whose verb agrees across a prepositional phrase, counted in the
    text, is ``attractor_sentences`` (binomial 4-sigma band); after the onset every such verb agrees
    with the head, ``attractor_mismatch`` of the attractors differ from it in number, and the other kinds
    keep their proportions (intransitive agreeing sentences ~ 0.16 x (1 - share) / 0.9)."""
    tb = generate(TestbedSettings(n_documents=1500, paradigms=["det_noun_agreement"], onset_fraction=0.4,
                                  attractor_sentences=share, attractor_mismatch=mismatch))
    after = background_sentences(tb, range(onset_document(tb.settings), 1500))
    n = len(after)
    hits = [m for s in after if (m := ATTRACTOR.match(s))]
    assert abs(len(hits) / n - share) < 4 * np.sqrt(share * (1 - share) / n)
    assert all((m.group(1) in PL) == (m.group(3) in V_PL) for m in hits)
    simple = sum(1 for s in after if SUBJ_VERB.match(s)) / n
    expected = 0.16 * (1 - share) / 0.9
    assert abs(simple - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
    nouns = [w for m in hits for w in m.group(0).split()[3:-1] if w in NOUN_SG | NOUN_PL]
    differs = np.mean([(m.group(1) in PL) != (w in NOUN_PL) for m, w in zip(hits, nouns, strict=True)])
    assert abs(differs - mismatch) < 4 * np.sqrt(0.25 / len(hits))
