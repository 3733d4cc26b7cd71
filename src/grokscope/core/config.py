"""Study configuration: the config sections (the only definition of every setting) and a TOML
file validated on load.

Each ``[section]`` maps onto a dataclass below whose fields are declared with
:func:`~grokscope.core.settings.setting` (type, default, help, allowed values). Unknown keys,
wrong types and values outside what a setting allows are :class:`~grokscope.core.errors.ConfigError`
naming the file and the key (with a "did you mean" suggestion for typos). Paths in the file are
relative to the file's directory; :meth:`StudyConfig.resolved` makes every one absolute, once,
before any stage runs. The command line builds the same object (:mod:`grokscope.core.flags`).
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from grokscope.core.errors import ConfigError, DataError
from grokscope.core.paths import resolve_path, resolve_spec
from grokscope.core.settings import SettingInfo, check_value, coerce, section_settings, setting, suggest
from grokscope.core.store import Study
from grokscope.core.textfile import read_utf8
from grokscope.data.testbed import TestbedSettings

FORMATS = ("auto", "grokscope", "megatron", "nanogpt", "olmo")
DEVICES = ("auto", "cpu", "cuda")
TRAIN_BPE = "train-bpe"


@dataclass
class StudySection:
    name: str = setting("study", "the study's name (shown in the report)", harmless=True)
    out: str = setting("", "study directory; default: next to the config, named after it", kind="path",
                       harmless=True)
    seed: int = setting(0, "seed of pair subsamples, hidden-state subsamples and everything the study draws")


@dataclass
class CorpusSettings:
    """How a corpus becomes a token stream: shared by the ``[data]`` section and
    :class:`grokscope.stream.stage.PrepareOptions`."""

    corpus: list[str] = setting([], "jsonl / jsonl.gz / txt files or globs (read in the order given), or "
                                    "hf:NAME[:SPLIT]", kind="paths")
    text_field: str = setting("text", "JSON field holding the text")
    tokenizer: str = setting("", "tokenizer.json, a dir with vocab.json+merges.txt, a Hugging Face tokenizer dir "
                                 f"or hub id, or '{TRAIN_BPE}' to train a byte-level BPE on the corpus",
                             kind="spec")
    vocab_size: int = setting(8192, f"vocabulary of {TRAIN_BPE}", gt=0)
    seq_len: int = setting(128, "tokens a model sees per row; rows hold seq_len + 1", gt=0)
    seed: int = setting(0, "shuffle seed")
    shuffle: str = setting("rows", "rows: shuffle documents, pack, then shuffle the packed rows (as "
                                   "Megatron/Pythia do); documents: shuffle documents only; none: keep reading order",
                           choices=("rows", "documents", "none"))
    max_documents: int = setting(0, "read only the first N documents (0 = all)", ge=0)
    withhold: float = setting(0.0, "withhold this seeded, paradigm-stratified share of the critical phrases: every "
                                   "sentence holding one of their surface forms is dropped before packing",
                              ge=0.0, le=1.0)
    withhold_phrases: str = setting("", "phrases table whose critical phrases --withhold draws from: a study "
                                        "directory or phrases.parquet (default: the study's)", kind="path",
                                    flag="--phrases")
    dtype: str = setting("auto", "token dtype written by prepare (auto: uint16 when the vocabulary fits)",
                         choices=("auto", "uint16", "uint32"))
    batch_chars: int = setting(1_000_000, "characters per tokenizer batch (memory vs. parallelism)", gt=0,
                               harmless=True)


@dataclass
class DataSection(CorpusSettings):
    """Where the training tokens come from: a corpus to ``prepare`` or an existing stream."""

    tokens: str = setting("", "an existing token stream instead of a corpus: a prepared tokens/ dir, a Megatron "
                              "prefix, a nanoGPT .bin, an OLMo dir", kind="path")
    format: str = setting("auto", "format of the token stream", choices=FORMATS)
    rows_per_step: int = setting(0, "rows per optimizer step of an existing stream (Pythia: 1024); 0 = from "
                                    "training", ge=0)
    row_len: int = setting(0, "tokens per row of a flat stream (Pythia: 2049); 0 = from the stream", ge=0)
    eos_id: int = setting(-1, "document separator id; -1 = from the tokenizer / manifest", ge=-1)


@dataclass
class TrainSection:
    enabled: bool = setting(False, "train a model in this study (else score [score] checkpoints)")
    n_layer: int = setting(4, "transformer blocks", gt=0)
    n_embd: int = setting(256, "model width", gt=0)
    n_head: int = setting(4, "attention heads", gt=0)
    n_positions: int = setting(0, "model context; 0 = the stream's seq_len", ge=0)
    batch_size: int = setting(32, "rows per optimizer step (B)", gt=0)
    max_steps: int = setting(2000, "optimizer steps", gt=0)
    lr: float = setting(1e-3, "peak learning rate", gt=0.0)
    min_lr_ratio: float = setting(0.1, "cosine floor as a fraction of lr", ge=0.0, le=1.0)
    warmup_steps: int = setting(100, "linear warmup steps", ge=0)
    weight_decay: float = setting(0.1, "AdamW decay (not on biases/LayerNorm)", ge=0.0)
    beta1: float = setting(0.9, "AdamW beta1", ge=0.0, lt=1.0)
    beta2: float = setting(0.95, "AdamW beta2", ge=0.0, lt=1.0)
    grad_clip: float = setting(1.0, "max gradient norm; 0 = off", ge=0.0)
    dropout: float = setting(0.0, "dropout probability", ge=0.0, lt=1.0)
    log_spaced_until: int = setting(512, "checkpoints at 0,1,2,4,... up to this", ge=0)
    checkpoint_every: int = setting(1000, "then a checkpoint every N steps (and the last step)", gt=0)
    seed: int = setting(0, "seed of initialisation and dropout")
    device: str = setting("auto", "where to train", choices=DEVICES, harmless=True)
    threads: int = setting(0, "torch CPU threads; 0 = all cores", ge=0, harmless=True)
    state_every: int = setting(200, "save resume state (optimizer, scheduler, RNG) every N steps, and at every "
                                    "checkpoint", gt=0)
    state_seconds: float = setting(600.0, "... and at least this often in wall time (seconds; 0 = off)", ge=0.0)
    pad_vocab_to: int = setting(64, "round the embedding rows up to a multiple of this (1 = exact vocab)", gt=0)
    peak_tflops: float = setting(0.0, "device peak (bf16 dense) TFLOP/s; when given, the summary reports MFU",
                                 ge=0.0, harmless=True)


@dataclass
class BenchmarkSection:
    path: str = setting("", "BLiMP directory of jsonl files, a jsonl file of pairs, 'nyu-mll/blimp' (hub) or "
                            "'testbed' (generated by the demo)", kind="spec")
    paradigms: list[str] = setting([], "only these paradigms (uid values); empty = all", sep=",")
    pairs_per_paradigm: int = setting(0, "seeded subsample of N pairs per paradigm (0 = all)", ge=0)
    skip_invalid: bool = setting(False, "report and skip invalid pairs instead of stopping")
    lexicon: str = setting("", "BLiMP vocabulary.csv for the phrase rules (default: the one beside the "
                               "benchmark, if any)", kind="path")


VARIANTS = ("mid", "sentence_start")
DEFAULT_SHARD_ROWS = 1 << 16  # rows per resumable exposure shard (≈8.5M tokens at row_len 129)


@dataclass
class ExposureSection:
    variants: list[str] = setting(list(VARIANTS), "surface forms searched: mid (' this sketch'), sentence_start "
                                                  "(' This sketch', 'This sketch')", choices=VARIANTS, sep=",")
    workers: int = setting(1, "Dask local workers (1 = in this process)", gt=0, harmless=True)
    scheduler: str = setting("", "address of a Dask scheduler (tcp://host:port); empty = local", harmless=True)
    shard_rows: int = setting(DEFAULT_SHARD_ROWS, "rows of the stream per shard: one Dask task, and what a killed "
                                                  "run keeps (exposure.parts/); results do not depend on it",
                              gt=0, harmless=True)
    phrases: str = setting("", "phrases table to search: a study directory or phrases.parquet (default: the "
                               "study's)", kind="path")
    checkpoints: list[str] = setting([], "checkpoint steps: comma lists (0,1,2,4,1000), 'pythia', or checkpoint "
                                         "dirs/globs (default: [score] checkpoints, else the study's run)",
                                     kind="specs")
    window_tokens: int = setting(0, "windowed exposure of long-distance pairs: also count the later of critical/"
                                    "context word within N tokens after the earlier, same row and document "
                                    "(separate *_window_* columns); 0 = off", ge=0)


CONVENTIONS = ("lm_eval", "minicons", "none")


@dataclass
class ScoringSettings:
    """How pairs are scored: shared by the ``[score]`` section and :class:`grokscope.score.pairs.ScoreOptions`."""

    convention: str = setting("lm_eval", "lm_eval: ' '+sentence after BOS/EOS; minicons: sentence after "
                                         "BOS/EOS; none: no prefix", choices=CONVENTIONS)
    reduction: str = setting("sum", "sum or mean of the token log-probs", choices=("sum", "mean"))
    region: str = setting("sentence", "score the whole sentence or the critical region only",
                          choices=("sentence", "critical"))
    batch_size: int = setting(64, "pairs per forward pass", gt=0, harmless=True)
    capture_hidden: bool = setting(True, "keep hidden states (at the token hidden_at names)", negative="--no-hidden")
    hidden_at: str = setting("later", "token whose hidden states are kept: later = the last token of the later of "
                                      "the critical and context words (a causal model's state there has seen "
                                      "both); critical = the critical word's last token",
                             choices=("later", "critical"))
    capture_attention: bool = setting(True, "keep attention from the critical token", negative="--no-attention")
    hidden_pairs: int = setting(2000, "pairs whose hidden states are kept (seeded subsample); 0 = all", ge=0)


@dataclass
class ScoreSection(ScoringSettings):
    checkpoints: list[str] = setting([], "HF model dirs, globs, grokscope study/run dirs, or hub ids like "
                                         "EleutherAI/pythia-160m@step1000 (default: the study's run)", kind="specs")
    phrases: str = setting("", "phrases.parquet with critical spans (default: the study's)", kind="path")
    tokenizer: str = setting("", "tokenizer to use instead of each checkpoint's own", kind="spec")
    allow_tokenizer_mismatch: bool = setting(False, "score with --tokenizer even where it differs (fingerprint) "
                                                    "from the tokenizer a checkpoint carries", harmless=True)
    step: int = setting(-1, "training step of a single plain HF dir (-1 = from its name)", ge=-1)
    tokens_seen: int = setting(-1, "tokens seen by a single plain HF dir (-1 = from the run)", ge=-1)
    tokens_per_step: int = setting(0, "tokens per step, for steps read from directory names / stepN revisions "
                                      "(0 = unknown)", ge=0)
    device: str = setting("auto", "where to score", choices=DEVICES, harmless=True)
    dtype: str = setting("auto", "auto: bf16 on GPU, float32 on CPU", choices=("auto", "float32", "bfloat16",
                                                                               "float16"))
    threads: int = setting(0, "torch CPU threads (0 = torch's default)", ge=0, harmless=True)
    prefetch: int = setting(1, "checkpoints loaded in the background ahead of the one being scored "
                               "(0 = load each on its turn)", ge=0, le=4, harmless=True)
    workers: int = setting(1, "Dask workers, one checkpoint per task: a LocalCluster of N processes, each with "
                              "its share of the CPU threads or one GPU (1 = in this process)", gt=0, harmless=True)
    scheduler: str = setting("", "address of a Dask scheduler (tcp://host:port) to score on; empty = local",
                             harmless=True)
    scheduler_timeout: float = setting(20.0, "seconds to wait for the Dask scheduler before giving up", gt=0.0,
                                       harmless=True)


@dataclass
class AnalyseSection:
    min_count: int = setting(1, "k: proxy-train needs >= k occurrences in the window", gt=0)
    criterion_level: float = setting(0.8, "absolute accuracy a split must reach and keep", gt=0.0, le=1.0)
    criterion_fraction: float = setting(0.9, "... or this fraction of its final accuracy", gt=0.0, le=1.0)
    criterion: str = setting("halfrise", "onset rule: halfrise (shared half-rise threshold on isotonic fits) | paper "
                                         "(val first reaches criterion_level; groups never reaching it dropped) | "
                                         "level | fraction | both (reach and stay)",
                             choices=("halfrise", "paper", "level", "fraction", "both"))
    floor_checkpoints: int = setting(3, "halfrise: the floor is the pooled accuracy over this many first checkpoints",
                                     gt=0)
    ceiling_share: float = setting(0.1, "halfrise: the ceiling is the pooled accuracy over this last share of the "
                                        "run in log10 tokens", gt=0.0, le=1.0)
    onset_boot: int = setting(200, "bootstrap replicates used for halfrise onset intervals", gt=0)
    cluster_by: str = setting("phrase", "inference resamples clusters of pairs sharing this (within a paradigm)",
                              choices=("phrase", "critical_word", "pair"))
    adjusted: bool = setting(True, "the headline adjusted comparison (GLM on seen-the-phrase with covariates)",
                             negative="--no-adjusted")
    min_clusters: int = setting(10, "adjusted: fewer phrase clusters seen or unseen -> 'too few clusters'", gt=1)
    event_study: bool = setting(True, "the event study aligned at each pair's first exposure",
                                negative="--no-event-study")
    event_window: int = setting(4, "event study: checkpoints before/after first exposure estimated (beyond: binned)",
                                gt=0)
    n_boot: int = setting(1000, "bootstrap replicates", gt=0)
    ci: float = setting(0.95, "interval level; 1 - ci is the test level", gt=0.0, le=1.0)
    probe_pairs: int = setting(1000, "pairs per checkpoint used for hidden-state probes (0 = all)", ge=0)
    probe_folds: int = setting(3, "cross-validation folds of the probes", gt=0)
    top_k_heads: int = setting(3, "heads in the top set", gt=0)
    ablation_repeats: int = setting(20, "random head sets of the ablation's reference", gt=0)
    seed: int = setting(0, "seed of bootstrap, permutations, probes and ablation")
    n_perm: int = setting(1000, "permutations of the 'train leads val' test", gt=0)
    min_pairs: int = setting(10, "a split with fewer pairs at a checkpoint is undefined there", gt=0)
    match_on: str = setting("auto", "confound control: auto | word_frequency | phrase_length",
                            choices=("auto", "word_frequency", "phrase_length"))
    match_bins: int = setting(5, "quantile bins of log(1 + match value)", gt=0)
    probes: bool = setting(True, "hidden-state probes", negative="--no-probes")
    heads: bool = setting(True, "attention heads (and ablation)", negative="--no-heads")
    ablation: bool = setting(True, "the head-ablation check (needs the checkpoint directories named in the "
                                   "score metadata)", negative="--no-ablation")
    ablation_pairs: int = setting(1000, "pairs re-scored per ablation (seeded subsample); 0 = all", ge=0)
    ablation_step: int = setting(-1, "checkpoint step to ablate; -1 = the last scored step", ge=-1)
    min_distinct_phrases: int = setting(50, "a paradigm with fewer distinct critical phrases (or no context word) "
                                            "cannot inform a split: left out of the verdicts", ge=0)
    keep_uninformative: bool = setting(False, "keep paradigms whose split cannot carry information in the verdicts")
    sensitivity_min_counts: list[int] = setting([1, 5, 20], "k sensitivity: verdicts at each of these min_count "
                                                             "thresholds, side by side (empty = off)")
    ablation_mode: str = setting("mean", "how heads are ablated: mean = replaced by their mean output over the "
                                         "benchmark; zero = zeroed", choices=("mean", "zero"))
    head_effects: bool = setting(True, "per phenomenon: every head ablated alone on a stratified subsample, heads "
                                       "selected on half of the pairs and tested on the other half -> "
                                       "analysis/head_effects.parquet", negative="--no-head-effects")
    head_pairs: int = setting(100, "head effects: pairs per phenomenon (seeded subsample); 0 = all", ge=0)
    ablation_single: bool = setting(False, "also ablate every head on its own (L*H re-scorings) -> "
                                           "analysis/ablation_heads.parquet")
    concepts: bool = setting(True, "the paper's concept-vector measures per phenomenon (AUROC of the mean "
                                   "direction, effective rank)", negative="--no-concepts")
    rank_pairs: int = setting(100, "concept vectors per effective-rank subsample (equal at every checkpoint)",
                              ge=3)
    rank_repeats: int = setting(8, "subsamples per effective-rank estimate", gt=0)
    concept_pairs: int = setting(500, "captured pairs per phenomenon and checkpoint for the concept measures "
                                      "(seeded subsample; 0 = all)", ge=0)
    concept_window: float = setting(0.0, "before/after window width in natural-log tokens around each "
                                         "phenomenon's generalisation; 0 = the widest that fits both sides", ge=0.0)
    concept_logreg: bool = setting(False, "also the word-grouped logistic probe per phenomenon and its "
                                          "random-label control (costly: 2 cross-validations per layer and step)",
                                   negative="--no-concept-logreg")


@dataclass
class ReportSection:
    title: str = setting("", "page title (default: the study's name)", harmless=True)
    formats: list[str] = setting(["png", "svg"], "figure file formats", choices=("png", "svg", "pdf"), sep=",",
                                 harmless=True)


@dataclass
class TestbedSection(TestbedSettings):
    """``[testbed]``: generate grokscope's controlled-exposure corpus + pairs (``grokscope demo``).
    The keys are :class:`grokscope.data.testbed.TestbedSettings` plus these two."""

    enabled: bool = setting(False, "generate the testbed corpus and pairs in this study")
    out: str = setting("", "where corpus.jsonl, pairs.jsonl, ground_truth.json go; default: <study>/testbed",
                       kind="path", harmless=True)

    def settings(self) -> TestbedSettings:
        return TestbedSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TestbedSettings)})


@dataclass
class RunOptions:
    """How a run behaves, not what it computes (set by the command line, never in a TOML file)."""

    force: bool = False  # redo a stage whose output is up to date
    progress: bool = True  # progress bars
    in_pipeline: bool = False  # run by ``grokscope run``: an earlier stage has already said what it skipped


@dataclass
class StudyConfig:
    study: StudySection = field(default_factory=StudySection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    benchmark: BenchmarkSection = field(default_factory=BenchmarkSection)
    exposure: ExposureSection = field(default_factory=ExposureSection)
    score: ScoreSection = field(default_factory=ScoreSection)
    analyse: AnalyseSection = field(default_factory=AnalyseSection)
    report: ReportSection = field(default_factory=ReportSection)
    testbed: TestbedSection = field(default_factory=TestbedSection)
    source: str = ""  # the file it was loaded from (not a TOML key)
    options: RunOptions = field(default_factory=RunOptions, compare=False)  # not a TOML section

    @property
    def base_dir(self) -> Path | None:
        """The directory relative paths are relative to (the config file's; None: the working directory)."""
        return Path(self.source).parent if self.source else None

    def resolve_path(self, value: str) -> Path:
        """A path from the config, relative to the config file's directory."""
        p = Path(os.path.expanduser(value))
        if not p.is_absolute() and self.source:
            p = Path(self.source).parent / p
        return p

    @property
    def study_dir(self) -> Path:
        if self.study.out:
            return self.resolve_path(self.study.out)
        src = Path(self.source) if self.source else Path("study.toml")
        return src.parent / src.stem

    @property
    def testbed_dir(self) -> Path:
        return self.resolve_path(self.testbed.out) if self.testbed.out else Study(self.study_dir).testbed_dir

    def to_dict(self) -> dict[str, Any]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def resolved(self) -> StudyConfig:
        """The config the stages see: every path absolute (relative to the config file), hub ids and
        names as they are, the testbed's outputs filled in. Resolving twice changes nothing."""
        out = dataclasses.replace(self, **{name: dataclasses.replace(getattr(self, name)) for name in SECTIONS})
        base = self.base_dir
        for info in all_settings():
            section = getattr(out, info.section)
            setattr(section, info.name, resolve_setting(info, getattr(section, info.name), base))
        out.study.out = str(Path(resolve_path(str(self.study_dir), None)))
        if self.testbed.enabled:
            tb = Path(resolve_path(str(self.testbed_dir), None))
            out.testbed.out = str(tb)
            if not out.data.corpus and not out.data.tokens:
                out.data.corpus = [str(tb / "corpus.jsonl")]
            if out.benchmark.path in ("", "testbed"):
                out.benchmark.path = str(tb / "pairs.jsonl")
        return out


def resolve_setting(info: SettingInfo, value: Any, base: Path | None) -> Any:
    """A location-kind setting's value made absolute against ``base`` (None: the working directory)."""
    if not info.kind or not value:
        return value
    if info.kind == "path":
        return resolve_path(value, base)
    if info.kind == "paths":
        return [v if v.startswith("hf:") else resolve_path(v, base) for v in value]
    if info.kind == "spec":
        return resolve_spec(value, base)
    return [resolve_spec(v, base) for v in value]


SECTIONS: dict[str, type] = {name: hint for name, hint in typing.get_type_hints(StudyConfig).items()
                             if name not in ("source", "options")}


def all_settings() -> list[SettingInfo]:
    """Every setting of every section, in section order."""
    return [info for name, cls in SECTIONS.items() for info in section_settings(cls, name)]


def load_config(path: str | os.PathLike[str]) -> StudyConfig:
    """Load and validate a study TOML file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = tomllib.loads(read_utf8(path))
    except DataError as e:
        raise ConfigError(str(e)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    cfg = config_from_dict(raw, where=str(path))
    cfg.source = str(path.resolve())
    return cfg


def config_from_dict(raw: dict[str, Any], where: str = "<config>") -> StudyConfig:
    """Validate a nested dict (as parsed from TOML) into a :class:`StudyConfig`."""
    sections: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in SECTIONS:
            raise ConfigError(f"{where}: unknown section [{key}]{suggest(key, SECTIONS)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: [{key}] must be a table, got {type(value).__name__}")
        sections[key] = _section_from_dict(SECTIONS[key], value, f"{where}: [{key}]")
    cfg = StudyConfig(**sections)
    check_config(cfg, where)
    return cfg


def _section_from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{where} unknown key '{key}'{suggest(key, names)}")
        kwargs[key] = coerce(value, hints[key], f"{where} key '{key}'")
    return cls(**kwargs)


def check_config(cfg: StudyConfig, where: str) -> None:
    """Every value within what its setting allows, and the relations between settings."""
    for info in all_settings():
        if info.section == "testbed" and not cfg.testbed.enabled:
            continue
        check_value(info, getattr(getattr(cfg, info.section), info.name), where)
    if cfg.train.n_embd % cfg.train.n_head:
        raise ConfigError(
            f"{where}: [train] n_embd ({cfg.train.n_embd}) must be divisible by n_head ({cfg.train.n_head})"
        )


def dump_config(cfg: StudyConfig) -> str:
    """The config as TOML text (what the study directory keeps as study.toml)."""
    import tomli_w

    return tomli_w.dumps(cfg.to_dict())
