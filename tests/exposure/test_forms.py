"""Every surface form of a phrase: the forms the phrases stage writes (a common sentence-initial
word lower-cased mid-text, a proper noun kept), and exposure counts summed over them, checked
against a text-level search on generated streams, each occurrence counted once."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from grokscope.core import store
from grokscope.data.lexicon import Lexicon
from grokscope.data.surface_forms import capitalised_words, forms_for_variants, surface_forms
from grokscope.exposure.shards import StreamSpec
from grokscope.exposure.stage import compute_exposure
from grokscope.phrases.stage import extract_phrases
from tests.exposure.test_stage import documents_of, write_stream

WORDS = ["there", "There", "was", "were", "bound", "Mary", "mary", "praised", "herself", "this", "This", "sketch",
         "to", "be", "I", "said"]
PUNCT = [".", ",", "(", ")", "!", "\n"]
PHRASES = [  # (phrase as cut from its sentence, begins the sentence, keeps its capital)
    ("There was bound", True, False),
    ("Mary praised herself", True, True),
    ("this sketch", False, False),
    ("There were", True, False),
]


def test_surface_forms_by_position():
    assert surface_forms("There was bound", True) == [" there was bound", " There was bound", "There was bound"]
    assert surface_forms("this sketch", False) == [" this sketch", " This sketch", "This sketch"]
    assert surface_forms("Mary praised herself", True, frozenset({"Mary"})) == [
        " Mary praised herself", " Mary praised herself", "Mary praised herself"]
    assert surface_forms("I said", True)[0] == " I said" and surface_forms("Mary's cat", True, frozenset({"Mary"}))[0] \
        == " Mary's cat"
    assert surface_forms(" ", True) == []
    f = surface_forms("There was", True)
    assert forms_for_variants(f, ["mid"]) == [" there was"]
    assert forms_for_variants(f, ["sentence_start"]) == [" There was", "There was"]
    assert forms_for_variants(surface_forms("Mary is", True, frozenset({"Mary"})), ["mid", "sentence_start"]) == [
        " Mary is", "Mary is"]
    caps = capitalised_words([["I", "think", "Mary", "left", "."], ["There", "was", "."], ["Yes", ".", "No"]])
    assert caps == {"Mary"}


def _pairs(with_evidence: bool) -> pd.DataFrame:
    """A user benchmark (no lexicon) with explicit spans: "Mary praised herself" and "There was"
    begin their sentences; "Mary" is capitalised mid-sentence only in the evidence pair."""
    rows = [("Mary praised herself.", "Mary praised himself.", (13, 20), (0, 4)),
            ("There was bound to be trouble.", "There were bound to be trouble.", (6, 9), (0, 5))]
    if with_evidence:
        rows.append(("I think Mary left.", "I think Mary leave.", (13, 17), (8, 12)))
    return pd.DataFrame({
        "uid": ["u"] * len(rows), "pair_id": range(len(rows)), "phenomenon": ["p"] * len(rows),
        "good": [r[0] for r in rows], "bad": [r[1] for r in rows],
        "explicit_critical_start": [r[2][0] for r in rows], "explicit_critical_end": [r[2][1] for r in rows],
        "explicit_context_start": [r[3][0] for r in rows], "explicit_context_end": [r[3][1] for r in rows],
    })


def test_phrases_table_records_forms_and_keeps_proper_nouns():
    df = extract_phrases(_pairs(True), Lexicon())
    assert list(df["critical_phrase"][:2]) == ["Mary praised herself", "There was"]
    assert list(df["good_forms"][0]) == [" Mary praised herself", " Mary praised herself", "Mary praised herself"]
    assert list(df["bad_forms"][0]) == [" Mary praised himself", " Mary praised himself", "Mary praised himself"]
    assert list(df["good_forms"][1]) == [" there was", " There was", "There was"]
    assert list(df["bad_forms"][1]) == [" there were", " There were", "There were"]
    assert list(df["good_forms"][2]) == [" Mary left", " Mary left", "Mary left"]  # mid-sentence: as written
    # without the pair that writes "Mary" mid-sentence, nothing says it is a name
    assert list(extract_phrases(_pairs(False), Lexicon())["good_forms"][0])[0] == " mary praised herself"


def test_blimp_forms(blimp_dir):
    from grokscope.data.benchmark import load_pairs

    lex = Lexicon.load(blimp_dir / "vocabulary.csv")
    assert {"Mary", "I", "CEO", "Roger"} <= lex.capitalised and "he" not in lex.capitalised
    pairs = load_pairs(blimp_dir, paradigms=["existential_there_quantifiers_1", "anaphor_gender_agreement",
                                             "determiner_noun_agreement_1"], pairs_per_paradigm=30, seed=0)
    df = extract_phrases(pairs, lex)
    names_at_start = 0
    for r in df[df["supported"]].itertuples():
        mid, sent, line = list(r.good_forms)
        assert sent == " " + line and line[:1].isupper() and line.lower() == r.critical_phrase.lower()
        first = r.critical_phrase.split()[0]
        if r.phrase_start == 0 and first not in lex.capitalised:  # "There was a": common word, lower-cased
            assert mid == " " + r.critical_phrase[0].lower() + r.critical_phrase[1:]
        else:  # mid-sentence already, or a name ("Roger should dislike himself")
            assert mid == " " + r.critical_phrase
            names_at_start += r.phrase_start == 0
        if r.uid == "existential_there_quantifiers_1":
            assert mid.startswith(" there ")
    assert names_at_start >= 10



def _documents(rng: np.random.Generator, n: int) -> list[str]:
    docs = []
    plant = ["there was bound", "There was bound", "Mary praised herself", "mary praised herself",
             "this sketch", "This sketch", "there were", "There were"]
    for _ in range(n):
        parts = []
        for _ in range(rng.integers(3, 25)):
            r = rng.random()
            parts.append(str(rng.choice(plant)) if r < 0.25 else str(rng.choice(PUNCT)) if r < 0.45
                         else str(rng.choice(WORDS)))
        docs.append(" ".join(parts).replace(" \n ", "\n").replace(" (", " (").replace("( ", "("))
    return docs


def _form_hits(tok, rows: np.ndarray, form: str) -> list[tuple[int, int, int]]:
    """Text-level matches of one surface form: (row, segment, end character) of each."""
    eos = tok.eos_token_id
    if form.startswith(" "):
        pat = re.compile(re.escape(form) + r"(?![A-Za-z0-9])")
    else:  # no leading space: at a segment/line start or after punctuation
        pat = re.compile(r"(?:^|(?<=[^A-Za-z0-9 ]))" + re.escape(form) + r"(?![A-Za-z0-9])")
    out = []
    for r, row in enumerate(rows.tolist()):
        segs = documents_of(row, eos)
        for k, seg in enumerate(segs):
            out += [(r, k, m.end()) for m in pat.finditer(tok.decode(seg))]
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_counts_sum_over_forms_once_each(tmp_path, gpt2, seed):
    docs = _documents(np.random.default_rng(seed), 300)
    tokens = write_stream(tmp_path / "tokens", gpt2, docs, row_len=23)
    forms = [surface_forms(p, start, frozenset({"Mary"}) if proper else frozenset()) for p, start, proper in PHRASES]
    n = len(PHRASES)
    df = pd.DataFrame({"uid": ["u"] * n, "pair_id": range(n), "supported": [True] * n,
                       "critical_phrase": [p for p, _, _ in PHRASES], "bad_phrase": [p for p, _, _ in PHRASES][::-1],
                       "good_forms": forms, "bad_forms": forms[::-1]})
    (tmp_path / "study").mkdir()
    store.write_parquet(tmp_path / "study" / "phrases.parquet", df, metadata={"benchmark_fingerprint": "f"})
    arr = np.load(tokens / "tokens.npy")
    B = 2
    steps = [0, 1, 5, arr.shape[0] // B]
    out = tmp_path / "study" / "exposure.parquet"
    compute_exposure(tmp_path / "study" / "phrases.parquet", StreamSpec(str(tokens), rows_per_step=B), steps, out,
                     progress=False)
    got = pd.read_parquet(out)
    for i, f in enumerate(forms):
        per_form = [set(_form_hits(gpt2, arr, text)) for text in dict.fromkeys(f)]
        union = set().union(*per_form)
        assert sum(len(h) for h in per_form) == len(union), f"an occurrence matched two forms of {f}"
        assert all(per_form), f"every form occurs in the generated stream: {f}"
        assert got["good_total_count"][i] == len(union), f
        for t in steps:
            assert got[f"good_count_{t}"][i] == sum(r < t * B for r, _, _ in union)
        assert list(got["good_forms"][i]) == list(dict.fromkeys(f))
        assert got["bad_total_count"][n - 1 - i] == got["good_total_count"][i]
    # the proper noun is never lower-cased: " mary praised herself" occurs but is not counted
    lower = _form_hits(gpt2, arr, " mary praised herself")
    proper = set().union(*(_form_hits(gpt2, arr, t) for t in forms[1]))
    assert lower and got["good_total_count"][1] == len(proper)
    # the lower-cased form of a sentence-initial common word is what mid-text adds
    mid_only = len(_form_hits(gpt2, arr, " there was bound"))
    compute_exposure(tmp_path / "study" / "phrases.parquet", StreamSpec(str(tokens), rows_per_step=B), steps, out,
                     variants=["sentence_start"], progress=False)
    assert mid_only > 0 and pd.read_parquet(out)["good_total_count"][0] == got["good_total_count"][0] - mid_only
