"""Pass 1 of ``grokscope prepare``: tokenize every document, streaming, in file order.

Each document's ids are appended to ``work/doc_tokens.bin`` and its length to
``work/doc_lengths.bin``; progress is saved after every source file (``progress.json``), so a
killed run resumes at the first unfinished file, after cutting the work files back to it.
Long documents are encoded in pieces where that provably gives the same ids
(:func:`splits_exactly`), and files are read in a background thread while the tokenizer runs.
"""
from __future__ import annotations

import json
import os
import queue
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from grokscope.core import store
from grokscope.core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from grokscope.stream.stage import PrepareOptions
    from grokscope.stream.withhold import Withholding

PROGRESS_FILE = "progress.json"


def tokenize_to_work(tok: Any, sources: list[str], opts: PrepareOptions, work: Path, dtype: np.dtype,
                     key: dict[str, Any], withholding: Withholding | None = None) -> dict[str, Any]:
    """Append every document's ids to ``work/doc_tokens.bin`` and its length to ``doc_lengths.bin``.
    ``withholding``: drop its sentences from each document first (what was dropped: ``withheld``).

    Returns ``{n_docs, n_tokens, per_source: [{first_document, n_documents, n_tokens}], withheld, resumed}``.
    """
    from tqdm.auto import tqdm

    from grokscope.data.corpus import iter_documents

    work.mkdir(parents=True, exist_ok=True)
    tokens_path, lengths_path, progress_path = work / "doc_tokens.bin", work / "doc_lengths.bin", work / PROGRESS_FILE
    state: dict[str, Any] = {"key": key, "sources_done": 0, "n_docs": 0, "n_tokens": 0, "per_source": [],
                             "stopped": False, "withheld": {}}
    if progress_path.exists() and tokens_path.exists() and lengths_path.exists():
        saved = store.read_json(progress_path)
        if saved.get("key") == key:
            state = saved
    resumed = state["sources_done"] > 0
    # Cut the work files back to the last finished source (a kill may have left a partial tail).
    with open(tokens_path, "ab") as f:
        f.truncate(state["n_tokens"] * dtype.itemsize)
    with open(lengths_path, "ab") as f:
        f.truncate(state["n_docs"] * 8)
    backend = tok.backend_tokenizer
    splittable = splits_exactly(backend)
    limit = int(np.iinfo(dtype).max)
    bar = tqdm(total=None, unit="tok", unit_scale=True, desc="tokenize", disable=not opts.progress,
               initial=state["n_tokens"])
    try:
        with store.naming(work), open(tokens_path, "ab") as ftok, open(lengths_path, "ab") as flen:
            for i in range(state["sources_done"], len(sources)):
                if state["stopped"]:
                    state["per_source"].append({"first_document": state["n_docs"], "n_documents": 0, "n_tokens": 0})
                    state["sources_done"] = i + 1
                    continue
                source = sources[i]
                bar.set_description(f"tokenize {Path(source).name}")
                first_doc, first_tok = state["n_docs"], state["n_tokens"]
                budget = opts.max_documents - state["n_docs"] if opts.max_documents else 0
                docs = _document_batches(iter_documents(source, opts.text_field), opts.batch_chars, budget)
                for texts, where in _prefetch(docs):
                    if withholding is not None:
                        texts = withholding.apply(backend, texts, state["withheld"])
                    per_doc = encode_documents(backend, texts, opts.piece_chars if splittable else 0)
                    lengths = np.array([a.size for a in per_doc], dtype=np.int64)
                    ids = np.concatenate(per_doc) if per_doc else np.zeros(0, dtype=np.int64)
                    del per_doc
                    if ids.size and int(ids.max()) > limit:
                        j = int(np.searchsorted(np.cumsum(lengths), int(np.argmax(ids > limit)), side="right"))
                        raise DataError(
                            f"{where[j]}: tokenizer {opts.tokenizer} produced id {int(ids.max())}, which does not fit "
                            f"{dtype.name}; use --dtype uint32"
                        )
                    ftok.write(ids.astype(dtype).tobytes())
                    flen.write(lengths.tobytes())
                    state["n_docs"] += len(texts)
                    state["n_tokens"] += int(lengths.sum())
                    bar.update(int(lengths.sum()))
                ftok.flush()
                flen.flush()
                os.fsync(ftok.fileno())
                os.fsync(flen.fileno())
                state["per_source"].append({"first_document": first_doc, "n_documents": state["n_docs"] - first_doc,
                                            "n_tokens": state["n_tokens"] - first_tok})
                state["sources_done"] = i + 1
                state["stopped"] = bool(opts.max_documents) and state["n_docs"] >= opts.max_documents
                store.write_json(progress_path, state)
    finally:
        bar.close()
    if state["n_docs"] == 0:
        raise DataError(f"corpus is empty: no documents in {', '.join(sources)}")
    if state["n_tokens"] == 0:
        raise DataError(f"corpus has {state['n_docs']} document(s) but no text to tokenize in {', '.join(sources)}")
    state["resumed"] = resumed
    return state


# A space between two non-space characters. For a byte-level BPE with the GPT-2 pre-tokenizer
# regex (GPT-2, GPT-NeoX/Pythia) every non-space -> space transition is a pre-token boundary and
# the regex only looks forward, so encoding text[:i] and text[i:] separately gives exactly the ids
# of text (tests check this on real books). It bounds memory by the piece, not the longest book,
# and lets one long book use all cores.
_SPLIT_POINT = re.compile(r"(?<=\S) (?=\S)")


def splits_exactly(backend: Any) -> bool:
    """Whether documents may be encoded in pieces cut at :data:`_SPLIT_POINT` without changing ids."""
    spec = json.loads(backend.to_str())
    norm, pre = spec.get("normalizer"), spec.get("pre_tokenizer")
    norm_ok = norm is None or norm.get("type") == "NFC"
    return bool(norm_ok and pre and pre.get("type") == "ByteLevel" and pre.get("use_regex", True))


def split_text(text: str, piece_chars: int) -> list[str]:
    """``text`` cut at split points into pieces of about ``piece_chars`` (at least that many)."""
    if piece_chars <= 0 or len(text) <= 2 * piece_chars:
        return [text]
    pieces, pos = [], 0
    while len(text) - pos > 2 * piece_chars:
        m = _SPLIT_POINT.search(text, pos + piece_chars)
        if m is None:
            break
        pieces.append(text[pos : m.start()])
        pos = m.start()
    pieces.append(text[pos:])
    return pieces


def encode_documents(backend: Any, texts: list[str], piece_chars: int = 0) -> list[np.ndarray]:
    """Token ids of each text (``encode_batch_fast``: all cores); ``piece_chars`` > 0 encodes long
    texts in pieces (only valid when :func:`splits_exactly`)."""
    pieces: list[str] = []
    counts: list[int] = []
    for text in texts:
        parts = split_text(text, piece_chars)
        pieces.extend(parts)
        counts.append(len(parts))
    encs = backend.encode_batch_fast(pieces, add_special_tokens=False)
    per_piece = [np.array(e.ids, dtype=np.int64) for e in encs]
    del encs
    out, k = [], 0
    for n in counts:
        out.append(per_piece[k] if n == 1 else np.concatenate(per_piece[k : k + n]))
        k += n
    return out


def _document_batches(docs: Iterator[Any], batch_chars: int, budget: int) -> Iterator[tuple[list[str], list[str]]]:
    """Group documents into batches of about ``batch_chars`` characters; ``budget`` > 0 caps the count."""
    texts: list[str] = []
    where: list[str] = []
    chars = 0
    for n, doc in enumerate(docs):
        if budget and n >= budget:
            break
        texts.append(doc.text)
        where.append(f"{doc.source}:{doc.line}")
        chars += len(doc.text)
        if chars >= batch_chars:
            yield texts, where
            texts, where, chars = [], [], 0
    if texts:
        yield texts, where


def _prefetch(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run ``items`` (reading + JSON parsing) in a background thread while the caller encodes."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    end = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(("item", item))
            q.put(("end", end))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(("error", e))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass


