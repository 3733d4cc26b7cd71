"""Token-stream readers: a stream written by ``prepare`` and the same tokens re-written in each
foreign format (Megatron .bin/.idx, nanoGPT .bin, OLMo token files + global_indices) read back
identically; the shared Megatron fixtures are checked against an independent parse and their
source text; truncated files give errors naming the file."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from grokscope.cli import main
from grokscope.core.errors import ConfigError, DataError, MissingStageError
from grokscope.stream.readers import MEGATRON_MAGIC, detect_format, open_stream, read_megatron_index

DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int32): 4, np.dtype(np.int64): 5, np.dtype(np.uint16): 8}


# ---------------------------------------------------------------------------------------------
# writers for the foreign formats (test-only; independent of the readers)
# ---------------------------------------------------------------------------------------------
def write_megatron(prefix: Path, sequences: list[np.ndarray], dtype: np.dtype, gap: int = 0) -> None:
    """An MMapIndexedDataset (version 1); ``gap`` > 0 leaves junk bytes between sequences."""
    dtype = np.dtype(dtype)
    sizes, pointers, pos = [], [], 0
    with open(f"{prefix}.bin", "wb") as f:
        for s in sequences:
            f.write(b"\xff" * gap)
            pos += gap
            sizes.append(len(s))
            pointers.append(pos)
            f.write(np.asarray(s, dtype=dtype).tobytes())
            pos += len(s) * dtype.itemsize
    doc_idx = list(range(len(sequences) + 1))
    with open(f"{prefix}.idx", "wb") as f:
        f.write(MEGATRON_MAGIC)
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", DTYPE_CODES[dtype]))
        f.write(struct.pack("<Q", len(sizes)))
        f.write(struct.pack("<Q", len(doc_idx)))
        f.write(struct.pack(f"<{len(sizes)}i", *sizes))
        f.write(struct.pack(f"<{len(pointers)}q", *pointers))
        f.write(struct.pack(f"<{len(doc_idx)}q", *doc_idx))


def parse_megatron_by_hand(prefix: Path) -> list[list[int]]:
    """Independent parse with ``struct`` only: the token list of every sequence."""
    raw = Path(f"{prefix}.idx").read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    version, code, n, m = struct.unpack_from("<QBQQ", raw, 9)
    assert version == 1
    fmt = {4: "i", 8: "H", 1: "B", 5: "q"}[code]
    width = struct.calcsize(fmt)
    sizes = struct.unpack_from(f"<{n}i", raw, 34)
    pointers = struct.unpack_from(f"<{n}q", raw, 34 + 4 * n)
    data = Path(f"{prefix}.bin").read_bytes()
    return [list(struct.unpack_from(f"<{s}{fmt}", data, p)) for s, p in zip(sizes, pointers)] if width else []


# ---------------------------------------------------------------------------------------------
# a prepared stream to round-trip
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory, gpt2_tokenizer_dir):
    """A grokscope stream of a small corpus plus each document's token ids (tokenizer's own API)."""
    from grokscope.core.tokenizer import load_tokenizer

    d = tmp_path_factory.mktemp("prep")
    rng = np.random.default_rng(0)
    words = "the a cat dog sketch this these is are old new . , selling bought Raymond".split()
    docs = [" ".join(rng.choice(words, size=int(rng.integers(3, 40)))) for _ in range(60)]
    src = d / "c.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs), encoding="utf-8")
    assert main(["prepare", "--no-progress", "--corpus", str(src), "--tokenizer", str(gpt2_tokenizer_dir),
                 "--seq-len", "15", "--seed", "1", "--out", str(d / "study")]) == 0
    tok = load_tokenizer(gpt2_tokenizer_dir)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in docs]
    return d, ids


def stream_from_tokenizer(ids: list[list[int]], seed: int, eos: int, row_len: int = 16) -> np.ndarray:
    """The prepared stream, flat, built from the tokenizer's output by the documented rule:
    documents in seeded order, each + EOS, cut into rows, rows permuted (docs/CONTRACTS.md)."""
    order = np.random.default_rng(seed).permutation(len(ids))
    flat = np.array([t for k in order for t in ids[k] + [eos]], dtype=np.int64)
    rows = flat[: flat.size // row_len * row_len].reshape(-1, row_len)
    return rows[np.random.default_rng([seed, 1]).permutation(rows.shape[0])].reshape(-1)


def test_grokscope_reader_equals_tokenizer_output(prepared):
    d, ids = prepared
    s = open_stream(d / "study" / "tokens", rows_per_step=4)
    assert (s.format, s.row_len, s.eos_id, s.vocab_size, s.dtype) == ("grokscope", 16, 50256, 50257, np.uint16)
    flat = stream_from_tokenizer(ids, 1, 50256)
    assert s.n_rows == flat.size // 16
    np.testing.assert_array_equal(s.rows(0, s.n_rows).reshape(-1), flat[: s.n_rows * 16])
    np.testing.assert_array_equal(s.rows(3, 5), flat[3 * 16 : 5 * 16].reshape(2, 16))
    assert s.tokenizer == json.loads((d / "study" / "tokens" / "manifest.json").read_text())["tokenizer_fingerprint"]
    assert s.tokenizer_dir == d / "study" / "tokens" / "tokenizer"
    # a study dir opens too; chunks cover the stream in order
    s2 = open_stream(d / "study", rows_per_step=4)
    chunks = list(s2.iter_rows(7))
    assert [a for a, _ in chunks] == list(range(0, s.n_rows, 7))
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), s.rows(0, s.n_rows))
    assert s.fingerprint() == s2.fingerprint()


def test_schedule(prepared):
    d, _ = prepared
    s = open_stream(d / "study" / "tokens", rows_per_step=4)
    assert s.n_steps == s.n_rows // 4
    assert s.rows_seen(0) == 0 and s.rows_seen(3) == 12 and s.tokens_seen(3) == 12 * 16
    assert s.step_rows(2) == (8, 12)
    # contract: an occurrence in row r is first seen at step r // B + 1
    assert [s.first_step(r) for r in (0, 3, 4, 11, 12)] == [1, 1, 2, 3, 4]
    np.testing.assert_array_equal(s.first_step(np.array([0, 4, 8])), [1, 2, 3])
    no_b = open_stream(d / "study" / "tokens")
    assert no_b.rows_per_step is None and no_b.n_steps is None
    with pytest.raises(ConfigError, match="rows_per_step"):
        no_b.rows_seen(1)
    with pytest.raises(IndexError):
        s.rows(0, s.n_rows + 1)
    with pytest.raises(ConfigError, match="row_len 20"):
        open_stream(d / "study" / "tokens", row_len=20)


@pytest.mark.parametrize("dtype, gap", [(np.uint16, 0), (np.int32, 0), (np.int32, 3), (np.int64, 8)])
def test_megatron_round_trip(prepared, tmp_path, dtype, gap):
    """Documents written Megatron-style (one sequence per document, EOD appended) in the
    prepared order read back as the same rows; with gaps the reader gathers the pieces."""
    d, ids = prepared
    s = open_stream(d / "study" / "tokens")
    order = np.random.default_rng(1).permutation(len(ids))
    seqs = [np.array(ids[k] + [50256]) for k in order]
    write_megatron(tmp_path / "ds_text_document", seqs, dtype, gap=gap)
    m = open_stream(tmp_path / "ds_text_document", row_len=16, eos_id=50256, rows_per_step=4)
    assert m.format == "megatron" and m.n_rows == s.n_rows and m.dtype == np.dtype(dtype)
    assert m.manifest["contiguous"] == (gap == 0)
    packed = s.rows(0, s.n_rows)[np.argsort(np.random.default_rng([1, 1]).permutation(s.n_rows))]  # undo row shuffle
    np.testing.assert_array_equal(m.rows(0, m.n_rows), packed)
    np.testing.assert_array_equal(m.rows(5, 9), packed[5:9])
    assert m.rows_seen(2) == 8


def test_megatron_suite_defaults_and_pythia_rows(tmp_path):
    """Pythia-style preshuffled file: every index entry is one 2049-token row; step s = rows
    [s·1024, (s+1)·1024)."""
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 50277, size=2049) for _ in range(5)]
    write_megatron(tmp_path / "pile_0.87_deduped_text_document", seqs, np.uint16)
    m = open_stream(tmp_path / "pile_0.87_deduped_text_document.bin")
    assert (m.row_len, m.rows_per_step, m.eos_id, m.n_rows) == (2049, 1024, 0, 5)
    for i in range(5):
        np.testing.assert_array_equal(m.rows(i, i + 1)[0], seqs[i])
    assert m.tokens_seen(1) == 1024 * 2049


def test_shared_megatron_fixtures(megatron_dir):
    """test_text_document holds test.jsonl tokenized by whitespace (Megatron's null tokenizer)
    with EOD 131072 appended; both fixtures agree with an independent struct-based parse."""
    lines = [json.loads(x)["text"] for x in (megatron_dir / "test.jsonl").read_text().splitlines() if x.strip()]
    by_hand = parse_megatron_by_hand(megatron_dir / "test_text_document")
    assert len(by_hand) == len(lines) == 1000
    assert all(seq == [int(t) for t in text.split()] + [131072] for seq, text in zip(by_hand, lines))
    assert "test_text_document" in (megatron_dir / "data_args.txt").read_text()

    m = open_stream(megatron_dir / "test_text_document", row_len=5, eos_id=131072)
    np.testing.assert_array_equal(m.rows(0, m.n_rows), np.array(by_hand))
    index = read_megatron_index(megatron_dir / "test_text_document.idx")
    assert index.doc_idx.tolist() == list(range(1001)) and index.dtype == np.int32

    fim = parse_megatron_by_hand(megatron_dir / "fim_text_document")
    flat = np.array([t for s in fim for t in s])
    f = open_stream(megatron_dir / "fim_text_document", row_len=64)
    assert f.n_rows == flat.size // 64 and f.dtype == np.int32
    np.testing.assert_array_equal(f.rows(0, f.n_rows).reshape(-1), flat[: f.n_rows * 64])
    assert all(s[0] == 128000 and s[-1] == 128001 for s in fim)  # Llama-3 BOS ... EOS per document
    assert detect_format(megatron_dir / "fim_text_document.idx") == "megatron"


def test_megatron_truncated_files_name_the_file(tmp_path):
    seqs = [np.arange(10) + i for i in range(6)]
    write_megatron(tmp_path / "t", seqs, np.int32)
    data = (tmp_path / "t.bin").read_bytes()
    (tmp_path / "t.bin").write_bytes(data[:-7])
    with pytest.raises(DataError, match=r"t\.bin: truncated data file: sequence 5"):
        open_stream(tmp_path / "t", row_len=4)
    (tmp_path / "t.bin").write_bytes(data)
    idx = (tmp_path / "t.idx").read_bytes()
    (tmp_path / "t.idx").write_bytes(idx[:-9])
    with pytest.raises(DataError, match=r"t\.idx: truncated index"):
        open_stream(tmp_path / "t", row_len=4)
    (tmp_path / "t.idx").write_bytes(b"NOTMEGA" + idx[7:])
    with pytest.raises(DataError, match=r"t\.idx: not a Megatron"):
        open_stream(tmp_path / "t", row_len=4)
    (tmp_path / "t.idx").write_bytes(idx[:20])
    with pytest.raises(DataError, match=r"t\.idx: truncated index"):
        open_stream(tmp_path / "t", row_len=4)


def test_nanogpt_round_trip(prepared, tmp_path):
    d, ids = prepared
    s = open_stream(d / "study" / "tokens")
    flat = stream_from_tokenizer(ids, 1, 50256).astype(np.uint16)
    flat.tofile(tmp_path / "train.bin")  # nanoGPT's prepare.py writes exactly this
    n = open_stream(tmp_path / "train.bin", row_len=16)
    assert (n.format, n.rows_per_step, n.eos_id, n.dtype) == ("nanogpt", 480, 50256, np.uint16)
    np.testing.assert_array_equal(n.rows(0, n.n_rows), s.rows(0, s.n_rows))
    assert open_stream(tmp_path / "train.bin").row_len == 1025
    (tmp_path / "odd.bin").write_bytes(b"\x00" * 7)
    with pytest.raises(DataError, match=r"odd\.bin: 7 bytes is not a whole number of uint16"):
        open_stream(tmp_path / "odd.bin")


def test_olmo_round_trip(prepared, tmp_path):
    """Two OLMo token files (raw memmaps, tails shorter than a row dropped per file) and a
    global_indices.npy permutation: row i = instance global_indices[i]."""
    d, ids = prepared
    s = open_stream(d / "study" / "tokens")
    rows = s.rows(0, s.n_rows).astype(np.uint16)
    half = s.n_rows // 2
    olmo = tmp_path / "olmo"
    olmo.mkdir()
    # file order comes from paths.txt, not the names
    np.concatenate([rows[:half].reshape(-1), np.array([7, 7, 7], np.uint16)]).tofile(olmo / "part-1.npy")
    rows[half:].reshape(-1).tofile(olmo / "part-0.npy")
    (olmo / "paths.txt").write_text("part-1.npy\npart-0.npy\n")
    perm = np.random.default_rng(3).permutation(s.n_rows).astype(np.uint32)
    perm.tofile(olmo / "global_indices.npy")  # OLMo writes a raw uint32 memmap
    o = open_stream(olmo, row_len=16, rows_per_step=8)
    assert o.format == "olmo" and o.n_rows == s.n_rows and o.eos_id == 50279
    np.testing.assert_array_equal(o.rows(0, o.n_rows), rows[perm])
    np.testing.assert_array_equal(o.rows(2, 4), rows[perm[2:4]])
    # an index beyond the token files is a clear error when the stream is opened (before any scan)
    bad = perm.copy()
    bad[5] = 10**6
    bad.tofile(olmo / "global_indices.npy")
    with pytest.raises(DataError, match=r"global_indices.npy: entry 5 is instance id 1000000, out of range"):
        open_stream(olmo, row_len=16)


def test_olmo_global_indices_checked_at_open(tmp_path):
    """global_indices.npy against the token files before any scan: more ids than instances, an id
    past the last instance or a negative one is a DataError naming the file and the value."""
    olmo = tmp_path / "olmo"
    olmo.mkdir()
    np.arange(10 * 4 + 3, dtype=np.uint16).tofile(olmo / "part-0.npy")  # 10 instances of 4 (+ a dropped tail)
    ids = np.random.default_rng(0).permutation(10).astype(np.uint32)
    ids.tofile(olmo / "global_indices.npy")
    o = open_stream(olmo, row_len=4)
    assert o.n_rows == 10 and np.array_equal(o.rows(0, 10), np.arange(40).reshape(10, 4)[ids])
    np.append(ids, ids[:1]).tofile(olmo / "global_indices.npy")
    with pytest.raises(DataError, match=r"global_indices.npy: 11 instance ids, more than the instances available: "
                                        r"the 1 token file\(s\) hold 10 instances of 4 tokens"):
        open_stream(olmo, row_len=4)
    with pytest.raises(DataError, match=r"20 instance ids, more than .* hold 5 instances of 8 tokens"):
        np.append(ids, ids).tofile(olmo / "global_indices.npy")
        open_stream(olmo, row_len=8)  # a wrong row_len shows up as too few instances
    # the same file size rewritten with a bad id: the memo of the range check keys on size and mtime
    ids.tofile(olmo / "global_indices.npy")
    open_stream(olmo, row_len=4)
    bad = ids.copy()
    bad[7] = 10
    bad.tofile(olmo / "global_indices.npy")
    st = (olmo / "global_indices.npy").stat()
    os.utime(olmo / "global_indices.npy", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DataError, match=r"global_indices.npy: entry 7 is instance id 10, out of range: .*ids 0..9"):
        open_stream(olmo, row_len=4)
    (olmo / "global_indices.npy").unlink()
    np.save(olmo / "global_indices.npy", np.array([0, 3, -2, 1], dtype=np.int64))
    with pytest.raises(DataError, match=r"entry 2 is instance id -2, out of range"):
        open_stream(olmo, row_len=4)
    np.save(olmo / "global_indices.npy", np.array([0.0, 1.0]))
    with pytest.raises(DataError, match=r"holds float64 values, expected integer instance ids"):
        open_stream(olmo, row_len=4)


def test_olmo_npy_files_with_header(tmp_path):
    olmo = tmp_path / "o"
    olmo.mkdir()
    np.save(olmo / "a.npy", np.arange(12, dtype=np.uint32))
    np.save(olmo / "global_indices.npy", np.array([2, 0, 1], dtype=np.uint32))
    o = open_stream(olmo, row_len=4)
    assert o.dtype == np.uint32
    np.testing.assert_array_equal(o.rows(0, 3), [[8, 9, 10, 11], [0, 1, 2, 3], [4, 5, 6, 7]])


def test_open_stream_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_stream(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a token stream"):
        open_stream(tmp_path / "empty")
    with pytest.raises(MissingStageError, match="grokscope prepare"):
        open_stream(tmp_path / "empty", format="grokscope")
    with pytest.raises(ConfigError, match="unknown token-stream format"):
        open_stream(tmp_path, format="parquet")
