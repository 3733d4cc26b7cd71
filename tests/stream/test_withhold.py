"""grokscope prepare --withhold: the withheld phrases are absent from the packed stream (checked
by the exposure stage itself and by a regex search of the decoded rows), kept phrases keep every
occurrence, the coin is stratified by paradigm and reproducible from the seed."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grokscope.cli import main
from grokscope.core import store
from grokscope.core.errors import DataError
from grokscope.exposure.shards import StreamSpec
from grokscope.exposure.stage import compute_exposure
from grokscope.stream.withhold import SentenceFilter, assign_withheld, sentence_spans, token_ends_at
from tests.exposure.test_stage import regex_occurrence_rows
from tests.stream.test_stage import crash_while_tokenizing, write_jsonl

PHRASES = {  # paradigm -> critical phrases (no phrase holds another's words in order)
    "det_noun": ["this sketch", "these sketches", "that dog", "those dogs", "this cat", "these cats",
                 "that car", "those cars", "this hat", "these hats"],
    "subj_verb": ["Raymond is", "Mary was", "the men were", "the girl sings", "the boys run", "Anna has"],
    "npi": ["never ever", "hardly any", "not yet"],
}
FILLER = "we saw it today and then left quite slowly near an old red house with green doors".split()


def make_corpus(seed: int, n_docs: int = 120) -> list[list[str]]:
    """Documents as lists of sentences; a sentence holds at most one phrase (often at its start)."""
    rng = np.random.default_rng(seed)
    phrases = [p for ps in PHRASES.values() for p in ps]
    docs = []
    for _ in range(n_docs):
        sents = []
        for _ in range(int(rng.integers(1, 8))):
            words = [str(w) for w in rng.choice(FILLER, size=int(rng.integers(2, 9)))]
            if rng.random() < 0.7:
                p = str(rng.choice(phrases))
                at = 0 if rng.random() < 0.3 else int(rng.integers(0, len(words) + 1))
                words.insert(at, p)
            s = " ".join(words)
            sents.append(s[0].upper() + s[1:] + str(rng.choice([".", "!", "?"])))
        docs.append(sents)
    return docs


def phrases_table(path: Path) -> Path:
    rows = []
    for uid, ps in PHRASES.items():
        for i, p in enumerate(ps):
            for _ in range(1 + i % 3):  # several pairs share a phrase
                rows.append({"uid": uid, "pair_id": len(rows), "supported": True, "critical_phrase": p,
                             "bad_phrase": p + "x"})
    rows.append({"uid": "npi", "pair_id": len(rows), "supported": False, "critical_phrase": "", "bad_phrase": ""})
    path.mkdir(parents=True, exist_ok=True)
    store.write_parquet(path / "phrases.parquet", pd.DataFrame(rows), metadata={"benchmark_fingerprint": "t"})
    return path / "phrases.parquet"


def form_regex(phrase: str) -> re.Pattern[str]:
    """Brute force: a whole-word occurrence of the phrase, lower- or capital-initial."""
    alts = "|".join(re.escape(f) for f in {phrase, phrase[0].upper() + phrase[1:]})
    return re.compile(r"(?<![A-Za-z0-9])(?:" + alts + r")(?![A-Za-z0-9])")



@pytest.fixture(scope="module")
def withheld_study(tmp_path_factory, gpt2_tokenizer_dir):
    root = tmp_path_factory.mktemp("withhold")
    docs = make_corpus(0)
    corpus = write_jsonl(root / "corpus.jsonl", [" ".join(s) for s in docs])
    phrases = phrases_table(root / "ph")
    study = root / "study"
    args = ["prepare", "--no-progress", "--corpus", str(corpus), "--tokenizer", str(gpt2_tokenizer_dir),
            "--seq-len", "32", "--withhold", "0.5", "--phrases", str(phrases), "--out", str(study)]
    assert main(args) == 0
    assert main(args) == 0  # resume-safe: a finished identical run is a no-op
    return docs, phrases, study, args


def test_withheld_phrases_have_zero_exposure_and_kept_ones_keep_theirs(withheld_study, gpt2, tmp_path):
    docs, phrases, study, _ = withheld_study
    tokens = study / "tokens"
    manifest = store.read_json(tokens / "manifest.json")
    table = pd.read_parquet(tokens / "withheld.parquet")
    withheld = set(table.loc[table["withheld"], "phrase"])
    kept = set(table.loc[~table["withheld"], "phrase"])
    # brute force over the sentences: which are dropped, and what is left of each phrase
    pats = {p: form_regex(p) for p in withheld | kept}
    dropped = [s for d in docs for s in d if any(pats[p].search(s) for p in withheld)]
    left = " ".join(s for d in docs for s in d if not any(pats[p].search(s) for p in withheld))
    original = " ".join(s for d in docs for s in d)
    for p in kept:
        assert len(pats[p].findall(left)) == len(pats[p].findall(original)) > 0, p
    w = manifest["withhold"]
    assert w["sentences_removed"] == len(dropped) > 0
    # tokens of the dropped sentences as they stood: followed by the space that joined them
    n_tok = 0
    for d in docs:
        for i, s in enumerate(d):
            if any(pats[p].search(s) for p in withheld):
                n_tok += len(gpt2(s + (" " if i + 1 < len(d) else ""), add_special_tokens=False)["input_ids"])
    assert w["tokens_removed"] == n_tok
    assert (w["seed"], w["fraction"], w["n_withheld"]) == (0, 0.5, len(withheld))
    # the exposure stage on the packed stream: 0 for withheld, the regex count of the rows for kept
    out = tmp_path / "exposure.parquet"
    compute_exposure(phrases, StreamSpec(str(tokens), rows_per_step=4), [1, 2], out, progress=False)
    exp = pd.read_parquet(out).drop_duplicates("good_phrase").set_index("good_phrase")
    rows = np.load(tokens / "tokens.npy")
    for p in withheld:
        assert exp.loc[p, "good_total_count"] == 0 and not regex_occurrence_rows(gpt2, rows, p), p
    for p in kept:
        assert exp.loc[p, "good_total_count"] == len(regex_occurrence_rows(gpt2, rows, p)) > 0, p
    per = manifest["withhold"]["per_paradigm"]
    for uid, ps in PHRASES.items():
        n_sent = sum(1 for s in dropped if any(pats[p].search(s) for p in ps if p in withheld))
        assert per[uid]["sentences_removed"] == n_sent


def test_stratified_and_reproducible(tmp_path):
    pairs = pd.read_parquet(phrases_table(tmp_path))
    a, b, c = (assign_withheld(pairs, 0.5, s) for s in (7, 7, 8))
    assert a.equals(b) and not a["withheld"].equals(c["withheld"])
    for uid, ps in PHRASES.items():
        part = a[a["uid"] == uid]
        assert sorted(part["phrase"]) == sorted(ps)
        assert part["withheld"].sum() == round(0.5 * len(ps))
    assert assign_withheld(pairs, 0.0, 1)["withheld"].sum() == 0
    assert assign_withheld(pairs, 1.0, 1)["withheld"].all()
    # a phrase of several paradigms is one unit, in the paradigm with most of its pairs
    two = pd.DataFrame({"uid": ["a", "b", "b"], "critical_phrase": ["x y", "x y", "x y"], "supported": True})
    assert assign_withheld(two, 1.0, 0)[["phrase", "uid", "n_pairs"]].values.tolist() == [["x y", "b", 3]]


def test_filter_drops_whole_sentences_and_spans():
    f = SentenceFilter(["this sketch", "Mr. Smith"])
    text = "I like this sketchbook. This sketch is fine! Then we met Mr. Smith there.\nOf this sketch's end"
    kept, removed = f.filter(text)
    assert kept == "I like this sketchbook. "
    assert [(s, p) for s, p in removed] == [("This sketch is fine! ", {0}), ("Then we met Mr. ", {1}),
                                            ("Smith there.\n", {1}), ("Of this sketch's end", {0})]
    # removing the middle sentence joins "Mr. " and "Smith" into "Mr. Smith": that goes too
    kept, removed = f.filter("We met Mr. Jones this sketch. Smith came. Bye.")
    assert kept == "Bye." and [s for s, _ in removed] == ["Jones this sketch. ", "We met Mr. ", "Smith came. "]
    assert [(a, b) for a, b in sentence_spans("A b. C d\n\nE")] == [(0, 5), (5, 10), (10, 11)]
    assert f.filter("xThis sketch, and athis sketch.")[0] == "xThis sketch, and athis sketch."


def test_the_forms_removed_are_the_forms_exposure_searches():
    """A phrase that begins its benchmark sentence ("Mice are") is searched lower-cased mid-text
    (" mice are", from the phrases table's good_forms): withholding must remove that form too.
    Forms are the union over the pairs that share a phrase; a table without good_forms falls back
    to the phrase as a mid-text phrase."""
    from grokscope.stream.withhold import withholding_for

    pairs = pd.DataFrame({"uid": ["u", "u", "v"], "pair_id": [0, 1, 2], "supported": [True] * 3,
                          "critical_phrase": ["Mice are", "Mice are", "this cat"],
                          "good_forms": [[" mice are", " Mice are", "Mice are"],
                                         [" Mice are", " Mice are", "Mice are"],
                                         [" this cat", " This cat", "This cat"]]})
    table = assign_withheld(pairs, 1.0, 0)
    forms = dict(zip(table["phrase"], table["forms"]))
    assert list(forms["Mice are"]) == [" mice are", " Mice are", "Mice are"]
    assert list(forms["this cat"]) == [" this cat", " This cat", "This cat"]
    text = "In some countries mice are food. Mice are small. We left."
    assert withholding_for(table).filter.filter(text)[0] == "We left."
    bare = assign_withheld(pairs.drop(columns=["good_forms"]), 1.0, 0)
    assert list(dict(zip(bare["phrase"], bare["forms"]))["Mice are"]) == [" Mice are", "Mice are"]
    assert withholding_for(bare).filter.filter(text)[0] == "In some countries mice are food. We left."


def test_changed_fraction_is_refused_and_missing_table_named(withheld_study, capsys):
    _, _, study, args = withheld_study
    bad = [a if a != "0.5" else "0.25" for a in args]
    assert main(bad) == 2
    assert "withhold" in capsys.readouterr().err
    missing = [a if not a.endswith("phrases.parquet") else str(study / "nowhere") for a in args]
    missing[missing.index("--out") + 1] = str(study.parent / "other")
    assert main(missing) == 2
    assert "no phrases table" in capsys.readouterr().err
    with pytest.raises(DataError):
        assign_withheld(pd.DataFrame({"uid": ["a"]}), 0.5, 0)


def test_resume_after_a_crash_counts_the_same(tmp_path, gpt2_tokenizer_dir, monkeypatch):
    from grokscope.stream import stage as prep

    docs = make_corpus(3, 60)
    a = write_jsonl(tmp_path / "a.jsonl", [" ".join(s) for s in docs[:30]])
    b = write_jsonl(tmp_path / "b.jsonl", [" ".join(s) for s in docs[30:]])
    opts = prep.PrepareOptions(corpus=[str(a), str(b)], tokenizer=str(gpt2_tokenizer_dir), seq_len=16, seed=2,
                               progress=False, batch_chars=200, withhold=0.5,
                               withhold_phrases=str(phrases_table(tmp_path / "ph")))
    crashed = tmp_path / "crashed" / "tokens"
    crash_while_tokenizing(monkeypatch, opts, b, crashed)
    resumed = prep.prepare_corpus(opts, crashed)
    assert resumed.stats["resumed"]
    clean = prep.prepare_corpus(opts, tmp_path / "clean" / "tokens")
    assert resumed.manifest["withhold"] == clean.manifest["withhold"]
    assert clean.manifest["withhold"]["sentences_removed"] > 0
    np.testing.assert_array_equal(np.load(crashed / "tokens.npy"), np.load(tmp_path / "clean" / "tokens" / "tokens.npy"))
    pd.testing.assert_frame_equal(pd.read_parquet(crashed / "withheld.parquet"),
                                  pd.read_parquet(tmp_path / "clean" / "tokens" / "withheld.parquet"))


def test_a_form_continued_by_a_word_goes_where_a_token_ends_after_it(gpt2):
    """GPT-2 cuts "sketchbook" as " sketch" + "book": a row cut there leaves "this sketch" at a row
    end, where exposure counts it, so that sentence goes; " sketches" is one token: it stays."""
    f = SentenceFilter(["this sketch"])

    def ends(text, a, b):
        return token_ends_at(gpt2.backend_tokenizer, text, a, b)

    text = "I drew this sketchbook. Then this sketches out. This sketchy plan."
    assert f.filter(text)[0] == text  # the whole-word rule alone keeps all three
    kept, removed = f.filter(text, ends)
    assert kept == "Then this sketches out. "  # " sketch" + "y" is a token end too: that one goes as well
    assert [s for s, _ in removed] == ["I drew this sketchbook. ", "This sketchy plan."]


def test_no_withheld_tokens_at_any_row_end(tmp_path, gpt2_tokenizer_dir):
    """End to end: rows of 9 tokens cut documents everywhere, so some rows end in " this sketch"
    of "this sketchbook"; withheld, the phrase has count 0 in the stream (and > 0 when kept)."""
    rng = np.random.default_rng(3)
    docs = [" ".join(["We saw"] + ["it"] * int(k)) + ". I drew this sketchbook today. Then we left."
            for k in rng.integers(0, 30, size=60)]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", docs)
    rows = [{"uid": "det_noun", "pair_id": 0, "supported": True, "critical_phrase": "this sketch",
             "bad_phrase": "this sketches"}]
    store.write_parquet(tmp_path / "ph" / "phrases.parquet", pd.DataFrame(rows), metadata={"benchmark_fingerprint": "t"})
    counts = {}
    for fraction in (0.0, 1.0):
        study = tmp_path / f"s{fraction}"
        assert main(["prepare", "--no-progress", "--corpus", str(corpus), "--tokenizer", str(gpt2_tokenizer_dir),
                     "--seq-len", "8", "--shuffle", "none", "--withhold", str(fraction), "--phrases",
                     str(tmp_path / "ph" / "phrases.parquet"), "--out", str(study)]) == 0
        out = tmp_path / f"exposure{fraction}.parquet"
        n_rows = store.read_json(study / "tokens" / "manifest.json")["n_rows"]
        compute_exposure(tmp_path / "ph" / "phrases.parquet", StreamSpec(str(study / "tokens"), rows_per_step=1),
                         [n_rows], out, progress=False)
        counts[fraction] = int(pd.read_parquet(out)["good_total_count"][0])
    assert counts[0.0] > 0 and counts[1.0] == 0, counts
