"""The controlled-exposure testbed: the corpus holds exactly the planted phrases (counted by a
brute-force regex search over the written corpus), never the withheld ones, and the pairs are
well-formed minimal pairs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from grokscope.core.errors import ConfigError
from grokscope.data.testbed import (
    DET_PL,
    DET_SG,
    OBJECT_NOUNS,
    PARADIGMS,
    TestbedSettings,
    generate,
    settings_from_dict,
    write_testbed,
)

SMALL = dict(n_documents=300, n_nouns=8, frames_per_noun=1, pairs_per_paradigm=16, frequency=5, planted_fraction=0.5)


def _count(phrase: str, texts: list[str]) -> int:
    """Occurrences of ``phrase`` as whole words, any capitalisation (brute force)."""
    pat = re.compile(r"(?<![A-Za-z])" + re.escape(phrase) + r"(?![A-Za-z])", re.IGNORECASE)
    return sum(len(pat.findall(t)) for t in texts)


def _first_doc(phrase: str, texts: list[str]) -> int | None:
    pat = re.compile(r"(?<![A-Za-z])" + re.escape(phrase) + r"(?![A-Za-z])", re.IGNORECASE)
    return next((i for i, t in enumerate(texts) if pat.search(t)), None)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[dict], dict]:
    out = tmp_path_factory.mktemp("tb")
    paths = write_testbed(generate(TestbedSettings(seed=3, **SMALL)), out)
    texts = [json.loads(line)["text"] for line in paths["corpus"].read_text().splitlines()]
    pairs = [json.loads(line) for line in paths["pairs"].read_text().splitlines()]
    gt = json.loads(paths["ground_truth"].read_text())
    return out, texts, pairs, gt


def test_planted_phrases_occur_exactly_frequency_times_and_withheld_never(written) -> None:
    _, texts, pairs, gt = written
    truth = {(p["uid"], p["pair_id"]): p for p in gt["pairs"]}
    n_planted = n_withheld = 0
    for pair in pairs:
        t = truth[(pair["UID"], pair["pairID"])]
        assert t["phrase"] == pair["critical_phrase"]
        n = _count(pair["critical_phrase"], texts)
        if t["planted"]:
            n_planted += 1
            assert n == SMALL["frequency"] == t["count"], pair
        else:
            n_withheld += 1
            assert n == 0 and t["count"] == 0, pair
        assert _count(pair["bad_critical_phrase"], texts) == 0, pair  # ungrammatical: never in the corpus
    assert n_planted > 10 and n_withheld > 10


def test_withheld_nouns_never_follow_this_or_these_but_occur_elsewhere(written) -> None:
    _, texts, _, gt = written
    blob = " ".join(texts)
    nouns = dict(OBJECT_NOUNS[: SMALL["n_nouns"]])
    withheld = [u for u in gt["units"] if u["uid"] == "det_noun_agreement" and not u["planted"]]
    planted = [u for u in gt["units"] if u["uid"] == "det_noun_agreement" and u["planted"]]
    assert len(withheld) == len(planted) == SMALL["n_nouns"] // 2
    for u in withheld:
        sg = u["name"].split(":")[1]
        pl = nouns[sg]
        for det in ("this", "these"):
            for form in (sg, pl):
                assert _count(f"{det} {form}", texts) == 0
        # ... but the noun is in the corpus in other frames, in both numbers
        assert re.search(rf"\b{sg}\b", blob) and re.search(rf"\b{pl}\b", blob)
    for u in planted:
        sg = u["name"].split(":")[1]
        assert _count(f"this {sg}", texts) == SMALL["frequency"]
        assert _count(f"these {nouns[sg]}", texts) == SMALL["frequency"]


def test_pairs_are_minimal_pairs_with_spans(written) -> None:
    _, _, pairs, _ = written
    seen_ids: set[tuple[str, int]] = set()
    by_uid: dict[str, int] = {}
    for p in pairs:
        good, bad = p["sentence_good"], p["sentence_bad"]
        assert p["UID"] in PARADIGMS and p["linguistics_term"] == PARADIGMS[p["UID"]]
        assert (p["UID"], p["pairID"]) not in seen_ids
        seen_ids.add((p["UID"], p["pairID"]))
        by_uid[p["UID"]] = by_uid.get(p["UID"], 0) + 1
        gw, bw = good.rstrip(".").split(" "), bad.rstrip(".").split(" ")
        assert len(gw) == len(bw) and good != bad
        diff = [i for i, (a, b) in enumerate(zip(gw, bw)) if a != b]
        assert len(diff) == 1, (good, bad)  # exactly one word differs
        cs, ce = p["critical"]
        xs, xe = p["context"]
        # the critical span is the differing word; the context is a different word before/after it
        assert good[cs:ce] == gw[diff[0]]
        assert (xs, xe) != (cs, ce) and good[xs:xe].isalpha()
        assert good[min(cs, xs):max(ce, xe)] == p["critical_phrase"]
        if p["UID"] == "det_noun_agreement":
            det, noun = good[xs:xe], good[cs:ce]
            sg_nouns = {sg for sg, _ in OBJECT_NOUNS}
            assert (det == "this") == (noun in sg_nouns)
            assert det in ("this", "these") and det not in DET_SG + DET_PL
        if p["UID"] == "anaphor_agreement":
            assert good[cs:ce] in ("himself", "herself", "themselves")
    assert by_uid["det_noun_agreement"] == SMALL["n_nouns"] * 2 * SMALL["frames_per_noun"]
    for uid in ("subject_verb_agreement", "distractor_agreement", "anaphor_agreement"):
        assert by_uid[uid] == SMALL["pairs_per_paradigm"]


def test_distractor_pairs_have_an_attractor_of_the_other_number(written) -> None:
    _, _, pairs, _ = written
    people_pl = set(("kings queens uncles aunts nephews nieces monks nuns princes princesses dukes "
                             "duchesses grooms brides waiters waitresses farmers sailors bakers pilots doctors "
                             "painters students tailors dancers hunters miners clerks").split())
    for p in pairs:
        if p["UID"] != "distractor_agreement":
            continue
        words = p["sentence_good"].rstrip(".").split()
        head, attractor = words[1], words[4]
        assert (head in people_pl) != (attractor in people_pl), p["sentence_good"]


def test_planting_off_plants_every_phrase() -> None:
    tb = generate(TestbedSettings(seed=1, planting=False, **SMALL))
    for p in tb.pairs:
        assert _count(p.phrase, tb.documents) == SMALL["frequency"]
    assert all(u.planted for u in tb.units)


def test_schedule_start_fractions_hold_in_document_order() -> None:
    s = TestbedSettings(seed=2, plant_start=0.2, late_fraction=0.5, late_start=0.7, **SMALL)
    tb = generate(s)
    gt = tb.ground_truth()
    n = len(tb.documents)
    starts = set()
    for p in gt["pairs"]:
        first = _first_doc(p["phrase"], tb.documents)
        if not p["planted"]:
            assert first is None
            continue
        starts.add(p["start_fraction"])
        assert first == p["first_document"]
        assert first >= int(p["start_fraction"] * n)
    assert starts == {0.2, 0.7}
    late = [p for p in gt["pairs"] if p["planted"] and p["start_fraction"] == 0.7]
    assert late and sum(v["late_pairs"] for v in gt["summary"].values()) == len(late)


def test_same_seed_same_testbed_other_seed_other_testbed() -> None:
    a, b = generate(TestbedSettings(seed=5, **SMALL)), generate(TestbedSettings(seed=5, **SMALL))
    c = generate(TestbedSettings(seed=6, **SMALL))
    assert a.documents == b.documents and [p.good for p in a.pairs] == [p.good for p in b.pairs]
    assert a.documents != c.documents


def test_frequency_is_respected_for_a_different_value() -> None:
    tb = generate(TestbedSettings(seed=0, **{**SMALL, "frequency": 2, "paradigms": ["det_noun_agreement"]}))
    counts = {p.phrase: _count(p.phrase, tb.documents) for p in tb.pairs}
    planted = {u.name for u in tb.units if u.planted}
    for p in tb.pairs:
        assert counts[p.phrase] == (2 if p.unit in planted else 0)


def test_benchmark_loader_reads_the_pairs(written) -> None:
    benchmark = pytest.importorskip("grokscope.data.benchmark")
    out, _, pairs, _ = written
    df = benchmark.load_pairs(str(out / "pairs.jsonl"))
    assert len(df) == len(pairs)
    assert list(df["good"])[:3] == [p["sentence_good"] for p in pairs[:3]]
    assert set(df["uid"]) == set(PARADIGMS)


@pytest.mark.parametrize("bad", [
    {"planted_fraction": 1.5}, {"n_nouns": 1000}, {"paradigms": ["nope"]}, {"frequency": 0},
    {"plant_start": 1.0}, {"sentences_per_document": 2},
])
def test_bad_settings_are_config_errors(bad: dict) -> None:
    with pytest.raises(ConfigError):
        settings_from_dict({**SMALL, **bad})
    with pytest.raises(ConfigError):
        settings_from_dict({"n_docs": 3})


@pytest.mark.parametrize("cues", [False, True])
def test_number_cues_setting_decides_which_determiners_precede_pair_nouns(cues: bool) -> None:
    tb = generate(TestbedSettings(seed=4, number_cues=cues, **SMALL))
    nouns = [w for sg_pl in OBJECT_NOUNS[: SMALL["n_nouns"]] for w in sg_pl]
    marking = ("a", "an", "every", "one", "each", "many", "two", "three", "some", "several", "few")
    pat = re.compile(r"\b(?:" + "|".join(marking) + r") (?:\w+ )?(?:" + "|".join(nouns) + r")\b", re.IGNORECASE)
    hits = sum(len(pat.findall(t)) for t in tb.documents)
    assert (hits > 0) == cues
