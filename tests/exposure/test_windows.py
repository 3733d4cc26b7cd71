"""Windowed exposure of long-distance pairs (``[exposure] window_tokens``): the later of a pair's
critical and context words within N tokens after the earlier, in the same row and document,
counted in the scan's own pass — checked against a brute-force search of the decoded rows on
generated GPT-2 streams (every form, a proper noun kept capitalised, EOS and row cuts, window
sizes), plus the engine on a hand-worked block and the window forms by position."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from grokscope.core import store
from grokscope.exposure.engine import build_index, scan_rows, window_rules
from grokscope.exposure.shards import StreamSpec
from grokscope.exposure.stage import compute_exposure
from grokscope.exposure.windows import pair_window
from grokscope.exposure.words import WordTables
from tests.exposure.test_stage import write_stream

WORDS = ["what", "What", "did", "saw", "seen", "Mary", "mary", "praised", "herself", "himself", "the", "boys",
         "boy", "said", "sawing", "who", "Who"]
PUNCT = [".", ",", "?", "(", "\n"]


def test_engine_counts_windows_by_hand():
    """Sequences 0: (1,), 1: (2, 3), 2: (4,); window 0 = 0 then 1, window 1 = 2 then 1; N = 3; EOS 0."""
    tables = WordTables(np.zeros(10, bool), np.zeros(10, bool))
    rules = window_rules(3, [((0,), (1,)), ((2,), (1,))], tokens=3, eos_id=0)
    index = build_index([(1,), (2, 3), (4,)], tables, rules)
    rows = np.array([[1, 5, 2, 3, 5, 5, 5, 2, 3, 9],  # (2,3) 2 after the 1: w0; the second (2,3) is 7 after
                     [1, 0, 2, 3, 4, 5, 2, 3, 1, 2],  # EOS between 1 and (2,3): no; (2,3) 2 after the 4: w1
                     [2, 3, 1, 5, 5, 2, 3, 1, 2, 3]], dtype=np.uint16)  # w0 needs the 1 *before*: at 5 (gap 3) and 8
    counts, first = scan_rows(index, rows, row0=10)
    assert index.n_sequences == 5 and index.n_phrase_sequences == 3
    assert counts.tolist() == [5, 7, 1, 3, 1] and first.tolist() == [10, 10, 11, 10, 11]
    with pytest.raises(ValueError, match="outside"):
        window_rules(3, [((0,), (3,))], tokens=2)


def test_window_forms_by_position():
    # a sentence-initial common word: also lower-cased mid-text; the later word as written
    assert pair_window("saw", 9, "What", 0, 0, [" what did Mary see", " What", "What"], ["mid", "sentence_start"]) \
        == ((" what", " What", "What"), (" saw",))
    # a proper noun at the start keeps its capital (the phrase's mid form says so)
    assert pair_window("herself", 13, "Mary", 0, 0, [" Mary praised herself", "", ""], ["mid"]) == ((" Mary",),
                                                                                                   (" herself",))
    # the critical word first, the context word after it; mid-sentence words take every form
    assert pair_window("himself", 4, "boys", 20, 4, None, ["mid", "sentence_start"]) == (
        (" himself", " Himself", "Himself"), (" boys",))
    assert pair_window("saw", 9, "", None, 0, None, ["mid"]) is None  # no context word
    assert pair_window("saw", 9, "saw it", 9, 0, None, ["mid"]) is None  # overlapping words


# ---- brute force on generated streams ---------------------------------------------------------
def _documents(rng: np.random.Generator, n: int) -> list[str]:
    docs = []
    for _ in range(n):
        parts = [str(rng.choice(PUNCT)) if rng.random() < 0.2 else str(rng.choice(WORDS))
                 for _ in range(rng.integers(3, 30))]
        docs.append(" ".join(parts).replace(" \n ", "\n").replace("( ", "("))
    return docs


def _spans(tok, row: list[int], form: str) -> list[tuple[int, int, int]]:
    """Whole-word matches of ``form`` in one row, by text: (segment, first token, last token)."""
    eos = tok.eos_token_id
    if form.startswith(" "):
        pat = re.compile(re.escape(form) + r"(?![A-Za-z0-9])")
    else:  # no leading space: at a segment/line start or after punctuation
        pat = re.compile(r"(?:^|(?<=[^A-Za-z0-9 ]))" + re.escape(form) + r"(?![A-Za-z0-9])")
    out, seg, start = [], 0, 0
    for k in range(len(row) + 1):
        if k < len(row) and row[k] != eos:
            continue
        ids = row[start:k]
        pieces = [tok.decode([t]) for t in ids]
        bounds = np.cumsum([0] + [len(p) for p in pieces])  # ASCII text: one character per byte
        text = "".join(pieces)
        for m in pat.finditer(text):
            a, b = np.searchsorted(bounds, m.start()), np.searchsorted(bounds, m.end())
            assert bounds[a] == m.start() and bounds[b] == m.end(), "a text match not on token boundaries"
            out.append((seg, start + int(a), start + int(b) - 1))
        seg, start = seg + 1, k + 1
    return out


def _brute_windows(tok, rows: np.ndarray, first_forms, second_forms, n: int) -> list[int]:
    """Rows of every occurrence of a second form starting within ``n`` tokens after the end of a
    first form in the same row and document."""
    hits = []
    for r, row in enumerate(rows.tolist()):
        firsts = {h for f in first_forms for h in _spans(tok, row, f)}
        for seg, a, _ in {h for f in second_forms for h in _spans(tok, row, f)}:
            if any(s == seg and e < a and a - e <= n for s, _, e in firsts):
                hits.append(r)
    return hits



PAIRS = pd.DataFrame({
    "uid": ["wh", "anaphor", "anaphor_after", "local"], "pair_id": [0, 1, 2, 3], "supported": [True] * 4,
    "critical_phrase": ["What did Mary saw", "Mary praised herself", "himself said the boys", "the boys"],
    "bad_phrase": ["What did Mary seen", "Mary praised himself", "herself said the boys", "the boy"],
    "phrase_start": [0, 0, 4, 4], "bad_phrase_start": [0, 0, 4, 4],
    "critical_word": ["saw", "herself", "himself", "boys"], "critical_start": [14, 13, 4, 8],
    "bad_critical_word": ["seen", "himself", "herself", "boy"], "bad_critical_start": [14, 13, 4, 8],
    "context_word": ["What", "Mary", "boys", ""], "context_start": [0, 0, 22, None],
    "bad_context_start": [0, 0, 22, None],
    "good_forms": [[" what did Mary saw", " What did Mary saw", "What did Mary saw"],
                   [" Mary praised herself", " Mary praised herself", "Mary praised herself"],
                   [" himself said the boys", " Himself said the boys", "Himself said the boys"],
                   [" the boys", " The boys", "The boys"]],
    "bad_forms": [[" what did Mary seen", " What did Mary seen", "What did Mary seen"],
                  [" Mary praised himself", " Mary praised himself", "Mary praised himself"],
                  [" herself said the boys", " Herself said the boys", "Herself said the boys"],
                  [" the boy", " The boy", "The boy"]],
})


@pytest.mark.parametrize("seed,n", [(0, 4), (1, 9)])
def test_window_counts_equal_a_brute_force_search(tmp_path, gpt2, seed, n):
    tokens = write_stream(tmp_path / "tokens", gpt2, _documents(np.random.default_rng(seed), 400), row_len=31)
    (tmp_path / "study").mkdir()
    store.write_parquet(tmp_path / "study" / "phrases.parquet", PAIRS, metadata={"benchmark_fingerprint": "f"})
    arr = np.load(tokens / "tokens.npy")
    B = 3
    steps = [0, 2, 20, arr.shape[0] // B]
    out = tmp_path / "study" / "exposure.parquet"
    spec = StreamSpec(str(tokens), rows_per_step=B)
    compute_exposure(tmp_path / "study" / "phrases.parquet", spec, steps, out, progress=False, window_tokens=n)
    got = pd.read_parquet(out)
    expected_forms = {  # (first forms, second forms) of the good side of each pair
        0: ([" what", " What", "What"], [" saw"]), 1: ([" Mary", "Mary"], [" herself"]),
        2: ([" himself", " Himself", "Himself"], [" boys"])}
    bad_second = {0: " seen", 1: " himself", 2: " boys"}
    bad_first = {0: expected_forms[0][0], 1: [" Mary", "Mary"], 2: [" herself", " Herself", "Herself"]}
    checked = 0
    for i, (first, second) in expected_forms.items():
        assert [list(x) for x in got["good_window_forms"][i]] == [first, second]
        for side, f, s in (("good", first, second), ("bad", bad_first[i], [bad_second[i]])):
            rows = _brute_windows(gpt2, arr, f, s, n)
            assert got[f"{side}_window_total_count"][i] == len(rows), (side, i)
            for t in steps:
                assert got[f"{side}_window_count_{t}"][i] == sum(r < t * B for r in rows)
            first_step = got[f"{side}_window_first_step"][i]
            assert (pd.isna(first_step) and not rows) or first_step == min(rows) // B + 1
            checked += len(rows)
    assert checked > 20  # the generated stream holds windows to count
    # a pair without a context word has no window: null, not 0
    assert pd.isna(got["good_window_total_count"][3]) and got["good_window_forms"][3] is None
    # the contiguous counts are those of a search without windows
    plain = tmp_path / "plain.parquet"
    compute_exposure(tmp_path / "study" / "phrases.parquet", spec, steps, plain, progress=False)
    base = pd.read_parquet(plain)
    assert not any("window" in c for c in base.columns)
    assert base.equals(got[base.columns])


def test_windowed_search_on_two_dask_workers_equals_one_process(tmp_path, gpt2):
    pytest.importorskip("distributed")
    tokens = write_stream(tmp_path / "tokens", gpt2, _documents(np.random.default_rng(5), 300), row_len=31)
    (tmp_path / "study").mkdir()
    store.write_parquet(tmp_path / "study" / "phrases.parquet", PAIRS, metadata={"benchmark_fingerprint": "f"})
    arr = np.load(tokens / "tokens.npy")
    steps = [1, arr.shape[0] // 2]
    spec = StreamSpec(str(tokens), rows_per_step=2)
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    compute_exposure(tmp_path / "study" / "phrases.parquet", spec, steps, one, progress=False, window_tokens=6)
    compute_exposure(tmp_path / "study" / "phrases.parquet", spec, steps, two, progress=False, window_tokens=6,
                     workers=2, shard_rows=40)
    a, b = pd.read_parquet(one), pd.read_parquet(two)
    assert a.drop(columns=["good_window_forms", "bad_window_forms"]).equals(
        b.drop(columns=["good_window_forms", "bad_window_forms"]))
    assert int(a["good_window_total_count"].fillna(0).sum()) > 0
