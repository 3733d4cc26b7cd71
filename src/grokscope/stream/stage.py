"""``grokscope prepare``: turn a raw-text corpus into the token stream a model trains on.

Pipeline (memory stays flat however large the corpus is):

1. **Tokenize** (:mod:`grokscope.stream.tokenize`) every document, streaming, in batches
   (``tokenizers``' ``encode_batch`` uses all cores), appending the ids of each document *in
   file order* to a temporary token file and its length to a temporary lengths file. Progress
   is checkpointed after every source file, so a killed run resumes at the first unfinished file.
2. **Shuffle and pack** (:mod:`grokscope.stream.pack`): a permutation of document indices
   (``numpy`` RNG seeded by ``seed``) fixes the document order; documents are copied in that
   order, each followed by EOS, into rows of ``seq_len + 1`` tokens (the last partial row is
   dropped and counted in the manifest).
3. **Shuffle rows** (``shuffle="rows"``, the default): the packed rows are permuted by a second
   seeded permutation, as Megatron/GPT-NeoX (Pythia) shuffle samples. Without it a long book
   fills thousands of consecutive rows, so every batch of a step comes from one document and the
   loss jumps from book to book. ``shuffle="documents"`` stops after step 2; ``"none"`` keeps
   the documents in reading order (a planted curriculum stays where it was put).

Output (see docs/CONTRACTS.md, "Token stream"): ``STUDY/tokens/{tokens.npy, row_docs.npy,
tokenizer/, manifest.json}``. Document ids are 0-based ordinals of the documents in reading
order (all sources in the order given; documents with no tokens are counted but not emitted);
``manifest.sources[i].first_document`` maps an id back to its source file.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grokscope.core import store
from grokscope.core.config import TRAIN_BPE, CorpusSettings, StudyConfig
from grokscope.core.errors import ConfigError, DataError, GrokscopeError
from grokscope.core.stage import CommandLine, Flag, Stage
from grokscope.core.store import Study
from grokscope.stream import withhold
from grokscope.stream.pack import shuffle_and_pack
from grokscope.stream.tokenize import tokenize_to_work

EOS_TOKEN = "<|endoftext|>"
WORK_DIR = ".work"
FORMAT_VERSION = 1
# the inputs that decide pass 1 (tokenize): a resumed pass 1 must have been started with the same
PASS1_INPUTS = ("sources", "tokenizer_fingerprint", "text_field", "max_documents", "dtype", "withhold")


@dataclass
class PrepareOptions(CorpusSettings):
    """Everything that determines the prepared stream (the ``[data]`` settings of
    :class:`~grokscope.core.config.CorpusSettings`) plus throughput knobs."""

    piece_chars: int = 32_768  # long documents are encoded in pieces of about this size (when exact)
    progress: bool = True

    @classmethod
    def from_section(cls, data: CorpusSettings, progress: bool = True) -> PrepareOptions:
        return cls(**{f.name: getattr(data, f.name) for f in dataclasses.fields(CorpusSettings)}, progress=progress)


@dataclass
class PrepareResult:
    tokens_dir: Path
    manifest: dict[str, Any]
    skipped: bool  # True when the stream was already prepared with the same inputs
    seconds: float = 0.0
    tokenize_seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def prepare_corpus(opts: PrepareOptions, tokens_dir: str | os.PathLike[str]) -> PrepareResult:
    """Prepare ``opts.corpus`` into ``tokens_dir`` (resumes; a finished identical run is a no-op)."""
    from grokscope.data.corpus import corpus_sources, source_record

    t0 = time.perf_counter()
    tokens_dir = Path(tokens_dir)
    _check_options(opts)
    sources = corpus_sources(opts.corpus)
    records = [source_record(s) for s in sources]
    work = tokens_dir / WORK_DIR

    tok, bpe_key = _tokenizer(opts, sources, tokens_dir)
    from grokscope.core.tokenizer import tokenizer_fingerprint, vocab_size

    fingerprint = tokenizer_fingerprint(tok)
    n_vocab = vocab_size(tok)
    eos_id = tok.convert_tokens_to_ids(tok.eos_token)
    dtype = _choose_dtype(opts.dtype, n_vocab, eos_id, opts.tokenizer)
    inputs: dict[str, Any] = {
        "sources": [{k: r[k] for k in ("path", "sha256", "bytes")} for r in records],
        "tokenizer_fingerprint": fingerprint,
        "text_field": opts.text_field,
        "max_documents": opts.max_documents,
        "dtype": dtype.name,
        "seq_len": opts.seq_len,
        "seed": opts.seed,
        "shuffle": opts.shuffle,
    }
    if bpe_key is not None:
        inputs["train_bpe"] = bpe_key
    assignment = withhold.add_to_inputs(inputs, opts.withhold, opts.seed, opts.withhold_phrases)
    done = _finished_manifest(tokens_dir, inputs)
    if done is not None:
        return PrepareResult(tokens_dir, done, skipped=True, seconds=time.perf_counter() - t0)

    pass1_key = {k: inputs[k] for k in PASS1_INPUTS if k in inputs}
    t1 = time.perf_counter()
    state = tokenize_to_work(tok, sources, opts, work, dtype, pass1_key,
                             withhold.withholding_for(assignment) if assignment is not None else None)
    tokenize_seconds = time.perf_counter() - t1
    pack = shuffle_and_pack(work, state, opts.seq_len, opts.seed, opts.shuffle, eos_id, dtype, tokens_dir,
                             opts.progress)

    _save_tokenizer(tok, tokens_dir / "tokenizer")
    for rec, info in zip(records, state["per_source"]):
        rec.update(info)
    seconds = time.perf_counter() - t0
    manifest = {
        "format": "grokscope",
        "format_version": FORMAT_VERSION,
        "tokenizer": opts.tokenizer,
        "tokenizer_fingerprint": fingerprint,
        "vocab_size": n_vocab,
        "eos_id": int(eos_id),
        "seq_len": opts.seq_len,
        "row_len": opts.seq_len + 1,
        "dtype": dtype.name,
        "seed": opts.seed,
        "shuffle": opts.shuffle,
        "n_rows": pack["n_rows"],
        "n_tokens": pack["n_rows"] * (opts.seq_len + 1),
        "n_documents": pack["n_documents"],
        "n_documents_read": state["n_docs"],
        "n_empty_documents": state["n_docs"] - pack["n_documents"],
        "document_tokens": state["n_tokens"],
        "dropped_tokens": pack["dropped_tokens"],
        "text_field": opts.text_field,
        "max_documents": opts.max_documents,
        "sources": records,
        "inputs": inputs,
        "tokenize_seconds": round(tokenize_seconds, 3),
        "tokens_per_s": round(state["n_tokens"] / max(tokenize_seconds, 1e-9), 1) if not state["resumed"] else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    withhold.record(tokens_dir, manifest, assignment, state)
    try:
        store.write_json(tokens_dir / "manifest.json", manifest)
        store.commit_npy(tokens_dir / "tokens.npy")  # last: tokens.npy + manifest.json = finished
    except BaseException:  # no partial stream left behind (work/ rebuilds it)
        store.partial_path(tokens_dir / "tokens.npy").unlink(missing_ok=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    return PrepareResult(tokens_dir, manifest, skipped=False, seconds=seconds, tokenize_seconds=tokenize_seconds,
                         stats={"resumed": state["resumed"]})


def _check_options(opts: PrepareOptions) -> None:
    if opts.shuffle not in ("rows", "documents", "none"):
        raise ConfigError(f"shuffle must be one of 'rows', 'documents', 'none', got {opts.shuffle!r}")
    if opts.seq_len <= 0:
        raise ConfigError(f"seq_len must be positive, got {opts.seq_len}")
    if opts.max_documents < 0:
        raise ConfigError(f"max_documents must be >= 0 (0 = all), got {opts.max_documents}")
    if opts.dtype not in ("auto", "uint16", "uint32"):
        raise ConfigError(f"dtype must be auto, uint16 or uint32, got {opts.dtype!r}")
    if not opts.tokenizer:
        raise ConfigError("no tokenizer given: pass --tokenizer PATH (tokenizer.json, vocab.json+merges.txt dir, "
                          f"HF dir) or --tokenizer {TRAIN_BPE}")
    if opts.tokenizer == TRAIN_BPE and opts.vocab_size < 257:
        raise ConfigError(f"vocab_size for {TRAIN_BPE} must be at least 257 (256 bytes + EOS), got {opts.vocab_size}")


def _choose_dtype(requested: str, n_vocab: int, eos_id: int, where: str) -> np.dtype:
    if requested == "auto":
        return np.dtype(np.uint16) if n_vocab <= 1 << 16 else np.dtype(np.uint32)
    dtype = np.dtype(requested)
    limit = int(np.iinfo(dtype).max) + 1
    if n_vocab > limit:
        raise DataError(
            f"tokenizer {where}: its ids go up to {n_vocab - 1} (vocabulary of {n_vocab}), which does not fit "
            f"{requested} (ids < {limit}); use --dtype uint32 or --dtype auto"
        )
    return dtype


def _finished_manifest(tokens_dir: Path, inputs: dict[str, Any]) -> dict[str, Any] | None:
    manifest_path = tokens_dir / "manifest.json"
    if not (manifest_path.exists() and (tokens_dir / "tokens.npy").exists()):
        return None
    manifest = store.read_json(manifest_path)
    if manifest.get("inputs") == inputs:
        return manifest
    old = manifest.get("inputs", {})
    diff = [k for k in inputs if old.get(k) != inputs[k]]
    raise DataError(
        f"{tokens_dir} already holds a token stream prepared from different inputs (differs in: "
        f"{', '.join(diff) or 'format'}); choose another --out or delete {tokens_dir} to re-prepare"
    )


# ---------------------------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------------------------
def _tokenizer(opts: PrepareOptions, sources: list[str], tokens_dir: Path) -> tuple[Any, dict[str, Any] | None]:
    """The tokenizer, and for ``train-bpe`` the key of its training inputs. A BPE trained by an
    earlier (finished or interrupted) run with the same key is reused, not retrained."""
    from grokscope.core.tokenizer import load_tokenizer
    from grokscope.data.corpus import source_record

    if opts.tokenizer != TRAIN_BPE:
        return load_tokenizer(opts.tokenizer), None
    key = {"sources": [source_record(s)["sha256"] or s for s in sources], "vocab_size": opts.vocab_size,
           "text_field": opts.text_field, "max_documents": opts.max_documents}
    work = tokens_dir / WORK_DIR
    trained, key_path = work / "bpe_tokenizer", work / "bpe_key.json"
    if trained.exists() and key_path.exists() and store.read_json(key_path) == key:
        return load_tokenizer(trained), key
    manifest_path = tokens_dir / "manifest.json"
    if manifest_path.exists() and (tokens_dir / "tokenizer").exists() \
            and store.read_json(manifest_path).get("inputs", {}).get("train_bpe") == key:
        return load_tokenizer(tokens_dir / "tokenizer"), key
    tok = train_bpe(sources, opts.vocab_size, opts.text_field, opts.max_documents, opts.progress)
    _save_tokenizer(tok, trained)
    store.write_json(key_path, key)
    return load_tokenizer(trained), key


def train_bpe(sources: list[str], vocab_size: int, text_field: str = "text", max_documents: int = 0,
              progress: bool = True) -> Any:
    """A byte-level BPE (GPT-2 style) trained on the corpus, streamed; ``<|endoftext|>`` is EOS (id 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    tk.train_from_iterator(_text_batches(sources, text_field, max_documents), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                                   unk_token=None, model_max_length=int(1e30))


def _text_batches(sources: list[str], text_field: str, max_documents: int) -> Iterator[list[str]]:
    from grokscope.data.corpus import iter_corpus

    batch: list[str] = []
    for n, doc in enumerate(iter_corpus(sources, text_field)):
        if max_documents and n >= max_documents:
            break
        batch.append(doc.text)
        if len(batch) >= 256:
            yield batch
            batch = []
    if batch:
        yield batch


def _save_tokenizer(tok: Any, path: Path) -> None:
    """``save_pretrained`` into a temp dir, then rename (a reader never sees half a tokenizer)."""
    tmp = path.parent / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------
def run(cfg: StudyConfig, study: Study) -> None:
    """Prepare the study's corpus (``[data]``) into ``study/tokens`` unless the study trains on an
    existing stream (``data.tokens``), in which case the stream is only checked to open."""
    data = cfg.data
    if data.tokens:
        from grokscope.stream.readers import open_stream

        open_stream(data.tokens, format=data.format, rows_per_step=data.rows_per_step or None,
                    eos_id=None if data.eos_id < 0 else data.eos_id)
        return
    if not data.corpus:
        raise ConfigError(f"{cfg.source or 'command line'}: no corpus given: [data] needs 'corpus' (files to "
                          "prepare: --corpus FILE ...) or 'tokens' (an existing token stream)")
    opts = PrepareOptions.from_section(data, progress=cfg.options.progress)
    opts.withhold_phrases = opts.withhold_phrases or str(study.phrases_path)
    result = prepare_corpus(opts, study.tokens_dir)
    print(summary_table(result))


def summary_table(result: PrepareResult) -> str:
    m = result.manifest
    rows = [
        ("tokens dir", str(result.tokens_dir)),
        ("status", "already prepared (same inputs): nothing to do" if result.skipped else "prepared"),
        ("sources", str(len(m["sources"]))),
        ("documents", f"{m['n_documents']:,} (+{m['n_empty_documents']:,} empty)"),
        ("tokenizer", f"{m['tokenizer']} ({m['tokenizer_fingerprint']}, vocab {m['vocab_size']:,}, eos {m['eos_id']})"),
        ("rows x row_len", f"{m['n_rows']:,} x {m['row_len']} ({m['dtype']})"),
        ("tokens in stream", f"{m['n_tokens']:,} (dropped last partial row: {m['dropped_tokens']:,})"),
        ("seed / shuffle", f"{m['seed']} / {m.get('shuffle', 'documents')}"),
    ]
    if "withhold" in m:
        w = m["withhold"]
        rows.append(("withheld", f"{w['n_withheld']:,} of {w['n_phrases']:,} phrases: {w['sentences_removed']:,} "
                                 f"sentences, {w['tokens_removed']:,} tokens ({w['token_share_removed']:.2%}) removed"))
    if not result.skipped:
        rate = m["document_tokens"] / max(result.tokenize_seconds, 1e-9)
        rows.append(("time", f"{result.seconds:.1f} s (tokenize {result.tokenize_seconds:.1f} s, "
                             f"{rate:,.0f} tokens/s)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


STAGE = Stage(
    name="prepare", sections=("data",), run=run, outputs=lambda s: [s.tokens_dir], done=Study.has_tokens,
    wanted=lambda cfg: "" if cfg.data.corpus else "no [data] corpus (using [data] tokens)",
    libraries=("transformers",),
    cli=CommandLine(flags=(Flag("study.out", "--out", "study directory; the stream goes to OUT/tokens/"),),
                    config="--config", progress="--no-progress"),
)
run_stage = STAGE.run_config

__all__ = ["PrepareOptions", "PrepareResult", "prepare_corpus", "train_bpe", "run", "run_stage", "summary_table",
           "GrokscopeError", "STAGE"]
