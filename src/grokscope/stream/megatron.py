"""Megatron-LM / GPT-NeoX ``MMapIndexedDataset`` token files, merged or in Pythia's shards.

A dataset is a prefix ``DIR/NAME``: ``NAME.idx`` (the index: sequence sizes in tokens and byte
pointers into the data) and its data, either one file ``NAME.bin`` or, as Hugging Face serves
Pythia's preshuffled Pile (``EleutherAI/pile-deduped-pythia-preshuffled``,
``…/pile-standard-pythia-preshuffled``), the bytes of ``NAME.bin`` cut into shards
``NAME-00000-of-000MM.bin`` … that Pythia's ``utils/unshard_memmap.py`` (or ``cat``) would join.
The shards are read in place as one byte stream: shard ``k`` holds the bytes that start at the
sum of the sizes of shards ``< k``, each shard is a memory map, and a read that crosses a shard
boundary gathers the pieces (cuts may fall anywhere, even inside a token).

Pythia's ``utils/shard_memmap.py`` names shard ``i`` of the file ``-{i:05}-of-{last:05}`` with
``last`` the *last index* (``-00000-of-00020`` … ``-00020-of-00020``: 21 shards); a set whose
``MM`` is a count (``-00000-of-00020`` … ``-00019-of-00020``) is read too. Before any read the
shards must all exist and their sizes must add up to exactly the bytes the index addresses (the
end of its last sequence), else a :class:`DataError` names the missing, short or long shard.
"""
from __future__ import annotations

import bisect
import os
import re
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grokscope.core.errors import DataError

MEGATRON_DEFAULTS = (2049, 1024, 0, None)  # Pythia (GPT-NeoX tokenizer: <|endoftext|> = 0)
MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8), 2: np.dtype(np.int8), 3: np.dtype(np.int16), 4: np.dtype(np.int32),
    5: np.dtype(np.int64), 8: np.dtype(np.uint16), 9: np.dtype(np.uint32), 10: np.dtype(np.uint64),
}  # 6/7 are floating point (never token ids)
_HEAD_LEN = len(MEGATRON_MAGIC) + 8 + 1 + 8 + 8
_CHECK_CHUNK = 1 << 22  # index entries per step of the extent check (flat memory on Pythia's 146M entries)

RowReader = Callable[[int, int], np.ndarray]


@dataclass(frozen=True)
class MegatronIndex:
    """The parsed ``.idx`` file: sequence sizes (tokens), byte pointers into ``.bin``, doc_idx."""

    dtype: np.dtype
    sizes: np.ndarray  # int32 [n_sequences]
    pointers: np.ndarray  # int64 [n_sequences], byte offsets
    doc_idx: np.ndarray  # int64 [n_documents + 1], sequence index where each document starts


@dataclass
class MegatronLayout:
    """What :func:`open_megatron` found: the rows it serves and how they are stored."""

    prefix: Path
    dtype: np.dtype
    n_rows: int
    read: RowReader
    manifest: dict[str, Any] = field(default_factory=dict)


def read_megatron_index(idx_path: str | os.PathLike[str]) -> MegatronIndex:
    """Parse a Megatron ``MMIDIDX`` index (version 1) and check it is complete."""
    idx_path = Path(idx_path)
    size = idx_path.stat().st_size
    with open(idx_path, "rb") as f:
        head = f.read(_HEAD_LEN)
    if len(head) < _HEAD_LEN:
        raise DataError(f"{idx_path}: truncated index ({size} bytes, the header alone needs {_HEAD_LEN})")
    if head[: len(MEGATRON_MAGIC)] != MEGATRON_MAGIC:
        raise DataError(f"{idx_path}: not a Megatron MMapIndexedDataset index (header {head[:9]!r}, "
                        f"expected {MEGATRON_MAGIC!r})")
    off = len(MEGATRON_MAGIC)
    (version,) = struct.unpack_from("<Q", head, off)
    (code,) = struct.unpack_from("<B", head, off + 8)
    n_seq, n_doc = struct.unpack_from("<QQ", head, off + 9)
    if version != 1:
        raise DataError(f"{idx_path}: index version {version}, only version 1 is supported")
    if code not in MEGATRON_DTYPES:
        raise DataError(f"{idx_path}: dtype code {code} is not an integer token type "
                        f"(expected one of {sorted(MEGATRON_DTYPES)})")
    need = _HEAD_LEN + 4 * n_seq + 8 * n_seq + 8 * n_doc
    if size < need:
        raise DataError(f"{idx_path}: truncated index: {n_seq} sequences and {n_doc} document entries need "
                        f"{need} bytes, the file has {size}")
    mm = np.memmap(idx_path, mode="r", dtype=np.uint8)
    sizes = np.frombuffer(mm, dtype="<i4", count=n_seq, offset=_HEAD_LEN)
    pointers = np.frombuffer(mm, dtype="<i8", count=n_seq, offset=_HEAD_LEN + 4 * n_seq)
    doc_idx = np.frombuffer(mm, dtype="<i8", count=n_doc, offset=_HEAD_LEN + 12 * n_seq)
    if n_seq and int(sizes.min()) < 0:
        raise DataError(f"{idx_path}: negative sequence size at entry {int(np.argmin(sizes))}")
    return MegatronIndex(MEGATRON_DTYPES[code], sizes, pointers, doc_idx)


# ---------------------------------------------------------------------------------------------
# finding a dataset: prefix, .bin, .idx, a shard, or the directory holding them
# ---------------------------------------------------------------------------------------------
def _shard_pattern(prefix: Path) -> re.Pattern[str]:
    return re.compile(re.escape(prefix.name) + r"-(\d+)-of-(\d+)\.bin")


def shard_files(prefix: Path) -> list[tuple[int, int, Path]]:
    """``(index, MM, path)`` of every ``PREFIX-NNNNN-of-MMMMM.bin`` next to ``prefix``, by index."""
    pat = _shard_pattern(prefix)
    found = []
    for f in prefix.parent.glob(f"{glob_escape(prefix.name)}-*-of-*.bin"):
        m = pat.fullmatch(f.name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), f))
    return sorted(found)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _strip(p: Path) -> Path:
    """The prefix a file path names: ``NAME.bin``/``NAME.idx``/``NAME-NNNNN-of-MMMMM.bin`` -> ``NAME``."""
    m = re.fullmatch(r"(.+)-\d+-of-\d+\.bin", p.name)
    if m and Path(str(p.parent / m.group(1)) + ".idx").exists():
        return p.parent / m.group(1)
    return p.with_suffix("") if p.suffix in (".bin", ".idx") else p


def _has_data(prefix: Path) -> bool:
    return Path(str(prefix) + ".bin").exists() or bool(shard_files(prefix))


def megatron_prefix(p: Path) -> Path | None:
    """The dataset prefix ``p`` names (``PREFIX``, ``PREFIX.bin``, ``PREFIX.idx``, a shard, or a
    directory holding one ``.idx`` with its ``.bin`` or shards), or None if it names none."""
    if p.is_dir():
        found = [q.with_suffix("") for q in sorted(p.glob("*.idx")) if _has_data(q.with_suffix(""))]
        if len(found) > 1:
            raise DataError(f"{p}: holds several Megatron datasets ({', '.join(q.name for q in found)}); "
                            "pass the prefix of one, e.g. DIR/document")
        return found[0] if found else None
    prefix = _strip(p)
    return prefix if Path(str(prefix) + ".idx").exists() and _has_data(prefix) else None


# ---------------------------------------------------------------------------------------------
# byte sources: one .bin, or the shards read as one
# ---------------------------------------------------------------------------------------------
def _bytes_map(path: Path, size: int) -> np.ndarray:
    return np.memmap(path, mode="r", dtype=np.uint8) if size else np.zeros(0, np.uint8)


class ShardedBytes:
    """The shards' bytes as one stream: ``tokens(byte, count, dtype)`` is a view inside one shard
    (copied only when the shard's cut leaves it unaligned) or the pieces gathered across shards."""

    def __init__(self, paths: list[Path], sizes: list[int]) -> None:
        kept = [(p, s) for p, s in zip(paths, sizes) if s]  # an empty shard holds no bytes
        self.paths = [p for p, _ in kept]
        self._maps = [_bytes_map(p, s) for p, s in kept]
        self._starts = [0]
        for _, s in kept:
            self._starts.append(self._starts[-1] + s)  # shard k holds bytes [starts[k], starts[k+1])
        self.nbytes = self._starts[-1]

    def tokens(self, byte: int, count: int, dtype: np.dtype) -> np.ndarray:
        end = byte + count * dtype.itemsize
        if end == byte:
            return np.zeros(0, dtype)
        k = bisect.bisect_right(self._starts, byte) - 1
        if end <= self._starts[k + 1]:
            out = np.asarray(self._maps[k][byte - self._starts[k] : end - self._starts[k]]).view(dtype)
            return out if out.flags.aligned else out.copy()
        buf = np.empty(end - byte, dtype=np.uint8)
        pos = byte
        while pos < end:
            take = min(end, self._starts[k + 1]) - pos
            lo = pos - self._starts[k]
            buf[pos - byte : pos - byte + take] = self._maps[k][lo : lo + take]
            pos += take
            k += 1
        return buf.view(dtype)


def _shard_name(prefix: Path, i: int, mm: int) -> str:
    return f"{prefix.name}-{i:05d}-of-{mm:05d}.bin"


def _expected_shards(prefix: Path, idx_path: Path, need: int) -> tuple[list[Path], int]:
    """The shard paths in order and the set's ``MM``; a missing shard (or a mixed set) is a DataError."""
    found = shard_files(prefix)
    mms = sorted({mm for _, mm, _ in found})
    if len(mms) > 1:
        raise DataError(f"{prefix}: shards of different sets lie together ({', '.join(f'-of-{m:05d}' for m in mms)}); "
                        "keep one set")
    mm = mms[0]
    have = {i: f for i, _, f in found}
    beyond = [i for i in have if i > mm]
    if beyond:
        raise DataError(f"{have[beyond[0]]}: shard index {beyond[0]} is beyond the set's last ({mm})")
    n = mm + 1 if mm in have else mm  # Pythia: MM is the last index; else MM counts the shards
    missing = [i for i in range(n) if i not in have]
    if missing:
        raise DataError(f"{prefix.parent / _shard_name(prefix, missing[0], mm)} does not exist: "
                        f"{len(missing)} of the {n} shards {_shard_name(prefix, 0, mm)} … "
                        f"{_shard_name(prefix, n - 1, mm)} are missing ({idx_path.name} needs {need} bytes)")
    return [have[i] for i in range(n)], mm


def _odd_shard(sizes: list[int], need: int) -> tuple[int, int] | None:
    """``(shard, expected bytes)`` of the one shard whose size explains why the total is not
    ``need``, or None when the sizes do not say. Pythia cuts every shard but the last at one
    size, so a cut shard differs from its siblings; when they agree, the last one is off."""
    body = sizes[:-1]
    if len(set(body)) <= 1:
        return len(sizes) - 1, max(need - sum(body), 0)
    counts = Counter(body)
    top = max(counts.values())
    ties = [s for s, c in counts.items() if c == top]
    common = max(ties) if sum(sizes) < need else min(ties)
    odd = [k for k, s in enumerate(body) if s != common]
    if len(odd) == 1 and sum(sizes) - sizes[odd[0]] + common == need:
        return odd[0], common
    return None


def check_shards(prefix: Path, idx_path: Path, need: int) -> tuple[list[Path], list[int]]:
    """Shard paths and sizes, checked against the ``need`` bytes the index addresses."""
    paths, mm = _expected_shards(prefix, idx_path, need)
    sizes = [p.stat().st_size for p in paths]
    total = sum(sizes)
    if total == need:
        return paths, sizes
    if total < need and mm == len(paths):  # counted as 0..MM-1, but Pythia's set ends with shard MM
        raise DataError(f"{prefix.parent / _shard_name(prefix, mm, mm)} does not exist, or a shard is short: "
                        f"the {len(paths)} shards present hold {total} bytes, {idx_path.name} needs {need} "
                        f"({need - total} missing)")
    odd = _odd_shard(sizes, need)
    if odd is None:
        listed = ", ".join(f"{p.name} {s}" for p, s in zip(paths, sizes))
        raise DataError(f"{prefix}: the {len(paths)} shards hold {total} bytes, {idx_path.name} needs {need} "
                        f"({'short' if total < need else 'long'} by {abs(need - total)}); their sizes do not say "
                        f"which shard is cut wrong (Pythia's all have one size but the last): {listed}")
    k, expected = odd
    kind = "short (truncated)" if sizes[k] < expected else "long"
    raise DataError(f"{paths[k]}: {kind} shard: {sizes[k]} bytes, expected {expected}; the {len(paths)} shards "
                    f"hold {total} bytes, {idx_path.name} needs {need} (the end of its last sequence)")


# ---------------------------------------------------------------------------------------------
# opening
# ---------------------------------------------------------------------------------------------
def _index_extent(index: MegatronIndex, idx_path: Path) -> tuple[int, int, bool]:
    """``(bytes the data must hold, sequence that ends last, sequences back to back from byte 0)``,
    computed in chunks so that a 146M-entry index costs no more memory than a chunk."""
    item = index.dtype.itemsize
    need, worst, contiguous, expect = 0, -1, True, 0
    for a in range(0, index.sizes.size, _CHECK_CHUNK):
        nbytes = index.sizes[a : a + _CHECK_CHUNK].astype(np.int64) * item
        ptr = index.pointers[a : a + _CHECK_CHUNK]
        if int(ptr.min()) < 0:
            raise DataError(f"{idx_path}: negative byte pointer at entry {a + int(np.argmin(ptr))}")
        ends = ptr + nbytes
        j = int(np.argmax(ends))
        if int(ends[j]) > need:
            need, worst = int(ends[j]), a + j
        if contiguous:
            starts = np.cumsum(nbytes) - nbytes + expect
            contiguous = bool(np.array_equal(ptr, starts))
            expect = int(ends[-1])
    return need, worst, contiguous


def flat_reader(flat: np.ndarray, row_len: int) -> RowReader:
    """Rows of a flat token array (a memmap): ``[b-a, row_len]`` views."""
    return lambda a, b: np.asarray(flat[a * row_len : b * row_len]).reshape(b - a, row_len)


def _contiguous_reader(source: ShardedBytes, dtype: np.dtype, row_len: int) -> RowReader:
    step = row_len * dtype.itemsize
    return lambda a, b: source.tokens(a * step, (b - a) * row_len, dtype).reshape(b - a, row_len)


def _segment_reader(source: ShardedBytes, index: MegatronIndex, row_len: int) -> RowReader:
    """Rows of data whose sequences are not stored back to back: gather the pieces."""
    item = index.dtype.itemsize
    starts = np.zeros(index.sizes.size + 1, dtype=np.int64)  # logical token offset of each sequence
    np.cumsum(index.sizes, out=starts[1:])

    def read(a: int, b: int) -> np.ndarray:
        lo, hi = a * row_len, b * row_len
        out = np.empty(hi - lo, dtype=index.dtype)
        seq = int(np.searchsorted(starts, lo, side="right")) - 1
        pos = lo
        while pos < hi:
            take = min(hi, int(starts[seq + 1])) - pos
            if take > 0:
                byte = int(index.pointers[seq]) + (pos - int(starts[seq])) * item
                out[pos - lo : pos - lo + take] = source.tokens(byte, take, index.dtype)
                pos += take
            seq += 1
        return out.reshape(b - a, row_len)

    return read


def open_megatron(p: Path, row_len: int) -> MegatronLayout:
    """Open the dataset ``p`` names (see :func:`megatron_prefix`), checking its data against the
    index first: a ``.bin`` shorter than the index says, or a missing/short/long shard, is a DataError."""
    prefix = megatron_prefix(p) or _strip(p)
    idx_path, bin_path = Path(str(prefix) + ".idx"), Path(str(prefix) + ".bin")
    if not idx_path.exists():
        raise DataError(f"Megatron dataset '{prefix}': {idx_path} does not exist (expected {prefix}.idx with "
                        f"{prefix}.bin or shards {prefix.name}-NNNNN-of-MMMMM.bin)")
    sharded = not bin_path.exists()
    if sharded and not shard_files(prefix):
        raise DataError(f"Megatron dataset '{prefix}': {bin_path} does not exist, nor any shard "
                        f"{prefix.name}-NNNNN-of-MMMMM.bin (expected {prefix}.bin + {prefix}.idx)")
    index = read_megatron_index(idx_path)
    need, worst, contiguous = _index_extent(index, idx_path)
    total = int(index.sizes.sum(dtype=np.int64))
    manifest: dict[str, Any] = {"n_sequences": int(index.sizes.size), "contiguous": contiguous, "tokens": total,
                                "n_documents": max(int(index.doc_idx.size) - 1, 0)}
    if sharded:
        paths, sizes = check_shards(prefix, idx_path, need)
        source = ShardedBytes(paths, sizes)
        manifest["shards"] = [p.name for p in paths]
    else:
        bin_size = bin_path.stat().st_size
        if need > bin_size:
            raise DataError(f"{bin_path}: truncated data file: sequence {worst} of {idx_path.name} ends at byte "
                            f"{need}, the file has {bin_size} bytes")
        source = ShardedBytes([bin_path], [bin_size])
    if contiguous and not sharded:
        flat = np.memmap(bin_path, mode="r", dtype=index.dtype, shape=(total,)) if total else np.zeros(0, index.dtype)
        read = flat_reader(flat, row_len)
    elif contiguous:
        read = _contiguous_reader(source, index.dtype, row_len)
    else:
        read = _segment_reader(source, index, row_len)
    return MegatronLayout(prefix, index.dtype, total // row_len, read, manifest)
