"""Flags generated from the config sections: every setting can be set with ``--set``, every flag
of the first version still parses to the setting it named, typos name the closest key."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from grokscope.cli import STAGE_COMMANDS, build_parser
from grokscope.core.config import StudyConfig, all_settings, check_config
from grokscope.core.errors import ConfigError
from grokscope.core.flags import config_from_args, parse_set
from grokscope.core.settings import SettingInfo, check_value
from grokscope.pipeline.registry import load_stage


def _parse(command: str, *argv: str) -> argparse.Namespace:
    return build_parser(command).parse_args([command, *argv])


def _other_value(info: SettingInfo) -> tuple[str, Any]:
    """A valid value other than the default, as ``--set`` text and as the typed value expected."""
    d = info.default
    if info.hint is bool:
        return ("false" if d else "true"), not d
    if info.choices and not info.is_list:
        v = next(c for c in info.choices if c != d)
        return f'"{v}"', v
    if info.is_list and info.item_type is int:
        return "[2, 3]", [2, 3]
    if info.is_list:
        items = [c for c in info.choices if c not in d][:1] or list(info.choices[:1]) or ["a", "b"]
        return "[" + ", ".join(f'"{v}"' for v in items) + "]", items
    if info.hint is str:
        return '"x-value"', "x-value"
    candidates = [d + 1, d * 2, d - 1, 2, 1] if info.hint is int else [d * 0.5, d + 0.25, 0.5, 2.0]
    for v in candidates:
        if v == d:
            continue
        try:
            check_value(info, v, "test")
        except ConfigError:
            continue
        if info.key in ("train.n_embd", "train.n_head") and (v if info.name == "n_embd" else 256) % (
                v if info.name == "n_head" else 4):
            continue
        return str(v), v
    raise AssertionError(f"no other valid value for {info.key}")


@pytest.mark.parametrize("info", all_settings(), ids=lambda i: i.key)
def test_set_reaches_every_setting(info: SettingInfo, tmp_path: Path) -> None:
    text, expected = _other_value(info)
    key, value = parse_set(f"{info.key}={text}")
    assert key == info.key and value == expected
    args = _parse("analyse", str(tmp_path), "--set", f"{info.key}={text}")
    cfg = config_from_args(load_stage("analyse"), args)
    got = getattr(getattr(cfg, info.section), info.name)
    if info.kind in ("path", "spec") and info.key != "study.out":
        assert got == str(Path.cwd() / expected) or got == expected  # made absolute, or a name kept as it is
    elif info.kind in ("paths", "specs"):
        assert got in ([str(Path.cwd() / e) for e in expected], expected)
    elif info.key != "study.out":
        assert got == expected
    check_config(cfg, "test")


def test_set_typo_names_the_closest_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'score\.batch_siz' \(did you mean 'score\.batch_size'\?\)"):
        config_from_args(load_stage("analyse"), _parse("analyse", str(tmp_path), "--set", "score.batch_siz=3"))
    with pytest.raises(ConfigError, match=r"--set train\.lr: expected a number"):
        parse_set("train.lr=fast")
    with pytest.raises(ConfigError, match="expected SECTION.KEY=VALUE"):
        parse_set("train.lr")
    with pytest.raises(ConfigError, match=r"\[train\] key 'dropout' must be in \[0, 1\), got 1\.5"):
        config_from_args(load_stage("analyse"), _parse("analyse", str(tmp_path), "--set", "train.dropout=1.5"))


def test_set_parses_toml_values_and_plain_text() -> None:
    assert parse_set("train.lr=3e-4") == ("train.lr", 3e-4)
    assert parse_set("train.lr=1") == ("train.lr", 1.0)
    assert parse_set("benchmark.paradigms=a,b") == ("benchmark.paradigms", ["a", "b"])
    assert parse_set('benchmark.paradigms=["a"]') == ("benchmark.paradigms", ["a"])
    assert parse_set("data.tokenizer=gpt2") == ("data.tokenizer", "gpt2")
    assert parse_set("score.capture_hidden=false") == ("score.capture_hidden", False)


# Every flag of the first version's hand-written parsers, with a value, and the setting it set.
OLD_FLAGS: dict[str, list[tuple[list[str], str, Any]]] = {
    "prepare": [
        (["--corpus", "a.jsonl", "b.jsonl"], "data.corpus", ["a.jsonl", "b.jsonl"]),
        (["--tokenizer", "train-bpe"], "data.tokenizer", "train-bpe"), (["--vocab-size", "300"], "data.vocab_size", 300),
        (["--seq-len", "16"], "data.seq_len", 16), (["--seed", "3"], "data.seed", 3),
        (["--shuffle", "none"], "data.shuffle", "none"), (["--text-field", "body"], "data.text_field", "body"),
        (["--max-documents", "5"], "data.max_documents", 5), (["--dtype", "uint32"], "data.dtype", "uint32"),
        (["--batch-chars", "1000"], "data.batch_chars", 1000), (["--no-progress"], None, None),
    ],
    "train": [
        (["--tokens", "t"], "data.tokens", "t"), (["--format", "megatron"], "data.format", "megatron"),
        (["--tokenizer", "tok.json"], "data.tokenizer", "tok.json"), (["--peak-tflops", "989"], "train.peak_tflops", 989.0),
        (["--no-progress"], None, None), (["--n-layer", "2"], "train.n_layer", 2), (["--n-embd", "64"], "train.n_embd", 64),
        (["--n-head", "2"], "train.n_head", 2), (["--n-positions", "64"], "train.n_positions", 64),
        (["--batch-size", "8"], "train.batch_size", 8), (["--max-steps", "10"], "train.max_steps", 10),
        (["--lr", "0.01"], "train.lr", 0.01), (["--min-lr-ratio", "0.2"], "train.min_lr_ratio", 0.2),
        (["--warmup-steps", "3"], "train.warmup_steps", 3), (["--weight-decay", "0"], "train.weight_decay", 0.0),
        (["--beta1", "0.8"], "train.beta1", 0.8), (["--beta2", "0.9"], "train.beta2", 0.9),
        (["--grad-clip", "0"], "train.grad_clip", 0.0), (["--dropout", "0.1"], "train.dropout", 0.1),
        (["--log-spaced-until", "8"], "train.log_spaced_until", 8),
        (["--checkpoint-every", "5"], "train.checkpoint_every", 5), (["--seed", "4"], "train.seed", 4),
        (["--device", "cpu"], "train.device", "cpu"), (["--threads", "1"], "train.threads", 1),
        (["--state-every", "7"], "train.state_every", 7), (["--state-seconds", "9"], "train.state_seconds", 9.0),
        (["--pad-vocab-to", "1"], "train.pad_vocab_to", 1),
    ],
    "phrases": [
        (["--paradigms", "a", "b"], "benchmark.paradigms", ["a", "b"]),
        (["--pairs-per-paradigm", "5"], "benchmark.pairs_per_paradigm", 5), (["--seed", "2"], "study.seed", 2),
        (["--skip-invalid"], "benchmark.skip_invalid", True), (["--lexicon", "v.csv"], "benchmark.lexicon", "v.csv"),
        (["--force"], None, None),
    ],
    "exposure": [
        (["--variants", "mid"], "exposure.variants", ["mid"]), (["--workers", "2"], "exposure.workers", 2),
        (["--scheduler", "tcp://h:1"], "exposure.scheduler", "tcp://h:1"),
        (["--tokenizer", "tok.json"], "data.tokenizer", "tok.json"), (["--format", "olmo"], "data.format", "olmo"),
        (["--rows-per-step", "1024"], "data.rows_per_step", 1024), (["--row-len", "2049"], "data.row_len", 2049),
        (["--eos-id", "0"], "data.eos_id", 0), (["--force"], None, None),
    ],
    "score": [
        (["--benchmark", "b.jsonl"], "benchmark.path", "b.jsonl"), (["--phrases", "p.parquet"], "score.phrases", "p.parquet"),
        (["--tokenizer", "tok.json"], "score.tokenizer", "tok.json"),
        (["--convention", "minicons"], "score.convention", "minicons"), (["--reduction", "mean"], "score.reduction", "mean"),
        (["--region", "critical"], "score.region", "critical"), (["--batch-size", "8"], "score.batch_size", 8),
        (["--step", "3"], "score.step", 3), (["--tokens-seen", "30"], "score.tokens_seen", 30),
        (["--tokens-per-step", "10"], "score.tokens_per_step", 10), (["--no-hidden"], "score.capture_hidden", False),
        (["--no-attention"], "score.capture_attention", False), (["--hidden-pairs", "5"], "score.hidden_pairs", 5),
        (["--paradigms", "a"], "benchmark.paradigms", ["a"]), (["--pairs-per-paradigm", "3"], "benchmark.pairs_per_paradigm", 3),
        (["--skip-invalid"], "benchmark.skip_invalid", True), (["--seed", "1"], "study.seed", 1),
        (["--device", "cpu"], "score.device", "cpu"), (["--dtype", "bfloat16"], "score.dtype", "bfloat16"),
        (["--threads", "1"], "score.threads", 1), (["--force"], None, None), (["--quiet"], None, None),
    ],
    "analyse": [
        (["--min-count", "5"], "analyse.min_count", 5), (["--criterion", "both"], "analyse.criterion", "both"),
        (["--criterion-level", "0.7"], "analyse.criterion_level", 0.7),
        (["--criterion-fraction", "0.8"], "analyse.criterion_fraction", 0.8), (["--n-boot", "10"], "analyse.n_boot", 10),
        (["--n-perm", "10"], "analyse.n_perm", 10), (["--ci", "0.9"], "analyse.ci", 0.9),
        (["--min-pairs", "3"], "analyse.min_pairs", 3), (["--match-on", "phrase_length"], "analyse.match_on", "phrase_length"),
        (["--probe-pairs", "50"], "analyse.probe_pairs", 50), (["--no-probes"], "analyse.probes", False),
        (["--no-heads"], "analyse.heads", False), (["--no-ablation"], "analyse.ablation", False),
        (["--seed", "9"], "analyse.seed", 9), (["--force"], None, None),
    ],
    "report": [
        (["--title", "T"], "report.title", "T"), (["--formats", "svg,png"], "report.formats", ["svg", "png"]),
    ],
}
REQUIRED = {  # what each command needs besides the flag under test
    "prepare": ["--out", "s"], "train": ["--out", "s"], "phrases": ["--benchmark", "b", "--out", "s"],
    "exposure": ["--phrases", "s", "--tokens", "t", "--checkpoints", "1"],
    "score": ["--checkpoints", "c", "--out", "s"], "analyse": ["s"], "report": ["s"],
}


@pytest.mark.parametrize("command", sorted(OLD_FLAGS))
def test_every_first_version_flag_still_sets_its_setting(command: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    stage = load_stage(command)
    for argv, key, expected in OLD_FLAGS[command]:
        cfg = config_from_args(stage, _parse(command, *REQUIRED[command], *argv))
        if key is None:
            continue
        section, name = key.split(".")
        got = getattr(getattr(cfg, section), name)
        if isinstance(expected, str) and expected.endswith((".jsonl", ".json", ".parquet", ".csv")) or expected == "t":
            expected = str(tmp_path / expected)  # a location given on the command line: relative to the cwd
        if key == "data.corpus":
            expected = [str(tmp_path / e) for e in expected]
        assert got == expected, (command, argv, got)


@pytest.mark.parametrize("command", sorted(STAGE_COMMANDS))
def test_each_stage_command_offers_every_setting_of_its_section(command: str) -> None:
    stage = load_stage(command)
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    dests = {a.dest for a in sub._actions}
    cli = stage.cli
    assert cli is not None
    for info in all_settings():
        if info.section == stage.section and info.name not in cli.exclude:
            assert f"setting:{info.key}" in dests, info.key
    assert "set_values" in dests


def test_defaults_of_a_command_are_the_sections_defaults(tmp_path: Path) -> None:
    cfg = config_from_args(load_stage("score"), _parse("score", "--checkpoints", "c", "--out", str(tmp_path)))
    assert cfg.score == StudyConfig().score.__class__(checkpoints=[str(Path.cwd() / "c")])
    assert cfg.study.out == str(tmp_path)
