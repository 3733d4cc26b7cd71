"""Exposure stage: real GPT-2 tokenizer, real text, checked against a text-level regex search."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grokscope.cli import main
from grokscope.core import store
from grokscope.core.checkpoints import checkpoint_steps as parse_checkpoints
from grokscope.core.checkpoints import pythia_steps
from grokscope.core.errors import DataError
from grokscope.exposure.search import tokenize_phrases, variant_texts
from grokscope.exposure.shards import StreamSpec, search_stream, window_edges
from grokscope.exposure.stage import compute_exposure

WORDS = ["this", "This", "sketch", "sketches", "sketchbook", "these", "is", "Raymond", "selling", "a",
         "herself", "himself", "Mary", "praised", "no", "ever", "sketch's", "nice"]
PUNCT = [".", ",", "(", ")", "!", "-", "“", "”", "’", "—"]
PAIRS = [  # (critical phrase, bad phrase)
    ("this sketch", "this sketches"),
    ("these sketches", "these sketch"),
    ("Mary praised herself", "Mary praised himself"),
    ("Raymond is", "Raymond are"),
    ("no", "ever"),
    ("sketch", "sketchbook"),
    ("this sketch", "this sketches"),  # the same phrase twice: both rows get the same numbers
    ("", "sketch"),  # unsupported pair: no critical phrase
]



def random_documents(rng: np.random.Generator, n_docs: int) -> list[str]:
    docs = []
    for _ in range(n_docs):
        parts = []
        for _ in range(rng.integers(3, 30)):
            r = rng.random()
            if r < 0.15:
                parts.append(str(rng.choice(PUNCT)))
            elif r < 0.25:
                parts.append(str(rng.choice(PUNCT)) + str(rng.choice(WORDS)))  # "(this", ".This"
            elif r < 0.3:
                parts.append("\n" + str(rng.choice(WORDS)))
            else:
                parts.append(str(rng.choice(WORDS)))
        docs.append(" ".join(parts).replace(" \n", "\n"))
    return docs


def write_stream(root: Path, tok, docs: list[str], row_len: int, rows_per_step: int | None = None,
                 pad: bool = False) -> Path:
    """A grokscope prepared tokens/ dir (docs/CONTRACTS.md) holding ``docs`` joined with EOS."""
    from grokscope.core.tokenizer import tokenizer_fingerprint, vocab_size

    eos = tok.eos_token_id
    ids: list[int] = []
    for d in docs:
        ids += tok(d, add_special_tokens=False)["input_ids"] + [eos]
    if pad:
        ids += [eos] * (-len(ids) % row_len)
    n_rows = len(ids) // row_len
    arr = np.array(ids[: n_rows * row_len], dtype=np.uint16).reshape(n_rows, row_len)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "tokens.npy", arr)
    tok.save_pretrained(str(root / "tokenizer"))
    manifest = {
        "format": "grokscope", "tokenizer": "gpt2", "tokenizer_fingerprint": tokenizer_fingerprint(tok),
        "vocab_size": vocab_size(tok), "eos_id": eos, "seq_len": row_len - 1, "row_len": row_len,
        "dtype": "uint16", "seed": 0, "n_rows": n_rows, "n_tokens": n_rows * row_len, "n_documents": len(docs),
    }
    if rows_per_step:
        manifest["rows_per_step"] = rows_per_step
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def write_phrases(study: Path, pairs: list[tuple[str, str]]) -> Path:
    df = pd.DataFrame({
        "uid": ["u"] * len(pairs), "pair_id": list(range(len(pairs))),
        "supported": [bool(g) for g, _ in pairs], "critical_phrase": [g for g, _ in pairs],
        "bad_phrase": [b for _, b in pairs],
    })
    study.mkdir(parents=True, exist_ok=True)
    store.write_parquet(study / "phrases.parquet", df, metadata={"benchmark": "test", "benchmark_fingerprint": "abc"})
    return study


def documents_of(row: list[int], eos: int) -> list[list[int]]:
    """The pieces of one row between EOS tokens (a match never crosses one)."""
    segs: list[list[int]] = [[]]
    for t in row:
        if t == eos:
            segs.append([])
        else:
            segs[-1].append(t)
    return segs


def regex_occurrence_rows(tok, rows: np.ndarray, phrase: str) -> list[int]:
    """Independent text-level search: decode each row's documents and count whole-word hits
    of " phrase", " Phrase" (after a space) and "Phrase" at a document/line start or after
    punctuation. Returns one row index per hit."""
    if not phrase:
        return []
    eos = tok.eos_token_id
    cap = phrase[0].upper() + phrase[1:]
    forms = {" " + phrase, " " + cap}
    pats = [re.compile(re.escape(f) + r"(?![A-Za-z0-9])") for f in forms]
    # no leading space: at a segment start, or after a character that is neither a letter/digit
    # nor a space (a space before it would make the token " This", another form)
    pats.append(re.compile(r"(?:^|(?<=[^A-Za-z0-9 ]))" + re.escape(cap) + r"(?![A-Za-z0-9])"))
    out = []
    for r, row in enumerate(rows.tolist()):
        segs = documents_of(row, eos)
        for seg in segs:
            text = tok.decode(seg)
            out += [r] * sum(len(p.findall(text)) for p in pats)
    return out


def test_variant_texts_and_dedupe(gpt2):
    assert variant_texts("this sketch", ["mid"]) == [" this sketch"]
    assert variant_texts("this sketch", ["mid", "sentence_start"]) == [" this sketch", " This sketch", "This sketch"]
    assert variant_texts("Raymond is", ["mid", "sentence_start"]) == [" Raymond is", "Raymond is"]
    assert variant_texts("  ", ["mid"]) == []
    seqs = tokenize_phrases(gpt2, ["this sketch", "This sketch", "this sketch"], ["mid", "sentence_start"])
    assert seqs.phrases == ("this sketch", "This sketch")
    assert len(seqs.sequences) == 3  # " this sketch", " This sketch", "This sketch"
    assert gpt2.decode(list(seqs.sequences[0])) == " this sketch"
    # "This sketch" (mid) shares its sequences with the sentence-start variants of "this sketch"
    own = [sorted(seqs.seq_ids[seqs.offsets[i]:seqs.offsets[i + 1]].tolist()) for i in range(2)]
    assert own == [[0, 1, 2], [1, 2]]


def test_checkpoint_parsing(tmp_path):
    assert parse_checkpoints(["0,1,2", "4", "1000,2"]) == [0, 1, 2, 4, 1000]
    steps = pythia_steps()
    assert len(steps) == 154 and steps[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000] and steps[-1] == 143000
    for s in (3, 10):
        d = tmp_path / "run" / "checkpoints" / f"step_{s:08d}"
        d.mkdir(parents=True)
        (d / "grokscope_checkpoint.json").write_text(json.dumps({"step": s, "tokens_seen": s * 10}))
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(b"")
    assert parse_checkpoints([str(tmp_path / "run")]) == [3, 10]
    assert parse_checkpoints([str(tmp_path / "run/checkpoints/step_*"), "7"]) == [3, 7, 10]
    np.testing.assert_array_equal(window_edges([0, 2, 5], 4, 20), [0, 0, 8, 20, 20])
    with pytest.raises(DataError, match="checkpoint step 6 needs 24 rows"):
        window_edges([1, 6], 4, 20)


@pytest.mark.parametrize("seed", [0, 1])
def test_exposure_equals_text_level_search(tmp_path, gpt2, seed):
    rng = np.random.default_rng(seed)
    docs = random_documents(rng, 400)
    docs[0] = "This sketch is nice. Mary praised herself (this sketch)."  # stream start
    tokens = write_stream(tmp_path / "tokens", gpt2, docs, row_len=17)
    study = write_phrases(tmp_path / "study", PAIRS)
    arr = np.load(tokens / "tokens.npy")
    B = 3
    n_steps = arr.shape[0] // B
    steps = [0, 1, 2, 4, n_steps // 2, n_steps]
    out = study / "exposure.parquet"
    s = compute_exposure(study / "phrases.parquet", StreamSpec(str(tokens), rows_per_step=B), steps, out, progress=False)
    assert not s.skipped
    df = pd.read_parquet(out)
    for i, (good, bad) in enumerate(PAIRS):
        for side, phrase in (("good", good), ("bad", bad)):
            hits = regex_occurrence_rows(gpt2, arr, phrase)
            assert df[f"{side}_total_count"][i] == len(hits), (phrase, side)
            first = df[f"{side}_first_step"][i]
            if hits:
                assert first == hits[0] // B + 1
            else:
                assert pd.isna(first)
            for t in steps:
                assert df[f"{side}_count_{t}"][i] == sum(r < t * B for r in hits), (phrase, t)
    assert df["good_total_count"][0] > 0 and df["bad_total_count"][5] > 0  # the corpus does exercise it
    assert df.loc[6].drop("pair_id").equals(df.loc[0].drop("pair_id"))
    meta = store.read_parquet_metadata(out)
    assert meta["steps"] == steps and meta["rows_per_step"] == B and meta["row_len"] == 17
    assert meta["variants"] == ["mid", "sentence_start"] and meta["benchmark_fingerprint"] == "abc"
    assert list(df.columns[:11]) == ["uid", "pair_id", "supported", "good_phrase", "bad_phrase", "good_first_step",
                                     "bad_first_step", "good_total_count", "bad_total_count", "good_count_0", "bad_count_0"]
    assert str(df["good_first_step"].dtype) == "Int64"
    # unchanged inputs: skipped; other variants: recomputed, and mid-only counts are smaller
    assert compute_exposure(study / "phrases.parquet", StreamSpec(str(tokens), rows_per_step=B), steps, out,
                            progress=False).skipped
    compute_exposure(study / "phrases.parquet", StreamSpec(str(tokens), rows_per_step=B), steps, out,
                     variants=["mid"], progress=False)
    mid = pd.read_parquet(out)
    assert (mid["good_total_count"] <= df["good_total_count"]).all()
    assert mid["good_total_count"][0] < df["good_total_count"][0]


def test_whole_word_rules_on_real_tokens(tmp_path, gpt2):
    docs = ["I drew this sketchbook.", "I like this sketch.", "Look at this sketch is", "This sketch", "this sketch",
            "Is this sketches?", "Nothis sketch", "foo.This sketch!"]
    tokens = write_stream(tmp_path / "tokens", gpt2, docs, row_len=64, pad=True)
    study = write_phrases(tmp_path / "study", [("this sketch", "this sketches")])
    compute_exposure(study / "phrases.parquet", StreamSpec(str(tokens), rows_per_step=1), [1], study / "exposure.parquet",
                     progress=False)
    df = pd.read_parquet(study / "exposure.parquet")
    # " this sketch." + " this sketch is" + "This sketch" at a document start + ".This sketch!";
    # not "sketchbook", not "Nothis" (starts inside a word), not lower-case "this" without a space
    assert df["good_total_count"][0] == 4
    assert df["bad_total_count"][0] == 1


def test_dask_and_shards_equal_single_process(tmp_path, gpt2):
    docs = random_documents(np.random.default_rng(5), 300)
    tokens = write_stream(tmp_path / "tokens", gpt2, docs, row_len=9, rows_per_step=2)
    study = write_phrases(tmp_path / "study", PAIRS)
    steps = [0, 1, 3, 10, 50]
    one = compute_exposure(study / "phrases.parquet", StreamSpec(str(tokens)), steps, tmp_path / "one.parquet",
                           progress=False)
    two = compute_exposure(study / "phrases.parquet", StreamSpec(str(tokens)), steps, tmp_path / "two.parquet",
                           workers=2, shard_rows=37, progress=False)
    assert one.pairs == two.pairs
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet"))
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        compute_exposure(study / "phrases.parquet", StreamSpec(str(tokens)), steps, tmp_path / "sched.parquet",
                         scheduler=cluster.scheduler_address, shard_rows=50, progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "sched.parquet"))


class Killed(Exception):
    pass


def shard_search_inputs(tmp_path, gpt2, seed, n_docs, steps):
    """(spec, index, n_rows, edges) of a random stream of rows of 9 tokens, 2 rows a step."""
    from grokscope.exposure.engine import build_index
    from grokscope.exposure.words import word_tables

    docs = random_documents(np.random.default_rng(seed), n_docs)
    tokens = write_stream(tmp_path / "tokens", gpt2, docs, row_len=9, rows_per_step=2)
    seqs = tokenize_phrases(gpt2, [g for g, _ in PAIRS], ["mid", "sentence_start"])
    index = build_index(seqs.sequences, word_tables(gpt2))
    n_rows = np.load(tokens / "tokens.npy").shape[0]
    return StreamSpec(str(tokens)), index, n_rows, window_edges(steps, 2, n_rows)


def test_resume_uses_finished_shards(tmp_path, gpt2, monkeypatch):
    import grokscope.exposure.shards as ex

    spec, index, n_rows, edges = shard_search_inputs(tmp_path, gpt2, 9, 200, [1, 5])
    fresh = search_stream(spec, index, n_rows, edges, shard_rows=20, progress=False)
    real = ex.scan_shard
    calls: list[int] = []
    kill_at = [3]

    def flaky(spec, index, a, b, *args):
        calls.append(a)
        if len(calls) == kill_at[0]:
            raise Killed  # killed mid-run
        return real(spec, index, a, b, *args)

    monkeypatch.setattr(ex, "scan_shard", flaky)
    parts = tmp_path / "parts"
    with pytest.raises(Killed):
        search_stream(spec, index, n_rows, edges, shard_rows=20, parts_dir=parts, parts_key="k", progress=False)
    assert len(list(parts.glob("rows_*.npz"))) == 2
    calls.clear()
    kill_at[0] = -1
    again = search_stream(spec, index, n_rows, edges, shard_rows=20, parts_dir=parts, parts_key="k", progress=False)
    assert 0 not in calls and 20 not in calls and len(calls) == len(range(0, n_rows, 20)) - 2
    for f in ("first_row", "interval", "seq", "count"):
        np.testing.assert_array_equal(getattr(fresh, f), getattr(again, f))


def test_many_shards_merged_as_they_come_equal_one_shard(tmp_path, gpt2):
    spec, index, n_rows, edges = shard_search_inputs(tmp_path, gpt2, 11, 300, [1, 5, 40])
    one = search_stream(spec, index, n_rows, edges, shard_rows=n_rows, progress=False)
    many = search_stream(spec, index, n_rows, edges, shard_rows=3, progress=False)
    assert len(range(0, n_rows, 3)) > 3 * 32  # several folds of the running merge, and a remainder
    assert one.count.sum() > 0
    for f in ("first_row", "interval", "seq", "count"):
        np.testing.assert_array_equal(getattr(one, f), getattr(many, f))


# ------------------------------------------------------------------------------------------
# CLI and bad input: clear message, exit 2
# ------------------------------------------------------------------------------------------
def test_cli_writes_exposure(tmp_path, gpt2, capsys):
    docs = random_documents(np.random.default_rng(3), 100)
    tokens = write_stream(tmp_path / "tokens", gpt2, docs, row_len=17)
    study = write_phrases(tmp_path / "study", PAIRS)
    rc = main(["exposure", "--phrases", str(study), "--tokens", str(tokens), "--checkpoints", "0,1,2", "4",
               "--rows-per-step", "2", "--variants", "mid"])
    assert rc == 0
    df = pd.read_parquet(study / "exposure.parquet")
    assert len(df) == len(PAIRS) and "good_count_4" in df and "bad_count_1" in df
    assert "token sequences" in capsys.readouterr().out


def test_step_beyond_stream_is_an_error(tmp_path, gpt2, capsys):
    tokens = write_stream(tmp_path / "tokens", gpt2, random_documents(np.random.default_rng(1), 20), row_len=17)
    study = write_phrases(tmp_path / "study", PAIRS)
    n_rows = np.load(tokens / "tokens.npy").shape[0]
    rc = main(["exposure", "--phrases", str(study), "--tokens", str(tokens), "--checkpoints", f"1,{n_rows + 1}",
               "--rows-per-step", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"checkpoint step {n_rows + 1}" in err and f"only {n_rows} rows" in err
    assert not (study / "exposure.parquet").exists()


def test_ids_out_of_vocabulary_is_an_error(tmp_path, gpt2, capsys):
    tokens = write_stream(tmp_path / "tokens", gpt2, random_documents(np.random.default_rng(1), 40), row_len=17)
    arr = np.load(tokens / "tokens.npy")
    arr[5, 3] = 60000
    np.save(tokens / "tokens.npy", arr)
    study = write_phrases(tmp_path / "study", PAIRS)
    rc = main(["exposure", "--phrases", str(study), "--tokens", str(tokens), "--checkpoints", "1", "--rows-per-step", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "row 5, position 3: token id 60000" in err and "50257" in err


def test_tokenizer_mismatch_is_an_error(tmp_path, gpt2, pythia_tokenizer_file, capsys):
    tokens = write_stream(tmp_path / "tokens", gpt2, random_documents(np.random.default_rng(1), 20), row_len=17)
    study = write_phrases(tmp_path / "study", PAIRS)
    rc = main(["exposure", "--phrases", str(study), "--tokens", str(tokens), "--checkpoints", "1",
               "--rows-per-step", "1", "--tokenizer", str(pythia_tokenizer_file)])
    assert rc == 2
    assert "fingerprint" in capsys.readouterr().err


def test_megatron_foreign_ids_and_truncated_files(tmp_path, megatron_dir, pythia_tokenizer_file, capsys):
    study = write_phrases(tmp_path / "study", PAIRS)
    # the fixture holds synthetic ids far beyond Pythia's 50,277-token vocabulary
    args = ["exposure", "--phrases", str(study), "--checkpoints", "1", "--rows-per-step", "1",
            "--tokenizer", str(pythia_tokenizer_file)]
    assert main(args + ["--tokens", str(megatron_dir / "test_text_document")]) == 2
    assert "outside the tokenizer's vocabulary (size 50277)" in capsys.readouterr().err
    for ext in (".bin", ".idx"):
        cut = tmp_path / f"cut{ext[1:]}"
        cut.mkdir()
        for e in (".bin", ".idx"):
            shutil.copy(megatron_dir / f"test_text_document{e}", cut / f"doc{e}")
        data = (cut / f"doc{ext}").read_bytes()
        (cut / f"doc{ext}").write_bytes(data[: len(data) // 2])
        assert main(args + ["--tokens", str(cut / "doc")]) == 2
        err = capsys.readouterr().err
        assert "doc" in err and "error" in err
    assert not (study / "exposure.parquet").exists()


def test_run_stage_from_config(tmp_path, gpt2):
    from grokscope.core.config import config_from_dict
    from grokscope.core.errors import MissingStageError
    from grokscope.core.store import Study
    from grokscope.exposure.stage import run_stage

    study = Study(tmp_path / "study")
    cfg = config_from_dict({"data": {"rows_per_step": 2}, "score": {"checkpoints": ["0,1", "3"]},
                            "exposure": {"variants": ["mid"]}})
    with pytest.raises(MissingStageError, match="grokscope phrases"):
        run_stage(cfg, study)
    write_phrases(study.root, PAIRS)
    write_stream(study.tokens_dir, gpt2, random_documents(np.random.default_rng(2), 60), row_len=17)
    run_stage(cfg, study)
    df = pd.read_parquet(study.exposure_path)
    meta = store.read_parquet_metadata(study.exposure_path)
    assert meta["steps"] == [0, 1, 3] and meta["rows_per_step"] == 2 and meta["variants"] == ["mid"]
    assert (df["good_count_0"] == 0).all() and (df["good_count_3"] <= df["good_total_count"]).all()
    mtime = study.exposure_path.stat().st_mtime_ns
    run_stage(cfg, study)  # resume: same inputs, nothing recomputed
    assert study.exposure_path.stat().st_mtime_ns == mtime


def test_every_stream_format_gives_the_same_exposure(tmp_path, gpt2, gpt2_tokenizer_dir):
    """The same rows as a grokscope dir, a nanoGPT .bin, a Megatron .bin/.idx (one row per
    entry, as Pythia's preshuffled files) and OLMo token files + global_indices.npy: identical
    exposure tables (OLMo's permutation applied to the reference rows)."""
    from tests.stream.test_readers import write_megatron

    docs = random_documents(np.random.default_rng(11), 250)
    ref = write_stream(tmp_path / "tokens", gpt2, docs, row_len=9, rows_per_step=2)
    rows = np.load(ref / "tokens.npy")
    study = write_phrases(tmp_path / "study", PAIRS)
    steps = [0, 1, 4, 20, rows.shape[0] // 2]
    tok = str(gpt2_tokenizer_dir)

    def run(name: str, spec: StreamSpec) -> pd.DataFrame:
        out = tmp_path / f"{name}.parquet"
        compute_exposure(study / "phrases.parquet", spec, steps, out, tokenizer=tok, progress=False)
        return pd.read_parquet(out)

    want = run("grokscope", StreamSpec(str(ref)))
    assert want["good_total_count"].sum() > 0
    rows.reshape(-1).tofile(tmp_path / "train.bin")  # nanoGPT: a flat uint16 file
    got = run("nanogpt", StreamSpec(str(tmp_path / "train.bin"), rows_per_step=2, row_len=9, eos_id=50256))
    pd.testing.assert_frame_equal(got, want)
    write_megatron(tmp_path / "pile_text_document", list(rows), np.uint16)
    got = run("megatron", StreamSpec(str(tmp_path / "pile_text_document"), rows_per_step=2, row_len=9, eos_id=50256))
    pd.testing.assert_frame_equal(got, want)

    perm = np.random.default_rng(2).permutation(rows.shape[0])
    olmo = tmp_path / "olmo"
    olmo.mkdir()
    rows.reshape(-1).tofile(olmo / "part-0.npy")
    perm.astype(np.uint32).tofile(olmo / "global_indices.npy")
    shuffled = tmp_path / "shuffled"
    shutil.copytree(ref, shuffled)
    np.save(shuffled / "tokens.npy", rows[perm])
    want_perm = run("grokscope_perm", StreamSpec(str(shuffled)))
    got = run("olmo", StreamSpec(str(olmo), rows_per_step=2, row_len=9, eos_id=50256))
    pd.testing.assert_frame_equal(got, want_perm)
    assert not want_perm.equals(want)  # the permutation does change first steps / windows


@pytest.mark.parametrize("layout", ["row_per_entry", "documents", "fixture_sizes"])
def test_sharded_megatron_gives_the_merged_exposure(tmp_path, gpt2, gpt2_tokenizer_dir, layout, request, capsys):
    """Pythia's data as Hugging Face serves it: the merged .bin cut into shards at byte offsets
    inside tokens, one document.idx; the exposure table equals the merged file's. Layouts: one
    row per index entry (Pythia), one entry per document, and the shared fixture's entry sizes
    filled with real GPT-2 tokens. A truncated shard stops the stage before any scan."""
    from grokscope.stream.readers import read_megatron_index
    from tests.stream.test_megatron_shards import cut_into_shards
    from tests.stream.test_readers import write_megatron

    rows = np.load(write_stream(tmp_path / "tokens", gpt2, random_documents(np.random.default_rng(12), 250),
                                row_len=9) / "tokens.npy")
    flat = rows.reshape(-1)
    if layout == "row_per_entry":
        seqs = list(rows)
    else:
        rng = np.random.default_rng(0)
        sizes = (read_megatron_index(request.getfixturevalue("megatron_dir") / "test_text_document.idx").sizes
                 if layout == "fixture_sizes" else rng.integers(1, 40, size=flat.size))
        ends = np.cumsum(sizes)
        ends = ends[ends < flat.size]
        seqs = np.split(flat, ends)
    (tmp_path / "merged").mkdir()
    write_megatron(tmp_path / "merged" / "document", seqs, np.uint16)
    shard = Path(tmp_path / "merged" / "document.bin").stat().st_size // 4 + 1  # odd: cuts inside tokens
    hf = cut_into_shards(tmp_path / "merged" / "document", tmp_path / "hf", [shard, 2 * shard, 3 * shard])
    study = write_phrases(tmp_path / "study", PAIRS)
    steps = [0, 1, 4, 20, rows.shape[0] // 4]

    def run(path: Path) -> pd.DataFrame:
        out = tmp_path / f"{path.parent.name}.parquet"
        spec = StreamSpec(str(path), rows_per_step=2, row_len=9, eos_id=50256)
        compute_exposure(study / "phrases.parquet", spec, steps, out, tokenizer=str(gpt2_tokenizer_dir), progress=False)
        return pd.read_parquet(out)

    want = run(tmp_path / "merged" / "document")
    assert want["good_total_count"].sum() > 0
    pd.testing.assert_frame_equal(run(hf.parent), want)  # the directory Hugging Face downloads
    pd.testing.assert_frame_equal(run(hf), want)  # the prefix DIR/document
    shard = hf.parent / "document-00001-of-00003.bin"
    shard.write_bytes(shard.read_bytes()[:-3])
    assert main(["exposure", "--phrases", str(study), "--checkpoints", "1", "--rows-per-step", "2",
                 "--tokens", str(hf.parent), "--row-len", "9", "--tokenizer", str(gpt2_tokenizer_dir)]) == 2
    err = capsys.readouterr().err
    assert "document-00001-of-00003.bin: short (truncated) shard" in err and "expected" in err
    assert not (study / "exposure.parquet").exists()
