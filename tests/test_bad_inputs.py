"""Issue #21: bad input as a hostile but realistic user gives it, table-driven. Each case runs the
real command and asserts exit 2, one message naming the file/line or the key and what is allowed,
no traceback, and (where there are some) earlier outputs byte-identical."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from grokscope import cli


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().err


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".lock-")}


# ---------------------------------------------------------------------------------------------
# settings out of range: in a TOML file and as flags (one validation, generated from the settings)
# ---------------------------------------------------------------------------------------------
TOML_CASES = [
    ("train", "warmup_steps", "-5", ">= 0"),
    ("train", "log_spaced_until", "-1", ">= 0"),
    ("train", "lr", "-0.001", "positive"),
    ("train", "dropout", "1.5", "[0, 1)"),
    ("analyse", "ablation_repeats", "0", "positive"),
    ("analyse", "probe_pairs", "-1", ">= 0"),
    ("score", "hidden_pairs", "-1", ">= 0"),
    ("train", "beta2", "1.0", "[0, 1)"),
    ("analyse", "ci", "1.5", "(0, 1]"),
]


@pytest.mark.parametrize(("section", "key", "value", "allowed"), TOML_CASES, ids=[f"{c[0]}.{c[1]}" for c in TOML_CASES])
def test_out_of_range_setting_in_toml(tmp_path, capsys, section, key, value, allowed):
    cfg = tmp_path / "study.toml"
    cfg.write_text(f"[data]\ntokens = 'tokens'\n[{section}]\n{key} = {value}\n")
    code, err = _run(["train", "--config", str(cfg)], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(cfg) in err and f"[{section}] key '{key}'" in err and allowed in err and value in err


FLAG_CASES = [
    (["train", "--tokens", "t", "--lr", "-0.001"], "'lr'", "positive"),
    (["train", "--tokens", "t", "--dropout", "1.5"], "'dropout'", "[0, 1)"),
    (["train", "--tokens", "t", "--warmup-steps", "-5"], "'warmup_steps'", ">= 0"),
    (["score", "--checkpoints", "c", "--out", "o", "--hidden-pairs", "-1"], "'hidden_pairs'", ">= 0"),
]


@pytest.mark.parametrize(("argv", "key", "allowed"), FLAG_CASES, ids=[c[0][-2] for c in FLAG_CASES])
def test_out_of_range_flag(tmp_path, capsys, argv, key, allowed):
    code, err = _run([*argv, "--out", str(tmp_path / "s")] if argv[0] == "train" else argv, capsys)
    assert code == 2 and "Traceback" not in err and key in err and allowed in err
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


# ---------------------------------------------------------------------------------------------
# files that are not what they claim to be
# ---------------------------------------------------------------------------------------------
def test_config_with_non_utf8_bytes_names_file_line_and_byte(tmp_path, capsys):
    cfg = tmp_path / "study.toml"
    cfg.write_bytes(b"[study]\nname = 'ok'\nseed = 1 # caf\xe9\n")
    code, err = _run(["train", "--config", str(cfg)], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{cfg}:3: not UTF-8" in err and "byte 0xe9 at byte 14 of the line, byte 34 of the file" in err


def test_benchmark_with_non_utf8_bytes_names_file_and_line(tmp_path, capsys):
    bench = tmp_path / "pairs.jsonl"
    good = json.dumps({"sentence_good": "The cat sleeps.", "sentence_bad": "The cat sleep.", "UID": "x",
                       "pairID": 0})
    bench.write_bytes(good.encode() + b"\n" + good.replace("cat", "caf\xff").encode("latin-1") + b"\n")
    code, err = _run(["phrases", "--benchmark", str(bench), "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "Traceback" not in err and f"{bench}:2: not UTF-8" in err and "0xff" in err


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": f"the cat number {i} sleeps."}) + "\n" for i in range(50)))
    return path


def test_corpus_with_non_utf8_bytes_names_file_line_and_byte(tmp_path, corpus, gpt2_tokenizer_dir, capsys):
    data = corpus.read_bytes().splitlines(keepends=True)
    data[6] = data[6].replace(b"cat", b"c\xc3t")
    corpus.write_bytes(b"".join(data))
    offset = sum(len(x) for x in data[:6]) + data[6].index(b"\xc3")
    code, err = _run(["prepare", "--corpus", str(corpus), "--tokenizer", str(gpt2_tokenizer_dir),
                      "--out", str(tmp_path / "s"), "--seq-len", "8"], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{corpus}:7: not UTF-8" in err and f"byte {offset} of the file" in err


@pytest.mark.parametrize("content", [b"\x93\xff random bytes \x00\x01", b'{"version": "1.0", "added_tokens": []}',
                                     b'{"model": {"type": "BPE"}}'], ids=["random-bytes", "no-model", "no-vocab"])
def test_tokenizer_file_that_is_not_a_tokenizer(tmp_path, corpus, capsys, content):
    tok = tmp_path / "tokenizer.json"
    tok.write_bytes(content)
    code, err = _run(["prepare", "--corpus", str(corpus), "--tokenizer", str(tok), "--out", str(tmp_path / "s")],
                     capsys)
    assert code == 2 and "Traceback" not in err and f"{tok}: not a tokenizers tokenizer.json" in err


def test_paradigm_typo_lists_the_paradigms_of_the_directory(tmp_path, capsys):
    from grokscope.core.errors import DataError
    from grokscope.data.benchmark import load_pairs

    d = tmp_path / "blimp"
    d.mkdir()
    for uid in ("anaphor_gender_agreement", "determiner_noun_agreement_1"):
        (d / f"{uid}.jsonl").write_text(json.dumps({"sentence_good": "A b.", "sentence_bad": "B a.", "UID": uid,
                                                    "pairID": 0}) + "\n")
    with pytest.raises(DataError) as e:
        load_pairs(d, paradigms=["anaphor_gender_agrement"])
    msg = str(e.value)
    assert "did you mean 'anaphor_gender_agreement'?" in msg and "available (2)" in msg
    assert "determiner_noun_agreement_1" in msg


# ---------------------------------------------------------------------------------------------
# a failing disk under prepare and train: one message naming the path and the errno reason
# ---------------------------------------------------------------------------------------------
def _failing_replace(monkeypatch: pytest.MonkeyPatch, code: int, inside: Path) -> None:
    import errno
    import os

    real = os.replace

    def replace(src, dst, *a, **k):
        if str(inside) in str(dst):
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    assert errno.errorcode[code]


@pytest.mark.parametrize("code", ["EROFS", "ENOSPC"])
def test_prepare_on_a_failing_disk(tmp_path, corpus, gpt2_tokenizer_dir, monkeypatch, capsys, code):
    import errno

    out = tmp_path / "s"
    _failing_replace(monkeypatch, getattr(errno, code), out)
    err_code, err = _run(["prepare", "--corpus", str(corpus), "--tokenizer", str(gpt2_tokenizer_dir), "--out",
                          str(out), "--seq-len", "8", "--no-progress"], capsys)
    assert err_code == 2 and "Traceback" not in err and f"[errno {code}]" in err and str(out) in err
    assert not (out / "tokens" / "manifest.json").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_prepare_disk_full_while_packing_names_the_file_and_leaves_no_partial_stream(
        tmp_path, corpus, gpt2_tokenizer_dir, monkeypatch, capsys):
    """The free-space check passed but the disk fills while the stream is written (another writer):
    a write error without a file name gets the partial file's name, the partial stream goes, the
    tokenized documents (work/) stay, and the re-run resumes from them."""
    import errno
    import os

    from grokscope.stream import pack

    class FullDisk:  # the stream's file: its header goes in, the first block of rows does not
        def __init__(self, f):
            self.f = f

        def write(self, data):
            if self.f.tell() > 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a full disk reports a write()
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    real = pack._NpyStreamWriter.__init__

    def init(self, *a, **k):
        real(self, *a, **k)
        self.f = FullDisk(self.f)

    monkeypatch.setattr(pack._NpyStreamWriter, "__init__", init)
    out = tmp_path / "s"
    argv = ["prepare", "--corpus", str(corpus), "--tokenizer", str(gpt2_tokenizer_dir), "--out", str(out),
            "--seq-len", "8", "--no-progress"]
    code, err = _run(argv, capsys)
    message = [line for line in err.splitlines() if line.startswith("grokscope")]
    assert code == 2 and "Traceback" not in err and len(message) == 1, err
    assert "[errno ENOSPC]" in message[0] and ".partial" in message[0] and str(out / "tokens") in message[0]
    assert not [p for p in out.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert (out / "tokens" / ".work" / "doc_tokens.bin").exists()  # finished tokenization kept
    monkeypatch.setattr(pack._NpyStreamWriter, "__init__", real)
    code, err = _run(argv, capsys)
    assert code == 0 and (out / "tokens" / "manifest.json").exists(), err


def test_train_on_a_read_only_disk(tmp_path, monkeypatch, capsys):
    import errno

    pytest.importorskip("torch")
    from tests.train.test_stage import make_prepared_stream, train_cli

    tokens = make_prepared_stream(tmp_path / "stream", n_rows=200)
    before = _digest(tokens)
    out = tmp_path / "s"
    _failing_replace(monkeypatch, errno.EROFS, out)
    assert train_cli(tokens, out, "--max-steps", "2") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Read-only file system [errno EROFS]" in err and str(out) in err
    assert _digest(tokens) == before  # the input stream untouched
    assert not [p for p in out.rglob("*") if p.name.endswith((".tmp", ".partial"))]


# ---------------------------------------------------------------------------------------------
# a read-only study directory under phrases, analyse and report (a simulated study: no training)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def analysed_sim(tmp_path_factory):
    from grokscope.analyse.simulate import SimPhenomenon, simulate_study
    from grokscope.core import store

    sim = simulate_study(tmp_path_factory.mktemp("ro") / "s", phenomena=[SimPhenomenon("a", 2000, 8000)],
                         paradigms_per_phenomenon=2, n_pairs_per_paradigm=80, hidden_pairs=20, n_layer=2, n_head=2,
                         d_model=8, planted_head=1, seed=1)
    store.write_text(sim.study.config_path, "[analyse]\nn_boot = 40\nn_perm = 40\nprobes = false\nheads = false\n"
                     "ablation = false\nconcepts = false\nkeep_uninformative = true\n")
    assert cli.main(["analyse", str(sim.study.root)]) == 0
    return sim.study


@pytest.mark.parametrize("stage", ["phrases", "analyse", "report"])
def test_stage_on_a_read_only_study(analysed_sim, tmp_path, monkeypatch, capsys, stage):
    import errno
    import shutil

    root = tmp_path / "s"
    shutil.copytree(analysed_sim.root, root)
    capsys.readouterr()
    before = _digest(root)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"sentence_good": "The cats sleep.", "sentence_bad": "The cats sleeps.",
                                 "UID": "u", "pairID": 0}) + "\n")
    argv = {"phrases": ["phrases", "--benchmark", str(pairs), "--out", str(root), "--force"],
            "analyse": ["analyse", str(root), "--force"], "report": ["report", str(root)]}[stage]
    _failing_replace(monkeypatch, errno.EROFS, root)
    code, err = _run(argv, capsys)
    assert code == 2 and "Traceback" not in err and "Read-only file system [errno EROFS]" in err, err
    message = [line for line in err.splitlines() if line.startswith("grokscope")]  # (progress bars aside)
    assert len(message) == 1 and str(root) in message[0], err
    assert _digest(root) == before  # every finished output byte-identical
    assert not [p for p in root.rglob("*") if p.name.endswith((".tmp", ".partial"))]


@pytest.mark.parametrize(("name", "stage"), [("exposure.parquet", "analyse"), ("phrases.parquet", "analyse"),
                                             ("scores/step_00000001.parquet", "analyse"),
                                             ("exposure.parquet", "report"), ("phrases.parquet", "report"),
                                             ("analysis/curves.parquet", "report")])
def test_a_truncated_table_is_named_with_the_command_that_rebuilds_it(analysed_sim, tmp_path, capsys, name, stage):
    import shutil

    root = tmp_path / "s"
    shutil.copytree(analysed_sim.root, root)
    path = root / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated by something else
    capsys.readouterr()
    before = _digest(root)
    code, err = _run([stage, str(root), "--force"] if stage == "analyse" else [stage, str(root)], capsys)
    message = [line for line in err.splitlines() if line.startswith("grokscope")]
    assert code == 2 and "Traceback" not in err and len(message) == 1, err
    rebuild = "is scored again" if name.startswith("scores/") else "--force"  # score redoes an unreadable table
    assert f"{path}: unreadable Parquet table" in message[0] and rebuild in message[0], err
    assert _digest(root) == before


@pytest.mark.parametrize("address", ["not-an-address", "tcp://host-without-port", "tcp://10.0.0.5:notaport"])
def test_a_scheduler_address_that_is_not_one_is_a_config_error(address):
    pytest.importorskip("distributed")
    from grokscope.core.errors import ConfigError
    from grokscope.exposure.shards import check_scheduler_address

    with pytest.raises(ConfigError, match=r"not a Dask scheduler address.*host:port"):
        check_scheduler_address(address)
    check_scheduler_address("tcp://127.0.0.1:8786")
    check_scheduler_address("127.0.0.1:8786")
    check_scheduler_address("inproc://10.0.0.5/123/1")


def test_exposure_on_a_read_only_study(tmp_path, gpt2_tokenizer_dir, monkeypatch, capsys):
    import errno

    import numpy as np

    from grokscope.core.tokenizer import load_tokenizer
    from tests.exposure.test_stage import PAIRS, random_documents, write_phrases, write_stream

    tokens = write_stream(tmp_path / "tokens", load_tokenizer(gpt2_tokenizer_dir),
                          random_documents(np.random.default_rng(0), 50), row_len=9)
    study = write_phrases(tmp_path / "s", PAIRS)
    before = _digest(study), _digest(tokens)
    _failing_replace(monkeypatch, errno.EROFS, study)
    code, err = _run(["exposure", "--phrases", str(study), "--tokens", str(tokens), "--checkpoints", "1,2",
                      "--rows-per-step", "2"], capsys)
    assert code == 2 and "Traceback" not in err and "Read-only file system [errno EROFS]" in err, err
    message = [line for line in err.splitlines() if line.startswith("grokscope")]
    assert len(message) == 1 and str(study) in message[0], err
    assert (_digest(study), _digest(tokens)) == before  # the phrases table and the stream untouched
    assert not [p for p in study.rglob("*") if p.name.endswith((".tmp", ".partial"))]


def test_demo_into_a_read_only_directory_keeps_the_earlier_demo(tmp_path, monkeypatch, capsys):
    import errno

    out = tmp_path / "demo"
    (out / "report").mkdir(parents=True)
    (out / "report" / "index.html").write_text("<html>an earlier demo</html>")
    (out / "study.toml").write_text("[study]\nname = 'earlier'\n")
    before = _digest(out)
    _failing_replace(monkeypatch, errno.EROFS, out)
    code, err = _run(["demo", "--out", str(out), "--steps", "4", "--model-size", "tiny"], capsys)
    assert code == 2 and "Traceback" not in err and "Read-only file system [errno EROFS]" in err, err
    message = [line for line in err.splitlines() if line.startswith("grokscope")]
    assert len(message) == 1 and str(out) in message[0], err
    assert _digest(out) == before
    assert not [p for p in out.rglob("*") if p.name.endswith((".tmp", ".partial"))]
