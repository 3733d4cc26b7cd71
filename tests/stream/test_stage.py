"""grokscope prepare: packing, shuffling, resume and bad input, checked against a brute-force
re-tokenization of every document with the tokenizer's own (Python-level) API."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from grokscope.cli import main
from grokscope.core.errors import DataError
from grokscope.core.tokenizer import load_tokenizer, tokenizer_fingerprint
from grokscope.stream import stage as prep
from grokscope.stream.tokenize import encode_documents, split_text, splits_exactly

WORDS = ("the cat dog sketch sketches this these is are selling Raymond was were a an old new very "
         "red café naïve über — 1984 , . ! ? ( ) \" ' \n").split(" ")


def make_docs(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        k = int(rng.integers(1, 60))
        docs.append(" ".join(rng.choice(WORDS, size=k)).strip() + f" doc{i}.")
    return docs


def write_jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, field: d}) + "\n")
    return path


def expected_stream(tok, docs: list[str], seq_len: int, seed: int,
                    shuffle: str = "rows") -> tuple[np.ndarray, np.ndarray]:
    """Brute force: tokenize each document with the tokenizer's Python API, shuffle with the
    seeded permutation, append EOS to each, cut rows; row_docs by walking the stream; then
    permute the rows (docs/CONTRACTS.md)."""
    eos = tok.convert_tokens_to_ids(tok.eos_token)
    ids = [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    order = np.random.default_rng(seed).permutation(len(docs)) if shuffle != "none" else range(len(docs))
    flat: list[int] = []
    owner: list[int] = []
    for d in order:
        if not ids[d]:
            continue
        flat += ids[d] + [eos]
        owner += [int(d)] * (len(ids[d]) + 1)
    row_len = seq_len + 1
    n_rows = len(flat) // row_len
    rows = np.array(flat[: n_rows * row_len]).reshape(n_rows, row_len)
    row_docs = np.array([owner[r * row_len] for r in range(n_rows)])
    if shuffle == "rows":
        perm = np.random.default_rng([seed, 1]).permutation(n_rows)
        rows, row_docs = rows[perm], row_docs[perm]
    return rows, row_docs



@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory) -> Path:
    """A small byte-level BPE ``tokenizer.json`` (fast to load) for the bad-input tests."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(make_docs(50, 0), trainer=trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tk.save(str(path))
    return path


def run_prepare(*args: str) -> int:
    return main(["prepare", "--no-progress", *args])


def test_prepare_matches_brute_force(tmp_path, gpt2, gpt2_tokenizer_dir):
    docs_a, docs_b = make_docs(40, 1), make_docs(25, 2)
    docs_b[3] = ""  # an empty document: counted, not emitted
    a = write_jsonl(tmp_path / "a.jsonl", docs_a)
    b = write_jsonl(tmp_path / "b.jsonl.gz", docs_b)
    out = tmp_path / "study"
    assert run_prepare("--corpus", str(a), str(b), "--tokenizer", str(gpt2_tokenizer_dir), "--seq-len", "16",
                       "--seed", "3", "--out", str(out), "--batch-chars", "300") == 0
    tokens = np.load(out / "tokens" / "tokens.npy")
    row_docs = np.load(out / "tokens" / "row_docs.npy")
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    rows, want_docs = expected_stream(gpt2, docs_a + docs_b, 16, 3)
    assert tokens.dtype == np.uint16 and tokens.shape == rows.shape
    np.testing.assert_array_equal(tokens, rows)
    np.testing.assert_array_equal(row_docs, want_docs)
    total = sum(len(gpt2(d, add_special_tokens=False)["input_ids"]) + 1 for d in docs_a + docs_b if d)
    assert manifest["n_tokens"] == rows.size and manifest["dropped_tokens"] == total - rows.size
    assert manifest["n_documents"] == 64 and manifest["n_empty_documents"] == 1
    assert manifest["eos_id"] == 50256 and manifest["row_len"] == 17 and manifest["seq_len"] == 16
    assert manifest["tokenizer_fingerprint"] == tokenizer_fingerprint(gpt2)
    assert [s["first_document"] for s in manifest["sources"]] == [0, 40]
    assert manifest["sources"][1]["bytes"] == b.stat().st_size and len(manifest["sources"][1]["sha256"]) == 64
    # the saved tokenizer dir loads and is the same tokenizer
    assert tokenizer_fingerprint(load_tokenizer(out / "tokens" / "tokenizer")) == tokenizer_fingerprint(gpt2)
    assert not (out / "tokens" / ".work").exists()


@pytest.mark.parametrize("shuffle", ["documents", "none"])
def test_prepare_shuffle_modes_match_brute_force(tmp_path, gpt2, gpt2_tokenizer_dir, shuffle):
    docs = make_docs(40, 7)
    src = write_jsonl(tmp_path / "a.jsonl", docs)
    out = tmp_path / "study"
    assert run_prepare("--corpus", str(src), "--tokenizer", str(gpt2_tokenizer_dir), "--seq-len", "9",
                       "--seed", "5", "--shuffle", shuffle, "--out", str(out)) == 0
    rows, want_docs = expected_stream(gpt2, docs, 9, 5, shuffle)
    np.testing.assert_array_equal(np.load(out / "tokens" / "tokens.npy"), rows)
    np.testing.assert_array_equal(np.load(out / "tokens" / "row_docs.npy"), want_docs)
    assert json.loads((out / "tokens" / "manifest.json").read_text())["shuffle"] == shuffle
    if shuffle == "none":
        assert (np.diff(want_docs) >= 0).all()  # reading order


def test_row_shuffle_mixes_documents_within_a_batch(tmp_path, gpt2_tokenizer_dir):
    """One long document + short ones: without the row shuffle the long one fills consecutive
    rows; with it, a window of 8 rows holds rows of several documents."""
    docs = [" ".join(["word"] * 3000)] + make_docs(30, 8)
    src = write_jsonl(tmp_path / "a.jsonl", docs)
    runs = {}
    for shuffle in ("documents", "rows"):
        out = tmp_path / shuffle
        assert run_prepare("--corpus", str(src), "--tokenizer", str(gpt2_tokenizer_dir), "--seq-len", "16",
                           "--shuffle", shuffle, "--out", str(out)) == 0
        runs[shuffle] = np.load(out / "tokens" / "row_docs.npy")
    longest_run = lambda d: max(len(list(g)) for _, g in __import__("itertools").groupby(d))  # noqa: E731
    assert longest_run(runs["documents"]) >= 150
    assert longest_run(runs["rows"]) < 20
    assert sorted(runs["rows"]) == sorted(runs["documents"])


def test_documents_decode_back_and_seed_changes_order(tmp_path, gpt2, gpt2_tokenizer_dir):
    docs = make_docs(30, 5)
    src = write_jsonl(tmp_path / "c.jsonl", docs)
    outs = {}
    for seed in (0, 1):
        o = tmp_path / f"s{seed}"
        assert run_prepare("--corpus", str(src), "--tokenizer", str(gpt2_tokenizer_dir), "--seq-len", "7",
                           "--seed", str(seed), "--out", str(o)) == 0
        outs[seed] = np.load(o / "tokens" / "tokens.npy")
    assert not np.array_equal(outs[0], outs[1])
    # undo the row shuffle (its permutation is the documented contract); then every complete
    # document between two EOS decodes to its text
    perm = np.random.default_rng([0, 1]).permutation(outs[0].shape[0])
    flat = outs[0][np.argsort(perm)].reshape(-1)
    cuts = np.flatnonzero(flat == 50256)
    texts = {gpt2.decode(flat[a + 1 : b].tolist()) for a, b in zip(cuts[:-1], cuts[1:])}
    assert texts and texts <= set(docs)
    assert len(texts) >= len(docs) - 3


def test_rerun_is_a_noop_and_other_inputs_are_refused(tmp_path, small_tokenizer, capsys):
    src = write_jsonl(tmp_path / "d.jsonl", make_docs(20, 7))
    out = tmp_path / "study"
    args = ["--corpus", str(src), "--tokenizer", str(small_tokenizer), "--seq-len", "8", "--out", str(out)]
    assert run_prepare(*args) == 0
    tokens = out / "tokens" / "tokens.npy"
    before = (tokens.stat().st_mtime_ns, tokens.read_bytes())
    capsys.readouterr()
    assert run_prepare(*args) == 0
    assert "already prepared" in capsys.readouterr().out
    assert (tokens.stat().st_mtime_ns, tokens.read_bytes()) == before
    assert run_prepare(*args[:-2], "--seq-len", "9", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "different inputs" in err and "seq_len" in err
    assert (tokens.stat().st_mtime_ns, tokens.read_bytes()) == before  # finished work kept


def test_resume_after_a_crash_equals_a_clean_run(tmp_path, small_tokenizer, monkeypatch):
    a = write_jsonl(tmp_path / "a.jsonl", make_docs(30, 11))
    b = write_jsonl(tmp_path / "b.jsonl", make_docs(30, 12))
    opts = prep.PrepareOptions(corpus=[str(a), str(b)], tokenizer=str(small_tokenizer), seq_len=10, seed=4,
                               progress=False, batch_chars=200)
    crashed = tmp_path / "crashed" / "tokens"
    crash_while_tokenizing(monkeypatch, opts, b, crashed)
    assert not (crashed / "tokens.npy").exists() and not (crashed / "manifest.json").exists()
    progress = json.loads((crashed / ".work" / "progress.json").read_text())
    assert progress["sources_done"] == 1 and progress["n_docs"] == 30
    resumed = prep.prepare_corpus(opts, crashed)
    assert resumed.stats["resumed"] and not resumed.skipped
    clean = prep.prepare_corpus(opts, tmp_path / "clean" / "tokens")
    for name in ("tokens.npy", "row_docs.npy"):
        np.testing.assert_array_equal(np.load(crashed / name), np.load(tmp_path / "clean" / "tokens" / name))
    assert resumed.manifest["sources"] == clean.manifest["sources"]


def test_txt_corpus_and_max_documents(tmp_path, small_tokenizer):
    docs = make_docs(12, 9)
    docs = [d.replace("\n", " ") for d in docs]
    txt = tmp_path / "c.txt"
    txt.write_text("\n".join(docs[:6]) + "\n\n" + "\n".join(docs[6:]) + "\n", encoding="utf-8")
    out = tmp_path / "study"
    assert run_prepare("--corpus", str(txt), "--tokenizer", str(small_tokenizer), "--seq-len", "5",
                       "--max-documents", "8", "--out", str(out)) == 0
    rows, _ = expected_stream(load_tokenizer(small_tokenizer), docs[:8], 5, 0)
    np.testing.assert_array_equal(np.load(out / "tokens" / "tokens.npy"), rows)
    assert json.loads((out / "tokens" / "manifest.json").read_text())["n_documents_read"] == 8


def test_train_bpe_saves_a_loadable_tokenizer(tmp_path, monkeypatch, capsys):
    docs = make_docs(200, 13)
    src = write_jsonl(tmp_path / "c.jsonl", docs)
    out = tmp_path / "study"
    assert run_prepare("--corpus", str(src), "--tokenizer", "train-bpe", "--vocab-size", "400", "--seq-len", "12",
                       "--out", str(out)) == 0
    tok = load_tokenizer(out / "tokens" / "tokenizer")
    assert tok.eos_token == "<|endoftext|>" and tok.convert_tokens_to_ids("<|endoftext|>") == 0
    assert len(tok.get_vocab()) <= 400
    rows, _ = expected_stream(tok, docs, 12, 0)
    np.testing.assert_array_equal(np.load(out / "tokens" / "tokens.npy"), rows)
    assert tok.decode(tok(docs[0], add_special_tokens=False)["input_ids"]) == docs[0]
    # a re-run reuses the trained tokenizer (no retraining) and does nothing
    monkeypatch.setattr(prep, "train_bpe", lambda *a, **k: pytest.fail("retrained the BPE"))
    capsys.readouterr()
    assert run_prepare("--corpus", str(src), "--tokenizer", "train-bpe", "--vocab-size", "400", "--seq-len", "12",
                       "--out", str(out)) == 0
    assert "already prepared" in capsys.readouterr().out


def wide_tokenizer(tmp_path: Path) -> Path:
    """A word-level tokenizer whose ids go above 65535 (so uint16 cannot hold them)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "<|endoftext|>": 1, "hello": 70000, "world": 65535, "big": 65536}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tk.save(str(path))
    return path


def test_ids_not_fitting_the_dtype(tmp_path, capsys):
    tok_path = wide_tokenizer(tmp_path)
    src = write_jsonl(tmp_path / "c.jsonl", ["hello world big", "world hello", "big big hello zzz"])
    out = tmp_path / "study"
    assert run_prepare("--corpus", str(src), "--tokenizer", str(tok_path), "--dtype", "uint16", "--seq-len", "3",
                       "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "does not fit uint16" in err and "70000" in err and str(tok_path) in err
    assert not (out / "tokens" / "tokens.npy").exists()
    # auto picks uint32 and keeps the large ids intact
    assert run_prepare("--corpus", str(src), "--tokenizer", str(tok_path), "--seq-len", "3", "--out", str(out)) == 0
    tokens = np.load(out / "tokens" / "tokens.npy")
    assert tokens.dtype == np.uint32
    assert sorted(set(tokens.reshape(-1).tolist())) == [0, 1, 65535, 65536, 70000]


@pytest.mark.parametrize(
    "content, expect",
    [
        ("", "corpus is empty"),
        ("\n\n", "corpus is empty"),
        ('{"text": "fine"}\n{"text": "also fine"}\n{"text": broken\n', "bad.jsonl:3: not valid JSON"),
        ('{"text": "fine"}\n{"body": "no text here"}\n', "bad.jsonl:2: document has no 'text' field (keys: body)"),
        ('{"text": 12}\n', "bad.jsonl:1: field 'text' must be a string"),
        ('["a list"]\n', "bad.jsonl:1: expected a JSON object"),
    ],
)
def test_bad_corpus_exits_2_naming_file_and_line(tmp_path, small_tokenizer, capsys, content, expect):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content, encoding="utf-8")
    out = tmp_path / "study"
    assert run_prepare("--corpus", str(bad), "--tokenizer", str(small_tokenizer), "--out", str(out)) == 2
    assert expect in capsys.readouterr().err
    assert not (out / "tokens" / "tokens.npy").exists()


def test_missing_inputs_exit_2(tmp_path, small_tokenizer, capsys):
    out = str(tmp_path / "study")
    assert run_prepare("--corpus", str(tmp_path / "nope.jsonl"), "--tokenizer", str(small_tokenizer), "--out", out) == 2
    assert "nope.jsonl' does not exist" in capsys.readouterr().err
    assert run_prepare("--corpus", str(tmp_path / "*.jsonl.gz"), "--tokenizer", str(small_tokenizer), "--out", out) == 2
    assert "matches no file" in capsys.readouterr().err
    src = write_jsonl(tmp_path / "ok.jsonl", ["a b c"])
    assert run_prepare("--corpus", str(src), "--tokenizer", str(tmp_path / "no_tokenizer"), "--out", out) == 2
    assert "no_tokenizer': path does not exist" in capsys.readouterr().err
    assert run_prepare("--corpus", str(src), "--tokenizer", str(small_tokenizer), "--seq-len", "50", "--out", out) == 2
    assert "fewer than one row" in capsys.readouterr().err
    assert run_prepare("--tokenizer", str(small_tokenizer), "--out", out) == 2
    assert "no corpus given" in capsys.readouterr().err
    (tmp_path / "c.csv").write_text("text\nhello\n")
    assert run_prepare("--corpus", str(tmp_path / "c.csv"), "--tokenizer", str(small_tokenizer), "--out", out) == 2
    assert "unknown corpus format" in capsys.readouterr().err


def test_other_text_field_and_run_stage(tmp_path, small_tokenizer):
    from grokscope.core.config import config_from_dict
    from grokscope.core.store import Study

    docs = make_docs(15, 21)
    write_jsonl(tmp_path / "body.jsonl", docs, field="body")
    cfg = config_from_dict({"data": {"corpus": ["*.jsonl"], "text_field": "body", "tokenizer": str(small_tokenizer),
                                     "seq_len": 6, "seed": 2}})
    cfg.source = str(tmp_path / "study.toml")
    study = Study(tmp_path / "study")
    prep.run_stage(cfg, study)
    assert study.has_tokens()
    rows, _ = expected_stream(load_tokenizer(small_tokenizer), docs, 6, 2)
    np.testing.assert_array_equal(np.load(study.tokens_dir / "tokens.npy"), rows)
    mtime = os.stat(study.tokens_dir / "tokens.npy").st_mtime_ns
    prep.run_stage(cfg, study)  # resume: nothing to do
    assert os.stat(study.tokens_dir / "tokens.npy").st_mtime_ns == mtime


def test_corpus_reader_errors_name_the_line(tmp_path):
    from grokscope.data.corpus import iter_documents

    p = tmp_path / "x.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write('{"text": "a"}\n\n{"text": "b"}\n{"text"\n')
    it = iter_documents(str(p))
    assert [(d.text, d.line) for d in (next(it), next(it))] == [("a", 1), ("b", 3)]
    with pytest.raises(DataError, match=r"x\.jsonl\.gz:4: not valid JSON"):
        next(it)


ADVERSARIAL = ("Don't  stop: it's 1,234.5 km\u00a0away!\n\n  \tIndented line\r\nnaïve café ﬁ Ⅻ ²³ — “quoted” 's 'll "
               "x\u2003y \U0001F600 emoji  trailing   \n" * 40)


@pytest.mark.parametrize("which", ["gpt2", "pythia"])
def test_encoding_long_documents_in_pieces_is_exact(which, corpus_dir, gpt2_tokenizer_dir, pythia_tokenizer_file):
    """Pieces cut at a space between two non-spaces encode to exactly the ids of the whole text
    (real books and articles, plus an adversarial text), for both shared byte-level tokenizers."""
    import itertools

    tok = load_tokenizer(gpt2_tokenizer_dir if which == "gpt2" else pythia_tokenizer_file)
    backend = tok.backend_tokenizer
    assert splits_exactly(backend)
    texts = [ADVERSARIAL]
    for name in ("gutenberg-000.jsonl.gz", "wikipedia-000.jsonl.gz"):
        with gzip.open(corpus_dir / name, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"][:200_000] for line in itertools.islice(f, 2)]
    whole = [np.array(e.ids) for e in backend.encode_batch(texts, add_special_tokens=False)]
    pieces = encode_documents(backend, texts, piece_chars=300)
    assert sum(len(split_text(t, 300)) for t in texts) > 500  # many cuts were made
    for w, p in zip(whole, pieces):
        np.testing.assert_array_equal(w, p)
    assert "".join(split_text(ADVERSARIAL, 50)) == ADVERSARIAL


def test_tokenizers_that_may_not_be_split_are_encoded_whole(small_tokenizer, tmp_path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    assert splits_exactly(load_tokenizer(small_tokenizer).backend_tokenizer)
    tk = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    assert not splits_exactly(tk)
    tk = Tokenizer.from_file(str(small_tokenizer))
    tk.normalizer = normalizers.Lowercase()
    assert not splits_exactly(tk)


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, corpus_dir, gpt2_tokenizer_dir):
    """A real ``grokscope prepare`` killed with SIGKILL after its first source file, then re-run,
    ends with the same files as an uninterrupted run."""
    import itertools
    import signal
    import subprocess
    import sys
    import time

    files = []
    with gzip.open(corpus_dir / "wikipedia-001.jsonl.gz", "rt", encoding="utf-8") as f:
        for i in range(3):  # three files of 300 real articles each (~1M tokens per file)
            files.append(str(tmp_path / f"part{i}.jsonl"))
            Path(files[-1]).write_text("".join(itertools.islice(f, 300)), encoding="utf-8")
    cmd = [sys.executable, "-m", "grokscope.cli", "prepare", "--no-progress", "--corpus", *files,
           "--tokenizer", str(gpt2_tokenizer_dir)]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)])
    progress = killed / "tokens" / ".work" / "progress.json"
    while proc.poll() is None and not progress.exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # while the second file is being tokenized
    proc.wait()
    assert not (killed / "tokens" / "tokens.npy").exists()
    assert json.loads(progress.read_text())["sources_done"] < 3
    assert subprocess.run(cmd + ["--out", str(killed)]).returncode == 0
    assert subprocess.run(cmd + ["--out", str(tmp_path / "clean")]).returncode == 0
    for name in ("tokens.npy", "row_docs.npy"):
        assert (killed / "tokens" / name).read_bytes() == (tmp_path / "clean" / "tokens" / name).read_bytes()


def test_hf_dataset_without_datasets_is_a_clear_error(tmp_path, small_tokenizer, capsys):
    # without `datasets` installed: a message naming the package; with it, the hub is unreachable here
    code = run_prepare("--corpus", "hf:nonexistent-org/nonexistent-dataset:train", "--tokenizer", str(small_tokenizer),
                       "--out", str(tmp_path / "study"))
    assert code == 2
    err = capsys.readouterr().err
    assert "hf:nonexistent-org/nonexistent-dataset:train" in err
    assert "datasets" in err or "could not load dataset" in err


def crash_while_tokenizing(monkeypatch, opts, second: Path, out: Path) -> None:
    """Run ``prepare_corpus(opts, out)`` and kill it (KeyboardInterrupt) at the 10th document of
    the file ``second``; the corpus reader is restored afterwards."""
    import grokscope.data.corpus as corpus

    real = corpus.iter_documents

    def dying(source, text_field="text"):
        for i, doc in enumerate(real(source, text_field)):
            if source == str(second) and i == 10:
                raise KeyboardInterrupt  # killed while tokenizing the second file
            yield doc

    monkeypatch.setattr(corpus, "iter_documents", dying)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare_corpus(opts, out)
    monkeypatch.setattr(corpus, "iter_documents", real)
