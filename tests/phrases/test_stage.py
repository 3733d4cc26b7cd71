"""Critical phrases: hand-checked BLiMP pairs, properties over every BLiMP pair, the word
alignment against brute force, explicit spans, the CLI and the stage."""
from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grokscope import cli
from grokscope.core import store
from grokscope.data.benchmark import load_pairs
from grokscope.data.lexicon import Lexicon
from grokscope.phrases import stage as phrases
from grokscope.phrases import words as phrase_words
from grokscope.phrases.rules import RULES, Rule

HANDCHECKED = Path(__file__).parents[1] / "fixtures" / "phrases_handchecked.jsonl"


@pytest.fixture(scope="module")
def lexicon(blimp_dir: Path) -> Lexicon:
    return Lexicon.load(blimp_dir / "vocabulary.csv")


@pytest.fixture(scope="module")
def blimp_pairs(blimp_dir: Path) -> pd.DataFrame:
    return load_pairs(blimp_dir, skip_invalid=True)


@pytest.fixture(scope="module")
def blimp_phrases(blimp_pairs: pd.DataFrame, lexicon: Lexicon) -> pd.DataFrame:
    return phrases.extract_phrases(blimp_pairs, lexicon)


# ---- hand-checked pairs ------------------------------------------------------------------
def _handchecked() -> list[dict]:
    return [json.loads(line) for line in HANDCHECKED.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_handchecked_set_covers_every_supported_paradigm_8_times_spread_out() -> None:
    rows = _handchecked()
    per = Counter(r["uid"] for r in rows)
    supported = {uid for uid, rule in RULES.items() if rule.supported}
    assert len(RULES) == 67
    assert all(per[uid] >= 8 for uid in supported), {u: per[u] for u in supported if per[u] < 8}
    for uid in supported:  # spread across the file, not the first 8 pairs
        ids = [r["pair_id"] for r in rows if r["uid"] == uid]
        assert max(ids) - min(ids) > 500


def test_handchecked_pairs(blimp_pairs: pd.DataFrame, lexicon: Lexicon) -> None:
    """Phrase, critical word and context word of 536 pairs, written by reading the sentences."""
    rows = _handchecked()
    index = blimp_pairs.set_index(["uid", "pair_id"])
    sub = pd.DataFrame([index.loc[(r["uid"], r["pair_id"])] for r in rows]).reset_index(drop=True)
    sub["uid"] = [r["uid"] for r in rows]
    sub["pair_id"] = [r["pair_id"] for r in rows]
    got = phrases.extract_phrases(sub, lexicon)
    wrong = [
        (r["uid"], r["pair_id"], (r["phrase"], r["critical"], r["context"]), (g.critical_phrase, g.critical_word, g.context_word))
        for r, g in zip(rows, got.itertuples())
        if (g.critical_phrase, g.critical_word, g.context_word) != (r["phrase"], r["critical"], r["context"])
    ]
    assert not wrong, wrong[:10]
    assert got["supported"].all()


def _one(good: str, bad: str, uid: str, lexicon: Lexicon, **meta) -> phrases.PhraseRecord:
    return phrases.annotate_pair(good, bad, phrases.rule_for(uid), lexicon, meta)


def test_issue_examples(lexicon: Lexicon) -> None:
    r = _one("Raymond is selling this sketch.", "Raymond is selling this sketches.", "determiner_noun_agreement_1",
             lexicon, one_prefix_prefix="Raymond is selling this", one_prefix_word_good="sketch",
             one_prefix_word_bad="sketches")
    assert (r.critical_phrase, r.critical_word, r.context_word, r.bad_phrase, r.bad_critical_word) == (
        "this sketch", "sketch", "this", "this sketches", "sketches")
    r = _one("The mothers of Joel have attacked Bethany.", "The mothers of Joel has attacked Bethany.",
             "distractor_agreement_relational_noun", lexicon, one_prefix_prefix="The mothers of Joel",
             one_prefix_word_good="have", one_prefix_word_bad="has")
    assert (r.critical_phrase, r.critical_word, r.context_word) == ("mothers of Joel have", "have", "mothers")
    bad = "Even Carol did ever leave Heidi."
    r = _one("Only Carol did ever leave Heidi.", bad, "only_npi_licensor_present",
             lexicon, two_prefix_prefix_good="Only Carol did", two_prefix_prefix_bad="Even Carol did",
             two_prefix_word="ever")
    assert (r.critical_phrase, r.critical_word, r.context_word) == ("Only Carol did ever", "ever", "Only")
    assert (r.bad_phrase, bad[r.bad_context_start:r.bad_context_end]) == ("Even Carol did ever", "Even")
    r = _one("Julie explained Adam escaped from himself.", "Julie explained Adam escaped from herself.",
             "principle_A_domain_2", lexicon, one_prefix_prefix="Julie explained Adam escaped from",
             one_prefix_word_good="himself", one_prefix_word_bad="herself")
    assert (r.critical_phrase, r.critical_word, r.context_word) == ("Adam escaped from himself", "himself", "Adam")


def test_bad_side_spans(lexicon: Lexicon) -> None:
    """The bad sentence's critical and context words, read by hand."""
    bad = "Kayla explains Steven won't hurt herself."
    r = _one("Steven explains Kayla won't hurt herself.", bad, "principle_A_domain_3", lexicon,
             two_prefix_prefix_good="Steven explains Kayla won't hurt", two_prefix_prefix_bad="Kayla explains Steven won't hurt",
             two_prefix_word="herself")
    assert bad[r.bad_context_start:r.bad_context_end] == "Steven"  # the local subject of the bad sentence
    assert (r.bad_critical_word, r.bad_critical_start) == ("herself", 33)
    bad = "Joel discovered what Patricia might take the vase."
    r = _one("Joel discovered the vase that Patricia might take.", bad, "wh_questions_object_gap", lexicon)
    assert (r.critical_phrase, r.context_word) == ("the vase that Patricia might take", "vase")
    assert bad[r.bad_context_start:r.bad_context_end] == "what"
    assert (r.bad_critical_word, r.bad_critical_start) == ("take", bad.index("take"))
    assert r.bad_phrase == "what Patricia might take the vase"
    bad = "The student perform."
    r = _one("The students perform.", bad, "regular_plural_subject_verb_agreement_2", lexicon,
             two_prefix_prefix_good="The students", two_prefix_prefix_bad="The student", two_prefix_word="perform")
    assert (r.critical_phrase, r.bad_phrase, bad[r.bad_context_start:r.bad_context_end]) == (
        "students perform", "student perform", "student")


# ---- properties over every BLiMP pair ----------------------------------------------------
def test_coverage_per_paradigm(blimp_phrases: pd.DataFrame) -> None:
    cov = blimp_phrases.groupby("uid")["supported"].mean()
    assert len(cov) == 67
    assert (cov >= 0.98).all(), cov[cov < 0.98]
    table = phrases.coverage_table(blimp_phrases)
    row = table[table["level"] == "all"].iloc[0]
    assert row.pairs == len(blimp_phrases) and row.supported == blimp_phrases["supported"].sum()
    text = phrases.format_coverage(table)
    assert "determiner_noun_agreement_1" in text and "all" in text.splitlines()[-1]


def test_every_phrase_is_exact_covering_and_minimal(blimp_phrases: pd.DataFrame, lexicon: Lexicon) -> None:
    """Over all ~67,000 pairs: spans are exact; the phrase covers every differing word and the
    critical and context words (the bad phrase: the bad sentence's differing words and its
    critical and context words); dropping its first or last word loses one of them; every word
    the good sentence has more often than the bad one (alignment-free check) is inside."""
    problems = []
    for r in blimp_phrases[blimp_phrases["supported"]].itertuples():
        g, b = r.good, r.bad
        ok = (
            g[r.phrase_start:r.phrase_end] == r.critical_phrase
            and b[r.bad_phrase_start:r.bad_phrase_end] == r.bad_phrase
            and g[r.critical_start:r.critical_end] == r.critical_word
            and b[r.bad_critical_start:r.bad_critical_end] == r.bad_critical_word
            and r.phrase_start <= r.critical_start < r.critical_end <= r.phrase_end
            and r.bad_phrase_start <= r.bad_critical_start < r.bad_critical_end <= r.bad_phrase_end
        )
        if r.context_start >= 0:
            ok = ok and g[r.context_start:r.context_end] == r.context_word
            ok = ok and r.phrase_start <= r.context_start < r.context_end <= r.phrase_end
            ok = ok and r.bad_phrase_start <= r.bad_context_start < r.bad_context_end <= r.bad_phrase_end
        gs = phrase_words.make_side("good", g, lexicon, {})
        bs = phrase_words.make_side("bad", b, lexicon, {})
        phrase_words.align(gs, bs)
        words = [i for i in range(gs.n) if gs.is_word[i] and r.phrase_start <= gs.starts[i] < r.phrase_end]
        required = set(gs.diffs) | {i for i in words if gs.starts[i] in (r.critical_start, r.context_start)}
        ok = ok and set(gs.diffs) <= set(words)  # covers every differing word
        ok = ok and all(r.bad_phrase_start <= bs.starts[j] < r.bad_phrase_end for j in bs.diffs)
        ok = ok and words[0] in required and words[-1] in required  # minimal at both ends
        ok = ok and gs.starts[words[0]] == r.phrase_start and gs.ends[words[-1]] == r.phrase_end
        surplus = Counter(gs.lower) - Counter(bs.lower)
        inside = Counter(gs.lower[i] for i in words)
        ok = ok and all(inside[w] >= n for w, n in surplus.items() if w[0].isalnum())
        if not ok:
            problems.append((r.uid, r.pair_id, g, r.critical_phrase))
    assert not problems, problems[:5]


def test_phrase_table_matches_contract(blimp_phrases: pd.DataFrame, blimp_pairs: pd.DataFrame) -> None:
    assert list(blimp_phrases.columns) == phrases.COLUMNS
    assert blimp_phrases[["uid", "pair_id"]].values.tolist() == blimp_pairs[["uid", "pair_id"]].values.tolist()
    unsupported = blimp_phrases[~blimp_phrases["supported"]]
    assert (unsupported["reason"] != "").all() and (unsupported["phrase_start"] == -1).all()
    assert (blimp_phrases.loc[blimp_phrases["supported"], "reason"] == "").all()


# ---- alignment ---------------------------------------------------------------------------
def _brute_lcs(a: list[str], b: list[str]) -> int:
    for k in range(min(len(a), len(b)), 0, -1):
        bs = set(itertools.combinations(b, k))
        if any(c in bs for c in itertools.combinations(a, k)):
            return k
    return 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=7), st.lists(st.sampled_from("abcd"), max_size=7))
def test_lcs_is_a_longest_common_subsequence(a: list[str], b: list[str]) -> None:
    pairs = phrase_words.lcs_pairs(a, b)
    assert len(pairs) == _brute_lcs(a, b)
    assert all(a[i] == b[j] for i, j in pairs)
    assert all(i1 < i2 and j1 < j2 for (i1, j1), (i2, j2) in zip(pairs, pairs[1:]))
    ops = phrase_words._opcodes(a, b)  # opcodes tile both sequences
    assert [x for op in ops for x in range(op[1], op[2])] == list(range(len(a)))
    assert [x for op in ops for x in range(op[3], op[4])] == list(range(len(b)))


def test_lcs_tie_breaks() -> None:
    # fewest blocks: keep "the borgias do admire" together rather than borrow the first "the"
    a = "the college campus that the borgias do admire".split()
    b = "what the borgias do admire the college campus".split()
    assert [a[i] for i, _ in phrase_words.lcs_pairs(a, b)] == ["the", "borgias", "do", "admire"]
    assert phrase_words.lcs_pairs(a, b)[0] == (4, 1)
    # least displacement: the verb stays, the swapped names differ
    a, b = "julia says kenneth".split(), "kenneth says julia".split()
    assert phrase_words.lcs_pairs(a, b) == [(1, 1)]


def test_words_and_spans() -> None:
    text = "The patients' tutors can't see Lucille's ex-husband."
    words = [w for w, _, _ in phrase_words.split_words(text)]
    assert words == ["The", "patients", "'", "tutors", "can't", "see", "Lucille's", "ex-husband", "."]
    assert all(text[s:e] == w for w, s, e in phrase_words.split_words(text))


# ---- rules without BLiMP metadata, explicit spans, unsupported pairs -----------------------
def test_explicit_spans_override_rules(lexicon: Lexicon) -> None:
    good, bad = "Raymond is selling this old sketch.", "Raymond is selling this old sketches."
    r = phrases.annotate_pair(good, bad, phrases.rule_for("my_own"), lexicon, {},
                              explicit_critical=(good.index("sketch"), good.index("sketch") + 6),
                              explicit_context=(0, 7))
    assert (r.critical_phrase, r.critical_word, r.context_word, r.rule) == (
        "Raymond is selling this old sketch", "sketch", "Raymond", "explicit")
    assert (r.bad_critical_word, r.bad_phrase) == ("sketches", "Raymond is selling this old sketches")
    # no rule and nothing explicit: the differing words
    r = phrases.annotate_pair(good, bad, phrases.rule_for("my_own"), lexicon, {})
    assert (r.critical_phrase, r.critical_word, r.context_word, r.rule) == ("sketch", "sketch", "", "differing_words")


def test_rules_work_without_blimp_metadata(lexicon: Lexicon) -> None:
    r = _one("Those dogs chase a cat.", "Those dog chase a cat.", "regular_plural_subject_verb_agreement_2", lexicon)
    assert (r.critical_phrase, r.critical_word, r.context_word) == ("dogs chase", "chase", "dogs")
    r = _one("Some girls like these books.", "Some girls like these book.", "determiner_noun_agreement_1", lexicon)
    assert (r.critical_phrase, r.critical_word, r.context_word) == ("these books", "books", "these")


def test_unsupported_pairs_say_why(lexicon: Lexicon) -> None:
    r = _one("Dogs bark.", "dogs bark!", "determiner_noun_agreement_1", lexicon)
    assert not r.supported and "capitalisation or punctuation" in r.reason and r.phrase_start == -1
    r = _one("Cats ran.", "Cats run.", "determiner_noun_agreement_1", lexicon)  # no determiner
    assert not r.supported and r.reason == "rule det_noun: could not find a determiner before the noun"
    r = _one("The cat sleeps.", "The cat the sleeps.", "my_own", lexicon)  # no word of good differs
    assert r.reason == ("rule differing_words: could not find a differing word in the good sentence "
                        "(the other one only adds words)")
    off = Rule("off", "diff:first", None, "", supported=False, reason="no local span")
    r = phrases.annotate_pair("A b.", "A c.", off, lexicon)
    assert (r.supported, r.reason, r.rule) == (False, "no local span", "off")


def test_lexicon_classes(lexicon: Lexicon) -> None:
    tags = lexicon.tag("that out in the open waitress".split())
    assert "D" in tags[0] and all("ADJ" in t for t in tags[1:5]) and "N" in tags[5]
    tags = lexicon.tag("a newspaper article about the borgias".split())
    assert "NMOD" in tags[1] and "N" in tags[2] and "P" in tags[3] and "N" in tags[5]
    assert "REFL" in lexicon.classes("herself") and "AUX" in lexicon.classes("hasn't")


# ---- CLI and stage -----------------------------------------------------------------------
def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_cli_writes_contract_table_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bench = _jsonl(tmp_path / "pairs.jsonl", [
        {"good": "Raymond is selling this sketch.", "bad": "Raymond is selling this sketches.",
         "uid": "determiner_noun_agreement_1", "critical": "sketch", "context": "this"},
        {"good": "The cats sleep.", "bad": "The cats sleeps.", "uid": "x"},
    ])
    out = tmp_path / "study"
    assert cli.main(["phrases", "--benchmark", str(bench), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "determiner_noun_agreement_1" in text and "2/2" in text
    df = pd.read_parquet(out / "phrases.parquet")
    assert list(df.columns) == phrases.COLUMNS
    assert df["critical_phrase"].tolist() == ["this sketch", "sleep"]
    meta = store.read_parquet_metadata(out / "phrases.parquet")
    assert meta["benchmark"] == str(bench) and len(meta["benchmark_fingerprint"]) == 64
    assert cli.main(["phrases", "--benchmark", str(bench), "--out", str(out)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_cli_bad_input_exits_2_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "study"
    assert cli.main(["phrases", "--benchmark", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "missing: benchmark not found" in capsys.readouterr().err
    bench = _jsonl(tmp_path / "pairs.jsonl", [
        {"good": "The cats sleep.", "bad": "The cats sleeps."},
        "not json at all",
        {"good": "Same.", "bad": "Same."},
        {"good": "A cat sleeps.", "bad": "A cat sleep.", "critical": [3, 99]},
    ])
    assert cli.main(["phrases", "--benchmark", str(bench), "--out", str(out)]) == 2
    assert "pairs.jsonl:2: not valid JSON" in capsys.readouterr().err
    assert not (out / "phrases.parquet").exists()
    assert cli.main(["phrases", "--benchmark", str(bench), "--out", str(out), "--skip-invalid"]) == 0
    err = capsys.readouterr().err
    assert "pairs.jsonl:2" in err and "pairs.jsonl:3" in err and "pairs.jsonl:4" in err
    assert len(pd.read_parquet(out / "phrases.parquet")) == 1


def test_run_stage_from_config(tmp_path: Path) -> None:
    from grokscope.core.config import config_from_dict
    from grokscope.core.errors import MissingStageError

    _jsonl(tmp_path / "pairs.jsonl", [{"good": "The cats sleep.", "bad": "The cats sleeps."}])
    cfg = config_from_dict({"benchmark": {"path": "pairs.jsonl"}})
    cfg.source = str(tmp_path / "study.toml")
    study = store.Study(tmp_path / "s")
    phrases.run_stage(cfg, study)
    assert pd.read_parquet(study.phrases_path)["critical_phrase"].tolist() == ["sleep"]
    with pytest.raises(MissingStageError, match="grokscope demo"):
        phrases.run_stage(config_from_dict({"benchmark": {"path": "testbed"}}), study)


def test_docs_rule_table_lists_every_paradigm() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "phrases.md").read_text(encoding="utf-8")
    missing = [uid for uid in RULES if f"`{uid}`" not in doc]
    assert not missing


def test_lexicon_from_config(tmp_path: Path, blimp_dir: Path) -> None:
    """[benchmark] lexicon points the rules at BLiMP's vocabulary for a file elsewhere; without
    one the closed classes (determiners, auxiliaries, pronouns) still carry this rule."""
    from grokscope.core.config import config_from_dict

    _jsonl(tmp_path / "pairs.jsonl", [{"good": "Some girls like these books.", "bad": "Some girls like these book.",
                                       "uid": "determiner_noun_agreement_1"}])
    for lexicon, phrase in (("", "these books"), (str(blimp_dir / "vocabulary.csv"), "these books")):
        cfg = config_from_dict({"benchmark": {"path": "pairs.jsonl", "lexicon": lexicon}})
        cfg.source = str(tmp_path / "study.toml")
        study = store.Study(tmp_path / f"s{bool(lexicon)}")
        phrases.run_stage(cfg, study)
        df = pd.read_parquet(study.phrases_path)
        assert df["critical_phrase"].tolist() == [phrase]
        assert store.read_parquet_metadata(study.phrases_path)["lexicon"] == lexicon
