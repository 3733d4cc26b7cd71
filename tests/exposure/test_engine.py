"""The compiled phrase search equals a brute-force Python search (hypothesis, thousands of cases)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grokscope.exposure.engine import (
    OutOfVocabError,
    build_index,
    merge_results,
    scan_rows,
    scan_stream,
)
from grokscope.exposure.words import WordTables, word_tables_from_bytes


# ------------------------------------------------------------------------------------------
# brute force: every sequence, every row, every start position, rules written out literally
# ------------------------------------------------------------------------------------------
def brute_force(rows: np.ndarray, seqs: list[tuple[int, ...]], tables: WordTables,
                eos: int, check_words: bool = True) -> tuple[list[list[int]], list[int]]:
    """Per sequence: the list of rows of every match (in order), and the first row (-1)."""
    cont, ends = tables.continues_word, tables.ends_word
    hits: list[list[int]] = [[] for _ in seqs]
    for r in range(rows.shape[0]):
        row = [int(x) for x in rows[r]]
        for k, s in enumerate(seqs):
            m = len(s)
            for i in range(len(row) - m + 1):
                window = row[i:i + m]
                if window != list(s) or eos in window:
                    continue
                if check_words:
                    after = row[i + m] if i + m < len(row) else None
                    before = row[i - 1] if i > 0 else None
                    if after is not None and cont[after]:
                        continue  # the word goes on: " sketch" inside " sketchbook"
                    if cont[s[0]] and before is not None:
                        prev_is_word = bool(ends[before])
                        # a character split over two tokens: the pair table decides
                        if prev_is_word and tables.cont_index[before] >= 0:
                            if i == 1:
                                prev_is_word = False  # its first bytes are in the previous row
                            elif tables.tail_index[row[i - 2]] >= 0:
                                prev_is_word = bool(tables.pair_word[tables.tail_index[row[i - 2]],
                                                                     tables.cont_index[before]])
                        if prev_is_word:
                            continue  # the phrase starts inside a word
                hits[k].append(r)
    first = [h[0] if h else -1 for h in hits]
    return hits, first


@st.composite
def search_case(draw):
    vocab = draw(st.integers(3, 9))  # tiny vocabularies: repeats, overlaps, shared prefixes everywhere
    eos = draw(st.integers(0, vocab - 1))
    row_len = draw(st.integers(1, 12))
    n_rows = draw(st.integers(0, 10))
    flat = draw(st.lists(st.integers(0, vocab - 1), min_size=n_rows * row_len, max_size=n_rows * row_len))
    rows = np.array(flat, dtype=np.uint16).reshape(n_rows, row_len)
    cont = np.array(draw(st.lists(st.booleans(), min_size=vocab, max_size=vocab)))
    ends = np.array(draw(st.lists(st.booleans(), min_size=vocab, max_size=vocab)))
    cont[eos] = ends[eos] = False
    tail_index = np.array(draw(st.lists(st.integers(-1, 1), min_size=vocab, max_size=vocab)), dtype=np.int32)
    cont_index = np.array(draw(st.lists(st.integers(-1, 1), min_size=vocab, max_size=vocab)), dtype=np.int32)
    pair_word = np.array(draw(st.lists(st.booleans(), min_size=4, max_size=4))).reshape(2, 2)
    non_eos = [t for t in range(vocab) if t != eos]
    seqs: set[tuple[int, ...]] = set()
    # random phrases ...
    for s in draw(st.lists(st.lists(st.sampled_from(non_eos), min_size=1, max_size=5), max_size=8)):
        seqs.add(tuple(s))
    # ... and phrases cut out of the flat stream, so that many straddle a row or EOS boundary
    # or sit at the very start/end of the stream
    if flat:
        for a, m in draw(st.lists(st.tuples(st.integers(0, len(flat) - 1), st.integers(1, 5)), max_size=8)):
            s = tuple(flat[a:a + m])
            if eos not in s:
                seqs.add(s)
        seqs.add(tuple(flat[:1]) if flat[0] != eos else (non_eos[0],))
        if flat[-1] != eos:
            seqs.add(tuple(flat[-2:]) if eos not in flat[-2:] else (flat[-1],))
    seqs_l = sorted(seqs)
    return rows, seqs_l, WordTables(cont, ends, tail_index, cont_index, pair_word), eos, vocab


HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]


def check_scan_rows(case, check_words):
    rows, seqs, tables, eos, vocab = case
    index = build_index(seqs, tables)
    counts, first = scan_rows(index, rows, row0=0, check_words=check_words)
    hits, bf_first = brute_force(rows, seqs, tables, eos, check_words)
    assert counts.tolist() == [len(h) for h in hits]
    assert first.tolist() == bf_first


@settings(max_examples=1500, deadline=None, suppress_health_check=HEALTH)
@given(search_case(), st.booleans())
def test_scan_rows_equals_brute_force(case, check_words):
    check_scan_rows(case, check_words)


@pytest.mark.slow
@settings(max_examples=30000, deadline=None, suppress_health_check=HEALTH)
@given(search_case(), st.booleans())
def test_scan_rows_equals_brute_force_many(case, check_words):
    check_scan_rows(case, check_words)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(search_case(), st.data())
def test_scan_stream_intervals_chunks_and_shards_equal_brute_force(case, data):
    """Counts per window interval, any chunk size, any split into shards merged in any order."""
    rows, seqs, tables, eos, vocab = case
    n = rows.shape[0]
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=4)))
    edges = [0] + cuts + [n]
    chunk = data.draw(st.integers(1, 4))
    index = build_index(seqs, tables)
    splits = sorted(set(data.draw(st.lists(st.integers(0, n), max_size=3)) + [0, n]))
    parts = [scan_stream(index, lambda a, b: rows[a:b], a, b, edges, chunk_rows=chunk)
             for a, b in zip(splits[:-1], splits[1:])]
    if not parts:
        return
    order = data.draw(st.permutations(range(len(parts))))
    res = merge_results([parts[i] for i in order])
    hits, bf_first = brute_force(rows, seqs, tables, eos)
    expected = np.zeros((len(seqs), len(edges) - 1), dtype=np.int64)
    for k, h in enumerate(hits):
        for r in h:
            interval = int(np.searchsorted(edges, r, side="right")) - 1
            while edges[interval + 1] <= r:  # empty intervals (repeated edges) hold nothing
                interval += 1
            expected[k, interval] += 1
    assert res.first_row.tolist() == bf_first
    np.testing.assert_array_equal(res.dense(len(edges) - 1), expected)
    np.testing.assert_array_equal(res.totals(), expected.sum(axis=1))


def test_hand_worked_example():
    # tokens: 0 = EOS, 1 = " this", 2 = " sketch", 3 = "book", 4 = ".", 5 = "This", 6 = "foo"
    texts = [None, b" this", b" sketch", b"book", b".", b"This", b"foo"]
    tables = word_tables_from_bytes(texts)
    assert tables.continues_word.tolist() == [False, False, False, True, False, True, True]
    assert tables.ends_word.tolist() == [False, True, True, True, False, True, True]
    seqs = [(1, 2), (5, 2)]  # " this sketch", "This sketch"
    rows = np.array([
        [1, 2, 4, 1, 2, 3, 1, 2],   # " this sketch." ✓, " this sketchbook" ✗, " this sketch" at row end ✓
        [2, 0, 5, 2, 4, 6, 5, 2],   # "<eos>This sketch." ✓, "fooThis sketch" ✗ (starts inside a word)
        [1, 0, 2, 5, 2, 0, 0, 0],   # " this<eos> sketch" ✗ (crosses EOS), ...
        [4, 5, 2, 4, 1, 1, 1, 1],   # ".This sketch." ✓ (previous token ends in punctuation)
    ], dtype=np.uint16)
    # row 2: " sketch" then "This sketch" preceded by " sketch" (ends in a letter) ✗
    counts, first = scan_rows(build_index(seqs, tables), rows)
    assert counts.tolist() == [2, 2]
    assert first.tolist() == [0, 1]
    # a match split by the row boundary (row 0 ends with " this", row 1 starts with " sketch") never counts
    rows2 = np.array([[4, 4, 1], [2, 4, 4]], dtype=np.uint16)
    assert scan_rows(build_index(seqs, tables), rows2)[0].tolist() == [0, 0]


def test_out_of_vocabulary_ids_raise_with_the_absolute_row():
    tables = WordTables(np.zeros(5, bool), np.zeros(5, bool))
    index = build_index([(1, 2)], tables)
    rows = np.array([[1, 2, 3], [4, 7, 1]], dtype=np.uint16)
    with pytest.raises(OutOfVocabError) as e:
        scan_rows(index, rows, row0=100)
    assert (e.value.row, e.value.column, e.value.token) == (101, 1, 7)
    with pytest.raises(OutOfVocabError) as e:
        scan_rows(index, np.array([[1, 2, -1]], dtype=np.int32))
    assert (e.value.row, e.value.column, e.value.token) == (0, 2, -1)


def test_build_index_rejects_bad_sequences():
    tables = WordTables(np.zeros(5, bool), np.zeros(5, bool))
    with pytest.raises(ValueError, match="outside"):
        build_index([(1, 9)], tables)
    with pytest.raises(ValueError, match="unique"):
        build_index([(1, 2), (1, 2)], tables)
    with pytest.raises(ValueError, match="empty"):
        build_index([()], tables)


def test_uint32_and_int32_streams():
    tables = WordTables(np.zeros(70000, bool), np.zeros(70000, bool))
    index = build_index([(65600, 3), (3,)], tables)
    for dtype in (np.uint32, np.int32, np.int64):
        rows = np.array([[65600, 3, 3], [3, 65600, 3]], dtype=dtype)
        counts, first = scan_rows(index, rows)
        assert counts.tolist() == [2, 4] and first.tolist() == [0, 0]


def test_gpt2_word_tables(gpt2_tokenizer_dir):
    from grokscope.core.tokenizer import load_tokenizer
    from grokscope.exposure.words import word_tables

    tok = load_tokenizer(gpt2_tokenizer_dir)
    t = word_tables(tok)
    ids = {s: tok.convert_tokens_to_ids(s) for s in ["Ġthis", "book", ".", "Ġis", "'s", "This", "123", "<|endoftext|>"]}
    assert [bool(t.continues_word[ids[s]]) for s in ["Ġthis", "book", ".", "Ġis", "'s", "This", "123"]] == [
        False, True, False, False, False, True, True]
    assert [bool(t.ends_word[ids[s]]) for s in ["Ġthis", "book", ".", "'s", "<|endoftext|>"]] == [True, True, False, True, False]
    assert not t.continues_word[ids["<|endoftext|>"]]
    # "“He" = "âĢ" (E2 80) + "ľ" (9C) + "He": the split quote is not a letter, "Ã" (C3 …) is
    q1, q2, a_ = (tok.convert_tokens_to_ids(s) for s in ["âĢ", "ľ", "Ã"])
    assert not t.continues_word[q1] and t.continues_word[a_]
    assert t.ends_word[q2] and t.cont_index[q2] >= 0 and t.tail_index[q1] >= 0
    assert not t.pair_word[t.tail_index[q1], t.cont_index[q2]]
    he = tok.convert_tokens_to_ids("He")
    index = build_index([(he,)], t)
    rows = np.array([[q1, q2, he, q1], [a_, q2, he, q1]], dtype=np.uint16)  # "“He”", "Ü"+"He" (Ü: C3 9C)
    assert scan_rows(index, rows)[0].tolist() == [1]


def test_index_pickles_as_its_sequences_and_is_rebuilt_once_per_process():
    """Dask ships the index pickled: the payload is the sequences (not the hash table), the
    rebuilt index scans identically, and a second unpickle in the same process reuses it."""
    import pickle

    from grokscope.exposure import engine as phrase_search

    rng = np.random.default_rng(3)
    texts = [None] + [bytes([32, 97 + (i % 26)]) for i in range(1, 400)]
    tables = word_tables_from_bytes(texts)
    seqs = sorted({tuple(int(x) for x in rng.integers(1, 400, size=rng.integers(1, 5))) for _ in range(3000)})
    index = build_index(seqs, tables)
    payload = pickle.dumps(index)
    assert len(payload) < index.hash_table.nbytes  # the sequences, not the tables
    phrase_search._INDEX_CACHE.clear()
    a = pickle.loads(payload)
    b = pickle.loads(payload)
    assert a is b and a.source_key == index.source_key
    rows = rng.integers(0, 400, size=(50, 32)).astype(np.uint16)
    for x, y in zip(scan_rows(index, rows), scan_rows(a, rows)):
        np.testing.assert_array_equal(x, y)
    other = pickle.loads(pickle.dumps(build_index(seqs[:-1], tables)))
    assert other.source_key != index.source_key and other.n_sequences == len(seqs) - 1
