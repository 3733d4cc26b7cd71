"""Megatron data in shards, as Hugging Face serves Pythia's preshuffled Pile: the bytes of one
``document.bin`` cut at arbitrary offsets (Pythia's ``utils/shard_memmap.py`` cuts every fixed
number of bytes, so a cut may fall inside a document and, for other cut sizes, inside a token)
into ``document-00000-of-000MM.bin`` … next to one ``document.idx``. Read in place, the shards
must give exactly the rows of the merged file; a missing, short or long shard is a DataError
naming it, raised when the stream is opened."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from grokscope.core.errors import DataError
from grokscope.stream.readers import detect_format, open_stream
from tests.stream.test_readers import write_megatron


def cut_into_shards(merged: Path, out: Path, cuts: list[int], name: str = "document",
                    last_index_names: bool = True) -> Path:
    """Copy ``merged``.idx to ``out/name.idx`` and cut ``merged``.bin's bytes at ``cuts`` into
    ``out/name-KKKKK-of-MMMMM.bin`` (``MM`` = last index as Pythia names them, else the count)."""
    data = Path(f"{merged}.bin").read_bytes()
    edges = [0, *cuts, len(data)]
    n = len(edges) - 1
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(f"{merged}.idx", out / f"{name}.idx")
    mm = n - 1 if last_index_names else n
    for k in range(n):
        (out / f"{name}-{k:05d}-of-{mm:05d}.bin").write_bytes(data[edges[k] : edges[k + 1]])
    return out / name


def generated(root: Path, dtype: np.dtype, gap: int = 0, n_seq: int = 120, seed: int = 0) -> Path:
    """A merged Megatron dataset of ``n_seq`` random-length sequences of random ids."""
    rng = np.random.default_rng(seed)
    high = min(np.iinfo(dtype).max, 60000)
    seqs = [rng.integers(0, high, size=int(rng.integers(1, 60))) for _ in range(n_seq)]
    root.mkdir(parents=True, exist_ok=True)
    write_megatron(root / "document", seqs, dtype, gap=gap)
    return root / "document"


def merged_tokens(prefix: Path, dtype: np.dtype) -> np.ndarray:
    """The stream by brute force: every sequence's tokens, in index order (gaps skipped)."""
    from tests.stream.test_readers import parse_megatron_by_hand

    return np.array([t for s in parse_megatron_by_hand(prefix) for t in s], dtype=dtype)


def assert_same_stream(sharded: Path, merged: Path, row_lens: tuple[int, ...], **kw: int) -> None:
    for row_len in row_lens:
        for b in (1, 3, 1024):
            s = open_stream(sharded, row_len=row_len, rows_per_step=b, **kw)
            m = open_stream(merged, row_len=row_len, rows_per_step=b, **kw)
            assert (s.n_rows, s.n_steps, s.dtype, s.format) == (m.n_rows, m.n_steps, m.dtype, "megatron")
            assert np.array_equal(s.rows(0, s.n_rows), m.rows(0, m.n_rows))
            for step in range(s.n_steps or 0):
                assert np.array_equal(s.rows(*s.step_rows(step)), m.rows(*m.step_rows(step)))
            for (a, x), (_, y) in zip(s.iter_rows(7), m.iter_rows(7), strict=True):
                assert np.array_equal(x, y), (row_len, b, a)
            assert s.fingerprint() == m.fingerprint()


@pytest.mark.parametrize("dtype, gap", [(np.uint16, 0), (np.int32, 0), (np.int32, 3), (np.int64, 0)])
def test_generated_shards_equal_merged_file(tmp_path, dtype, gap):
    """Cuts at byte offsets that are and are not multiples of the token size."""
    merged = generated(tmp_path / "merged", np.dtype(dtype), gap=gap)
    size = Path(f"{merged}.bin").stat().st_size
    item = np.dtype(dtype).itemsize
    cuts = [size // 5 // item * item, size // 3 // item * item + 1, 2 * size // 3 // item * item - 1]
    assert any(c % item for c in cuts) or item == 1
    sharded = cut_into_shards(merged, tmp_path / "hf", cuts)
    assert_same_stream(sharded, merged, (1, 5, 16, 33))
    s = open_stream(tmp_path / "hf", row_len=5)
    assert s.manifest["shards"] == [f"document-{k:05d}-of-00003.bin" for k in range(4)]
    assert s.path == sharded


def test_pythia_layout_one_row_per_entry(tmp_path):
    """Pythia's files: every entry one 2049-token uint16 row, shards cut every SHARD bytes
    (Pythia: 5e9 or 1e10, even: token-aligned) and, here also, an odd cut size."""
    rng = np.random.default_rng(4)
    rows = rng.integers(0, 50277, size=(9, 2049)).astype(np.uint16)
    write_megatron(tmp_path / "document", list(rows), np.uint16)
    size = rows.nbytes
    for shard in (10_000, 10_001):
        cuts = list(range(shard, size, shard))
        hf = cut_into_shards(tmp_path / "document", tmp_path / f"hf{shard}", cuts)
        for path in (hf.parent, hf, Path(f"{hf}.idx"), hf.parent / f"document-00000-of-{len(cuts):05d}.bin"):
            assert detect_format(path) == "megatron"
            s = open_stream(path)
            assert (s.row_len, s.rows_per_step, s.eos_id, s.n_rows) == (2049, 1024, 0, 9)
            assert np.array_equal(s.rows(0, 9), rows)
            assert all(np.array_equal(s.rows(i, i + 1)[0], rows[i]) for i in range(9))


def test_shared_fixtures_cut_into_shards(tmp_path, megatron_dir):
    """The shared Megatron fixtures (int32 ids) cut into 4 shards, two cuts inside a token."""
    for name in ("test_text_document", "fim_text_document"):
        merged = megatron_dir / name
        size = Path(f"{merged}.bin").stat().st_size
        cuts = [4097, size // 2, size - 4 * 300 - 2]
        sharded = cut_into_shards(merged, tmp_path / name, cuts)
        assert_same_stream(sharded, merged, (5, 64, 1000))
        whole = merged_tokens(merged, np.int32)
        s = open_stream(tmp_path / name, row_len=1)
        assert np.array_equal(s.rows(0, s.n_rows)[:, 0], whole)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_reads_across_shard_boundaries_brute_force(tmp_path, dtype):
    """Every row range [a, b) of a stream in many small shards (one of 1 byte, so a token
    can span three shards) against slices of the merged tokens."""
    merged = generated(tmp_path / "merged", np.dtype(dtype), n_seq=12, seed=1)
    flat = merged_tokens(merged, dtype)
    size = flat.nbytes
    cuts = sorted({1, 5, 6, 7, 13, size // 2, size // 2 + 1, size - 3})
    sharded = cut_into_shards(merged, tmp_path / "hf", cuts)
    for row_len in (1, 3, 11):
        s = open_stream(sharded, row_len=row_len)
        n = s.n_rows
        assert n == flat.size // row_len
        for a in range(n + 1):
            for b in range(a, min(n, a + 40) + 1):
                want = flat[a * row_len : b * row_len].reshape(b - a, row_len)
                got = s.rows(a, b)
                assert got.dtype == np.dtype(dtype) and got.flags.aligned
                assert np.array_equal(got, want), (row_len, a, b)


# ---------------------------------------------------------------------------------------------
# checks before any scan
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def four_shards(tmp_path) -> tuple[Path, list[int]]:
    merged = generated(tmp_path / "merged", np.dtype(np.uint16), n_seq=200, seed=2)
    size = Path(f"{merged}.bin").stat().st_size
    shard = size // 4 + 1  # odd: cuts inside tokens
    cut_into_shards(merged, tmp_path / "hf", [shard, 2 * shard, 3 * shard])
    return tmp_path / "hf", [shard, shard, shard, size - 3 * shard]


def shard_path(d: Path, k: int) -> Path:
    return d / f"document-{k:05d}-of-00003.bin"


def expect_error(d: Path, *pieces: object) -> str:
    with pytest.raises(DataError) as e:
        open_stream(d, row_len=4)
    msg = str(e.value)
    for piece in pieces:
        assert str(piece) in msg, (piece, msg)
    return msg


@pytest.mark.parametrize("k", [1, 3])
def test_truncated_shard_names_it_and_the_bytes(four_shards, k):
    d, sizes = four_shards
    f = shard_path(d, k)
    f.write_bytes(f.read_bytes()[:-5])
    msg = expect_error(d, f.name, "short (truncated) shard", f"{sizes[k] - 5} bytes, expected {sizes[k]}",
                       f"needs {sum(sizes)}")
    assert re.search(rf"hold {sum(sizes) - 5} bytes", msg)


@pytest.mark.parametrize("k", [0, 2, 3])
def test_long_shard_names_it_and_the_bytes(four_shards, k):
    d, sizes = four_shards
    f = shard_path(d, k)
    f.write_bytes(f.read_bytes() + b"\x00\x01\x02")
    expect_error(d, f.name, "long shard", f"{sizes[k] + 3} bytes, expected {sizes[k]}", f"needs {sum(sizes)}")


@pytest.mark.parametrize("k", [0, 1, 3])
def test_missing_shard_names_it(four_shards, k):
    """Shard 3 of ``-of-00003`` is Pythia's last (its names count from 0 to MM)."""
    d, sizes = four_shards
    shard_path(d, k).unlink()
    expect_error(d, shard_path(d, k).name, "does not exist", f"needs {sum(sizes)}")


def test_error_comes_before_any_scan(four_shards, monkeypatch):
    """open_stream checks the sizes only (stat), reading no data: a failed open maps no shard."""
    import grokscope.stream.megatron as megatron

    d, _ = four_shards
    shard_path(d, 2).write_bytes(b"")
    monkeypatch.setattr(megatron, "ShardedBytes", lambda *a: pytest.fail("shards mapped before the size check"))
    expect_error(d, shard_path(d, 2).name, "short (truncated) shard")


def test_shard_naming_and_detection(tmp_path):
    merged = generated(tmp_path / "merged", np.dtype(np.int32), seed=3)
    size = Path(f"{merged}.bin").stat().st_size
    counted = cut_into_shards(merged, tmp_path / "counted", [size // 3, size // 2], last_index_names=False)
    assert sorted(f.name for f in counted.parent.glob("*.bin")) == [f"document-{k:05d}-of-00003.bin" for k in range(3)]
    assert_same_stream(counted, merged, (7,))  # MM as a count (0..MM-1) reads too
    # a set with MM as the count whose last shard is short
    shard = counted.parent / "document-00002-of-00003.bin"
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(DataError, match=r"document-00003-of-00003\.bin does not exist, or a shard is short"):
        open_stream(counted, row_len=7)
    # shards of two sets
    hf = cut_into_shards(merged, tmp_path / "mixed", [size // 2])
    shutil.copy(hf.parent / "document-00000-of-00001.bin", hf.parent / "document-00000-of-00004.bin")
    with pytest.raises(DataError, match="different sets"):
        open_stream(hf, row_len=7)
    # a merged document.bin next to its shards is read in preference
    both = cut_into_shards(merged, tmp_path / "both", [size // 2])
    shutil.copy(f"{merged}.bin", f"{both}.bin")
    assert "shards" not in open_stream(both, row_len=7).manifest
    # a directory with two datasets must be told which
    shutil.copy(f"{merged}.idx", tmp_path / "both" / "other.idx")
    shutil.copy(f"{merged}.bin", tmp_path / "both" / "other.bin")
    with pytest.raises(DataError, match="several Megatron datasets"):
        open_stream(tmp_path / "both", row_len=7)
    assert open_stream(tmp_path / "both" / "other", row_len=7).n_rows == open_stream(merged, row_len=7).n_rows
    # an index with neither .bin nor shards
    (tmp_path / "lone").mkdir()
    shutil.copy(f"{merged}.idx", tmp_path / "lone" / "document.idx")
    with pytest.raises(DataError, match=r"document\.bin does not exist, nor any shard"):
        open_stream(tmp_path / "lone" / "document", format="megatron")


def test_unequal_shards_that_do_not_add_up_list_every_size(tmp_path):
    """Shards cut at unequal sizes (not Pythia's layout) whose total is short: no single shard
    can be blamed, so the error lists every shard with its size."""
    merged = generated(tmp_path / "merged", np.dtype(np.uint16), seed=5)
    size = Path(f"{merged}.bin").stat().st_size
    hf = cut_into_shards(merged, tmp_path / "hf", [size // 5, size // 2, size - 9])
    f = hf.parent / "document-00001-of-00003.bin"
    f.write_bytes(f.read_bytes()[:-2])
    msg = expect_error(hf.parent, "short by 2", "do not say which shard",
                       f"document-00001-of-00003.bin {size // 2 - size // 5 - 2}")
    assert all(f"document-{k:05d}-of-00003.bin" in msg for k in range(4))
